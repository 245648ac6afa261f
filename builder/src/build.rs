//! The main command: env → root tree → disk → image, seed, SHA256SUMS and
//! manifest.
//!
//! Everything cheap is checked first (outputs, format, size syntax, env,
//! kernel and GRUB in the tree), so bad input fails in a second. Every file
//! is built under a temporary directory in the output directory and renamed
//! into place at the end; a failure removes it and leaves no partial output.
//!
//! A build from layers looks its image up in the image cache
//! ([`crate::imagecache`]) once the layers' keys are known: a hit copies the
//! image and skips the tree and the assembly; a miss stores what it made.
//! The seed, SHA256SUMS and the manifest are written the same way either way.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::assemble::{assemble, Assembled, DiskOptions};
use crate::cli::BuildArgs;
use crate::exit::bad_input;
use crate::fsutil::{copy_tree, rename_into};
use crate::imagecache::{self, ImageInputs, ImageSpec, Images, Lookup, ManifestParts, Programs};
use crate::output::{self, human, Format};
use crate::progress::{complete_step, Progress};
use crate::{grub, rootfs};

/// The mode of an image file with a baked env (it holds the env's secrets).
pub const BAKED_IMAGE_MODE: u32 = 0o600;

/// Everything the main command was asked to do.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub env: PathBuf,
    pub output: PathBuf,
    /// `--format`; by default the output's suffix decides.
    pub format: Option<String>,
    /// `--size` in bytes, parsed once here from the command line (`4G`);
    /// by default the tree plus headroom. The disk, the image cache key and
    /// its miss reasons all take this value.
    pub size: Option<u64>,
    /// `--cmdline`: added to the kernel command line.
    pub cmdline: String,
    /// `--seed`: where the seed ISO goes (default: `NAME.seed.iso` beside the image).
    pub seed: Option<PathBuf>,
    /// `--bake-env`: put the env at /app/env.yml (0600) in the image, no seed.
    pub bake_env: bool,
    pub force: bool,
    /// `--compress`: compressed qcow2 clusters.
    pub compress: bool,
    /// `--tree`: a ready root tree (copied, never modified) instead of the layers.
    pub tree: Option<PathBuf>,
    /// The layer stack to build the tree from (when there is no `--tree`).
    pub layers: Option<rootfs::TreeOptions>,
    /// `--no-image-cache`: assemble the disk even when the image is cached,
    /// and do not store it.
    pub no_image_cache: bool,
    /// -1 quiet, 0 normal, 1 verbose (for the progress display).
    pub verbosity: i8,
}

impl BuildOptions {
    /// The build's options from the command line; `env` and `output` are
    /// required by clap.
    pub fn from_args(args: BuildArgs, verbosity: i8) -> Result<BuildOptions> {
        let a = args;
        let layers = match &a.tree {
            Some(_) => None,
            None => Some(rootfs::TreeOptions::from_args(&a.layers)?),
        };
        Ok(BuildOptions {
            env: a.env.unwrap_or_default(),
            output: a.output.unwrap_or_default(),
            format: a.format,
            size: a.size.as_deref().map(parse_size).transpose()?,
            cmdline: a.cmdline,
            seed: a.seed,
            bake_env: a.bake_env,
            force: a.force,
            compress: a.compress,
            tree: a.tree,
            layers,
            no_image_cache: a.no_image_cache,
            verbosity,
        })
    }
}

/// Paths of all outputs of one build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub image: PathBuf,
    pub seed: Option<PathBuf>,
    pub sums: PathBuf,
    pub manifest: PathBuf,
    /// The SPDX SBOM (see [`crate::sbom`]).
    pub sbom: PathBuf,
}

