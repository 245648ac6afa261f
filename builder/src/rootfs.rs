//! The root tree stage: layer recipes → a root tree, layer by layer, cached.
//!
//! [`build_tree`] is what the main build calls. It
//! 1. loads and validates the layer stack (bad input fails here, in a second);
//! 2. fetches the suite's `InRelease` from the mirror (an unreachable mirror
//!    fails here, within seconds, naming the URL) — its hash is part of the
//!    base layer's key, so an archive update is a new base;
//! 3. computes every layer's key from its inputs alone ([`crate::cache`]),
//!    logs hit or miss (and why) per layer, and extracts the highest cached
//!    state — a whole layer, or a layer's package stage (the tree right after
//!    its apt step) — so a no-op rebuild is one extraction and a changed file
//!    does not rerun apt;
//! 4. builds the missing layers on top: layer 0 with mmdebstrap, every layer
//!    then apt packages (in the tree, through chroot), its `files/` overlay,
//!    host files, owners/modes, scripts and units; and stores each result in
//!    the cache before the next starts. A failed layer is never stored.
//!
//! Steps inside the tree run with /proc, /sys, /dev, /dev/pts and the shared
//! apt caches mounted by [`crate::mount`] guards, a `policy-rc.d` that keeps
//! services from starting, the host's resolv.conf for apt, and a clean
//! non-interactive environment. All of it is undone when the layer ends, on
//! errors and on Ctrl-C.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use seeds::cmd;
use serde::{Deserialize, Serialize};

use crate::archive;
use crate::cache::{self, BaseInputs, Cache, Inputs, ParentRef};
use crate::exit::bad_input;
use crate::mount::{self, Mount, MountStack, TreeDir, WorkDir};
use crate::pockets::{self, PocketState, UPDATES_LAYER};
use crate::progress::{Progress, Step};
use crate::recipe::{self, BaseOverrides, BaseSettings, Layer, Mode};

/// Everything the tree stage needs to know.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// The stack's directory (`layers/`).
    pub layers_dir: PathBuf,
    /// Extra layer directories stacked on top, in order (`--layer`).
    pub extra_layers: Vec<PathBuf>,
    /// `--distro`, `--suite`, `--mirror`.
    pub base: BaseOverrides,
    /// `--cache-dir`.
    pub cache_dir: PathBuf,
    /// Where downloaded .debs are kept (default: `CACHE/apt-archives`).
    pub apt_archives: Option<PathBuf>,
    /// `--host-bin NAME=PATH`: where `@NAME` in `host_files` comes from.
    pub host_bins: BTreeMap<String, PathBuf>,
    /// Overrides `$SOURCE_DATE_EPOCH` (default: that, else the archive's
    /// Release date).
    pub source_date_epoch: Option<i64>,
    /// Build and extract trees on a tmpfs (default; `IMGBUILD_TMPFS=0` in
    /// the environment turns it off).
    pub in_memory: bool,
    /// `--image-mirror`: the mirror the image's apt sources name (default:
    /// the build's).
    pub image_mirror: Option<String>,
    /// `--image-security-mirror` (default: the build's security mirror, or
    /// the image mirror where security comes from the main mirror).
    pub image_security_mirror: Option<String>,
}

impl TreeOptions {
    /// The tree stage's options from the command line.
    pub fn from_args(args: &crate::cli::LayerArgs) -> anyhow::Result<TreeOptions> {
        let a = args;
        let mut opts = TreeOptions::new(
            &a.layers_dir,
            a.cache_dir.clone().unwrap_or_else(seeds::cachedir::default),
        );
        opts.extra_layers = a.extra_layers.clone();
        opts.apt_archives = a.apt_cache.clone();
        opts.base = BaseOverrides {
            distro: a.distro,
            suite: a.suite.clone(),
            mirror: a.mirror.clone(),
            security_mirror: a.security_mirror.clone(),
            release_only: a.release_pocket_only,
            keyrings: a.keyring.clone(),
        };
        opts.image_mirror = a.image_mirror.clone();
        opts.image_security_mirror = a.image_security_mirror.clone();
        for hb in &a.host_bin {
            let (name, path) = hb
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| bad_input(format!("--host-bin {hb:?}: expected NAME=PATH")))?;
            opts.host_bins.insert(name.to_string(), PathBuf::from(path));
        }
        Ok(opts)
    }
}

impl TreeOptions {
    /// Options with defaults for everything but the two directories.
    pub fn new(layers_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> TreeOptions {
        TreeOptions {
            layers_dir: layers_dir.into(),
            extra_layers: Vec::new(),
            base: BaseOverrides::default(),
            cache_dir: cache_dir.into(),
            apt_archives: None,
            host_bins: BTreeMap::new(),
            source_date_epoch: None,
            in_memory: std::env::var("IMGBUILD_TMPFS").map_or(true, |v| v != "0"),
            image_mirror: None,
            image_security_mirror: None,
        }
    }
}

/// How a layer was obtained in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Taken from the cache.
    Hit,
    /// Below a cached layer: neither built nor extracted.
    Covered,
    /// Built now (and stored).
    Built,
}

/// One layer of the result, for logs and the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltLayer {
    pub name: String,
    pub key: String,
    pub outcome: Outcome,
}

/// An installed package of the tree (`dpkg-query`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The result of the tree stage: a root tree in a work directory that is
/// deleted when this value is dropped (see [`BuiltTree::move_to`]).
pub struct BuiltTree {
    /// The top layer's entry while it is compressed (dropped first: its
    /// tar lives in the work directory).
    pending: Option<PendingStore>,
    /// The root tree (owned by root, with device nodes, xattrs, ...).
    pub root: PathBuf,
    /// The layers bottom to top, with their keys.
    pub layers: Vec<BuiltLayer>,
    /// Installed packages, sorted by name.
    pub packages: Vec<Package>,
    /// The effective base settings.
    pub base: BaseSettings,
    /// The archive's pockets as probed for this build.
    pub pockets: Vec<PocketState>,
    /// The epoch used for the tree's timestamps; use it for the disk too.
    pub source_date_epoch: i64,
    cache: Cache,
    work: TreeDir,
}

impl std::fmt::Debug for BuiltTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltTree")
            .field("root", &self.root)
            .field("layers", &self.layers)
            .field("pending", &self.pending.as_ref().map(|p| &p.name))
            .finish_non_exhaustive()
    }
}

/// The top layer's cache entry while its tar is compressed in the
/// background (see [`Stack::build_with_background_store`]). Committed by
/// [`BuiltTree::finish_store`], or when dropped (a failed build still caches
/// a layer that was built), unless interrupted. Holds the cache's lock until
/// then, as the layer stage does.
struct PendingStore {
    name: String,
    inputs: Inputs,
    cache: Cache,
    started: Instant,
    job: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    zst: TempFile,
    tar: TempFile,
    lock: Option<cache::CacheLock>,
}

