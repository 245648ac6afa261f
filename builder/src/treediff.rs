//! What a layer changed in a root tree: a snapshot of every path's inode
//! metadata before the layer and after it, compared.
//!
//! The layer cache stores each layer as the paths it changed plus the paths
//! it removed ([`crate::cache`]), so a stack of ten layers costs about one
//! tree of disk rather than ten. A path counts as changed when its inode
//! metadata differs: any write, chmod, chown, xattr or link-count change
//! moves the inode's ctime, and a replaced file is a new inode, so comparing
//! (inode, ctime, mtime, mode, owner, size, links, device) misses nothing a
//! layer can do to a path. Contents are not read: a snapshot of a 1.5 GB
//! tree is one `lstat` per path.
//!
//! Written here rather than taken from a crate: the walk is thirty lines of
//! `std` (no symlink followed, one filesystem), and the comparison is what
//! the cache's correctness rests on, so it is kept small and tested.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The metadata that any change to a path moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            ino: m.ino(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            nlink: m.nlink(),
            rdev: m.rdev(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

/// Every path under a root (relative, `.` for the root itself) with its
/// metadata; the walk stays on the root's filesystem and follows no symlink.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    paths: BTreeMap<Vec<u8>, Stat>,
}

/// What changed between two snapshots of one tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Paths that are new or whose metadata changed, sorted by bytes
    /// (`./etc/motd`; `.` for the root).
    pub changed: Vec<PathBuf>,
    /// Paths that are gone, or whose type changed (a directory that became a
    /// file): removed before the changed paths are restored. Sorted.
    pub removed: Vec<PathBuf>,
}

impl Snapshot {
    /// Walks the tree at `root`.
    pub fn take(root: &Path) -> anyhow::Result<Snapshot> {
        let top =
            fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
        let mut snap = Snapshot::default();
        snap.paths.insert(b".".to_vec(), Stat::of(&top));
        let mut stack = vec![(root.to_path_buf(), b".".to_vec())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for e in rd {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                let path = e.path();
                let m = fs::symlink_metadata(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut r = rel.clone();
                r.push(b'/');
                r.extend_from_slice(e.file_name().as_bytes());
                if m.is_dir() && m.dev() == top.dev() {
                    stack.push((path, r.clone()));
                }
                snap.paths.insert(r, Stat::of(&m));
            }
        }
        Ok(snap)
    }

    /// How many paths the tree holds.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the snapshot holds no path (never true of a taken one).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// What `after` (a later snapshot of the same tree) changed.
    pub fn changes_to(&self, after: &Snapshot) -> Changes {
        let path = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
        let mut out = Changes::default();
        for (p, old) in &self.paths {
            match after.paths.get(p) {
                None => out.removed.push(path(p)),
                Some(new) if new.file_type() != old.file_type() => out.removed.push(path(p)),
                Some(_) => {}
            }
        }
        for (p, new) in &after.paths {
            if self.paths.get(p) != Some(new) {
                out.changed.push(path(p));
            }
        }
        out
    }
}

/// Removes `removed` (paths relative to `root`, as [`Changes::removed`])
/// from the tree at `root`, deepest first, without following a symlink.
pub fn remove_paths(root: &Path, removed: &[PathBuf]) -> anyhow::Result<()> {
    let mut sorted: Vec<&PathBuf> = removed.iter().collect();
    sorted.sort();
    for rel in sorted.into_iter().rev() {
        anyhow::ensure!(
            rel.components().all(|c| matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )),
            "a removed path leaves the tree: {}",
            rel.display()
        );
        let p = root.join(rel);
        // Each ancestor must be a real directory (as it was when recorded).
        if let Some(parent) = p.parent() {
            let mut at = root.to_path_buf();
            for c in parent.strip_prefix(root).unwrap_or(parent).components() {
                at.push(c);
                if at != root && fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
                    anyhow::bail!(
                        "removing {}: {} is not a directory",
                        rel.display(),
                        at.display()
                    );
                }
            }
        }
        let r = match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
        };
        r.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rel(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn every_kind_of_change_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc/keep")).unwrap();
        fs::create_dir_all(r.join("var/gone/deep")).unwrap();
        fs::write(r.join("etc/motd"), "one").unwrap();
        fs::write(r.join("etc/same"), "same").unwrap();
        fs::write(r.join("etc/chmod"), "x").unwrap();
        fs::write(r.join("etc/link"), "l").unwrap();
        fs::write(r.join("var/gone/deep/f"), "f").unwrap();
        fs::create_dir(r.join("etc/dir-to-file")).unwrap();
        symlink("motd", r.join("etc/sym")).unwrap();
        let before = Snapshot::take(r).unwrap();
        assert_eq!(
            before.changes_to(&Snapshot::take(r).unwrap()),
            Changes::default()
        );

        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(r.join("etc/motd"), "two").unwrap();
        fs::set_permissions(r.join("etc/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(r.join("etc/link"), r.join("etc/keep/link2")).unwrap();
        fs::remove_dir_all(r.join("var/gone")).unwrap();
        fs::remove_dir(r.join("etc/dir-to-file")).unwrap();
        fs::write(r.join("etc/dir-to-file"), "now a file").unwrap();
        fs::remove_file(r.join("etc/sym")).unwrap();
        symlink("same", r.join("etc/sym")).unwrap();
        let after = Snapshot::take(r).unwrap();
        let c = before.changes_to(&after);
        assert_eq!(
            c.removed,
            rel(&[
                "./etc/dir-to-file",
                "./var/gone",
                "./var/gone/deep",
                "./var/gone/deep/f"
            ])
        );
        // Directories whose entries changed, the edited, chmodded and
        // linked files (both names of the inode), the replaced symlink.
        for p in [
            "./etc",
            "./etc/motd",
            "./etc/chmod",
            "./etc/link",
            "./etc/keep",
            "./etc/keep/link2",
            "./etc/dir-to-file",
            "./etc/sym",
            "./var",
        ] {
            assert!(c.changed.contains(&PathBuf::from(p)), "{p} not seen: {c:?}");
        }
        assert!(!c.changed.contains(&PathBuf::from("./etc/same")));
        let mut sorted = c.changed.clone();
        sorted.sort();
        assert_eq!(sorted, c.changed);
    }

    #[test]
    fn removal_is_deepest_first_and_follows_no_symlink() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "keep me").unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/c"), "c").unwrap();
        symlink(outside.path(), r.join("l")).unwrap();
        remove_paths(r, &rel(&["./a", "./a/b", "./a/b/c", "./missing"])).unwrap();
        assert!(!r.join("a").exists());
        // Through a symlinked directory: refused, the target untouched.
        let e = remove_paths(r, &rel(&["./l/victim"])).unwrap_err();
        assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
        assert!(outside.path().join("victim").exists());
        // The symlink itself is removed as a link.
        remove_paths(r, &rel(&["./l"])).unwrap();
        assert!(outside.path().join("victim").exists());
        assert!(remove_paths(r, &rel(&["../x"])).is_err());
    }
}
