//! The ISO9660 writer: Rock Ridge and Joliet, one root directory, every
//! byte a function of its input ([`write_iso`]).

use super::*;
use crate::civil::civil_from_days;

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
pub(super) const PVD_SECTOR: u32 = 16;
pub(super) const JOLIET_SECTOR: u32 = 17;
pub(super) const TERMINATOR_SECTOR: u32 = 18;
pub(super) const PATH_L_SECTOR: u32 = 19;
pub(super) const PATH_M_SECTOR: u32 = 20;
pub(super) const JPATH_L_SECTOR: u32 = 21;
pub(super) const JPATH_M_SECTOR: u32 = 22;
pub(super) const CE_SECTOR: u32 = 23;
pub(super) const ROOT_SECTOR: u32 = 24;

// Rock Ridge's registered extension identifier (RRIP 1.10, SUSP ER entry).
pub(super) const ER_ID: &[u8] = b"RRIP_1991A";
pub(super) const ER_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
pub(super) const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

pub(super) const MODE_FILE: u32 = 0o100_444;
pub(super) const MODE_DIR: u32 = 0o040_555;

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
pub(super) fn sectors(len: usize) -> Result<u32, IsoWriteError> {
    u32::try_from(len.div_ceil(SECTOR)).map_err(|_| IsoWriteError::TooLarge("the image".into()))
}

/// ISO9660 level 1 names (`USER_DAT.;1`) for names sorted by their real
/// name: upper case, `_` for anything but `A-Z0-9_`, 8.3, made unique by
/// replacing the end of the base name with a number.
pub(super) fn level1_names(files: &[(&str, &[u8])]) -> Vec<(String, String)> {
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
pub(super) fn level1_id((base, ext): &(String, String)) -> String {
    format!("{base}.{ext};1")
}

/// One timestamp in the encodings ISO9660 and Rock Ridge use.
pub(super) struct Timestamp {
    /// Directory record / RRIP TF short form: years since 1900, month, day,
    /// hour, minute, second, UTC offset in 15-minute units.
    pub(super) short: [u8; 7],
    /// Volume descriptor form: `YYYYMMDDHHMMSScc` and the UTC offset.
    pub(super) long: [u8; 17],
}

impl Timestamp {
    pub(super) fn new(epoch: i64) -> Self {
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

pub(super) fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

pub(super) fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// A directory record (ECMA-119 9.1) with `su` as its system use area.
pub(super) fn dir_record(
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
pub(super) fn pack_records(records: &[Vec<u8>]) -> Vec<u8> {
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

pub(super) fn susp_px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both32(mode));
    e.extend_from_slice(&both32(links));
    e.extend_from_slice(&both32(0)); // uid
    e.extend_from_slice(&both32(0)); // gid
    e
}

pub(super) fn susp_tf(time: &Timestamp) -> Vec<u8> {
    // Flags: modification, access, attribute change; 7-byte form.
    let mut e = vec![b'T', b'F', 5 + 3 * 7, 1, 0x0E];
    for _ in 0..3 {
        e.extend_from_slice(&time.short);
    }
    e
}

pub(super) fn susp_nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// The SUSP `ER` entry naming Rock Ridge, stored in the continuation area.
pub(super) fn er_entry() -> Vec<u8> {
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
pub(super) fn iso_root_dir(
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
pub(super) fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The Joliet root directory (files sorted by name already).
pub(super) fn joliet_root_dir(
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
pub(super) fn path_table(root: u32, big_endian: bool) -> [u8; 10] {
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
pub(super) fn volume_descriptor(
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