impl PendingStore {
    fn commit(&mut self) -> anyhow::Result<()> {
        let Some(job) = self.job.take() else {
            return Ok(());
        };
        let compressed = job
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the compression thread panicked")));
        let _ = fs::remove_file(&self.tar.0);
        compressed.with_context(|| format!("layer {}: archiving", self.name))?;
        mount::check_interrupted()?;
        let meta = self.cache.store(&self.zst.0, &self.inputs)?;
        tracing::info!(
            "{}: archiving: stored {} ({} MiB), compressed beside the disk, in {:.1}s",
            self.name,
            &meta.key[..12],
            meta.size >> 20,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

impl Drop for PendingStore {
    fn drop(&mut self) {
        if self.job.is_some() {
            if let Err(e) = self.commit() {
                tracing::warn!("{}: not cached: {e:#}", self.name);
            }
        }
        drop(self.lock.take());
    }
}

impl BuiltTree {
    /// Waits for the top layer's background compression (if any) and puts
    /// its entry into the cache.
    pub fn finish_store(&mut self) -> anyhow::Result<()> {
        match self.pending.take() {
            Some(mut p) => p.commit(),
            None => Ok(()),
        }
    }

    /// Moves the tree to `dest` (which must not exist or be an empty
    /// directory), keeping it after this value is gone.
    pub fn move_to(self, dest: &Path) -> anyhow::Result<()> {
        if dest.exists() {
            let empty = fs::read_dir(dest)
                .with_context(|| format!("reading {}", dest.display()))?
                .next()
                .is_none();
            if !empty {
                return Err(bad_input(format!(
                    "{}: exists and is not empty",
                    dest.display()
                )));
            }
            fs::remove_dir(dest).with_context(|| format!("replacing {}", dest.display()))?;
        }
        match fs::rename(&self.root, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Another filesystem: extract the top layer there instead.
                let top = self.layers.last().expect("at least one layer");
                fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
                let p = Progress::plain();
                let step = p.step(format!("extracting {} into {}", top.name, dest.display()));
                archive::extract(&self.cache.archive_path(&top.key), dest, &step)?;
                step.done();
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("moving the tree to {}", dest.display())),
        }
    }

    /// The work directory holding [`BuiltTree::root`].
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }
}

/// Builds (or takes from the cache) every layer and returns the final tree.
pub fn build_tree(opts: &TreeOptions, progress: &Progress) -> anyhow::Result<BuiltTree> {
    resolve(opts, progress)?.build()
}

/// A layer stack whose keys are known: loaded, the archive probed, every
/// layer's key computed and looked up, and the cache locked until this value
/// is dropped or built. Nothing is extracted or built yet.
pub struct Stack<'p> {
    run: Run<'p>,
}

/// Loads the stack and computes its keys (see [`Stack`]).
pub fn resolve<'p>(opts: &TreeOptions, progress: &'p Progress) -> anyhow::Result<Stack<'p>> {
    Ok(Stack {
        run: Run::prepare(opts, progress)?,
    })
}

impl Stack<'_> {
    /// The top layer's name and key (the key covers every layer below).
    pub fn top(&self) -> ParentRef {
        let p = self.run.plan.last().expect("load_stack returns a layer");
        ParentRef {
            layer: p.layer.name.clone(),
            key: p.key.clone(),
        }
    }

    /// Whether the top layer itself is cached, so a build would only extract it.
    pub fn top_cached(&self) -> bool {
        self.run.plan.last().is_some_and(|p| p.cached)
    }

    /// The epoch for the tree's timestamps (part of the base layer's key).
    pub fn source_date_epoch(&self) -> i64 {
        self.run.sde
    }

    /// The archive's pockets as probed for this build.
    pub fn pockets(&self) -> &[PocketState] {
        &self.run.pockets
    }

    /// The effective base settings.
    pub fn base(&self) -> &BaseSettings {
        &self.run.base
    }

    /// The layer cache (locked while this value lives).
    pub fn cache(&self) -> &Cache {
        &self.run.cache
    }

    /// Logs every layer's hit or miss as a build would, and returns the
    /// layers with their outcomes, without extracting or building anything.
    pub fn report(&self) -> Vec<BuiltLayer> {
        self.run.report()
    }

    /// Extracts the highest cached state and builds the rest (see
    /// [`build_tree`]); the cache is unlocked when this returns.
    pub fn build(self) -> anyhow::Result<BuiltTree> {
        self.build_tree(false)
    }

    /// [`Stack::build`], except that a top layer that is built is only read
    /// into a plain tar before this returns; its compression and cache entry
    /// finish in the background (see [`BuiltTree::finish_store`]), so a
    /// caller that goes on to make a disk from the tree does both at once.
    /// The tree may be changed as soon as this returns.
    pub fn build_with_background_store(self) -> anyhow::Result<BuiltTree> {
        self.build_tree(true)
    }

    fn build_tree(self, background: bool) -> anyhow::Result<BuiltTree> {
        let run = self.run;
        let (layers, work, root, mut pending) = run.execute(true, background)?;
        let (work, root) = (
            work.expect("a tree was asked for"),
            root.expect("a tree was asked for"),
        );
        let step = run.progress.step("listing packages");
        let packages = installed_packages(&root)?;
        step.done_with(&format!("{} packages", packages.len()));
        let Run {
            base,
            pockets,
            sde,
            cache,
            lock,
            ..
        } = run;
        match &mut pending {
            // The lock goes with the entry still to be stored.
            Some(p) => p.lock = Some(lock),
            None => drop(lock),
        }
        Ok(BuiltTree {
            pending,
            root,
            layers,
            packages,
            base,
            pockets,
            source_date_epoch: sde,
            cache,
            work,
        })
    }
}

/// Makes sure every layer is in the cache, without extracting the final
/// tree when it already is. Returns the layers with their keys.
pub fn cache_layers(opts: &TreeOptions, progress: &Progress) -> anyhow::Result<Vec<BuiltLayer>> {
    let run = Run::prepare(opts, progress)?;
    Ok(run.execute(false, false)?.0)
}

/// What a planned layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A recipe of the stack.
    Recipe,
    /// The last step: upgrade from the moving pockets, write the image's
    /// apt sources (see [`crate::pockets`]).
    Updates,
}

/// One planned layer.
struct Planned {
    kind: Kind,
    layer: Layer,
    inputs: Inputs,
    key: String,
    cached: bool,
    /// Resolved sources of `host_files`, in recipe order.
    host_sources: Vec<PathBuf>,
    /// The tree after this layer's packages, cached on its own when the
    /// layer has further steps: changing a file or script then reruns only
    /// those, not apt.
    packages_stage: Option<Stage>,
}

/// An intermediate cache entry inside a layer.
struct Stage {
    inputs: Inputs,
    key: String,
    cached: bool,
}

