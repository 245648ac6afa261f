//! Gathering [`DiskFacts`]: sysfs and mountinfo for topology and sizes, the
//! partition table read in process (gptman, or the MBR sector), the root
//! filesystem's size from its superblock, one `wipefs --json` for every
//! signature and label, and /etc/fstab.
//!
//! The boot disk is opened (and locked) first, so the facts that decide
//! table edits are read under the same lock as the edits are made.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gptman::GPT;

use crate::plan::{
    BootDisk, Disk, DiskFacts, Filesystem, GptFacts, MbrFacts, MountFact, Part, Signature, Table,
};
use crate::probe;
use crate::sysfs::System;
use crate::table::DiskFile;

/// How to open a disk: real block devices in the agent, image files in tests.
pub type Opener<'a> = &'a dyn Fn(&Path) -> Result<DiskFile>;

/// Everything gathered, plus the locked boot disk.
pub struct Gathered {
    pub facts: DiskFacts,
    pub disk: DiskFile,
    /// Kernel name of the boot disk.
    pub disk_name: String,
}

/// Reads the boot disk's partition table.
pub fn read_table(disk: &mut DiskFile, root: Option<u32>) -> Result<Table> {
    Ok(read_table_and_gpt(disk, root)?.0)
}

/// [`read_table`], and the parsed GPT when the table is one (so callers
/// that need more of it do not read it twice).
fn read_table_and_gpt(disk: &mut DiskFile, root: Option<u32>) -> Result<(Table, Option<GPT>)> {
    let Some(root) = root else {
        return Ok((Table::None, None));
    };
    let mut s0 = [0u8; 512];
    disk.file
        .read_exact_at(&mut s0, 0)
        .with_context(|| format!("reading sector 0 of {}", disk.path.display()))?;
    let has_mbr = s0[510..512] == [0x55, 0xAA];
    let protective = has_mbr && (0..4).any(|i| s0[446 + 16 * i + 4] == 0xEE);
    if has_mbr && !protective {
        let mut partitions = Vec::new();
        for i in 0..4u32 {
            let e = 446 + 16 * i as usize;
            let start = u64::from(u32::from_le_bytes(s0[e + 8..e + 12].try_into().unwrap()));
            let size = u64::from(u32::from_le_bytes(s0[e + 12..e + 16].try_into().unwrap()));
            if s0[e + 4] != 0 && size > 0 {
                partitions.push(Part {
                    number: i + 1,
                    start,
                    end: start + size - 1,
                    name: String::new(),
                    signatures: vec![],
                });
            }
        }
        if root > 4 {
            // A logical partition: the planner only needs to know it is not primary.
            partitions.push(Part {
                number: root,
                start: 0,
                end: 0,
                name: String::new(),
                signatures: vec![],
            });
        }
        return Ok((Table::Mbr(MbrFacts { partitions, root }), None));
    }
    let gpt = disk.read_gpt()?;
    let h = &gpt.header;
    // When only the backup is readable, gptman returns the backup header,
    // whose own location is its `primary_lba`.
    let (primary_ok, backup_lba) = if gpt.is_primary() {
        (true, h.backup_lba)
    } else {
        (false, h.primary_lba)
    };
    let array_sectors = (u64::from(h.number_of_partition_entries)
        * u64::from(h.size_of_partition_entry))
    .div_ceil(disk.sector_size);
    let partitions = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(n, e)| Part {
            number: n,
            start: e.starting_lba,
            end: e.ending_lba,
            name: e.partition_name.as_str().to_string(),
            signatures: vec![],
        })
        .collect();
    let table = Table::Gpt(GptFacts {
        first_usable: h.first_usable_lba,
        backup_lba,
        primary_ok,
        array_sectors,
        entries: h.number_of_partition_entries,
        partitions,
        root,
    });
    Ok((table, Some(gpt)))
}

/// Mount points named in an fstab.
pub fn fstab_mountpoints(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .collect()
}

