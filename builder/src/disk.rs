//! The disk's partition table: a protective MBR and a GPT with a BIOS boot
//! partition, an ESP and the root partition, in that order (root last, so the
//! first boot can grow it to the end of the disk).
//!
//! Everything is 1 MiB aligned. GUIDs come from the build's identity (a hash),
//! never from a random source, so the same inputs give the same bytes.
//! The table is written in process with `gptman`, which writes the primary
//! and the backup header and array.

use std::fmt;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Logical sector size of the images we write.
pub const SECTOR: u64 = 512;
/// Alignment of every partition (and of the disk's size).
pub const MIB: u64 = 1 << 20;
/// Size of the BIOS boot partition that holds GRUB's core.img.
pub const BIOS_BOOT_SIZE: u64 = MIB;
/// Default size of the EFI system partition.
pub const ESP_SIZE: u64 = 64 * MIB;
/// Space left after the root partition: the backup GPT (33 sectors), rounded up
/// so the disk stays a whole number of MiB.
pub const TAIL_SIZE: u64 = MIB;
/// Where the first partition starts.
pub const FIRST_PARTITION: u64 = MIB;

/// A GUID/UUID, stored as its 16 bytes in the canonical (big-endian) order of
/// its text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub const fn parse(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "a GUID has 36 characters");
        let mut out = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            out[n] = hexval(b[i]) << 4 | hexval(b[i + 1]);
            n += 1;
            i += 2;
        }
        assert!(n == 16, "a GUID has 32 hex digits");
        Guid(out)
    }

    /// A GUID derived from `identity` and a `purpose` (e.g. "root-fs"): the
    /// first 16 bytes of sha256, with the RFC 9562 version 8 ("custom") and
    /// variant bits set.
    pub fn derive(identity: &[u8], purpose: &str) -> Guid {
        let h = Sha256::new()
            .chain_update(b"imgbuild-guid\0")
            .chain_update(identity)
            .chain_update([0])
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// The on-disk (mixed-endian) byte order GPT uses: the first three fields
    /// little-endian, the rest as is.
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// The inverse of [`Guid::to_gpt_bytes`].
    pub fn from_gpt_bytes(b: [u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(b).to_gpt_bytes())
    }
}

