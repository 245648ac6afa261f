//! ISO9660 seed images: a deterministic writer and a bounds-checked reader.
//!
//! # Writer
//!
//! [`write_iso`] makes the NoCloud seed: a flat root directory of small files
//! (`user-data`, `meta-data`, `network-config`) under a volume label
//! (`cidata`), with three name spaces so every reader sees the lowercase
//! names:
//!
//! - ISO9660 level 1 names (`USER_DAT.;1`) for readers that know nothing else;
//! - Rock Ridge (RRIP 1.10, `RRIP_1991A`): `SP` and a `CE` continuation
//!   holding `ER` in the root's `.` entry, and `PX` (mode 0444 files, 0555
//!   directories, owner 0), `NM` (the real name) and `TF` on every entry;
//! - Joliet (UCS-2, escape `%/E`) in a supplementary volume descriptor.
//!
//! The layout is fixed: system area (sectors 0-15), primary descriptor (16),
//! Joliet descriptor (17), terminator (18), path tables L and M for both
//! trees (19-22), the Rock Ridge continuation area (23), the ISO9660 root
//! directory, the Joliet root directory, then each file's data from a sector
//! boundary, in name order. Every timestamp is `epoch`; nothing comes from
//! the clock or an RNG, so the same inputs give the same bytes, whatever the
//! order of `files`.
//!
//! It is written here rather than with the `hadris-iso` crate (evaluated:
//! 3.0.0-rc.2). That crate can be made deterministic (`with_time`), but it
//! is a release candidate, needs edition 2024 / Rust 1.88 while this
//! workspace declares 1.85, and pulls in six more `hadris-*` crates for
//! features a seed does not use (El Torito, GPT hybrids, sessions). The image
//! we need is a few hundred lines of well-specified structures (ECMA-119,
//! SUSP 1.10, RRIP 1.10, Joliet), checked by the tests with `isoinfo`,
//! `xorriso` and `blkid`; and the reader below has to be ours anyway, with
//! the limits an untrusted boot-time input needs.
//!
//! # Reader
//!
//! The reader (reached through [`crate::seed::read_seed`]) walks the tree of
//! any ISO9660 image, including subdirectories (`config-2` drives), and names
//! entries by Rock Ridge `NM` if the root carries a SUSP `SP` entry, else by
//! Joliet, else by the plain name with `;1` and a trailing `.` removed and
//! lowercased. Images by genisoimage, cloud-localds, xorriso and
//! [`write_iso`] are tested. Not supported: logical blocks other than 2048
//! bytes, multi-extent files (over 4 GiB, far past the limits anyway) and
//! Rock Ridge deep-directory relocation (only used past depth 8).

use std::collections::HashSet;
use std::io::{Read, Seek};

use crate::seedfs::{join_name, Collector, Device, FsKind, Limits, Seed, SeedError};

mod write;

use self::write::*;
pub use self::write::{write_iso, IsoWriteError};

/// ISO9660 logical sector (and block) size.
pub const SECTOR: usize = 2048;

/// Longest file name [`write_iso`] accepts, so the Joliet name (with `;1`)
/// fits Joliet's 64 characters and every directory record its 255 bytes.
pub const MAX_NAME_LEN: usize = 62;

// ---------------------------------------------------------------------------
// Reader

/// Most volume descriptors read before giving up on a terminator.
const MAX_DESCRIPTORS: u32 = 32;
/// Most SUSP continuation areas followed for one directory record.
const MAX_CONTINUATIONS: usize = 8;
/// Longest continuation area read.
const MAX_CONTINUATION_LEN: u32 = 8 * SECTOR as u32;
/// Longest Rock Ridge name accepted.
const MAX_RR_NAME: usize = 1024;

/// Whether the device carries an ISO9660 volume descriptor at sector 16.
pub(crate) fn has_signature<R: Read + Seek>(dev: &mut Device<R>) -> Result<bool, SeedError> {
    let mut id = [0u8; 6];
    let present = dev.read_if_present(u64::from(PVD_SECTOR) * SECTOR as u64, &mut id)?;
    Ok(present && &id[1..6] == b"CD001")
}

/// The descriptors the reader needs.
struct Descriptors {
    primary: [u8; SECTOR],
    joliet: Option<[u8; SECTOR]>,
}

