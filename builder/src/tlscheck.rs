//! Checks the env's TLS certificate and key (`appliance.ssl.cert` and
//! `.key`) before anything is built: the certificate parses as PEM, the key
//! parses and belongs to it, the certificate names `appliance.domain` and has
//! not expired.
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
    let (Some(cert), Some(key)) = (&env.appliance.ssl.cert, &env.appliance.ssl.key) else {
        return Ok(());
    };
    let err = |what: &str, msg: String| bad_input(format!("{file}: appliance.ssl.{what}: {msg}"));
    if which("openssl").is_none() {
        return Err(err(
            "cert",
            "checking the certificate needs openssl (apt-get install openssl)".into(),
        ));
    }
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
            let end = e
                .to_string()
                .lines()
                .find_map(|l| l.trim().strip_prefix("notAfter=").map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            Err(err("cert", format!("has expired (notAfter {end})")))
        }
    }
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
}
