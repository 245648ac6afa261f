//! Exit codes, as documented in `--help` and the README.
//!
//! - 0: success
//! - 1: anything else failed (a tool, the network, the disk)
//! - 2: bad input: the env, a recipe, an argument, an output path
//!
//! Code that rejects input wraps its error in [`BadInput`]; `main` looks for it
//! anywhere in the error chain.

use std::fmt;

/// Exit status for success.
pub const OK: u8 = 0;
/// Exit status for a failure that is not the user's input.
pub const FAILURE: u8 = 1;
/// Exit status for bad input.
pub const BAD_INPUT: u8 = 2;

/// Marks an error as caused by the user's input (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand: `return Err(bad_input(format!(...)))`.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// The exit code for an error: 2 when any error in its chain is [`BadInput`].
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<BadInput>()) {
        BAD_INPUT
    } else {
        FAILURE
    }
}

/// Fails (exit 1) unless running as root; `needs` says what needs root and
/// why, e.g. `building the root tree needs root: ...`.
pub fn require_root(needs: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("{needs}. Run imgbuild as root (e.g. with sudo)");
    }
    Ok(())
}
