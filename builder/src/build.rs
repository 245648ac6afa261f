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
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::disk::{self, Guid, Layout, MIB};
use crate::exit::bad_input;
use crate::imagecache::{self, ImageInputs, ImageSpec, Images, Lookup, ManifestParts, Programs};
use crate::output::{self, human, Format};
use crate::progress::Progress;
use crate::{esp, ext4, grub, rootfs};

/// Label of the root filesystem.
pub const ROOT_LABEL: &str = "root";
/// Label of the ESP.
pub const ESP_LABEL: &str = "ESP";
/// The mode of an image file with a baked env (it holds the env's secrets).
pub const BAKED_IMAGE_MODE: u32 = 0o600;

/// Where `--bake-env` puts the env in the image.
pub const BAKED_ENV: &str = "app/env.yml";

/// Everything the main command was asked to do.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub env: PathBuf,
    pub output: PathBuf,
    /// `--format`; by default the output's suffix decides.
    pub format: Option<String>,
    /// `--size`: the disk's virtual size (e.g. `4G`); by default the tree
    /// plus headroom.
    pub size: Option<String>,
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

/// Paths of all outputs of one build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub image: PathBuf,
    pub seed: Option<PathBuf>,
    pub sums: PathBuf,
    pub manifest: PathBuf,
}

impl Outputs {
    /// `ecs.qcow2` → `ecs.seed.iso`, `ecs.SHA256SUMS`, `ecs.manifest.json` beside
    /// it (named after the image, so two images can share a directory).
    pub fn plan(opts: &BuildOptions) -> Outputs {
        let dir = out_dir(&opts.output);
        let stem = opts
            .output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        Outputs {
            image: opts.output.clone(),
            seed: (!opts.bake_env).then(|| {
                opts.seed
                    .clone()
                    .unwrap_or_else(|| dir.join(format!("{stem}.seed.iso")))
            }),
            sums: dir.join(format!("{stem}.SHA256SUMS")),
            manifest: dir.join(format!("{stem}.manifest.json")),
        }
    }

    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.image.as_path(), &self.sums, &self.manifest];
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

/// Settings of the disk assembly (everything after the tree).
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// The disk's virtual size; `None`: the tree plus headroom.
    pub size: Option<u64>,
    /// Kernel arguments added after the defaults.
    pub cmdline: String,
    /// The env to bake in at /app/env.yml.
    pub baked_env: Option<Vec<u8>>,
    /// Fixed time for every timestamp; `None`: `SOURCE_DATE_EPOCH` from the
    /// environment, else the newest modification time in the tree.
    pub source_date_epoch: Option<i64>,
}

/// What [`assemble`] made.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Assembled {
    #[serde(skip)]
    pub raw: PathBuf,
    pub layout: Layout,
    pub root_uuid: Guid,
    pub esp_volume_id: String,
    pub kernel_cmdline: String,
    pub source_date_epoch: i64,
    pub tree: ext4::TreeUsage,
    /// The smallest disk the tree fits on.
    pub min_disk_size: u64,
}

/// Fixed space on the disk besides the root filesystem.
pub const fn fixed_overhead() -> u64 {
    disk::FIRST_PARTITION + disk::BIOS_BOOT_SIZE + disk::ESP_SIZE + disk::TAIL_SIZE
}