impl Outputs {
    /// `ecs.qcow2` → `ecs.seed.iso`, `ecs.SHA256SUMS`, `ecs.manifest.json` beside
    /// it (named after the image, so two images can share a directory).
    pub fn plan(opts: &BuildOptions) -> Outputs {
        let dir = out_dir(&opts.output);
        let stem = Format::stem(&opts.output);
        Outputs {
            image: opts.output.clone(),
            seed: (!opts.bake_env).then(|| {
                opts.seed
                    .clone()
                    .unwrap_or_else(|| dir.join(format!("{stem}.seed.iso")))
            }),
            sums: dir.join(format!("{stem}.SHA256SUMS")),
            manifest: dir.join(format!("{stem}.manifest.json")),
            sbom: dir.join(format!("{stem}.spdx.json")),
        }
    }

    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.image.as_path(), &self.sums, &self.manifest, &self.sbom];
        if let Some(s) = &self.seed {
            v.push(s);
        }
        v
    }
}

fn out_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The root tree the disk is made from, with what is known about how it was built.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TreeInfo {
    /// The layers and their cache keys, bottom first (empty for `--tree`).
    pub layers: Vec<rootfs::BuiltLayer>,
    /// Where the tree came from when it was given with `--tree`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The archive's pockets the tree was built from, with the `Date` and
    /// sha256 of each InRelease (empty for `--tree`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pockets: Vec<crate::pockets::PocketState>,
    /// Built from the release pocket alone (`--release-pocket-only`): no
    /// updates, no security fixes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub release_pocket_only: bool,
}

/// The main command, as a list of named steps: check the inputs, resolve
/// the layers (keys only) and look the image up in the image cache, make
/// the image (restored from the cache, or root tree → disk → format), the
/// seed, sums and manifest, the SBOM, store a new image in the cache, then move every
/// output into place.
pub fn run(opts: &BuildOptions) -> Result<()> {
    let progress = Progress::new(opts.verbosity);
    complete_step(
        || {
            let input = check_inputs(opts)?;
            let work = WorkFiles::create(opts, &input.outs)?;
            let stack = resolve_layers(opts, &progress)?;
            let disk_opts = DiskOptions {
                size: opts.size,
                size_unit: input.format.size_unit(),
                cmdline: opts.cmdline.clone(),
                baked_env: opts.bake_env.then(|| input.env_bytes.clone()),
                source_date_epoch: stack.as_ref().map(|s| s.source_date_epoch()),
            };
            let cached = match &stack {
                Some(s) => look_up_image(s, opts, input.format, &disk_opts)?,
                None => None,
            };
            let made = image(
                opts,
                stack,
                cached.as_ref(),
                &work,
                input.format,
                &disk_opts,
            )?;
            if let Some(seed) = &work.seed {
                write_seed(
                    &input.env_bytes,
                    &input.env,
                    made.parts.disk.source_date_epoch,
                    seed,
                )?;
            }
            let image_sha = sums_and_manifest(opts, &input, &work, &made)?;
            complete_step(
                || write_sbom(&input.outs, &work, &made, &image_sha),
                |n| format!("SBOM: {n} packages"),
            )?;
            // A new image goes into the image cache before it is the user's to change.
            if let Some(c) = cached.as_ref().filter(|_| !made.from_cache) {
                imagecache::store_after_build(
                    &c.images,
                    &c.inputs,
                    &work.image,
                    &image_sha,
                    &made.parts,
                );
            }
            crate::mount::check_interrupted()?;
            commit_outputs(&work, &input.outs)?;
            Ok((input.outs.image, made.parts.disk.layout.size))
        },
        |(image, virtual_size)| {
            let file_size = fs::metadata(image).map_or(0, |m| m.len());
            format!(
                "wrote {} ({}, virtual {})",
                image.display(),
                human(file_size),
                human(*virtual_size)
            )
        },
    )?;
    Ok(())
}

/// What the cheap checks found: every input is good (bad input fails here,
/// in a second, before anything slow).
struct Inputs {
    format: Format,
    outs: Outputs,
    env_bytes: Vec<u8>,
    env: seeds::env::Env,
}

