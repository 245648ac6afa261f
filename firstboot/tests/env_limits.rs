//! The agent's env parse under a memory limit: an env whose aliases expand
//! one long string thousands of times fails the env step within a second
//! under a 1 GiB address-space limit, with /run/appliance-failed written,
//! instead of aborting on memory exhaustion.

use std::fs;
use std::process::Command;

#[test]
fn string_alias_bomb_fails_the_boot_cleanly_in_1_gib() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("app")).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    let mut env = String::from("#cloud-config\nbig: &big \"");
    env.push_str(&"x".repeat(1 << 20));
    env.push_str("\"\nappliance:\n  domain: a.b\n  l: [");
    env.push_str(&vec!["*big"; 3000].join(", "));
    env.push_str("]\necs: {settings: hunter2, vault_encrypt: b, vault_sign: c}\n");
    fs::write(root.join("app/env.yml"), env).unwrap();

    let t = std::time::Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ecs-firstboot"))
        .args(["--root", root.to_str().unwrap(), "--no-metadata"])
        .env_remove("ENV_YML")
        .output()
        .expect("running sh");
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    // 1: a step failed (not a signal, not an abort).
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took.as_secs_f64() < 1.0, "took {took:?}");
    let failed = fs::read_to_string(root.join("run/appliance-failed")).unwrap();
    assert!(
        failed.contains("/app/env.yml:5:") && failed.contains("alias bomb"),
        "{failed}"
    );
    assert!(
        !failed.contains("hunter2") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(!root.join("run/active-env.env").exists());
}
