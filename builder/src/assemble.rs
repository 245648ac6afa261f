//! The disk assembly: a root tree → the raw disk (partition plan, GRUB
//! images, ESP, root filesystem, GPT and MBR, boot code), with the tree's
//! own additions (fstab, grub.cfg, the baked env) and every GUID derived
//! from the build's identity.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::disk::{self, Guid, Layout, MIB};
use crate::exit::bad_input;
use crate::fsutil::copy_sparse;
use crate::output::human;
use crate::progress::complete_step;
use crate::{esp, ext4, grub};

/// Label of the root filesystem.
pub const ROOT_LABEL: &str = "root";
/// Label of the ESP.
pub const ESP_LABEL: &str = "ESP";

/// Where `--bake-env` puts the env in the image.
pub const BAKED_ENV: &str = "app/env.yml";

/// Settings of the disk assembly (everything after the tree).
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// The disk's virtual size; `None`: the tree plus headroom, rounded up
    /// to a whole `size_unit`.
    pub size: Option<u64>,
    /// What a default size is rounded up to: a MiB, or what the output's
    /// format needs (a GiB for GCE).
    pub size_unit: u64,
    /// Kernel arguments added after the defaults.
    pub cmdline: String,
    /// The env to bake in at /app/env.yml.
    pub baked_env: Option<Vec<u8>>,
    /// Fixed time for every timestamp; `None`: `SOURCE_DATE_EPOCH` from the
    /// environment, else the newest modification time in the tree.
    pub source_date_epoch: Option<i64>,
}

/// What [`assemble`] made.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Assembled {
    #[serde(skip)]
    pub raw: PathBuf,
    pub layout: Layout,
    pub root_uuid: Guid,
    pub esp_volume_id: String,
    pub kernel_cmdline: String,
    pub source_date_epoch: i64,
    pub tree: ext4::TreeUsage,
    /// The smallest disk the tree fits on.
    pub min_disk_size: u64,
}

/// Fixed space on the disk besides the root filesystem.
pub const fn fixed_overhead() -> u64 {
    disk::FIRST_PARTITION + disk::BIOS_BOOT_SIZE + disk::ESP_SIZE + disk::TAIL_SIZE
}

/// Makes the raw disk `work/disk.raw` from `tree`, which it modifies (fstab,
/// grub.cfg, the baked env). `work` is a scratch directory on the same
/// filesystem as the output. The steps: check the tree → plan the disk →
/// the image's files in the tree → GRUB images → ESP → root filesystem and
/// disk (table, boot code, core.img, ESP, ext4 in place).
pub fn assemble(tree: &Path, work: &Path, opts: &DiskOptions) -> Result<Assembled> {
    // Bad trees fail before anything slow.
    let kernel = grub::find_kernel(tree)?;
    let grub_files = grub::GrubFiles::find(tree)?;
    let plan = complete_step(
        || plan(tree, opts),
        |p| {
            format!(
                "tree: {} in {} inodes; root fs {}, disk {}: measured",
                human(p.usage.data_bytes),
                p.usage.inodes,
                human(p.layout.root.size),
                human(p.layout.size),
            )
        },
    )?;
    complete_step(
        || add_image_files(tree, opts, &plan, &kernel),
        |_| {
            let env = if opts.baked_env.is_some() {
                ", /app/env.yml"
            } else {
                ""
            };
            format!("tree: fstab, grub.cfg{env} written")
        },
    )?;
    let boot = complete_step(
        || grub_images(&grub_files, work, &plan),
        |_| "GRUB images".into(),
    )?;
    let esp_img = complete_step(|| make_esp(work, &plan, &boot), |_| "ESP".into())?;
    let raw = complete_step(
        || make_disk(tree, work, &plan, &boot, &esp_img),
        |_| "root filesystem and disk".into(),
    )?;
    Ok(Assembled {
        raw,
        layout: plan.layout,
        root_uuid: plan.root_uuid,
        esp_volume_id: plan.esp_uuid,
        kernel_cmdline: plan.cmdline,
        source_date_epoch: plan.sde,
        tree: plan.usage,
        min_disk_size: plan.min_disk,
    })
}

/// The disk's plan: sizes, the time of every timestamp, every GUID.
struct Plan {
    usage: ext4::TreeUsage,
    min_disk: u64,
    sde: i64,
    layout: Layout,
    root_uuid: Guid,
    esp_volume_id: u32,
    esp_uuid: String,
    cmdline: String,
}

