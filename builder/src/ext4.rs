//! The root filesystem: ext4 made from the tree with `mkfs.ext4 -d`, on a
//! plain file, with no mount and no loop device.
//!
//! The filesystem's features come from a mke2fs.conf written here (never the
//! host's /etc/mke2fs.conf), its UUID and hash seed from the build's identity,
//! and its timestamps from `SOURCE_DATE_EPOCH` (e2fsprogs ≥ 1.47.1 clamps
//! inode times to it), so the same tree gives the same bytes.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::disk::{round_up, Guid, MIB};

const BLOCK: u64 = 4096;
const INODE_RATIO: u64 = 16384;
const INODE_SIZE: u64 = 256;

/// mke2fs settings, independent of the host. The features are the ones that
/// GRUB 2.06+, Linux 5.10+ and e2fsprogs 1.46+ all understand (no
/// orphan_file, no metadata_csum_seed, no large_dir).
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\tlazy_itable_init = false
\tlazy_journal_init = true

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// What a tree needs on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeUsage {
    /// Bytes of data blocks: files, directories and long symlinks, each
    /// rounded up to the 4 KiB block size.
    pub data_bytes: u64,
    /// Number of inodes (files, directories, links, devices; hard links once).
    pub inodes: u64,
    /// Sum of the apparent sizes of regular files.
    pub file_bytes: u64,
    /// The newest modification time in the tree (seconds since the epoch).
    pub newest_mtime: i64,
}

/// Walks `tree` (without following symlinks) and adds up what it needs.
pub fn measure(tree: &Path) -> Result<TreeUsage> {
    let mut u = TreeUsage::default();
    let mut seen_links = std::collections::HashSet::new();
    walk(tree, &mut |p, m| {
        // Every name takes a directory entry (8 bytes and the name, padded
        // to 4), counted from the names rather than the host directories'
        // sizes, which depend on their history.
        if p != tree {
            let name = p.file_name().map_or(0, |n| n.len() as u64);
            u.data_bytes += 8 + round_up(name, 4);
        }
        if m.nlink() > 1 && !m.is_dir() && !seen_links.insert((m.dev(), m.ino())) {
            return Ok(());
        }
        u.inodes += 1;
        u.newest_mtime = u.newest_mtime.max(m.mtime());
        let ft = m.file_type();
        if ft.is_file() {
            u.file_bytes += m.len();
            u.data_bytes += round_up(m.len(), BLOCK);
        } else if ft.is_dir() || (ft.is_symlink() && m.len() >= 60) {
            // A directory's first block; a symlink too long for its inode.
            u.data_bytes += BLOCK;
        }
        Ok(())
    })?;
    Ok(u)
}

/// Calls `f` for `dir` and everything below it, in sorted order, without
/// following symlinks.
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let m = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    f(dir, &m)?;
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        names.sort();
        for n in names {
            walk(&dir.join(n), f)?;
        }
    }
    Ok(())
}

/// Metadata overhead of an ext4 filesystem of `size` bytes made with
/// [`MKE2FS_CONF`]: journal, inode tables, bitmaps, group descriptors and the
/// blocks reserved for growth, with a small margin.
fn overhead(size: u64) -> u64 {
    let blocks = size / BLOCK;
    // ext2fs_default_journal_size(), in blocks.
    let journal_blocks = match blocks {
        0..32_768 => 1024,
        32_768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16_384,
        4_194_304..8_388_608 => 32_768,
        8_388_608..16_777_216 => 65_536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    };
    let inode_tables = size / INODE_RATIO * INODE_SIZE;
    // Per 128 MiB group: 2 bitmaps, plus up to 1 + 112 blocks of (reserved)
    // descriptors in groups that hold superblock backups; count them all.
    let groups = blocks.div_ceil(32_768);
    let per_group = groups * (2 + 114) * BLOCK;
    journal_blocks * BLOCK + inode_tables + per_group + 4 * MIB
}

