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
//!    its apt step) — so a no-op rebuild is one restore (the chain of entries
//!    below it) and a changed file does not rerun apt;
//! 4. builds the missing layers on top: layer 0 with mmdebstrap, every layer
//!    then apt packages (in the tree, through chroot), its `files/` overlay,
//!    host files, owners/modes, scripts and units; and stores each result in
//!    the cache before the next starts, as the change from the entry below
//!    it ([`crate::treediff`]). A failed layer is never stored.
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

mod apt;
mod chroot;
mod clean;
mod keys;
mod overlay;
mod packages;
mod store;

use self::apt::*;
use self::chroot::*;
use self::clean::*;
pub use self::keys::TreeOptions;
use self::keys::*;
pub use self::overlay::resolve_in_root;
use self::overlay::*;
pub use self::packages::{installed_packages, AptIndex, Package};
use self::store::*;

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
    /// imgbuild's own programs the layer puts in the tree (`host_files`
    /// from `@NAME`, e.g. the agent), for the SBOM.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binaries: Vec<Binary>,
}

/// One of imgbuild's programs in the tree.
#[derive(Debug, Clone, Serialize)]
pub struct Binary {
    pub name: String,
    /// Where in the tree.
    pub path: String,
    pub sha256: String,
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
                self.cache.extract(&top.key, dest, &step)?;
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
        let goal = if background {
            Goal::TreeStoringTopLater
        } else {
            Goal::Tree
        };
        let Executed {
            layers,
            tree,
            mut pending,
        } = run.execute(goal)?;
        let (work, root) = tree.expect("a tree was asked for");
        let step = run.progress.step("listing packages");
        let index = AptIndex::load(
            &run.cache.apt_lists(&run.base),
            &[run.base.mirror.as_str(), run.base.security_mirror.as_str()],
        );
        let packages = installed_packages(&root, &index)?;
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
    Ok(run.execute(Goal::Layers)?.layers)
}

/// What [`Run::execute`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Every layer in the cache; a fully cached stack is only checked, not
    /// extracted (a tree results only when something had to be built).
    Layers,
    /// The final tree, every layer stored before the next starts.
    Tree,
    /// The final tree, the top layer's store left to a [`PendingStore`]
    /// (finished while the disk is assembled).
    TreeStoringTopLater,
}

/// What [`Run::execute`] made.
struct Executed {
    /// The layers, bottom first, with their keys and outcomes.
    layers: Vec<BuiltLayer>,
    /// The work directory and the tree in it, when a tree was asked for
    /// or anything was built.
    tree: Option<(TreeDir, PathBuf)>,
    /// The top layer's store, with [`Goal::TreeStoringTopLater`].
    pending: Option<PendingStore>,
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
    /// The last entry the tree in the work directory matches, and its
    /// snapshot: the next entry stored is the change from it.
    baseline: std::cell::RefCell<Option<Baseline>>,
}

/// A cache entry and a snapshot of the tree as that entry restores it.
pub(super) struct Baseline {
    pub(super) key: String,
    pub(super) snap: crate::treediff::Snapshot,
}

static WORK_SEQ: AtomicUsize = AtomicUsize::new(0);

impl<'p> Run<'p> {
    fn prepare(opts: &TreeOptions, progress: &'p Progress) -> anyhow::Result<Run<'p>> {
        if let Some(why) = &opts.layers_missing {
            return Err(crate::exit::bad_input(why.clone()));
        }
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
            baseline: std::cell::RefCell::new(None),
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
            // The key's inputs hashed each host file: `file MODE SHA256`.
            let binaries = p
                .layer
                .recipe
                .host_files
                .iter()
                .filter_map(|hf| {
                    let name = hf.from.strip_prefix('@')?;
                    let desc = p.inputs.files.get(&format!("{} → {}", hf.from, hf.to))?;
                    Some(Binary {
                        name: name.to_string(),
                        path: hf.to.clone(),
                        sha256: desc.rsplit(' ').next()?.to_string(),
                    })
                })
                .collect();
            out.push(BuiltLayer {
                name: p.layer.name.clone(),
                key: p.key.clone(),
                outcome,
                binaries,
            });
        }
        out
    }

