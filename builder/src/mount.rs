//! Mounts for steps that run inside the tree, as RAII guards.
//!
//! A [`Mount`] undoes only the mount it made, when dropped (also on errors
//! and after Ctrl-C: [`install_interrupt_handler`] turns SIGINT/SIGTERM into a
//! flag that build steps check, so the stack unwinds and the guards run).
//! An unmount is retried; one that still fails is logged and left in place,
//! and [`mounts_under`] lets the owner of a directory refuse to delete it
//! while anything is mounted beneath it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the process, so
/// guards can undo mounts. Child processes in the same process group still
/// get the terminal's SIGINT and stop; the build then fails and unwinds.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether SIGINT/SIGTERM arrived since the handler was installed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when the user interrupted the build.
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// A mount made by this process, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
    active: bool,
}

fn cstr(p: &Path) -> anyhow::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("path {} holds a NUL byte", p.display()))
}

fn sys_mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let src = CString::new(src).expect("no NUL in source");
    let fstype = CString::new(fstype).expect("no NUL in fstype");
    let data = CString::new(data).expect("no NUL in data");
    let target = CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Mount {
    /// Mounts a filesystem of type `fstype` (proc, sysfs, ...) at `target`.
    pub fn filesystem(
        fstype: &str,
        target: &Path,
        flags: libc::c_ulong,
        data: &str,
    ) -> anyhow::Result<Mount> {
        sys_mount(fstype, target, fstype, flags, data)
            .with_context(|| format!("mounting {fstype} at {}", target.display()))?;
        Mount::made(target)
    }

    /// Bind-mounts `source` at `target` (not recursive).
    pub fn bind(source: &Path, target: &Path) -> anyhow::Result<Mount> {
        let src = source.to_str().context("bind source is not UTF-8")?;
        sys_mount(src, target, "", libc::MS_BIND, "").with_context(|| {
            format!("bind-mounting {} at {}", source.display(), target.display())
        })?;
        Mount::made(target)
    }

    fn made(target: &Path) -> anyhow::Result<Mount> {
        let m = Mount {
            target: target.to_path_buf(),
            active: true,
        };
        // Keep our mounts out of other mount namespaces that share the host's
        // propagation group, and theirs out of ours.
        sys_mount("none", target, "", libc::MS_PRIVATE, "")
            .with_context(|| format!("making the mount at {} private", target.display()))?;
        Ok(m)
    }

    /// Where the mount is.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (drop only logs it).
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.try_unmount()
    }

    fn try_unmount(&mut self) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        let target = cstr(&self.target)?;
        let mut last = None;
        for attempt in 0..10 {
            // SAFETY: valid NUL-terminated path.
            if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
                self.active = false;
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                // Not a mount point any more: someone else undid it.
                self.active = false;
                return Ok(());
            }
            last = Some(err);
            // A process that just exited may still hold the mount busy for a moment.
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        bail!(
            "unmounting {}: {} (left mounted; the directory holding it will not be deleted)",
            self.target.display(),
            last.expect("an error after failed attempts")
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.try_unmount() {
            tracing::error!("{e:#}");
        }
    }
}

/// A stack of mounts, undone in reverse order.
#[derive(Debug, Default)]
pub struct MountStack {
    mounts: Vec<Mount>,
}

impl MountStack {
    pub fn push(&mut self, m: Mount) {
        self.mounts.push(m);
    }

    /// Unmounts everything (innermost first), reporting the first failure.
    pub fn unmount_all(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = m.unmount() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for MountStack {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(seeds::mountinfo::unescape(p)))
        .filter(|p| p.starts_with(&dir))
        .collect())
}

/// A directory this process created and deletes on drop, unless something
/// is still mounted beneath it.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `path` (which must not exist).
    pub fn create(path: PathBuf) -> anyhow::Result<WorkDir> {
        std::fs::create_dir_all(path.parent().context("work dir has a parent")?)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the work directory {}", path.display()))?;
        Ok(WorkDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now, unless anything is mounted beneath it.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.keep = true;
        remove_unless_mounted(&self.path)
    }
}

/// Deletes `dir` recursively, refusing when anything is mounted under it.
pub fn remove_unless_mounted(dir: &Path) -> anyhow::Result<()> {
    let mounted = mounts_under(dir).context("reading /proc/self/mountinfo")?;
    if !mounted.is_empty() {
        bail!(
            "not deleting {}: still mounted beneath it: {}",
            dir.display(),
            mounted
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", dir.display())),
    }
}

/// A work directory with a tmpfs on it, when possible.
///
/// Root trees are built and extracted in memory: dpkg's many fsyncs cost
/// nothing there, and removing a tree is one unmount instead of tens of
/// thousands of unlinks (slow on filesystems mounted with `discard`, as on
/// our build machines). Falls back to the plain directory when tmpfs cannot
/// be mounted. Fields drop in order: the tmpfs is unmounted before the
/// directory is removed.
#[derive(Debug)]
pub struct TreeDir {
    mount: Option<Mount>,
    dir: WorkDir,
}

impl TreeDir {
    /// Creates `path`, with a tmpfs on it when `in_memory`.
    pub fn create(path: PathBuf, in_memory: bool) -> anyhow::Result<TreeDir> {
        let dir = WorkDir::create(path)?;
        let mount = if in_memory {
            match Mount::filesystem("tmpfs", dir.path(), 0, "mode=0755") {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!("building on disk instead of in memory: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        Ok(TreeDir { mount, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the directory is a tmpfs.
    pub fn in_memory(&self) -> bool {
        self.mount.is_some()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = remove_unless_mounted(&self.path) {
                tracing::error!("{e:#}");
            }
        }
    }
}
