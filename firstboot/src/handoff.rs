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
//!
//! Both markers are reached through [`crate::safefs`]: never through a link,
//! written by rename.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::safefs::{Dir, Read};

/// Written after a successful run; the target asserts it.
pub const READY: &str = "run/ecs-firstboot.ready";
/// Written on failure; holds the reason.
pub const FAILED: &str = "run/appliance-failed";
const READY_NAME: &str = "ecs-firstboot.ready";
const FAILED_NAME: &str = "appliance-failed";
/// Prefix of the reasons this agent writes.
const OURS: &str = "ecs-firstboot: ";

/// `/run`, reached without following a link (see [`crate::safefs`]);
/// `None` when it does not exist and `create` is false.
fn run_dir(root: &Path, create: bool) -> Result<Option<Dir>> {
    match Dir::root(root).and_then(|r| r.walk("/run", create)) {
        Ok(Ok(d)) => Ok(Some(d)),
        Ok(Err(o)) => bail!("{o}"),
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("opening /run"),
    }
}

/// The text of a marker in `/run`, when it is a regular file with one link.
fn read_marker(run: &Dir, name: &str) -> Option<String> {
    match run.read(name) {
        Ok(Read::Data(d, _, _)) => Some(String::from_utf8_lossy(&d).into_owned()),
        _ => None,
    }
}

/// Clears a marker left by an earlier run in this boot (the unit may be
/// restarted by hand after a fix).
pub fn start(root: &Path) -> Result<()> {
    match run_dir(root, false)? {
        Some(run) => run
            .remove(READY_NAME)
            .context("removing /run/ecs-firstboot.ready"),
        None => Ok(()),
    }
}

/// Marks the hand-off; removes a failure record this agent wrote earlier in
/// this boot (never one written by another unit).
pub fn ready(root: &Path, summary: &str) -> Result<()> {
    let run = run_dir(root, true)?.context("opening /run")?;
    if read_marker(&run, FAILED_NAME).is_some_and(|t| t.starts_with(OURS)) {
        run.remove(FAILED_NAME)
            .context("removing /run/appliance-failed")?;
    }
    run.replace(READY_NAME, format!("{summary}\n").as_bytes(), 0o644, None)
        .context("writing /run/ecs-firstboot.ready")
}

/// Sets (`Some`) or clears (`None`) the status page's notice `name`:
/// `/run/ecs-appliance/notices/NAME`, one line the ready page shows
/// (layer 30's `appliance-start`). Reached without following a link.
pub fn notice(root: &Path, name: &str, text: Option<&str>) -> Result<()> {
    let dir =
        match Dir::root(root).and_then(|r| r.walk("/run/ecs-appliance/notices", text.is_some())) {
            Ok(Ok(d)) => d,
            Ok(Err(o)) => bail!("{o}"),
            Err(e) if text.is_none() && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("opening /run/ecs-appliance/notices"),
        };
    let what = || format!("/run/ecs-appliance/notices/{name}");
    match text {
        Some(t) => dir
            .replace(name, format!("{t}\n").as_bytes(), 0o644, None)
            .with_context(|| format!("writing {}", what())),
        None => dir
            .remove(name)
            .with_context(|| format!("removing {}", what())),
    }
}

/// Sets or clears `/run/ecs-appliance/standby`, which has the status page
/// show "Appliance Standby" (layer 30's `status-page`). Reached without
/// following a link.
pub fn standby(root: &Path, on: bool) -> Result<()> {
    let dir = match Dir::root(root).and_then(|r| r.walk("/run/ecs-appliance", on)) {
        Ok(Ok(d)) => d,
        Ok(Err(o)) => bail!("{o}"),
        Err(e) if !on && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("opening /run/ecs-appliance"),
    };
    if on {
        dir.replace("standby", b"appliance.standby: true\n", 0o644, None)
            .context("writing /run/ecs-appliance/standby")
    } else {
        dir.remove("standby")
            .context("removing /run/ecs-appliance/standby")
    }
}

/// Records a failure (keeps an earlier reason from another unit).
pub fn failed(root: &Path, reason: &str) -> Result<()> {
    let run = run_dir(root, true)?.context("opening /run")?;
    if read_marker(&run, FAILED_NAME).is_some_and(|t| !t.starts_with(OURS)) {
        return Ok(());
    }
    run.replace(
        FAILED_NAME,
        format!("{OURS}{reason}\n").as_bytes(),
        0o644,
        None,
    )
    .context("writing /run/appliance-failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    #[test]
    fn standby_marker() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/ecs-appliance/standby");
        standby(d.path(), false).unwrap();
        standby(d.path(), true).unwrap();
        assert!(fs::symlink_metadata(&p).unwrap().is_file());
        standby(d.path(), false).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn notices() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        notice(r, "sizing", None).unwrap();
        notice(r, "sizing", Some("small")).unwrap();
        let p = r.join("run/ecs-appliance/notices/sizing");
        assert_eq!(fs::read_to_string(&p).unwrap(), "small\n");
        notice(r, "sizing", None).unwrap();
        assert!(!p.exists());
        fs::write(r.join("victim"), "keep\n").unwrap();
        std::os::unix::fs::symlink(r.join("victim"), &p).unwrap();
        notice(r, "sizing", Some("small")).unwrap();
        assert_eq!(fs::read_to_string(r.join("victim")).unwrap(), "keep\n");
        assert!(fs::symlink_metadata(&p).unwrap().is_file());
    }

    #[test]
    fn markers_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("run")).unwrap();
        fs::write(r.join("victim"), "ecs-firstboot: keep me\n").unwrap();
        std::os::unix::fs::symlink(r.join("victim"), r.join(READY)).unwrap();
        std::os::unix::fs::symlink(r.join("victim"), r.join(FAILED)).unwrap();
        ready(r, "ok").unwrap();
        assert!(fs::symlink_metadata(r.join(READY)).unwrap().is_file());
        assert_eq!(fs::read_to_string(r.join(READY)).unwrap(), "ok\n");
        failed(r, "x").unwrap();
        assert!(fs::symlink_metadata(r.join(FAILED)).unwrap().is_file());
        assert_eq!(
            fs::read_to_string(r.join("victim")).unwrap(),
            "ecs-firstboot: keep me\n"
        );
        // A /run that is a link is refused, not written through.
        let e = tempfile::tempdir().unwrap();
        fs::create_dir(e.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(e.path().join("elsewhere"), e.path().join("run")).unwrap();
        let msg = format!("{:#}", ready(e.path(), "ok").unwrap_err());
        assert!(msg.contains("/run is a symbolic link"), "{msg}");
        assert_eq!(fs::read_dir(e.path().join("elsewhere")).unwrap().count(), 0);
    }
}