/// Step: measures the tree and plans the disk from the build's identity.
fn plan(tree: &Path, opts: &DiskOptions) -> Result<Plan> {
    let usage = ext4::measure(tree)?;
    let (min_root, default_root) = ext4::sizes(&usage);
    let min_disk = min_root + fixed_overhead();
    let root_size = match opts.size {
        None => {
            let unit = opts.size_unit.max(MIB);
            disk::round_up(default_root + fixed_overhead(), unit) - fixed_overhead()
        }
        Some(s) if s < min_disk => {
            return Err(bad_input(format!(
                "--size {} is too small: this tree needs a disk of at least {} \
                 (--size {}M or more, or leave --size out)",
                human(s),
                human(min_disk),
                min_disk / MIB
            )))
        }
        Some(s) => disk::round_up(s, MIB) - fixed_overhead(),
    };
    let sde = match opts.source_date_epoch {
        Some(s) => s,
        None => seeds::nocloud::source_date_epoch_var()
            .map_err(bad_input)?
            .unwrap_or(usage.newest_mtime),
    };
    let identity = identity(tree, opts, root_size, sde)?;
    let layout = Layout::plan(&identity, disk::ESP_SIZE, root_size);
    let root_uuid = Guid::derive(&identity, "fs-root");
    let esp_id = Guid::derive(&identity, "fs-esp").0;
    let esp_volume_id = u32::from_be_bytes([esp_id[0], esp_id[1], esp_id[2], esp_id[3]]);
    let esp_uuid = format!("{:04X}-{:04X}", esp_volume_id >> 16, esp_volume_id & 0xffff);
    let cmdline = grub::kernel_cmdline(root_uuid, &opts.cmdline);
    Ok(Plan {
        usage,
        min_disk,
        sde,
        layout,
        root_uuid,
        esp_volume_id,
        esp_uuid,
        cmdline,
    })
}

/// Step: what the image adds to the tree (fstab, grub.cfg, the baked env),
/// and every access time set to its modification time.
fn add_image_files(
    tree: &Path,
    opts: &DiskOptions,
    plan: &Plan,
    kernel: &grub::Kernel,
) -> Result<()> {
    let sde = plan.sde;
    let old_fstab = fs::read_to_string(tree.join("etc/fstab")).unwrap_or_default();
    write_in_tree(
        tree,
        "etc/fstab",
        fstab(&old_fstab, plan.root_uuid, &plan.esp_uuid).as_bytes(),
        0o644,
        sde,
    )?;
    fs::create_dir_all(tree.join("boot/efi"))?;
    write_in_tree(
        tree,
        grub::GRUB_CFG,
        grub::grub_cfg(plan.root_uuid, kernel, &plan.cmdline).as_bytes(),
        0o644,
        sde,
    )?;
    if let Some(env) = &opts.baked_env {
        let app = tree.join("app");
        if !app.exists() {
            fs::DirBuilder::new().mode(0o755).create(&app)?;
        }
        write_in_tree(tree, BAKED_ENV, env, 0o600, sde)?;
    }
    ext4::normalize_atimes(tree)
}

/// The GRUB images, from the tree's own GRUB.
struct BootImages {
    /// `BOOTX64.EFI` (a file in `work`).
    efi: PathBuf,
    /// core.img, patched for its place on the disk.
    core_img: Vec<u8>,
    /// The MBR's boot code.
    boot_code: [u8; 440],
}

/// Step: BOOTX64.EFI, the BIOS core.img and boot code.
fn grub_images(grub_files: &grub::GrubFiles, work: &Path, plan: &Plan) -> Result<BootImages> {
    let layout = &plan.layout;
    let early = work.join("early.cfg");
    fs::write(&early, grub::early_cfg(plan.root_uuid))?;
    let efi = work.join("BOOTX64.EFI");
    grub_files.mkimage("x86_64-efi", &early, &efi, grub::EFI_MODULES)?;
    let core = work.join("core.img");
    grub_files.mkimage("i386-pc", &early, &core, grub::BIOS_MODULES)?;
    let core_lba = layout.bios_boot.start_lba();
    let core_img = grub::patch_core(
        &fs::read(&core)?,
        core_lba,
        layout.bios_boot.size / disk::SECTOR,
    )?;
    let boot_code = grub::bios_boot_code(&grub_files.boot_img()?, core_lba)?;
    Ok(BootImages {
        efi,
        core_img,
        boot_code,
    })
}

/// Step: the ESP image (`work/esp.img`) with BOOTX64.EFI.
fn make_esp(work: &Path, plan: &Plan, boot: &BootImages) -> Result<PathBuf> {
    let esp_img = work.join("esp.img");
    esp::make(
        &esp::EspSpec {
            size: plan.layout.esp.size,
            volume_id: plan.esp_volume_id,
            label: ESP_LABEL,
            files: vec![("EFI/BOOT/BOOTX64.EFI", &boot.efi)],
            source_date_epoch: plan.sde,
        },
        &esp_img,
    )?;
    Ok(esp_img)
}

