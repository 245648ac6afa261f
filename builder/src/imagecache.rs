//! The assembled-image cache: the last few disk images built from layers, so
//! a rebuild with nothing changed copies the image instead of extracting the
//! top layer and assembling the disk again.
//!
//! It lives in the layer cache's directory, under `images/`. An entry is a
//! directory `images/KEY/` holding
//! - `image`: the finished image, in the output's format;
//! - `manifest.json`: the manifest's `disk` and `packages` parts, so a hit
//!   writes the same manifest as a miss (the `tree` part is the layers'
//!   keys and outcomes, which the layer stage reports either way);
//! - `entry.json`: the key's inputs ([`ImageInputs`]), the image's size and
//!   sha256, and when it was made. Its mtime says when it was last used.
//!
//! The key is the sha256 of the canonical JSON of [`ImageInputs`] (see
//! [`image_inputs`] for what goes in). Only builds from layers use the cache:
//! a `--tree` is a directory nobody hashes.
//!
//! The entry's image is a hard link of the image the build writes to its
//! output when both are on one filesystem (else a copy, or a reflink where
//! the filesystem has them): storing then costs no second write and fsync
//! of a gigabyte. Changing that output in place (booting it without an
//! overlay, `qemu-img resize`) changes the entry too; a hit's sha256 check
//! finds that, says so, and the build assembles the image again.
//!
//! An entry is written into `images/.tmp-PID-KEY/`, synced, and renamed into
//! place, so a killed build never leaves something a later build takes for a
//! hit. A lookup needs all three files, an image of the recorded size and
//! inputs equal to the ones asked for; a hit then hashes the copy it made
//! (SHA256SUMS needs that hash anyway) against the recorded sha256. Anything
//! less is a miss, never an error and never a wrong image. Only the [`KEEP`]
//! most recently used entries are kept. Lookups, stores and deletions run
//! under the cache's lock.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::assemble::Assembled;
use crate::cache::{self, Cache, CacheLock, ParentRef};
use crate::entries;
use crate::fsutil::clone_or_copy;
use crate::output::{self, human, Format};
use crate::progress::complete_step;
use crate::rootfs::Package;

/// Bumped whenever the meaning of an image entry or its key changes.
pub const FORMAT: u32 = 2;
/// How many images the cache keeps after a build stores one (each is as
/// large as the image).
pub const KEEP: usize = 2;
/// The host programs that write the disk (the tree's own grub-mkimage is
/// covered by the layers' keys).
pub const DISK_TOOLS: &[&str] = &["mkfs.ext4", "mkfs.fat", "mmd", "mcopy", "qemu-img"];

const IMAGE: &str = "image";
const MANIFEST: &str = "manifest.json";
const ENTRY: &str = "entry.json";

/// Everything an image's key is computed from (kept in `entry.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInputs {
    pub format: u32,
    pub top_layer: ParentRef,
    pub source_date_epoch: i64,
    pub image_format: Format,
    pub compress: bool,
    pub size: Option<u64>,
    pub cmdline: String,
    /// sha256 of the env baked into the image (`--bake-env`).
    pub baked_env: Option<String>,
    /// The output's file name, for formats whose bytes contain it (vmdk, ova).
    pub file_name: Option<String>,
    /// sha256 of the imgbuild executable.
    pub imgbuild: String,
    /// sha256 of each of [`DISK_TOOLS`] as found in `PATH` (`missing` when not).
    pub tools: BTreeMap<String, String>,
}

impl ImageInputs {
    /// The cache key: sha256 of the canonical JSON, in hex.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("inputs serialize");
        hex::encode(Sha256::digest(&json))
    }
}

/// The build's settings that shape the image, beyond the programs.
#[derive(Debug, Clone)]
pub struct ImageSpec<'a> {
    /// The top layer and its key.
    pub top_layer: ParentRef,
    pub source_date_epoch: i64,
    pub format: Format,
    pub compress: bool,
    /// `--size` in bytes.
    pub size: Option<u64>,
    pub cmdline: &'a str,
    /// The env's bytes when `--bake-env` puts them into the image.
    pub baked_env: Option<&'a [u8]>,
    /// The output path (`-o`).
    pub output: &'a Path,
}