/// A prepared build: stack loaded, archive probed, keys computed, lock held.
struct Run<'p> {
    progress: &'p Progress,
    cache: Cache,
    /// Held while the build runs; handed to the entry still to be stored.
    lock: cache::CacheLock,
    base: BaseSettings,
    pockets: Vec<PocketState>,
    /// The image's apt sources (deb822), written by the updates step.
    image_sources: String,
    sde: i64,
    plan: Vec<Planned>,
    apt_archives: PathBuf,
    in_memory: bool,
}

static WORK_SEQ: AtomicUsize = AtomicUsize::new(0);

impl<'p> Run<'p> {
    fn prepare(opts: &TreeOptions, progress: &'p Progress) -> anyhow::Result<Run<'p>> {
        let layers = recipe::load_stack(&opts.layers_dir, &opts.extra_layers)?;
        let base_recipe = layers[0]
            .recipe
            .base
            .clone()
            .expect("load_stack checks the base");
        let mut base = BaseSettings::resolve(&base_recipe, &opts.base);
        base.keyrings = opts
            .base
            .keyrings
            .iter()
            .map(|k| recipe::ExtraKeyring::load(k))
            .collect::<anyhow::Result<_>>()?;
        recipe::check_mirror(&base.mirror).map_err(|e| bad_input(format!("--mirror: {e}")))?;
        recipe::check_mirror(&base.security_mirror)
            .map_err(|e| bad_input(format!("--security-mirror: {e}")))?;
        for (flag, m) in [
            ("--image-mirror", &opts.image_mirror),
            ("--image-security-mirror", &opts.image_security_mirror),
        ] {
            if let Some(m) = m {
                recipe::check_mirror(m).map_err(|e| bad_input(format!("{flag}: {e}")))?;
            }
        }
        let image_mirror = opts
            .image_mirror
            .as_deref()
            .unwrap_or(&base.mirror)
            .trim_end_matches('/')
            .to_string();
        let image_security_mirror = match &opts.image_security_mirror {
            Some(m) => m.trim_end_matches('/').to_string(),
            None if base.security_mirror == base.mirror => image_mirror.clone(),
            None => base.security_mirror.clone(),
        };
        let image_sources = base.sources_deb822(&image_mirror, &image_security_mirror);
        let mut host_sources = Vec::new();
        for l in &layers {
            host_sources.push(resolve_host_files(l, opts)?);
        }
        crate::exit::require_root(
            "building the root tree needs root: mmdebstrap --mode=root, chroot into the tree, \
             mounting /proc, /sys and /dev there, and restoring owners and device nodes from the \
             cache all do",
        )?;
        require_tools(&["tar", "zstd", "chroot", "dpkg-query", APT_HELPER])?;
        mount::install_interrupt_handler();

        let cache = Cache::open(&opts.cache_dir)?;
        let lock = cache.lock()?;
        let apt_archives = match &opts.apt_archives {
            Some(p) => {
                fs::create_dir_all(p.join("partial"))
                    .with_context(|| format!("creating {}", p.display()))?;
                p.clone()
            }
            None => cache.apt_archives(),
        };

        let suites: Vec<String> = base.pockets().into_iter().map(|p| p.suite).collect();
        let step = progress.step(format!(
            "checking the archive {} {}",
            base.mirror,
            suites.join(" ")
        ));
        let probe_dir = WorkDir::create(next_work_path(&cache, "probe"))?;
        let pocket_states = pockets::probe_all(&base, probe_dir.path())?;
        probe_dir.remove()?;
        step.done();
        let release = &pocket_states[0];
        let from_env = seeds::nocloud::source_date_epoch_var().map_err(bad_input)?;
        let sde = opts
            .source_date_epoch
            .or(from_env)
            .or(release.epoch)
            .unwrap_or(0);

        let mut plan: Vec<Planned> = Vec::new();
        for (layer, sources) in layers.into_iter().zip(host_sources) {
            let parent = plan.last().map(|p| ParentRef {
                layer: p.layer.name.clone(),
                key: p.key.clone(),
            });
            let base_inputs = layer.recipe.base.as_ref().map(|_| BaseInputs {
                settings: base.clone(),
                archive: release.sha256.clone(),
                source_date_epoch: sde,
            });
            let packages_stage =
                packages_stage_inputs(&layer, base.distro, parent.clone()).map(|inputs| {
                    let key = inputs.key();
                    let cached = cache.lookup(&key).is_some();
                    Stage {
                        inputs,
                        key,
                        cached,
                    }
                });
            let inputs = layer_inputs(&layer, base.distro, parent, base_inputs, &sources)?;
            let key = inputs.key();
            let cached = cache.lookup(&key).is_some();
            plan.push(Planned {
                kind: Kind::Recipe,
                layer,
                inputs,
                key,
                cached,
                host_sources: sources,
                packages_stage,
            });
        }
        let top = plan.last().expect("load_stack returns a layer");
        let inputs = updates_inputs(
            ParentRef {
                layer: top.layer.name.clone(),
                key: top.key.clone(),
            },
            &base,
            &pocket_states,
            &image_sources,
        );
        let key = inputs.key();
        plan.push(Planned {
            kind: Kind::Updates,
            layer: Layer {
                name: UPDATES_LAYER.into(),
                dir: PathBuf::from("/nonexistent/imgbuild-updates-step"),
                recipe: recipe::Recipe::default(),
            },
            cached: cache.lookup(&key).is_some(),
            inputs,
            key,
            host_sources: Vec::new(),
            packages_stage: None,
        });
        Ok(Run {
            progress,
            cache,
            lock,
            base,
            pockets: pocket_states,
            image_sources,
            sde,
            plan,
            apt_archives,
            in_memory: opts.in_memory,
        })
    }

    /// The highest cached state: the index of the layer to resume from, and
    /// whether only its package stage is cached (then that layer's
    /// remaining steps run).
    fn resume_point(&self) -> (Option<usize>, Option<usize>) {
        let top_cached = self
            .plan
            .iter()
            .rposition(|p| p.cached || p.packages_stage.as_ref().is_some_and(|s| s.cached));
        let resume_in_layer = top_cached.filter(|&j| !self.plan[j].cached);
        (top_cached, resume_in_layer)
    }

    /// Logs each layer's hit or miss (and why) and returns the layers with
    /// their outcomes.
    fn report(&self) -> Vec<BuiltLayer> {
        let (top_cached, resume_in_layer) = self.resume_point();
        let mut out = Vec::new();
        for (i, p) in self.plan.iter().enumerate() {
            let short = &p.key[..12];
            let outcome = match top_cached {
                Some(j) if i == j && resume_in_layer.is_none() => {
                    self.progress
                        .info(&format!("{}: hit {short}", p.layer.name));
                    Outcome::Hit
                }
                Some(j) if i < j => {
                    let top = &self.plan[j].layer.name;
                    self.progress.info(&format!(
                        "{}: {short}: not needed ({top} is cached)",
                        p.layer.name
                    ));
                    Outcome::Covered
                }
                _ => {
                    let why = match self.cache.latest(&p.layer.name) {
                        Some(old) => cache::describe_diff(&cache::diff(&old.inputs, &p.inputs)),
                        None => format!("no earlier build of {} in the cache", p.layer.name),
                    };
                    let why = match &p.packages_stage {
                        Some(st) if st.cached => {
                            format!("{why}; its packages are cached ({})", &st.key[..12])
                        }
                        _ => why,
                    };
                    self.progress
                        .info(&format!("{}: miss {short}: {why}", p.layer.name));
                    Outcome::Built
                }
            };
            out.push(BuiltLayer {
                name: p.layer.name.clone(),
                key: p.key.clone(),
                outcome,
            });
        }
        out
    }

    /// Logs hits and misses, extracts the highest cached layer, builds the
    /// rest. Returns the layers, and (when `want_tree` or anything was built)
    /// the work directory and the tree in it.
    #[allow(clippy::type_complexity)]
    /// With `background`, the top layer's store is left to a
    /// [`PendingStore`] (returned) when that layer is built.
    #[allow(clippy::type_complexity)]
    fn execute(
        &self,
        want_tree: bool,
        background: bool,
    ) -> anyhow::Result<(
        Vec<BuiltLayer>,
        Option<TreeDir>,
        Option<PathBuf>,
        Option<PendingStore>,
    )> {
        let out = self.report();
        let (top_cached, resume_in_layer) = self.resume_point();
        let all_cached = top_cached == Some(self.plan.len() - 1) && resume_in_layer.is_none();
        if all_cached && !want_tree {
            self.cache.touch(&self.plan[self.plan.len() - 1].key);
            return Ok((out, None, None, None));
        }

        let work = TreeDir::create(next_work_path(&self.cache, "tree"), self.in_memory)?;
        let root = work.path().join("root");
        let first_to_build = match top_cached {
            Some(j) => {
                let p = &self.plan[j];
                let (key, what) = match (resume_in_layer, &p.packages_stage) {
                    (Some(_), Some(st)) => (&st.key, "extracting its packages"),
                    _ => (&p.key, "extracting"),
                };
                let step = self.progress.step(format!("{}: {what}", p.layer.name));
                fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
                archive::extract(&self.cache.archive_path(key), &root, &step).with_context(
                    || format!("layer {}: extracting the cached tree", p.layer.name),
                )?;
                step.done();
                self.cache.touch(key);
                if resume_in_layer.is_some() {
                    j
                } else {
                    j + 1
                }
            }
            None => 0,
        };
        let mut pending = None;
        for (i, p) in self.plan.iter().enumerate().skip(first_to_build) {
            mount::check_interrupted()?;
            let from_packages = resume_in_layer == Some(i);
            let scratch = (background && i + 1 == self.plan.len()).then(|| work.path());
            pending = self
                .build_layer(p, &root, from_packages, scratch)
                .map_err(|e| {
                    if mount::interrupted() {
                        e.context(format!("layer {}: interrupted", p.layer.name))
                    } else {
                        e.context(format!(
                            "layer {} failed (nothing was cached for it)",
                            p.layer.name
                        ))
                    }
                })?;
        }
        Ok((out, Some(work), Some(root), pending))
    }

    /// Builds one layer in `root` (which holds its parent's tree, or
    /// nothing for the base) and stores it. With `from_packages`, `root`
    /// already holds this layer's package stage. With `scratch` (a
    /// directory for a plain tar), the store is left to the returned
    /// [`PendingStore`].
    fn build_layer(
        &self,
        p: &Planned,
        root: &Path,
        from_packages: bool,
        scratch: Option<&Path>,
    ) -> anyhow::Result<Option<PendingStore>> {
        let name = &p.layer.name;
        let distro = self.base.distro;
        let env = ChrootEnv {
            layer: name.clone(),
            sde: self.sde,
        };
        let packages = p.layer.packages_for(distro);
        if p.kind == Kind::Updates {
            self.updates(root, &env)?;
        } else if p.layer.recipe.base.is_some() {
            let _apt = self.lock_apt()?;
            self.mmdebstrap(p, root)?;
            self.install_keyrings(root)?;
            self.write_sources(
                root,
                &self
                    .base
                    .sources_deb822(&self.base.mirror, &self.base.security_mirror),
            )?;
        } else if !packages.is_empty() && !from_packages {
            let _apt = self.lock_apt()?;
            let session = self.chroot(root)?;
            self.install_packages(p, root, &env, &packages)?;
            session.close()?;
            cleanup_tree(root)?;
            if let Some(stage) = &p.packages_stage {
                self.store(
                    root,
                    &format!("{name}: archiving its packages"),
                    &stage.inputs,
                )?;
            }
        }
        mount::check_interrupted()?;

        let files_dir = p.layer.dir.join(recipe::FILES_DIR);
        if files_dir.is_dir()
            || !p.layer.recipe.host_files.is_empty()
            || !p.layer.recipe.files.is_empty()
        {
            let step = self.progress.step(format!("{name}: files"));
            if files_dir.is_dir() {
                copy_overlay(&files_dir, root, Path::new(""))?;
            }
            for (hf, src) in p.layer.recipe.host_files.iter().zip(&p.host_sources) {
                install_host_file(root, src, &hf.to, hf.mode)
                    .with_context(|| format!("host_files: {} → {}", hf.from, hf.to))?;
            }
            for fa in &p.layer.recipe.files {
                apply_attrs(root, fa).with_context(|| format!("files: {}", fa.path))?;
            }
            step.done();
        }
        let r = &p.layer.recipe;
        if !r.scripts.is_empty() || !r.enable.is_empty() || !r.mask.is_empty() {
            let session = self.chroot(root)?;
            for script in &r.scripts {
                mount::check_interrupted()?;
                let step = self.progress.step(format!("{name}: script {script}"));
                run_script(root, &p.layer.dir.join(script), &env, &step)
                    .with_context(|| format!("script {script}"))?;
                step.done();
            }
            for (verb, units) in [("enable", &r.enable), ("mask", &r.mask)] {
                if units.is_empty() {
                    continue;
                }
                let step = self.progress.step(format!("{name}: systemctl {verb}"));
                let mut c = env.command(root, &["systemctl", verb]);
                c.args(units);
                cmd::run_streaming(&mut c, &mut |l| step.line(l))
                    .with_context(|| format!("systemctl {verb}"))?;
                step.done();
            }
            session.close()?;
        }
        cleanup_tree(root)?;
        mount::check_interrupted()?;
        match scratch {
            Some(dir) => self.store_later(root, name, &p.inputs, dir).map(Some),
            None => self
                .store(root, &format!("{name}: archiving"), &p.inputs)
                .map(|()| None),
        }
    }

    /// Reads the tree at `root` into a plain tar in `scratch` and leaves
    /// its compression and cache entry to the returned [`PendingStore`].
    fn store_later(
        &self,
        root: &Path,
        name: &str,
        inputs: &Inputs,
        scratch: &Path,
    ) -> anyhow::Result<PendingStore> {
        let step = self.progress.step(format!("{name}: archiving"));
        let mounted = mount::mounts_under(root)?;
        if !mounted.is_empty() {
            bail!("not archiving: still mounted in the tree: {mounted:?}");
        }
        let started = Instant::now();
        let key = inputs.key();
        let tar = TempFile(scratch.join(format!(".{key}.tar")));
        archive::create_uncompressed(root, &tar.0, self.sde, &step)?;
        let zst = TempFile(self.cache.temp_archive_path(&key));
        let (from, to) = (tar.0.clone(), zst.0.clone());
        let job = std::thread::spawn(move || archive::compress(&from, &to));
        step.done_with("tree read; compressing it beside the disk");
        Ok(PendingStore {
            name: name.to_string(),
            inputs: inputs.clone(),
            cache: self.cache.clone(),
            started,
            job: Some(job),
            zst,
            tar,
            lock: None,
        })
    }

    /// One apt at a time writes to the apt package cache, which several
    /// cache directories may share (`--apt-cache`).
    fn lock_apt(&self) -> anyhow::Result<cache::CacheLock> {
        cache::lock_file(
            &self.apt_archives.join(".imgbuild.lock"),
            "the apt package cache",
        )
    }

    fn chroot(&self, root: &Path) -> anyhow::Result<Chroot> {
        let local: Vec<PathBuf> = self
            .base
            .pockets()
            .iter()
            .filter_map(|p| p.mirror.strip_prefix("file://").map(PathBuf::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Chroot::open(
            root,
            &self.apt_archives,
            &self.cache.apt_lists(&self.base),
            &local,
        )
    }

    fn install_packages(
        &self,
        p: &Planned,
        root: &Path,
        env: &ChrootEnv,
        packages: &[String],
    ) -> anyhow::Result<()> {
        let name = &p.layer.name;
        let step = self.progress.step(format!("{name}: apt-get update"));
        let mut c = env.command(root, &["apt-get", "update", "-q"]);
        c.args(APT_NET_OPTS);
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get update")?;
        step.done();
        mount::check_interrupted()?;
        let step = self.progress.step(format!(
            "{name}: apt-get install ({} packages)",
            packages.len()
        ));
        let mut c = env.command(root, &["apt-get", "install"]);
        c.args(APT_INSTALL_OPTS).args(APT_NET_OPTS).args(packages);
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get install")?;
        step.done();
        Ok(())
    }

    /// Archives the tree at `root` into the cache under `inputs`' key.
    fn store(&self, root: &Path, what: &str, inputs: &Inputs) -> anyhow::Result<()> {
        let step = self.progress.step(what);
        let mounted = mount::mounts_under(root)?;
        if !mounted.is_empty() {
            bail!("not archiving: still mounted in the tree: {mounted:?}");
        }
        let key = inputs.key();
        let tmp = TempFile(self.cache.temp_archive_path(&key));
        archive::create(root, &tmp.0, self.sde, &step)?;
        let meta = self.cache.store(&tmp.0, inputs)?;
        step.done_with(&format!(
            "stored {} ({} MiB)",
            &meta.key[..12],
            meta.size >> 20
        ));
        Ok(())
    }

    /// The updates step: `apt-get dist-upgrade` from every pocket, old
    /// kernels purged, then the image's own apt sources.
    fn updates(&self, root: &Path, env: &ChrootEnv) -> anyhow::Result<()> {
        let name = UPDATES_LAYER;
        if !self.base.release_only {
            let _apt = self.lock_apt()?;
            let session = self.chroot(root)?;
            let step = self.progress.step(format!("{name}: apt-get update"));
            let mut c = env.command(root, &["apt-get", "update", "-q"]);
            c.args(APT_NET_OPTS);
            cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get update")?;
            step.done();
            mount::check_interrupted()?;
            let step = self.progress.step(format!("{name}: apt-get dist-upgrade"));
            let mut c = env.command(root, &["apt-get", "dist-upgrade"]);
            c.args(APT_INSTALL_OPTS).args(APT_NET_OPTS);
            let mut upgraded = String::new();
            cmd::run_streaming(&mut c, &mut |l| {
                if l.contains(" upgraded, ") && l.contains(" newly installed") {
                    upgraded = l.trim().to_string();
                }
                step.line(l)
            })
            .context("apt-get dist-upgrade")?;
            step.done_with(&upgraded);
            let step = self.progress.step(format!("{name}: old kernels"));
            let mut c = env.command(root, &["/bin/sh", "-c", pockets::PURGE_OLD_KERNELS]);
            cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("purging old kernels")?;
            step.done();
            session.close()?;
        }
        self.write_sources(root, &self.image_sources)
    }

    /// Copies the `--keyring` files into the tree's `/etc/apt/keyrings`.
    fn install_keyrings(&self, root: &Path) -> anyhow::Result<()> {
        for k in &self.base.keyrings {
            let bytes =
                fs::read(&k.source).with_context(|| format!("reading {}", k.source.display()))?;
            let dest = root.join(k.tree_path().trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("has a parent"))?;
            seeds::atomic::write_atomic(&dest, &bytes, 0o644)
                .with_context(|| format!("writing {}", k.tree_path()))?;
        }
        Ok(())
    }

    /// Writes the tree's apt sources in deb822 (`sources.list.d/DISTRO.sources`)
    /// and retires the one-line `sources.list`.
    fn write_sources(&self, root: &Path, text: &str) -> anyhow::Result<()> {
        let (keyring, package) = self.base.distro.tree_keyring();
        if !root.join(keyring.trim_start_matches('/')).is_file() {
            bail!(
                "the tree has no {keyring} for its apt sources' Signed-By (the base layer must \
                 include {package})"
            );
        }
        let dir = root.join("etc/apt/sources.list.d");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        seeds::atomic::write_atomic(
            &dir.join(self.base.distro.sources_file()),
            text.as_bytes(),
            0o644,
        )
        .context("writing the apt sources")?;
        let list = root.join("etc/apt/sources.list");
        match self.base.distro {
            recipe::Distro::Ubuntu => seeds::atomic::write_atomic(
                &list,
                b"# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n",
                0o644,
            )
            .context("writing sources.list")?,
            recipe::Distro::Debian => match fs::remove_file(&list) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("removing sources.list"),
            },
        }
        Ok(())
    }

    fn mmdebstrap(&self, p: &Planned, root: &Path) -> anyhow::Result<()> {
        require_tools(&["mmdebstrap"])?;
        let b = &self.base;
        let step = self.progress.step(format!(
            "{}: mmdebstrap {} {} ({})",
            p.layer.name, b.distro, b.suite, b.variant
        ));
        let mut c = cmd::command("mmdebstrap", ["--mode=root", "--format=directory"]);
        c.arg(format!("--variant={}", b.variant))
            .arg(format!("--components={}", b.components.join(",")))
            .arg("--aptopt=Acquire::http::Timeout \"20\"")
            .arg("--aptopt=Acquire::Retries \"2\"")
            .arg("--skip=essential/unlink")
            .arg(format!("--setup-hook={SYNC_IN}"))
            .arg(format!("--customize-hook={SYNC_OUT}"))
            .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"; echo localhost > \"$1/etc/hostname\"; chmod 644 \"$1/etc/hostname\"");
        let packages = p.layer.packages_for(b.distro);
        if !packages.is_empty() {
            c.arg(format!("--include={}", packages.join(",")));
        }
        // With extra keyrings: a directory of all of them (mmdebstrap takes
        // one --keyring; the distribution's own comes first).
        let keyring_dir = WorkDir::create(next_work_path(&self.cache, "keyrings"))?;
        let own = b.distro.keyring().unwrap_or(b.distro.tree_keyring().0);
        if !Path::new(own).is_file() {
            bail!(
                "{own} is missing: install {} (scripts/install-host-deps.sh) to build {}",
                b.distro.tree_keyring().1,
                b.distro
            );
        }
        if !b.keyrings.is_empty() {
            fs::copy(
                own,
                keyring_dir
                    .path()
                    .join(b.distro.tree_keyring().1.to_string() + ".gpg"),
            )
            .with_context(|| format!("copying {own}"))?;
            for k in &b.keyrings {
                fs::copy(&k.source, keyring_dir.path().join(&k.name))
                    .with_context(|| format!("copying {}", k.source.display()))?;
            }
            c.arg(format!("--keyring={}", keyring_dir.path().display()));
        } else if let Some(k) = b.distro.keyring() {
            c.arg(format!("--keyring={k}"));
        }
        c.arg(&b.suite).arg(root);
        let comps = b.components.join(" ");
        for pk in b.pockets() {
            c.arg(format!("deb {} {} {comps}", pk.mirror, pk.suite));
        }
        c.env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("IMGBUILD_APT_ARCHIVES", &self.apt_archives)
            .env("LC_ALL", "C.UTF-8");
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("mmdebstrap")?;
        keyring_dir.remove()?;
        step.done();
        Ok(())
    }
}

/// Hard-links (or copies) the shared .debs into the new tree's apt cache.
const SYNC_IN: &str = r#"set -e; d="$1/var/cache/apt/archives"; mkdir -p "$d/partial"; { find "$IMGBUILD_APT_ARCHIVES" -maxdepth 1 -name '*.deb' -exec cp -l -t "$d" {} + ; } 2>/dev/null || find "$IMGBUILD_APT_ARCHIVES" -maxdepth 1 -name '*.deb' -exec cp -f -t "$d" {} +"#;
/// Keeps what mmdebstrap downloaded in the shared apt cache.
const SYNC_OUT: &str = r#"set -e; d="$1/var/cache/apt/archives"; { find "$d" -maxdepth 1 -name '*.deb' -exec cp -l -n -t "$IMGBUILD_APT_ARCHIVES" {} + ; } 2>/dev/null || find "$d" -maxdepth 1 -name '*.deb' -exec cp -n -t "$IMGBUILD_APT_ARCHIVES" {} +"#;

/// How apt installs and upgrades in the tree: no questions, no
/// recommends, the packaged configuration kept where a layer changed it.
const APT_INSTALL_OPTS: &[&str] = &[
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    "Dpkg::Use-Pty=0",
];

/// Bounded network waits for apt inside the tree.
const APT_NET_OPTS: &[&str] = &[
    "-o",
    "Acquire::http::Timeout=20",
    "-o",
    "Acquire::Retries=2",
];

const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

fn next_work_path(cache: &Cache, what: &str) -> PathBuf {
    cache.work_path(&format!(
        "{what}{}",
        WORK_SEQ.fetch_add(1, Ordering::SeqCst)
    ))
}

/// Removes a file when dropped (a temp archive of a failed layer).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Fails naming the first tool that is not installed.
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for t in tools {
        let found = if t.contains('/') {
            Path::new(t).is_file()
        } else {
            std::env::split_paths(&path).any(|d| d.join(t).is_file())
        };
        if !found {
            bail!("{t} is not installed: run scripts/install-host-deps.sh");
        }
    }
    Ok(())
}

