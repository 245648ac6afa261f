//! The env as QR code payloads, and back: the exact bytes of env.yml split
//! into numbered text payloads, and reassembled from them in any order.
//!
//! A payload is one line of QR "alphanumeric" characters (upper-case
//! letters, digits, space, `/`), so a code holds 5.5 bits per character and a
//! scanner prints it on one line:
//!
//! `ECSENV1 n/N HASH DATA`
//!
//! - `n/N`: this code's number and the number of codes;
//! - `HASH`: the first 128 bits of the env's sha256, upper-case hex (all
//!   codes of one env carry the same; reassembly checks it);
//! - `DATA`: this code's part of the env, base32 (RFC 4648, upper case,
//!   without `=` padding, which the alphanumeric set lacks).

use sha2::{Digest, Sha256};

const MAGIC: &str = "ECSENV1";
/// Base32 characters of env data per code (750 bytes): a version 25-ish code
/// at error correction level M, scannable from paper.
pub const CHUNK_CHARS: usize = 1200;
const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 128 bits of the sha256 of `bytes`, upper-case hex.
pub fn short_hash(bytes: &[u8]) -> String {
    hex::encode_upper(&Sha256::digest(bytes)[..16])
}

/// The payloads that together carry `bytes` (at least one, even for an
/// empty file).
pub fn payloads(bytes: &[u8]) -> Vec<String> {
    let data = base32(bytes);
    let hash = short_hash(bytes);
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.as_bytes().chunks(CHUNK_CHARS).collect()
    };
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{MAGIC} {}/{n} {hash} {}",
                i + 1,
                std::str::from_utf8(c).expect("base32 is ASCII")
            )
        })
        .collect()
}

/// A payload's label as printed beside its code: `n/N`.
pub fn label(payload: &str) -> &str {
    payload.split(' ').nth(1).unwrap_or("")
}

/// The env's bytes from its payloads: lines of text in any order, as
/// `zbarimg --raw` prints them (blank lines, and lines that are not ours,
/// such as other codes on a scanned page, are skipped; a code scanned twice
/// is fine). Fails, saying which, when a code is missing, two envs are
/// mixed, or the result does not hash to what the codes say.
pub fn reassemble(text: &str) -> Result<Vec<u8>, String> {
    let mut total: Option<(usize, String)> = None;
    let mut parts: Vec<Option<String>> = Vec::new();
    let mut found = 0usize;
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with(&format!("{MAGIC} ")) {
            continue;
        }
        found += 1;
        let bad = || format!("line {}: not a whole env QR payload", lineno + 1);
        let mut f = line.splitn(4, ' ').skip(1);
        let (nn, hash, data) = (
            f.next().ok_or_else(bad)?,
            f.next().ok_or_else(bad)?,
            f.next().unwrap_or(""),
        );
        let (i, n) = nn.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if n == 0 || i == 0 || i > n || n > 10_000 || hash.len() != 32 {
            return Err(bad());
        }
        match &total {
            None => {
                total = Some((n, hash.to_string()));
                parts = vec![None; n];
            }
            Some((tn, th)) if *tn != n || th != hash => {
                return Err(format!(
                    "line {}: a code of another env (env {hash}, {n} codes; the first was env {th}, {tn} codes)",
                    lineno + 1
                ))
            }
            Some(_) => {}
        }
        match &parts[i - 1] {
            Some(d) if d != data => {
                return Err(format!(
                    "line {}: code {i}/{n} differs from an earlier scan of it",
                    lineno + 1
                ))
            }
            _ => parts[i - 1] = Some(data.to_string()),
        }
    }
    let Some((n, hash)) = total else {
        return Err(if found == 0 {
            "no env QR payload (lines starting with ECSENV1) found".into()
        } else {
            "no whole env QR payload found".into()
        });
    };
    let missing: Vec<String> = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| format!("{}/{n}", i + 1))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing code(s) {} of {n}: scan them too",
            missing.join(", ")
        ));
    }
    let data: String = parts.into_iter().flatten().collect();
    let bytes = unbase32(&data).ok_or("the codes' data is not base32")?;
    if short_hash(&bytes) != hash {
        return Err(
            "the reassembled env does not match the codes' sha256 (a code was misread)".into(),
        );
    }
    Ok(bytes)
}

/// RFC 4648 base32, upper case, no padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The inverse of [`base32`] (`=` padding tolerated); `None` on anything else.
pub fn unbase32(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B32.iter().position(|&x| x == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Left-over bits must be the zero padding of the last character.
    (acc == 0 && bits < 5).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        for n in 0..40 {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unbase32(&base32(&v)).unwrap(), v);
        }
        assert!(unbase32("MZ1").is_none());
    }

    #[test]
    fn payloads_reassemble_in_any_order() {
        let env: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let p = payloads(&env);
        assert!(p.len() > 2);
        assert_eq!(label(&p[0]), format!("1/{}", p.len()));
        for l in &p {
            assert!(l
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'/'));
        }
        let mut lines: Vec<String> = p.iter().rev().cloned().collect();
        lines.insert(1, String::new());
        lines.push(p[0].clone());
        lines.push("some other code".into());
        assert_eq!(reassemble(&lines.join("\n")).unwrap(), env);

        let without: Vec<String> = p[1..].to_vec();
        let e = reassemble(&without.join("\n")).unwrap_err();
        assert!(e.contains(&format!("missing code(s) 1/{}", p.len())), "{e}");
        let other = payloads(b"another env");
        let e = reassemble(&format!("{}\n{}", p[0], other[0])).unwrap_err();
        assert!(e.contains("another env"), "{e}");
        let mut broken = p.clone();
        broken[1] = broken[1].replacen('A', "B", 1);
        assert!(reassemble(&broken.join("\n")).is_err());
        assert_eq!(reassemble(&payloads(b"").join("\n")).unwrap(), b"");
    }
}
