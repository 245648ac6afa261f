//! Making, mounting and persisting the `ecs-data` / `ecs-volatile` volumes.
//!
//! **A volume exists fully formatted or not at all.** The finished volume is
//! *the filesystem carrying the volume's label*; nothing else counts. It is
//! made in three steps, each leaving a state the planner recognises:
//!
//! 1. (boot disk only) the GPT entry, named after the volume, committed with
//!    the other table edits. A crash leaves a partition without a labelled
//!    filesystem: the planner formats it again.
//! 2. `mkfs.ext4 -L <volume>.new`: the *pending* label. A crash during or
//!    after mkfs leaves at most a filesystem with the pending label, which no
//!    lookup by label ever finds; the planner formats it again (it is ours:
//!    nothing else writes that label).
//! 3. `tune2fs -L <volume>`: the commit, a single superblock update after
//!    mkfs has completed and synced.
//!
//! Mount and fstab line follow; both are checked again on every boot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use seeds::cmd;

use crate::plan::Volume;
use crate::safefs::{self, Dir, Read};

/// Where to make a filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A device node (or, in tests, a whole image file).
    Node(PathBuf),
    /// A byte range of an image file (tests: partitions of images have no node).
    Offset {
        image: PathBuf,
        offset: u64,
        bytes: u64,
    },
}

impl Dest {
    /// How e2fsprogs tools name it (`file?offset=N` for a range).
    fn e2fs_name(&self) -> String {
        match self {
            Dest::Node(p) => p.display().to_string(),
            Dest::Offset { image, offset, .. } => format!("{}?offset={offset}", image.display()),
        }
    }
}

/// Step 2: mkfs with the pending label.
pub fn make_pending(volume: Volume, dest: &Dest) -> Result<()> {
    let mut c = cmd::command("mkfs.ext4", ["-q", "-F", "-L", volume.pending_label()]);
    match dest {
        Dest::Node(p) => {
            c.arg(p);
        }
        Dest::Offset {
            image,
            offset,
            bytes,
        } => {
            c.arg("-E")
                .arg(format!("offset={offset},nodiscard"))
                .arg(image)
                .arg(format!("{}k", bytes / 1024));
        }
    }
    cmd::run(&mut c).with_context(|| format!("formatting {}", volume.label()))?;
    Ok(())
}

/// Step 3: the commit.
pub fn commit_label(volume: Volume, dest: &Dest) -> Result<()> {
    cmd::run(&mut cmd::command(
        "tune2fs",
        ["-L", volume.label(), &dest.e2fs_name()],
    ))
    .with_context(|| format!("labelling {}", volume.label()))?;
    Ok(())
}

/// Mounting, behind a trait so tests can run the executor without root.
pub trait Mounter {
    fn mount(&self, device: &Path, mountpoint: &Path) -> Result<()>;
}

/// mount(8). A mount that fails because the same device is by then mounted
/// at the same place (systemd's mount unit for the fstab line won the race)
/// counts as done: the state asked for is there.
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount(&self, device: &Path, mountpoint: &Path) -> Result<()> {
        let r = cmd::run(&mut cmd::command(
            "mount",
            [device.as_os_str(), mountpoint.as_os_str()],
        ));
        match r {
            Ok(_) => Ok(()),
            Err(_) if mounted_at(device, mountpoint) => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!("mounting {} at {}", device.display(), mountpoint.display())
            }),
        }
    }
}