/// The main command.
pub fn run(opts: &BuildOptions) -> Result<()> {
    let t0 = Instant::now();
    // Cheap checks first: outputs, format, size, cmdline, env.
    let format = Format::choose(&opts.output, opts.format.as_deref())?;
    if opts.compress && format != Format::Qcow2 {
        return Err(bad_input(format!(
            "--compress needs a qcow2 output, not {format}"
        )));
    }
    let outs = Outputs::plan(opts);
    check_outputs(&outs, opts.force)?;
    check_distinct(&outs, &opts.env)?;
    let size = opts.size.as_deref().map(parse_size).transpose()?;
    grub::check_cmdline(&opts.cmdline)?;
    let (env_bytes, env) = crate::envcmd::load_env(&opts.env)?;
    // SAFETY: geteuid has no preconditions.
    if opts.tree.is_some() && unsafe { libc::geteuid() } != 0 {
        bail!(
            "making a disk from a root tree needs root: some of the tree's files are readable \
             by root alone, and the image's own files (fstab, grub.cfg) are given to root. \
             Run imgbuild as root (e.g. with sudo)"
        );
    }

    let tmp = tempfile::Builder::new()
        .prefix(".imgbuild-")
        .tempdir_in(out_dir(&opts.output))
        .with_context(|| {
            format!(
                "creating a work directory in {}",
                out_dir(&opts.output).display()
            )
        })?;
    // The final name already: a VMDK's descriptor names its own file.
    let image_tmp = tmp.path().join(
        outs.image
            .file_name()
            .context("the output has no file name")?,
    );
    let progress = Progress::new(opts.verbosity);

    // The layers' keys (nothing extracted yet), and the image cache.
    let stack = match (&opts.tree, &opts.layers) {
        (Some(_), _) => None,
        (None, Some(layers)) => Some(rootfs::resolve(layers, &progress)?),
        (None, None) => bail!("neither a tree nor layers to build one from"),
    };
    let disk_opts = DiskOptions {
        size,
        cmdline: opts.cmdline.clone(),
        baked_env: opts.bake_env.then(|| env_bytes.clone()),
        source_date_epoch: stack.as_ref().map(|s| s.source_date_epoch()),
    };
    let cached = match &stack {
        Some(s) => look_up_image(s, opts, format, &disk_opts)?,
        None => None,
    };

    // The image: a copy of the cached one, else made from the tree.
    let restored = match (&stack, &cached) {
        (Some(s), Some(c)) => restore_image(s, c, &image_tmp),
        _ => None,
    };
    let made = match restored {
        Some(made) => {
            // Unlocks the cache.
            drop(stack);
            made
        }
        None => make_image(opts, stack, tmp.path(), &image_tmp, format, &disk_opts)?,
    };
    crate::mount::check_interrupted()?;
    // An image that carries the env carries its secrets: readable by its
    // owner only, as the seed is (and so is its image cache entry).
    if opts.bake_env {
        fs::set_permissions(&image_tmp, fs::Permissions::from_mode(BAKED_IMAGE_MODE))
            .context("making the image with the baked env private")?;
    }

    // The seed.
    let seed_tmp = tmp.path().join("seed.iso");
    if outs.seed.is_some() {
        write_seed(
            &env_bytes,
            &env,
            made.parts.disk.source_date_epoch,
            &seed_tmp,
        )?;
    }

    // Sums and manifest.
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let image_sha = match &made.sha256 {
        Some(sha) => sha.clone(),
        None => output::sha256_file(&image_tmp)?,
    };
    let seed_sha = match &outs.seed {
        Some(_) => Some(output::sha256_file(&seed_tmp)?),
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
            format,
            compressed: opts.compress,
            virtual_size: made.parts.disk.layout.size,
            file_size: fs::metadata(&image_tmp)?.len(),
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
    seeds::atomic::write_atomic(&tmp.path().join("manifest.json"), &manifest_json, 0o644)
        .context("writing the manifest")?;
    seeds::atomic::write_atomic(
        &tmp.path().join("SHA256SUMS"),
        output::sha256sums(&sums).as_bytes(),
        0o644,
    )
    .context("writing SHA256SUMS")?;

    // A new image goes into the image cache before it is the user's to change.
    if let Some(c) = cached.as_ref().filter(|_| !made.from_cache) {
        imagecache::store_after_build(&c.images, &c.inputs, &image_tmp, &image_sha, &made.parts);
    }
    crate::mount::check_interrupted()?;

    // Into place: the image last, so an image never exists without its sums.
    if let Some(seed) = &outs.seed {
        rename_into(&seed_tmp, seed)?;
    }
    rename_into(&tmp.path().join("manifest.json"), &outs.manifest)?;
    rename_into(&tmp.path().join("SHA256SUMS"), &outs.sums)?;
    rename_into(&image_tmp, &outs.image)?;
    File::open(out_dir(&outs.image))
        .and_then(|d| d.sync_all())
        .context("syncing the output directory")?;
    tracing::info!(
        "wrote {} ({}, virtual {}) in {:.1}s",
        outs.image.display(),
        human(manifest.image.file_size),
        human(made.parts.disk.layout.size),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
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
    let t = Instant::now();
    let layers = stack.report();
    tracing::info!("image: hit {}", &entry.meta.key[..12]);
    let restored = cached.images.restore(entry, image_tmp).and_then(|sha| {
        File::open(image_tmp)
            .and_then(|f| f.sync_all())
            .context("syncing the image")?;
        Ok(sha)
    });
    match restored {
        Ok(sha256) => {
            tracing::info!(
                "image: copied from the cache in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            Some(Made {
                parts: entry.parts.clone(),
                tree: TreeInfo {
                    layers,
                    source: None,
                    pockets: stack.pockets().to_vec(),
                    release_pocket_only: stack.base().release_only,
                },
                sha256: Some(sha256),
                from_cache: true,
            })
        }
        Err(e) => {
            tracing::warn!("image: the cached image is not usable, assembling it: {e:#}");
            let _ = fs::remove_file(image_tmp);
            None
        }
    }
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
    let t = Instant::now();
    let (tree, info, built) = match (&opts.tree, stack) {
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
    };
    tracing::info!("root tree ready in {:.1}s", t.elapsed().as_secs_f64());
    let packages = match &built {
        Some(b) => b.packages.clone(),
        None => rootfs::installed_packages(&tree)?,
    };

    let a = assemble(&tree, work, disk_opts)?;

    // The image.
    let t = Instant::now();
    match format {
        Format::Raw => fs::rename(&a.raw, image_tmp)?,
        Format::Qcow2 => output::convert(&a.raw, image_tmp, format, opts.compress)?,
        Format::Vmdk => {
            output::convert(&a.raw, image_tmp, format, false)?;
            let g = a.layout.disk_guid.0;
            output::set_vmdk_cid(image_tmp, u32::from_be_bytes([g[0], g[1], g[2], g[3]]))?;
        }
    }
    File::open(image_tmp)
        .and_then(|f| f.sync_all())
        .context("syncing the image")?;
    tracing::info!("image: {format} in {:.1}s", t.elapsed().as_secs_f64());
    match built {
        // Dropping the built tree removes its work directory.
        Some(mut b) => b.finish_store()?,
        None => {
            fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?
        }
    }
    Ok(Made {
        parts: ManifestParts { disk: a, packages },
        tree: info,
        sha256: None,
        from_cache: false,
    })
}

fn rename_into(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .or_else(|e| {
            // A seed in another directory (another filesystem) is copied.
            if e.raw_os_error() == Some(libc::EXDEV) {
                seeds::atomic::write_atomic_with(to, 0o600, |f| {
                    std::io::copy(&mut File::open(from)?, f).map(|_| ())
                })
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("moving the finished {} into place", to.display()))
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
            if let Some(what) = crate::envcmd::not_regular(&m.file_type()) {
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
            if crate::envcmd::same_file(a, b) {
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
        crate::envcmd::check_not_an_input(p, &[("the env", env)])?;
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

/// Makes a work copy of a given tree in `to`: a hard-link farm (new
/// directories, the files linked, so nothing is copied) when both are on one
/// filesystem, else a full copy. The build never writes into a linked file:
/// it replaces files (unlink, create), and only sets the access times of the
/// tree's entries to their modification times (see
/// [`ext4::normalize_atimes`]), so DIR's contents, modes and owners stay as
/// they are.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.join("usr").is_dir() {
        return Err(bad_input(format!(
            "{} does not look like a root tree (no usr/)",
            from.display()
        )));
    }
    let mut link = seeds::cmd::command("cp", ["-a", "-l"]);
    link.arg(from).arg(to);
    if let Err(e) = seeds::cmd::run(&mut link) {
        tracing::debug!("hard-linking the tree failed ({e}); copying it");
        if to.exists() {
            fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
        }
        let mut cmd = seeds::cmd::command("cp", ["-a", "--reflink=auto"]);
        cmd.arg(from).arg(to);
        seeds::cmd::run(&mut cmd).context("copying the root tree")?;
    }
    Ok(())
}

/// Makes the raw disk `work/disk.raw` from `tree`, which it modifies (fstab,
/// grub.cfg, the baked env). `work` is a scratch directory on the same
/// filesystem as the output.
pub fn assemble(tree: &Path, work: &Path, opts: &DiskOptions) -> Result<Assembled> {
    // Bad trees fail before anything slow.
    let kernel = grub::find_kernel(tree)?;
    let grub_files = grub::GrubFiles::find(tree)?;

    let t = Instant::now();
    let usage = ext4::measure(tree)?;
    let (min_root, default_root) = ext4::sizes(&usage);
    let min_disk = min_root + fixed_overhead();
    let root_size = match opts.size {
        None => default_root,
        Some(s) if s < min_disk => {
            return Err(bad_input(format!(
                "--size {} is too small: this tree needs a disk of at least {} \
                 (--size {}M or more, or leave --size out)",
                human(s),
                human(min_disk),
                min_disk / MIB
            )))
        }
        Some(s) => disk::round_up(s, MIB) - fixed_overhead(),
    };
    let sde = match opts.source_date_epoch {
        Some(s) => s,
        None => match std::env::var("SOURCE_DATE_EPOCH").map(|v| v.trim().to_string()) {
            Ok(v) if !v.is_empty() => v
                .trim()
                .parse()
                .map_err(|_| bad_input(format!("SOURCE_DATE_EPOCH={v:?} is not a number")))?,
            _ => usage.newest_mtime,
        },
    };
    let identity = identity(tree, opts, root_size, sde)?;
    let layout = Layout::plan(&identity, disk::ESP_SIZE, root_size);
    let root_uuid = Guid::derive(&identity, "fs-root");
    let esp_id = Guid::derive(&identity, "fs-esp").0;
    let esp_volume_id = u32::from_be_bytes([esp_id[0], esp_id[1], esp_id[2], esp_id[3]]);
    let esp_uuid = format!("{:04X}-{:04X}", esp_volume_id >> 16, esp_volume_id & 0xffff);
    let cmdline = grub::kernel_cmdline(root_uuid, &opts.cmdline);
    tracing::info!(
        "tree: {} in {} inodes; root fs {}, disk {} (measured in {:.1}s)",
        human(usage.data_bytes),
        usage.inodes,
        human(root_size),
        human(layout.size),
        t.elapsed().as_secs_f64()
    );

    // What the image adds to the tree.
    let old_fstab = fs::read_to_string(tree.join("etc/fstab")).unwrap_or_default();
    write_in_tree(
        tree,
        "etc/fstab",
        fstab(&old_fstab, root_uuid, &esp_uuid).as_bytes(),
        0o644,
        sde,
    )?;
    fs::create_dir_all(tree.join("boot/efi"))?;
    write_in_tree(
        tree,
        grub::GRUB_CFG,
        grub::grub_cfg(root_uuid, &kernel, &cmdline).as_bytes(),
        0o644,
        sde,
    )?;
    if let Some(env) = &opts.baked_env {
        let app = tree.join("app");
        if !app.exists() {
            fs::DirBuilder::new().mode(0o755).create(&app)?;
        }
        write_in_tree(tree, BAKED_ENV, env, 0o600, sde)?;
    }
    ext4::normalize_atimes(tree)?;

    // GRUB images.
    let t = Instant::now();
    let early = work.join("early.cfg");
    fs::write(&early, grub::early_cfg(root_uuid))?;
    let efi = work.join("BOOTX64.EFI");
    grub_files.mkimage("x86_64-efi", &early, &efi, grub::EFI_MODULES)?;
    let core = work.join("core.img");
    grub_files.mkimage("i386-pc", &early, &core, grub::BIOS_MODULES)?;
    let core_lba = layout.bios_boot.start_lba();
    let core_img = grub::patch_core(
        &fs::read(&core)?,
        core_lba,
        layout.bios_boot.size / disk::SECTOR,
    )?;
    let boot_code = grub::bios_boot_code(&grub_files.boot_img()?, core_lba)?;
    tracing::info!("GRUB images in {:.1}s", t.elapsed().as_secs_f64());

    // The ESP.
    let t = Instant::now();
    let esp_img = work.join("esp.img");
    esp::make(
        &esp::EspSpec {
            size: layout.esp.size,
            volume_id: esp_volume_id,
            label: ESP_LABEL,
            files: vec![("EFI/BOOT/BOOTX64.EFI", &efi)],
            source_date_epoch: sde,
        },
        &esp_img,
    )?;
    tracing::info!("ESP in {:.1}s", t.elapsed().as_secs_f64());

    // The disk: table, boot code, core.img, ESP, then the root filesystem
    // made in place.
    let t = Instant::now();
    let raw = work.join("disk.raw");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&raw)
        .with_context(|| format!("creating {}", raw.display()))?;
    f.set_len(layout.size)?;
    disk::write_table(&mut f, &layout)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&boot_code)?;
    f.seek(SeekFrom::Start(layout.bios_boot.offset))?;
    f.write_all(&core_img)?;
    copy_sparse(&esp_img, &f, layout.esp.offset)?;
    drop(f);
    fs::remove_file(&esp_img).ok();
    ext4::make(
        &ext4::Ext4Spec {
            tree,
            size: layout.root.size,
            uuid: root_uuid,
            label: ROOT_LABEL,
            inodes: usage.inodes + 16,
            source_date_epoch: sde,
        },
        &raw,
        layout.root.offset,
        work,
    )?;
    tracing::info!(
        "root filesystem and disk in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    Ok(Assembled {
        raw,
        layout,
        root_uuid,
        esp_volume_id: esp_uuid,
        kernel_cmdline: cmdline,
        source_date_epoch: sde,
        tree: usage,
        min_disk_size: min_disk,
    })
}

/// /etc/fstab: the root and the ESP by UUID, after whatever the layers put
/// there for other mount points (their own lines for / and /boot/efi, and
/// comments, are dropped).
pub fn fstab(existing: &str, root_uuid: Guid, esp_uuid: &str) -> String {
    let mut out = format!(
        "# Written by imgbuild: the root and the ESP, by UUID.\n\
         UUID={root_uuid}\t/\text4\tdefaults,errors=remount-ro\t0\t1\n\
         UUID={esp_uuid}\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0\n"
    );
    for line in existing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        if matches!(fields.get(1), Some(&"/") | Some(&"/boot/efi")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The build's identity, from which every GUID and UUID derives: the tree's
/// metadata as the filesystem will hold it (paths, types, modes, owners,
/// file sizes, link targets, mtimes clamped to `sde` as mkfs.ext4 clamps
/// them; not directory sizes, which depend on the directory's history) and
/// the disk settings.
fn identity(tree: &Path, opts: &DiskOptions, root_size: u64, sde: i64) -> Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(b"imgbuild-disk-1\0");
    ext4::walk(tree, &mut |p, m| {
        let rel = p.strip_prefix(tree).unwrap_or(p);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        for n in [
            m.mode() as u64,
            m.uid() as u64,
            m.gid() as u64,
            if m.is_dir() { 0 } else { m.len() },
            m.mtime().min(sde) as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        if m.file_type().is_symlink() {
            h.update(fs::read_link(p)?.as_os_str().as_encoded_bytes());
        }
        h.update([0]);
        Ok(())
    })?;
    h.update(opts.cmdline.trim().as_bytes());
    h.update([0]);
    h.update(root_size.to_le_bytes());
    if let Some(env) = &opts.baked_env {
        h.update(Sha256::digest(env));
    }
    Ok(h.finalize().to_vec())
}

/// Writes `rel` in the tree (replacing a file or symlink there) with `mode`,
/// owned by root, with mtime `sde`.
fn write_in_tree(tree: &Path, rel: &str, data: &[u8], mode: u32, sde: i64) -> Result<()> {
    let p = tree.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).with_context(|| {
            format!(
                "creating /{}",
                Path::new(rel).parent().unwrap_or(Path::new("")).display()
            )
        })?;
    }
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => bail!("/{rel} is a directory in the tree"),
        Ok(_) => fs::remove_file(&p)?,
        Err(_) => {}
    }
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&p)
        .with_context(|| format!("writing /{rel} in the tree"))?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sde.max(0) as u64);
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    std::os::unix::fs::fchown(&f, Some(0), Some(0))
        .with_context(|| format!("giving /{rel} to root"))?;
    Ok(())
}

