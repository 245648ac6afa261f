//! Makes qemu-img's outputs reproducible: the identifiers and timestamps it
//! draws at random or from the clock are replaced, in place, by values the
//! build derives from the disk (its GUID and `SOURCE_DATE_EPOCH`).
//!
//! - VMDK: the descriptor's content ID (`CID=`);
//! - VHD: the footer's time stamp and unique ID, and its checksum;
//! - VDI: the header's creation and modification UUIDs;
//! - VHDX: both headers' write GUIDs and sequence numbers, the stale log
//!   entry's GUID and the disk's page 83 ID, and the CRC-32C checksums of
//!   the headers and the log entry (CRC-32C written here: eight lines, where
//!   a crate would be a dependency for one checksum).
//!
//! Each checks the structure it edits (signatures, and for VHDX that the
//! stored checksums are what it computes) and refuses anything else.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

fn open_rw(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Replaces the random content ID qemu-img writes into a VMDK's descriptor
/// (`CID=xxxxxxxx`) with `cid`, so the same input gives the same bytes.
pub fn set_vmdk_cid(path: &Path, cid: u32) -> Result<()> {
    let f = open_rw(path)?;
    // The sparse extent's header names the descriptor's place: offset and
    // size in sectors, at bytes 28 and 36 (little-endian u64).
    let mut header = [0u8; 512];
    f.read_exact_at(&mut header, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    if &header[..4] != b"KDMV" {
        bail!("{} is not a sparse VMDK extent", path.display());
    }
    let sectors = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let (offset, size) = (sectors(28) * 512, sectors(36) * 512);
    if offset == 0 || size == 0 || size > 1 << 20 {
        bail!("the VMDK's header has no embedded descriptor");
    }
    let mut region = vec![0u8; size as usize];
    f.read_exact_at(&mut region, offset)?;
    let end = region.iter().position(|&b| b == 0).unwrap_or(region.len());
    let text = String::from_utf8_lossy(&region[..end]).into_owned();
    // qemu-img writes the CID without leading zeros (`CID=%x`).
    let mut found = false;
    let new: String = text
        .split_inclusive('\n')
        .map(|l| match l.strip_prefix("CID=") {
            Some(v) if !found && v.trim_end().chars().all(|c| c.is_ascii_hexdigit()) => {
                found = true;
                format!("CID={cid:08x}\n")
            }
            _ => l.to_string(),
        })
        .collect();
    if !found {
        bail!("the VMDK has no CID line in its descriptor");
    }
    if new.len() > region.len() {
        bail!("the VMDK's descriptor has no room for its CID");
    }
    let mut out = new.into_bytes();
    out.resize(region.len(), 0);
    f.write_all_at(&out, offset)?;
    f.sync_all()?;
    Ok(())
}

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: i64 = 946_684_800;

/// Sets a fixed VHD's footer (its last 512 bytes): the time stamp to
/// `epoch` (Unix seconds, clamped to the VHD epoch), the unique ID to
/// `uuid`, and the checksum again. Refuses a file that is not a fixed VHD.
pub fn set_vhd_identity(path: &Path, uuid: [u8; 16], epoch: i64) -> Result<()> {
    let f = open_rw(path)?;
    let len = f.metadata()?.len();
    if len < 512 || len % 512 != 0 {
        bail!(
            "{} is not a fixed VHD: its size is not whole sectors",
            path.display()
        );
    }
    let at = len - 512;
    let mut footer = [0u8; 512];
    f.read_exact_at(&mut footer, at)
        .with_context(|| format!("reading {}", path.display()))?;
    if &footer[..8] != b"conectix" {
        bail!("{} has no VHD footer", path.display());
    }
    let disk_type = u32::from_be_bytes(footer[60..64].try_into().expect("4 bytes"));
    if disk_type != 2 {
        bail!(
            "{} is a VHD of type {disk_type}, not fixed (2)",
            path.display()
        );
    }
    let stamp = (epoch - VHD_EPOCH).clamp(0, u32::MAX as i64) as u32;
    footer[24..28].copy_from_slice(&stamp.to_be_bytes());
    footer[68..84].copy_from_slice(&uuid);
    let sum = vhd_checksum(&footer);
    footer[64..68].copy_from_slice(&sum.to_be_bytes());
    f.write_all_at(&footer, at)?;
    f.sync_all()?;
    Ok(())
}

/// The footer's checksum: the one's complement of the sum of its bytes,
/// the checksum field (bytes 64..68) left out.
pub fn vhd_checksum(footer: &[u8; 512]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(*b as u32));
    !sum
}

/// Sets a VDI's creation and modification UUIDs (header bytes 0x188 and
/// 0x198) to `uuid`.
pub fn set_vdi_identity(path: &Path, uuid: [u8; 16]) -> Result<()> {
    let f = open_rw(path)?;
    let mut header = [0u8; 0x1c8];
    f.read_exact_at(&mut header, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if word(0x40) != 0xbeda_107f {
        bail!("{} is not a VDI image", path.display());
    }
    if word(0x44) != 0x0001_0001 {
        bail!(
            "{} is a VDI of version {:#x}, not 1.1",
            path.display(),
            word(0x44)
        );
    }
    f.write_all_at(&uuid, 0x188)?;
    f.write_all_at(&uuid, 0x198)?;
    f.sync_all()?;
    Ok(())
}

/// CRC-32C (Castagnoli, reflected), as VHDX checksums its structures.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// `data`'s CRC-32C with its checksum field (bytes 4..8) taken as zero.
fn vhdx_checksum(data: &[u8]) -> u32 {
    let mut d = data.to_vec();
    d[4..8].fill(0);
    crc32c(&d)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A GUID for `what`, derived from `uuid`.
fn derive(uuid: [u8; 16], what: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(uuid);
    h.update(what.as_bytes());
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// The metadata item of the disk's SCSI page 83 ID (its GUID as stored).
const PAGE83_ITEM: [u8; 16] = [
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
];
/// The region table's entry of the metadata region.
const METADATA_REGION: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];

/// Sets what qemu-img draws at random in a VHDX to values derived from
/// `uuid`: in both headers (64 and 128 KiB) the file and data write GUIDs
/// and the sequence numbers (1 and 2, in qemu-img's order), the GUID of
/// every log entry qemu-img leaves (unreferenced: the headers' log GUID is
/// zero), the page 83 ID in the metadata; and the checksums again.
pub fn set_vhdx_identity(path: &Path, uuid: [u8; 16]) -> Result<()> {
    let f = open_rw(path)?;
    let read = |at: u64, len: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, at)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(b)
    };
    if &read(0, 8)?[..] != b"vhdxfile" {
        bail!("{} is not a VHDX file", path.display());
    }
    const H: [u64; 2] = [64 << 10, 128 << 10];
    let mut headers = Vec::new();
    for at in H {
        let h = read(at, 4096)?;
        if &h[..4] != b"head" || le32(&h, 4) != vhdx_checksum(&h) {
            bail!("{}: the VHDX header at {at} is not valid", path.display());
        }
        if h[48..64] != [0; 16] {
            bail!("{}: the VHDX has a log to replay", path.display());
        }
        headers.push(h);
    }
    let second_newer = le64(&headers[1], 8) > le64(&headers[0], 8);
    let log_offset = le64(&headers[0], 72);
    let headers_log = headers[0].clone();
    for (i, (at, mut h)) in H.into_iter().zip(headers).enumerate() {
        let seq = if (i == 1) == second_newer { 2u64 } else { 1 };
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&derive(uuid, "file-write"));
        h[32..48].copy_from_slice(&derive(uuid, &format!("data-write-{i}")));
        let sum = vhdx_checksum(&h);
        h[4..8].copy_from_slice(&sum.to_le_bytes());
        f.write_all_at(&h, at)?;
    }
    // The log entries qemu-img left (one per metadata write it logged), all
    // stale: the headers' log GUID is zero.
    let log_len = le32(&headers_log, 68) as u64;
    let mut at = log_offset;
    while at + 4096 <= log_offset + log_len {
        let e = read(at, 4096)?;
        if &e[..4] != b"loge" {
            at += 4096;
            continue;
        }
        let len = le32(&e, 8) as u64;
        if len < 4096 || len & 4095 != 0 || at + len > log_offset + log_len {
            bail!(
                "{}: a VHDX log entry's length {len} is not valid",
                path.display()
            );
        }
        let mut e = read(at, len as usize)?;
        if le32(&e, 4) != vhdx_checksum(&e) {
            bail!(
                "{}: a VHDX log entry's checksum is not valid",
                path.display()
            );
        }
        e[32..48].copy_from_slice(&derive(uuid, "log"));
        let sum = vhdx_checksum(&e);
        e[4..8].copy_from_slice(&sum.to_le_bytes());
        f.write_all_at(&e, at)?;
        at += len;
    }
    // The region table (192 KiB) → the metadata region → its page 83 item.
    let rt = read(192 << 10, 64 << 10)?;
    if &rt[..4] != b"regi" {
        bail!("{}: no VHDX region table", path.display());
    }
    let regions = le32(&rt, 8) as usize;
    let meta = (0..regions.min(2047))
        .map(|i| &rt[16 + 32 * i..48 + 32 * i])
        .find(|r| r[..16] == METADATA_REGION)
        .map(|r| le64(r, 16))
        .with_context(|| format!("{}: no VHDX metadata region", path.display()))?;
    let table = read(meta, 64 << 10)?;
    if &table[..8] != b"metadata" {
        bail!("{}: no VHDX metadata table", path.display());
    }
    let items = u16::from_le_bytes([table[10], table[11]]) as usize;
    let page83 = (0..items.min(2047))
        .map(|i| &table[32 + 32 * i..64 + 32 * i])
        .find(|it| it[..16] == PAGE83_ITEM)
        .map(|it| (le32(it, 16), le32(it, 20)))
        .with_context(|| format!("{}: the VHDX has no page 83 ID", path.display()))?;
    if page83.1 != 16 {
        bail!("{}: the VHDX page 83 ID is not 16 bytes", path.display());
    }
    f.write_all_at(&derive(uuid, "page83"), meta + page83.0 as u64)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn vmdk_cid_is_set_whatever_its_width() {
        // A sparse extent header naming a one-sector descriptor at sector 1,
        // whose CID qemu-img wrote without leading zeros.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.vmdk");
        let mut img = vec![0u8; 1024];
        img[..4].copy_from_slice(b"KDMV");
        img[28..36].copy_from_slice(&1u64.to_le_bytes());
        img[36..44].copy_from_slice(&1u64.to_le_bytes());
        let desc = b"# Disk DescriptorFile\nversion=1\nCID=abc\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n";
        img[512..512 + desc.len()].copy_from_slice(desc);
        fs::write(&p, &img).unwrap();
        set_vmdk_cid(&p, 0x0123_4567).unwrap();
        let after = fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&after[512..]);
        assert!(
            text.starts_with("# Disk DescriptorFile\nversion=1\nCID=01234567\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\0"),
            "{text:?}"
        );
        assert_eq!(after.len(), 1024);
        set_vmdk_cid(&p, 0xdead_beef).unwrap();
        assert!(String::from_utf8_lossy(&fs::read(&p).unwrap())
            .contains("\nCID=deadbeef\nparentCID=ffffffff\n"));
        fs::write(&p, b"not a vmdk").unwrap();
        assert!(set_vmdk_cid(&p, 1).is_err());
    }

    #[test]
    fn vhd_footer_gets_the_stamp_the_uuid_and_a_valid_checksum() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.vhd");
        let mut img = vec![0u8; 1024 + 512];
        let f = &mut img[1024..];
        f[..8].copy_from_slice(b"conectix");
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        f[68..84].copy_from_slice(&[0x55; 16]);
        fs::write(&p, &img).unwrap();
        set_vhd_identity(&p, [7; 16], VHD_EPOCH + 1000).unwrap();
        let after = fs::read(&p).unwrap();
        let footer: [u8; 512] = after[1024..].try_into().unwrap();
        assert_eq!(&footer[24..28], &1000u32.to_be_bytes());
        assert_eq!(&footer[68..84], &[7; 16]);
        let stored = u32::from_be_bytes(footer[64..68].try_into().unwrap());
        assert_eq!(stored, vhd_checksum(&footer));
        assert_ne!(stored, 0);
        // Dynamic (3) is refused, and so is a file with no footer.
        let mut dynamic = img.clone();
        dynamic[1024 + 63] = 3;
        fs::write(&p, &dynamic).unwrap();
        let e = set_vhd_identity(&p, [7; 16], 0).unwrap_err();
        assert!(e.to_string().contains("not fixed"), "{e}");
        fs::write(&p, vec![0u8; 1024]).unwrap();
        assert!(set_vhd_identity(&p, [7; 16], 0).is_err());
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn vdi_uuids_are_set() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.vdi");
        let mut img = vec![0u8; 1024];
        img[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        img[0x44..0x48].copy_from_slice(&0x0001_0001u32.to_le_bytes());
        fs::write(&p, &img).unwrap();
        set_vdi_identity(&p, [9; 16]).unwrap();
        let after = fs::read(&p).unwrap();
        assert_eq!(&after[0x188..0x198], &[9; 16]);
        assert_eq!(&after[0x198..0x1a8], &[9; 16]);
        assert_eq!(&after[0x1a8..0x1b8], &[0; 16], "linkage untouched");
        fs::write(&p, vec![0u8; 1024]).unwrap();
        assert!(set_vdi_identity(&p, [9; 16]).is_err());
    }
}
