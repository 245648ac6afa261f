//! The content-addressed layer cache.
//!
//! Each entry is one layer's change to the root tree: the paths the layer
//! added or changed, as a zstd-compressed tar (`layers/KEY.tar.zst`), and the
//! paths it removed, in the entry's manifest (`layers/KEY.json`, which also
//! records what went into the key). The base layer's entry is its whole tree;
//! every other entry names the entry it applies on (`delta.of`: its parent
//! layer, or its own package stage). A tree is restored by extracting the
//! chain from the base up ([`Cache::extract`]), each step first removing what
//! its layer removed. Whole trees per layer cost a tree's worth of disk per
//! layer (about 6 GB for the appliance's chain of a dozen entries); deltas
//! cost about one tree per chain, for a restore that reads every entry of the
//! chain instead of one (see [`crate::treediff`] for how changes are found).
//!
//! The key is the sha256 of the canonical JSON of [`Inputs`]: the cache format
//! version, the layer name, the parent's key, for the base layer its settings
//! (distro, suite, mirror, components, variant), the sha256 of the archive's
//! `InRelease` (so a changed archive is a new base) and `SOURCE_DATE_EPOCH`,
//! the canonical recipe (YAML comments, key order and package order do not
//! matter), and every input file's path, type, mode and sha256.
//!
//! A layer with packages and further steps also gets an entry for the tree
//! right after its packages (layer name `NN-name+packages`, keyed by the
//! parent and the package list), so a changed file or script does not rerun
//! apt (see [`crate::rootfs`]).
//!
//! An entry is written under a temporary name and renamed; the manifest is
//! written (atomically) last and is what makes an entry exist, so an
//! interrupted build never leaves a corrupt entry. An entry whose chain is
//! incomplete (an entry below it was removed) does not exist either, and
//! `gc` deletes it; `gc` keeps every entry a kept entry builds on. An
//! exclusive `flock` on `lock` serializes builds, gc and rm on one cache
//! directory.
//!
//! Layout: `layers/` (entries), `images/` (the last assembled images, see
//! [`crate::imagecache`]), `apt-archives/` (downloaded .debs, shared by all
//! builds), `apt-lists/` (apt's package lists), `work/` (work trees of
//! running builds, removed when they end).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::entries;
use crate::exit::bad_input;
use crate::recipe::BaseSettings;

/// Bumped whenever the meaning of an entry or key changes.
pub const FORMAT: u32 = 3;

/// The longest chain of entries a tree is restored from (a stack has a
/// dozen; a manifest naming more is refused).
const MAX_CHAIN: usize = 256;

/// The parent of a layer, as recorded in its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub layer: String,
    pub key: String,
}

/// Inputs of the base layer beyond its recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInputs {
    pub settings: BaseSettings,
    /// sha256 of the suite's InRelease (or Release) file.
    pub archive: String,
    pub source_date_epoch: i64,
}

/// Everything a layer's key is computed from (written beside the entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub format: u32,
    pub layer: String,
    pub parent: Option<ParentRef>,
    pub base: Option<BaseInputs>,
    /// The canonical recipe (a JSON object).
    pub recipe: serde_json::Value,
    /// Input files: `files/etc/motd` → `file 0644 SHA256`, `dir 0755`,
    /// `symlink TARGET`; scripts and host files likewise.
    pub files: BTreeMap<String, String>,
    /// The updates step's moving pockets (`-updates`, `-security`) and their
    /// InRelease state; empty for every other layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pockets: Vec<crate::pockets::PocketState>,
}

impl Inputs {
    /// The cache key: sha256 of the canonical JSON, in hex.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("inputs serialize");
        hex::encode(Sha256::digest(&json))
    }
}

