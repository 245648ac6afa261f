//! GRUB for BIOS and UEFI, built from the GRUB files inside the tree, so the
//! host needs no GRUB.
//!
//! The tree's own `grub-mkimage` runs with the tree's own dynamic loader and
//! libraries (no chroot, no mounts), against the tree's module directories:
//!
//! - BIOS: `core.img` (i386-pc) goes into the BIOS boot partition and
//!   `boot.img` into the MBR's boot code area, with the sector numbers patched
//!   in as `grub-bios-setup` does (see [`bios_boot_code`] and [`patch_core`]).
//! - UEFI: `EFI/BOOT/BOOTX64.EFI` (x86_64-efi) on the ESP.
//!
//! Both images carry the same small embedded config: find the root
//! filesystem by UUID and read `/boot/grub/grub.cfg` from it, which boots
//! the kernel with the image's command line.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::disk::Guid;
use crate::exit::bad_input;

/// The layer that provides the kernel and GRUB in the default stack.
pub const BOOT_LAYER: &str = "10-boot";

/// Modules built into core.img: everything the embedded config and grub.cfg
/// use, so nothing is loaded from disk.
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "ext2",
    "search",
    "search_fs_uuid",
    "normal",
    "configfile",
    "linux",
    "boot",
    "echo",
    "test",
    "serial",
    "terminal",
];

/// Modules built into BOOTX64.EFI.
pub const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "search",
    "search_fs_uuid",
    "normal",
    "configfile",
    "linux",
    "boot",
    "echo",
    "test",
    "serial",
    "terminal",
    "efi_gop",
    "all_video",
];

/// Where grub.cfg lives, on the root filesystem.
pub const GRUB_CFG: &str = "boot/grub/grub.cfg";

/// Sector size GRUB's boot code works in.
const SECTOR: usize = 512;
/// boot.img: the BIOS parameter block area grub-bios-setup copies from the disk.
const BPB_START: usize = 0x03;
const BPB_END: usize = 0x5a;
/// boot.img: LBA of core.img's first sector (8 bytes, little-endian).
const KERNEL_SECTOR: usize = 0x5c;
/// boot.img: boot drive (0xff: use the drive the BIOS booted from).
const BOOT_DRIVE: usize = 0x64;
/// boot.img: a jump over the "is this a hard disk" check, replaced by two NOPs
/// for hard disks (some BIOSes pass a wrong drive number).
const DRIVE_CHECK: usize = 0x66;
/// boot.img: the bytes that end up in the MBR (the disk signature and the
/// partition table follow).
pub const MBR_CODE_LEN: usize = 0x1b8;
/// core.img: one blocklist entry (start: u64, len: u16, segment: u16).
const BLOCKLIST_SIZE: usize = 12;
/// Segment diskboot loads the rest of core.img to (0x8000 + one sector).
const CORE_SEGMENT: u16 = 0x820;
/// Largest core.img diskboot can load below 0x78000.
pub const MAX_CORE_SECTORS: usize = (0x78000 - 0x8200) / SECTOR;

/// The kernel and initrd paths (inside the tree, as GRUB sees them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: String,
    pub initrd: String,
}

/// Finds the kernel and initrd symlinks Debian and Ubuntu keep up to date
/// (`/vmlinuz`, `/initrd.img`, or the same names in `/boot`).
pub fn find_kernel(tree: &Path) -> Result<Kernel> {
    for dir in ["", "boot/"] {
        let k = format!("{dir}vmlinuz");
        let i = format!("{dir}initrd.img");
        let kp = resolve_in(tree, &k);
        let ip = resolve_in(tree, &i);
        match (kp.as_ref().map(|p| p.is_file()), ip.map(|p| p.is_file())) {
            (Ok(true), Ok(true)) => {
                return Ok(Kernel {
                    vmlinuz: format!("/{k}"),
                    initrd: format!("/{i}"),
                })
            }
            (Ok(true), _) => {
                return Err(bad_input(format!(
                    "the root tree has a kernel (/{k}) but no initramfs (/{i}): layer \
                     {BOOT_LAYER} should install initramfs-tools (or dracut) with the kernel"
                )))
            }
            _ => {}
        }
    }
    Err(bad_input(format!(
        "the root tree has no kernel: neither /vmlinuz nor /boot/vmlinuz exists; layer \
         {BOOT_LAYER} should install a kernel package (linux-image-amd64 on Debian, \
         linux-image-virtual on Ubuntu)"
    )))
}