/// Where each `host_files` entry of `layer` comes from.
fn resolve_host_files(layer: &Layer, opts: &TreeOptions) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, hf) in layer.recipe.host_files.iter().enumerate() {
        let path = match hf.from.strip_prefix('@') {
            Some(name) => {
                if let Some(p) = opts.host_bins.get(name) {
                    p.clone()
                } else if let Some(dir) = std::env::var_os("IMGBUILD_BIN_DIR") {
                    PathBuf::from(dir).join(name)
                } else {
                    let exe = std::env::current_exe().context("finding the running imgbuild")?;
                    exe.parent().unwrap_or(Path::new("/")).join(name)
                }
            }
            None => layer.dir.join(&hf.from),
        };
        if !path.is_file() {
            return Err(bad_input(format!(
                "{}: host_files[{i}].from: {}: no file at {} (build it, e.g. `cargo build -p {}`, or pass --host-bin {}=PATH)",
                layer.recipe_path().display(),
                hf.from,
                path.display(),
                hf.from.trim_start_matches('@'),
                hf.from.trim_start_matches('@'),
            )));
        }
        out.push(path);
    }
    Ok(out)
}

/// The inputs (and so the key) of one layer.
fn layer_inputs(
    layer: &Layer,
    distro: recipe::Distro,
    parent: Option<ParentRef>,
    base: Option<BaseInputs>,
    host_sources: &[PathBuf],
) -> anyhow::Result<Inputs> {
    let r = &layer.recipe;
    let sorted = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v.dedup();
        v
    };
    let canonical = serde_json::json!({
        "packages": layer.packages_for(distro),
        "files": r.files,
        "host_files": r.host_files,
        "scripts": r.scripts,
        "enable": sorted(&r.enable),
        "mask": sorted(&r.mask),
    });
    let mut files = BTreeMap::new();
    let overlay = layer.dir.join(recipe::FILES_DIR);
    if overlay.is_dir() {
        cache::describe_tree(&overlay, recipe::FILES_DIR, &mut files)?;
    }
    for s in &r.scripts {
        files.insert(s.clone(), cache::describe_path(&layer.dir.join(s))?);
    }
    for (hf, src) in r.host_files.iter().zip(host_sources) {
        files.insert(
            format!("{} → {}", hf.from, hf.to),
            format!("file {} {}", hf.mode, cache::hash_file(src)?),
        );
    }
    Ok(Inputs {
        format: cache::FORMAT,
        layer: layer.name.clone(),
        parent,
        base,
        recipe: canonical,
        files,
        pockets: Vec::new(),
    })
}

