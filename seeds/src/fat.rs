//! Reading FAT12/16/32 (vfat) seed images without mounting them.
//!
//! Some hypervisors and users supply the NoCloud seed as a vfat image
//! (`mkfs.vfat -n cidata` + `mcopy`). This reader parses the boot sector
//! (BPB), decides FAT12/16/32 by cluster count as the FAT specification
//! does, and walks the directory tree: VFAT long file names (checked against
//! their short entry's checksum), else the 8.3 short name lowercased. The
//! label is the root directory's volume label entry, else the boot
//! sector's, as blkid reads it ([`label`]; [`read`] and the probe agree).
//!
//! Everything is treated as hostile: cluster numbers are range-checked,
//! chains are followed only as far as the file size needs and checked for
//! loops, directories are bounded by [`Limits::max_dir_bytes`], and FAT
//! entries are read one at a time rather than loading a FAT whose size the
//! image claims. Written here because a seed needs only this small
//! read-only walk with limits for untrusted input, which is shorter than
//! adapting a general read-write FAT crate to those limits.

use std::collections::HashSet;
use std::io::{Read, Seek};

use crate::seedfs::{join_name, Collector, Device, FsKind, Limits, Seed, SeedError};

/// What the boot sector says.
#[derive(Debug, Clone)]
pub(crate) struct Bpb {
    pub(crate) kind: FsKind,
    /// The label in the boot sector, if any (not `NO NAME`).
    pub(crate) boot_label: Option<String>,
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    /// Byte offset of the first FAT.
    fat_offset: u64,
    /// Byte offset of cluster 2.
    data_offset: u64,
    /// Number of data clusters; valid cluster numbers are 2..cluster_count+2.
    cluster_count: u32,
    /// FAT12/16: byte offset and size of the fixed root directory.
    root_region: (u64, u64),
    /// FAT32: first cluster of the root directory.
    root_cluster: u32,
}

/// A volume label field: 11 bytes, space padded.
fn label_field(raw: &[u8]) -> Option<String> {
    let s: String = raw.iter().map(|&b| char::from(b)).collect();
    let s = s.trim_end_matches([' ', '\0']);
    (!s.is_empty() && s != "NO NAME").then(|| s.to_owned())
}

impl Bpb {
    /// Reads and checks the boot sector; `None` if it is not FAT.
    pub(crate) fn probe<R: Read + Seek>(dev: &mut Device<R>) -> Result<Option<Bpb>, SeedError> {
        let mut bs = [0u8; 512];
        if !dev.read_if_present(0, &mut bs)? {
            return Ok(None);
        }
        Ok(Self::parse(&bs))
    }

