//! Makes qemu-img's outputs reproducible: the identifiers and timestamps it
//! draws at random or from the clock are replaced, in place, by values the
//! build derives from the disk (its GUID and `SOURCE_DATE_EPOCH`).
//!
//! - VMDK: the descriptor's content ID (`CID=`);
//! - VHD: the footer's time stamp and unique ID, and its checksum;
//! - VDI: the header's creation and modification UUIDs.
//!
//! VHDX is left as qemu-img writes it: its two headers and its metadata
//! carry random GUIDs and sequence numbers under CRC-32C checksums, and
//! rewriting those is more than this module does; the image cache keeps a
//! rebuild's VHDX identical all the same.

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
        bail!("{} is not a fixed VHD: its size is not whole sectors", path.display());
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
        bail!("{} is a VHD of type {disk_type}, not fixed (2)", path.display());
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