/// Copies the data extents of `src` into `dst` at `offset`, skipping holes,
/// so the image stays sparse.
pub fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = s.metadata()?.len() as i64;
    let (sfd, dfd) = (s.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    while pos < len {
        // SAFETY: plain syscalls on open file descriptors.
        let data = unsafe { libc::lseek(sfd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e).context("finding data in the filesystem image");
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(sfd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error()).context("finding holes");
        }
        let mut from: libc::loff_t = data;
        let mut to: libc::loff_t = data + offset as i64;
        while from < hole {
            // SAFETY: valid fds and in-bounds offsets owned by this function.
            let n = unsafe {
                libc::copy_file_range(sfd, &mut from, dfd, &mut to, (hole - from) as usize, 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // Another filesystem (or one without copy_file_range): copy
                // through a buffer.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                ) {
                    copy_range(&s, dst, from as u64, to as u64, (hole - from) as u64)
                        .with_context(|| format!("copying {}", src.display()))?;
                    break;
                }
                return Err(e).with_context(|| format!("copying {}", src.display()));
            }
            if n == 0 {
                bail!("{} ended early", src.display());
            }
        }
        pos = hole;
    }
    Ok(())
}

/// Copies `len` bytes at `from` in `src` to `to` in `dst` through a buffer.
fn copy_range(src: &File, dst: &File, mut from: u64, mut to: u64, len: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let end = from + len;
    let mut buf = vec![0u8; 1 << 20];
    while from < end {
        let want = buf.len().min((end - from) as usize);
        let n = src.read_at(&mut buf[..want], from)?;
        if n == 0 {
            bail!("the file ended early");
        }
        dst.write_all_at(&buf[..n], to)?;
        from += n as u64;
        to += n as u64;
    }
    Ok(())
}

