//! Reading `/proc/self/mountinfo`, shared by the builder (which mounts it
//! undid) and the agent (which finds the root filesystem's device).

/// Undoes mountinfo's escaping of space, tab, newline and backslash as `\ooo`
/// (three octal digits). Anything else, including an escape above `\377`,
/// is kept as it is.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escape = (b[i] == b'\\' && i + 4 <= b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match escape {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"/mnt/a\040b\011c\012d\134e"), "/mnt/a b\tc\nd\\e");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"\777\04"), r"\777\04");
        assert_eq!(unescape(r"end\"), r"end\");
    }
}
