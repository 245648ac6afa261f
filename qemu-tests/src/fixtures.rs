//! Root trees for tests that need a real, bootable tree of the default
//! distribution (Ubuntu noble, from its release, -updates and -security
//! pockets).
//!
//! Building one takes minutes, so it is made once per machine with
//! `mmdebstrap` (the same package set as layer `10-boot`: kernel, initramfs,
//! systemd, udev, GRUB for BIOS and UEFI, e2fsprogs) and kept as a directory
//! under `/var/cache/imgbuild-dev` (`IMGBUILD_TEST_TREE` points elsewhere).
//! Tests copy it before changing anything.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::require_tool;

/// The mirror and suite of test trees.
pub const MIRROR: &str = "http://archive.ubuntu.com/ubuntu";
pub const SUITE: &str = "noble";
/// The keyring that verifies it on the (Debian) host.
pub const KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// The packages of a bootable tree.
pub const BOOT_PACKAGES: &str =
    "linux-image-virtual,systemd-sysv,udev,grub-pc-bin,grub-efi-amd64-bin,e2fsprogs,initramfs-tools";

/// The marker the test unit prints on the serial console, followed by
/// `firmware=bios` or `firmware=uefi`.
pub const BOOT_MARKER: &str = "IMGBUILD-BOOT-OK";

/// The cached bootable noble tree, built on first use (about 2–3 minutes).
pub fn boot_tree() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IMGBUILD_TEST_TREE") {
        let p = PathBuf::from(p);
        if !p.join("usr").is_dir() {
            bail!("IMGBUILD_TEST_TREE={} is not a root tree", p.display());
        }
        return Ok(p);
    }
    let dir = PathBuf::from("/var/cache/imgbuild-dev");
    let tree = dir.join("noble-boot");
    if tree.join("usr").is_dir() && tree.join("boot/vmlinuz").exists() {
        return Ok(tree);
    }
    require_tool("mmdebstrap")?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".noble-boot.tmp{}", std::process::id()));
    let out = std::process::Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            &format!("--include={BOOT_PACKAGES}"),
            &format!("--keyring={KEYRING}"),
            SUITE,
        ])
        .arg(&tmp)
        .args(["", "-updates", "-security"].map(|p| format!("deb {MIRROR} {SUITE}{p} main")))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .context("running mmdebstrap")?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "mmdebstrap for the test tree failed ({}):\n{}",
            out.status,
            crate::tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    match fs::rename(&tmp, &tree) {
        Ok(()) => Ok(tree),
        // Another test process won the race: use its tree.
        Err(_) if tree.join("usr").is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(tree)
        }
        Err(e) => Err(e).context("storing the test tree"),
    }
}

/// Copies a tree with owners, modes, links and xattrs.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "copying {} failed: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Adds a unit that prints `BOOT_MARKER firmware=bios|uefi` on the serial
/// console once the system is up, then powers off.
pub fn add_marker_unit(tree: &Path) -> Result<()> {
    let units = tree.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::write(
        units.join("imgbuild-test-marker.service"),
        format!(
            "[Unit]\n\
             Description=imgbuild boot test: report and power off\n\
             After=multi-user.target local-fs.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=/bin/sh -c 'if [ -d /sys/firmware/efi ]; then f=uefi; else f=bios; fi; \
             echo \"{BOOT_MARKER} firmware=$f root=$(findmnt -no SOURCE /)\" > /dev/ttyS0'\n\
             ExecStartPost=/bin/systemctl --no-block poweroff\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        ),
    )?;
    let link = units.join("multi-user.target.wants/imgbuild-test-marker.service");
    let _ = fs::remove_file(&link);
    symlink("../imgbuild-test-marker.service", link)?;
    Ok(())
}
