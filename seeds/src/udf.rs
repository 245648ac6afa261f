//! A bounds-checked reader of UDF volumes (ECMA-167 3rd edition, OSTA UDF
//! 1.02 to 2.01), for Azure's provisioning DVD.
//!
//! Azure attaches `ovf-env.xml` on a DVD that may carry UDF alone, without
//! the ISO9660 descriptors [`crate::iso`] reads (cloud-init mounts it as
//! `udf`). The kernel may lack the udf module, and mounting a filesystem
//! from the hypervisor is more attack surface than reading one small file,
//! so it is read here, reached through [`crate::seed::read_seed`] when a
//! device has no ISO9660 signature.
//!
//! What is read: the volume recognition sequence (sectors 16 on, an
//! `NSR02`/`NSR03` before `TEA01` is what says UDF, as the kernel checks),
//! the anchor at sector 256, the main volume descriptor sequence (the
//! reserve one if the main is unreadable): its partition and logical volume
//! descriptors, the file set descriptor, then the directory tree from the
//! root ICB: File Entries and Extended File Entries with short, long or
//! embedded allocation descriptors, allocation extent continuations, and
//! File Identifier Descriptors with OSTA compressed Unicode names (8- and
//! 16-bit). Every descriptor's tag checksum and CRC are checked, and the
//! recorded location where ECMA-167 records one.
//!
//! Not supported, refused as such: logical blocks other than 2048 bytes,
//! partition maps other than type 1 (the virtual, sparable and metadata
//! partitions of UDF 1.50 to 2.60, used for CD-R packet writing, rewritable
//! media and UDF 2.50+), extended allocation descriptors. A read-only DVD as
//! Azure's (and genisoimage's `-udf`, mkudffs' 2.01) needs none of them.
//!
//! Written here rather than with a crate: `hadris-udf` (2.x) documents
//! reading UDF 1.02 images only, `udf-core` is a few weeks old, and neither
//! bounds what a hostile image makes it allocate, which the agent needs at
//! boot; this reader shares the seed reader's [`Limits`] and [`Collector`],
//! and is covered by the same fuzz target.

use std::collections::HashSet;
use std::io::{Read, Seek};

use crate::seedfs::{join_name, Collector, Device, FsKind, Limits, Seed, SeedError};

/// The only block size read (DVD and CD sectors).
const BLOCK: usize = 2048;
/// Where the anchor volume descriptor pointer lies.
const ANCHOR: u32 = 256;
/// Most volume recognition descriptors looked at.
const MAX_VRS: u32 = 32;
/// Most descriptors read from one volume descriptor sequence.
const MAX_VDS: u32 = 64;
/// Most allocation descriptors (and continuations) followed for one entry.
const MAX_EXTENTS: usize = 256;

// Descriptor tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
const TAG_ANCHOR: u16 = 2;
const TAG_PARTITION: u16 = 5;
const TAG_LOGICAL_VOLUME: u16 = 6;
const TAG_TERMINATING: u16 = 8;
const TAG_FILE_SET: u16 = 256;
const TAG_FILE_ID: u16 = 257;
const TAG_ALLOC_EXTENT: u16 = 258;
const TAG_FILE_ENTRY: u16 = 261;
const TAG_EXT_FILE_ENTRY: u16 = 266;

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from(u32le(b, at)) | (u64::from(u32le(b, at + 4)) << 32)
}

/// CRC-16/XMODEM (CCITT polynomial 0x1021, initial 0), as ECMA-167 7.2.6.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A checked descriptor tag: (identifier, recorded location). `None` when
/// the checksum or the CRC does not match, or the CRC covers more than
/// `buf`.
fn tag(buf: &[u8]) -> Option<(u16, u32)> {
    let head = buf.get(..16)?;
    let sum = head[..4]
        .iter()
        .chain(&head[5..])
        .fold(0u8, |a, &b| a.wrapping_add(b));
    if sum != head[4] {
        return None;
    }
    let crc_len = usize::from(u16le(head, 10));
    let body = buf.get(16..16 + crc_len)?;
    if crc16(body) != u16le(head, 8) {
        return None;
    }
    Some((u16le(head, 0), u32le(head, 12)))
}

