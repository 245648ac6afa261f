//! Root trees ⇄ zstd-compressed tar files, with GNU tar.
//!
//! Why GNU tar and not the `tar` crate: the crate (0.4.46) unpacks character
//! and block devices as regular files (it has no mknod path), does not record
//! xattrs when archiving, and leaves hard-link detection to the caller. A root
//! tree has all three (`/dev/null` from mmdebstrap, `security.capability` on
//! `/usr/bin/ping`, hard-linked binaries such as `perl`/`perl5.36`). GNU tar,
//! which mmdebstrap itself uses for the same job, keeps them, and
//! `archive_round_trip` below proves it on each machine.
//!
//! Archives are reproducible: entries sorted by name, numeric owners, POSIX
//! format without atime/ctime, and mtimes clamped to `SOURCE_DATE_EPOCH` (the
//! extracted tree then carries the clamped times too).

use std::path::Path;

use anyhow::Context;
use seeds::cmd;

use crate::progress::Step;

/// zstd through tar's `--use-compress-program`: all cores, level 1 (twice as
/// fast as the default level 3 on a root tree, for 10% more bytes: archiving
/// is on the path of every rebuild).
const ZSTD: &str = "zstd -T0 -1 -q";

fn common_args() -> [&'static str; 5] {
    [
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--format=posix",
    ]
}

/// Archives the tree at `root` into `dest` (tar + zstd). `root` must hold no
/// mounts: the caller unmounts first, and `--one-file-system` is a backstop.
/// `members` chooses the whole tree or some of its paths.
pub fn create(
    root: &Path,
    members: Members<'_>,
    dest: &Path,
    source_date_epoch: i64,
    step: &Step,
) -> anyhow::Result<()> {
    tar_create(root, members, dest, source_date_epoch, Some(ZSTD), step)
}

/// Which paths of a tree an archive holds.
#[derive(Debug, Clone, Copy)]
pub enum Members<'a> {
    /// The whole tree.
    All,
    /// Only these paths (relative, `./etc/motd`), each on its own: a
    /// directory without its contents. Sorted by the caller.
    Only(&'a [std::path::PathBuf]),
}

/// [`create`] in two halves: the tar alone, uncompressed (a quick read of
/// the tree, after which the tree may change), then [`compress`] of that
/// file, which can run while the caller goes on. Extracting the result is
/// the same as extracting [`create`]'s.
pub fn create_uncompressed(
    root: &Path,
    members: Members<'_>,
    dest: &Path,
    source_date_epoch: i64,
    step: &Step,
) -> anyhow::Result<()> {
    tar_create(root, members, dest, source_date_epoch, None, step)
}

/// Compresses the tar file `tar` into `dest` as [`create`] would.
pub fn compress(tar: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut words = ZSTD.split_whitespace();
    let mut c = cmd::command(words.next().expect("a program"), words);
    c.args(["-f", "-o"]).arg(dest).arg(tar);
    cmd::run(&mut c)
        .map(drop)
        .with_context(|| format!("compressing {} into {}", tar.display(), dest.display()))
}

fn tar_create(
    root: &Path,
    members: Members<'_>,
    dest: &Path,
    source_date_epoch: i64,
    compressor: Option<&str>,
    step: &Step,
) -> anyhow::Result<()> {
    let mut c = cmd::command("tar", ["--create"]);
    c.arg(format!("--file={}", dest.display()))
        .arg(format!("--directory={}", root.display()));
    if let Some(z) = compressor {
        c.arg(format!("--use-compress-program={z}"));
    }
    c.args(common_args())
        .args([
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--sort=name",
            "--one-file-system",
            "--clamp-mtime",
        ])
        .arg(format!("--mtime=@{source_date_epoch}"));
    // The list of members, NUL-separated, beside the archive (removed when
    // this returns).
    let list = dest.with_extension("members");
    let _list = match members {
        Members::All => {
            c.arg(".");
            None
        }
        Members::Only(paths) => {
            let mut bytes = Vec::new();
            for p in paths {
                bytes.extend_from_slice(p.as_os_str().as_encoded_bytes());
                bytes.push(0);
            }
            std::fs::write(&list, bytes).with_context(|| format!("writing {}", list.display()))?;
            c.args(["--no-recursion", "--null", "--verbatim-files-from"])
                .arg(format!("--files-from={}", list.display()));
            Some(RemoveOnDrop(&list))
        }
    };
    cmd::run_streaming(&mut c, &mut |l| step.line(l))
        .with_context(|| format!("archiving {} into {}", root.display(), dest.display()))
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Extracts `archive` into the directory `dest` (which exists), restoring
/// owners, modes, hard links, symlinks, device nodes, xattrs and ACLs.
pub fn extract(archive: &Path, dest: &Path, step: &Step) -> anyhow::Result<()> {
    let mut c = cmd::command("tar", ["--extract"]);
    c.arg(format!("--file={}", archive.display()))
        .arg(format!("--directory={}", dest.display()))
        .arg(format!("--use-compress-program={ZSTD}"))
        .args(common_args())
        .args([
            "--same-owner",
            "--preserve-permissions",
            "--delay-directory-restore",
        ]);
    cmd::run_streaming(&mut c, &mut |l| step.line(l))
        .with_context(|| format!("extracting {} into {}", archive.display(), dest.display()))
}
