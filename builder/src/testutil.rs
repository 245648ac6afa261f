//! Helpers for the lib's unit tests.

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
