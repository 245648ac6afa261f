//! Files on the target, reached without following symbolic links.
//!
//! The agent runs as root and writes into directories that other users own
//! (`/app/.ssh`, the appliance's directories) and onto volumes that may come
//! from elsewhere. Whatever those users or volumes put there is untrusted, so
//! every file the agent creates, replaces, chowns or chmods is reached like
//! this:
//!
//! - from the root down, one component at a time, each directory opened with
//!   `O_NOFOLLOW | O_DIRECTORY` relative to its parent's descriptor
//!   ([`Dir::walk`]): a symbolic link anywhere on the way is reported as an
//!   [`Obstacle`], never followed, and no path is looked up twice;
//! - entries are examined with `O_PATH | O_NOFOLLOW` ([`Dir::entry`]) and
//!   opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot block the agent),
//!   then checked again on the descriptor;
//! - owner and mode are set on descriptors (`fchown`, `fchmod`), never on
//!   paths;
//! - a regular file with more than one link is another file as well: it is
//!   never read, chowned or chmodded ([`Read::Linked`]), only replaced;
//! - a file is replaced by writing a new one in the same directory
//!   descriptor (`O_CREAT | O_EXCL | O_NOFOLLOW`, final owner and mode before
//!   any data, synced) and `renameat` over the old name
//!   ([`Dir::replace`]); a rename replaces a link itself, not its target.
//!
//! Written here rather than taken from a crate: `cap-std` confines lookups
//! beneath a directory but follows symbolic links that stay inside it (a
//! link `authorized_keys -> /etc/shadow` inside the root is fine to it), and
//! `openat2(RESOLVE_NO_SYMLINKS)` would do the walk in one call but needs
//! Linux 5.6 and a fallback anyway. A walk over `openat` with `O_NOFOLLOW`
//! works on every kernel, is about as long as either, and adds no
//! dependency to the image.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The largest file [`Dir::read`] reads (the files the agent reads back,
/// `authorized_keys`, `/etc/hosts`, its own markers, are far smaller).
pub const MAX_READ: u64 = 4 << 20;

/// An open directory of the target, and its path there (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: File,
    path: String,
}

/// Why a path could not be reached as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A symbolic link (never followed).
    Symlink,
    /// Something other than a directory where one is needed.
    NotDir,
    /// A directory where a file is needed.
    Dir,
}

/// What is in the way, where, and who owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obstacle {
    /// The path on the target (`/app/.ssh`).
    pub path: String,
    pub kind: Kind,
    /// The owner of what is in the way.
    pub uid: u32,
}

impl fmt::Display for Obstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match self.kind {
            Kind::Symlink => write!(f, "{p} is a symbolic link; refusing to follow it"),
            Kind::NotDir => write!(f, "{p} exists and is not a directory"),
            Kind::Dir => write!(f, "{p} is a directory"),
        }
    }
}

/// What [`Dir::read`] found.
#[derive(Debug)]
pub enum Read {
    Missing,
    /// A regular file with one link: its bytes, the descriptor that read
    /// them (for `fchown`/`fchmod`) and its metadata.
    Data(Vec<u8>, File, Metadata),
    /// A regular file with other links: not read.
    Linked(Metadata),
    /// A regular file larger than [`MAX_READ`]: not read.
    TooLarge(Metadata),
    /// A symbolic link, directory, FIFO, socket or device: not read.
    Other(Metadata),
}

fn cstr(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The components of an absolute target path; `.`, `..` and empty
/// components are refused rather than interpreted.
pub fn components(abs: &str) -> io::Result<Vec<&str>> {
    if !abs.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{abs} is not an absolute path"),
        ));
    }
    let parts: Vec<&str> = abs.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{abs} is not a normal absolute path"),
        ));
    }
    Ok(parts)
}

/// `abs` split into its parent directory and its name (`/etc`, `hosts`).
pub fn split(abs: &str) -> io::Result<(String, &str)> {
    let parts = components(abs)?;
    let (name, dirs) = parts.split_last().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{abs} has no file name"),
        )
    })?;
    Ok((format!("/{}", dirs.join("/")), name))
}