    /// Logs hits and misses, extracts the highest cached layer, builds the
    /// rest (see [`Goal`]).
    fn execute(&self, goal: Goal) -> anyhow::Result<Executed> {
        let (want_tree, background) = match goal {
            Goal::Layers => (false, false),
            Goal::Tree => (true, false),
            Goal::TreeStoringTopLater => (true, true),
        };
        let out = self.report();
        let (top_cached, resume_in_layer) = self.resume_point();
        let all_cached = top_cached == Some(self.plan.len() - 1) && resume_in_layer.is_none();
        if all_cached && !want_tree {
            self.cache.touch(&self.plan[self.plan.len() - 1].key);
            return Ok(Executed {
                layers: out,
                tree: None,
                pending: None,
            });
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
                self.cache.extract(key, &root, &step).with_context(|| {
                    format!("layer {}: extracting the cached tree", p.layer.name)
                })?;
                step.done();
                self.set_baseline(key, &root)?;
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
        Ok(Executed {
            layers: out,
            tree: Some((work, root)),
            pending,
        })
    }

    /// Builds one layer in `root` (which holds its parent's tree, or
    /// nothing for the base) and stores it: packages → files → scripts →
    /// units → cleanup → store. With `from_packages`, `root` already holds
    /// this layer's package stage. With `scratch` (a directory for a plain
    /// tar), the store is left to the returned [`PendingStore`].
    fn build_layer(
        &self,
        p: &Planned,
        root: &Path,
        from_packages: bool,
        scratch: Option<&Path>,
    ) -> anyhow::Result<Option<PendingStore>> {
        let env = ChrootEnv {
            layer: p.layer.name.clone(),
            sde: self.sde,
        };
        self.layer_packages(p, root, &env, from_packages)?;
        mount::check_interrupted()?;
        self.layer_files(p, root)?;
        let r = &p.layer.recipe;
        if !r.scripts.is_empty() || !r.enable.is_empty() || !r.mask.is_empty() {
            let session = self.chroot(root)?;
            self.layer_scripts(p, root, &env)?;
            self.layer_units(p, root, &env)?;
            session.close()?;
        }
        cleanup_tree(root)?;
        mount::check_interrupted()?;
        self.store_layer(p, root, scratch)
    }

    /// Step: the layer's packages: the base by mmdebstrap (with its
    /// keyrings and sources), the `updates` step, or the recipe's packages
    /// in the chroot (then its package stage is stored).
    fn layer_packages(
        &self,
        p: &Planned,
        root: &Path,
        env: &ChrootEnv,
        from_packages: bool,
    ) -> anyhow::Result<()> {
        let packages = p.layer.packages_for(self.base.distro);
        if p.kind == Kind::Updates {
            self.updates(root, env)?;
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
            self.install_packages(p, root, env, &packages)?;
            session.close()?;
            cleanup_tree(root)?;
            if let Some(stage) = &p.packages_stage {
                self.store(
                    root,
                    &format!("{}: archiving its packages", p.layer.name),
                    &stage.inputs,
                )?;
            }
        }
        Ok(())
    }

    /// Step: the `files/` overlay, host files, owners and modes.
    fn layer_files(&self, p: &Planned, root: &Path) -> anyhow::Result<()> {
        let files_dir = p.layer.dir.join(recipe::FILES_DIR);
        if !files_dir.is_dir()
            && p.layer.recipe.host_files.is_empty()
            && p.layer.recipe.files.is_empty()
        {
            return Ok(());
        }
        let step = self.progress.step(format!("{}: files", p.layer.name));
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
        Ok(())
    }

    /// Step: the recipe's scripts, in order, in the chroot.
    fn layer_scripts(&self, p: &Planned, root: &Path, env: &ChrootEnv) -> anyhow::Result<()> {
        for script in &p.layer.recipe.scripts {
            mount::check_interrupted()?;
            let step = self
                .progress
                .step(format!("{}: script {script}", p.layer.name));
            run_script(root, &p.layer.dir.join(script), env, &step)
                .with_context(|| format!("script {script}"))?;
            step.done();
        }
        Ok(())
    }

    /// Step: `systemctl enable` and `mask` of the recipe's units.
    fn layer_units(&self, p: &Planned, root: &Path, env: &ChrootEnv) -> anyhow::Result<()> {
        let r = &p.layer.recipe;
        for (verb, units) in [("enable", &r.enable), ("mask", &r.mask)] {
            if units.is_empty() {
                continue;
            }
            let step = self
                .progress
                .step(format!("{}: systemctl {verb}", p.layer.name));
            let mut c = env.command(root, &["systemctl", verb]);
            c.args(units);
            cmd::run_streaming(&mut c, &mut |l| step.line(l))
                .with_context(|| format!("systemctl {verb}"))?;
            step.done();
        }
        Ok(())
    }

    /// Step: the layer into the cache, now or (with `scratch`) left to the
    /// returned [`PendingStore`].
    fn store_layer(
        &self,
        p: &Planned,
        root: &Path,
        scratch: Option<&Path>,
    ) -> anyhow::Result<Option<PendingStore>> {
        let name = &p.layer.name;
        match scratch {
            Some(dir) => self.store_later(root, name, &p.inputs, dir).map(Some),
            None => self
                .store(root, &format!("{name}: archiving"), &p.inputs)
                .map(|()| None),
        }
    }
}

fn next_work_path(cache: &Cache, what: &str) -> PathBuf {
    cache.work_path(&format!(
        "{what}{}",
        WORK_SEQ.fetch_add(1, Ordering::SeqCst)
    ))
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

#[cfg(test)]
mod tests;