/// The executables whose code decides the image's bytes, by sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    pub imgbuild: String,
    pub tools: BTreeMap<String, String>,
}

impl Programs {
    /// The running imgbuild (`/proc/self/exe`: during development the version
    /// string stays the same while the code changes) and [`DISK_TOOLS`].
    pub fn of_this_process() -> Result<Programs> {
        let imgbuild = cache::hash_file(Path::new("/proc/self/exe"))
            .context("hashing the running imgbuild executable")?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut tools = BTreeMap::new();
        for t in DISK_TOOLS {
            let found = std::env::split_paths(&path)
                .map(|d| d.join(t))
                .find(|p| p.is_file());
            let hash = match found {
                Some(p) => cache::hash_file(&p)?,
                None => "missing".to_string(),
            };
            tools.insert(t.to_string(), hash);
        }
        Ok(Programs { imgbuild, tools })
    }
}

/// The inputs of an image's key: everything that reaches the image's bytes.
///
/// - the image cache's format version ([`FORMAT`]);
/// - the top layer's name and key, which covers every layer below it, the
///   archive's `InRelease` and `SOURCE_DATE_EPOCH`;
/// - `SOURCE_DATE_EPOCH` again on its own: the disk's timestamps;
/// - the image format and `--compress`;
/// - `--size` in bytes (none: the tree's size plus headroom);
/// - `--cmdline`, verbatim;
/// - with `--bake-env`, the sha256 of the env's bytes (otherwise the env
///   goes only to the seed, which is written fresh by every build);
/// - for vmdk and ova, the output's file name (a VMDK's descriptor names
///   its file, an OVA's members are named after the image);
/// - the sha256 of the running imgbuild executable;
/// - the sha256 of each host program that writes the disk ([`DISK_TOOLS`]).
///
/// The env otherwise, `--seed`, `--force` and the output's directory do not
/// reach the image.
pub fn image_inputs(spec: &ImageSpec, programs: &Programs) -> ImageInputs {
    ImageInputs {
        format: FORMAT,
        top_layer: spec.top_layer.clone(),
        source_date_epoch: spec.source_date_epoch,
        image_format: spec.format,
        compress: spec.compress,
        size: spec.size,
        cmdline: spec.cmdline.to_string(),
        baked_env: spec.baked_env.map(|e| hex::encode(Sha256::digest(e))),
        file_name: spec.format.name_in_bytes().then(|| {
            spec.output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        imgbuild: programs.imgbuild.clone(),
        tools: programs.tools.clone(),
    }
}

/// Why `new` misses where `old` (the most recently used image) was made:
/// short phrases, most important first. Derived from the same serialized
/// form the key hashes, field by field, so every field that differs is
/// named (a field added to [`ImageInputs`] is covered without an edit
/// here; [`describe_field`] only words the known ones better).
pub fn diff(old: &ImageInputs, new: &ImageInputs) -> Vec<String> {
    let as_map = |i: &ImageInputs| match serde_json::to_value(i) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("ImageInputs serializes to a JSON object"),
    };
    let (a, b) = (as_map(old), as_map(new));
    let null = serde_json::Value::Null;
    let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
    fields.sort_by_key(|f| {
        (
            FIELD_ORDER
                .iter()
                .position(|o| o == f)
                .unwrap_or(usize::MAX),
            *f,
        )
    });
    fields.dedup();
    let mut why = Vec::new();
    for field in fields {
        let (x, y) = (a.get(field).unwrap_or(&null), b.get(field).unwrap_or(&null));
        if x != y {
            why.extend(describe_field(field, old, new, x, y));
        }
    }
    why
}

/// The order [`diff`] names changed fields in (others after these).
const FIELD_ORDER: &[&str] = &[
    "format",
    "top_layer",
    "source_date_epoch",
    "image_format",
    "compress",
    "size",
    "cmdline",
    "baked_env",
    "file_name",
    "imgbuild",
    "tools",
];

/// The phrases for one changed field of the image's inputs.
fn describe_field(
    field: &str,
    old: &ImageInputs,
    new: &ImageInputs,
    x: &serde_json::Value,
    y: &serde_json::Value,
) -> Vec<String> {
    let one = |s: String| vec![s];
    match field {
        "format" => one("the image cache format changed".into()),
        "top_layer" => {
            let (a, b) = (&old.top_layer, &new.top_layer);
            if a.layer != b.layer {
                one(format!(
                    "the top layer is now {} (was {})",
                    b.layer, a.layer
                ))
            } else {
                one(format!("layer {} changed", b.layer))
            }
        }
        "source_date_epoch" => one(format!(
            "SOURCE_DATE_EPOCH changed ({} → {})",
            old.source_date_epoch, new.source_date_epoch
        )),
        "image_format" => one(format!(
            "format changed ({} → {})",
            old.image_format, new.image_format
        )),
        "compress" => one("--compress changed".into()),
        "size" => {
            let s = |v: Option<u64>| v.map_or("default".to_string(), human);
            one(format!(
                "--size changed ({} → {})",
                s(old.size),
                s(new.size)
            ))
        }
        "cmdline" => one("--cmdline changed".into()),
        "baked_env" if old.baked_env.is_some() && new.baked_env.is_some() => {
            one("the baked env changed".into())
        }
        "baked_env" => one("--bake-env changed".into()),
        "file_name" => one("the vmdk's file name changed".into()),
        "imgbuild" => one("imgbuild changed".into()),
        "tools" => new
            .tools
            .iter()
            .filter(|(tool, hash)| old.tools.get(*tool) != Some(hash))
            .map(|(tool, _)| format!("{tool} changed"))
            .collect(),
        _ => one(format!("{field} changed ({x} → {y})")),
    }
}

/// What `entry.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    pub key: String,
    /// Unix time the entry was written.
    pub created: u64,
    /// Size of the image file in bytes.
    pub size: u64,
    pub sha256: String,
    pub inputs: ImageInputs,
    /// The image is a hard link of the output it was built as (same file
    /// system), not a copy: changing that output in place changes it too,
    /// which a hit's sha256 check then finds.
    #[serde(default)]
    pub linked: bool,
}