/// The GRUB files of the tree.
#[derive(Clone, Debug)]
pub struct GrubFiles {
    /// The tree's dynamic loader, its library directories and grub-mkimage.
    loader: PathBuf,
    lib_path: String,
    mkimage: PathBuf,
    pub i386_pc: PathBuf,
    pub x86_64_efi: PathBuf,
}

impl GrubFiles {
    /// Finds what the build needs; a missing piece is bad input that names
    /// the file and the package that provides it.
    pub fn find(tree: &Path) -> Result<GrubFiles> {
        let mut missing = Vec::new();
        let mut need = |rel: &str, pkg: &str| match resolve_in(tree, rel) {
            Ok(p) if p.exists() => Some(p),
            _ => {
                missing.push(format!("/{rel} ({pkg})"));
                None
            }
        };
        let mkimage = need("usr/bin/grub-mkimage", "grub-common");
        let i386_pc = need("usr/lib/grub/i386-pc/kernel.img", "grub-pc-bin");
        let boot_img = need("usr/lib/grub/i386-pc/boot.img", "grub-pc-bin");
        let efi = need("usr/lib/grub/x86_64-efi/kernel.img", "grub-efi-amd64-bin");
        let loader = need("lib64/ld-linux-x86-64.so.2", "libc6");
        if !missing.is_empty() {
            return Err(bad_input(format!(
                "the root tree lacks GRUB files: {}; layer {BOOT_LAYER} should install \
                 grub-pc-bin and grub-efi-amd64-bin",
                missing.join(", ")
            )));
        }
        let (Some(mkimage), Some(i386), Some(_), Some(efi), Some(loader)) =
            (mkimage, i386_pc, boot_img, efi, loader)
        else {
            unreachable!("all present when nothing is missing");
        };
        let lib_path = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
            .iter()
            .filter_map(|d| resolve_in(tree, d).ok())
            .filter(|p| p.is_dir())
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        Ok(GrubFiles {
            loader,
            lib_path,
            mkimage,
            i386_pc: i386
                .parent()
                .expect("kernel.img has a parent")
                .to_path_buf(),
            x86_64_efi: efi.parent().expect("kernel.img has a parent").to_path_buf(),
        })
    }

    /// Runs the tree's grub-mkimage: `format` is "i386-pc" or "x86_64-efi".
    pub fn mkimage(
        &self,
        format: &str,
        early_cfg: &Path,
        out: &Path,
        modules: &[&str],
    ) -> Result<()> {
        let dir = match format {
            "i386-pc" => &self.i386_pc,
            "x86_64-efi" => &self.x86_64_efi,
            _ => bail!("unknown GRUB platform {format}"),
        };
        let mut cmd = seeds::cmd::command(
            self.loader.to_str().context("loader path is not UTF-8")?,
            ["--library-path", &self.lib_path],
        );
        cmd.arg(&self.mkimage)
            .args(["-O", format, "-p", "/boot/grub", "-d"])
            .arg(dir)
            .arg("-c")
            .arg(early_cfg)
            .arg("-o")
            .arg(out)
            .args(modules)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        seeds::cmd::run(&mut cmd).with_context(|| format!("making the {format} GRUB image"))?;
        Ok(())
    }

    /// The tree's boot.img.
    pub fn boot_img(&self) -> Result<Vec<u8>> {
        let p = self.i386_pc.join("boot.img");
        let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        if b.len() != SECTOR {
            bail!("{} is {} bytes, not {SECTOR}", p.display(), b.len());
        }
        Ok(b)
    }
}

/// Resolves `rel` inside `tree` as if `tree` were `/`: absolute symlinks
/// point into the tree, and `..` never leaves it.
pub fn resolve_in(tree: &Path, rel: &str) -> Result<PathBuf> {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = Path::new(rel)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let mut p = tree.to_path_buf();
        p.extend(&parts);
        p.push(&c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    bail!("too many symlinks resolving /{rel} in the tree");
                }
                let target = fs::read_link(&p)?;
                if target.is_absolute() {
                    parts.clear();
                }
                todo.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            _ => parts.push(c),
        }
    }
    let mut p = tree.to_path_buf();
    p.extend(&parts);
    Ok(p)
}

/// The config embedded in both GRUB images: find the root filesystem and
/// hand over to its grub.cfg.
pub fn early_cfg(root_uuid: Guid) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         set prefix=($root)/boot/grub\n\
         configfile ($root)/{GRUB_CFG}\n"
    )
}

