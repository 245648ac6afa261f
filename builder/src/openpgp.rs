//! OpenPGP keys and encryption through the host's `gpg --batch`, run by the
//! command runner in a private, throw-away home directory.
//!
//! Why `gpg` and not an in-process OpenPGP crate (sequoia-openpgp, rpgp):
//! sequoia pulls in a cryptographic backend and some hundred crates, minutes
//! of compile time on a 2-core machine for keys an operator makes once per
//! appliance; `gpg` is on every Debian host (package `gnupg`, which the
//! build host has anyway), it is the reference implementation the keys'
//! readers are tested against, and the tests check its keys with a second,
//! independent `gpg` run. The keys come from libgcrypt's random source,
//! which reads the kernel's.
//!
//! Secrets never leave through a command line, a log or a file others may
//! read: each [`GpgHome`] is a fresh 0700 temporary directory (its agent
//! stopped and the directory removed on drop), the keys are made without a
//! passphrase from a parameter file on standard input, and exported on
//! standard output into memory. A passphrase goes through a pipe
//! (`--passphrase-fd`), never through an argument or the environment.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use seeds::cmd;
use seeds::secret::Secret;

/// What kind of key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// An ed25519 primary key for signing and certifying, with a cv25519
    /// subkey for encryption.
    Encrypt,
    /// An ed25519 key for signing only.
    Sign,
}

/// A key made by [`GpgHome::generate`]: its fingerprint and user id.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub fingerprint: String,
    pub uid: String,
}

/// A private GnuPG home directory, removed (and its agent stopped) on drop.
pub struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    /// A fresh, empty home, mode 0700.
    pub fn new() -> anyhow::Result<GpgHome> {
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-gpg.")
            .tempdir()
            .context("creating a temporary GnuPG home")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .context("making the temporary GnuPG home private")?;
        Ok(GpgHome { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `gpg --homedir HOME --batch --no-tty` plus `args`.
    pub fn gpg(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.dir.path())
            .args(["--batch", "--no-tty", "--no-options"])
            .args(args);
        c
    }

    /// Makes a key without a passphrase for `name <email>`.
    pub fn generate(&self, name: &str, email: &str, usage: KeyUse) -> anyhow::Result<KeyInfo> {
        if [name, email]
            .iter()
            .any(|s| s.contains(['\n', '\r', '<', '>']))
        {
            anyhow::bail!("a key's name or e-mail may not contain line breaks or <>");
        }
        let sub = match usage {
            KeyUse::Encrypt => "Subkey-Type: ecdh\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n",
            KeyUse::Sign => "",
        };
        let params = format!(
            "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n{sub}\
             Name-Real: {name}\nName-Email: {email}\nExpire-Date: 0\n%commit\n"
        );
        let out = cmd::run_with_input(
            &mut self.gpg(&["--status-fd", "1", "--gen-key"]),
            Some(params.as_bytes()),
        )
        .with_context(|| format!("making the OpenPGP key {name}"))?;
        // The status line `[GNUPG:] KEY_CREATED P|B|S FINGERPRINT`.
        let fingerprint = out
            .text()
            .lines()
            .find_map(|l| {
                let mut f = l.strip_prefix("[GNUPG:] KEY_CREATED ")?.split(' ');
                f.next()?;
                f.next().map(str::to_string)
            })
            .with_context(|| format!("gpg made the key {name} but did not say its fingerprint"))?;
        Ok(KeyInfo {
            fingerprint,
            uid: format!("{name} <{email}>"),
        })
    }

    /// The secret key `fingerprint`, ASCII-armored (it never touches disk
    /// outside this home).
    pub fn export_secret(&self, fingerprint: &str) -> anyhow::Result<Secret<String>> {
        let out = cmd::run(&mut self.gpg(&["--armor", "--export-secret-keys", fingerprint]))
            .with_context(|| format!("exporting the OpenPGP key {fingerprint}"))?;
        let text = String::from_utf8(out.stdout).context("gpg's armored export is not text")?;
        if !text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            anyhow::bail!("gpg exported no secret key for {fingerprint}");
        }
        Ok(Secret::new(text))
    }

    /// Imports keys (armored or binary, public or secret) and returns the
    /// fingerprints of the primary keys it now holds.
    pub fn import(&self, keys: &[u8]) -> anyhow::Result<Vec<String>> {
        cmd::run_with_input(&mut self.gpg(&["--import"]), Some(keys)).context("importing keys")?;
        let out = cmd::run(&mut self.gpg(&["--with-colons", "--list-keys"]))
            .context("listing the imported keys")?;
        Ok(primary_fingerprints(&out.text()))
    }

    /// `input` encrypted, either to every key in `recipients` or
    /// symmetrically (AES256) with `passphrase`, which goes to gpg on its
    /// standard input (`--passphrase-fd 0`). The result is returned, not
    /// written: the caller writes it with the mode it wants.
    pub fn encrypt(
        &self,
        input: &Path,
        recipients: &[String],
        passphrase: Option<&Secret<String>>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut c = self.gpg(&["--output", "-"]);
        match passphrase {
            Some(_) => {
                c.args([
                    "--symmetric",
                    "--cipher-algo",
                    "AES256",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-fd",
                    "0",
                ]);
            }
            None => {
                anyhow::ensure!(!recipients.is_empty(), "no key to encrypt to");
                c.args(["--encrypt", "--trust-model", "always"]);
                for r in recipients {
                    c.args(["--recipient", r]);
                }
            }
        }
        c.arg(input);
        let stdin = passphrase.map(|p| format!("{}\n", p.expose()));
        let out = cmd::run_with_input(&mut c, stdin.as_deref().map(str::as_bytes))
            .with_context(|| format!("encrypting {}", input.display()))?;
        Ok(out.stdout)
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        // The agent gpg started for this home; it would outlive the directory.
        let mut c = Command::new("gpgconf");
        c.arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "all"]);
        let _ = cmd::run(&mut c);
    }
}

/// The fingerprints of the primary keys (`pub`/`sec` records) in
/// `gpg --with-colons` output.
pub fn primary_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = false;
    for line in colons.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first() {
            Some(&"pub") | Some(&"sec") => want = true,
            Some(&"fpr") if want => {
                if let Some(f) = fields.get(9) {
                    out.push(f.to_string());
                }
                want = false;
            }
            Some(&"sub") | Some(&"ssb") => want = false,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_of_primaries_only() {
        let colons = "tru::1:0:0:0:0:0\npub:u:255:22:AAAA:1::::::scESC:\nfpr:::::::::P1:\nuid:u::::1::H::n <e>::::\nsub:u:255:18:BBBB:1:::::e:\nfpr:::::::::S1:\nsec:u:255:22:CCCC:1::::::scESC:\nfpr:::::::::P2:\n";
        assert_eq!(primary_fingerprints(colons), ["P1", "P2"]);
    }
}