/// Step: the outputs, format, size, kernel command line and env.
fn check_inputs(opts: &BuildOptions) -> Result<Inputs> {
    let format = Format::choose(&opts.output, opts.format.as_deref())?;
    if opts.compress && format != Format::Qcow2 {
        return Err(bad_input(format!(
            "--compress needs a qcow2 output, not {format}"
        )));
    }
    check_format_limits(opts, format)?;
    let outs = Outputs::plan(opts);
    check_outputs(&outs, opts.force)?;
    check_distinct(&outs, &opts.env)?;
    grub::check_cmdline(&opts.cmdline)?;
    let (env_bytes, env) = crate::env::load_env(&opts.env)?;
    if opts.tree.is_some() {
        crate::exit::require_root(
            "making a disk from a root tree needs root: some of the tree's files are readable \
             by root alone, and the image's own files (fstab, grub.cfg) are given to root",
        )?;
    }
    Ok(Inputs {
        format,
        outs,
        env_bytes,
        env,
    })
}

/// What a format asks of the size and the name: GCE a disk of whole GiB
/// (an explicit `--size` that is not is refused; the default is rounded up
/// when the disk is planned, see [`Format::size_unit`]), an OVA a name its
/// tar members fit.
fn check_format_limits(opts: &BuildOptions, format: Format) -> Result<()> {
    // Every disk is whole MiB (the planner rounds --size up to one); only
    // a larger unit is a reason to refuse.
    let unit = format.size_unit();
    if let Some(size) = opts.size.filter(|s| unit > 1 << 20 && s % unit != 0) {
        return Err(bad_input(format!(
            "--size {} is not a whole number of GiB, as a {format} image needs: use --size {}G",
            human(size),
            size.div_ceil(1 << 30)
        )));
    }
    let stem = Format::stem(&opts.output);
    if format == Format::Ova && stem.len() > output::ova::MAX_NAME {
        return Err(bad_input(format!(
            "the image's name {stem:?} is too long for an OVA: at most {} bytes",
            output::ova::MAX_NAME
        )));
    }
    Ok(())
}

/// The build's work directory beside the output (removed when dropped) and
/// the work paths of the outputs in it.
struct WorkFiles {
    dir: tempfile::TempDir,
    /// The final name already: a VMDK's descriptor names its own file.
    image: PathBuf,
    seed: Option<PathBuf>,
    manifest: PathBuf,
    sbom: PathBuf,
    sums: PathBuf,
}

impl WorkFiles {
    fn create(opts: &BuildOptions, outs: &Outputs) -> Result<WorkFiles> {
        let dir = tempfile::Builder::new()
            .prefix(".imgbuild-")
            .tempdir_in(out_dir(&opts.output))
            .with_context(|| {
                format!(
                    "creating a work directory in {}",
                    out_dir(&opts.output).display()
                )
            })?;
        let image = dir.path().join(
            outs.image
                .file_name()
                .context("the output has no file name")?,
        );
        Ok(WorkFiles {
            image,
            seed: outs.seed.as_ref().map(|_| dir.path().join("seed.iso")),
            manifest: dir.path().join("manifest.json"),
            sbom: dir.path().join("spdx.json"),
            sums: dir.path().join("SHA256SUMS"),
            dir,
        })
    }
}

/// Step: the layers' keys (nothing extracted yet); `None` for `--tree`.
fn resolve_layers<'p>(
    opts: &BuildOptions,
    progress: &'p Progress,
) -> Result<Option<rootfs::Stack<'p>>> {
    match (&opts.tree, &opts.layers) {
        (Some(_), _) => Ok(None),
        (None, Some(layers)) => Ok(Some(rootfs::resolve(layers, progress)?)),
        (None, None) => bail!("neither a tree nor layers to build one from"),
    }
}

/// Step: the image at its work path: a copy of the cached one, else made
/// from the tree; private when it carries the env.
fn image(
    opts: &BuildOptions,
    stack: Option<rootfs::Stack>,
    cached: Option<&CachedImage>,
    work: &WorkFiles,
    format: Format,
    disk_opts: &DiskOptions,
) -> Result<Made> {
    let restored = match (&stack, cached) {
        (Some(s), Some(c)) => restore_image(s, c, &work.image),
        _ => None,
    };
    let made = match restored {
        Some(made) => {
            // Unlocks the cache.
            drop(stack);
            made
        }
        None => make_image(opts, stack, work.dir.path(), &work.image, format, disk_opts)?,
    };
    crate::mount::check_interrupted()?;
    // An image that carries the env carries its secrets: readable by its
    // owner only, as the seed is (and so is its image cache entry).
    if opts.bake_env {
        fs::set_permissions(&work.image, fs::Permissions::from_mode(BAKED_IMAGE_MODE))
            .context("making the image with the baked env private")?;
    }
    Ok(made)
}

