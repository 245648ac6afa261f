//! Records the git commit imgbuild is built from, for `imgbuild --version`:
//! `IMGBUILD_GIT_COMMIT` when the build's environment sets it (a build from
//! a source tarball, a package), else `git rev-parse` of the checkout, else
//! a note that it is unknown. Re-runs when HEAD or the branch moves.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=IMGBUILD_GIT_COMMIT");
    let commit = match std::env::var("IMGBUILD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => match our_checkout()
            .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
            .flatten()
        {
            Some(c) => {
                watch_git();
                c
            }
            None => "unknown, built without git".to_string(),
        },
    };
    println!("cargo:rustc-env=IMGBUILD_GIT_COMMIT={commit}");
}

/// Whether the sources are a git checkout of this workspace (not, say, a
/// source tarball unpacked inside some other repository).
fn our_checkout() -> bool {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match (
        git(&["rev-parse", "--show-toplevel"]).and_then(|t| std::fs::canonicalize(t).ok()),
        std::fs::canonicalize(workspace).ok(),
    ) {
        (Some(top), Some(ws)) => top == ws,
        _ => false,
    }
}

/// Re-run when HEAD or the ref it names changes.
fn watch_git() {
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
        }
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(abs) {
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
    }
    if let (Some(common), Some(r)) = (
        git(&["rev-parse", "--git-common-dir"]).map(abs),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        for p in [common.join(&r), common.join("packed-refs")] {
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