/// The inputs of a layer's package stage, when it has one: a layer above the
/// base with packages and further steps (files, host files, scripts, units).
fn packages_stage_inputs(
    layer: &Layer,
    distro: recipe::Distro,
    parent: Option<ParentRef>,
) -> Option<Inputs> {
    let r = &layer.recipe;
    let packages = layer.packages_for(distro);
    let more = layer.dir.join(recipe::FILES_DIR).is_dir()
        || !r.host_files.is_empty()
        || !r.files.is_empty()
        || !r.scripts.is_empty()
        || !r.enable.is_empty()
        || !r.mask.is_empty();
    (r.base.is_none() && !packages.is_empty() && more).then(|| Inputs {
        format: cache::FORMAT,
        layer: format!("{}+packages", layer.name),
        parent,
        base: None,
        recipe: serde_json::json!({ "packages": packages }),
        files: BTreeMap::new(),
        pockets: Vec::new(),
    })
}

/// The inputs of the updates step: its parent, the moving pockets' state
/// and the image's apt sources.
fn updates_inputs(
    parent: ParentRef,
    base: &BaseSettings,
    states: &[PocketState],
    image_sources: &str,
) -> Inputs {
    Inputs {
        format: cache::FORMAT,
        layer: UPDATES_LAYER.into(),
        parent: Some(parent),
        base: None,
        recipe: serde_json::json!({
            "release_only": base.release_only,
            "image_sources": image_sources,
            "purge_old_kernels": pockets::PURGE_OLD_KERNELS,
        }),
        files: BTreeMap::new(),
        pockets: pockets::moving(states),
    }
}