/// Copies `src` to the new file `dst` (mode 0644): a reflink (FICLONE),
/// sharing the blocks, where the filesystem can; else a copy of the data
/// that keeps holes, so a raw image stays sparse.
pub fn clone_or_copy(src: &Path, dst: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    // Private until done, then the source's permissions (an image with a
    // baked env stays 0600 in the cache and when restored from it).
    let d = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    let meta = s.metadata()?;
    // SAFETY: FICLONE takes the source's fd; both are open.
    if unsafe { libc::ioctl(d.as_raw_fd(), libc::FICLONE, s.as_raw_fd()) } != 0 {
        d.set_len(meta.len())?;
        copy_sparse(src, &d, 0)?;
    }
    d.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o777,
    ))
    .with_context(|| format!("setting the mode of {}", dst.display()))
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

    #[test]
    fn fstab_keeps_other_mounts() {
        let u = Guid::parse("01234567-89ab-cdef-0123-456789abcdef");
        let f = fstab(
            "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/dev/sda1 / ext4 rw 0 1\n\
             tmpfs /tmp tmpfs defaults 0 0\n",
            u,
            "1A2B-3C4D",
        );
        assert_eq!(
            f,
            "# Written by imgbuild: the root and the ESP, by UUID.\n\
             UUID=01234567-89ab-cdef-0123-456789abcdef\t/\text4\tdefaults,errors=remount-ro\t0\t1\n\
             UUID=1A2B-3C4D\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0\n\
             tmpfs /tmp tmpfs defaults 0 0\n"
        );
    }

    #[test]
    fn sparse_copy_keeps_data_at_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_at_all(b"hello", 5 << 20);
        drop(f);
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("d"))
            .unwrap();
        dst.set_len(16 << 20).unwrap();
        copy_sparse(&src, &dst, 1 << 20).unwrap();
        let bytes = fs::read(d.path().join("d")).unwrap();
        assert_eq!(&bytes[(6 << 20)..(6 << 20) + 5], b"hello");
    }

    #[test]
    fn clone_or_copy_keeps_data_and_holes_across_filesystems() {
        // /dev/shm is a tmpfs: from there, copy_file_range may refuse
        // (EXDEV) and the copy goes through a buffer.
        for src_dir in [
            tempfile::tempdir_in("/dev/shm").unwrap(),
            tempfile::tempdir().unwrap(),
        ] {
            let dst_dir = tempfile::tempdir().unwrap();
            let src = src_dir.path().join("disk.raw");
            let f = File::create(&src).unwrap();
            f.set_len(64 << 20).unwrap();
            f.write_at_all(b"head", 0);
            f.write_at_all(b"middle", 20 << 20);
            drop(f);
            let dst = dst_dir.path().join("copy.raw");
            clone_or_copy(&src, &dst).unwrap();
            assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dst), mode(&src), "the source's mode");
            // A private source (an image with a baked env) gives a private copy.
            fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
            let private = dst_dir.path().join("private.raw");
            clone_or_copy(&src, &private).unwrap();
            assert_eq!(mode(&private), 0o600);
            assert!(
                output::allocated_bytes(&dst).unwrap() < 4 << 20,
                "holes kept: {} bytes allocated",
                output::allocated_bytes(&dst).unwrap()
            );
            let e = clone_or_copy(&src, &dst).unwrap_err();
            assert!(
                format!("{e:#}").contains("creating"),
                "never overwrites: {e:#}"
            );
        }
    }

    #[test]
    fn assembled_round_trips_through_json() {
        let layout = Layout::plan(b"identity", disk::ESP_SIZE, 512 << 20);
        let a = Assembled {
            raw: PathBuf::from("/x/disk.raw"),
            root_uuid: Guid::derive(b"identity", "fs-root"),
            layout,
            esp_volume_id: "ABCD-0123".into(),
            kernel_cmdline: "root=UUID=x ro quiet".into(),
            source_date_epoch: 1_700_000_000,
            tree: ext4::TreeUsage {
                data_bytes: 1,
                inodes: 2,
                file_bytes: 3,
                newest_mtime: 4,
            },
            min_disk_size: 5,
        };
        let json = serde_json::to_string_pretty(&a).unwrap();
        let back: Assembled = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
        assert!(serde_json::from_str::<Guid>("\"not-a-guid\"").is_err());
        assert!(serde_json::from_str::<Guid>("\"0123456789ab-cdef-0123-456789abcdef0\"").is_err());
    }

    trait WriteAt {
        fn write_at_all(&self, b: &[u8], off: u64);
    }
    impl WriteAt for File {
        fn write_at_all(&self, b: &[u8], off: u64) {
            std::os::unix::fs::FileExt::write_all_at(self, b, off).unwrap();
        }
    }
}