/// Why `new` misses where `old` (the latest entry of the same layer) was
/// built: short phrases, most important first.
pub fn diff(old: &Inputs, new: &Inputs) -> Vec<String> {
    let mut why = Vec::new();
    if old.format != new.format {
        why.push("the cache format changed".to_string());
    }
    match (&old.parent, &new.parent) {
        (Some(a), Some(b)) if a.layer != b.layer => {
            why.push(format!("parent is now {} (was {})", b.layer, a.layer))
        }
        (Some(a), Some(b)) if a.key != b.key => why.push(format!("parent {} changed", b.layer)),
        (a, b) if a.is_some() != b.is_some() => why.push("parent changed".into()),
        _ => {}
    }
    if let (Some(a), Some(b)) = (&old.base, &new.base) {
        let (sa, sb) = (&a.settings, &b.settings);
        for (field, x, y) in [
            ("distro", sa.distro.to_string(), sb.distro.to_string()),
            ("suite", sa.suite.clone(), sb.suite.clone()),
            ("mirror", sa.mirror.clone(), sb.mirror.clone()),
            (
                "security mirror",
                sa.security_mirror.clone(),
                sb.security_mirror.clone(),
            ),
            (
                "pockets",
                if sa.release_only {
                    "release only"
                } else {
                    "all"
                }
                .to_string(),
                if sb.release_only {
                    "release only"
                } else {
                    "all"
                }
                .to_string(),
            ),
            (
                "components",
                sa.components.join(","),
                sb.components.join(","),
            ),
            ("variant", sa.variant.clone(), sb.variant.clone()),
        ] {
            if x != y {
                why.push(format!("base {field} changed ({x} → {y})"));
            }
        }
        if a.archive != b.archive {
            why.push(format!("the archive changed ({} InRelease)", sb.suite));
        }
        if a.source_date_epoch != b.source_date_epoch {
            why.push(format!(
                "SOURCE_DATE_EPOCH changed ({} → {})",
                a.source_date_epoch, b.source_date_epoch
            ));
        }
    }
    why.extend(crate::pockets::describe_moves(&old.pockets, &new.pockets));
    let empty = serde_json::Map::new();
    let ra = old.recipe.as_object().unwrap_or(&empty);
    let rb = new.recipe.as_object().unwrap_or(&empty);
    let mut fields: Vec<&String> = ra.keys().chain(rb.keys()).collect();
    fields.sort();
    fields.dedup();
    for f in fields {
        if ra.get(f) != rb.get(f) {
            why.push(format!("recipe {f} changed"));
        }
    }
    let mut paths: Vec<&String> = old.files.keys().chain(new.files.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        match (old.files.get(p), new.files.get(p)) {
            (Some(a), Some(b)) if a != b => why.push(format!("{p} changed")),
            (None, Some(_)) => why.push(format!("{p} added")),
            (Some(_), None) => why.push(format!("{p} removed")),
            _ => {}
        }
    }
    why
}

/// A summary of [`diff`] for one log line.
pub fn describe_diff(why: &[String]) -> String {
    match why.len() {
        0 => "inputs are the same as a removed entry".into(),
        1..=4 => why.join(", "),
        n => format!("{}, and {} more", why[..3].join(", "), n - 3),
    }
}

/// sha256 of a file's bytes, in hex.
pub fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Describes one input path for [`Inputs::files`].
pub fn describe_path(path: &Path) -> anyhow::Result<String> {
    let m = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = m.permissions().mode() & 0o7777;
    let ft = m.file_type();
    Ok(if ft.is_symlink() {
        format!("symlink {}", fs::read_link(path)?.display())
    } else if ft.is_dir() {
        format!("dir {mode:04o}")
    } else if ft.is_file() {
        format!("file {mode:04o} {}", hash_file(path)?)
    } else {
        return Err(bad_input(format!(
            "{}: only files, directories and symlinks may be layer inputs",
            path.display()
        )));
    })
}

/// Adds every path under `dir` to `out` as `prefix/relative/path`.
pub fn describe_tree(
    dir: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}/{name}");
        let path = e.path();
        out.insert(rel.clone(), describe_path(&path)?);
        if e.file_type()?.is_dir() {
            describe_tree(&path, &rel, out)?;
        }
    }
    Ok(())
}

pub use crate::entries::check_key_prefix;

/// What is stored beside an entry (`KEY.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    pub key: String,
    pub layer: String,
    /// Unix time the entry was written.
    pub created: u64,
    /// Size of the archive in bytes.
    pub size: u64,
    pub inputs: Inputs,
    /// What the archive applies on; `None` for a whole tree (the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

/// An entry that holds one layer's change to the tree of another entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The key of the entry whose tree this one changes.
    pub of: String,
    /// Paths (relative, `./var/lib/apt/lists/x`) the layer removed or
    /// replaced by another type, deleted before the archive is extracted.
    pub removed: Vec<PathBuf>,
}