/// The manifest's parts that come from the tree and the assembly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestParts {
    pub disk: Assembled,
    pub packages: Vec<Package>,
    /// The tree's distribution (os-release), for the SBOM's purls.
    #[serde(default)]
    pub os: OsInfo,
}

/// `ID` and `VERSION_CODENAME` of the tree's os-release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    pub id: String,
    pub codename: String,
}

impl OsInfo {
    /// Reads `etc/os-release` of the tree at `root` (inside the tree only).
    pub fn read(root: &Path) -> OsInfo {
        let text = crate::rootfs::resolve_in_root(root, Path::new("etc/os-release"))
            .ok()
            .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() < 65536))
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        OsInfo {
            id: field("ID"),
            codename: field("VERSION_CODENAME"),
        }
    }
}

/// A complete entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: EntryMeta,
    pub parts: ManifestParts,
    dir: PathBuf,
}

/// The result of [`Images::lookup`].
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<Entry>),
    /// A miss, with the reason in a few words.
    Miss(String),
}

/// The image entries of one cache directory.
#[derive(Debug, Clone)]
pub struct Images {
    cache: Cache,
    dir: PathBuf,
}

impl Images {
    pub fn new(cache: &Cache) -> Images {
        Images {
            cache: cache.clone(),
            dir: cache.dir().join("images"),
        }
    }

