//! Checks the env's TLS certificate and key (`appliance.ssl.cert` and
//! `.key`) before anything is built: the certificate parses as PEM, the key
//! parses and belongs to it, the certificate names `appliance.domain` and has
//! not expired. And the ACME server's CA (`appliance.ssl.letsencrypt.
//! directory_ca`): a certificate openssl reads, not expired.
//!
//! The checks run the host's `openssl` through the command runner rather than
//! an X.509 crate: it is the reference parser the appliance's own nginx
//! links, it knows every key type nginx accepts, and it implements RFC 6125
//! host name matching (`-checkhost`). The key is given on standard input,
//! never on a command line, and no message quotes it or openssl's output
//! about it.

use std::process::Command;

use seeds::cmd;
use seeds::env::Env;

use crate::exit::bad_input;

/// Checks the env's certificate and key when it has them; every problem is
/// bad input naming the key path.
pub fn check(env: &Env, file: &str) -> anyhow::Result<()> {
    let err = |what: &str, msg: String| bad_input(format!("{file}: appliance.ssl.{what}: {msg}"));
    let ssl = &env.appliance.ssl;
    if (ssl.cert.is_some() || ssl.letsencrypt_directory_ca.is_some()) && which("openssl").is_none()
    {
        return Err(err(
            "cert",
            "checking the certificates needs openssl (apt-get install openssl)".into(),
        ));
    }
    if let Some(ca) = &ssl.letsencrypt_directory_ca {
        let what = "letsencrypt.directory_ca";
        let mut c = Command::new("openssl");
        c.args(["x509", "-noout", "-enddate", "-checkend", "0"]);
        if let Err(e) = cmd::run_with_input(&mut c, Some(ca.as_bytes())) {
            return Err(match not_after(&e) {
                Some(end) => err(what, format!("has expired (notAfter {end})")),
                None => err(what, "not a PEM certificate openssl can read".into()),
            });
        }
    }
    let (Some(cert), Some(key)) = (&ssl.cert, &ssl.key) else {
        return Ok(());
    };
    let openssl = |args: &[&str], input: &[u8]| {
        let mut c = Command::new("openssl");
        c.args(args);
        cmd::run_with_input(&mut c, Some(input))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let cert_key = openssl(&["x509", "-noout", "-pubkey"], cert.as_bytes()).map_err(|_| {
        err(
            "cert",
            "not a PEM certificate (-----BEGIN CERTIFICATE----- ...)".into(),
        )
    })?;
    let key_pub = openssl(&["pkey", "-pubout"], key.expose().as_bytes())
        .map_err(|_| err("key", "not a PEM private key (an unencrypted one)".into()))?;
    if cert_key.trim() != key_pub.trim() {
        return Err(err(
            "key",
            "does not belong to appliance.ssl.cert (their public keys differ)".into(),
        ));
    }
    let domain = &env.appliance.domain;
    let host = openssl(&["x509", "-noout", "-checkhost", domain], cert.as_bytes())
        .map_err(|_| err("cert", "cannot be read by openssl x509".into()))?;
    if !host.contains("does match") {
        return Err(err(
            "cert",
            format!("does not name the appliance's domain {domain} (appliance.domain)"),
        ));
    }
    let mut c = Command::new("openssl");
    c.args(["x509", "-noout", "-enddate", "-checkend", "0"]);
    match cmd::run_with_input(&mut c, Some(cert.as_bytes())) {
        Ok(_) => Ok(()),
        Err(e) => {
            let end = not_after(&e).unwrap_or_else(|| "unknown".into());
            Err(err("cert", format!("has expired (notAfter {end})")))
        }
    }
}

/// The `notAfter=` date in a failed `openssl x509 -enddate -checkend`.
fn not_after(e: &impl std::fmt::Display) -> Option<String> {
    e.to_string()
        .lines()
        .find_map(|l| l.trim().strip_prefix("notAfter=").map(str::to_string))
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
}