    fn parse(bs: &[u8; 512]) -> Option<Bpb> {
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([bs[at], bs[at + 1]]));
        let u32_at = |at: usize| {
            u64::from(u32::from_le_bytes([
                bs[at],
                bs[at + 1],
                bs[at + 2],
                bs[at + 3],
            ]))
        };
        if bs[510..512] != [0x55, 0xAA] || !(bs[0] == 0xEB || bs[0] == 0xE9) {
            return None;
        }
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = u16_at(14);
        let fats = u64::from(bs[16]);
        let root_entries = u16_at(17);
        let media = bs[21];
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
            || !sectors_per_cluster.is_power_of_two()
            || sectors_per_cluster > 128
            || reserved == 0
            || !(1..=4).contains(&fats)
            || !(media == 0xF0 || media >= 0xF8)
        {
            return None;
        }
        let fat_size = match u16_at(22) {
            0 => u32_at(36),
            n => n,
        };
        let total_sectors = match u16_at(19) {
            0 => u32_at(32),
            n => n,
        };
        if fat_size == 0 {
            return None;
        }
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let meta = reserved + fats * fat_size + root_sectors;
        let data_sectors = total_sectors.checked_sub(meta).filter(|&n| n > 0)?;
        let cluster_count = data_sectors / sectors_per_cluster;
        let kind = match cluster_count {
            0 => return None,
            1..=4084 => FsKind::Fat12,
            4085..=65524 => FsKind::Fat16,
            _ => FsKind::Fat32,
        };
        let cluster_count = u32::try_from(cluster_count)
            .ok()
            .filter(|&n| n < 0x0FFF_FFF5)?;
        // The FAT must have an entry for every cluster.
        let fat_bits = match kind {
            FsKind::Fat12 => 12,
            FsKind::Fat16 => 16,
            _ => 32,
        };
        if (u64::from(cluster_count) + 2) * fat_bits > fat_size * bytes_per_sector * 8 {
            return None;
        }
        let (label_at, root_cluster) = if kind == FsKind::Fat32 {
            if root_entries != 0 || u16_at(22) != 0 {
                return None;
            }
            (66, u32_at(44) as u32)
        } else {
            if root_entries == 0 {
                return None;
            }
            (38, 0)
        };
        let boot_label = if bs[label_at] == 0x29 {
            label_field(&bs[label_at + 5..label_at + 16])
        } else {
            None
        };
        Some(Bpb {
            kind,
            boot_label,
            bytes_per_sector,
            sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            data_offset: meta * bytes_per_sector,
            cluster_count,
            root_region: (
                (reserved + fats * fat_size) * bytes_per_sector,
                root_entries * 32,
            ),
            root_cluster,
        })
    }

    fn cluster_size(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    fn valid_cluster(&self, n: u32) -> bool {
        n >= 2 && n - 2 < self.cluster_count
    }
}

/// The next link of a cluster chain.
enum Link {
    Next(u32),
    End,
}

struct Fat<'a, 'd, R> {
    dev: &'d mut Device<R>,
    bpb: Bpb,
    c: Collector<'a>,
}

impl<R: Read + Seek> Fat<'_, '_, R> {
    /// The root directory's bytes (FAT12/16: the fixed region; FAT32: the
    /// chain from the root cluster), within the limits.
    fn root_dir(&mut self) -> Result<Vec<u8>, SeedError> {
        let max_dir = self.c.limits.max_dir_bytes;
        if self.bpb.kind == FsKind::Fat32 {
            let root_cluster = self.bpb.root_cluster;
            let buf = self.read_chain(root_cluster, None, max_dir, "the root directory")?;
            self.c.reserve_metadata(buf.len() as u64)?;
            Ok(buf)
        } else {
            let (at, len) = self.bpb.root_region;
            self.c.check_dir_size(len, "/")?;
            self.c.reserve_metadata(len)?;
            let mut buf = vec![0u8; len as usize];
            self.dev
                .read_at(at, &mut buf)
                .map_err(|e| self.c.read_error(e, "the root directory"))?;
            Ok(buf)
        }
    }

