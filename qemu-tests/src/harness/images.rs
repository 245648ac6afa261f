//! The test images: the programs they are built with (`imgbuild`,
//! `ecs-firstboot`, the reporter), the images themselves (built once per
//! run), and what is read back from them (apt state, kernel).

use super::*;

/// The programs the image is built with.
#[derive(Debug)]
pub struct Programs {
    pub imgbuild: PathBuf,
    pub firstboot: PathBuf,
    pub reporter: PathBuf,
}

/// Builds `imgbuild` and `ecs-firstboot` in the test's profile (a no-op when
/// up to date) and finds them. `reporter` is `CARGO_BIN_EXE_ecs-test-report`
/// of the calling integration test.
pub fn programs(reporter: &Path) -> Result<&'static Programs> {
    static P: OnceLock<Result<Programs, String>> = OnceLock::new();
    once(&P, || {
        let dir = profile_dir()?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(&cargo);
        c.current_dir(workspace()).args([
            "build",
            "--locked",
            "-p",
            "imgbuild",
            "-p",
            "ecs-firstboot",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        run(
            &mut c,
            "building imgbuild and ecs-firstboot for the boot tests",
        )?;
        let p = Programs {
            imgbuild: dir.join("imgbuild"),
            firstboot: dir.join("ecs-firstboot"),
            reporter: reporter.to_path_buf(),
        };
        for f in [&p.imgbuild, &p.firstboot, &p.reporter] {
            if !f.is_file() {
                bail!("{} is missing after the build", f.display());
            }
        }
        Ok(p)
    })
}

/// Host tools every boot test needs.
pub fn require_tools() -> Result<()> {
    for t in [crate::QEMU, "qemu-img", "mmdebstrap"] {
        require_tool(t)?;
    }
    Ok(())
}

/// How an image is built.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    /// Name of the output directory under the artifacts (and of the logs).
    pub name: String,
    /// The env given to `imgbuild --env`.
    pub env: String,
    /// `--bake-env`: the env goes into the image, no seed.
    pub bake_env: bool,
    /// A layers directory other than the workspace's `layers/`.
    pub layers_dir: Option<PathBuf>,
    /// Layers added with `--layer` (before the test reporter's).
    pub extra_layers: Vec<PathBuf>,
    /// `--distro`; `None`: the recipe's default (Ubuntu).
    pub distro: Option<&'static str>,
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    pub qcow2: PathBuf,
    pub dir: PathBuf,
    /// The layer cache it was built with.
    pub cache_dir: PathBuf,
    pub build_time: Duration,
    /// The `imgbuild` it was built with.
    pub imgbuild: PathBuf,
}

/// Builds an image with `imgbuild` (layers from the cache).
pub fn build_image(progs: &Programs, spec: &ImageSpec) -> Result<Image> {
    require_tools()?;
    let dir = artifacts()?.join(&spec.name);
    fs::create_dir_all(&dir)?;
    let env = dir.join("build-env.yml");
    fs::write(&env, &spec.env)?;
    let qcow2 = dir.join("ecs.qcow2");
    let mut c = Command::new(&progs.imgbuild);
    c.arg("--env")
        .arg(&env)
        .arg("-o")
        .arg(&qcow2)
        .args(["--force", "--cmdline", TCG_SAFE_CMDLINE]);
    if let Some(d) = spec.distro {
        c.args(["--distro", d]);
    }
    c.arg("--layers-dir")
        .arg(
            spec.layers_dir
                .clone()
                .unwrap_or_else(|| workspace().join("layers")),
        )
        .arg("--host-bin")
        .arg(format!("ecs-firstboot={}", progs.firstboot.display()))
        .arg("--host-bin")
        .arg(format!("ecs-test-report={}", progs.reporter.display()));
    for l in &spec.extra_layers {
        c.arg("--layer").arg(l);
    }
    // The reporter last: rebuilding it rebuilds only its own layer.
    c.arg("--layer")
        .arg(workspace().join("qemu-tests/layers/90-test-report"));
    if spec.bake_env {
        c.arg("--bake-env");
    }
    // Named explicitly: the tests read the layer archives of what was built.
    let cache_dir = std::env::var_os("IMGBUILD_CACHE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(seeds::cachedir::default);
    c.arg("--cache-dir").arg(&cache_dir);
    let log = dir.join("build.log");
    let start = Instant::now();
    let out = c
        .output()
        .with_context(|| format!("starting {}", progs.imgbuild.display()))?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    fs::write(&log, &text)?;
    if !out.status.success() {
        bail!(
            "the test image {} could not be built ({}); {} ends with:\n{}",
            spec.name,
            out.status,
            log.display(),
            tail(&String::from_utf8_lossy(&text), TAIL_LINES)
        );
    }
    Ok(Image {
        qcow2,
        dir,
        cache_dir,
        build_time: start.elapsed(),
        imgbuild: progs.imgbuild.clone(),
    })
}

/// The image's root tree as the layer cache holds it (its top layer,
/// named in the manifest), restored by `imgbuild cache extract` into a
/// temporary directory.
pub fn cached_tree(image: &Image) -> Result<tempfile::TempDir> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(image.dir.join("ecs.manifest.json")).context("reading the manifest")?,
    )?;
    let key = manifest["tree"]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["key"].as_str())
        .context("no layers in the manifest")?
        .to_string();
    let root = tempfile::tempdir_in(artifacts()?)?;
    run(
        Command::new(&image.imgbuild)
            .arg("cache")
            .arg("--cache-dir")
            .arg(&image.cache_dir)
            .arg("extract")
            .arg(&key)
            .arg(root.path()),
        "restoring the image's tree from the layer cache",
    )?;
    Ok(root)
}

