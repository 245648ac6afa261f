//! Helpers shared by the tests that build layers through the `imgbuild`
//! binary against the default distribution's archive (Ubuntu noble, every
//! pocket).
//!
//! Downloaded packages and the shared layer cache live outside the checkout,
//! in `$IMGBUILD_TEST_CACHE`, else `$IMGBUILD_CACHE_DIR` (as scripts/test.sh
//! sets it), else `/var/tmp/imgbuild-test-cache`, so a stack's layers are
//! built once per machine.

// Each test crate uses its own subset.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn persistent_cache() -> PathBuf {
    ["IMGBUILD_TEST_CACHE", "IMGBUILD_CACHE_DIR"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/imgbuild-test-cache"))
}

pub fn apt_cache() -> PathBuf {
    persistent_cache().join("apt-archives")
}

/// Runs imgbuild (info logs, no `SOURCE_DATE_EPOCH`: the archive's date
/// counts) and shows what it printed.
pub fn imgbuild(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("RUST_LOG", "info")
        .output()
        .expect("running imgbuild");
    eprintln!(
        "$ imgbuild {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs imgbuild with `SOURCE_DATE_EPOCH` set (reproducible outputs).
pub fn imgbuild_at(epoch: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .expect("running imgbuild")
}

/// imgbuild succeeded, else its stderr.
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "imgbuild failed ({}):\n{}",
        o.status,
        stderr(o)
    );
}

/// imgbuild refused bad input (exit 2) saying each of `needles`.
pub fn assert_bad(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "want exit 2:\n{err}");
    for n in needles {
        assert!(err.contains(n), "want {n:?} in:\n{err}");
    }
}

/// Runs a tool that must succeed; its stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tiny base of the default distribution (minbase, plus apt and the
/// archive keyring the tree's sources name) as `00-base`.
pub fn base_layer(layers: &Path) {
    write(
        &layers.join("00-base/layer.yml"),
        "base: {distro: ubuntu, suite: noble, variant: minbase}\n\
         packages: [apt]\n\
         distro_packages: {ubuntu: [ubuntu-keyring], debian: [debian-archive-keyring]}\n",
        0o644,
    );
}

/// `imgbuild tree` on `layers` with the given caches, from the default archive.
pub fn tree_args<'a>(layers: &'a str, cache: &'a str, apt: &'a str) -> Vec<&'a str> {
    vec![
        "tree",
        "--layers-dir",
        layers,
        "--cache-dir",
        cache,
        "--apt-cache",
        apt,
    ]
}
