//! Decoding what the metadata services hand over: base64 (standard
//! alphabet, padding optional, white space ignored) and the few elements
//! read from Azure's XML (`ovf-env.xml`, the goal state). Both are hostile
//! input: sizes are bounded by the caller's limits, and no error quotes the
//! text (it may be a secret).

use anyhow::{bail, Result};

/// Decodes base64 (white space ignored, padding optional); at most
/// `limit` output bytes ([`seeds::base64::decode_lines`]).
pub fn base64(text: &[u8], limit: usize) -> Result<Vec<u8>> {
    Ok(seeds::base64::decode_lines(text, limit)?)
}

/// The text of the first element named `name` (any namespace prefix:
/// `<ns1:CustomData>`), entities decoded; `None` when absent or empty.
pub fn xml_element(xml: &str, name: &str) -> Result<Option<String>> {
    Ok(xml_elements(xml, name)?.into_iter().next())
}

/// The texts of every element named `name`, in order (nested elements of
/// other names are skipped: only text without markup is returned).
pub fn xml_elements(xml: &str, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let Some(close) = rest.find('>') else { break };
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        if tag.starts_with('/') || tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let tag_name = tag.split(|c: char| c.is_whitespace() || c == '/').next();
        let local = tag_name.map(|t| t.rsplit(':').next().unwrap_or(t));
        if local != Some(name) || tag.ends_with('/') {
            continue;
        }
        let Some(end) = rest.find('<') else {
            bail!("XML element {name} is not closed");
        };
        if !rest[end..].starts_with("</") {
            continue;
        }
        let text = unescape(rest[..end].trim())?;
        if !text.is_empty() {
            out.push(text);
        }
    }
    Ok(out)
}

/// XML's five entities and numeric character references.
fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let Some(semi) = rest.find(';').filter(|&n| n <= 10) else {
            bail!("bad XML entity");
        };
        let ent = &rest[..semi];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                match n.and_then(char::from_u32) {
                    Some(c) => c,
                    None => bail!("bad XML entity"),
                }
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A host name from a platform: letters, digits, `-` and `.`, at most 253
/// characters, no empty label.
pub fn host_name(s: &str) -> Result<String> {
    let s = s.trim().trim_end_matches('.');
    if s.is_empty()
        || s.len() > 253
        || !s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        bail!("not a host name ({} characters)", s.len());
    }
    Ok(s.to_ascii_lowercase())
}

/// An OpenSSH public key line from a platform: one line of printable
/// ASCII, at most 16 KiB, starting with a key type.
pub fn ssh_key(s: &str) -> Result<String> {
    let s = s.trim();
    let known = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"];
    if s.len() > 16384
        || !known.iter().any(|k| s.starts_with(k))
        || !s.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        bail!("not an OpenSSH public key line");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_and_refuses() {
        assert_eq!(base64(b"aGVsbG8=", 100).unwrap(), b"hello");
        assert_eq!(base64(b"aGVsbG8", 100).unwrap(), b"hello");
        assert_eq!(base64(b"aGVs\nbG8h\n", 100).unwrap(), b"hello!");
        assert_eq!(base64(b"", 100).unwrap(), b"");
        for bad in [&b"aGVsbG8*"[..], b"aGVsbG8=x", b"a", b"aGVsbG9="] {
            let msg = format!("{:#}", base64(bad, 100).unwrap_err());
            assert!(msg.starts_with("not base64"), "{msg}");
        }
        let msg = format!("{:#}", base64(b"aGVsbG8=", 4).unwrap_err());
        assert!(msg.contains("larger than"), "{msg}");
    }

    #[test]
    fn xml_elements_any_prefix() {
        let x = "<?xml version=\"1.0\"?><a><ns1:HostName>vm-1</ns1:HostName>\
                 <CustomData/><V>a&amp;b&#x41;</V><V>2</V><Empty></Empty></a>";
        assert_eq!(xml_element(x, "HostName").unwrap().as_deref(), Some("vm-1"));
        assert_eq!(xml_element(x, "CustomData").unwrap(), None);
        assert_eq!(xml_element(x, "Empty").unwrap(), None);
        assert_eq!(xml_elements(x, "V").unwrap(), ["a&bA", "2"]);
        assert!(xml_element("<V>&bogus;</V>", "V").is_err());
        assert!(xml_element("<V>open", "V").is_err());
    }

    #[test]
    fn host_names_and_keys() {
        assert_eq!(host_name("VM-1.example.").unwrap(), "vm-1.example");
        for bad in ["", "a..b", "a b", "x;rm", &"a".repeat(64)] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
        assert!(ssh_key("ssh-ed25519 AAAA x@y").is_ok());
        assert!(ssh_key("ssh-ed25519 AAAA\nssh-rsa B").is_err());
        assert!(ssh_key("command=\"x\" ssh-rsa AAAA").is_err());
    }
}