/// The default image (Ubuntu) plus the test reporter, built once per test run.
pub fn default_image(progs: &Programs) -> Result<&'static Image> {
    static I: OnceLock<Result<Image, String>> = OnceLock::new();
    once(&I, || {
        build_image(
            progs,
            &ImageSpec {
                name: "default".into(),
                env: env_ignore_storage(),
                ..ImageSpec::default()
            },
        )
    })
}

/// The default layers on Debian bookworm plus the test reporter, built once
/// per test run.
pub fn debian_image(progs: &Programs) -> Result<&'static Image> {
    static I: OnceLock<Result<Image, String>> = OnceLock::new();
    once(&I, || {
        build_image(
            progs,
            &ImageSpec {
                name: "debian".into(),
                env: env_ignore_storage(),
                distro: Some("debian"),
                ..ImageSpec::default()
            },
        )
    })
}

/// Whether the tests may build from `distro`'s archive: `scripts/test.sh`
/// probes every archive first and lists those that answer in
/// `IMGBUILD_TEST_DISTROS` (said at the start of the run and in its
/// summary). Unset (a bare `cargo test`): every distribution is tried, and
/// an unreachable archive fails the build with the URL.
pub fn distro_available(distro: &str) -> bool {
    match std::env::var("IMGBUILD_TEST_DISTROS") {
        Ok(list) => {
            let yes = list.split_whitespace().any(|d| d == distro);
            if !yes {
                eprintln!("{distro}: not run, the archive does not answer");
            }
            yes
        }
        Err(_) => true,
    }
}

/// What apt would do to an image's tree with the build's own package lists:
/// the `N upgraded, N newly installed, ...` line of `apt-get -s
/// dist-upgrade`, and the tree's deb822 apt sources.
pub struct AptState {
    pub summary: String,
    pub upgrades: Vec<String>,
    pub sources: String,
}

/// Extracts the apt state of the image's top layer (named in its manifest)
/// and runs the host's `apt-get -s dist-upgrade` on it against the lists the
/// build left in the layer cache for `suite`.
pub fn apt_state(image: &Image, suite: &str, sources_file: &str) -> Result<AptState> {
    let root = cached_tree(image)?;
    // The build's lists: the cache directory whose lists hold SUITE-security.
    let lists_root = image.cache_dir.join("apt-lists");
    let want = format!("_dists_{suite}-security_InRelease");
    let lists = fs::read_dir(&lists_root)
        .with_context(|| format!("reading {}", lists_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|d| {
            fs::read_dir(d).is_ok_and(|mut it| {
                it.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().ends_with(&want)))
            })
        })
        .max_by_key(|d| fs::metadata(d).and_then(|m| m.modified()).ok())
        .with_context(|| {
            format!(
                "no package lists of {suite}-security in {}",
                lists_root.display()
            )
        })?;
    fs::create_dir_all(root.path().join("cache"))?;
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    let out = run(
        Command::new("apt-get")
            .arg("-s")
            .arg("-o")
            .arg(opt("Dir", root.path()))
            .arg("-o")
            .arg(opt("Dir::State::Lists", &lists))
            .arg("-o")
            .arg(opt(
                "Dir::State::status",
                &root.path().join("var/lib/dpkg/status"),
            ))
            .arg("-o")
            .arg(opt("Dir::Cache", &root.path().join("cache")))
            .args(["-o", "Debug::NoLocking=1", "dist-upgrade"]),
        "apt-get -s dist-upgrade on the image's tree",
    )?;
    let summary = out
        .lines()
        .find(|l| l.contains(" upgraded, ") && l.contains(" newly installed"))
        .with_context(|| format!("apt-get -s printed no summary:\n{out}"))?
        .to_string();
    let upgrades = out
        .lines()
        .filter(|l| l.starts_with("Inst "))
        .map(str::to_string)
        .collect();
    let sources = fs::read_to_string(
        root.path()
            .join("etc/apt/sources.list.d")
            .join(sources_file),
    )
    .with_context(|| format!("reading the tree's {sources_file}"))?;
    Ok(AptState {
        summary,
        upgrades,
        sources,
    })
}

