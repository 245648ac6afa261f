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
    assert!(out.contains("export APPLIANCE_DOMAIN=ecs.example.org\n"), "{out}");
    assert!(out.starts_with("export ECS_"), "{out}");
    let o = imgbuild(&[
        "env", "check", env.to_str().unwrap(), "--flatten", "--trees", ".", "--prefix", "",
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
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    let huge = format!("#cloud-config\nx: '{}'\n", "a".repeat(5 << 20));
    let with = |extra: &str| GOOD.replace("  domain: ecs.example.org\n", &format!("  domain: ecs.example.org\n{extra}"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", b"#cloud-config\nappliance: [1, 2\necs: {}\n".to_vec(), "malformed YAML"),
        ("not-utf8", b"#cloud-config\nappliance: \xff\xfe\n".to_vec(), "not UTF-8 text"),
        ("empty", Vec::new(), "empty: an env needs"),
        ("not-a-map", b"- a\n- b\n".to_vec(), "the top level must be a map"),
        ("no-appliance", b"ecs: {settings: a, vault_encrypt: b, vault_sign: c}\n".to_vec(), "appliance: is required"),
        ("no-ecs", b"appliance: {domain: a.b}\n".to_vec(), "ecs: is required"),
        ("no-domain", GOOD.replace("  domain: ecs.example.org\n", "").into_bytes(), "appliance.domain: is required"),
        ("no-settings", GOOD.replace("  settings: |\n    SECRET_KEY = 'S3CR3T-KEY'\n", "").into_bytes(), "ecs.settings: is required"),
        ("wrong-type", with("  standby: maybe\n").into_bytes(), "appliance.standby: \"maybe\" is not a boolean"),
        ("bad-size", with("  storage: {data: {size: 12Q}}\n").into_bytes(), "appliance.storage.data.size: \"12Q\" is not a size"),
        ("alias-bomb", bomb.into_bytes(), "alias bomb"),
        ("oversized", huge.into_bytes(), "too large"),
        ("unsourceable", with("  x-y: 1\n").into_bytes(), "appliance.x-y: makes the variable name"),
        ("colliding", with("  a_b: 1\n  A_B: 2\n").into_bytes(), "both become `APPLIANCE_A_B`"),
    ];
    for (name, bytes, want) in cases {
        let env = write(d.path(), &format!("{name}.yml"), &bytes);
        for args in [
            vec!["env", "check", env.to_str().unwrap()],
            vec!["seed", "--env", env.to_str().unwrap(), "-o", d.path().join(format!("{name}.iso")).to_str().unwrap()],
        ] {
            let t = std::time::Instant::now();
            let o = imgbuild(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
            assert!(err.lines().all(|l| l.starts_with("imgbuild: error: ")), "{name}: {err}");
            assert!(!err.contains("panicked") && !err.contains("S3CR3T"), "{name}: {err}");
            assert!(t.elapsed().as_secs() < 5, "{name} took {:?}", t.elapsed());
            assert!(!d.path().join(format!("{name}.iso")).exists(), "{name}: output written");
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
    let o = imgbuild(&["seed", "--env", env.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("output directory") && stderr(&o).contains("does not exist"), "{}", stderr(&o));
}