/// The environment of every command run in the tree.
struct ChrootEnv {
    layer: String,
    sde: i64,
}

impl ChrootEnv {
    fn command(&self, root: &Path, argv: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(root).args(argv);
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
            .env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("IMGBUILD_LAYER", &self.layer);
        c
    }
}

/// What is set up in the tree while a layer's steps run inside it.
struct Chroot {
    mounts: MountStack,
    policy_rc_d: Option<PathBuf>,
    resolv: Option<Resolv>,
    /// Directories made in the tree for local (file://) mirrors, outermost
    /// first; removed again after their unmount.
    made_dirs: Vec<PathBuf>,
}

struct Resolv {
    path: PathBuf,
    saved: Option<PathBuf>,
    ours: Vec<u8>,
}

impl Chroot {
    fn open(
        root: &Path,
        apt_archives: &Path,
        apt_lists: &Path,
        local_mirrors: &[PathBuf],
    ) -> anyhow::Result<Chroot> {
        let mut s = Chroot {
            mounts: MountStack::default(),
            policy_rc_d: None,
            resolv: None,
            made_dirs: Vec::new(),
        };
        let dir = |rel: &str| -> anyhow::Result<PathBuf> {
            let p = resolve_in_root(root, Path::new(rel))?;
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            Ok(p)
        };
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        s.mounts
            .push(Mount::filesystem("proc", &dir("proc")?, nosuid, "")?);
        s.mounts.push(Mount::filesystem(
            "sysfs",
            &dir("sys")?,
            nosuid | libc::MS_RDONLY,
            "",
        )?);
        s.mounts.push(Mount::bind(Path::new("/dev"), &dir("dev")?)?);
        s.mounts
            .push(Mount::bind(Path::new("/dev/pts"), &dir("dev/pts")?)?);
        fs::create_dir_all(apt_lists.join("partial"))?;
        s.mounts
            .push(Mount::bind(apt_archives, &dir("var/cache/apt/archives")?)?);
        s.mounts
            .push(Mount::bind(apt_lists, &dir("var/lib/apt/lists")?)?);
        // A file:// mirror is seen at its own path inside the tree, as
        // mmdebstrap does for the base.
        for m in local_mirrors {
            let rel = m.strip_prefix("/").unwrap_or(m);
            let target = resolve_in_root(root, rel)?;
            if !target.starts_with(root) {
                bail!("{} leads out of the tree", m.display());
            }
            let mut missing: Vec<PathBuf> = target
                .ancestors()
                .take_while(|a| *a != root && a.symlink_metadata().is_err())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            s.made_dirs.extend(missing);
            s.mounts.push(Mount::bind(m, &target)?);
        }

        // Services must not start while packages install.
        let policy = resolve_in_root(root, Path::new("usr/sbin/policy-rc.d"))?;
        if policy.symlink_metadata().is_err() {
            fs::create_dir_all(policy.parent().expect("has parent"))?;
            fs::write(
                &policy,
                "#!/bin/sh\n# imgbuild: no services start while a layer is built\nexit 101\n",
            )
            .with_context(|| format!("writing {}", policy.display()))?;
            fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
            s.policy_rc_d = Some(policy);
        }

        // Name resolution for apt: the host's resolv.conf, for the layer only.
        let ours = fs::read("/etc/resolv.conf").unwrap_or_default();
        let path = resolve_in_root(root, Path::new("etc/resolv.conf"))?;
        let saved = if path.symlink_metadata().is_ok() {
            let saved = path.with_file_name(".resolv.conf.imgbuild-saved");
            fs::rename(&path, &saved)
                .with_context(|| format!("moving {} aside", path.display()))?;
            Some(saved)
        } else {
            None
        };
        s.resolv = Some(Resolv {
            path: path.clone(),
            saved,
            ours: ours.clone(),
        });
        fs::write(&path, &ours).with_context(|| format!("writing {}", path.display()))?;
        Ok(s)
    }