/// Whether the kernel's mount table has `device` mounted at `mountpoint`.
fn mounted_at(device: &Path, mountpoint: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(rdev) = std::fs::metadata(device).map(|m| m.rdev()) else {
        return false;
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    crate::sysfs::System::real()
        .mounts()
        .map(|ms| {
            ms.iter()
                .any(|m| m.major == major && m.minor == minor && m.mountpoint == mountpoint)
        })
        .unwrap_or(false)
}

/// Makes the directory `abs` under `root` (and parents) with mode 0755 when
/// missing; true if it made it. No link is followed on the way: a mount
/// point that is a link is an error, never mounted through.
pub fn ensure_dir(root: &Path, abs: &str) -> Result<bool> {
    let (parent, name) = safefs::split(abs)?;
    let parent = match Dir::root(root)
        .and_then(|r| r.walk(&parent, true))
        .with_context(|| format!("creating {parent}"))?
    {
        Ok(d) => d,
        Err(o) => bail!("{o}"),
    };
    match parent
        .subdir(name)
        .with_context(|| format!("reading {abs}"))?
    {
        Some(Ok(_)) => Ok(false),
        Some(Err(o)) => bail!("{o}"),
        None => {
            parent
                .mkdir(name, 0o755)
                .with_context(|| format!("creating {abs}"))?;
            Ok(true)
        }
    }
}

/// The fstab line of a volume.
pub fn fstab_line(volume: Volume, fstype: &str) -> String {
    format!(
        "LABEL={} {} {fstype} defaults,nofail 0 2\n",
        volume.label(),
        volume.mountpoint()
    )
}

/// Appends the volume's line to `/etc/fstab` under `root` (atomically: the
/// whole file is rewritten to a temporary name and renamed; reached without
/// following a link).
pub fn persist(root: &Path, volume: Volume, fstype: &str) -> Result<()> {
    let etc = match Dir::root(root)
        .and_then(|r| r.walk("/etc", true))
        .context("opening /etc")?
    {
        Ok(d) => d,
        Err(o) => bail!("{o}"),
    };
    let mut text = match etc.read("fstab").context("reading /etc/fstab")? {
        Read::Data(d, _, _) => String::from_utf8(d).context("reading /etc/fstab")?,
        Read::Missing => String::new(),
        _ => bail!("/etc/fstab is not a regular file with one link"),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&fstab_line(volume, fstype));
    etc.replace("fstab", text.as_bytes(), 0o644, None)
        .context("writing /etc/fstab")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{need, sh};
    use std::fs;

    #[test]
    fn pending_then_committed_label_by_offset() {
        need("mkfs.ext4");
        need("tune2fs");
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        fs::File::create(&img).unwrap().set_len(96 << 20).unwrap();
        let dest = Dest::Offset {
            image: img.clone(),
            offset: 16 << 20,
            bytes: 64 << 20,
        };
        make_pending(Volume::Volatile, &dest).unwrap();
        let sb = crate::probe::read_ext4(&img, 16 << 20).unwrap().unwrap();
        assert_eq!(sb.label, "ecs-volatile.new");
        assert_eq!(sb.bytes, 64 << 20);
        commit_label(Volume::Volatile, &dest).unwrap();
        let out = sh(
            "blkid",
            &[
                "-p",
                "-o",
                "export",
                "-O",
                &(16u64 << 20).to_string(),
                img.to_str().unwrap(),
            ],
        );
        assert!(
            out.contains("LABEL=ecs-volatile\n") && out.contains("TYPE=ext4"),
            "{out}"
        );
        sh(
            "e2fsck",
            &["-fn", &format!("{}?offset={}", img.display(), 16u64 << 20)],
        );
        // Nothing written outside the range.
        let bytes = fs::read(&img).unwrap();
        assert!(
            bytes[..16 << 20].iter().all(|b| *b == 0),
            "before the range"
        );
        assert!(bytes[80 << 20..].iter().all(|b| *b == 0), "after the range");
    }

    #[test]
    fn fstab_append() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/fstab"), "UUID=x / ext4 defaults 0 1").unwrap();
        persist(d.path(), Volume::Data, "ext4").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("etc/fstab")).unwrap(),
            "UUID=x / ext4 defaults 0 1\nLABEL=ecs-data /data ext4 defaults,nofail 0 2\n"
        );
    }

    #[test]
    fn mount_points_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(ensure_dir(r, "/data").unwrap());
        assert!(!ensure_dir(r, "/data").unwrap());
        fs::create_dir(r.join("etc")).unwrap();
        std::os::unix::fs::symlink(r.join("etc"), r.join("volatile")).unwrap();
        let msg = format!("{:#}", ensure_dir(r, "/volatile").unwrap_err());
        assert!(msg.contains("/volatile is a symbolic link"), "{msg}");
        fs::write(r.join("elsewhere"), "x").unwrap();
        std::os::unix::fs::symlink(r.join("elsewhere"), r.join("etc/fstab")).unwrap();
        let msg = format!("{:#}", persist(r, Volume::Data, "ext4").unwrap_err());
        assert!(msg.contains("/etc/fstab is not a regular file"), "{msg}");
        assert_eq!(fs::read_to_string(r.join("elsewhere")).unwrap(), "x");
    }
}
