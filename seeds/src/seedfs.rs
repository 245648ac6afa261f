//! What the seed reader's filesystems share ([`crate::iso`], [`crate::fat`],
//! [`crate::udf`], and [`crate::seed`] that picks one): the result ([`Seed`]), its errors
//! and [`Limits`], and the bounds-checked [`Device`] and the file
//! [`Collector`] both readers fill.
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

/// The filesystem a seed was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// ISO9660 (with or without Rock Ridge / Joliet).
    Iso9660,
    /// FAT with 12-bit cluster numbers (small vfat images).
    Fat12,
    /// FAT with 16-bit cluster numbers.
    Fat16,
    /// FAT32.
    Fat32,
    /// UDF (Azure's provisioning DVD).
    Udf,
}

impl FsKind {
    /// The name `blkid` uses for this kind (`iso9660` or `vfat`).
    pub fn blkid_type(self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => "vfat",
            FsKind::Udf => "udf",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Udf => "udf",
        })
    }
}

/// Why a device could not be read as a seed.
///
/// Callers scanning devices match on [`SeedError::NotSeed`] (skip the device
/// quietly) versus the others (the device claims to be a seed filesystem but
/// cannot be trusted: report it).
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// No ISO9660, UDF or FAT signature was found.
    #[error("not a seed filesystem (no ISO9660, UDF or FAT signature)")]
    NotSeed,
    /// The filesystem was recognised but its structures are inconsistent.
    #[error("corrupt {fs} filesystem: {reason}")]
    Corrupt {
        /// The filesystem that was recognised.
        fs: FsKind,
        /// What was wrong, for a log line.
        reason: String,
    },
    /// The filesystem is well-formed but larger than a seed may be.
    #[error("{fs} filesystem exceeds a seed limit: {reason}")]
    Limit {
        /// The filesystem that was recognised.
        fs: FsKind,
        /// Which limit, for a log line.
        reason: String,
    },
    /// The device could not be read.
    #[error("reading the seed device: {0}")]
    Io(#[from] io::Error),
}

/// Bounds on what the reader accepts; every seed we know is far below them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, in bytes.
    pub max_file_size: u64,
    /// Largest sum of all file sizes, in bytes; also the most directory and
    /// Rock Ridge metadata read, so that many overlapping directories cannot
    /// make a small image expensive to read.
    pub max_total_size: u64,
    /// Most directory entries (files and directories) over the whole tree.
    pub max_entries: usize,
    /// Deepest directory nesting (`openstack/latest/user_data` is depth 2).
    pub max_depth: usize,
    /// Largest single directory, in bytes of on-disk records.
    pub max_dir_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 4 << 20,
            max_total_size: 16 << 20,
            max_entries: 1024,
            max_depth: 8,
            max_dir_bytes: 1 << 20,
        }
    }
}

/// The files of a seed filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Which filesystem the seed was read from.
    pub kind: FsKind,
    /// The volume label (`cidata`, `CIDATA`, `config-2`), trailing spaces
    /// removed; empty if the filesystem has none.
    pub label: String,
    /// Every regular file, keyed by its path relative to the root with `/`
    /// separators (`user-data`, `openstack/latest/user_data`). Directories
    /// are implied by the paths.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Entries that are neither regular files nor directories (Rock Ridge
    /// symbolic links, FIFOs, sockets, device nodes), keyed like `files`,
    /// with what they are (`"a symlink"`); their content is never read.
    pub not_regular: BTreeMap<String, &'static str>,
}

impl Seed {
    /// The bytes of the file at `path` (relative, `/`-separated; a leading
    /// `/` is ignored), if it exists.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files
            .get(path.trim_start_matches('/'))
            .map(Vec::as_slice)
    }

    /// What the entry at `path` is when it is neither a regular file nor a
    /// directory (`"a symlink"`); see [`Seed::not_regular`].
    pub fn not_regular_at(&self, path: &str) -> Option<&'static str> {
        self.not_regular.get(path.trim_start_matches('/')).copied()
    }
}

/// A reader of known length on which every read is bounds-checked.
pub(crate) struct Device<R> {
    inner: R,
    len: u64,
}

/// Why [`Device::read_at`] failed.
pub(crate) enum ReadError {
    /// The range lies (partly) past the end of the device.
    OutOfBounds,
    Io(io::Error),
}

impl<R: Read + Seek> Device<R> {
    pub(crate) fn new(mut inner: R) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(Device { inner, len })
    }

    /// The size of the device in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from `offset`, refusing ranges past the end of the device.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(ReadError::OutOfBounds)?;
        if end > self.len {
            return Err(ReadError::OutOfBounds);
        }
        self.inner
            .seek(SeekFrom::Start(offset))
            .map_err(ReadError::Io)?;
        self.inner.read_exact(buf).map_err(ReadError::Io)
    }

    /// Like [`Device::read_at`], but a range past the end is `Ok(false)`:
    /// for signature checks, where a short device is simply not a match.
    pub(crate) fn read_if_present(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        match self.read_at(offset, buf) {
            Ok(()) => Ok(true),
            Err(ReadError::OutOfBounds) => Ok(false),
            Err(ReadError::Io(e)) => Err(e),
        }
    }
}

