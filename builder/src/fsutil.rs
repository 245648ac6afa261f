//! File helpers of the build and the caches: a work copy of a tree, sparse
//! copies, reflink-or-copy, and renaming a finished file into place.

use std::fs::{self, File};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::exit::bad_input;

/// Renames a finished file into place (copying it across filesystems).
pub fn rename_into(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .or_else(|e| {
            // A seed in another directory (another filesystem) is copied.
            if e.raw_os_error() == Some(libc::EXDEV) {
                seeds::atomic::write_atomic_with(to, 0o600, |f| {
                    std::io::copy(&mut File::open(from)?, f).map(|_| ())
                })
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("moving the finished {} into place", to.display()))
}

/// Makes a work copy of a given tree in `to`: a hard-link farm (new
/// directories, the files linked, so nothing is copied) when both are on one
/// filesystem, else a full copy. The build never writes into a linked file:
/// it replaces files (unlink, create), and only sets the access times of the
/// tree's entries to their modification times (see
/// [`ext4::normalize_atimes`]), so DIR's contents, modes and owners stay as
/// they are.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.join("usr").is_dir() {
        return Err(bad_input(format!(
            "{} does not look like a root tree (no usr/)",
            from.display()
        )));
    }
    let mut link = seeds::cmd::command("cp", ["-a", "-l"]);
    link.arg(from).arg(to);
    if let Err(e) = seeds::cmd::run(&mut link) {
        tracing::debug!("hard-linking the tree failed ({e}); copying it");
        if to.exists() {
            fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
        }
        let mut cmd = seeds::cmd::command("cp", ["-a", "--reflink=auto"]);
        cmd.arg(from).arg(to);
        seeds::cmd::run(&mut cmd).context("copying the root tree")?;
    }
    Ok(())
}

/// Copies the data extents of `src` into `dst` at `offset`, skipping holes,
/// so the image stays sparse.
pub fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = s.metadata()?.len() as i64;
    let (sfd, dfd) = (s.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    while pos < len {
        // SAFETY: plain syscalls on open file descriptors.
        let data = unsafe { libc::lseek(sfd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e).context("finding data in the filesystem image");
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(sfd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error()).context("finding holes");
        }
        let mut from: libc::loff_t = data;
        let mut to: libc::loff_t = data + offset as i64;
        while from < hole {
            // SAFETY: valid fds and in-bounds offsets owned by this function.
            let n = unsafe {
                libc::copy_file_range(sfd, &mut from, dfd, &mut to, (hole - from) as usize, 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // Another filesystem (or one without copy_file_range): copy
                // through a buffer.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                ) {
                    copy_range(&s, dst, from as u64, to as u64, (hole - from) as u64)
                        .with_context(|| format!("copying {}", src.display()))?;
                    break;
                }
                return Err(e).with_context(|| format!("copying {}", src.display()));
            }
            if n == 0 {
                bail!("{} ended early", src.display());
            }
        }
        pos = hole;
    }
    Ok(())
}

/// Copies `len` bytes at `from` in `src` to `to` in `dst` through a buffer.
fn copy_range(src: &File, dst: &File, mut from: u64, mut to: u64, len: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let end = from + len;
    let mut buf = vec![0u8; 1 << 20];
    while from < end {
        let want = buf.len().min((end - from) as usize);
        let n = src.read_at(&mut buf[..want], from)?;
        if n == 0 {
            bail!("the file ended early");
        }
        dst.write_all_at(&buf[..n], to)?;
        from += n as u64;
        to += n as u64;
    }
    Ok(())
}

/// Copies `src` to the new file `dst` (mode 0644): a reflink (FICLONE),
/// sharing the blocks, where the filesystem can; else a copy of the data
/// that keeps holes, so a raw image stays sparse.
pub fn clone_or_copy(src: &Path, dst: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    // Private until done, then the source's permissions (an image with a
    // baked env stays 0600 in the cache and when restored from it).
    let d = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    let meta = s.metadata()?;
    // SAFETY: FICLONE takes the source's fd; both are open.
    if unsafe { libc::ioctl(d.as_raw_fd(), libc::FICLONE, s.as_raw_fd()) } != 0 {
        d.set_len(meta.len())?;
        copy_sparse(src, &d, 0)?;
    }
    d.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o777,
    ))
    .with_context(|| format!("setting the mode of {}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output;

    #[test]
    fn sparse_copy_keeps_data_at_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_at_all(b"hello", 5 << 20);
        drop(f);
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("d"))
            .unwrap();
        dst.set_len(16 << 20).unwrap();
        copy_sparse(&src, &dst, 1 << 20).unwrap();
        let bytes = fs::read(d.path().join("d")).unwrap();
        assert_eq!(&bytes[(6 << 20)..(6 << 20) + 5], b"hello");
    }

    #[test]
    fn clone_or_copy_keeps_data_and_holes_across_filesystems() {
        // /dev/shm is a tmpfs: from there, copy_file_range may refuse
        // (EXDEV) and the copy goes through a buffer.
        for src_dir in [
            tempfile::tempdir_in("/dev/shm").unwrap(),
            tempfile::tempdir().unwrap(),
        ] {
            let dst_dir = tempfile::tempdir().unwrap();
            let src = src_dir.path().join("disk.raw");
            let f = File::create(&src).unwrap();
            f.set_len(64 << 20).unwrap();
            f.write_at_all(b"head", 0);
            f.write_at_all(b"middle", 20 << 20);
            drop(f);
            let dst = dst_dir.path().join("copy.raw");
            clone_or_copy(&src, &dst).unwrap();
            assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dst), mode(&src), "the source's mode");
            // A private source (an image with a baked env) gives a private copy.
            fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
            let private = dst_dir.path().join("private.raw");
            clone_or_copy(&src, &private).unwrap();
            assert_eq!(mode(&private), 0o600);
            assert!(
                output::allocated_bytes(&dst).unwrap() < 4 << 20,
                "holes kept: {} bytes allocated",
                output::allocated_bytes(&dst).unwrap()
            );
            let e = clone_or_copy(&src, &dst).unwrap_err();
            assert!(
                format!("{e:#}").contains("creating"),
                "never overwrites: {e:#}"
            );
        }
    }

    trait WriteAt {
        fn write_at_all(&self, b: &[u8], off: u64);
    }
    impl WriteAt for File {
        fn write_at_all(&self, b: &[u8], off: u64) {
            std::os::unix::fs::FileExt::write_all_at(self, b, off).unwrap();
        }
    }
}
