//! Atomic file writes, shared by both programs.
//!
//! A file that matters is written to a temporary name in the same directory,
//! created with its final mode (a secret is never readable by others, not even
//! for a moment), synced, renamed over the target, and the directory synced.
//! A failure at any point leaves either the old file or nothing, never a
//! partial file, and removes the temporary file.
//!
//! A writer killed outright (SIGKILL, power loss) cannot remove its temporary
//! file, `.NAME.tmpPID` (hidden, and never under the final name). A writer
//! that calls [`remove_stale_temps`] first removes those of `NAME` whose
//! process is gone; `imgbuild seed` does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` atomically with permission bits `mode`.
///
/// The parent directory must exist; its absence is reported as an error that
/// names it.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |f| f.write_all(data))
}

/// Like [`write_atomic`], with the content produced by `fill`.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    write_via_temp(path, mode, fill, true)
}

/// Like [`write_atomic`], but never replaces anything at `path`: the
/// complete temporary file is hard-linked to `path` (which fails with
/// `AlreadyExists` when anything, even a dangling link, is there), then
/// removed. For files that must never overwrite an existing one, such as a
/// freshly generated env.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, mode, |f| f.write_all(data), false)
}

fn write_via_temp(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    replace: bool,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("directory {} does not exist", dir.display()),
        ));
    }
    let tmp = dir.join(temp_name(name, std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have removed bits; set exactly the mode asked for
        // (only ever adds bits the caller wants, never exposes more).
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `.NAME.tmpPID`: the temporary file of a write of `NAME` by process `pid`.
fn temp_name(name: &std::ffi::OsStr, pid: u32) -> std::ffi::OsString {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{pid}"));
    tmp_name
}

/// Removes the temporary files that interrupted writes of `path` left
/// behind (`.NAME.tmpPID`, regular files only) whose process no longer
/// runs, and one of this process's own id (a leftover of an earlier process
/// that had it). Returns how many were removed.
///
/// Call it before writing `path`; a temporary file of a live writer (another
/// process writing the same file right now) is kept.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Ok(0);
    };
    let mut prefix = temp_name(name, 0).into_vec();
    prefix.truncate(prefix.len() - 1); // `.NAME.tmp`
    let own = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(pid) = file.as_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(pid)
            .ok()
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own && process_exists(pid) {
            continue;
        }
        if entry.file_type()?.is_file() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether a process with this id exists (it may be another program that
/// got the id since: then its temp file is kept, which is safe).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("env.yml");
        write_new(&p, b"first", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let e = write_new(&p, b"second", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first");
        let link = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &link).unwrap();
        assert!(write_new(&link, b"x", 0o600).is_err());
        assert!(!d.path().join("nowhere").exists());
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file left behind");
    }

    #[test]
    fn writes_with_mode_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn failure_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let err = write_atomic_with(&p, 0o600, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seed.iso");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stale = d.path().join(format!(".seed.iso.tmp{dead}"));
        let own = d
            .path()
            .join(format!(".seed.iso.tmp{}", std::process::id()));
        let busy = d.path().join(format!(".seed.iso.tmp{}", live.id()));
        let other = d.path().join(format!(".other.iso.tmp{dead}"));
        let not_ours = d.path().join(".seed.iso.tmpX1");
        for f in [&stale, &own, &busy, &other, &not_ours] {
            fs::write(f, b"partial").unwrap();
        }
        assert_eq!(remove_stale_temps(&p).unwrap(), 2);
        assert!(!stale.exists() && !own.exists());
        assert!(busy.exists() && other.exists() && not_ours.exists());
        let mut live = live;
        live.kill().unwrap();
        live.wait().unwrap();
        write_atomic(&p, b"x", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn missing_directory_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/f");
        let err = write_atomic(&p, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