/// Tracks the [`Limits`] while a tree is walked, and collects the files.
pub(crate) struct Collector<'a> {
    pub(crate) fs: FsKind,
    pub(crate) limits: &'a Limits,
    entries: usize,
    total: u64,
    metadata: u64,
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    pub(crate) not_regular: BTreeMap<String, &'static str>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(fs: FsKind, limits: &'a Limits) -> Self {
        Collector {
            fs,
            limits,
            entries: 0,
            total: 0,
            metadata: 0,
            files: BTreeMap::new(),
            not_regular: BTreeMap::new(),
        }
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> SeedError {
        SeedError::Corrupt {
            fs: self.fs,
            reason: reason.into(),
        }
    }

    pub(crate) fn limit(&self, reason: impl Into<String>) -> SeedError {
        SeedError::Limit {
            fs: self.fs,
            reason: reason.into(),
        }
    }

    /// Maps a failed read of `what` to a typed error.
    pub(crate) fn read_error(&self, e: ReadError, what: &str) -> SeedError {
        match e {
            ReadError::OutOfBounds => {
                self.corrupt(format!("{what} lies past the end of the device"))
            }
            ReadError::Io(e) => SeedError::Io(e),
        }
    }

    /// Counts one more directory entry.
    pub(crate) fn count_entry(&mut self) -> Result<(), SeedError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.limit(format!("more than {} entries", self.limits.max_entries)));
        }
        Ok(())
    }

    /// Checks a directory's nesting depth (1 for a directory in the root).
    pub(crate) fn check_depth(&self, depth: usize, path: &str) -> Result<(), SeedError> {
        if depth > self.limits.max_depth {
            return Err(self.limit(format!(
                "{path}: deeper than {} directories",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    /// Checks a directory's size in bytes before it is read.
    pub(crate) fn check_dir_size(&self, size: u64, path: &str) -> Result<(), SeedError> {
        if size > self.limits.max_dir_bytes {
            return Err(self.limit(format!(
                "directory {path:?} is {size} bytes (limit {})",
                self.limits.max_dir_bytes
            )));
        }
        Ok(())
    }

    /// Counts `bytes` of directories or other metadata about to be read.
    pub(crate) fn reserve_metadata(&mut self, bytes: u64) -> Result<(), SeedError> {
        self.metadata = self.metadata.saturating_add(bytes);
        if self.metadata > self.limits.max_total_size {
            return Err(self.limit(format!(
                "directories add up to more than {} bytes",
                self.limits.max_total_size
            )));
        }
        Ok(())
    }

    /// Checks a file's size against the per-file and total limits before it
    /// is read, and reserves it in the total.
    pub(crate) fn reserve_file(&mut self, size: u64, path: &str) -> Result<(), SeedError> {
        if size > self.limits.max_file_size {
            return Err(self.limit(format!(
                "{path}: {size} bytes (limit {} per file)",
                self.limits.max_file_size
            )));
        }
        let total = self.total.saturating_add(size);
        if total > self.limits.max_total_size {
            return Err(self.limit(format!(
                "files add up to more than {} bytes",
                self.limits.max_total_size
            )));
        }
        self.total = total;
        Ok(())
    }

    /// Adds an entry that is not a regular file (`what`: "a symlink").
    pub(crate) fn add_not_regular(
        &mut self,
        path: String,
        what: &'static str,
    ) -> Result<(), SeedError> {
        if self.files.contains_key(&path) || self.not_regular.contains_key(&path) {
            return Err(self.corrupt(format!("two entries named {path:?}")));
        }
        self.not_regular.insert(path, what);
        Ok(())
    }

    /// Adds a file; a second file with the same path is corrupt.
    pub(crate) fn add_file(&mut self, path: String, data: Vec<u8>) -> Result<(), SeedError> {
        if self.files.contains_key(&path) || self.not_regular.contains_key(&path) {
            return Err(self.corrupt(format!("two entries named {path:?}")));
        }
        self.files.insert(path, data);
        Ok(())
    }
}

/// Checks one name decoded from the filesystem and joins it to `parent`.
/// Names that could escape or confuse a path (`.`, `..`, `/`, NUL, empty)
/// are corrupt.
pub(crate) fn join_name(c: &Collector<'_>, parent: &str, name: &str) -> Result<String, SeedError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(c.corrupt(format!("invalid file name {name:?} in {parent:?}")));
    }
    Ok(if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    })
}