fn read_descriptors<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &Collector<'_>,
) -> Result<Descriptors, SeedError> {
    let mut primary = None;
    let mut joliet = None;
    for i in 0..MAX_DESCRIPTORS {
        let mut d = [0u8; SECTOR];
        let at = u64::from(PVD_SECTOR + i) * SECTOR as u64;
        dev.read_at(at, &mut d)
            .map_err(|e| c.read_error(e, "a volume descriptor"))?;
        if &d[1..6] != b"CD001" {
            return Err(c.corrupt(format!("volume descriptor {} lacks CD001", PVD_SECTOR + i)));
        }
        match d[0] {
            1 if primary.is_none() => primary = Some(d),
            2 if joliet.is_none() && d[88] == b'%' && d[89] == b'/' && b"@CE".contains(&d[90]) => {
                joliet = Some(d)
            }
            255 => break,
            _ => {}
        }
    }
    let primary = primary.ok_or_else(|| c.corrupt("no primary volume descriptor"))?;
    Ok(Descriptors { primary, joliet })
}

/// The volume label of a primary descriptor: space padded a-characters.
fn label_of(pvd: &[u8; SECTOR]) -> String {
    pvd[40..72]
        .iter()
        .map(|&b| char::from(b))
        .collect::<String>()
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// The label, reading only the volume descriptors.
pub(crate) fn probe_label<R: Read + Seek>(dev: &mut Device<R>) -> Option<String> {
    let limits = Limits::default();
    let c = Collector::new(FsKind::Iso9660, &limits);
    read_descriptors(dev, &c).ok().map(|d| label_of(&d.primary))
}

/// The fields of a directory record the reader uses.
struct Record<'a> {
    extent: u32,
    size: u32,
    flags: u8,
    id: &'a [u8],
    system_use: &'a [u8],
}

/// Parses the directory record that `buf` starts with (`buf[0]` is its
/// length, already checked to fit in `buf`).
fn parse_record(buf: &[u8]) -> Option<Record<'_>> {
    let len = usize::from(*buf.first()?);
    let rec = buf.get(..len)?;
    if len < 34 {
        return None;
    }
    let id_len = usize::from(rec[32]);
    let id_end = 33 + id_len;
    let id = rec.get(33..id_end)?;
    let su_start = id_end + usize::from(id_len % 2 == 0);
    let system_use = rec.get(su_start..).unwrap_or(&[]);
    Some(Record {
        extent: u32::from_le_bytes([rec[2], rec[3], rec[4], rec[5]]),
        size: u32::from_le_bytes([rec[10], rec[11], rec[12], rec[13]]),
        flags: rec[25],
        id,
        system_use,
    })
}

/// How entries are named.
#[derive(Clone, Copy)]
enum Names {
    /// Rock Ridge `NM`, with this many bytes skipped before each system use
    /// area (from the `SP` entry).
    RockRidge {
        skip: usize,
    },
    Joliet,
    Plain,
}

/// What the Rock Ridge entries of one record say.
#[derive(Default)]
struct RrInfo {
    name: Option<Vec<u8>>,
    /// `RE`: a relocated directory, listed again where it belongs.
    relocated: bool,
    /// `PX`: the POSIX file mode (its type bits say a link, FIFO, ...).
    mode: Option<u32>,
    /// `SL`: a symbolic link's target is recorded.
    symlink: bool,
}

impl RrInfo {
    /// What a non-directory record is, if not a regular file ("a symlink").
    fn not_regular(&self) -> Option<&'static str> {
        if self.symlink {
            return Some("a symlink");
        }
        match self.mode? & 0o170000 {
            0o120000 => Some("a symlink"),
            0o010000 => Some("a FIFO"),
            0o140000 => Some("a socket"),
            0o020000 | 0o060000 => Some("a device node"),
            _ => None,
        }
    }
}