    /// Undoes everything, reporting failures.
    fn close(mut self) -> anyhow::Result<()> {
        let mounts = std::mem::take(&mut self.mounts);
        let unmounted = mounts.unmount_all();
        let restored = self.restore();
        unmounted.and(restored)
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        for d in std::mem::take(&mut self.made_dirs).iter().rev() {
            fs::remove_dir(d).with_context(|| format!("removing {}", d.display()))?;
        }
        if let Some(p) = self.policy_rc_d.take() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        if let Some(r) = self.resolv.take() {
            let still_ours = fs::symlink_metadata(&r.path).is_ok_and(|m| m.is_file())
                && fs::read(&r.path).is_ok_and(|b| b == r.ours);
            if still_ours {
                fs::remove_file(&r.path)?;
                if let Some(saved) = &r.saved {
                    fs::rename(saved, &r.path)?;
                }
            } else if let Some(saved) = &r.saved {
                // A package replaced resolv.conf: keep its version.
                fs::remove_file(saved)?;
            }
        }
        Ok(())
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        // Unmount first (MountStack's drop), then restore the files.
        drop(std::mem::take(&mut self.mounts));
        if let Err(e) = self.restore() {
            tracing::error!("restoring the tree after a layer: {e:#}");
        }
    }
}

/// Resolves `rel` inside `root` as the tree itself would see it: symlinks in
/// the parent directories are followed (absolute ones relative to `root`,
/// never out of it); the last component is not followed.
pub fn resolve_in_root(root: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    let Some(last) = rel.file_name() else {
        return Ok(root.to_path_buf());
    };
    for c in rel.parent().unwrap_or(Path::new("")).components() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push("..".into()),
            _ => {}
        }
    }
    pending.reverse();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let here: PathBuf = root
            .iter()
            .chain(cur.iter().map(|s| s.as_os_str()))
            .collect::<PathBuf>()
            .join(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    bail!(
                        "too many symlinks resolving {} in {}",
                        rel.display(),
                        root.display()
                    );
                }
                let target = fs::read_link(&here)?;
                if target.is_absolute() {
                    cur.clear();
                }
                let mut parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
            _ => cur.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(cur);
    Ok(p.join(last))
}