/// Step: the disk (`work/disk.raw`): table, boot code, core.img, ESP, then
/// the root filesystem made in place.
fn make_disk(
    tree: &Path,
    work: &Path,
    plan: &Plan,
    boot: &BootImages,
    esp_img: &Path,
) -> Result<PathBuf> {
    let layout = &plan.layout;
    let raw = work.join("disk.raw");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&raw)
        .with_context(|| format!("creating {}", raw.display()))?;
    f.set_len(layout.size)?;
    disk::write_table(&mut f, layout)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&boot.boot_code)?;
    f.seek(SeekFrom::Start(layout.bios_boot.offset))?;
    f.write_all(&boot.core_img)?;
    copy_sparse(esp_img, &f, layout.esp.offset)?;
    drop(f);
    fs::remove_file(esp_img).ok();
    ext4::make(
        &ext4::Ext4Spec {
            tree,
            size: layout.root.size,
            uuid: plan.root_uuid,
            label: ROOT_LABEL,
            inodes: plan.usage.inodes + 16,
            source_date_epoch: plan.sde,
        },
        &raw,
        layout.root.offset,
        work,
    )?;
    Ok(raw)
}

/// /etc/fstab: the root and the ESP by UUID, after whatever the layers put
/// there for other mount points (their own lines for / and /boot/efi, and
/// comments, are dropped).
pub fn fstab(existing: &str, root_uuid: Guid, esp_uuid: &str) -> String {
    let mut out = format!(
        "# Written by imgbuild: the root and the ESP, by UUID.\n\
         UUID={root_uuid}\t/\text4\tdefaults,errors=remount-ro\t0\t1\n\
         UUID={esp_uuid}\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0\n"
    );
    for line in existing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        if matches!(fields.get(1), Some(&"/") | Some(&"/boot/efi")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The build's identity, from which every GUID and UUID derives: the tree's
/// metadata as the filesystem will hold it (paths, types, modes, owners,
/// file sizes, link targets, mtimes clamped to `sde` as mkfs.ext4 clamps
/// them; not directory sizes, which depend on the directory's history) and
/// the disk settings.
fn identity(tree: &Path, opts: &DiskOptions, root_size: u64, sde: i64) -> Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(b"imgbuild-disk-1\0");
    ext4::walk(tree, &mut |p, m| {
        let rel = p.strip_prefix(tree).unwrap_or(p);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        for n in [
            m.mode() as u64,
            m.uid() as u64,
            m.gid() as u64,
            if m.is_dir() { 0 } else { m.len() },
            m.mtime().min(sde) as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        if m.file_type().is_symlink() {
            h.update(fs::read_link(p)?.as_os_str().as_encoded_bytes());
        }
        h.update([0]);
        Ok(())
    })?;
    h.update(opts.cmdline.trim().as_bytes());
    h.update([0]);
    h.update(root_size.to_le_bytes());
    if let Some(env) = &opts.baked_env {
        h.update(Sha256::digest(env));
    }
    Ok(h.finalize().to_vec())
}

/// Writes `rel` in the tree (replacing a file or symlink there) with `mode`,
/// owned by root, with mtime `sde`.
fn write_in_tree(tree: &Path, rel: &str, data: &[u8], mode: u32, sde: i64) -> Result<()> {
    let p = tree.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).with_context(|| {
            format!(
                "creating /{}",
                Path::new(rel).parent().unwrap_or(Path::new("")).display()
            )
        })?;
    }
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => bail!("/{rel} is a directory in the tree"),
        Ok(_) => fs::remove_file(&p)?,
        Err(_) => {}
    }
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&p)
        .with_context(|| format!("writing /{rel} in the tree"))?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sde.max(0) as u64);
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    std::os::unix::fs::fchown(&f, Some(0), Some(0))
        .with_context(|| format!("giving /{rel} to root"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_keeps_other_mounts() {
        let u = Guid::parse("01234567-89ab-cdef-0123-456789abcdef");
        let f = fstab(
            "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/dev/sda1 / ext4 rw 0 1\n\
             tmpfs /tmp tmpfs defaults 0 0\n",
            u,
            "1A2B-3C4D",
        );
        assert_eq!(
            f,
            "# Written by imgbuild: the root and the ESP, by UUID.\n\
             UUID=01234567-89ab-cdef-0123-456789abcdef\t/\text4\tdefaults,errors=remount-ro\t0\t1\n\
             UUID=1A2B-3C4D\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0\n\
             tmpfs /tmp tmpfs defaults 0 0\n"
        );
    }

    #[test]
    fn assembled_round_trips_through_json() {
        let layout = Layout::plan(b"identity", disk::ESP_SIZE, 512 << 20);
        let a = Assembled {
            raw: PathBuf::from("/x/disk.raw"),
            root_uuid: Guid::derive(b"identity", "fs-root"),
            layout,
            esp_volume_id: "ABCD-0123".into(),
            kernel_cmdline: "root=UUID=x ro quiet".into(),
            source_date_epoch: 1_700_000_000,
            tree: ext4::TreeUsage {
                data_bytes: 1,
                inodes: 2,
                file_bytes: 3,
                newest_mtime: 4,
            },
            min_disk_size: 5,
        };
        let json = serde_json::to_string_pretty(&a).unwrap();
        let back: Assembled = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
        assert!(serde_json::from_str::<Guid>("\"not-a-guid\"").is_err());
        assert!(serde_json::from_str::<Guid>("\"0123456789ab-cdef-0123-456789abcdef0\"").is_err());
    }
}
