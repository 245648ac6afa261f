//! Partition-table edits on a disk (a block device, or an image file in
//! tests), under an exclusive `flock` on the whole disk — the lock udev and
//! systemd-repart honour, so nothing probes the disk half-written.
//!
//! All table actions of a plan are committed together, in one GPT update
//! whose write order keeps a valid table on disk at every moment:
//!
//! 1. the backup entry array, then the backup header, at the disk's (new)
//!    end; fsync. A crash here leaves the old primary table, which is valid
//!    and still names the old backup: the next boot plans the same edit.
//! 2. the primary entry array, then the primary header (the header's CRC
//!    covers the array, so the header is the commit record); fsync. Until
//!    the header sector is written the old primary stays self-consistent
//!    except for the array sectors written just before it; firmware and
//!    GRUB then use the backup written in step 1, which already holds the
//!    new table. (The Linux kernel only falls back to the backup with the
//!    `gpt` command-line option, which imgbuild's images carry; the window
//!    is two sector writes long.)
//! 3. the protective MBR's size field, when the disk grew (one sector).
//!
//! An MBR edit is one 512-byte sector write.
//!
//! New partitions are written with their final type and name. The volume
//! itself is committed later by its filesystem label (see `volumes`), so a
//! partition without a finished filesystem is recognised and formatted again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use gptman::{GPTPartitionEntry, GPT};
use sha2::{Digest, Sha256};

use crate::blkpg;
use crate::plan::{Action, Volume};

/// GPT type "Linux filesystem data" (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
pub const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// An open disk, locked exclusively until dropped.
///
/// A block device is opened read-only, and only [`DiskFile::make_writable`]
/// (which [`commit`] calls) reopens it for writing: udev watches disks
/// (`OPTIONS+="watch"`) and re-probes the disk and every partition when a
/// descriptor opened for writing is closed, so a boot with nothing to write
/// must not open one. The lock stays on the first descriptor.
#[derive(Debug)]
pub struct DiskFile {
    pub path: PathBuf,
    /// Reads (and, once writable, writes) go through this descriptor.
    pub file: File,
    pub sector_size: u64,
    pub bytes: u64,
    block: bool,
    writable: bool,
    /// The locked read-only descriptor, kept open once `file` was reopened
    /// for writing.
    _locked: Option<File>,
}

fn lock_exclusive(f: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a valid descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(())
}

/// Opens `path` for reading and writing, with its metadata.
fn open_rw(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the metadata of {}", path.display()))?;
    Ok((file, meta))
}

impl DiskFile {
    /// Opens a real disk (must be a block device), read-only and locked.
    pub fn open_device(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading the metadata of {}", path.display()))?;
        ensure!(
            meta.file_type().is_block_device(),
            "{} is not a block device",
            path.display()
        );
        lock_exclusive(&file, path)?;
        let sector_size = blkpg::sector_size(&file).context("reading the sector size")?;
        let bytes = blkpg::device_bytes(&file).context("reading the disk size")?;
        Ok(DiskFile {
            path: path.into(),
            file,
            sector_size,
            bytes,
            block: true,
            writable: false,
            _locked: None,
        })
    }

    /// Reopens a read-only disk for writing (the lock stays held).
    pub fn make_writable(&mut self) -> Result<()> {
        if self.writable {
            return Ok(());
        }
        let (rw, _) = open_rw(&self.path)?;
        self._locked = Some(std::mem::replace(&mut self.file, rw));
        self.writable = true;
        Ok(())
    }

    /// Whether writes are possible (see [`DiskFile::make_writable`]).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Opens a disk image file. Refuses block devices: this is the
    /// constructor tests use, and it must never touch a real disk.
    pub fn open_image(path: &Path, sector_size: u64) -> Result<Self> {
        let (file, meta) = open_rw(path)?;
        ensure!(
            meta.file_type().is_file(),
            "{} is not a regular file; refusing to treat it as an image",
            path.display()
        );
        lock_exclusive(&file, path)?;
        Ok(DiskFile {
            path: path.into(),
            file,
            sector_size,
            bytes: meta.len(),
            block: false,
            writable: true,
            _locked: None,
        })
    }

    pub fn is_block_device(&self) -> bool {
        self.block
    }

    pub fn sectors(&self) -> u64 {
        self.bytes / self.sector_size
    }

