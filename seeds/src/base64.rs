//! Base64 (RFC 4648, the standard alphabet) for everything the workspace
//! encodes or decodes: the DKIM record's public key, the keys of an env's
//! `ssh_authorized_keys`, the user-data metadata services hand over. One
//! place, on the `base64` crate; what is ours is the leniency those inputs
//! need (padding optional, white space between lines of a metadata
//! answer) and errors that never quote the text, which may be a secret.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Encodes with padding.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Padding optional, as SSH keys and metadata services write it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Also the last symbol's unused bits set, as OpenSSH's own decoder
/// (`b64_pton`) takes a key line.
const LOOSE: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why text is not base64; never quotes it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not base64 (a character outside the alphabet at byte {0})")]
    Symbol(usize),
    #[error("not base64 (the length or the padding is wrong)")]
    Shape,
    #[error("decoded data larger than {} KiB", .0 >> 10)]
    TooLarge(usize),
}

/// Decodes `text` (padding optional); no white space allowed.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, Error> {
    LENIENT.decode(text).map_err(error)
}

/// Decodes the base64 of an OpenSSH key line: as [`decode`], and unused
/// bits of the last symbol may be set.
pub fn decode_key(text: &[u8]) -> Result<Vec<u8>, Error> {
    LOOSE.decode(text).map_err(error)
}

fn error(e: base64::DecodeError) -> Error {
    match e {
        base64::DecodeError::InvalidByte(i, b) if b != b'=' => Error::Symbol(i),
        _ => Error::Shape,
    }
}

/// Decodes `text`, ignoring white space (spaces, tabs, line breaks), into
/// at most `limit` bytes; positions in errors count the text as given.
pub fn decode_lines(text: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    let mut compact = Vec::with_capacity(text.len());
    let mut at = Vec::with_capacity(text.len());
    for (i, &c) in text.iter().enumerate() {
        if !matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            compact.push(c);
            at.push(i);
        }
    }
    if compact.len() / 4 * 3 > limit.saturating_add(3) {
        return Err(Error::TooLarge(limit));
    }
    let out = decode(&compact).map_err(|e| match e {
        Error::Symbol(i) => Error::Symbol(at.get(i).copied().unwrap_or(i)),
        e => e,
    })?;
    if out.len() > limit {
        return Err(Error::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc.as_bytes()).unwrap(), plain.as_bytes());
            assert_eq!(
                decode(enc.trim_end_matches('=').as_bytes()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn lenient_but_not_careless() {
        assert_eq!(decode_lines(b"aGVs\nbG8h\n", 100).unwrap(), b"hello!");
        assert_eq!(decode_lines(b"aGVsbG8", 100).unwrap(), b"hello");
        assert_eq!(decode_lines(b"aGVs bG8*", 100), Err(Error::Symbol(8)));
        for bad in [&b"aGVsbG8=x"[..], b"a", b"aGVsbG9=", b"aGVsbG8==="] {
            let e = decode_lines(bad, 100).unwrap_err();
            assert!(e.to_string().starts_with("not base64"), "{e}");
        }
        assert_eq!(decode_lines(b"aGVsbG8=", 4), Err(Error::TooLarge(4)));
        assert_eq!(
            decode_lines(&b"QUFB".repeat(1000), 100),
            Err(Error::TooLarge(100))
        );
        assert!(decode(b"aGVs\nbG8h").is_err());
        assert!(decode(b"aGVsbG9").is_err());
        assert_eq!(decode_key(b"aGVsbG9").unwrap(), b"hello");
    }
}
