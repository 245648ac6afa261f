//! Step 5: the hand-off, and the failure record.
//!
//! `ecs-appliance.target` (layer `20-firstboot`) `Requires=` and is ordered
//! `After=` `ecs-firstboot.service`, and carries
//! `AssertPathExists=/run/ecs-firstboot.ready`. So the target — and every
//! appliance service that `Requires=`/`After=` it — starts only when the agent
//! succeeded and wrote the marker: a failed agent fails the target's
//! dependency, a standby run (exit 0, no marker) fails its assert. Either way
//! nothing behind the target starts: the gate fails closed.
//!
//! On failure the agent writes `/run/appliance-failed` (0644) with the reason
//! (layer 30's path unit turns it into the failure page) and exits non-zero.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Written after a successful run; the target asserts it.
pub const READY: &str = "run/ecs-firstboot.ready";
/// Written on failure; holds the reason.
pub const FAILED: &str = "run/appliance-failed";
/// Prefix of the reasons this agent writes.
const OURS: &str = "ecs-firstboot: ";

/// Clears a marker left by an earlier run in this boot (the unit may be
/// restarted by hand after a fix).
pub fn start(root: &Path) -> Result<()> {
    match fs::remove_file(root.join(READY)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context("removing /run/ecs-firstboot.ready")
        }
        _ => Ok(()),
    }
}

/// Marks the hand-off; removes a failure record this agent wrote earlier in
/// this boot (never one written by another unit).
pub fn ready(root: &Path, summary: &str) -> Result<()> {
    let failed = root.join(FAILED);
    if fs::read_to_string(&failed).is_ok_and(|t| t.starts_with(OURS)) {
        fs::remove_file(&failed).context("removing /run/appliance-failed")?;
    }
    seeds::atomic::write_atomic(&root.join(READY), format!("{summary}\n").as_bytes(), 0o644)
        .context("writing /run/ecs-firstboot.ready")
}

/// Records a failure (keeps an earlier reason from another unit).
pub fn failed(root: &Path, reason: &str) -> Result<()> {
    let path = root.join(FAILED);
    if fs::read_to_string(&path).is_ok_and(|t| !t.starts_with(OURS)) {
        return Ok(());
    }
    fs::create_dir_all(root.join("run")).ok();
    seeds::atomic::write_atomic(&path, format!("{OURS}{reason}\n").as_bytes(), 0o644)
        .context("writing /run/appliance-failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("run")).unwrap();
        failed(d.path(), "volumes: no disk").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join(FAILED)).unwrap(),
            "ecs-firstboot: volumes: no disk\n"
        );
        ready(d.path(), "ecs-firstboot: ok").unwrap();
        assert!(
            !d.path().join(FAILED).exists(),
            "our own failure record is cleared"
        );
        start(d.path()).unwrap();
        assert!(!d.path().join(READY).exists());
        fs::write(d.path().join(FAILED), "postgresql failed\n").unwrap();
        failed(d.path(), "x").unwrap();
        ready(d.path(), "ok").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join(FAILED)).unwrap(),
            "postgresql failed\n",
            "another unit's record is kept"
        );
    }
}
