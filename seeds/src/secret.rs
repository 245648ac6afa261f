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

/// The key paths of the env whose values are secrets (ENV.md's (S)), in
/// the dotted form messages use (`appliance.extra.files[0].contents`).
pub const SECRET_PATHS: &[&str] = &[
    "appliance.ssl.key",
    "appliance.sentry.dsn",
    "appliance.dkim.key",
    "appliance.backup.url",
    "appliance.backup.mount.options",
    "appliance.backup.encrypt",
    "ecs.settings",
    "ecs.vault_encrypt",
    "ecs.vault_sign",
];

/// Whether `path` is exactly a secret key's path.
pub fn is_secret_path(path: &str) -> bool {
    secret_root(path) == Some(path)
}

/// The secret key path that `path` is, or lies below (`ecs.settings` for
/// `ecs.settings.KEY` or `ecs.settings[0]`); `None` outside every secret.
///
/// Whatever is below a secret (the keys of a secret written as a map, the
/// items of a list, their tags) is as secret as the value: messages name
/// only this root.
pub fn secret_root(path: &str) -> Option<&str> {
    let under = |root: &str| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    if let Some(root) = SECRET_PATHS.iter().find(|r| under(r)) {
        return Some(&path[..root.len()]);
    }
    // appliance.extra.files[N].contents
    let rest = path.strip_prefix("appliance.extra.files[")?;
    let close = rest.find(']')?;
    if close == 0 || !rest[..close].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let after = &rest[close + 1..];
    let tail = after.strip_prefix(".contents")?;
    (tail.is_empty() || tail.starts_with(['.', '['])).then(|| {
        let len = "appliance.extra.files[".len() + close + 1 + ".contents".len();
        &path[..len]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths_and_below() {
        assert!(is_secret_path("ecs.settings"));
        assert!(is_secret_path("appliance.extra.files[3].contents"));
        assert!(!is_secret_path("ecs.settings.x"));
        assert_eq!(secret_root("ecs.settings.KEY=x"), Some("ecs.settings"));
        assert_eq!(secret_root("ecs.settings[2].a"), Some("ecs.settings"));
        assert_eq!(
            secret_root("appliance.extra.files[12].contents.k"),
            Some("appliance.extra.files[12].contents")
        );
        assert_eq!(
            secret_root("appliance.backup.url.x"),
            Some("appliance.backup.url")
        );
        assert_eq!(secret_root("ecs.settings_x"), None);
        assert_eq!(secret_root("ecs.settingsx"), None);
        assert_eq!(secret_root("appliance.extra.files[1].path"), None);
        assert_eq!(secret_root("appliance.extra.files[].contents"), None);
        assert_eq!(secret_root("appliance.backup.urls"), None);
        assert_eq!(secret_root(""), None);
    }

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
