//! Helpers for tests: tools they need, image files.

use std::path::Path;
use std::process::Command;

/// Fails the test with a clear message when `tool` is not installed.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
    assert!(
        found,
        "this test needs `{tool}`; install the host tools with scripts/install-host-deps.sh"
    );
}

/// Runs a command in a test, panicking with its output on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    need(program);
    let out = seeds::cmd::run(Command::new(program).args(args)).unwrap_or_else(|e| panic!("{e}"));
    out.text()
}

/// The builder's layout on a `size`-byte image: BIOS boot, ESP, root to the end.
pub fn make_gpt_image(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    sh(
        "sgdisk",
        &[
            "-U",
            "11111111-2222-3333-4444-555555555555",
            "-n",
            "1:2048:+1M",
            "-t",
            "1:ef02",
            "-c",
            "1:bios",
            "-n",
            "2:0:+8M",
            "-t",
            "2:ef00",
            "-c",
            "2:esp",
            "-n",
            "3:0:0",
            "-t",
            "3:8304",
            "-c",
            "3:root",
            path.to_str().unwrap(),
        ],
    );
}

/// Makes an image file bigger (sparse).
pub fn enlarge(path: &Path, size: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
}

/// Whether the test may run: `true` as root; otherwise it says on stderr
/// that it is skipped and why (it `needs` root for that), and the test
/// returns early. Only for tests that truly need root (owners, mounts, loop
/// devices); the full run as root (scripts/test.sh) runs them all, and
/// `cargo test --lib` as any user runs the rest.
pub fn root_or_skip(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: this test needs root ({needs}); run it as root (scripts/test.sh does)");
    }
    root
}
