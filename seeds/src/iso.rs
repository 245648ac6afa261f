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

use crate::civil::civil_from_days;
use crate::seedfs::{join_name, Collector, Device, FsKind, Limits, Seed, SeedError};

/// ISO9660 logical sector (and block) size.
pub const SECTOR: usize = 2048;

/// Longest file name [`write_iso`] accepts, so the Joliet name (with `;1`)
/// fits Joliet's 64 characters and every directory record its 255 bytes.
pub const MAX_NAME_LEN: usize = 62;

/// Why [`write_iso`] refused its input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsoWriteError {
    /// The volume label is empty, longer than 16 characters (the Joliet
    /// label's size) or has characters other than `A-Za-z0-9_-`.
    #[error("volume label {0:?} must be 1-16 characters of A-Z a-z 0-9 _ -")]
    BadVolumeId(String),
    /// A file name is empty, `.`/`..`, too long, or has characters other
    /// than `A-Za-z0-9._-`.
    #[error("file name {0:?} must be 1-62 characters of A-Z a-z 0-9 . _ - (not . or ..)")]
    BadName(String),
    /// Two files have the same name.
    #[error("file name {0:?} is given twice")]
    DuplicateName(String),
    /// A file or the whole image is larger than ISO9660 can address here.
    #[error("{0:?} is too large for a seed image")]
    TooLarge(String),
}

// Sector numbers of the fixed part of the layout.
const PVD_SECTOR: u32 = 16;
const JOLIET_SECTOR: u32 = 17;
const TERMINATOR_SECTOR: u32 = 18;
const PATH_L_SECTOR: u32 = 19;
const PATH_M_SECTOR: u32 = 20;
const JPATH_L_SECTOR: u32 = 21;
const JPATH_M_SECTOR: u32 = 22;
const CE_SECTOR: u32 = 23;
const ROOT_SECTOR: u32 = 24;

// Rock Ridge's registered extension identifier (RRIP 1.10, SUSP ER entry).
const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

const MODE_FILE: u32 = 0o100_444;
const MODE_DIR: u32 = 0o040_555;