/// The smallest filesystem (in whole MiB) that holds `u`, and the size used
/// when nobody asks for more: that plus headroom for the first boot (logs,
/// the agent's state) before it grows the filesystem.
pub fn sizes(u: &TreeUsage) -> (u64, u64) {
    let fits = |size: u64, free: u64| {
        let o = overhead(size);
        size > o && size - o >= u.data_bytes + u.data_bytes / 50 + free
    };
    let smallest = |free: u64| {
        let mut s = round_up(u.data_bytes + u.data_bytes / 10 + 16 * MIB, MIB);
        while !fits(s, free) {
            s += MIB;
        }
        s
    };
    let min = smallest(0);
    let default = smallest(128 * MIB + u.data_bytes / 20);
    (min, default)
}

/// Sets every entry's access time to its modification time (without
/// following symlinks): mkfs.ext4 copies symlinks' access times as they are,
/// and they depend on when the tree was last read.
pub fn normalize_atimes(tree: &Path) -> Result<()> {
    walk(tree, &mut |p, m| {
        let c = CString::new(p.as_os_str().as_bytes())?;
        let times = [
            libc::timespec {
                tv_sec: m.mtime() as libc::time_t,
                tv_nsec: m.mtime_nsec() as _,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        ];
        // SAFETY: `c` is a valid NUL-terminated path and `times` has two entries.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the access time of {}", p.display()));
        }
        Ok(())
    })
}

/// What to make.
#[derive(Clone, Debug)]
pub struct Ext4Spec<'a> {
    pub tree: &'a Path,
    pub size: u64,
    pub uuid: Guid,
    pub label: &'a str,
    /// Inodes the tree needs (the filesystem gets at least 25% more).
    pub inodes: u64,
    pub source_date_epoch: i64,
}

/// Makes the filesystem in the existing file `disk` at byte `offset`,
/// `spec.size` bytes long (mke2fs writes in place there and nowhere else, so
/// the root filesystem needs no copy into the disk image). `scratch` is a
/// directory for the mke2fs.conf.
pub fn make(spec: &Ext4Spec, disk: &Path, offset: u64, scratch: &Path) -> Result<()> {
    let conf = scratch.join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF).context("writing mke2fs.conf")?;
    let len = fs::metadata(disk)
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    if offset + spec.size > len || spec.size & 1023 != 0 {
        anyhow::bail!(
            "the filesystem ({} bytes at {offset}) does not fit in {} ({len} bytes)",
            spec.size,
            disk.display()
        );
    }
    let uuid = spec.uuid.to_string();
    let mut cmd = seeds::cmd::command(
        "mkfs.ext4",
        [
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            spec.label,
            "-U",
            &uuid,
            "-E",
            &format!("root_owner=0:0,hash_seed={uuid},nodiscard,offset={offset}"),
        ],
    );
    let default_inodes = spec.size / INODE_RATIO;
    let want_inodes = spec.inodes + spec.inodes / 4 + 1024;
    if want_inodes > default_inodes {
        cmd.arg("-N").arg(want_inodes.to_string());
    }
    cmd.arg("-d")
        .arg(spec.tree)
        .arg(disk)
        .arg(format!("{}k", spec.size / 1024));
    cmd.env("MKE2FS_CONFIG", &conf)
        .env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string());
    seeds::cmd::run(&mut cmd).context("making the root filesystem")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_with_the_tree_and_leave_headroom() {
        let u = TreeUsage {
            data_bytes: 700 * MIB,
            inodes: 16_000,
            ..Default::default()
        };
        let (min, def) = sizes(&u);
        assert!(min > 700 * MIB && min < 800 * MIB, "{}", min / MIB);
        assert!(def >= min + 128 * MIB, "{}", def / MIB);
        assert_eq!(min % MIB, 0);
        let small = sizes(&TreeUsage::default());
        assert!(small.0 >= 16 * MIB);
    }

    #[test]
    fn measure_counts_blocks_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), vec![1u8; 5000]).unwrap();
        fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("l")).unwrap();
        let u = measure(d.path()).unwrap();
        assert_eq!(u.inodes, 3, "dir, a (= b), l");
        assert_eq!(u.data_bytes, 8192 + 4096 + 3 * 12);
        assert_eq!(u.file_bytes, 5000);
    }
}
