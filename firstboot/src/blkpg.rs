//! Telling the kernel about one partition without re-reading the table.
//!
//! The root partition is mounted, so `BLKRRPART` (re-read the whole table)
//! fails with EBUSY. `BLKPG` changes one partition at a time:
//! `BLKPG_RESIZE_PARTITION` for root, `BLKPG_ADD_PARTITION` for a new volume.
//! The structures are those of `<linux/blkpg.h>` (not in the libc crate).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const BLKPG: libc::c_ulong = 0x1269; // _IO(0x12, 105)
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272; // _IOR(0x12, 114, size_t)

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

fn blkpg(disk: &File, op: libc::c_int, number: u32, start: u64, length: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the partition it points to live across the call and
    // have the layout the kernel expects for BLKPG.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &mut arg as *mut BlkpgIoctlArg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tells the kernel that partition `number` now spans `length` bytes from
/// `start` (bytes; start unchanged).
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    blkpg(disk, BLKPG_RESIZE_PARTITION, number, start, length)
}

/// Tells the kernel about a new partition.
pub fn add_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, number, start, length)
}

/// The size of a block device in bytes.
pub fn device_bytes(dev: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The logical sector size of a block device.
pub fn sector_size(dev: &File) -> io::Result<u64> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            libc::BLKSSZGET,
            &mut size as *mut libc::c_int,
        )
    };
    if rc == 0 {
        Ok(size as u64)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn struct_layout_matches_linux() {
        // <linux/blkpg.h> on 64-bit: 8+8+4+64+64 = 148, padded to 152.
        assert_eq!(std::mem::size_of::<super::BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<super::BlkpgIoctlArg>(), 24);
    }
}