    /// The cache these entries belong to (for its lock).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The complete entry for `key`, or why there is none.
    fn read(&self, key: &str) -> std::result::Result<Entry, String> {
        let dir = self.entry_dir(key);
        if !dir.is_dir() {
            return Err("no such entry".into());
        }
        let meta: EntryMeta = read_json(&dir.join(ENTRY))?;
        let parts: ManifestParts = read_json(&dir.join(MANIFEST))?;
        let size = fs::metadata(dir.join(IMAGE))
            .map_err(|e| format!("{IMAGE}: {e}"))?
            .len();
        if meta.key != key || meta.inputs.key() != key {
            return Err(format!("{ENTRY} belongs to another key"));
        }
        if size != meta.size {
            return Err(format!(
                "the image has {size} bytes, {ENTRY} says {}{}",
                meta.size,
                changed_output_hint(meta.linked)
            ));
        }
        Ok(Entry { meta, parts, dir })
    }

    /// A hit, or a miss and why (never an error: a damaged entry is a miss).
    pub fn lookup(&self, inputs: &ImageInputs) -> Lookup {
        let key = inputs.key();
        match self.read(&key) {
            Ok(e) => Lookup::Hit(Box::new(e)),
            Err(why) if self.entry_dir(&key).exists() => {
                Lookup::Miss(format!("the cached entry is incomplete ({why})"))
            }
            Err(_) => Lookup::Miss(match self.latest() {
                Some(old) => cache::describe_diff(&diff(&old.inputs, inputs)),
                None => "no image in the cache".into(),
            }),
        }
    }

    /// Copies the entry's image to `dest` (a new file), checks it against
    /// the recorded sha256 and returns that. Marks the entry as used.
    pub fn restore(&self, entry: &Entry, dest: &Path) -> Result<String> {
        clone_or_copy(&entry.dir.join(IMAGE), dest)?;
        let sha256 = output::sha256_file(dest)?;
        if sha256 != entry.meta.sha256 {
            bail!(
                "the cached image's sha256 is {sha256}, its entry says {}{}",
                entry.meta.sha256,
                changed_output_hint(entry.meta.linked)
            );
        }
        entries::touch(&entry.dir.join(ENTRY));
        Ok(sha256)
    }