/// Decodes an OSTA CS0 string (compression id 8 or 254: one byte per
/// character; 16 or 255: UCS-2 big-endian); `None` when malformed.
fn cs0(bytes: &[u8]) -> Option<String> {
    let Some((&id, rest)) = bytes.split_first() else {
        return Some(String::new());
    };
    match id {
        8 | 254 => Some(rest.iter().map(|&b| char::from(b)).collect()),
        16 | 255 if rest.len() % 2 == 0 => Some(
            char::decode_utf16(
                rest.chunks_exact(2)
                    .map(|u| u16::from_be_bytes([u[0], u[1]])),
            )
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        ),
        _ => None,
    }
}

/// A `dstring` field: CS0 bytes, the used length in the last byte.
fn dstring(field: &[u8]) -> String {
    let Some((&used, body)) = field.split_last() else {
        return String::new();
    };
    let used = usize::from(used).min(body.len());
    cs0(&body[..used])
        .unwrap_or_default()
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// A logical block address: (block within the partition, partition
/// reference number).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Lba {
    block: u32,
    part: u16,
}

/// A `long_ad`: (length, type in the top two bits, address).
fn long_ad(b: &[u8]) -> (u32, u8, Lba) {
    let len = u32le(b, 0);
    let at = Lba {
        block: u32le(b, 4),
        part: u16le(b, 8),
    };
    (len & 0x3FFF_FFFF, (len >> 30) as u8, at)
}

/// The volume: where each partition reference starts on the device, and the
/// descriptors the reader needs.
struct Volume {
    label: String,
    /// Indexed by partition reference number: the partition's first sector
    /// and its length in blocks, or why it cannot be read.
    parts: Vec<Result<(u32, u32), &'static str>>,
    file_set: Lba,
}

/// Reads `BLOCK` bytes at sector `sector`.
fn sector<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &Collector<'_>,
    sector: u64,
    what: &str,
) -> Result<Vec<u8>, SeedError> {
    let mut b = vec![0u8; BLOCK];
    dev.read_at(sector * BLOCK as u64, &mut b)
        .map_err(|e| c.read_error(e, what))?;
    Ok(b)
}

/// Whether the device carries a UDF volume recognition sequence and anchor.
pub(crate) fn has_signature<R: Read + Seek>(dev: &mut Device<R>) -> Result<bool, SeedError> {
    let mut nsr = false;
    for i in 0..MAX_VRS {
        let mut d = [0u8; 7];
        if !dev.read_if_present(u64::from(16 + i) * BLOCK as u64, &mut d)? {
            return Ok(false);
        }
        match &d[1..6] {
            b"NSR02" | b"NSR03" => nsr = true,
            b"TEA01" => break,
            b"BEA01" | b"CD001" | b"BOOT2" | b"CDW02" => {}
            _ => break,
        }
    }
    if !nsr {
        return Ok(false);
    }
    let mut a = [0u8; 512];
    if !dev.read_if_present(u64::from(ANCHOR) * BLOCK as u64, &mut a)? {
        return Ok(false);
    }
    Ok(tag(&a) == Some((TAG_ANCHOR, ANCHOR)))
}

/// The anchor and a volume descriptor sequence: the main one, else the
/// reserve.
fn read_volume<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &Collector<'_>,
) -> Result<Volume, SeedError> {
    let anchor = sector(dev, c, ANCHOR.into(), "the UDF anchor")?;
    if tag(&anchor) != Some((TAG_ANCHOR, ANCHOR)) {
        return Err(c.corrupt("no anchor volume descriptor at sector 256"));
    }
    let main = (u32le(&anchor, 16), u32le(&anchor, 20));
    let reserve = (u32le(&anchor, 24), u32le(&anchor, 28));
    match read_sequence(dev, c, main) {
        Ok(v) => Ok(v),
        Err(e @ SeedError::Io(_)) => Err(e),
        Err(main_err) => read_sequence(dev, c, reserve).map_err(|_| main_err),
    }
}