/// The kernel command line: the root, `ro`, `gpt`, the consoles, then
/// `extra`. `gpt` lets Linux fall back to the backup GPT when the primary
/// is torn (ecs-firstboot rewrites the primary last when it grows the disk;
/// a power cut between its two sector writes leaves only the backup valid).
pub fn kernel_cmdline(root_uuid: Guid, extra: &str) -> String {
    let mut c = format!("root=UUID={root_uuid} ro gpt console=tty0 console=ttyS0,115200");
    let extra = extra.trim();
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

/// /boot/grub/grub.cfg: a menu on the screen and the serial port, one entry.
pub fn grub_cfg(root_uuid: Guid, kernel: &Kernel, cmdline: &str) -> String {
    format!(
        "# Written by imgbuild. The root filesystem is found by its UUID.\n\
         set timeout=1\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry 'ECS appliance' {{\n\
         \tlinux {vmlinuz} {cmdline}\n\
         \tinitrd {initrd}\n\
         }}\n",
        vmlinuz = kernel.vmlinuz,
        initrd = kernel.initrd,
    )
}

/// Characters GRUB's config parser would interpret in a kernel argument.
pub fn check_cmdline(extra: &str) -> Result<()> {
    if let Some(c) = extra.chars().find(|c| {
        matches!(c, '\n' | '\r' | ';' | '$' | '{' | '}' | '\\' | '\'' | '`') || c.is_control()
    }) {
        return Err(bad_input(format!(
            "--cmdline contains {c:?}, which GRUB's config would interpret; use plain \
             space-separated kernel arguments"
        )));
    }
    Ok(())
}

/// The 440 bytes of boot code for the MBR: boot.img with the LBA of
/// core.img's first sector patched in, as grub-bios-setup does for a hard
/// disk (BPB area taken from the blank disk, boot drive from the BIOS, the
/// drive check disabled). The disk signature and partition table that follow
/// in sector 0 are left alone.
pub fn bios_boot_code(boot_img: &[u8], core_lba: u64) -> Result<[u8; MBR_CODE_LEN]> {
    if boot_img.len() != SECTOR || boot_img[510..] != [0x55, 0xaa] {
        bail!("boot.img is not a 512-byte boot sector");
    }
    let mut code = [0u8; MBR_CODE_LEN];
    code.copy_from_slice(&boot_img[..MBR_CODE_LEN]);
    code[BPB_START..BPB_END].fill(0);
    code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[BOOT_DRIVE] = 0xff;
    code[DRIVE_CHECK] = 0x90;
    code[DRIVE_CHECK + 1] = 0x90;
    Ok(code)
}

/// Pads core.img to whole sectors and rewrites the blocklist at the end of
/// its first sector (diskboot.img) so it loads the remaining sectors from
/// `core_lba + 1` onwards, followed by a terminator. `max_sectors` is the
/// room in the BIOS boot partition.
pub fn patch_core(core: &[u8], core_lba: u64, max_sectors: u64) -> Result<Vec<u8>> {
    let mut img = core.to_vec();
    img.resize(core.len().div_ceil(SECTOR) * SECTOR, 0);
    let nsec = img.len() / SECTOR;
    if nsec < 2 {
        bail!("core.img is too small ({} bytes)", core.len());
    }
    if nsec > MAX_CORE_SECTORS || nsec as u64 > max_sectors {
        bail!(
            "core.img has {nsec} sectors; at most {} fit",
            MAX_CORE_SECTORS.min(max_sectors as usize)
        );
    }
    let first = SECTOR - BLOCKLIST_SIZE;
    // grub-mkimage leaves one entry covering the rest of the image; anything
    // else means a core.img layout this code does not know.
    let len_now = u16::from_le_bytes([img[first + 8], img[first + 9]]) as usize;
    let seg_now = u16::from_le_bytes([img[first + 10], img[first + 11]]);
    if len_now != nsec - 1 || seg_now != CORE_SEGMENT {
        bail!(
            "core.img's first sector does not end in the expected blocklist \
             (length {len_now}, segment {seg_now:#x}; expected {}, {CORE_SEGMENT:#x})",
            nsec - 1
        );
    }
    // Clear the existing entries down to the terminator.
    let mut at = first;
    while u16::from_le_bytes([img[at + 8], img[at + 9]]) != 0 {
        img[at..at + BLOCKLIST_SIZE].fill(0);
        at = at
            .checked_sub(BLOCKLIST_SIZE)
            .filter(|a| *a > 0)
            .context("core.img's blocklist has no terminator")?;
    }
    img[first..first + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    img[first + 8..first + 10].copy_from_slice(&((nsec - 1) as u16).to_le_bytes());
    img[first + 10..first + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    img[first - BLOCKLIST_SIZE..first].fill(0);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_boot_img() -> Vec<u8> {
        let mut b: Vec<u8> = (0..512).map(|i| (i % 251) as u8).collect();
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn boot_code_carries_the_core_sector() {
        let code = bios_boot_code(&fake_boot_img(), 2048).unwrap();
        assert_eq!(&code[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(code[0x64], 0xff);
        assert_eq!(&code[0x66..0x68], &[0x90, 0x90]);
        assert!(code[3..0x5a].iter().all(|b| *b == 0));
        assert_eq!(code[0x100], fake_boot_img()[0x100], "code kept");
        assert!(bios_boot_code(&[0u8; 512], 1).is_err());
    }

    fn fake_core(sectors: usize) -> Vec<u8> {
        let mut c = vec![7u8; sectors * SECTOR - 100];
        let first = SECTOR - BLOCKLIST_SIZE;
        c[first - BLOCKLIST_SIZE..first].fill(0);
        c[first..first + 8].copy_from_slice(&2u64.to_le_bytes());
        c[first + 8..first + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
        c[first + 10..first + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
        c
    }

    #[test]
    fn core_blocklist_points_after_the_first_sector() {
        let img = patch_core(&fake_core(283), 2048, 2048).unwrap();
        assert_eq!(img.len(), 283 * SECTOR);
        let e = &img[500..512];
        assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), 2049);
        assert_eq!(u16::from_le_bytes([e[8], e[9]]), 282);
        assert_eq!(u16::from_le_bytes([e[10], e[11]]), 0x820);
        assert!(img[488..500].iter().all(|b| *b == 0), "terminator");
        assert_eq!(img[SECTOR], 7, "the rest untouched");
    }

    #[test]
    fn core_too_big_or_unknown_is_refused() {
        let err = patch_core(&fake_core(300), 2048, 200).unwrap_err();
        assert!(err.to_string().contains("at most 200"), "{err}");
        let mut odd = fake_core(10);
        odd[509] = 0x30;
        assert!(patch_core(&odd, 2048, 2048).is_err());
    }

    #[test]
    fn resolve_stays_in_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        fs::create_dir_all(t.join("usr/lib64")).unwrap();
        fs::write(t.join("usr/lib64/ld.so"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/lib64", t.join("lib64")).unwrap();
        std::os::unix::fs::symlink("/usr/lib64/ld.so", t.join("usr/lib64/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", t.join("usr/up")).unwrap();
        assert_eq!(
            resolve_in(t, "lib64/ld.so").unwrap(),
            t.join("usr/lib64/ld.so")
        );
        assert_eq!(
            resolve_in(t, "/lib64/abs").unwrap(),
            t.join("usr/lib64/ld.so")
        );
        assert_eq!(resolve_in(t, "usr/up").unwrap(), t.join("etc"));
    }

    #[test]
    fn missing_kernel_and_grub_are_bad_input_naming_the_layer() {
        let d = tempfile::tempdir().unwrap();
        let e = find_kernel(d.path()).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("no kernel") && e.to_string().contains("10-boot"));
        let e = GrubFiles::find(d.path()).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        let msg = e.to_string();
        assert!(
            msg.contains("grub-mkimage") && msg.contains("10-boot"),
            "{msg}"
        );
    }

    #[test]
    fn cmdline_and_cfg() {
        let u = Guid::parse("01234567-89ab-cdef-0123-456789abcdef");
        let c = kernel_cmdline(u, " quiet ");
        assert_eq!(
            c,
            "root=UUID=01234567-89ab-cdef-0123-456789abcdef ro gpt console=tty0 console=ttyS0,115200 quiet"
        );
        let k = Kernel {
            vmlinuz: "/vmlinuz".into(),
            initrd: "/initrd.img".into(),
        };
        let cfg = grub_cfg(u, &k, &c);
        assert!(cfg.contains("\tlinux /vmlinuz root=UUID=0123"));
        assert!(check_cmdline("a=b c").is_ok());
        assert!(check_cmdline("a; reboot").is_err());
    }
}