impl Dir {
    /// The target's root. `path` is the caller's (`/`, or `--root DIR`) and
    /// is opened as given.
    pub fn root(path: &Path) -> io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Dir {
            fd,
            path: "/".into(),
        })
    }

    /// This directory's path on the target.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The target path of `name` in this directory.
    pub fn child(&self, name: &str) -> String {
        if self.path == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.path)
        }
    }

    fn openat(&self, name: &str, flags: libc::c_int, mode: u32) -> io::Result<File> {
        let c = cstr(name)?;
        // SAFETY: `c` is a NUL-terminated name that outlives the call; the
        // returned descriptor is new and owned by the File alone.
        let fd = check(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The metadata of entry `name` itself (a link is not followed);
    /// `None` when there is none.
    pub fn entry(&self, name: &str) -> io::Result<Option<Metadata>> {
        match self.openat(name, libc::O_PATH, 0) {
            Ok(f) => f.metadata().map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn obstacle(&self, name: &str, meta: &Metadata) -> Obstacle {
        Obstacle {
            path: self.child(name),
            kind: if meta.file_type().is_symlink() {
                Kind::Symlink
            } else if meta.is_dir() {
                Kind::Dir
            } else {
                Kind::NotDir
            },
            uid: meta.uid(),
        }
    }

    /// The existing directory `name` (not through a link); `None` if
    /// there is nothing by that name.
    pub fn subdir(&self, name: &str) -> io::Result<Option<Result<Dir, Obstacle>>> {
        match self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => Ok(Some(Ok(Dir {
                fd,
                path: self.child(name),
            }))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                match self.entry(name)? {
                    Some(m) => Ok(Some(Err(self.obstacle(name, &m)))),
                    None => Ok(None),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Makes directory `name` with exactly `mode` (the umask is undone) and
    /// opens it; it must not exist.
    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<Dir> {
        let c = cstr(name)?;
        // SAFETY: `c` is a NUL-terminated name that outlives the call.
        check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
        let d = match self.subdir(name)? {
            Some(Ok(d)) => d,
            _ => {
                return Err(io::Error::other(format!(
                    "{} changed while it was made",
                    self.child(name)
                )))
            }
        };
        d.fd.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(d)
    }

    /// The directory at `abs` (absolute on the target, below this directory
    /// when this is the root), each component opened without following a
    /// link. `create`: make missing components, mode 0755, owned by the
    /// agent.
    pub fn walk(&self, abs: &str, create: bool) -> io::Result<Result<Dir, Obstacle>> {
        let mut cur = Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        };
        for name in components(abs)? {
            cur = match cur.subdir(name)? {
                Some(Ok(d)) => d,
                Some(Err(o)) => return Ok(Err(o)),
                None if create => match cur.mkdir(name, 0o755) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match cur.subdir(name)? {
                        Some(Ok(d)) => d,
                        Some(Err(o)) => return Ok(Err(o)),
                        None => return Err(e),
                    },
                    Err(e) => return Err(e),
                },
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", cur.child(name)),
                    ))
                }
            };
        }
        Ok(Ok(cur))
    }

    /// The metadata of this directory (from its descriptor).
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.fd.metadata()
    }

    /// Sets this directory's owner (on the descriptor).
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(&self.fd, Some(uid), Some(gid))
    }

    /// Sets this directory's mode (on the descriptor).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        self.fd
            .set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// Opens the regular file `name` for reading, not through a link and
    /// without blocking on a FIFO; `None` if absent or not a regular file
    /// (then its metadata, if any).
    pub fn open_regular(
        &self,
        name: &str,
    ) -> io::Result<Result<(File, Metadata), Option<Metadata>>> {
        match self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) {
            Ok(f) => {
                let m = f.metadata()?;
                if m.is_file() {
                    Ok(Ok((f, m)))
                } else {
                    Ok(Err(Some(m)))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Err(None)),
            // A symbolic link (ELOOP), or a file we may not open: look at it.
            Err(e) => match self.entry(name)? {
                Some(m) if !m.is_file() => Ok(Err(Some(m))),
                None => Ok(Err(None)),
                Some(_) => Err(e),
            },
        }
    }

    /// Reads the regular file `name` when it has no other link.
    pub fn read(&self, name: &str) -> io::Result<Read> {
        let (mut f, m) = match self.open_regular(name)? {
            Ok(x) => x,
            Err(None) => return Ok(Read::Missing),
            Err(Some(m)) => return Ok(Read::Other(m)),
        };
        if m.nlink() > 1 {
            return Ok(Read::Linked(m));
        }
        if m.len() > MAX_READ {
            return Ok(Read::TooLarge(m));
        }
        let mut data = Vec::with_capacity(m.len() as usize);
        (&mut f).take(MAX_READ + 1).read_to_end(&mut data)?;
        if data.len() as u64 > MAX_READ {
            return Ok(Read::TooLarge(m));
        }
        Ok(Read::Data(data, f, m))
    }

    /// Replaces (or creates) `name` with a new regular file holding `data`,
    /// owned by `owner` (default: the agent) with exactly `mode`, set before
    /// any data is written. Whatever was at `name` (a file, a link, a FIFO;
    /// not a directory) is replaced, never written through.
    pub fn replace(
        &self,
        name: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        cstr(name)?;
        let base = format!(".{name}.tmp{}", std::process::id());
        let mut made = None;
        for n in 0..8 {
            let tmp = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            // A leftover of an interrupted run, or something planted.
            self.remove(&tmp)?;
            match self.openat(
                &tmp,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                mode & 0o777,
            ) {
                Ok(f) => {
                    made = Some((tmp, f));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        let (tmp, mut f) = made.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("no temporary name free for {}", self.child(name)),
            )
        })?;
        let result = (|| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            // After fchown, which clears set-id bits; undoes the umask.
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(data)?;
            f.sync_all()?;
            let (from, to) = (cstr(&tmp)?, cstr(name)?);
            let fd = self.fd.as_raw_fd();
            // SAFETY: both names are NUL-terminated and outlive the call.
            check(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) })?;
            self.fd.sync_all()
        })();
        if result.is_err() {
            let _ = self.remove(&tmp);
        }
        result
    }

    /// Removes the entry `name` (a link itself, never its target); nothing
    /// there is fine. Not for directories.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: `c` is a NUL-terminated name that outlives the call.
        match check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `meta` is a FIFO, socket or device node.