fn read_sequence<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &Collector<'_>,
    (len, start): (u32, u32),
) -> Result<Volume, SeedError> {
    let count = (len / BLOCK as u32).min(MAX_VDS);
    let mut partitions: Vec<(u16, u32, u32)> = Vec::new();
    let mut lvd = None;
    for i in 0..count {
        let at = u64::from(start) + u64::from(i);
        let d = sector(dev, c, at, "a UDF volume descriptor")?;
        let Some((id, loc)) = tag(&d) else {
            return Err(c.corrupt(format!("bad volume descriptor tag at sector {at}")));
        };
        if u64::from(loc) != at {
            return Err(c.corrupt(format!(
                "volume descriptor at sector {at} names sector {loc}"
            )));
        }
        match id {
            TAG_PARTITION => {
                let number = u16le(&d, 22);
                if !partitions.iter().any(|p| p.0 == number) {
                    partitions.push((number, u32le(&d, 188), u32le(&d, 192)));
                }
            }
            TAG_LOGICAL_VOLUME if lvd.is_none() => lvd = Some(d),
            TAG_TERMINATING => break,
            _ => {}
        }
    }
    let lvd = lvd.ok_or_else(|| c.corrupt("no logical volume descriptor"))?;
    let block_size = u32le(&lvd, 212);
    if block_size as usize != BLOCK {
        return Err(c.corrupt(format!("logical block size {block_size} is not 2048")));
    }
    let (_, _, file_set) = long_ad(&lvd[248..264]);
    let table_len = u32le(&lvd, 264) as usize;
    let maps = lvd
        .get(440..440usize.saturating_add(table_len))
        .ok_or_else(|| c.corrupt("partition map table past its descriptor"))?;
    let mut parts = Vec::new();
    let mut off = 0;
    for _ in 0..u32le(&lvd, 268).min(64) {
        let (Some(&kind), Some(&len)) = (maps.get(off), maps.get(off + 1)) else {
            return Err(c.corrupt("partition map table too short"));
        };
        let len = usize::from(len);
        let map = maps
            .get(off..off + len)
            .filter(|_| len >= 2)
            .ok_or_else(|| c.corrupt("partition map past its table"))?;
        parts.push(if kind == 1 && len == 6 {
            let number = u16le(map, 4);
            partitions
                .iter()
                .find(|p| p.0 == number)
                .map(|p| (p.1, p.2))
                .ok_or("a partition without a descriptor")
        } else {
            Err("a partition map other than type 1 (virtual, sparable or metadata: not supported)")
        });
        off += len;
    }
    Ok(Volume {
        label: dstring(&lvd[84..212]),
        parts,
        file_set,
    })
}

impl Volume {
    /// The device sector of block `at`, checked to lie in its partition.
    fn sector_of(&self, c: &Collector<'_>, at: Lba) -> Result<u64, SeedError> {
        let part = self
            .parts
            .get(usize::from(at.part))
            .ok_or_else(|| c.corrupt(format!("partition reference {} has no map", at.part)))?;
        let (start, len) = part
            .as_ref()
            .map_err(|why| c.corrupt(format!("partition reference {} is {why}", at.part)))?;
        if at.block >= *len {
            return Err(c.corrupt(format!(
                "block {} past the end of partition {}",
                at.block, at.part
            )));
        }
        Ok(u64::from(*start) + u64::from(at.block))
    }
}

/// A File Entry or Extended File Entry, read but its data not yet.
struct Entry {
    file_type: u8,
    size: u64,
    /// The allocation descriptor type (0 short, 1 long, 3 embedded).
    ad_type: u16,
    /// The allocation descriptors (or the embedded data).
    ads: Vec<u8>,
    /// The partition its short allocation descriptors refer to.
    part: u16,
}

fn read_entry<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &mut Collector<'_>,
    vol: &Volume,
    at: Lba,
    path: &str,
) -> Result<Entry, SeedError> {
    c.reserve_metadata(BLOCK as u64)?;
    let s = vol.sector_of(c, at)?;
    let b = sector(dev, c, s, "a UDF file entry")?;
    let (base, info): (usize, (usize, usize)) = match tag(&b) {
        Some((TAG_FILE_ENTRY, loc)) if loc == at.block => (176, (168, 172)),
        Some((TAG_EXT_FILE_ENTRY, loc)) if loc == at.block => (216, (208, 212)),
        _ => return Err(c.corrupt(format!("{path:?}: no file entry at its ICB"))),
    };
    let ea = u32le(&b, info.0) as usize;
    let ad = u32le(&b, info.1) as usize;
    let ads = b
        .get(base.saturating_add(ea)..base.saturating_add(ea).saturating_add(ad))
        .ok_or_else(|| c.corrupt(format!("{path:?}: allocation descriptors past its entry")))?
        .to_vec();
    Ok(Entry {
        file_type: b[27],
        size: u64le(&b, 56),
        ad_type: u16le(&b, 34) & 7,
        ads,
        part: at.part,
    })
}