/// Copies the overlay `src` into the tree at `rel` (owner root, modes from
/// the overlay; existing directories keep their own mode and owner).
fn copy_overlay(src: &Path, root: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let rel = rel.join(e.file_name());
        let to = resolve_in_root(root, &rel)?;
        let meta = fs::symlink_metadata(&from)?;
        let mode = meta.permissions().mode() & 0o7777;
        let existing = fs::symlink_metadata(&to).ok();
        let ctx = || format!("copying {} to /{}", from.display(), rel.display());
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                // A symlink to a directory (e.g. /bin → usr/bin): go through it.
                Some(m) if m.file_type().is_symlink() && to.is_dir() => {}
                Some(_) => bail!(
                    "{}: a directory in the overlay, but not in the tree at /{}",
                    from.display(),
                    rel.display()
                ),
                None => {
                    fs::create_dir(&to).with_context(ctx)?;
                    std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
                    fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(ctx)?;
                }
            }
            copy_overlay(&from, root, &rel)?;
            continue;
        }
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!(
                    "{}: a file in the overlay, but a directory in the tree at /{}",
                    from.display(),
                    rel.display()
                );
            }
            fs::remove_file(&to).with_context(ctx)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to).with_context(ctx)?;
        } else if meta.is_file() {
            fs::copy(&from, &to).with_context(ctx)?;
            // chown before chmod: chown clears set-id bits.
            std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(ctx)?;
            continue;
        } else {
            bail!(
                "{}: only files, directories and symlinks may be in an overlay",
                from.display()
            );
        }
        std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
    }
    Ok(())
}

fn install_host_file(root: &Path, src: &Path, to: &str, mode: Mode) -> anyhow::Result<()> {
    let rel = recipe::tree_path(to).map_err(anyhow::Error::msg)?;
    let dest = resolve_in_root(root, &rel)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if fs::symlink_metadata(&dest).is_ok() {
        fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    fs::copy(src, &dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    std::os::unix::fs::chown(&dest, Some(0), Some(0))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode.0))?;
    Ok(())
}

fn apply_attrs(root: &Path, fa: &recipe::FileAttrs) -> anyhow::Result<()> {
    let rel = recipe::tree_path(&fa.path).map_err(anyhow::Error::msg)?;
    let p = resolve_in_root(root, &rel)?;
    let uid = fa
        .owner
        .as_deref()
        .map(|o| lookup_id(root, "etc/passwd", o))
        .transpose()?;
    let gid = fa
        .group
        .as_deref()
        .map(|g| lookup_id(root, "etc/group", g))
        .transpose()?;
    let before =
        fs::symlink_metadata(&p).with_context(|| format!("{}: not in the tree", fa.path))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(&p, uid, gid).with_context(|| format!("chown {}", fa.path))?;
    }
    // chown clears set-id bits: put the mode back (or set the new one).
    let mode = fa
        .mode
        .map(|m| m.0)
        .or((!before.file_type().is_symlink()).then(|| before.permissions().mode() & 0o7777));
    if let Some(m) = mode.map(Mode) {
        fs::set_permissions(&p, fs::Permissions::from_mode(m.0))
            .with_context(|| format!("chmod {}", fa.path))?;
    }
    Ok(())
}

/// A user or group id from the tree's passwd/group file, or a number.
fn lookup_id(root: &Path, db: &str, name: &str) -> anyhow::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text =
        fs::read_to_string(root.join(db)).with_context(|| format!("reading /{db} in the tree"))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| {
            bad_input(format!(
                "{name}: not in the tree's /{db} (an earlier layer or this one must create it)"
            ))
        })
}

fn run_script(root: &Path, script: &Path, env: &ChrootEnv, step: &Step) -> anyhow::Result<()> {
    let dir = resolve_in_root(root, Path::new("tmp/imgbuild-scripts"))?;
    fs::create_dir_all(&dir)?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let name = script.file_name().context("script has a name")?;
    let inside = dir.join(name);
    fs::copy(script, &inside)
        .with_context(|| format!("copying {} into the tree", script.display()))?;
    fs::set_permissions(&inside, fs::Permissions::from_mode(0o755))?;
    let in_tree = format!("/tmp/imgbuild-scripts/{}", name.to_string_lossy());
    let mut c = env.command(root, &[in_tree.as_str()]);
    cmd::run_streaming(&mut c, &mut |l| step.line(l))?;
    Ok(())
}

/// Removes what makes trees differ between builds or carry build-host state.
fn cleanup_tree(root: &Path) -> anyhow::Result<()> {
    const REMOVE: &[&str] = &[
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/cache/ldconfig/aux-cache",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/apt/history.log",
        "var/log/apt/term.log",
        "var/log/apt/eipp.log.xz",
        "var/lib/dbus/machine-id",
        "var/lib/systemd/random-seed",
        // systemd-resolved's postinst backs up the build host's resolv.conf.
        "etc/.resolv.conf.systemd-resolved.bak",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/lib/dpkg/statoverride-old",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/subuid-",
        "etc/subgid-",
    ];
    for rel in REMOVE {
        let p = resolve_in_root(root, Path::new(rel))?;
        if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for rel in [
        "tmp",
        "var/tmp",
        "var/lib/apt/lists",
        "var/cache/apt/archives",
    ] {
        let dir = resolve_in_root(root, Path::new(rel))?;
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let keep = rel != "tmp"
                && rel != "var/tmp"
                && matches!(e.file_name().to_str(), Some("partial" | "lock"));
            if keep {
                continue;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                mount::remove_unless_mounted(&p)?;
            } else {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    // Every machine made from the image gets its own id on first boot.
    let mid = resolve_in_root(root, Path::new("etc/machine-id"))?;
    if fs::symlink_metadata(&mid).is_ok_and(|m| m.is_file() && m.len() > 0) {
        fs::write(&mid, b"").with_context(|| format!("emptying {}", mid.display()))?;
    }
    Ok(())
}

/// The packages installed in the tree at `root`, sorted by name.
pub fn installed_packages(root: &Path) -> anyhow::Result<Vec<Package>> {
    let admindir = root.join("var/lib/dpkg");
    let out = cmd::run(&mut cmd::command(
        "dpkg-query",
        [
            format!("--admindir={}", admindir.display()),
            "-W".into(),
            "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n".into(),
        ],
    ))
    .context("listing the tree's packages")?;
    let mut pkgs: Vec<Package> = out
        .text()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && f[0].starts_with("ii")).then(|| Package {
                name: f[1].to_string(),
                version: f[2].to_string(),
                arch: f[3].to_string(),
            })
        })
        .collect();
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pkgs)
}

#[cfg(test)]
mod tests;