    /// The FAT entry of cluster `n` (already checked valid).
    fn link(&mut self, n: u32) -> Result<Link, SeedError> {
        let kind = self.bpb.kind;
        let (offset, width) = match kind {
            FsKind::Fat12 => (u64::from(n) + u64::from(n) / 2, 2),
            FsKind::Fat16 => (u64::from(n) * 2, 2),
            _ => (u64::from(n) * 4, 4),
        };
        let mut raw = [0u8; 4];
        self.dev
            .read_at(self.bpb.fat_offset + offset, &mut raw[..width])
            .map_err(|e| self.c.read_error(e, "the FAT"))?;
        let v = u32::from_le_bytes(raw);
        let (v, end) = match kind {
            FsKind::Fat12 => (if n % 2 == 1 { v >> 4 } else { v & 0xFFF }, 0xFF8),
            FsKind::Fat16 => (v, 0xFFF8),
            _ => (v & 0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        if v >= end {
            Ok(Link::End)
        } else if self.bpb.valid_cluster(v) {
            Ok(Link::Next(v))
        } else {
            Err(self
                .c
                .corrupt(format!("cluster {n} links to invalid cluster {v:#x}")))
        }
    }

    /// Reads the chain from `start`: exactly `size` bytes for a file, or up
    /// to the end of the chain (at most `max` bytes) for a directory.
    fn read_chain(
        &mut self,
        start: u32,
        size: Option<u64>,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, SeedError> {
        if size == Some(0) {
            return Ok(Vec::new());
        }
        if !self.bpb.valid_cluster(start) {
            return Err(self
                .c
                .corrupt(format!("{what}: invalid first cluster {start:#x}")));
        }
        let csize = self.bpb.cluster_size();
        let wanted = size.unwrap_or(max);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cluster = start;
        loop {
            if !seen.insert(cluster) {
                return Err(self.c.corrupt(format!("{what}: cluster chain loops")));
            }
            let take = csize.min(wanted - out.len() as u64);
            let at = self.bpb.data_offset + u64::from(cluster - 2) * csize;
            let old = out.len();
            out.resize(old + take as usize, 0);
            self.dev
                .read_at(at, &mut out[old..])
                .map_err(|e| self.c.read_error(e, what))?;
            if out.len() as u64 == wanted {
                if size.is_none() {
                    // A directory as large as the limit: it must end here.
                    if let Link::Next(_) = self.link(cluster)? {
                        return Err(self
                            .c
                            .limit(format!("directory {what:?} is larger than {max} bytes")));
                    }
                }
                return Ok(out);
            }
            match self.link(cluster)? {
                Link::Next(n) => cluster = n,
                Link::End if size.is_none() => return Ok(out),
                Link::End => {
                    return Err(self
                        .c
                        .corrupt(format!("{what}: cluster chain shorter than the file")))
                }
            }
        }
    }
}

/// One 32-byte directory entry's short name as text: `name.ext`, lowercased
/// (seed file names are lowercase; the NT case bits say the same for names
/// `mcopy` stores without a long name).
fn short_name(e: &[u8]) -> String {
    let mut raw = [0u8; 11];
    raw.copy_from_slice(&e[..11]);
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let text = |b: &[u8]| -> String {
        b.iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .trim_end_matches(' ')
            .to_lowercase()
    };
    let (base, ext) = (text(&raw[..8]), text(&raw[8..]));
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short[..11]
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// A long file name being assembled from its entries (stored last part
/// first, numbered down to 1).
struct LongName {
    checksum: u8,
    next: u8,
    units: Vec<u16>,
}

/// An entry found in a directory.
struct Entry {
    name: String,
    dir: bool,
    cluster: u32,
    size: u32,
}

/// Parses the 32-byte entries of one directory. Returns the entries and the
/// volume label entry's text, if any.
fn parse_dir(buf: &[u8], fat32: bool) -> (Vec<Entry>, Option<String>) {
    let mut entries = Vec::new();
    let mut label = None;
    let mut long: Option<LongName> = None;
    for e in buf.chunks_exact(32) {
        let attr = e[11];
        match e[0] {
            0x00 => break,
            0xE5 => {
                long = None;
                continue;
            }
            _ => {}
        }
        if attr & 0x3F == 0x0F {
            let seq = e[0] & 0x1F;
            if e[0] & 0x40 != 0 {
                long = (1..=20).contains(&seq).then(|| LongName {
                    checksum: e[13],
                    next: seq,
                    units: vec![0xFFFF; usize::from(seq) * 13],
                });
            }
            match long.as_mut() {
                Some(l) if l.next == seq && seq >= 1 && l.checksum == e[13] => {
                    let at = usize::from(seq - 1) * 13;
                    let parts = e[1..11]
                        .chunks_exact(2)
                        .chain(e[14..26].chunks_exact(2))
                        .chain(e[28..32].chunks_exact(2));
                    for (slot, u) in l.units[at..at + 13].iter_mut().zip(parts) {
                        *slot = u16::from_le_bytes([u[0], u[1]]);
                    }
                    l.next -= 1;
                }
                _ => long = None,
            }
            continue;
        }
        let name_from_long = long
            .take()
            .filter(|l| l.next == 0 && l.checksum == lfn_checksum(e))
            .map(|l| {
                let units = l.units.into_iter().take_while(|&u| u != 0 && u != 0xFFFF);
                char::decode_utf16(units)
                    .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect::<String>()
            });
        if attr & 0x08 != 0 {
            if attr & 0x10 == 0 && label.is_none() {
                label = label_field(&e[..11]);
            }
            continue;
        }
        let name = name_from_long.unwrap_or_else(|| short_name(e));
        if name == "." || name == ".." {
            continue;
        }
        let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
        let hi = if fat32 {
            u32::from(u16::from_le_bytes([e[20], e[21]]))
        } else {
            0
        };
        entries.push(Entry {
            name,
            dir: attr & 0x10 != 0,
            cluster: hi << 16 | lo,
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
        });
    }
    (entries, label)
}

/// The volume's label as blkid reads it: the root directory's volume label
/// entry, else the boot sector's (when the two disagree, the root
/// directory's wins); empty if neither has one. A root directory that
/// cannot be read leaves the boot sector's.
pub(crate) fn label<R: Read + Seek>(dev: &mut Device<R>, bpb: Bpb) -> String {
    let limits = Limits::default();
    let boot_label = bpb.boot_label.clone();
    let mut fat = Fat {
        dev,
        c: Collector::new(bpb.kind, &limits),
        bpb,
    };
    let fat32 = fat.bpb.kind == FsKind::Fat32;
    let dir_label = fat.root_dir().ok().and_then(|buf| parse_dir(&buf, fat32).1);
    dir_label.or(boot_label).unwrap_or_default()
}

/// Reads the FAT filesystem on `dev` described by `bpb`.
pub(crate) fn read<R: Read + Seek>(
    dev: &mut Device<R>,
    bpb: Bpb,
    limits: &Limits,
) -> Result<Seed, SeedError> {
    let kind = bpb.kind;
    let boot_label = bpb.boot_label.clone();
    let mut fat = Fat {
        dev,
        c: Collector::new(kind, limits),
        bpb,
    };
    let max_dir = limits.max_dir_bytes;
    let root = fat.root_dir()?;
    let mut label = None;
    let mut visited = HashSet::new();
    let mut stack = vec![(root, String::new(), 0usize)];
    while let Some((buf, path, depth)) = stack.pop() {
        let (entries, dir_label) = parse_dir(&buf, kind == FsKind::Fat32);
        if depth == 0 {
            label = dir_label;
        }
        for e in entries {
            fat.c.count_entry()?;
            let child = join_name(&fat.c, &path, &e.name)?;
            if e.dir {
                fat.c.check_depth(depth + 1, &child)?;
                if !visited.insert(e.cluster) {
                    return Err(fat.c.corrupt(format!("directory {child:?} loops back")));
                }
                let sub = fat.read_chain(e.cluster, None, max_dir, &child)?;
                fat.c.reserve_metadata(sub.len() as u64)?;
                stack.push((sub, child, depth + 1));
            } else {
                fat.c.reserve_file(u64::from(e.size), &child)?;
                let data = fat.read_chain(e.cluster, Some(u64::from(e.size)), 0, &child)?;
                fat.c.add_file(child, data)?;
            }
        }
    }
    Ok(Seed {
        kind,
        label: label.or(boot_label).unwrap_or_default(),
        files: fat.c.files,
        not_regular: fat.c.not_regular,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_lowercased() {
        let mut e = [b' '; 32];
        e[..6].copy_from_slice(b"LATEST");
        assert_eq!(short_name(&e), "latest");
        e[8..11].copy_from_slice(b"TXT");
        assert_eq!(short_name(&e), "latest.txt");
    }

    #[test]
    fn rejects_non_fat_boot_sectors() {
        assert!(Bpb::parse(&[0u8; 512]).is_none());
        let mut bs = [0u8; 512];
        bs[0] = 0xEB;
        bs[510] = 0x55;
        bs[511] = 0xAA;
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 3; // sectors per cluster not a power of two
        assert!(Bpb::parse(&bs).is_none());
    }
}