/// The data of `e`; its size has been checked against a limit.
fn read_data<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &mut Collector<'_>,
    vol: &Volume,
    e: Entry,
    path: &str,
) -> Result<Vec<u8>, SeedError> {
    let size = usize::try_from(e.size).map_err(|_| c.limit(format!("{path}: too large")))?;
    let ad_len =
        match e.ad_type {
            0 => 8,
            1 => 16,
            3 => {
                return e.ads.get(..size).map(<[u8]>::to_vec).ok_or_else(|| {
                    c.corrupt(format!("{path:?}: embedded data shorter than its size"))
                })
            }
            _ => {
                return Err(c.corrupt(format!(
                    "{path:?}: extended allocation descriptors are not supported"
                )))
            }
        };
    let mut data = Vec::with_capacity(size.min(BLOCK * 16));
    let mut ads = e.ads;
    let mut i = 0;
    let mut followed = 0;
    while data.len() < size {
        followed += 1;
        if followed > MAX_EXTENTS {
            return Err(c.corrupt(format!("{path:?}: more than {MAX_EXTENTS} extents")));
        }
        let Some(d) = ads.get(i..i + ad_len) else {
            break;
        };
        i += ad_len;
        let (len, kind, at) = if ad_len == 8 {
            let len = u32le(d, 0);
            let at = Lba {
                block: u32le(d, 4),
                part: e.part,
            };
            (len & 0x3FFF_FFFF, (len >> 30) as u8, at)
        } else {
            long_ad(d)
        };
        if len == 0 {
            break;
        }
        if kind == 3 {
            // The rest of the descriptors are in an allocation extent.
            c.reserve_metadata(BLOCK as u64)?;
            let s = vol.sector_of(c, at)?;
            let b = sector(dev, c, s, "a UDF allocation extent")?;
            if tag(&b).map(|t| t.0) != Some(TAG_ALLOC_EXTENT) {
                return Err(c.corrupt(format!("{path:?}: bad allocation extent")));
            }
            let n = u32le(&b, 20) as usize;
            ads = b
                .get(24..24usize.saturating_add(n))
                .ok_or_else(|| c.corrupt(format!("{path:?}: allocation extent too long")))?
                .to_vec();
            i = 0;
            continue;
        }
        let take = (len as usize).min(size - data.len());
        if kind == 0 {
            let first = vol.sector_of(c, at)?;
            let blocks = take.div_ceil(BLOCK) as u64;
            if blocks > 1 {
                // The whole extent within its partition.
                vol.sector_of(
                    c,
                    Lba {
                        block: at.block.saturating_add((blocks - 1) as u32),
                        part: at.part,
                    },
                )?;
            }
            let start = data.len();
            data.resize(start + take, 0);
            dev.read_at(first * BLOCK as u64, &mut data[start..])
                .map_err(|err| c.read_error(err, path))?;
        } else {
            // Allocated but not recorded, or neither: zeros.
            data.resize(data.len() + take, 0);
        }
    }
    if data.len() < size {
        return Err(c.corrupt(format!("{path:?}: extents shorter than its size")));
    }
    Ok(data)
}

/// What an entry of ECMA-167 file type `t` is, when not a regular file or
/// a directory.
fn not_regular(t: u8) -> Option<&'static str> {
    match t {
        0 | 5 => None,
        6 | 7 => Some("a device node"),
        9 => Some("a FIFO"),
        10 => Some("a socket"),
        12 => Some("a symlink"),
        _ => Some("an entry of an unknown type"),
    }
}

/// The volume label (the logical volume identifier, as blkid reports it).
pub(crate) fn probe_label<R: Read + Seek>(dev: &mut Device<R>) -> Option<String> {
    let limits = Limits::default();
    let c = Collector::new(FsKind::Udf, &limits);
    read_volume(dev, &c).ok().map(|v| v.label)
}