/// The kernel, initrd and GRUB's kernel command line of an image, for a
/// direct kernel boot with extra arguments (the power-cut test's
/// `ecs.firstboot.pause=`). Read with `debugfs` from a raw copy of the image.
pub fn kernel_of(image: &Path, dir: &Path) -> Result<(PathBuf, PathBuf, String)> {
    require_tool("debugfs")?;
    fs::create_dir_all(dir)?;
    let raw = dir.join("image.raw");
    run(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(&raw),
        "qemu-img convert (to read the kernel)",
    )?;
    let offset = root_partition_offset(&raw)?;
    let fs_spec = format!("{}?offset={offset}", raw.display());
    let debugfs = |req: &str| -> Result<String> {
        run(
            Command::new("debugfs").arg("-R").arg(req).arg(&fs_spec),
            &format!("debugfs -R {req:?}"),
        )
    };
    let cfg = debugfs("cat /boot/grub/grub.cfg")?;
    let linux = cfg
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("linux "))
        .ok_or_else(|| anyhow!("no `linux` line in the image's grub.cfg:\n{cfg}"))?;
    let (vmlinuz, cmdline) = linux.split_once(' ').unwrap_or((linux, ""));
    let initrd = cfg
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("initrd "))
        .ok_or_else(|| anyhow!("no `initrd` line in the image's grub.cfg:\n{cfg}"))?;
    // GRUB may name the /vmlinuz and /initrd.img symlinks: follow them.
    let resolve = |path: &str| -> Result<String> {
        let mut p = path.trim().to_string();
        for _ in 0..8 {
            let st = debugfs(&format!("stat {p}"))?;
            if !st.contains("Type: symlink") {
                return Ok(p);
            }
            let dest = st
                .split_once("Fast link dest: \"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(d, _)| d.to_string())
                .ok_or_else(|| anyhow!("cannot read the symlink {p} in the image:\n{st}"))?;
            p = if dest.starts_with('/') {
                dest
            } else {
                let parent = Path::new(&p).parent().unwrap_or(Path::new("/"));
                parent.join(dest).display().to_string()
            };
        }
        bail!("too many symlinks from {path} in the image")
    };
    let k = dir.join("vmlinuz");
    let i = dir.join("initrd.img");
    debugfs(&format!("dump {} {}", resolve(vmlinuz)?, k.display()))?;
    debugfs(&format!("dump {} {}", resolve(initrd)?, i.display()))?;
    let _ = fs::remove_file(&raw);
    for f in [&k, &i] {
        if fs::metadata(f).map(|m| m.len()).unwrap_or(0) == 0 {
            bail!("debugfs wrote no {}", f.display());
        }
    }
    Ok((k, i, cmdline.trim().to_string()))
}

/// The byte offset of the root partition (named `root`, else the one that
/// starts last) in a raw GPT disk image.
pub(super) fn root_partition_offset(raw: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(raw)?;
    let mut hdr = [0u8; 512];
    f.seek(SeekFrom::Start(512))?;
    f.read_exact(&mut hdr)?;
    if &hdr[..8] != b"EFI PART" {
        bail!("{} has no GPT", raw.display());
    }
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let entries_lba = u64_at(&hdr, 72);
    let count = u32_at(&hdr, 80) as usize;
    let size = u32_at(&hdr, 84) as usize;
    let mut table = vec![0u8; count * size];
    f.seek(SeekFrom::Start(entries_lba * 512))?;
    f.read_exact(&mut table)?;
    let mut best: Option<(bool, u64)> = None;
    for e in table.chunks(size) {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let first = u64_at(e, 32);
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let is_root = String::from_utf16_lossy(&name) == "root";
        if best.is_none_or(|(r, b)| (is_root && !r) || (is_root == r && first > b)) {
            best = Some((is_root, first));
        }
    }
    best.map(|(_, lba)| lba * 512)
        .ok_or_else(|| anyhow!("{} has no partitions", raw.display()))
}
