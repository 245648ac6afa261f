//! The DNS TXT record that publishes the public half of the env's DKIM key
//! (`appliance.dkim.key`), for `imgbuild env check --dkim-record`.
//!
//! The public key is derived by the host's `openssl rsa -pubout -outform
//! DER` through the command runner ([`crate::cmd`]): the private key goes
//! on its standard input, never on a command line or into a file, and no
//! message quotes it or openssl's output about it. `openssl rsa` reads only
//! RSA keys, which is what the record's `k=rsa` promises.

use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::secret::Secret;

/// The DKIM selector the appliance signs with: the record's name is
/// `ecs._domainkey.DOMAIN.`.
pub const SELECTOR: &str = "ecs";

/// The longest string a TXT record's RDATA holds; longer values are split
/// into several quoted strings, which DKIM verifiers join.
pub const TXT_STRING_MAX: usize = 255;

/// Why the public key could not be derived.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// openssl could not be started.
    #[error("the DKIM key needs openssl (apt-get install openssl): {0}")]
    NoOpenssl(#[source] CmdError),
    /// openssl could not make a key.
    #[error("openssl could not make an RSA key for DKIM")]
    Generate,
    /// openssl refused the key (its message is not shown: it is about a
    /// secret).
    #[error("is not a PEM RSA private key openssl can read (an unencrypted one)")]
    NotAnRsaKey,
}

/// A fresh RSA 2048 private key, PEM (PKCS#8), for `imgbuild env new`: made
/// by `openssl genpkey`, which prints it on its standard output (never a
/// file).
pub fn generate() -> Result<Secret<String>, DkimError> {
    let mut c = Command::new("openssl");
    c.args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
    ]);
    match cmd::run(&mut c) {
        Ok(out) => String::from_utf8(out.stdout)
            .map(Secret::new)
            .map_err(|_| DkimError::Generate),
        Err(e @ CmdError::Spawn { .. }) => Err(DkimError::NoOpenssl(e)),
        Err(_) => Err(DkimError::Generate),
    }
}

/// The record's owner name: `ecs._domainkey.DOMAIN.`.
pub fn record_name(domain: &str) -> String {
    format!("{SELECTOR}._domainkey.{}.", domain.trim_end_matches('.'))
}

/// The DER SubjectPublicKeyInfo of a PEM RSA private key.
pub fn public_key_der(key: &Secret<String>) -> Result<Vec<u8>, DkimError> {
    let mut c = Command::new("openssl");
    // `-passin pass:` so an encrypted key fails instead of prompting.
    c.args(["rsa", "-pubout", "-outform", "DER", "-passin", "pass:"]);
    match cmd::run_with_input(&mut c, Some(key.expose().as_bytes())) {
        Ok(out) if out.stdout.first() == Some(&0x30) => Ok(out.stdout),
        Ok(_) => Err(DkimError::NotAnRsaKey),
        Err(e @ CmdError::Spawn { .. }) => Err(DkimError::NoOpenssl(e)),
        Err(_) => Err(DkimError::NotAnRsaKey),
    }
}

/// The record's value, `v=DKIM1; k=rsa; p=BASE64`, as the quoted strings
/// of at most [`TXT_STRING_MAX`] characters a zone file needs.
pub fn txt_strings(spki_der: &[u8]) -> Vec<String> {
    let value = format!("v=DKIM1; k=rsa; p={}", crate::base64::encode(spki_der));
    value
        .as_bytes()
        .chunks(TXT_STRING_MAX)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect()
}

/// The zone-file line to publish: `ecs._domainkey.DOMAIN. IN TXT "..." "..."`.
pub fn txt_record(domain: &str, spki_der: &[u8]) -> String {
    format!(
        "{} IN TXT {}",
        record_name(domain),
        txt_strings(spki_der).join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_split_into_strings_of_255() {
        let der = vec![0x30u8; 294];
        let strings = txt_strings(&der);
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), TXT_STRING_MAX + 2);
        assert!(strings[0].starts_with("\"v=DKIM1; k=rsa; p=MDAw"));
        let joined: String = strings.iter().map(|s| s.trim_matches('"')).collect();
        assert_eq!(
            joined,
            format!("v=DKIM1; k=rsa; p={}", crate::base64::encode(&der))
        );
        assert_eq!(
            txt_record("ecs.example.org", &[0x30]),
            "ecs._domainkey.ecs.example.org. IN TXT \"v=DKIM1; k=rsa; p=MA==\""
        );
    }

    #[test]
    fn a_key_openssl_refuses_is_not_quoted() {
        if Command::new("openssl").arg("version").output().is_err() {
            return;
        }
        let e = public_key_der(&Secret::new("S3CR3T-NOT-A-KEY".into())).unwrap_err();
        assert!(matches!(e, DkimError::NotAnRsaKey));
        assert!(!e.to_string().contains("S3CR3T"));
    }
}
