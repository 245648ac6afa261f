//! Small things a user meets: `--version` names the git commit, and
//! `cache ls` on a cache that does not exist yet says it is empty.

use std::process::Command;

fn imgbuild(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("IMGBUILD_CACHE_DIR")
        .output()
        .expect("running imgbuild")
}

#[test]
fn version_names_the_commit() {
    let o = imgbuild(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8(o.stdout).unwrap();
    assert!(
        v.starts_with(&format!("imgbuild {} (git ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        // Built from this checkout: the commit it was built at (HEAD may
        // have moved since, so only its shape is checked).
        Ok(h) if h.status.success() && std::env::var_os("IMGBUILD_GIT_COMMIT").is_none() => {
            let commit = v.trim().trim_end_matches(')').rsplit(' ').next().unwrap();
            assert_eq!(commit.len(), 12, "{v}");
            assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
        }
        _ => {}
    }
}

#[test]
fn cache_ls_of_a_missing_cache_is_empty() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-cache-yet");
    let m = missing.to_str().unwrap();
    let o = imgbuild(&["cache", "--cache-dir", m, "ls"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("is empty"), "{out}");
    assert!(!missing.exists(), "ls creates nothing");
    assert_eq!(
        imgbuild(&["cache", "--cache-dir", m, "gc"]).status.code(),
        Some(0)
    );
    let o = imgbuild(&["cache", "--cache-dir", m, "rm", "0123456789abcdef"]);
    assert_eq!(o.status.code(), Some(2));
    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = imgbuild(&["cache", "--cache-dir", file.to_str().unwrap(), "ls"]);
    assert_eq!(o.status.code(), Some(2), "a file is not a cache");
}
