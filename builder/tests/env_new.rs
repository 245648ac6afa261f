//! `imgbuild env new` through the real binary, judged by outside tools: the
//! env passes `imgbuild env check`, its OpenPGP keys import into `gpg` with
//! the fingerprints printed, its DKIM key passes `openssl pkey -check` and
//! matches the printed record, two runs share no secret, an existing env is
//! never replaced, and nothing printed holds a secret.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use seeds::env::Env;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example";

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running imgbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `env new` into `dir`, returns (stdout + stderr, the parsed env).
fn new_env(dir: &Path) -> (String, Env) {
    let keyfile = dir.with_extension("pub");
    fs::write(&keyfile, format!("# admin\n{KEY}\n\n")).unwrap();
    let o = imgbuild(&[
        "env",
        "new",
        "ecs.example.org",
        "-o",
        dir.to_str().unwrap(),
        "--ssh-key",
        keyfile.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let path = dir.join("env.yml");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let env = Env::load(&path).unwrap();
    (format!("{}{}", text(&o.stdout), text(&o.stderr)), env)
}

/// The secrets of an env, each as text.
fn secrets(env: &Env) -> Vec<String> {
    let mut s = vec![
        env.ecs.vault_encrypt.expose().clone(),
        env.ecs.vault_sign.expose().clone(),
        env.appliance.dkim_key.as_ref().unwrap().expose().clone(),
        env.appliance
            .backup
            .encrypt
            .as_ref()
            .unwrap()
            .expose()
            .clone(),
    ];
    for line in env.ecs.settings.expose().lines() {
        if line.contains("SECRET") {
            let v = line.split('\'').nth(1).unwrap().to_string();
            assert!(v.len() >= 40, "{line}");
            s.push(v);
        }
    }
    assert_eq!(s.len(), 7, "three secret settings");
    s
}

/// The base64 lines of a PEM or armored block (its key material).
fn body_lines(block: &str) -> Vec<&str> {
    block
        .lines()
        .filter(|l| l.len() > 40 && !l.starts_with("-----"))
        .collect()
}

#[test]
fn new_env_checks_and_its_keys_work() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("one");
    let (printed, env) = new_env(&dir);
    assert_eq!(env.appliance.domain, "ecs.example.org");
    assert_eq!(env.ssh_authorized_keys, [KEY]);
    assert!(env.warnings.is_empty());

    let o = imgbuild(&["env", "check", dir.join("env.yml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // Nothing printed holds a secret.
    for secret in secrets(&env) {
        for line in body_lines(&secret) {
            assert!(!printed.contains(line), "printed a secret line");
        }
        assert!(!printed.contains(&secret));
    }

    // The OpenPGP keys import into gpg as secret keys, with the printed fingerprints.
    for key in [
        env.ecs.vault_encrypt.expose(),
        env.ecs.vault_sign.expose(),
        env.appliance.backup.encrypt.as_ref().unwrap().expose(),
    ] {
        let home = tempfile::tempdir().unwrap();
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.arg("--homedir")
                .arg(home.path())
                .arg("--batch")
                .args(args);
            c
        };
        let o = run_with_input(&mut gpg(&["--import"]), key.as_bytes());
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = gpg(&["--with-colons", "--list-secret-keys"])
            .output()
            .unwrap();
        let colons = text(&o.stdout);
        let fpr = colons
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        assert!(colons.lines().any(|l| l.starts_with("sec:")), "{colons}");
        assert!(printed.contains(&fpr), "fingerprint {fpr} printed");
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(home.path())
            .args(["--kill", "all"])
            .output();
    }

    // The DKIM key is a sound RSA 2048 key, and the printed record is its public half.
    let dkim = env.appliance.dkim_key.as_ref().unwrap().expose();
    let o = run_with_input(
        Command::new("openssl").args(["pkey", "-check", "-noout"]),
        dkim.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run_with_input(
        Command::new("openssl").args(["pkey", "-text_pub", "-noout"]),
        dkim.as_bytes(),
    );
    assert!(
        text(&o.stdout).contains("(2048 bit)"),
        "{}",
        text(&o.stdout)
    );
    let o = run_with_input(
        Command::new("openssl").args(["pkey", "-pubout"]),
        dkim.as_bytes(),
    );
    let public: String = text(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let record = printed
        .lines()
        .find(|l| l.starts_with("ecs._domainkey.ecs.example.org. IN TXT \""))
        .expect("the DKIM record is printed");
    let value: String = record.split('"').skip(1).step_by(2).collect();
    assert_eq!(value, format!("v=DKIM1; k=rsa; p={public}"));
}

/// The 40-hex-digit fingerprints in `env new`'s output.
fn fingerprints(printed: &str) -> Vec<String> {
    printed
        .split_whitespace()
        .filter(|w| w.len() == 40 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

fn dkim_modulus(env: &Env) -> String {
    let dkim = env.appliance.dkim_key.as_ref().unwrap().expose();
    let o = run_with_input(
        Command::new("openssl").args(["rsa", "-noout", "-modulus"]),
        dkim.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn two_envs_share_no_secret() {
    let d = tempfile::tempdir().unwrap();
    let (printed_a, a) = new_env(&d.path().join("a"));
    let (printed_b, b) = new_env(&d.path().join("b"));
    // Every secret differs as a whole ...
    for (x, y) in secrets(&a).iter().zip(secrets(&b).iter()) {
        assert_ne!(x, y);
    }
    // ... the settings' secrets and the keys themselves too (an armored
    // block shares fixed lines such as its user id with another; its key
    // material is named by the fingerprint, the RSA key by its modulus).
    let b_text = fs::read_to_string(d.path().join("b/env.yml")).unwrap();
    for secret in &secrets(&a)[4..] {
        assert!(
            !b_text.contains(secret.as_str()),
            "a secret setting repeats"
        );
    }
    let (fa, fb) = (fingerprints(&printed_a), fingerprints(&printed_b));
    assert_eq!(fa.len(), 3);
    assert_eq!(fb.len(), 3);
    assert!(fa.iter().all(|f| !fb.contains(f)), "{fa:?} {fb:?}");
    assert_ne!(dkim_modulus(&a), dkim_modulus(&b));
}

#[test]
fn never_replaces_an_env_and_refuses_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("e");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("env.yml"), "mine\n").unwrap();
    let o = imgbuild(&["env", "new", "ecs.example.org", "-o", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));
    assert_eq!(fs::read_to_string(dir.join("env.yml")).unwrap(), "mine\n");

    // A dangling link is not written through either.
    let dir2 = d.path().join("l");
    fs::create_dir(&dir2).unwrap();
    std::os::unix::fs::symlink(d.path().join("target"), dir2.join("env.yml")).unwrap();
    let o = imgbuild(&[
        "env",
        "new",
        "ecs.example.org",
        "-o",
        dir2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!d.path().join("target").exists());

    let o = imgbuild(&[
        "env",
        "new",
        "10.0.0.1",
        "-o",
        d.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("IP address"),
        "{}",
        text(&o.stderr)
    );

    let bad = d.path().join("bad.pub");
    fs::write(&bad, "not a key\n").unwrap();
    let o = imgbuild(&[
        "env",
        "new",
        "ecs.example.org",
        "-o",
        d.path().join("y").to_str().unwrap(),
        "--ssh-key",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("bad.pub:1"), "{}", text(&o.stderr));
    assert!(!d.path().join("y").exists(), "nothing made on bad input");
}

#[test]
fn default_directory_is_the_domain() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["env", "new", "ecs.example.org"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let dir = d.path().join("ecs.example.org");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(dir.join("env.yml").is_file());
}
