//! The appliance's DKIM key (`appliance.dkim.key`): making one, and the DNS
//! TXT record that publishes its public half.
//!
//! The key is made and read by the host's `openssl` through the command
//! runner (the tool `tlscheck` already needs), the private key only ever on
//! standard input or output, never on a command line or in a file.

use std::process::Command;

use anyhow::Context;
use seeds::cmd;
use seeds::secret::Secret;

/// The DKIM selector: the record lives at `SELECTOR._domainkey.DOMAIN`.
pub const SELECTOR: &str = "ecs";

/// A fresh RSA 2048 private key, PEM (PKCS#8, `BEGIN PRIVATE KEY`).
pub fn generate() -> anyhow::Result<Secret<String>> {
    let mut c = Command::new("openssl");
    c.args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
    ]);
    let out = cmd::run(&mut c).context("making the DKIM key (openssl genpkey)")?;
    let pem = String::from_utf8(out.stdout).context("openssl's key is not text")?;
    Ok(Secret::new(pem))
}

/// The base64 of the key's public half (DER SubjectPublicKeyInfo), as a
/// DKIM record's `p=` carries it.
pub fn public_key_base64(key: &Secret<String>) -> anyhow::Result<String> {
    let mut c = Command::new("openssl");
    c.args(["pkey", "-pubout"]);
    let out = cmd::run_with_input(&mut c, Some(key.expose().as_bytes()))
        .map_err(|_| anyhow::anyhow!("the DKIM key is not a PEM private key openssl can read"))?;
    Ok(out
        .text()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect())
}

/// The zone-file line for the DKIM record of `domain`: the TXT value split
/// into strings of at most 255 characters (a 2048-bit key does not fit in
/// one), e.g.
/// `ecs._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; " "p=MIIB..." )`.
pub fn dns_record(domain: &str, selector: &str, public_b64: &str) -> String {
    let value = format!("p={public_b64}");
    let mut parts = vec!["\"v=DKIM1; k=rsa; \"".to_string()];
    let bytes = value.as_bytes();
    for chunk in bytes.chunks(255) {
        parts.push(format!("\"{}\"", String::from_utf8_lossy(chunk)));
    }
    format!(
        "{selector}._domainkey.{}. IN TXT ( {} )",
        domain.trim_end_matches('.'),
        parts.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_splits_long_values() {
        let p = "A".repeat(392);
        let r = dns_record("ecs.example.org.", "ecs", &p);
        assert!(
            r.starts_with("ecs._domainkey.ecs.example.org. IN TXT ( \"v=DKIM1; k=rsa; \" \"p=AAA")
        );
        let strings: Vec<&str> = r.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 3);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings[1..].concat(), format!("p={p}"));
    }
}
