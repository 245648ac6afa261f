//! The EFI system partition: FAT32 made with `mkfs.fat` and filled with
//! mtools, on a plain file (the host kernel needs no vfat).
//!
//! The volume ID comes from the build's identity; `--invariant` and
//! `SOURCE_DATE_EPOCH` (honoured by mtools) fix every other byte.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// What to put on the ESP.
pub struct EspSpec<'a> {
    pub size: u64,
    pub volume_id: u32,
    pub label: &'a str,
    /// (path on the ESP, e.g. "EFI/BOOT/BOOTX64.EFI"; file on the host)
    pub files: Vec<(&'a str, &'a Path)>,
    pub source_date_epoch: i64,
}

/// Makes the FAT32 filesystem in a new file `out` of exactly `spec.size` bytes.
pub fn make(spec: &EspSpec, out: &Path) -> Result<()> {
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.set_len(spec.size)
        .with_context(|| format!("sizing {}", out.display()))?;
    drop(f);
    let sde = spec.source_date_epoch.to_string();
    // `--invariant` fixes the volume ID too, so `-i` must come after it.
    let mut cmd = seeds::cmd::command(
        "mkfs.fat",
        [
            "-F",
            "32",
            "-n",
            spec.label,
            "--invariant",
            "-i",
            &format!("{:08x}", spec.volume_id),
        ],
    );
    cmd.arg(out).env("SOURCE_DATE_EPOCH", &sde);
    seeds::cmd::run(&mut cmd).context("making the ESP's FAT32 filesystem")?;

    let mut dirs: Vec<String> = Vec::new();
    for (dest, _) in &spec.files {
        let parts: Vec<&str> = dest.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let img = out.as_os_str();
    if !dirs.is_empty() {
        let mut cmd = seeds::cmd::command("mmd", ["-i".as_ref(), img]);
        cmd.args(dirs.iter().map(|d| format!("::/{d}")));
        mtools_env(&mut cmd, &sde);
        seeds::cmd::run(&mut cmd).context("making directories on the ESP")?;
    }
    for (dest, src) in &spec.files {
        let mut cmd = seeds::cmd::command("mcopy", ["-i".as_ref(), img, src.as_os_str()]);
        cmd.arg(format!("::/{dest}"));
        mtools_env(&mut cmd, &sde);
        seeds::cmd::run(&mut cmd).with_context(|| format!("copying {dest} to the ESP"))?;
    }
    Ok(())
}

fn mtools_env(cmd: &mut std::process::Command, sde: &str) {
    cmd.env("SOURCE_DATE_EPOCH", sde)
        .env("MTOOLS_SKIP_CHECK", "1")
        // No user or system mtools.conf changes what we write.
        .env("MTOOLSRC", "/dev/null");
}
