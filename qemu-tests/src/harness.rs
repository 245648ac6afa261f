//! The boot-test harness: builds the test image once per test run, makes
//! seeds and disks, boots one VM at a time and hands back what the guest
//! reported (see [`crate::report`]).
//!
//! - Programs: `imgbuild` and `ecs-firstboot` are built (or found up to date)
//!   with `cargo build -p imgbuild -p ecs-firstboot` in the same profile as
//!   the test, once per run; they land in `target/<profile>/`, found from the
//!   test executable's path (`target/<profile>/deps/...`). The reporter is
//!   this package's binary `ecs-test-report`, passed as
//!   `--host-bin ecs-test-report=PATH`.
//! - The image: the default layers plus the test layer
//!   `qemu-tests/layers/90-test-report`, the default distribution (Ubuntu
//!   noble; Debian bookworm beside it), the layer cache in
//!   `$IMGBUILD_CACHE_DIR` (imgbuild's default when unset), kernel command
//!   line with [`crate::TCG_SAFE_CMDLINE`].
//! - Artifacts: `target/qemu-artifacts/` (images, seeds, every boot's
//!   console log, build logs). Each boot's disks are qcow2 overlays over the
//!   built image, so the image itself is never written.
//! - One boot at a time: every test holds [`serial`] for its whole run.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::report::{self, Report};
use crate::{require_tool, tail, Bus, Firmware, Vm, TAIL_LINES, TCG_SAFE_CMDLINE};

mod boot;
mod envs;
mod images;
mod services;

pub use self::boot::*;
pub use self::envs::*;
pub use self::images::*;
pub use self::services::*;

/// The kernel's time-out for a whole boot to its report (TCG is slow;
/// `QEMU_BOOT_TIMEOUT` in seconds overrides it).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The workspace's root (`qemu-tests/..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests is in the workspace")
        .to_path_buf()
}

/// `target/<profile>` of the running test executable.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} is not under target/<profile>/deps", exe.display()))
}

/// `target/qemu-artifacts`, created on first use.
pub fn artifacts() -> Result<PathBuf> {
    let p = profile_dir()?
        .parent()
        .ok_or_else(|| anyhow!("target/<profile> has no parent"))?
        .join("qemu-artifacts");
    fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Serializes the boot tests: the machine has two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static BOOTS: Mutex<()> = Mutex::new(());
    BOOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A memoized fallible fixture: the first call's error is every call's error.
fn once<T>(
    cell: &'static OnceLock<Result<T, String>>,
    f: impl FnOnce() -> Result<T>,
) -> Result<&'static T> {
    cell.get_or_init(|| f().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Runs `cmd`, failing with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {cmd:?}\n{}\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), TAIL_LINES),
            tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
