//! Planning the stack: the tree stage's options (from the command line
//! too), where host files come from, and every layer's and stage's cache
//! key inputs.

use super::*;

/// Everything the tree stage needs to know.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// The stack's directory (`layers/`).
    pub layers_dir: PathBuf,
    /// Why there is no stack when none was given and none was found (the
    /// error of the stage's first step, so that the build's other input
    /// checks come first).
    pub layers_missing: Option<String>,
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
        let located = locate_layers(a.layers_dir.as_deref());
        let layers_dir = match &located {
            Ok((dir, why)) => {
                tracing::info!("layers: {} ({why})", dir.display());
                dir.clone()
            }
            Err(_) => PathBuf::from("layers"),
        };
        let mut opts = TreeOptions::new(
            layers_dir,
            a.cache_dir.clone().unwrap_or_else(seeds::cachedir::default),
        );
        opts.layers_missing = located.err();
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

/// The installed layers, relative to the prefix the imgbuild executable is
/// installed under (`/usr/bin/imgbuild` → `/usr/share/imgbuild/layers`).
pub const INSTALLED_LAYERS: &str = "share/imgbuild/layers";
/// The agent and other `@NAME` host files as installed, relative to the
/// same prefix (`/usr/lib/imgbuild`).
pub const INSTALLED_BINS: &str = "lib/imgbuild";

/// The prefix the running executable is installed under: `/usr` for
/// `/usr/bin/imgbuild`.
fn install_prefix() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running imgbuild")?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"))
        .to_path_buf())
}

/// The layers directory: `--layers-dir`, else `./layers` when the current
/// directory has one, else the installed layers. Returns it and which of
/// those it is, or why there is none.
pub fn locate_layers(arg: Option<&Path>) -> Result<(PathBuf, &'static str), String> {
    if let Some(dir) = arg {
        return Ok((dir.to_path_buf(), "--layers-dir"));
    }
    let here = Path::new("layers");
    if here.is_dir() {
        return Ok((here.to_path_buf(), "./layers in the current directory"));
    }
    let installed = install_prefix()
        .map_err(|e| format!("no layers: give --layers-dir DIR ({e:#})"))?
        .join(INSTALLED_LAYERS);
    if installed.is_dir() {
        return Ok((installed, "the installed layers"));
    }
    Err(format!(
        "no layers: give --layers-dir DIR, or run imgbuild where ./layers is (a checkout), \
         or install the package (layers in {})",
        installed.display()
    ))
}

impl TreeOptions {
    /// Options with defaults for everything but the two directories.
    pub fn new(layers_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> TreeOptions {
        TreeOptions {
            layers_dir: layers_dir.into(),
            layers_missing: None,
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

/// Where each `host_files` entry of `layer` comes from.
pub(super) fn resolve_host_files(
    layer: &Layer,
    opts: &TreeOptions,
) -> anyhow::Result<Vec<PathBuf>> {
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
                    let dir = exe.parent().unwrap_or(Path::new("/"));
                    let beside = dir.join(name);
                    let installed = install_prefix()?.join(INSTALLED_BINS).join(name);
                    if !beside.is_file() && installed.is_file() {
                        installed
                    } else {
                        beside
                    }
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
pub(super) fn layer_inputs(
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
pub(super) fn packages_stage_inputs(
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
pub(super) fn updates_inputs(
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