const fn hexval(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Guid {
    type Err = String;

    /// Parses the text form, refusing anything else (unlike [`Guid::parse`],
    /// which is for constants).
    fn from_str(s: &str) -> Result<Guid, String> {
        let b = s.as_bytes();
        let well_formed = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        if well_formed {
            Ok(Guid::parse(s))
        } else {
            Err(format!("{s:?} is not a GUID"))
        }
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// GPT partition type: BIOS boot partition (GRUB's core.img).
pub const TYPE_BIOS_BOOT: Guid = Guid::parse("21686148-6449-6e6f-744e-656564454649");
/// GPT partition type: EFI system partition.
pub const TYPE_ESP: Guid = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
/// GPT partition type: Linux root (x86-64), per the Discoverable Partitions Specification.
pub const TYPE_ROOT_X86_64: Guid = Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");

/// One partition of the layout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// GPT entry number (1-based).
    pub number: u32,
    /// GPT partition name.
    pub name: String,
    #[serde(rename = "type")]
    pub type_guid: Guid,
    #[serde(rename = "guid")]
    pub unique_guid: Guid,
    /// Byte offset of the first byte.
    pub offset: u64,
    /// Size in bytes (a multiple of [`SECTOR`]).
    pub size: u64,
}

impl Partition {
    pub fn start_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn end_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// The whole disk: its size, GUID and partitions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub size: u64,
    pub disk_guid: Guid,
    pub bios_boot: Partition,
    pub esp: Partition,
    pub root: Partition,
}

impl Layout {
    /// Plans a disk for an ESP of `esp_size` and a root fs of `root_size`
    /// bytes (both rounded up to MiB); GUIDs derive from `identity`.
    pub fn plan(identity: &[u8], esp_size: u64, root_size: u64) -> Layout {
        let esp_size = round_up(esp_size, MIB);
        let root_size = round_up(root_size, MIB);
        let bios_boot = Partition {
            number: 1,
            name: "bios-boot".into(),
            type_guid: TYPE_BIOS_BOOT,
            unique_guid: Guid::derive(identity, "part-bios-boot"),
            offset: FIRST_PARTITION,
            size: BIOS_BOOT_SIZE,
        };
        let esp = Partition {
            number: 2,
            name: "esp".into(),
            type_guid: TYPE_ESP,
            unique_guid: Guid::derive(identity, "part-esp"),
            offset: bios_boot.offset + bios_boot.size,
            size: esp_size,
        };
        let root = Partition {
            number: 3,
            name: "root".into(),
            type_guid: TYPE_ROOT_X86_64,
            unique_guid: Guid::derive(identity, "part-root"),
            offset: esp.offset + esp.size,
            size: root_size,
        };
        Layout {
            size: root.offset + root.size + TAIL_SIZE,
            disk_guid: Guid::derive(identity, "disk"),
            bios_boot,
            esp,
            root,
        }
    }

    pub fn partitions(&self) -> [&Partition; 3] {
        [&self.bios_boot, &self.esp, &self.root]
    }
}

pub fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Writes the protective MBR (bytes 446..512 of sector 0, leaving the boot
/// code area alone) and both GPT copies into `disk`, which must already have
/// the layout's size. Refuses anything that is not a regular file.
pub fn write_table(disk: &mut File, layout: &Layout) -> Result<()> {
    let meta = disk.metadata().context("reading the image's metadata")?;
    if !meta.file_type().is_file() {
        bail!("refusing to write a partition table to something that is not a regular file");
    }
    if meta.len() != layout.size {
        bail!(
            "the image is {} bytes, the layout wants {}",
            meta.len(),
            layout.size
        );
    }
    let mut gpt = gptman::GPT::new_from(disk, SECTOR, layout.disk_guid.to_gpt_bytes())
        .context("creating the GPT")?;
    gpt.align = MIB / SECTOR;
    for p in layout.partitions() {
        if p.offset & (MIB - 1) != 0 || p.size & (MIB - 1) != 0 {
            bail!("partition {} is not MiB aligned", p.name);
        }
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_guid.to_gpt_bytes(),
            unique_partition_guid: p.unique_guid.to_gpt_bytes(),
            starting_lba: p.start_lba(),
            ending_lba: p.end_lba(),
            attribute_bits: 0,
            partition_name: p.name.as_str().into(),
        };
    }
    if layout.root.end_lba() > gpt.header.last_usable_lba {
        bail!("the root partition ends past the last usable sector");
    }
    gpt.write_into(disk).context("writing the GPT")?;
    gptman::GPT::write_protective_mbr_into(disk, SECTOR).context("writing the protective MBR")?;
    disk.flush()?;
    disk.seek(SeekFrom::Start(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip_and_gpt_order() {
        let g = TYPE_ESP;
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        let b = g.to_gpt_bytes();
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(Guid::from_gpt_bytes(b), g);
    }

    #[test]
    fn derived_guids_are_stable_and_distinct() {
        let a = Guid::derive(b"x", "disk");
        assert_eq!(a, Guid::derive(b"x", "disk"));
        assert_ne!(a, Guid::derive(b"y", "disk"));
        assert_ne!(a, Guid::derive(b"x", "root"));
        assert_eq!(a.0[6] >> 4, 8, "version 8");
        assert_eq!(a.0[8] >> 6, 0b10, "RFC variant");
    }

    #[test]
    fn layout_is_aligned_and_root_is_last() {
        let l = Layout::plan(b"id", 64 * MIB, 700 * MIB + 1);
        assert_eq!(l.bios_boot.offset, MIB);
        assert_eq!(l.esp.offset, 2 * MIB);
        assert_eq!(l.root.offset, 66 * MIB);
        assert_eq!(l.root.size, 701 * MIB);
        assert_eq!(l.size, (66 + 701 + 1) * MIB);
        for p in l.partitions() {
            assert_eq!(p.offset % MIB, 0);
        }
    }

    #[test]
    fn table_reads_back_with_backup_at_the_end() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk.raw");
        let l = Layout::plan(b"id", 64 * MIB, 100 * MIB);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(l.size).unwrap();
        write_table(&mut f, &l).unwrap();
        let gpt = gptman::GPT::read_from(&mut f, SECTOR).unwrap();
        assert_eq!(gpt.header.backup_lba, l.size / SECTOR - 1);
        assert_eq!(gpt[3].starting_lba, l.root.start_lba());
        assert_eq!(
            Guid::from_gpt_bytes(gpt[3].partition_type_guid),
            TYPE_ROOT_X86_64
        );
        assert_eq!(Guid::from_gpt_bytes(gpt.header.disk_guid), l.disk_guid);
        // The backup header is readable on its own.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[512..1024].fill(0);
        let backup = gptman::GPT::read_from(&mut std::io::Cursor::new(bytes), SECTOR).unwrap();
        assert!(backup.is_backup());
        assert_eq!(backup[2].ending_lba, l.esp.end_lba());
    }

    #[test]
    fn refuses_non_regular_files() {
        let mut f = File::open("/dev/null").unwrap();
        let l = Layout::plan(b"id", 64 * MIB, 100 * MIB);
        let err = write_table(&mut f, &l).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