/// Step: `SHA256SUMS` and the manifest in the work directory; returns the
/// image's sha256.
fn sums_and_manifest(
    opts: &BuildOptions,
    input: &Inputs,
    work: &WorkFiles,
    made: &Made,
) -> Result<String> {
    let outs = &input.outs;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let image_sha = match &made.sha256 {
        Some(sha) => sha.clone(),
        None => output::sha256_file(&work.image)?,
    };
    let seed_sha = match &work.seed {
        Some(seed) => Some(output::sha256_file(seed)?),
        None => None,
    };
    let mut sums = vec![(image_sha.clone(), name(&outs.image))];
    if let (Some(seed), Some(sha)) = (&outs.seed, &seed_sha) {
        if out_dir(seed) == out_dir(&outs.image) {
            sums.push((sha.clone(), name(seed)));
        }
    }
    let manifest = Manifest {
        imgbuild: env!("CARGO_PKG_VERSION"),
        image: ImageInfo {
            file: name(&outs.image),
            format: input.format,
            compressed: opts.compress,
            virtual_size: made.parts.disk.layout.size,
            file_size: fs::metadata(&work.image)?.len(),
            sha256: image_sha.clone(),
        },
        seed: outs
            .seed
            .as_ref()
            .zip(seed_sha)
            .map(|(s, sha256)| SeedInfo {
                file: s.display().to_string(),
                sha256,
            }),
        env: if opts.bake_env {
            "baked into the image at /app/env.yml"
        } else {
            "on the seed"
        },
        disk: &made.parts.disk,
        tree: &made.tree,
        packages: &made.parts.packages,
    };
    let mut manifest_json = serde_json::to_vec_pretty(&manifest)?;
    manifest_json.push(b'\n');
    seeds::atomic::write_atomic(&work.manifest, &manifest_json, 0o644)
        .context("writing the manifest")?;
    seeds::atomic::write_atomic(&work.sums, output::sha256sums(&sums).as_bytes(), 0o644)
        .context("writing SHA256SUMS")?;
    Ok(image_sha)
}

/// Step: the SBOM in the work directory (see [`crate::sbom`]), from the
/// manifest's data; returns how many packages it lists.
fn write_sbom(outs: &Outputs, work: &WorkFiles, made: &Made, image_sha: &str) -> Result<usize> {
    let name = outs
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let exe_sha = std::env::current_exe()
        .ok()
        .and_then(|p| crate::cache::hash_file(&p).ok());
    let sbom = crate::sbom::document(&crate::sbom::Subject {
        image: &name,
        image_sha256: image_sha,
        source_date_epoch: made.parts.disk.source_date_epoch,
        distro: &made.parts.os.id,
        codename: &made.parts.os.codename,
        layers: &made.tree.layers,
        packages: &made.parts.packages,
        imgbuild_version: crate::sbom::IMGBUILD_VERSION,
        imgbuild_sha256: exe_sha.as_deref(),
    });
    let mut json = serde_json::to_vec_pretty(&sbom)?;
    json.push(b'\n');
    seeds::atomic::write_atomic(&work.sbom, &json, 0o644).context("writing the SBOM")?;
    Ok(made.parts.packages.len())
}

/// Step: every output into place, the image last, so an image never exists
/// without its sums.
fn commit_outputs(work: &WorkFiles, outs: &Outputs) -> Result<()> {
    if let (Some(from), Some(to)) = (&work.seed, &outs.seed) {
        rename_into(from, to)?;
    }
    rename_into(&work.manifest, &outs.manifest)?;
    rename_into(&work.sbom, &outs.sbom)?;
    rename_into(&work.sums, &outs.sums)?;
    rename_into(&work.image, &outs.image)?;
    File::open(out_dir(&outs.image))
        .and_then(|d| d.sync_all())
        .context("syncing the output directory")
}

