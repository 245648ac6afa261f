//! `imgbuild env check` and `imgbuild seed` on good and bad input, through
//! the real binary: exit codes, messages, and no output file on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GOOD: &str = "#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3Nza admin@example\"]\nappliance:\n  domain: ecs.example.org\n  backup: {url: 'ssh://user:S3CR3T-PW@backup/x'}\necs:\n  settings: |\n    SECRET_KEY = 'S3CR3T-KEY'\n  vault_encrypt: S3CR3T-ENC\n  vault_sign: S3CR3T-SIGN\n";

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running imgbuild")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn good_env_checks_and_flattens() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let o = imgbuild(&["env", "check", env.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(!stderr(&o).contains("S3CR3T"), "{}", stderr(&o));
    let o = imgbuild(&["env", "check", env.to_str().unwrap(), "--flatten"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("export APPLIANCE_DOMAIN=ecs.example.org\n"),
        "{out}"
    );
    assert!(out.starts_with("export ECS_"), "{out}");
    let o = imgbuild(&[
        "env",
        "check",
        env.to_str().unwrap(),
        "--flatten",
        "--trees",
        ".",
        "--prefix",
        "",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("SSH_AUTHORIZED_KEYS_LEN=1\n"), "{out}");
}

/// Each bad env: exit 2, an error naming the problem, nothing else.
#[test]
fn bad_envs_exit_2_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let huge = format!("#cloud-config\nx: '{}'\n", "a".repeat(5 << 20));
    let with = |extra: &str| {
        GOOD.replace(
            "  domain: ecs.example.org\n",
            &format!("  domain: ecs.example.org\n{extra}"),
        )
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed",
            b"#cloud-config\nappliance: [1, 2\necs: {}\n".to_vec(),
            "malformed YAML",
        ),
        (
            "not-utf8",
            b"#cloud-config\nappliance: \xff\xfe\n".to_vec(),
            "not UTF-8 text",
        ),
        ("empty", Vec::new(), "empty: an env needs"),
        (
            "not-a-map",
            b"- a\n- b\n".to_vec(),
            "the top level must be a map",
        ),
        (
            "no-appliance",
            b"ecs: {settings: a, vault_encrypt: b, vault_sign: c}\n".to_vec(),
            "appliance: is required",
        ),
        (
            "no-ecs",
            b"appliance: {domain: a.b}\n".to_vec(),
            "ecs: is required",
        ),
        (
            "no-domain",
            GOOD.replace("  domain: ecs.example.org\n", "").into_bytes(),
            "appliance.domain: is required",
        ),
        (
            "no-settings",
            GOOD.replace("  settings: |\n    SECRET_KEY = 'S3CR3T-KEY'\n", "")
                .into_bytes(),
            "ecs.settings: is required",
        ),
        (
            "wrong-type",
            with("  standby: maybe\n").into_bytes(),
            "appliance.standby: \"maybe\" is not a boolean",
        ),
        (
            "bad-size",
            with("  storage: {data: {size: 12Q}}\n").into_bytes(),
            "appliance.storage.data.size: \"12Q\" is not a size",
        ),
        ("alias-bomb", bomb.into_bytes(), "alias bomb"),
        ("oversized", huge.into_bytes(), "too large"),
        (
            "unsourceable",
            with("  x-y: 1\n").into_bytes(),
            "appliance.x-y: makes the variable name",
        ),
        (
            "colliding",
            with("  a_b: 1\n  A_B: 2\n").into_bytes(),
            "both become `APPLIANCE_A_B`",
        ),
    ];
    for (name, bytes, want) in cases {
        let env = write(d.path(), &format!("{name}.yml"), &bytes);
        for args in [
            vec!["env", "check", env.to_str().unwrap()],
            vec![
                "seed",
                "--env",
                env.to_str().unwrap(),
                "-o",
                d.path().join(format!("{name}.iso")).to_str().unwrap(),
            ],
        ] {
            let t = std::time::Instant::now();
            let o = imgbuild(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
            assert!(
                err.lines().all(|l| l.starts_with("imgbuild: error: ")),
                "{name}: {err}"
            );
            assert!(
                !err.contains("panicked") && !err.contains("S3CR3T"),
                "{name}: {err}"
            );
            assert!(t.elapsed().as_secs() < 5, "{name} took {:?}", t.elapsed());
            assert!(
                !d.path().join(format!("{name}.iso")).exists(),
                "{name}: output written"
            );
        }
    }
}

#[test]
fn missing_env_file_and_output_dir() {
    let d = tempfile::tempdir().unwrap();
    let o = imgbuild(&["env", "check", d.path().join("nope.yml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.yml"), "{}", stderr(&o));
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let out = d.path().join("missing/seed.iso");
    let o = imgbuild(&[
        "seed",
        "--env",
        env.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("output directory") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn seed_cmd(env: &Path, out: &Path, epoch: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args([
            "seed",
            "--env",
            env.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .expect("running imgbuild seed")
}

#[test]
fn seed_is_private_reproducible_and_extractable() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let net = write(
        d.path(),
        "net.yml",
        b"version: 2\nethernets: {eth0: {dhcp4: true}}\n",
    );
    let a = d.path().join("a.iso");
    let b = d.path().join("b.iso");
    let c = d.path().join("c.iso");
    for (out, epoch) in [(&a, "1700000000"), (&b, "1700000000"), (&c, "1700000001")] {
        let o = seed_cmd(
            &env,
            out,
            epoch,
            &["--network-config", net.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(!stderr(&o).contains("S3CR3T"));
    }
    assert_eq!(
        fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(sha256(&a), sha256(&b), "same inputs and SOURCE_DATE_EPOCH");
    assert_ne!(sha256(&a), sha256(&c), "SOURCE_DATE_EPOCH is used");

    // An existing output is kept without --force, replaced with it.
    let o = seed_cmd(&env, &a, "1", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(sha256(&a), sha256(&b));
    let o = seed_cmd(&env, &a, "1", &["--force", "--instance-id", "i-test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Tools no one here wrote read what we wrote.
    let x = d.path().join("x");
    let o = Command::new("xorriso")
        .args([
            "-osirrox",
            "on",
            "-indev",
            a.to_str().unwrap(),
            "-extract",
            "/",
            x.to_str().unwrap(),
        ])
        .output()
        .expect("xorriso is needed (scripts/install-host-deps.sh installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(x.join("user-data")).unwrap(), GOOD.as_bytes());
    assert_eq!(
        fs::read_to_string(x.join("meta-data")).unwrap(),
        "instance-id: i-test\nlocal-hostname: ecs.example.org\n"
    );
    // The forced rewrite had no --network-config: the replaced seed has none.
    assert!(!x.join("network-config").exists());
    let o = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&a)
        .output()
        .expect("blkid");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("LABEL=cidata") && out.contains("TYPE=iso9660"),
        "{out}"
    );
}

#[test]
fn bad_seed_arguments() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let bad_net = write(d.path(), "net.yml", b"version: [2\n");
    let out = d.path().join("s.iso");
    for (extra, want) in [
        (
            vec!["--network-config", bad_net.to_str().unwrap()],
            "malformed YAML",
        ),
        (vec!["--instance-id", "a b"], "instance-id"),
    ] {
        let o = seed_cmd(&env, &out, "0", &extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(!out.exists());
    }
    let o = seed_cmd(&env, &out, "soon", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SOURCE_DATE_EPOCH"), "{}", stderr(&o));
}
