//! A wrapper for values marked (S) in ENV.md: they never reach a log, an
//! error, a manifest or `Debug` output, only code that asks for them by name.

use std::fmt;

/// A secret value; `Debug` and `Display` print `<secret>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself: call only where it is written to its destination.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "<secret> <secret> Some(<secret>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