/// The image at its work path, with what the manifest needs from the tree
/// and the assembly.
struct Made {
    parts: ManifestParts,
    tree: TreeInfo,
    /// The image's sha256 when already known (a restored image is hashed to
    /// check it).
    sha256: Option<String>,
    /// Copied from the image cache.
    from_cache: bool,
}

/// How this build uses the image cache: its entries, this image's key
/// inputs, and the entry when it is there.
struct CachedImage {
    images: Images,
    inputs: ImageInputs,
    hit: Option<Box<imagecache::Entry>>,
}

/// Looks the image up in the image cache and logs a miss and why; `None`
/// with `--no-image-cache`. A hit needs the top layer in the layer cache
/// too, so the manifest's layers read as they would after a miss.
fn look_up_image(
    stack: &rootfs::Stack,
    opts: &BuildOptions,
    format: Format,
    disk: &DiskOptions,
) -> Result<Option<CachedImage>> {
    if opts.no_image_cache {
        tracing::info!("image: the image cache is off (--no-image-cache)");
        return Ok(None);
    }
    let spec = ImageSpec {
        top_layer: stack.top(),
        source_date_epoch: stack.source_date_epoch(),
        format,
        compress: opts.compress,
        size: disk.size,
        cmdline: &disk.cmdline,
        baked_env: disk.baked_env.as_deref(),
        output: &opts.output,
    };
    let inputs = imagecache::image_inputs(&spec, &Programs::of_this_process()?);
    let images = Images::new(stack.cache());
    let key = inputs.key();
    let hit = if !stack.top_cached() {
        tracing::info!(
            "image: miss {}: layer {} is not cached",
            &key[..12],
            spec.top_layer.layer
        );
        None
    } else {
        match images.lookup(&inputs) {
            Lookup::Hit(e) => Some(e),
            Lookup::Miss(why) => {
                tracing::info!("image: miss {}: {why}", &key[..12]);
                None
            }
        }
    };
    Ok(Some(CachedImage {
        images,
        inputs,
        hit,
    }))
}

/// On a hit, copies the cached image to `image_tmp` (nothing is extracted
/// or assembled). `None` on a miss, or when the copy is not the image the
/// entry recorded (said in a warning; the build then assembles it).
fn restore_image(stack: &rootfs::Stack, cached: &CachedImage, image_tmp: &Path) -> Option<Made> {
    let entry = cached.hit.as_ref()?;
    let layers = stack.report();
    tracing::info!("image: hit {}", &entry.meta.key[..12]);
    let restored = complete_step(
        || {
            let sha = cached.images.restore(entry, image_tmp)?;
            File::open(image_tmp)
                .and_then(|f| f.sync_all())
                .context("syncing the image")?;
            Ok(sha)
        },
        |_| "image: copied from the cache".into(),
    );
    match restored {
        Ok(sha256) => Some(Made {
            parts: entry.parts.clone(),
            tree: TreeInfo {
                layers,
                source: None,
                pockets: stack.pockets().to_vec(),
                release_pocket_only: stack.base().release_only,
            },
            sha256: Some(sha256),
            from_cache: true,
        }),
        Err(e) => {
            tracing::warn!("image: the cached image is not usable, assembling it: {e:#}");
            let _ = fs::remove_file(image_tmp);
            None
        }
    }
}

/// Step: the root tree, a work copy this build may modify (of `--tree`,
/// or the layers extracted and built), what the manifest says of it, and
/// the built stack (whose top layer is still being stored).
fn root_tree(
    opts: &BuildOptions,
    stack: Option<rootfs::Stack>,
    work: &Path,
) -> Result<(PathBuf, TreeInfo, Option<rootfs::BuiltTree>)> {
    Ok(match (&opts.tree, stack) {
        (Some(src), _) => {
            let copy = work.join("tree");
            copy_tree(src, &copy)?;
            let info = TreeInfo {
                layers: vec![],
                source: Some(src.display().to_string()),
                ..TreeInfo::default()
            };
            (copy, info, None)
        }
        (None, Some(stack)) => {
            // A top layer built now is compressed into the cache while the
            // disk is assembled (finished below).
            let built = stack.build_with_background_store()?;
            let info = TreeInfo {
                layers: built.layers.clone(),
                source: None,
                pockets: built.pockets.clone(),
                release_pocket_only: built.base.release_only,
            };
            (built.root.clone(), info, Some(built))
        }
        (None, None) => bail!("neither a tree nor layers to build one from"),
    })
}

