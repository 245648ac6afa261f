//! The GCE image: the raw disk as `disk.raw`, alone in a GNU tar, gzipped
//! (`NAME.tar.gz`), which is what `gcloud compute images create
//! --source-uri` imports. Google's guide makes it with `tar --format=oldgnu
//! -Sczf`; this writes the same kind of archive in process:
//!
//! - one member `disk.raw`, in the old GNU format (magic `ustar  `), as a
//!   GNU sparse file (type `S`): only the disk's non-zero 4 KiB blocks are
//!   stored, with the map of where they go (four entries in the header, 21
//!   in each extension block after it); numbers too large for the octal
//!   fields (8 GiB and more) in GNU's base-256 form;
//! - mode 0644, owner and group 0 (`root`), `SOURCE_DATE_EPOCH` as mtime,
//!   the gzip header's mtime the same and no file name in it.
//!
//! The map comes from the disk's bytes alone (holes are found with
//! `SEEK_DATA`/`SEEK_HOLE` to skip them quickly, then every block of data
//! that is all zero is left out too), so the same disk gives the same
//! archive on any filesystem. The disk is streamed twice (map, then data),
//! never held in memory.
//!
//! Written here rather than with the `tar` crate, which reads GNU sparse
//! members but cannot write them; `flate2` does the gzip.
//!
//! GCE wants the disk's size a whole number of GiB; [`write_gce_tar`]
//! refuses any other (the build makes the disk that size for this format).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The one member's name, as GCE requires.
pub const DISK_NAME: &str = "disk.raw";
/// GCE's disk size unit.
pub const GIB: u64 = 1 << 30;
/// The granularity of the sparse map.
pub const BLOCK: u64 = 4096;
/// gzip's compression level (gzip's own default).
const LEVEL: u32 = 6;
const CHUNK: usize = 1 << 20;

/// The non-zero parts of `f` (its first `len` bytes) as (offset, length),
/// in order, each a run of whole [`BLOCK`]s (the last one may end at `len`).
pub fn data_map(f: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    let mut map: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let zero = [0u8; BLOCK as usize];
    let mut pos = 0u64;
    while pos < len {
        let Some((start, end)) = next_data(f, pos, len)? else {
            break;
        };
        let mut at = start - start % BLOCK;
        while at < end {
            let n = (CHUNK as u64).min(end - at).min(len - at) as usize;
            f.read_exact_at(&mut buf[..n], at)
                .context("reading the disk")?;
            for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                // A slice comparison is a memcmp, fast in any build.
                if block == &zero[..block.len()] {
                    continue;
                }
                let off = at + (i as u64) * BLOCK;
                let l = block.len() as u64;
                match map.last_mut() {
                    Some((o, ln)) if *o + *ln == off => *ln += l,
                    _ => map.push((off, l)),
                }
            }
            at += n as u64;
        }
        pos = end.max(pos + 1);
    }
    Ok(map)
}

/// The next region the filesystem says holds data, from `pos`: (start,
/// end), rounded out to whole blocks; `None` past the last one. Where the
/// filesystem cannot tell, the whole rest is data.
fn next_data(f: &File, pos: u64, len: u64) -> Result<Option<(u64, u64)>> {
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an open descriptor has no other preconditions.
    let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((pos, len))),
            _ => Err(e).context("looking for the disk's data (SEEK_DATA)"),
        };
    }
    let data = data as u64;
    if data >= len {
        return Ok(None);
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
    let hole = if hole < 0 {
        len
    } else {
        (hole as u64).min(len)
    };
    let end = hole.div_ceil(BLOCK) * BLOCK;
    Ok(Some((
        data - data % BLOCK,
        end.min(len.div_ceil(BLOCK) * BLOCK),
    )))
}

/// Writes `raw` as `disk.raw` in a GNU sparse tar, gzipped, to `out`.
/// Returns the number of bytes of the disk stored (its non-zero blocks).
pub fn write_gce_tar(raw: &Path, out: &Path, epoch: i64) -> Result<u64> {
    let f = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let len = f.metadata()?.len();
    if len == 0 || len % GIB != 0 {
        bail!("a GCE image's disk must be a whole number of GiB, and this one is {len} bytes");
    }
    let map = data_map(&f, len)?;
    let stored: u64 = map.iter().map(|(_, l)| l).sum();
    let mtime = epoch.max(0) as u64;

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(mtime.min(u32::MAX as u64) as u32)
        .write(
            BufWriter::with_capacity(CHUNK, file),
            flate2::Compression::new(LEVEL),
        );
    let mut w = Counting { inner: gz, n: 0 };
    for block in headers(&map, len, stored, mtime) {
        w.write_all(&block)?;
    }
    let mut buf = vec![0u8; CHUNK];
    for &(off, l) in &map {
        let mut done = 0;
        while done < l {
            let n = (CHUNK as u64).min(l - done) as usize;
            f.read_exact_at(&mut buf[..n], off + done)
                .with_context(|| format!("reading {}", raw.display()))?;
            w.write_all(&buf[..n])?;
            done += n as u64;
        }
    }
    // The data padded to a block, the two zero blocks that end an archive,
    // and the whole padded to a 10 KiB record, as GNU tar writes it.
    let pad = (512 - w.n % 512) % 512;
    w.write_all(&vec![0u8; pad as usize])?;
    w.write_all(&[0u8; 1024])?;
    let rec = (10240 - w.n % 10240) % 10240;
    w.write_all(&vec![0u8; rec as usize])?;
    let bw = w.inner.finish().context("finishing the gzip stream")?;
    bw.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("syncing {}", out.display()))?;
    Ok(stored)
}

struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The member's header and its sparse extension blocks.
pub fn headers(map: &[(u64, u64)], len: u64, stored: u64, mtime: u64) -> Vec<[u8; 512]> {
    // A disk that ends in a hole ends its map with an empty entry at its
    // size, as GNU tar writes it (an all-zero disk has that one alone).
    let mut entries = map.to_vec();
    if entries.last().is_none_or(|(o, l)| o + l < len) {
        entries.push((len, 0));
    }
    let mut h = [0u8; 512];
    put(&mut h[0..100], DISK_NAME.as_bytes());
    number(&mut h[100..108], 0o644);
    number(&mut h[108..116], 0);
    number(&mut h[116..124], 0);
    number(&mut h[124..136], stored);
    number(&mut h[136..148], mtime);
    h[156] = b'S';
    h[257..265].copy_from_slice(b"ustar  \0");
    put(&mut h[265..297], b"root");
    put(&mut h[297..329], b"root");
    let (first, rest) = entries.split_at(entries.len().min(4));
    for (i, (o, l)) in first.iter().enumerate() {
        let at = 386 + i * 24;
        number(&mut h[at..at + 12], *o);
        number(&mut h[at + 12..at + 24], *l);
    }
    h[482] = u8::from(!rest.is_empty());
    number(&mut h[483..495], len);
    checksum(&mut h);
    let mut out = vec![h];
    let groups: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (g, group) in groups.iter().enumerate() {
        let mut x = [0u8; 512];
        for (i, (o, l)) in group.iter().enumerate() {
            let at = i * 24;
            number(&mut x[at..at + 12], *o);
            number(&mut x[at + 12..at + 24], *l);
        }
        x[504] = u8::from(g + 1 < groups.len());
        out.push(x);
    }
    out
}

fn put(field: &mut [u8], s: &[u8]) {
    field[..s.len()].copy_from_slice(s);
}

/// A numeric field: octal digits and a NUL when the value fits, else GNU's
/// base-256 (the first byte 0x80, the value big-endian in the rest).
fn number(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || v < 1u64 << (3 * digits) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let be = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&be);
    }
}

/// The header checksum: the sum of its bytes with the checksum field as
/// spaces, written as six octal digits, a NUL and a space.
fn checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_then_base_256() {
        let mut f = [0u8; 12];
        number(&mut f, 0o644);
        assert_eq!(&f, b"00000000644\0");
        number(&mut f, (8u64 << 30) - 1);
        assert_eq!(&f, b"77777777777\0");
        number(&mut f, 8u64 << 30);
        assert_eq!(f[0], 0x80);
        assert_eq!(u64::from_be_bytes(f[4..].try_into().unwrap()), 8u64 << 30);
    }

    #[test]
    fn map_keeps_nonzero_blocks_only() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("d");
        let f = File::create(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(b"x", 5).unwrap();
        f.write_all_at(b"y", BLOCK + 7).unwrap();
        // Zeros written out are data to the filesystem, not to the map.
        f.write_all_at(&[0u8; 8192], 3 * BLOCK).unwrap();
        f.write_all_at(b"z", 100 * BLOCK).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(
            data_map(&f, 1 << 20).unwrap(),
            vec![(0, 2 * BLOCK), (100 * BLOCK, BLOCK)]
        );
    }

    #[test]
    fn headers_spill_the_map_into_extension_blocks() {
        let map: Vec<(u64, u64)> = (0..30).map(|i| (i * 2 * BLOCK, BLOCK)).collect();
        let hs = headers(&map, GIB, 30 * BLOCK, 0);
        // 31 entries (a trailing hole): 4 in the header, 21 + 6 after it.
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0][156], b'S');
        assert_eq!(hs[0][482], 1);
        assert_eq!(hs[1][504], 1);
        assert_eq!(hs[2][504], 0);
        assert_eq!(&hs[2][6 * 24..6 * 24 + 12], b"\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(
            &hs[2][5 * 24..5 * 24 + 12],
            format!("{:011o}\0", GIB).as_bytes()
        );
        let sum: u32 = hs[0]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    b' ' as u32
                } else {
                    b as u32
                }
            })
            .sum();
        assert_eq!(&hs[0][148..156], format!("{sum:06o}\0 ").as_bytes());
    }
}