    /// Stores `image` (with its sha256 and the manifest's parts) under
    /// `inputs`' key, replacing an incomplete entry of that key, then keeps
    /// only the [`KEEP`] most recently used entries.
    pub fn store(
        &self,
        lock: &CacheLock,
        inputs: &ImageInputs,
        image: &Path,
        sha256: &str,
        parts: &ManifestParts,
    ) -> Result<EntryMeta> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.remove_leftovers();
        let key = inputs.key();
        let tmp = self.dir.join(format!(".tmp-{}-{key}", std::process::id()));
        fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let written = (|| -> Result<EntryMeta> {
            let img = tmp.join(IMAGE);
            // A link costs no copy and no second fsync of a gigabyte; the
            // build has synced the image already.
            let linked = fs::hard_link(image, &img).is_ok();
            if !linked {
                clone_or_copy(image, &img)?;
                File::open(&img)
                    .and_then(|f| f.sync_all())
                    .context("syncing the cached image")?;
            }
            let meta = EntryMeta {
                key: key.clone(),
                created: now(),
                size: fs::metadata(&img)?.len(),
                sha256: sha256.to_string(),
                inputs: inputs.clone(),
                linked,
            };
            for (name, json) in [
                (MANIFEST, serde_json::to_vec_pretty(parts)?),
                (ENTRY, serde_json::to_vec_pretty(&meta)?),
            ] {
                seeds::atomic::write_atomic(&tmp.join(name), &json, 0o644)
                    .with_context(|| format!("writing {name}"))?;
            }
            let dest = self.entry_dir(&key);
            if fs::symlink_metadata(&dest).is_ok() {
                self.delete(lock, &key)?;
            }
            fs::rename(&tmp, &dest)
                .with_context(|| format!("moving {} into place", dest.display()))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", self.dir.display()))?;
            Ok(meta)
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        let meta = written?;
        self.gc(lock, KEEP)?;
        Ok(meta)
    }

    /// Every complete entry, oldest first.
    pub fn list(&self) -> Vec<EntryMeta> {
        let mut out: Vec<EntryMeta> = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (!name.starts_with('.'))
                        .then(|| self.read(&name).ok())
                        .flatten()
                        .map(|e| e.meta)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        out
    }

    /// The most recently used complete entry.
    fn latest(&self) -> Option<EntryMeta> {
        self.list().into_iter().max_by_key(|e| self.used_at(&e.key))
    }

    /// Unix time an entry was last used (written or hit).
    pub fn last_used(&self, key: &str) -> u64 {
        entries::last_used(&self.entry_dir(key).join(ENTRY))
    }

    /// When an entry was last used, to the nanosecond (for ordering).
    fn used_at(&self, key: &str) -> SystemTime {
        entries::used_at(&self.entry_dir(key).join(ENTRY))
    }

    /// Complete entries whose key starts with `prefix`.
    pub fn matching(&self, prefix: &str) -> Vec<EntryMeta> {
        let all = self.list();
        entries::matching(&all, prefix, |e| &e.key)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Deletes an entry (complete or not; a stray file of that name too).
    /// `_held` proves the caller holds the cache's lock.
    pub fn delete(&self, _held: &CacheLock, key: &str) -> Result<()> {
        let dir = self.entry_dir(key);
        let removed = match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Ok(m) if !m.is_dir() => fs::remove_file(&dir),
            // entry.json first: without it the entry no longer exists.
            _ => match fs::remove_file(dir.join(ENTRY)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => fs::remove_dir_all(&dir),
            },
        };
        removed.with_context(|| format!("deleting {}", dir.display()))
    }

    /// Keeps the `keep` most recently used entries and deletes the rest,
    /// along with incomplete entries and what killed builds left behind.
    /// Returns the deleted complete entries.
    pub fn gc(&self, lock: &CacheLock, keep: usize) -> Result<Vec<EntryMeta>> {
        self.remove_leftovers();
        let mut removed = Vec::new();
        for e in entries::beyond_keep(self.list(), keep, |e| self.used_at(&e.key)) {
            self.delete(lock, &e.key)?;
            removed.push(e);
        }
        // Incomplete entries (a damaged cache): nothing takes them for a hit,
        // but they take space.
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && self.read(&name).is_err() {
                    self.delete(lock, &name)?;
                }
            }
        }
        Ok(removed)
    }

    /// Removes `.tmp-*` directories: with the lock held, they are what
    /// killed builds left.
    fn remove_leftovers(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> std::result::Result<T, String> {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    let bytes = fs::read(p).map_err(|e| format!("{name}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{name}: {e}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a linked entry's image may have changed.
fn changed_output_hint(linked: bool) -> &'static str {
    if linked {
        " (it is the same file as the image this entry was built as, \
         which was changed in place since, e.g. booted without an overlay)"
    } else {
        ""
    }
}

/// Stores an image the build just made, unless another imgbuild holds the
/// cache (then the next build assembles again). Never fails the build.
pub fn store_after_build(
    images: &Images,
    inputs: &ImageInputs,
    image: &Path,
    sha256: &str,
    parts: &ManifestParts,
) {
    let key = inputs.key();
    let result = (|| -> Result<Option<EntryMeta>> {
        crate::mount::check_interrupted()?;
        let Some(lock) = images.cache().try_lock()? else {
            return Ok(None);
        };
        complete_step(
            || images.store(&lock, inputs, image, sha256, parts),
            |meta| {
                format!(
                    "image: stored {} ({}{})",
                    &key[..12],
                    human(meta.size),
                    if meta.linked {
                        ", a hard link of the output"
                    } else {
                        ", a copy"
                    },
                )
            },
        )
        .map(Some)
    })();
    match result {
        Ok(Some(_)) => {}
        Ok(None) => tracing::info!(
            "image: not stored: another imgbuild is using the cache {}",
            images.cache().dir().display()
        ),
        Err(e) => tracing::warn!("image: not stored: {e:#}"),
    }
}

#[cfg(test)]
mod tests;