/// Reads the SUSP entries of a record, following `CE` continuations.
fn rock_ridge<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &mut Collector<'_>,
    system_use: &[u8],
    skip: usize,
) -> Result<RrInfo, SeedError> {
    let mut info = RrInfo::default();
    let mut name: Vec<u8> = Vec::new();
    let mut has_name = false;
    let mut area: Vec<u8> = system_use.get(skip..).unwrap_or(&[]).to_vec();
    for _ in 0..=MAX_CONTINUATIONS {
        let mut next = None;
        let mut off = 0;
        while off + 4 <= area.len() {
            let len = usize::from(area[off + 2]);
            if len < 4 || off + len > area.len() {
                break;
            }
            let entry = &area[off..off + len];
            match &entry[..2] {
                // NM flags 2 and 4 name `.` and `..`; skip those.
                b"NM" if len >= 5 && entry[4] & 0x06 == 0 => {
                    has_name = true;
                    name.extend_from_slice(&entry[5..]);
                    if name.len() > MAX_RR_NAME {
                        return Err(c.corrupt("Rock Ridge name too long"));
                    }
                }
                b"CE" if len >= 28 => {
                    let le = |at: usize| {
                        u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
                    };
                    next = Some((le(4), le(12), le(20)));
                }
                b"RE" => info.relocated = true,
                b"PX" if len >= 12 => {
                    info.mode = Some(u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]));
                }
                b"SL" => info.symlink = true,
                b"ST" => break,
                _ => {}
            }
            off += len;
        }
        let Some((block, offset, length)) = next else {
            break;
        };
        if length > MAX_CONTINUATION_LEN {
            return Err(c.corrupt("Rock Ridge continuation area too long"));
        }
        c.reserve_metadata(u64::from(length))?;
        let at = u64::from(block) * SECTOR as u64 + u64::from(offset);
        area = vec![0u8; length as usize];
        dev.read_at(at, &mut area)
            .map_err(|e| c.read_error(e, "a Rock Ridge continuation area"))?;
    }
    if has_name {
        info.name = Some(name);
    }
    Ok(info)
}