/// Makes the image at `image_tmp`: the tree (a work copy of `--tree`, or
/// the layers extracted and built), the raw disk assembled from it in
/// `work`, then the image in its format.
fn make_image(
    opts: &BuildOptions,
    stack: Option<rootfs::Stack>,
    work: &Path,
    image_tmp: &Path,
    format: Format,
    disk_opts: &DiskOptions,
) -> Result<Made> {
    // The tree: a work copy this build may modify.
    let (tree, info, built) = complete_step(
        || root_tree(opts, stack, work),
        |_| "root tree ready".into(),
    )?;
    let packages = match &built {
        Some(b) => b.packages.clone(),
        // A tree given with --tree: no indexes to say where its packages
        // came from.
        None => rootfs::installed_packages(&tree, &rootfs::AptIndex::default())?,
    };

    let os = crate::imagecache::OsInfo::read(&tree);
    let a = assemble(&tree, work, disk_opts)?;

    // The image.
    complete_step(
        || convert(&a, image_tmp, format, opts.compress),
        |_| format!("image: {format}"),
    )?;
    match built {
        // Dropping the built tree removes its work directory.
        Some(mut b) => b.finish_store()?,
        None => {
            fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?
        }
    }
    Ok(Made {
        parts: ManifestParts {
            disk: a,
            packages,
            os,
        },
        tree: info,
        sha256: None,
        from_cache: false,
    })
}

/// Step: the raw disk → the image in its format (see
/// [`output::write_image`]), synced; the raw disk is removed.
fn convert(a: &Assembled, image_tmp: &Path, format: Format, compress: bool) -> Result<()> {
    match format {
        Format::Raw => fs::rename(&a.raw, image_tmp)?,
        _ => {
            let id = output::Identity {
                name: Format::stem(image_tmp),
                disk_guid: a.layout.disk_guid.0,
                epoch: a.source_date_epoch,
            };
            output::write_image(&a.raw, image_tmp, format, compress, &id)?;
            fs::remove_file(&a.raw).with_context(|| format!("removing {}", a.raw.display()))?;
        }
    }
    File::open(image_tmp)
        .and_then(|f| f.sync_all())
        .context("syncing the image")
}