    /// Reads the GPT (the primary, or the backup when the primary is bad).
    ///
    /// gptman reads a header, then each of the (usually 128) entries with a
    /// seek and a read of its own; through [`Chunks`] that is three reads of
    /// the disk instead of several hundred system calls (each one costly on
    /// an emulated machine at boot).
    pub fn read_gpt(&mut self) -> Result<GPT> {
        GPT::read_from(&mut Chunks::new(&self.file, self.bytes), self.sector_size)
            .with_context(|| format!("reading the GPT of {}", self.path.display()))
    }

    fn put(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        ensure!(
            self.writable,
            "{} is open read-only (make_writable first)",
            self.path.display()
        );
        self.file
            .write_all_at(bytes, offset)
            .with_context(|| format!("writing {} at byte {offset}", self.path.display()))
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

/// A read-only `Read + Seek` view of a file or disk that reads aligned
/// [`Chunks::SIZE`] chunks with `pread` and serves small reads from them.
/// Made for one parse (a fresh one per table read), so it never serves
/// bytes older than the parse.
pub struct Chunks<'f> {
    file: &'f File,
    len: u64,
    pos: u64,
    /// Chunks read so far, by start offset (a table read touches 2 or 3).
    cache: BTreeMap<u64, Vec<u8>>,
}

impl<'f> Chunks<'f> {
    pub const SIZE: u64 = 64 * 1024;

    pub fn new(file: &'f File, len: u64) -> Self {
        Chunks {
            file,
            len,
            pos: 0,
            cache: BTreeMap::new(),
        }
    }