/// Removes a `;N` version suffix and trailing dots from a plain or Joliet
/// name.
fn strip_version(name: &str) -> &str {
    let name = match name.rfind(';') {
        Some(i) if name[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &name[..i],
        _ => name,
    };
    name.trim_end_matches('.')
}

fn joliet_name(c: &Collector<'_>, id: &[u8]) -> Result<String, SeedError> {
    if id.len() & 1 == 1 {
        return Err(c.corrupt("Joliet name of odd length"));
    }
    let units = id.chunks_exact(2).map(|u| u16::from_be_bytes([u[0], u[1]]));
    let name: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    Ok(strip_version(&name).to_owned())
}

fn plain_name(id: &[u8]) -> String {
    let name: String = id.iter().map(|&b| char::from(b)).collect();
    strip_version(&name).to_lowercase()
}

/// Reads the ISO9660 filesystem on `dev`.
pub(crate) fn read<R: Read + Seek>(
    dev: &mut Device<R>,
    limits: &Limits,
) -> Result<Seed, SeedError> {
    let mut c = Collector::new(FsKind::Iso9660, limits);
    let descriptors = read_descriptors(dev, &c)?;
    let label = label_of(&descriptors.primary);
    let block_size = u16::from_le_bytes([descriptors.primary[128], descriptors.primary[129]]);
    if usize::from(block_size) != SECTOR {
        return Err(c.corrupt(format!("logical block size {block_size} is not 2048")));
    }
    let pvd_root = parse_record(&descriptors.primary[156..190])
        .ok_or_else(|| c.corrupt("bad root directory record"))?;
    let (pvd_extent, pvd_size) = (pvd_root.extent, pvd_root.size);

    // Rock Ridge if the root's `.` entry starts its system use with SP.
    let mut names = Names::Plain;
    c.check_dir_size(u64::from(pvd_size), "/")?;
    c.reserve_metadata(u64::from(pvd_size))?;
    let root_dir = read_extent(dev, &c, pvd_extent, pvd_size, "the root directory")?;
    if let Some(dot) = root_dir
        .first()
        .filter(|&&len| usize::from(len) <= root_dir.len())
        .and_then(|_| parse_record(&root_dir))
    {
        let su = dot.system_use;
        if su.len() >= 7 && &su[..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
            names = Names::RockRidge {
                skip: usize::from(su[6]),
            };
        }
    }
    let (root_extent, root_size) = match (&names, &descriptors.joliet) {
        (Names::Plain, Some(j)) => {
            names = Names::Joliet;
            let root = parse_record(&j[156..190])
                .ok_or_else(|| c.corrupt("bad Joliet root directory record"))?;
            (root.extent, root.size)
        }
        _ => (pvd_extent, pvd_size),
    };

    let mut visited = HashSet::new();
    visited.insert(root_extent);
    let mut stack = vec![(root_extent, root_size, String::new(), 0usize)];
    while let Some((extent, size, path, depth)) = stack.pop() {
        c.check_dir_size(u64::from(size), &path)?;
        c.reserve_metadata(u64::from(size))?;
        let dir = read_extent(dev, &c, extent, size, "a directory")?;
        let mut pos = 0;
        while pos < dir.len() {
            let len = usize::from(dir[pos]);
            if len == 0 {
                // The rest of this sector is padding.
                pos = (pos / SECTOR + 1) * SECTOR;
                continue;
            }
            let rec = dir
                .get(pos..pos + len)
                .and_then(parse_record)
                .ok_or_else(|| c.corrupt(format!("bad directory record in {path:?}")))?;
            pos += len;
            if rec.id == [0] || rec.id == [1] {
                continue; // `.` and `..`
            }
            if rec.flags & 0x04 != 0 {
                continue; // associated file (Apple resource forks)
            }
            c.count_entry()?;
            let mut not_regular = None;
            let name = match names {
                Names::RockRidge { skip } => {
                    let rr = rock_ridge(dev, &mut c, rec.system_use, skip)?;
                    if rr.relocated {
                        continue;
                    }
                    not_regular = rr.not_regular();
                    match rr.name {
                        Some(n) => String::from_utf8_lossy(&n).into_owned(),
                        None => plain_name(rec.id),
                    }
                }
                Names::Joliet => joliet_name(&c, rec.id)?,
                Names::Plain => plain_name(rec.id),
            };
            let child = join_name(&c, &path, &name)?;
            if let Some(what) = not_regular.filter(|_| rec.flags & 0x02 == 0) {
                // Its (empty) extent is not its content: never read as a file.
                c.add_not_regular(child, what)?;
            } else if rec.flags & 0x02 != 0 {
                c.check_depth(depth + 1, &child)?;
                if !visited.insert(rec.extent) {
                    return Err(c.corrupt(format!("directory {child:?} loops back")));
                }
                stack.push((rec.extent, rec.size, child, depth + 1));
            } else {
                if rec.flags & 0x80 != 0 {
                    return Err(c.corrupt(format!("{child}: multi-extent files are not supported")));
                }
                c.reserve_file(u64::from(rec.size), &child)?;
                let data = read_extent(dev, &c, rec.extent, rec.size, &child)?;
                c.add_file(child, data)?;
            }
        }
    }
    Ok(Seed {
        kind: FsKind::Iso9660,
        label,
        files: c.files,
        not_regular: c.not_regular,
    })
}

/// Reads `size` bytes at block `extent`; the caller has checked `size`
/// against a limit.
fn read_extent<R: Read + Seek>(
    dev: &mut Device<R>,
    c: &Collector<'_>,
    extent: u32,
    size: u32,
    what: &str,
) -> Result<Vec<u8>, SeedError> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let at = u64::from(extent) * SECTOR as u64;
    let end = at.saturating_add(u64::from(size));
    if end > dev.len() {
        return Err(c.corrupt(format!("{what} lies past the end of the device")));
    }
    let mut buf = vec![0u8; size as usize];
    dev.read_at(at, &mut buf)
        .map_err(|e| c.read_error(e, what))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let t = Timestamp::new(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!(t.short, [123, 11, 14, 22, 13, 20, 0]);
        assert_eq!(&t.long[..16], b"2023111422132000");
        assert_eq!(Timestamp::new(i64::MIN).short[..3], [0, 1, 1]);
        assert_eq!(Timestamp::new(i64::MAX).short[0], 255);
    }

    #[test]
    fn level1_names_are_unique_8_3() {
        let files: Vec<(&str, &[u8])> = vec![
            ("meta-data", b""),
            ("network-config", b""),
            ("network-configuration", b""),
            ("user-data", b""),
        ];
        let ids: Vec<String> = level1_names(&files).iter().map(level1_id).collect();
        assert_eq!(
            ids,
            ["META_DAT.;1", "NETWORK_.;1", "NETWORK1.;1", "USER_DAT.;1"]
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            write_iso("", &[], 0),
            Err(IsoWriteError::BadVolumeId(String::new()))
        );
        assert_eq!(
            write_iso("cidata", &[("a/b", b"")], 0),
            Err(IsoWriteError::BadName("a/b".into()))
        );
        assert_eq!(
            write_iso("cidata", &[("..", b"")], 0),
            Err(IsoWriteError::BadName("..".into()))
        );
        assert_eq!(
            write_iso("cidata", &[("x", b"1"), ("x", b"2")], 0),
            Err(IsoWriteError::DuplicateName("x".into()))
        );
    }
}