/// Refuses a missing or unwritable output directory and existing outputs
/// (unless `force`).
pub fn check_outputs(outs: &Outputs, force: bool) -> Result<()> {
    for p in outs.all() {
        let dir = out_dir(p);
        let meta = fs::metadata(&dir).map_err(|e| {
            bad_input(format!(
                "the output directory {} does not exist or cannot be read: {e}",
                dir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(bad_input(format!("{} is not a directory", dir.display())));
        }
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
            return Err(bad_input(format!(
                "the output directory {} is not writable",
                dir.display()
            )));
        }
        if let Ok(m) = fs::symlink_metadata(p) {
            // Replaced by a rename: never a directory, device, FIFO or
            // symbolic link (dangling or not), even with --force.
            if let Some(what) = crate::outpath::not_regular(&m.file_type()) {
                return Err(bad_input(format!(
                    "{} is {what}: an output replaces only a regular file",
                    p.display()
                )));
            }
            if !force {
                return Err(bad_input(format!(
                    "{} exists; pass --force to replace it",
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// Refuses outputs that are one file (`--seed` equal to `-o`) or the env.
pub fn check_distinct(outs: &Outputs, env: &Path) -> Result<()> {
    let all = outs.all();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if crate::outpath::same_file(a, b) {
                return Err(bad_input(format!(
                    "{} and {} are the same file: the image, the seed, SHA256SUMS and the \
                     manifest need a file each",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    for p in all {
        crate::outpath::check_not_an_input(p, &[("the env", env)])?;
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64> {
    seeds::env::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| bad_input(format!("cannot read --size {s:?}: use e.g. 4G or 1500M")))
}

/// Writes the cidata seed ISO (NoCloud: user-data = the env verbatim,
/// meta-data) with mode 0600: it carries the env's secrets.
fn write_seed(env_bytes: &[u8], env: &seeds::env::Env, epoch: i64, out: &Path) -> Result<()> {
    let files = seeds::nocloud::seed_files(&seeds::nocloud::SeedInputs {
        env_bytes,
        env,
        network_config: None,
        instance_id: None,
    })
    .map_err(bad_input)?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let iso = seeds::iso::write_iso(seeds::nocloud::VOLUME_ID, &refs, epoch)
        .context("making the seed ISO")?;
    seeds::atomic::write_atomic(out, &iso, 0o600)
        .with_context(|| format!("writing {}", out.display()))
}

#[derive(serde::Serialize)]
struct Manifest<'a> {
    imgbuild: &'static str,
    image: ImageInfo,
    seed: Option<SeedInfo>,
    env: &'static str,
    disk: &'a Assembled,
    tree: &'a TreeInfo,
    packages: &'a [rootfs::Package],
}

#[derive(serde::Serialize)]
struct ImageInfo {
    file: String,
    format: Format,
    compressed: bool,
    virtual_size: u64,
    file_size: u64,
    sha256: String,
}

#[derive(serde::Serialize)]
struct SeedInfo {
    file: String,
    sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_sit_beside_the_image() {
        let o = Outputs::plan(&BuildOptions {
            output: "/x/ecs.qcow2".into(),
            ..Default::default()
        });
        assert_eq!(o.seed.unwrap(), Path::new("/x/ecs.seed.iso"));
        assert_eq!(o.manifest, Path::new("/x/ecs.manifest.json"));
        assert_eq!(o.sums, Path::new("/x/ecs.SHA256SUMS"));
        let o = Outputs::plan(&BuildOptions {
            output: "ecs.raw".into(),
            bake_env: true,
            ..Default::default()
        });
        assert!(o.seed.is_none());
        assert_eq!(o.sums, Path::new("./ecs.SHA256SUMS"));
    }

    #[test]
    fn existing_outputs_need_force() {
        let d = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            output: d.path().join("a.qcow2"),
            ..Default::default()
        };
        let outs = Outputs::plan(&opts);
        check_outputs(&outs, false).unwrap();
        // Another image's sums in the same directory are not in the way.
        fs::write(d.path().join("b.SHA256SUMS"), "").unwrap();
        check_outputs(&outs, false).unwrap();
        fs::write(d.path().join("a.SHA256SUMS"), "").unwrap();
        let e = check_outputs(&outs, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        check_outputs(&outs, true).unwrap();
        let opts = BuildOptions {
            output: d.path().join("nope/a.qcow2"),
            ..Default::default()
        };
        let e = check_outputs(&Outputs::plan(&opts), false).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn outputs_are_regular_files_and_distinct() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a.qcow2");
        let opts = |output: PathBuf, seed: Option<PathBuf>| BuildOptions {
            output,
            seed,
            ..Default::default()
        };
        fs::create_dir(&out).unwrap();
        let e = check_outputs(&Outputs::plan(&opts(out.clone(), None)), true).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        fs::remove_dir(&out).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), &out).unwrap();
        let e = check_outputs(&Outputs::plan(&opts(out.clone(), None)), true).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        fs::remove_file(&out).unwrap();
        let env = d.path().join("env.yml");
        fs::write(&env, "x").unwrap();
        let same = Outputs::plan(&opts(out.clone(), Some(d.path().join(".").join("a.qcow2"))));
        let e = check_distinct(&same, &env).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("are the same file"), "{e}");
        let onto_env = Outputs::plan(&opts(out.clone(), Some(env.clone())));
        let e = check_distinct(&onto_env, &env).unwrap_err();
        assert!(e.to_string().contains("is the env"), "{e}");
        check_distinct(&Outputs::plan(&opts(out, None)), &env).unwrap();
    }
}