/// Writes an ISO9660 image with Rock Ridge and Joliet holding `files` (name,
/// contents) in its root directory, labelled `volume_id`, with every
/// timestamp set to `epoch` (seconds since 1970, UTC; clamped to the years
/// 1900-2155 that directory records can hold).
///
/// Pure: the same arguments, in any order of `files`, give the same bytes.
pub fn write_iso(
    volume_id: &str,
    files: &[(&str, &[u8])],
    epoch: i64,
) -> Result<Vec<u8>, IsoWriteError> {
    let label_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if volume_id.is_empty() || volume_id.len() > 16 || !volume_id.chars().all(label_ok) {
        return Err(IsoWriteError::BadVolumeId(volume_id.to_owned()));
    }
    let mut sorted: Vec<(&str, &[u8])> = files.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, data)) in sorted.iter().enumerate() {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || *name == "."
            || *name == ".."
            || !name.chars().all(name_ok)
        {
            return Err(IsoWriteError::BadName((*name).to_owned()));
        }
        if i > 0 && sorted[i - 1].0 == *name {
            return Err(IsoWriteError::DuplicateName((*name).to_owned()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(IsoWriteError::TooLarge((*name).to_owned()));
        }
    }

    let iso_names = level1_names(&sorted);
    let time = Timestamp::new(epoch);

    // Directory record sizes do not depend on the extents, so a first pass
    // with zero extents gives the directory sizes, and with them the layout.
    let zero = vec![0u32; sorted.len()];
    let iso_dir_len = iso_root_dir(&sorted, &iso_names, &zero, 0, 0, &time).len();
    let joliet_dir_len = joliet_root_dir(&sorted, &zero, 0, 0, &time).len();
    let joliet_root = ROOT_SECTOR + sectors(iso_dir_len)?;
    let mut next = joliet_root + sectors(joliet_dir_len)?;
    let mut extents = Vec::with_capacity(sorted.len());
    for (name, data) in &sorted {
        if data.is_empty() {
            extents.push(0);
        } else {
            extents.push(next);
            next = next
                .checked_add(sectors(data.len())?)
                .ok_or_else(|| IsoWriteError::TooLarge((*name).to_owned()))?;
        }
    }
    let total_sectors = next;
    let image_len = (total_sectors as usize)
        .checked_mul(SECTOR)
        .ok_or_else(|| IsoWriteError::TooLarge("the image".to_owned()))?;

    let iso_dir = iso_root_dir(
        &sorted,
        &iso_names,
        &extents,
        ROOT_SECTOR,
        iso_dir_len as u32,
        &time,
    );
    let joliet_dir = joliet_root_dir(&sorted, &extents, joliet_root, joliet_dir_len as u32, &time);

    let mut img = vec![0u8; image_len];
    let mut put = |sector: u32, bytes: &[u8]| {
        let at = sector as usize * SECTOR;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    };
    let root = (ROOT_SECTOR, iso_dir_len as u32);
    let jroot = (joliet_root, joliet_dir_len as u32);
    put(
        PVD_SECTOR,
        &volume_descriptor(false, volume_id, total_sectors, root, &time),
    );
    put(
        JOLIET_SECTOR,
        &volume_descriptor(true, volume_id, total_sectors, jroot, &time),
    );
    let mut terminator = [0u8; 7];
    terminator[0] = 255;
    terminator[1..6].copy_from_slice(b"CD001");
    terminator[6] = 1;
    put(TERMINATOR_SECTOR, &terminator);
    put(PATH_L_SECTOR, &path_table(ROOT_SECTOR, false));
    put(PATH_M_SECTOR, &path_table(ROOT_SECTOR, true));
    put(JPATH_L_SECTOR, &path_table(joliet_root, false));
    put(JPATH_M_SECTOR, &path_table(joliet_root, true));
    put(CE_SECTOR, &er_entry());
    put(ROOT_SECTOR, &iso_dir);
    put(joliet_root, &joliet_dir);
    for ((_, data), extent) in sorted.iter().zip(&extents) {
        if !data.is_empty() {
            put(*extent, data);
        }
    }
    Ok(img)
}

/// Number of sectors `len` bytes occupy, as a sector count.
fn sectors(len: usize) -> Result<u32, IsoWriteError> {
    u32::try_from(len.div_ceil(SECTOR)).map_err(|_| IsoWriteError::TooLarge("the image".into()))
}

/// ISO9660 level 1 names (`USER_DAT.;1`) for names sorted by their real
/// name: upper case, `_` for anything but `A-Z0-9_`, 8.3, made unique by
/// replacing the end of the base name with a number.
fn level1_names(files: &[(&str, &[u8])]) -> Vec<(String, String)> {
    let d_chars = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    let mut used = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (name, _) in files {
        let (base, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
            _ => (*name, ""),
        };
        let base = d_chars(base, 8);
        let ext = d_chars(ext, 3);
        let mut candidate = (base.clone(), ext.clone());
        let mut n = 1u32;
        while !used.insert(candidate.clone()) {
            let suffix = n.to_string();
            let keep = 8usize.saturating_sub(suffix.len()).min(base.len());
            candidate = (format!("{}{suffix}", &base[..keep]), ext.clone());
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// The full identifier of a level 1 name.
fn level1_id((base, ext): &(String, String)) -> String {
    format!("{base}.{ext};1")
}

/// One timestamp in the encodings ISO9660 and Rock Ridge use.
struct Timestamp {
    /// Directory record / RRIP TF short form: years since 1900, month, day,
    /// hour, minute, second, UTC offset in 15-minute units.
    short: [u8; 7],
    /// Volume descriptor form: `YYYYMMDDHHMMSScc` and the UTC offset.
    long: [u8; 17],
}

impl Timestamp {
    fn new(epoch: i64) -> Self {
        const MIN: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
        const MAX: i64 = 5_869_583_999; // 2155-12-31T23:59:59Z: 255 years after 1900
        let t = epoch.clamp(MIN, MAX);
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let short = [
            (year - 1900) as u8,
            month as u8,
            day as u8,
            h as u8,
            m as u8,
            s as u8,
            0,
        ];
        let text = format!("{year:04}{month:02}{day:02}{h:02}{m:02}{s:02}00");
        let mut long = [0u8; 17];
        long[..16].copy_from_slice(text.as_bytes());
        Timestamp { short, long }
    }
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// A directory record (ECMA-119 9.1) with `su` as its system use area.
fn dir_record(
    extent: u32,
    size: u32,
    time: &Timestamp,
    dir: bool,
    id: &[u8],
    su: &[u8],
) -> Vec<u8> {
    let mut r = Vec::with_capacity(34 + id.len() + su.len());
    r.push(0); // length, set below
    r.push(0); // extended attribute record length
    r.extend_from_slice(&both32(extent));
    r.extend_from_slice(&both32(size));
    r.extend_from_slice(&time.short);
    r.push(if dir { 0x02 } else { 0x00 });
    r.push(0); // file unit size
    r.push(0); // interleave gap
    r.extend_from_slice(&both16(1)); // volume sequence number
    r.push(id.len() as u8);
    r.extend_from_slice(id);
    if id.len() & 1 == 0 {
        r.push(0); // padding so that the system use area starts even
    }
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

/// Packs directory records into whole sectors; a record never spans two.
fn pack_records(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for r in records {
        let used = out.len() % SECTOR;
        if used + r.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
        }
        out.extend_from_slice(r);
    }
    out.resize(out.len().div_ceil(SECTOR).max(1) * SECTOR, 0);
    out
}

fn susp_px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both32(mode));
    e.extend_from_slice(&both32(links));
    e.extend_from_slice(&both32(0)); // uid
    e.extend_from_slice(&both32(0)); // gid
    e
}

fn susp_tf(time: &Timestamp) -> Vec<u8> {
    // Flags: modification, access, attribute change; 7-byte form.
    let mut e = vec![b'T', b'F', 5 + 3 * 7, 1, 0x0E];
    for _ in 0..3 {
        e.extend_from_slice(&time.short);
    }
    e
}

fn susp_nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// The SUSP `ER` entry naming Rock Ridge, stored in the continuation area.
fn er_entry() -> Vec<u8> {
    let len = 8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len();
    let mut e = vec![
        b'E',
        b'R',
        len as u8,
        1,
        ER_ID.len() as u8,
        ER_DESCRIPTOR.len() as u8,
        ER_SOURCE.len() as u8,
        1,
    ];
    e.extend_from_slice(ER_ID);
    e.extend_from_slice(ER_DESCRIPTOR);
    e.extend_from_slice(ER_SOURCE);
    e
}

/// The ISO9660 root directory with Rock Ridge entries.
fn iso_root_dir(
    files: &[(&str, &[u8])],
    iso_names: &[(String, String)],
    extents: &[u32],
    self_extent: u32,
    self_size: u32,
    time: &Timestamp,
) -> Vec<u8> {
    // `.` of the root: SP first, then CE pointing at the ER entry.
    let mut dot = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    dot.extend_from_slice(&[b'C', b'E', 28, 1]);
    dot.extend_from_slice(&both32(CE_SECTOR));
    dot.extend_from_slice(&both32(0));
    dot.extend_from_slice(&both32(er_entry().len() as u32));
    dot.extend(susp_px(MODE_DIR, 2));
    dot.extend(susp_tf(time));
    let mut dotdot = susp_px(MODE_DIR, 2);
    dotdot.extend(susp_tf(time));

    let mut records = vec![
        dir_record(self_extent, self_size, time, true, &[0], &dot),
        dir_record(self_extent, self_size, time, true, &[1], &dotdot),
    ];
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| iso_names[a].cmp(&iso_names[b]));
    for i in order {
        let (name, data) = files[i];
        let mut su = susp_px(MODE_FILE, 1);
        su.extend(susp_nm(name));
        su.extend(susp_tf(time));
        let id = level1_id(&iso_names[i]);
        records.push(dir_record(
            extents[i],
            data.len() as u32,
            time,
            false,
            id.as_bytes(),
            &su,
        ));
    }
    pack_records(&records)
}

/// UCS-2 big endian, as Joliet stores names.
fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The Joliet root directory (files sorted by name already).
fn joliet_root_dir(
    files: &[(&str, &[u8])],
    extents: &[u32],
    self_extent: u32,
    self_size: u32,
    time: &Timestamp,
) -> Vec<u8> {
    let mut records = vec![
        dir_record(self_extent, self_size, time, true, &[0], &[]),
        dir_record(self_extent, self_size, time, true, &[1], &[]),
    ];
    for ((name, data), extent) in files.iter().zip(extents) {
        let id = ucs2(&format!("{name};1"));
        records.push(dir_record(
            *extent,
            data.len() as u32,
            time,
            false,
            &id,
            &[],
        ));
    }
    pack_records(&records)
}

/// A path table holding only the root directory.
fn path_table(root: u32, big_endian: bool) -> [u8; 10] {
    let (extent, parent) = if big_endian {
        (root.to_be_bytes(), 1u16.to_be_bytes())
    } else {
        (root.to_le_bytes(), 1u16.to_le_bytes())
    };
    [
        1, 0, extent[0], extent[1], extent[2], extent[3], parent[0], parent[1], 0, 0,
    ]
}

/// The primary (`joliet == false`) or Joliet supplementary volume descriptor.
fn volume_descriptor(
    joliet: bool,
    volume_id: &str,
    total_sectors: u32,
    (root_extent, root_size): (u32, u32),
    time: &Timestamp,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    // A text field: space padded, in ASCII or UCS-2.
    let text = |d: &mut Vec<u8>, at: usize, len: usize, s: &str| {
        let bytes = if joliet {
            ucs2(s)
        } else {
            s.as_bytes().to_vec()
        };
        let pad: &[u8] = if joliet { &[0, b' '] } else { b" " };
        let field = &mut d[at..at + len];
        for (i, b) in field.iter_mut().enumerate() {
            *b = match bytes.get(i) {
                Some(b) => *b,
                None => pad[(i - bytes.len()) % pad.len()],
            };
        }
    };
    d[0] = if joliet { 2 } else { 1 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    text(&mut d, 8, 32, "LINUX");
    text(&mut d, 40, 32, volume_id);
    d[80..88].copy_from_slice(&both32(total_sectors));
    if joliet {
        d[88..91].copy_from_slice(b"%/E"); // UCS-2 level 3
    }
    d[120..124].copy_from_slice(&both16(1)); // volume set size
    d[124..128].copy_from_slice(&both16(1)); // volume sequence number
    d[128..132].copy_from_slice(&both16(SECTOR as u16));
    d[132..140].copy_from_slice(&both32(10)); // path table size
    let (l, m) = if joliet {
        (JPATH_L_SECTOR, JPATH_M_SECTOR)
    } else {
        (PATH_L_SECTOR, PATH_M_SECTOR)
    };
    d[140..144].copy_from_slice(&l.to_le_bytes());
    d[148..152].copy_from_slice(&m.to_be_bytes());
    let root = dir_record(root_extent, root_size, time, true, &[0], &[]);
    d[156..156 + root.len()].copy_from_slice(&root);
    for (at, len) in [(190, 128), (318, 128), (446, 128)] {
        text(&mut d, at, len, ""); // volume set, publisher, data preparer
    }
    text(&mut d, 574, 128, "IMGBUILD");
    for at in [702, 739, 776] {
        text(&mut d, at, 37, ""); // copyright, abstract, bibliographic files
    }
    d[813..830].copy_from_slice(&time.long); // creation
    d[830..847].copy_from_slice(&time.long); // modification
    d[847..863].copy_from_slice(b"0000000000000000"); // expiration: none
    d[864..880].copy_from_slice(b"0000000000000000"); // effective: none
    d[881] = 1; // file structure version
    d
}

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