pub fn is_special(meta: &Metadata) -> bool {
    let t = meta.file_type();
    t.is_fifo() || t.is_socket() || t.is_block_device() || t.is_char_device()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn walk_refuses_links_in_any_component() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::create_dir(r.join("outside")).unwrap();
        symlink(r.join("outside"), r.join("a/link")).unwrap();
        let root = Dir::root(r).unwrap();
        assert_eq!(root.walk("/a/b", false).unwrap().unwrap().path(), "/a/b");
        let o = root.walk("/a/link/x", true).unwrap().unwrap_err();
        assert_eq!((o.path.as_str(), o.kind), ("/a/link", Kind::Symlink));
        assert!(!r.join("outside/x").exists(), "created through the link");
        fs::write(r.join("a/file"), "").unwrap();
        let o = root.walk("/a/file/x", true).unwrap().unwrap_err();
        assert_eq!(o.kind, Kind::NotDir);
        assert_eq!(o.to_string(), "/a/file exists and is not a directory");
        assert!(root.walk("/a/../outside", false).is_err());
        // Missing components are made 0755.
        let made = root.walk("/new/deep", true).unwrap().unwrap();
        assert_eq!(made.metadata().unwrap().mode() & 0o7777, 0o755);
        assert!(root.walk("/missing", false).is_err());
    }

    #[test]
    fn read_refuses_links_hard_links_and_fifos() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("secret"), "s").unwrap();
        symlink(r.join("secret"), r.join("soft")).unwrap();
        fs::hard_link(r.join("secret"), r.join("hard")).unwrap();
        let c = CString::new(r.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        fs::write(r.join("plain"), "p").unwrap();
        let root = Dir::root(r).unwrap();
        assert!(matches!(root.read("soft").unwrap(), Read::Other(m) if m.file_type().is_symlink()));
        assert!(matches!(root.read("hard").unwrap(), Read::Linked(_)));
        assert!(matches!(root.read("fifo").unwrap(), Read::Other(m) if is_special(&m)));
        assert!(matches!(root.read("nope").unwrap(), Read::Missing));
        assert!(matches!(root.read("plain").unwrap(), Read::Data(b, _, _) if b == b"p"));
    }

    #[test]
    fn replace_breaks_links_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("target"), "keep").unwrap();
        fs::set_permissions(r.join("target"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink(r.join("target"), r.join("soft")).unwrap();
        fs::hard_link(r.join("target"), r.join("hard")).unwrap();
        // A planted temp name is removed, not written through.
        symlink(
            r.join("target"),
            r.join(format!(".soft.tmp{}", std::process::id())),
        )
        .unwrap();
        let root = Dir::root(r).unwrap();
        root.replace("soft", b"new", 0o600, None).unwrap();
        root.replace("hard", b"new", 0o600, None).unwrap();
        assert_eq!(fs::read_to_string(r.join("target")).unwrap(), "keep");
        assert_eq!(
            fs::metadata(r.join("target")).unwrap().mode() & 0o7777,
            0o640
        );
        assert_eq!(fs::metadata(r.join("target")).unwrap().nlink(), 1);
        for n in ["soft", "hard"] {
            let m = fs::symlink_metadata(r.join(n)).unwrap();
            assert!(m.is_file());
            assert_eq!(m.mode() & 0o7777, 0o600);
            assert_eq!(fs::read_to_string(r.join(n)).unwrap(), "new");
        }
        let mut names: Vec<String> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["hard", "soft", "target"]);
        root.remove("soft").unwrap();
        root.remove("soft").unwrap();
        assert!(!r.join("soft").exists());
    }
}
