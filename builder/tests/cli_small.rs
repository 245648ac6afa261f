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

/// Without --layers-dir: ./layers when the current directory has one, else
/// the installed layers (../share/imgbuild/layers from the executable), and
/// the log says which. (The mirror is unreachable on purpose: the command
/// stops right after choosing.)
#[test]
fn layers_are_found_here_or_installed() {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("imgbuild");
    std::fs::copy(env!("CARGO_BIN_EXE_imgbuild"), &exe).unwrap();
    let ws_layers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../layers");
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let tree = |cwd: &std::path::Path| {
        Command::new(&exe)
            .args(["tree", "--mirror", "http://127.0.0.1:9/ubuntu"])
            .args(["--cache-dir", d.path().join("cache").to_str().unwrap()])
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };

    let o = tree(&elsewhere);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no layers: give --layers-dir"), "{err}");

    let share = d.path().join("usr/share/imgbuild");
    std::fs::create_dir_all(&share).unwrap();
    std::os::unix::fs::symlink(&ws_layers, share.join("layers")).unwrap();
    let err = String::from_utf8_lossy(&tree(&elsewhere).stderr).into_owned();
    assert!(
        err.contains("usr/share/imgbuild/layers (the installed layers)"),
        "{err}"
    );

    let checkout = d.path().join("checkout");
    std::fs::create_dir(&checkout).unwrap();
    std::os::unix::fs::symlink(&ws_layers, checkout.join("layers")).unwrap();
    let err = String::from_utf8_lossy(&tree(&checkout).stderr).into_owned();
    assert!(
        err.contains("layers: layers (./layers in the current directory)"),
        "{err}"
    );
}
