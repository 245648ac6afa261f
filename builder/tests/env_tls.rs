//! `imgbuild env check` on the env's TLS certificate and key, with
//! certificates made by openssl in the test: a good pair passes; a key of
//! another certificate, a certificate for another name, an expired one and
//! text that is no PEM are refused (exit 2) naming the key path, and the
//! key never appears in a message.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed (scripts/install-host-deps.sh installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A key and a self-signed certificate for `name` in `dir`/`stem`.{key,crt},
/// valid now, or (with `expired`) only in January 2020.
fn pair(dir: &Path, stem: &str, name: &str, expired: bool) -> (String, String) {
    let key = format!("{stem}.key");
    let crt = format!("{stem}.crt");
    let csr = format!("{stem}.csr");
    let san = format!("subjectAltName=DNS:{name}");
    let subj = format!("/CN={name}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    if expired {
        // `openssl ca` is the tool that takes explicit dates.
        let db = dir.join(format!("{stem}-ca"));
        fs::create_dir_all(&db).unwrap();
        fs::write(db.join("index.txt"), "").unwrap();
        fs::write(db.join("serial"), "01\n").unwrap();
        fs::write(
            db.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\n\
                 serial = {0}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n\
                 [p]\ncommonName = supplied\n",
                db.display()
            ),
        )
        .unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend([
            "-keyout", &key, "-out", &csr, "-subj", &subj, "-addext", &san,
        ]);
        openssl(dir, &a);
        let cnf = db.join("ca.cnf");
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                cnf.to_str().unwrap(),
                "-selfsign",
                "-keyfile",
                &key,
                "-in",
                &csr,
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-out",
                &crt,
            ],
        );
    } else {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-days", "30", "-keyout", &key, "-out", &crt, "-subj", &subj, "-addext", &san,
        ]);
        openssl(dir, &a);
    }
    (
        fs::read_to_string(dir.join(crt)).unwrap(),
        fs::read_to_string(dir.join(key)).unwrap(),
    )
}

fn env_with(cert: &str, key: &str) -> String {
    let block = |pem: &str| {
        pem.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    format!(
        "#cloud-config\nappliance:\n  domain: ecs.example.org\n  ssl:\n    cert: |\n{}    key: |\n{}\
         ecs:\n  settings: s\n  vault_encrypt: e\n  vault_sign: s\n",
        block(cert),
        block(key)
    )
}

fn check(dir: &Path, name: &str, env: &str) -> Output {
    let p = dir.join(name);
    fs::write(&p, env).unwrap();
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["env", "check"])
        .arg(&p)
        .env_remove("RUST_LOG")
        .output()
        .expect("running imgbuild")
}

#[test]
fn tls_pairs_are_checked_at_env_check_time() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (good_crt, good_key) = pair(dir, "good", "ecs.example.org", false);
    let (_, other_key) = pair(dir, "other", "ecs.example.org", false);
    let (wrong_crt, wrong_key) = pair(dir, "wrong", "elsewhere.example.org", false);
    let (old_crt, old_key) = pair(dir, "old", "ecs.example.org", true);

    let o = check(dir, "good.yml", &env_with(&good_crt, &good_key));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let key_body = |k: &str| k.lines().nth(1).unwrap().to_string();
    for (name, crt, key, want) in [
        (
            "mismatch",
            &good_crt,
            &other_key,
            "appliance.ssl.key: does not belong to appliance.ssl.cert",
        ),
        (
            "name",
            &wrong_crt,
            &wrong_key,
            "appliance.ssl.cert: does not name the appliance's domain ecs.example.org",
        ),
        (
            "expired",
            &old_crt,
            &old_key,
            "appliance.ssl.cert: has expired (notAfter Jan  2 00:00:00 2020 GMT)",
        ),
        (
            "nocert",
            &"not a certificate\n".to_string(),
            &good_key,
            "appliance.ssl.cert: not a PEM certificate",
        ),
        (
            "nokey",
            &good_crt,
            &"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string(),
            "appliance.ssl.key: not a PEM private key",
        ),
    ] {
        let o = check(dir, &format!("{name}.yml"), &env_with(crt, key));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.yml: {want}")),
            "{name}: {err}"
        );
        assert!(
            !err.contains(&key_body(key)) && !err.contains("PRIVATE KEY"),
            "{name}: the key reached the message: {err}"
        );
        assert!(o.stdout.is_empty());
    }
}

/// `appliance.ssl.letsencrypt.directory_ca`: a certificate openssl reads and
/// that has not expired.
#[test]
fn acme_directory_ca_is_checked() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (good, _) = pair(dir, "acme", "acme.example.org", false);
    let (old, _) = pair(dir, "acme-old", "acme.example.org", true);
    // `openssl ca` writes the certificate's text before its PEM.
    let old = &old[old.find("-----BEGIN").unwrap()..];
    let env = |ca: &str| {
        let block: String = ca.lines().map(|l| format!("        {l}\n")).collect();
        format!(
            "#cloud-config\nappliance:\n  domain: ecs.example.org\n  ssl:\n    letsencrypt:\n      \
             directory: https://acme.example.org/dir\n      directory_ca: |\n{block}\
             ecs:\n  settings: s\n  vault_encrypt: e\n  vault_sign: s\n"
        )
    };
    let o = check(dir, "ca-good.yml", &env(&good));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (name, ca, want) in [
        ("ca-old", old, "appliance.ssl.letsencrypt.directory_ca: has expired (notAfter Jan  2 00:00:00 2020 GMT)"),
        (
            "ca-junk",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "appliance.ssl.letsencrypt.directory_ca: not a PEM certificate openssl can read",
        ),
    ] {
        let o = check(dir, &format!("{name}.yml"), &env(ca));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{name}.yml: {want}")), "{name}: {err}");
    }
}