    fn chunk(&mut self, start: u64) -> io::Result<&[u8]> {
        if !self.cache.contains_key(&start) {
            let want = Self::SIZE.min(self.len.saturating_sub(start)) as usize;
            let mut buf = vec![0u8; want];
            let mut got = 0;
            while got < want {
                match self.file.read_at(&mut buf[got..], start + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            self.cache.insert(start, buf);
        }
        Ok(&self.cache[&start])
    }
}

impl io::Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let start = self.pos - self.pos % Self::SIZE;
        let skip = (self.pos - start) as usize;
        let chunk = self.chunk(start)?;
        let n = chunk.len().saturating_sub(skip).min(out.len());
        out[..n].copy_from_slice(&chunk[skip..skip + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Chunks<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// The deterministic unique GUID of a volume's partition on a disk: the same
/// disk and volume always give the same GUID (a redo writes the same bytes).
pub fn partition_guid(disk_guid: &[u8; 16], volume: Volume) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(disk_guid);
    h.update(volume.label().as_bytes());
    let mut g: [u8; 16] = h.finalize()[..16].try_into().unwrap();
    g[7] = (g[7] & 0x0F) | 0x40; // version 4 (time_hi is little-endian on disk)
    g[8] = (g[8] & 0x3F) | 0x80; // RFC 4122 variant
    g
}

/// Applies the table actions (in order) to the disk in one commit.
pub fn commit(disk: &mut DiskFile, actions: &[&Action]) -> Result<()> {
    use crate::plan::TableKind;
    if actions.is_empty() {
        return Ok(());
    }
    disk.make_writable()?;
    let mbr = actions.iter().any(|a| {
        matches!(
            a,
            Action::GrowPartition {
                table: TableKind::Mbr,
                ..
            }
        )
    });
    if mbr {
        for a in actions {
            if let Action::GrowPartition {
                number,
                start,
                from_end,
                to_end,
                ..
            } = a
            {
                grow_mbr(disk, *number, *start, *from_end, *to_end)?;
            }
        }
        return Ok(());
    }
    commit_gpt(disk, actions)
}

fn changed(what: String) -> anyhow::Error {
    anyhow::anyhow!("the partition table changed since it was read ({what}); nothing written")
}

fn commit_gpt(disk: &mut DiskFile, actions: &[&Action]) -> Result<()> {
    let mut gpt = disk.read_gpt()?;
    let repair = actions
        .iter()
        .any(|a| matches!(a, Action::RepairPrimaryGpt { .. }));
    if !gpt.is_primary() {
        if !repair {
            return Err(changed("the primary GPT became unreadable".into()));
        }
        // gptman read the backup at the last sector: make it the primary's view.
        let h = &mut gpt.header;
        h.backup_lba = h.primary_lba;
        h.primary_lba = 1;
        h.partition_entry_lba = 2;
    } else if repair {
        return Err(changed("the primary GPT is readable again".into()));
    }
    let ss = disk.sector_size;
    let array_sectors = (u64::from(gpt.header.number_of_partition_entries)
        * u64::from(gpt.header.size_of_partition_entry))
    .div_ceil(ss);
    let last = disk.sectors() - 1;
    let disk_guid = gpt.header.disk_guid;
    // Where the backup header was, when it lay within the disk (a repaired
    // primary comes from the backup at the last sector).
    let old_backup = (gpt.header.backup_lba < last).then_some(gpt.header.backup_lba);
    for a in actions {
        match a {
            Action::RelocateBackupGpt {
                from_lba, to_lba, ..
            } => {
                if gpt.header.backup_lba != *from_lba {
                    return Err(changed(format!(
                        "backup header at {} not {from_lba}",
                        gpt.header.backup_lba
                    )));
                }
                ensure!(
                    *to_lba == last,
                    "backup header must go to the last sector {last}"
                );
                gpt.header.backup_lba = last;
                gpt.header.last_usable_lba = last - array_sectors - 1;
            }
            Action::GrowPartition {
                number,
                start,
                from_end,
                to_end,
                ..
            } => {
                let e = &mut gpt[*number];
                if e.is_unused() || e.starting_lba != *start || e.ending_lba != *from_end {
                    return Err(changed(format!("partition {number}")));
                }
                e.ending_lba = *to_end;
            }
            Action::CreatePartition {
                number,
                start,
                end,
                volume,
                ..
            } => {
                if gpt[*number].is_used() {
                    return Err(changed(format!("entry {number} is in use")));
                }
                gpt[*number] = GPTPartitionEntry {
                    partition_type_guid: LINUX_FS,
                    unique_partition_guid: partition_guid(&disk_guid, *volume),
                    starting_lba: *start,
                    ending_lba: *end,
                    attribute_bits: 0,
                    partition_name: volume.label().into(),
                };
            }
            Action::RepairPrimaryGpt { .. } => {}
            other => bail!("not a partition-table action: {other}"),
        }
    }
    check_layout(&gpt)?;
    write_gpt(disk, &gpt, old_backup)
}

fn check_layout(gpt: &GPT) -> Result<()> {
    let mut used: Vec<(u64, u64, u32)> = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(n, e)| (e.starting_lba, e.ending_lba, n))
        .collect();
    used.sort();
    for (s, e, n) in &used {
        ensure!(
            s <= e && *s >= gpt.header.first_usable_lba && *e <= gpt.header.last_usable_lba,
            "partition {n} ({s}..={e}) would lie outside the usable area {}..={}",
            gpt.header.first_usable_lba,
            gpt.header.last_usable_lba
        );
    }
    for w in used.windows(2) {
        ensure!(
            w[0].1 < w[1].0,
            "partitions {} and {} would overlap",
            w[0].2,
            w[1].2
        );
    }
    Ok(())
}

/// Captures the writes gptman makes, so we can issue them in our order.
#[derive(Default)]
struct Recorder {
    pos: u64,
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let extend = self
            .chunks
            .range_mut(..=self.pos)
            .next_back()
            .filter(|(off, v)| **off + v.len() as u64 == self.pos);
        match extend {
            Some((_, v)) => v.extend_from_slice(buf),
            None => {
                self.chunks.insert(self.pos, buf.to_vec());
            }
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::Start(p) => self.pos = p,
            _ => return Err(io::Error::other("recorder seeks only from the start")),
        }
        Ok(self.pos)
    }
}

/// The bytes of one header copy: (header sector, entry array) with offsets.
/// Bytes to write at an offset.
type Chunk = (u64, Vec<u8>);

fn serialize(
    header: &mut gptman::GPTHeader,
    ss: u64,
    entries: &[GPTPartitionEntry],
) -> Result<(Chunk, Chunk)> {
    let mut rec = Recorder::default();
    header.write_into(&mut rec, ss, entries)?;
    let header_off = header.primary_lba * ss;
    let array_off = header.partition_entry_lba * ss;
    let mut h = rec
        .chunks
        .remove(&header_off)
        .context("gptman wrote no header")?;
    h.resize(ss as usize, 0);
    let a = rec
        .chunks
        .remove(&array_off)
        .context("gptman wrote no entry array")?;
    ensure!(
        rec.chunks.is_empty(),
        "gptman wrote outside the header and array"
    );
    Ok(((header_off, h), (array_off, a)))
}

fn write_gpt(disk: &DiskFile, gpt: &GPT, old_backup: Option<u64>) -> Result<()> {
    let ss = disk.sector_size;
    let entries: Vec<GPTPartitionEntry> = gpt.iter().map(|(_, e)| e.clone()).collect();
    let mut primary = gpt.header.clone();
    let mut backup = primary.clone();
    backup.primary_lba = primary.backup_lba;
    backup.backup_lba = primary.primary_lba;
    backup.partition_entry_lba = primary.last_usable_lba + 1;

    let (bh, ba) = serialize(&mut backup, ss, &entries)?;
    disk.put(ba.0, &ba.1)?;
    disk.put(bh.0, &bh.1)?;
    disk.sync()?;
    let (ph, pa) = serialize(&mut primary, ss, &entries)?;
    disk.put(pa.0, &pa.1)?;
    disk.put(ph.0, &ph.1)?;
    disk.sync()?;
    // A relocated backup leaves its old header in what is now usable space:
    // invalidate it, so no tool mistakes it for a table. Nothing uses that
    // sector yet (it lay beyond the old last usable sector).
    if let Some(old) = old_backup.filter(|o| *o != primary.backup_lba) {
        disk.put(old * ss, &vec![0u8; ss as usize])?;
        disk.sync()?;
    }
    fix_protective_mbr(disk)
}

/// Sets the size of the protective MBR entry (type 0xEE) to cover the disk,
/// leaving the boot code and any other entry alone.
fn fix_protective_mbr(disk: &DiskFile) -> Result<()> {
    let mut s0 = [0u8; 512];
    disk.file.read_exact_at(&mut s0, 0)?;
    if s0[510..512] != [0x55, 0xAA] {
        return Ok(());
    }
    let want = (disk.sectors() - 1).min(u64::from(u32::MAX)) as u32;
    for i in 0..4 {
        let e = 446 + 16 * i;
        if s0[e + 4] == 0xEE {
            let start = u32::from_le_bytes(s0[e + 8..e + 12].try_into().unwrap());
            let size = u32::from_le_bytes(s0[e + 12..e + 16].try_into().unwrap());
            let want = want.saturating_sub(start.saturating_sub(1));
            if size != want {
                s0[e + 12..e + 16].copy_from_slice(&want.to_le_bytes());
                disk.put(0, &s0)?;
                disk.sync()?;
            }
            break;
        }
    }
    Ok(())
}

fn grow_mbr(disk: &DiskFile, number: u32, start: u64, from_end: u64, to_end: u64) -> Result<()> {
    ensure!(
        (1..=4).contains(&number),
        "only primary MBR partitions are grown"
    );
    let mut s0 = [0u8; 512];
    disk.file.read_exact_at(&mut s0, 0)?;
    ensure!(
        s0[510..512] == [0x55, 0xAA],
        "{} has no MBR",
        disk.path.display()
    );
    let e = 446 + 16 * (number as usize - 1);
    let cur_start = u64::from(u32::from_le_bytes(s0[e + 8..e + 12].try_into().unwrap()));
    let cur_size = u64::from(u32::from_le_bytes(s0[e + 12..e + 16].try_into().unwrap()));
    if cur_start != start || cur_start + cur_size - 1 != from_end {
        return Err(changed(format!("MBR partition {number}")));
    }
    let size =
        u32::try_from(to_end - start + 1).context("MBR partition size beyond 2^32 sectors")?;
    s0[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
    // End CHS: "beyond CHS", as sfdisk writes for large disks.
    s0[e + 5..e + 8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    disk.put(0, &s0)?;
    disk.sync()
}

/// Tells the kernel about the table actions (block devices only).
pub fn tell_kernel(disk: &DiskFile, actions: &[&Action], known: &[u32]) -> Result<()> {
    if !disk.block {
        return Ok(());
    }
    let ss = disk.sector_size;
    for a in actions {
        match a {
            Action::GrowPartition {
                number,
                start,
                to_end,
                ..
            } => {
                blkpg::resize_partition(&disk.file, *number, start * ss, (to_end - start + 1) * ss)
                    .with_context(|| {
                        format!("telling the kernel partition {number} grew (BLKPG)")
                    })?
            }
            Action::CreatePartition {
                number, start, end, ..
            } if !known.contains(number) => {
                blkpg::add_partition(&disk.file, *number, start * ss, (end - start + 1) * ss)
                    .with_context(|| {
                        format!("telling the kernel about partition {number} (BLKPG)")
                    })?
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