/// Gathers the facts. `etc` is the directory holding `fstab`.
pub fn gather(sys: &System, etc: &Path, open: Opener) -> Result<Gathered> {
    let (root, fstype) = sys.root().context("finding the root filesystem's device")?;
    let disk_name = root.parent.clone().unwrap_or_else(|| root.name.clone());
    let disk_path = sys.node(&disk_name);
    let root_device = sys.node(&root.name);
    let mut disk = open(&disk_path)?;
    let (mut table, gpt) = read_table_and_gpt(&mut disk, root.partition)?;

    let root_fs_bytes = if fstype == "ext4" {
        if disk.is_block_device() {
            probe::read_ext4(&root_device, 0)
        } else {
            probe::read_ext4(&disk.path, root.start_bytes)
        }
        .with_context(|| format!("reading the superblock of {}", root_device.display()))?
        .map(|s| s.bytes)
    } else {
        None
    };

    // Every device worth probing: all disks and their partitions.
    let mut probe_list: Vec<PathBuf> = Vec::new();
    let mut others = Vec::new();
    let mut boot_parts: BTreeMap<u32, PathBuf> = BTreeMap::new();
    // The boot disk's partitions, always (even when the disk is of a kind
    // the disk listing skips, such as a loop device).
    let bios_boot = bios_boot_partitions(gpt.as_ref());
    for p in sys.partitions(&disk_name).unwrap_or_default() {
        if let Some(n) = p.partition {
            let node = sys.node(&p.name);
            boot_parts.insert(n, node.clone());
            if !bios_boot.contains(&n) {
                probe_list.push(node);
            }
        }
    }
    for d in sys.disks().context("listing block devices")? {
        if d.bytes == 0 || d.name == disk_name {
            continue; // empty CD-ROM drives and the like; the boot disk is done
        }
        let parts = sys.partitions(&d.name).unwrap_or_default();
        let node = sys.node(&d.name);
        if !d.removable {
            others.push(Disk {
                path: node.clone(),
                bytes: d.bytes,
                signatures: vec![],
                partitions: parts.len() as u32,
                read_only: d.read_only,
            });
        }
        probe_list.push(node);
        probe_list.extend(parts.iter().map(|p| sys.node(&p.name)));
    }
    let mut sigs = probe::signatures(&probe_list);
    for n in &bios_boot {
        if let Some(node) = boot_parts.get(n) {
            sigs.insert(node.clone(), vec![bios_boot_signature()]);
        }
    }

    for d in &mut others {
        d.signatures = sigs.get(&d.path).cloned().unwrap_or_default();
    }
    let mut filesystems = Vec::new();
    for (dev, list) in &sigs {
        for s in list {
            if let (Some(label), false) = (&s.label, probe::is_partition_table(&s.kind)) {
                filesystems.push(Filesystem {
                    device: dev.clone(),
                    fstype: s.kind.clone(),
                    label: label.clone(),
                });
            }
        }
    }
    if let Table::Gpt(g) = &mut table {
        for p in &mut g.partitions {
            if let Some(node) = boot_parts.get(&p.number) {
                p.signatures = sigs.get(node).cloned().unwrap_or_default();
            } else if !disk.is_block_device() {
                // Image files (tests): partitions have no nodes; read the
                // ext4 superblock at the partition's offset instead.
                if let Some(sb) = probe::read_ext4(&disk.path, p.start * disk.sector_size)? {
                    p.signatures = vec![Signature {
                        kind: "ext4".into(),
                        label: Some(sb.label.clone()),
                    }];
                    filesystems.push(Filesystem {
                        device: partition_pseudo_node(&disk_path, p.number),
                        fstype: "ext4".into(),
                        label: sb.label,
                    });
                }
            }
        }
    }

    let mut mounts = Vec::new();
    for m in sys.mounts()? {
        if m.major == 0 {
            continue;
        }
        if let Ok(b) = sys.by_devno(m.major, m.minor) {
            mounts.push(MountFact {
                mountpoint: m.mountpoint,
                device: sys.node(&b.name),
            });
        }
    }
    let fstab = match fs::read_to_string(etc.join("fstab")) {
        Ok(t) => fstab_mountpoints(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).context("reading /etc/fstab"),
    };

    let sector_size = disk.sector_size;
    let sectors = disk.sectors();
    Ok(Gathered {
        facts: DiskFacts {
            boot: BootDisk {
                path: disk_path,
                sector_size,
                sectors,
                root_device,
                root_fs_bytes,
                table,
            },
            disks: others,
            filesystems,
            mounts,
            fstab,
        },
        disk,
        disk_name,
    })
}

/// GPT type "BIOS boot" (GRUB's core.img), in the on-disk byte order.
const BIOS_BOOT: [u8; 16] = *b"Hah!IdontNeedEFI";

/// The boot disk's BIOS boot partitions. They hold GRUB's core.img, which
/// no prober recognises; they are neither volumes nor blank, so they are
/// not probed (on every boot libblkid would otherwise be asked, in vain).
fn bios_boot_partitions(gpt: Option<&GPT>) -> BTreeSet<u32> {
    gpt.map(|g| {
        g.iter()
            .filter(|(_, e)| e.is_used() && e.partition_type_guid == BIOS_BOOT)
            .map(|(n, _)| n)
            .collect()
    })
    .unwrap_or_default()
}

/// What stands for a BIOS boot partition's content.
pub fn bios_boot_signature() -> Signature {
    Signature {
        kind: "BIOS boot partition (GRUB)".into(),
        label: None,
    }
}

/// How tests name a partition of an image file (no such node exists).
pub fn partition_pseudo_node(disk: &Path, number: u32) -> PathBuf {
    PathBuf::from(format!("{}#{number}", disk.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_lines() {
        let got = fstab_mountpoints(
            "# comment\nUUID=1 / ext4 defaults 0 1\n\n  LABEL=ecs-data\t/data ext4 defaults,nofail 0 2\n",
        );
        assert_eq!(got, vec![PathBuf::from("/"), PathBuf::from("/data")]);
    }
}