/// Takes an exclusive `flock` on `path` (created if missing), waiting and
/// saying so while another process holds it; `what` names it in that message.
pub fn lock_file(path: &Path, what: &str) -> anyhow::Result<CacheLock> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match fs4::FileExt::try_lock(&f) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            tracing::info!(
                "waiting for another imgbuild using {what} ({})",
                path.display()
            );
            fs4::FileExt::lock(&f).with_context(|| format!("locking {}", path.display()))?;
        }
        Err(fs4::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    Ok(CacheLock { _file: f })
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Holds the cache's exclusive lock until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl Cache {
    /// Opens (creating) the cache at `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Cache> {
        for sub in [
            "layers",
            "images",
            "work",
            "apt-archives/partial",
            "apt-lists",
        ] {
            fs::create_dir_all(dir.join(sub)).with_context(|| {
                format!("creating the cache directory {}", dir.join(sub).display())
            })?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock, waiting (and saying so) while another
    /// imgbuild holds it.
    pub fn lock(&self) -> anyhow::Result<CacheLock> {
        lock_file(&self.dir.join("lock"), "the cache")
    }

    /// Takes the exclusive lock if no other process holds it.
    pub fn try_lock(&self) -> anyhow::Result<Option<CacheLock>> {
        let path = self.dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match fs4::FileExt::try_lock(&f) {
            Ok(()) => Ok(Some(CacheLock { _file: f })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The shared apt package directory.
    pub fn apt_archives(&self) -> PathBuf {
        self.dir.join("apt-archives")
    }

    /// apt's package lists for one base configuration.
    pub fn apt_lists(&self, base: &BaseSettings) -> PathBuf {
        let id = serde_json::to_vec(base).expect("serializes");
        self.dir
            .join("apt-lists")
            .join(&hex::encode(Sha256::digest(&id))[..16])
    }

    /// A fresh work directory path for this process.
    pub fn work_path(&self, what: &str) -> PathBuf {
        self.dir
            .join("work")
            .join(format!("{}-{what}", std::process::id()))
    }

    pub fn archive_path(&self, key: &str) -> PathBuf {
        self.dir.join("layers").join(format!("{key}.tar.zst"))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.dir.join("layers").join(format!("{key}.json"))
    }

    /// Where to write an archive before [`Cache::store`] renames it.
    pub fn temp_archive_path(&self, key: &str) -> PathBuf {
        self.dir
            .join("layers")
            .join(format!(".{key}.tar.zst.tmp{}", std::process::id()))
    }

    /// The entry for `key`, when it and every entry below it are complete.
    pub fn lookup(&self, key: &str) -> Option<EntryMeta> {
        self.chain(key).ok()?.pop()
    }

    /// One entry's manifest, without looking at the entries below it.
    fn read_meta(&self, key: &str) -> Option<EntryMeta> {
        if !self.archive_path(key).is_file() {
            return None;
        }
        let text = fs::read(self.meta_path(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The entries a tree is restored from, the base first and `key` last.
    pub fn chain(&self, key: &str) -> anyhow::Result<Vec<EntryMeta>> {
        let mut out = Vec::new();
        let mut at = key.to_string();
        loop {
            let Some(meta) = self.read_meta(&at) else {
                match out.last() {
                    None => bail!("no cache entry {at} in {}", self.dir.display()),
                    Some(_) => bail!(
                        "cache entry {key}: the entry it builds on, {at}, is gone from {} (`imgbuild cache gc` removes what can no longer be restored; the next build rebuilds it)",
                        self.dir.display()
                    ),
                }
            };
            if out.len() >= MAX_CHAIN {
                bail!("cache entry {key}: a chain of more than {MAX_CHAIN} entries");
            }
            let below = meta.delta.as_ref().map(|d| d.of.clone());
            out.push(meta);
            match below {
                Some(k) => at = k,
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Restores the tree of entry `key` into the directory `dest` (which
    /// exists and is empty): the base's archive, then each delta's removals
    /// and archive.
    pub fn extract(
        &self,
        key: &str,
        dest: &Path,
        step: &crate::progress::Step,
    ) -> anyhow::Result<()> {
        let chain = self.chain(key)?;
        let n = chain.len();
        for (i, e) in chain.iter().enumerate() {
            if n > 1 {
                step.line(&format!("{}/{n}: {} ({})", i + 1, e.layer, &e.key[..12]));
            }
            if let Some(d) = &e.delta {
                crate::treediff::remove_paths(dest, &d.removed)
                    .with_context(|| format!("restoring {} from the cache", e.layer))?;
            }
            crate::archive::extract(&self.archive_path(&e.key), dest, step)?;
        }
        Ok(())
    }

    /// Marks an entry as used now (its manifest's mtime orders gc).
    pub fn touch(&self, key: &str) {
        entries::touch(&self.meta_path(key));
    }

    /// The most recently written entry of the layer `name`.
    pub fn latest(&self, name: &str) -> Option<EntryMeta> {
        self.list()
            .ok()?
            .into_iter()
            .filter(|e| e.layer == name)
            .max_by_key(|e| e.created)
    }

    /// Moves the archive at `temp` into place and writes the manifest; with
    /// `delta`, the archive holds a change to that entry's tree.
    pub fn store(
        &self,
        temp: &Path,
        inputs: &Inputs,
        delta: Option<Delta>,
    ) -> anyhow::Result<EntryMeta> {
        let key = inputs.key();
        let size = fs::metadata(temp)
            .with_context(|| format!("reading {}", temp.display()))?
            .len();
        File::open(temp)?.sync_all()?;
        let dest = self.archive_path(&key);
        fs::rename(temp, &dest)
            .with_context(|| format!("moving {} to {}", temp.display(), dest.display()))?;
        let meta = EntryMeta {
            key: key.clone(),
            layer: inputs.layer.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            size,
            inputs: inputs.clone(),
            delta,
        };
        let json = serde_json::to_vec_pretty(&meta)?;
        seeds::atomic::write_atomic(&self.meta_path(&key), &json, 0o644)
            .with_context(|| format!("writing {}", self.meta_path(&key).display()))?;
        Ok(meta)
    }

    /// Every complete entry, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<EntryMeta>> {
        let dir = self.dir.join("layers");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in rd {
            let p = e?.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.')) {
                if let Some(meta) = self.lookup(key) {
                    out.push(meta);
                }
            }
        }
        out.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        Ok(out)
    }

    /// Unix time an entry was last used (written or hit).
    pub fn last_used(&self, key: &str) -> u64 {
        entries::last_used(&self.meta_path(key))
    }

    /// Deletes one entry, named by its key or a unique prefix of it (8+ chars).
    pub fn remove(&self, key_or_prefix: &str) -> anyhow::Result<EntryMeta> {
        check_key_prefix(key_or_prefix)?;
        let all = self.list()?;
        let matches = entries::matching(&all, key_or_prefix, |e| &e.key);
        match matches.as_slice() {
            [one] => {
                let above: Vec<&EntryMeta> = all
                    .iter()
                    .filter(|e| e.delta.as_ref().is_some_and(|d| d.of == one.key))
                    .collect();
                if let Some(first) = above.first() {
                    return Err(bad_input(format!(
                        "{} ({}) is what {} other entr{} build on, e.g. {} ({}): remove {} first, or use `imgbuild cache gc`",
                        &one.key[..12],
                        one.layer,
                        above.len(),
                        if above.len() == 1 { "y" } else { "ies" },
                        &first.key[..12],
                        first.layer,
                        if above.len() == 1 { "it" } else { "them" },
                    )));
                }
                self.delete(&one.key)?;
                Ok((*one).clone())
            }
            [] => Err(bad_input(format!(
                "no cache entry {key_or_prefix} in {}",
                self.dir.display()
            ))),
            many => Err(bad_input(format!(
                "{key_or_prefix} matches {} entries; give more digits",
                many.len()
            ))),
        }
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        // The manifest first: without it the entry no longer exists.
        for p in [self.meta_path(key), self.archive_path(key)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", p.display())),
            }
        }
        Ok(())
    }

    /// Keeps the `keep` most recently used entries of each layer name and
    /// deletes the rest, plus temporary files and work trees left by builds
    /// that were killed. Returns the deleted entries.
    pub fn gc(&self, keep: usize) -> anyhow::Result<Vec<EntryMeta>> {
        let mut by_layer: BTreeMap<String, Vec<EntryMeta>> = BTreeMap::new();
        for e in self.list()? {
            by_layer.entry(e.layer.clone()).or_default().push(e);
        }
        let mut doomed: BTreeMap<String, EntryMeta> = BTreeMap::new();
        for (_, layer_entries) in by_layer {
            for e in
                entries::beyond_keep(layer_entries, keep, |e| (self.last_used(&e.key), e.created))
            {
                doomed.insert(e.key.clone(), e);
            }
        }
        // Keep what a kept entry builds on.
        for e in self.list()? {
            if doomed.contains_key(&e.key) {
                continue;
            }
            for below in self.chain(&e.key)? {
                doomed.remove(&below.key);
            }
        }
        let mut removed: Vec<EntryMeta> = doomed.into_values().collect();
        removed.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        for e in &removed {
            self.delete(&e.key)?;
        }
        // Entries whose chain is broken can never be used.
        if let Ok(rd) = fs::read_dir(self.dir.join("layers")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.')) else {
                    continue;
                };
                if self.chain(key).is_err() {
                    if let Some(meta) = self.read_meta(key) {
                        removed.push(meta);
                    }
                    self.delete(key)?;
                }
            }
        }
        // Leftovers of killed builds: temp archives and work trees.
        if let Ok(rd) = fs::read_dir(self.dir.join("layers")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.dir.join("work")) {
            for e in rd.flatten() {
                // Work trees are named PID-...: leave those of running builds
                // (whose tree may outlive their hold on the lock).
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().unwrap_or_default();
                if !pid.is_empty() && Path::new("/proc").join(pid).exists() {
                    continue;
                }
                if let Err(err) = crate::mount::remove_unless_mounted(&e.path()) {
                    tracing::warn!("{err:#}");
                }
            }
        }
        Ok(removed)
    }

    /// Fails unless `key` is a complete entry.
    pub fn require(&self, key: &str) -> anyhow::Result<EntryMeta> {
        match self.lookup(key) {
            Some(m) => Ok(m),
            None => bail!("cache entry {key} vanished from {}", self.dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Distro;

    fn inputs() -> Inputs {
        let mut files = BTreeMap::new();
        files.insert("files/etc/motd".to_string(), "file 0644 abc".to_string());
        Inputs {
            format: FORMAT,
            layer: "10-boot".into(),
            parent: Some(ParentRef {
                layer: "00-base".into(),
                key: "k0".into(),
            }),
            base: None,
            recipe: serde_json::json!({"packages": ["a", "b"], "scripts": []}),
            files,
            pockets: Vec::new(),
        }
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        let a = inputs();
        assert_eq!(a.key(), inputs().key());
        assert_eq!(a.key().len(), 64);
        let mut b = inputs();
        b.recipe = serde_json::json!({"packages": ["a", "b", "c"], "scripts": []});
        assert_ne!(a.key(), b.key());
        assert_eq!(describe_diff(&diff(&a, &b)), "recipe packages changed");
        let mut c = inputs();
        c.parent.as_mut().unwrap().key = "k1".into();
        assert_ne!(a.key(), c.key());
        assert_eq!(diff(&a, &c), vec!["parent 00-base changed"]);
        let mut d = inputs();
        d.files
            .insert("files/etc/motd".into(), "file 0600 abc".into());
        d.files.insert("files/etc/new".into(), "file 0644 x".into());
        assert_ne!(a.key(), d.key());
        assert_eq!(
            diff(&a, &d),
            vec!["files/etc/motd changed", "files/etc/new added"]
        );
    }

    #[test]
    fn base_diffs_name_the_setting() {
        let settings = BaseSettings {
            distro: Distro::Debian,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: "http://deb.debian.org/debian-security".into(),
            release_only: false,
            keyrings: Vec::new(),
            components: vec!["main".into()],
            variant: "minbase".into(),
        };
        let mut a = inputs();
        a.parent = None;
        a.base = Some(BaseInputs {
            settings: settings.clone(),
            archive: "h1".into(),
            source_date_epoch: 1,
        });
        let mut b = a.clone();
        b.base.as_mut().unwrap().settings.mirror = "http://m/debian".into();
        b.base.as_mut().unwrap().archive = "h2".into();
        let why = diff(&a, &b);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].starts_with("base mirror changed"), "{why:?}");
        assert!(why[1].contains("archive changed"), "{why:?}");
    }

    #[test]
    fn describe_paths_track_bytes_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let one = describe_path(&f).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        let two = describe_path(&f).unwrap();
        assert_ne!(one, two);
        fs::write(&f, "y").unwrap();
        assert_ne!(two, describe_path(&f).unwrap());
        std::os::unix::fs::symlink("target", d.path().join("l")).unwrap();
        assert_eq!(
            describe_path(&d.path().join("l")).unwrap(),
            "symlink target"
        );
    }

    #[test]
    fn store_list_gc_rm() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let _lock = cache.lock().unwrap();
        let mut keys = Vec::new();
        for i in 0..3 {
            let mut inp = inputs();
            inp.recipe = serde_json::json!({ "n": i });
            let tmp = cache.temp_archive_path(&inp.key());
            fs::write(&tmp, format!("archive {i}")).unwrap();
            let meta = cache.store(&tmp, &inp, None).unwrap();
            assert!(!tmp.exists());
            assert_eq!(cache.lookup(&meta.key).unwrap().size, 9);
            keys.push(meta.key);
        }
        assert_eq!(cache.list().unwrap().len(), 3);
        assert!(cache.latest("10-boot").is_some());
        let e = format!("{:#}", cache.remove("abc").unwrap_err());
        assert!(e.contains("at least 8"), "{e}");
        cache.remove(&keys[0][..12]).unwrap();
        assert!(cache.lookup(&keys[0]).is_none());
        let removed = cache.gc(1).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(cache.list().unwrap().len(), 1);
    }

    /// Stores a delta entry `layer` on `of`, whose archive holds `files`
    /// (relative paths → contents) and whose manifest removes `removed`.
    fn store_delta(
        cache: &Cache,
        layer: &str,
        of: Option<&str>,
        files: &[(&str, &str)],
        removed: &[&str],
    ) -> String {
        let src = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        for (p, text) in files {
            let path = src.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            members.push(PathBuf::from(format!("./{p}")));
        }
        members.sort();
        let mut inp = inputs();
        inp.layer = layer.into();
        inp.recipe = serde_json::json!({ "layer": layer, "files": format!("{files:?}") });
        let tmp = cache.temp_archive_path(&inp.key());
        let p = crate::progress::Progress::plain();
        let step = p.step("archiving");
        crate::archive::create(
            src.path(),
            crate::archive::Members::Only(&members),
            &tmp,
            0,
            &step,
        )
        .unwrap();
        let delta = of.map(|k| Delta {
            of: k.to_string(),
            removed: removed.iter().map(PathBuf::from).collect(),
        });
        cache.store(&tmp, &inp, delta).unwrap().key
    }

    #[test]
    fn deltas_restore_the_tree_and_gc_keeps_their_chain() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let _lock = cache.lock().unwrap();
        let base = store_delta(
            &cache,
            "00-base",
            None,
            &[("etc/a", "1"), ("etc/b", "1")],
            &[],
        );
        let one = store_delta(
            &cache,
            "10-one",
            Some(&base),
            &[("etc/a", "2")],
            &["./etc/b"],
        );
        let two = store_delta(&cache, "20-two", Some(&one), &[("etc/c", "3")], &[]);
        assert_eq!(cache.chain(&two).unwrap().len(), 3);
        let out = tempfile::tempdir().unwrap();
        let p = crate::progress::Progress::plain();
        cache
            .extract(&two, out.path(), &p.step("extracting"))
            .unwrap();
        assert_eq!(fs::read_to_string(out.path().join("etc/a")).unwrap(), "2");
        assert!(!out.path().join("etc/b").exists());
        assert_eq!(fs::read_to_string(out.path().join("etc/c")).unwrap(), "3");

        // rm of an entry others build on is refused, naming one of them.
        let e = format!("{:#}", cache.remove(&one).unwrap_err());
        assert!(e.contains("20-two") && e.contains("remove it first"), "{e}");
        // gc keeps the chain of the kept top entry, whatever its layers' age.
        assert!(cache.gc(1).unwrap().is_empty());
        assert_eq!(cache.list().unwrap().len(), 3);
        // A newer 10-one: the old one stays while 20-two builds on it.
        let one_b = store_delta(&cache, "10-one", Some(&base), &[("etc/a", "9")], &[]);
        cache.touch(&one_b);
        assert!(cache.gc(1).unwrap().is_empty());
        // Without 20-two, the old 10-one goes.
        cache.remove(&two).unwrap();
        let removed = cache.gc(1).unwrap();
        assert_eq!(
            removed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec![one.as_str()]
        );
        // A broken chain: the entry does not exist, and gc deletes it.
        let orphan = store_delta(
            &cache,
            "30-orphan",
            Some(&"0".repeat(64)),
            &[("x", "x")],
            &[],
        );
        assert!(cache.lookup(&orphan).is_none());
        let e = format!("{:#}", cache.chain(&orphan).unwrap_err());
        assert!(e.contains("is gone"), "{e}");
        cache.gc(5).unwrap();
        assert!(!cache.meta_path(&orphan).exists());
    }
}