/// Reads the UDF filesystem on `dev`.
pub(crate) fn read<R: Read + Seek>(
    dev: &mut Device<R>,
    limits: &Limits,
) -> Result<Seed, SeedError> {
    let mut c = Collector::new(FsKind::Udf, limits);
    let vol = read_volume(dev, &c)?;
    let s = vol.sector_of(&c, vol.file_set)?;
    let fsd = sector(dev, &c, s, "the UDF file set descriptor")?;
    if tag(&fsd) != Some((TAG_FILE_SET, vol.file_set.block)) {
        return Err(c.corrupt("no file set descriptor where the volume says"));
    }
    let (_, _, root) = long_ad(&fsd[400..416]);
    let mut visited = HashSet::from([root]);
    let mut stack = vec![(root, String::new(), 0usize)];
    while let Some((at, path, depth)) = stack.pop() {
        let shown = if path.is_empty() { "/" } else { &path };
        let e = read_entry(dev, &mut c, &vol, at, shown)?;
        if e.file_type != 4 {
            return Err(c.corrupt(format!("{shown:?} is not a directory")));
        }
        c.check_dir_size(e.size, shown)?;
        c.reserve_metadata(e.size)?;
        let dir = read_data(dev, &mut c, &vol, e, shown)?;
        let mut pos = 0;
        while pos + 38 <= dir.len() {
            let fid = &dir[pos..];
            let (chars, name_len) = (fid[18], usize::from(fid[19]));
            let impl_len = usize::from(u16le(fid, 36));
            let len = 38 + impl_len + name_len;
            let Some(record) = fid.get(..len) else {
                return Err(c.corrupt(format!("file identifier past the end of {shown:?}")));
            };
            // The CRC covers the record, with or without its padding.
            let padded = &fid[..((len + 3) & !3).min(fid.len())];
            if tag(padded).map(|t| t.0) != Some(TAG_FILE_ID) {
                return Err(c.corrupt(format!("bad file identifier in {shown:?}")));
            }
            pos += (len + 3) & !3;
            // Parent, deleted.
            if chars & 0x08 != 0 || chars & 0x04 != 0 {
                continue;
            }
            c.count_entry()?;
            let (_, _, icb) = long_ad(&record[20..36]);
            let name = cs0(&record[38 + impl_len..])
                .ok_or_else(|| c.corrupt(format!("bad file name in {shown:?}")))?;
            let child = join_name(&c, &path, &name)?;
            if chars & 0x02 != 0 {
                c.check_depth(depth + 1, &child)?;
                if !visited.insert(icb) {
                    return Err(c.corrupt(format!("directory {child:?} loops back")));
                }
                stack.push((icb, child, depth + 1));
                continue;
            }
            let e = read_entry(dev, &mut c, &vol, icb, &child)?;
            if e.file_type == 4 {
                return Err(c.corrupt(format!("{child:?}: a directory not marked as one")));
            }
            if let Some(what) = not_regular(e.file_type) {
                c.add_not_regular(child, what)?;
                continue;
            }
            c.reserve_file(e.size, &child)?;
            let data = read_data(dev, &mut c, &vol, e, &child)?;
            c.add_file(child, data)?;
        }
    }
    Ok(Seed {
        kind: FsKind::Udf,
        label: vol.label,
        files: c.files,
        not_regular: c.not_regular,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_ecma_167s() {
        // ECMA-167 7.2.6's example: the bytes 0x70 0x6A 0x77 give 0x3299.
        assert_eq!(crc16(&[0x70, 0x6A, 0x77]), 0x3299);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn names_in_both_compressions() {
        assert_eq!(cs0(b"\x08ovf-env.xml").as_deref(), Some("ovf-env.xml"));
        assert_eq!(cs0(b"\x10\x00o\x00k").as_deref(), Some("ok"));
        assert_eq!(cs0(b"\x10\x00"), None, "odd UCS-2 length");
        assert_eq!(cs0(b"\x07x"), None, "unknown compression");
        let mut field = [0u8; 32];
        field[..6].copy_from_slice(b"\x08CDROM");
        field[31] = 6;
        assert_eq!(dstring(&field), "CDROM");
    }
}
