//! The boot-test harness: builds the test image once per test run, makes
//! seeds and disks, boots one VM at a time and hands back what the guest
//! reported (see [`crate::report`]).
//!
//! - Programs: `imgbuild` and `ecs-firstboot` are built (or found up to date)
//!   with `cargo build -p imgbuild -p ecs-firstboot` in the same profile as
//!   the test, once per run; they land in `target/<profile>/`, found from the
//!   test executable's path (`target/<profile>/deps/...`). The reporter is
//!   this package's binary `ecs-test-report`, passed as
//!   `--host-bin ecs-test-report=PATH`.
//! - The image: the default layers plus the test layer
//!   `qemu-tests/layers/90-test-report`, the default distribution (Ubuntu
//!   noble; Debian bookworm beside it), the layer cache in
//!   `$IMGBUILD_CACHE_DIR` (imgbuild's default when unset), kernel command
//!   line with [`crate::TCG_SAFE_CMDLINE`].
//! - Artifacts: `target/qemu-artifacts/` (images, seeds, every boot's
//!   console log, build logs). Each boot's disks are qcow2 overlays over the
//!   built image, so the image itself is never written.
//! - One boot at a time: every test holds [`serial`] for its whole run.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::report::{self, Report};
use crate::{require_tool, tail, Firmware, Vm, TAIL_LINES, TCG_SAFE_CMDLINE};

/// The kernel's time-out for a whole boot to its report (TCG is slow;
/// `QEMU_BOOT_TIMEOUT` in seconds overrides it).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The workspace's root (`qemu-tests/..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests is in the workspace")
        .to_path_buf()
}

/// `target/<profile>` of the running test executable.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("{} is not under target/<profile>/deps", exe.display()))
}

/// `target/qemu-artifacts`, created on first use.
pub fn artifacts() -> Result<PathBuf> {
    let p = profile_dir()?
        .parent()
        .ok_or_else(|| anyhow!("target/<profile> has no parent"))?
        .join("qemu-artifacts");
    fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Serializes the boot tests: the machine has two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static BOOTS: Mutex<()> = Mutex::new(());
    BOOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A memoized fallible fixture: the first call's error is every call's error.
fn once<T>(
    cell: &'static OnceLock<Result<T, String>>,
    f: impl FnOnce() -> Result<T>,
) -> Result<&'static T> {
    cell.get_or_init(|| f().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Runs `cmd`, failing with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {cmd:?}\n{}\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), TAIL_LINES),
            tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

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
    })
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
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(image.dir.join("ecs.manifest.json")).context("reading the manifest")?,
    )?;
    let key = manifest["tree"]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["key"].as_str())
        .context("no layers in the manifest")?
        .to_string();
    let archive = image
        .cache_dir
        .join("layers")
        .join(format!("{key}.tar.zst"));
    let root = tempfile::tempdir()?;
    run(
        Command::new("tar")
            .args(["-I", "zstd", "-xf"])
            .arg(&archive)
            .arg("-C")
            .arg(root.path())
            .args(["./etc/apt", "./var/lib/dpkg/status"]),
        "extracting the tree's apt state",
    )?;
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

/// A throw-away SSH key pair made with `ssh-keygen` for this test run
/// (under the artifacts, private half 0600).
#[derive(Clone, Debug)]
pub struct SshKey {
    pub private: PathBuf,
    /// The `authorized_keys` line.
    pub public: String,
}

/// The run's key pair named `name` (made on first use).
pub fn ssh_key(name: &str) -> Result<SshKey> {
    static KEYS: Mutex<Vec<(String, SshKey)>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, k)) = keys.iter().find(|(n, _)| n == name) {
        return Ok(k.clone());
    }
    require_tool("ssh-keygen")?;
    let dir = artifacts()?.join("ssh");
    fs::create_dir_all(&dir)?;
    let private = dir.join(name);
    let _ = fs::remove_file(&private);
    let _ = fs::remove_file(private.with_extension("pub"));
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@qemu-tests"))
            .arg("-f")
            .arg(&private),
        "ssh-keygen",
    )?;
    let public = fs::read_to_string(dir.join(format!("{name}.pub")))?
        .trim()
        .to_string();
    let k = SshKey { private, public };
    keys.push((name.to_string(), k.clone()));
    Ok(k)
}

/// The test envs' SSH key: logs in as root and app.
pub fn test_ssh_key() -> SshKey {
    ssh_key("boot-test").expect("making the test SSH key")
}

/// A key the test envs list in both `ssh_authorized_keys` and
/// `ssh_deprecated_keys`: deprecated wins, it must not log in.
pub fn deprecated_ssh_key() -> SshKey {
    ssh_key("deprecated").expect("making the deprecated SSH key")
}
/// The test envs' domain (and so the guest's host name).
pub const TEST_DOMAIN: &str = "ecs-boot-test.example.org";
/// The test envs' database name (`ecs.database`).
pub const TEST_DATABASE: &str = "ecsboottest";

/// A test env: storage as given (YAML flow map), placeholder secrets.
pub fn test_env(storage: &str) -> String {
    let (key, old) = (test_ssh_key().public, deprecated_ssh_key().public);
    format!(
        "#cloud-config\n\
         # Boot-test env: every secret is a placeholder.\n\
         ssh_authorized_keys:\n  - {key}\n  - {old}\n\
         ssh_deprecated_keys:\n  - {old}\n\
         disable_root: false\n\
         appliance:\n  domain: {TEST_DOMAIN}\n  ssl:\n    letsencrypt: {{enabled: false}}\n  \
         storage: {storage}\n\
         ecs:\n  database: {TEST_DATABASE}\n  settings: |\n    DOMAIN = '{TEST_DOMAIN}'\n  \
         vault_encrypt: placeholder-vault-encrypt\n  vault_sign: placeholder-vault-sign\n"
    )
}

/// A test CA and a certificate it signed for [`TEST_DOMAIN`] (EC P-256,
/// made with openssl for this test run).
#[derive(Debug)]
pub struct TestTls {
    /// The CA certificate (for curl `--cacert`).
    pub ca: PathBuf,
    /// The server certificate and key, PEM.
    pub cert: String,
    pub key: String,
}

/// The run's test CA and server certificate (made on first use).
pub fn test_tls() -> &'static TestTls {
    static T: OnceLock<Result<TestTls, String>> = OnceLock::new();
    once(&T, || {
        require_tool("openssl")?;
        let dir = artifacts()?.join("tls");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args([
                    "-days",
                    "30",
                    "-subj",
                    "/CN=imgbuild boot-test CA",
                    "-keyout",
                ])
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.crt")),
            "openssl: the test CA",
        )?;
        run(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", &format!("/CN={TEST_DOMAIN}"), "-keyout"])
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl: the server key",
        )?;
        fs::write(p("san.ext"), format!("subjectAltName=DNS:{TEST_DOMAIN}\n"))?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "30", "-in"])
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .args(["-CAcreateserial", "-extfile"])
                .arg(p("san.ext"))
                .arg("-out")
                .arg(p("server.crt")),
            "openssl: the server certificate",
        )?;
        Ok(TestTls {
            ca: p("ca.crt"),
            cert: fs::read_to_string(p("server.crt"))?,
            key: fs::read_to_string(p("server.key"))?,
        })
    })
    .expect("making the test TLS certificate")
}

/// Scenario 1's env: no separate volumes.
pub fn env_ignore_storage() -> String {
    test_env("{ignore: {data: true, volatile: true}}")
}

/// Scenario 3's env: volatile in the boot disk's free space, data on vdb.
/// It also carries the test CA's certificate for the domain
/// (`appliance.ssl.cert`/`key`).
pub fn env_volumes() -> String {
    let tls = test_tls();
    let block = |pem: &str| {
        pem.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    test_env("{volatile: {size: 2G}, data: {device: /dev/vdb}}").replace(
        "    letsencrypt: {enabled: false}\n",
        &format!(
            "    letsencrypt: {{enabled: false}}\n    cert: |\n{}    key: |\n{}",
            block(&tls.cert),
            block(&tls.key)
        ),
    )
}

/// Writes `env` to the artifacts and makes its seed with `imgbuild seed`.
pub fn seed(progs: &Programs, name: &str, env: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = artifacts()?.join("seeds");
    fs::create_dir_all(&dir)?;
    let env_path = dir.join(format!("{name}.env.yml"));
    fs::write(&env_path, env)?;
    let iso = dir.join(format!("{name}.seed.iso"));
    run(
        Command::new(&progs.imgbuild)
            .arg("seed")
            .arg("--env")
            .arg(&env_path)
            .arg("-o")
            .arg(&iso)
            .arg("--force"),
        "imgbuild seed",
    )?;
    Ok((env_path, iso))
}

/// A seed that `imgbuild seed` would refuse (an invalid env), written with
/// the seeds library directly.
pub fn raw_seed(name: &str, user_data: &[u8]) -> Result<PathBuf> {
    let dir = artifacts()?.join("seeds");
    fs::create_dir_all(&dir)?;
    let meta = seeds::nocloud::meta_data("iid-boot-test-invalid", "invalid-env");
    let files: Vec<(&str, &[u8])> = vec![("meta-data", meta.as_bytes()), ("user-data", user_data)];
    let iso = seeds::iso::write_iso("cidata", &files, 1_700_000_000)
        .map_err(|e| anyhow!("writing the seed ISO: {e}"))?;
    let path = dir.join(format!("{name}.seed.iso"));
    fs::write(&path, iso)?;
    Ok(path)
}

/// `imgbuild env check --flatten ENV`.
pub fn flatten(progs: &Programs, env: &Path) -> Result<String> {
    run(
        Command::new(&progs.imgbuild)
            .args(["env", "check", "--flatten"])
            .arg(env),
        "imgbuild env check --flatten",
    )
}

/// A fresh qcow2 overlay over `base`, enlarged to `size` with `qemu-img resize`.
pub fn overlay(base: &Path, dir: &Path, name: &str, size: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(&p),
        "qemu-img create (overlay)",
    )?;
    run(
        Command::new("qemu-img")
            .args(["resize", "-q"])
            .arg(&p)
            .arg(size),
        "qemu-img resize",
    )?;
    Ok(p)
}

/// A blank (all zero) qcow2 disk.
pub fn blank_disk(dir: &Path, name: &str, size: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&p)
            .arg(size),
        "qemu-img create (blank disk)",
    )?;
    Ok(p)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One HTTP/1.0 GET of `/` on 127.0.0.1:`port`: (status, Location, body).
pub fn http_get(port: u16) -> Result<(u16, Option<String>, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context(format!("connecting to 127.0.0.1:{port}")),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading the answer of 127.0.0.1:{port}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "not an HTTP answer from 127.0.0.1:{port}: {:?}",
                tail(&text, 5)
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Ok((status, location, body.to_string()))
}

/// One boot of a test.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// Names the console log: `target/qemu-artifacts/consoles/NAME.log`.
    pub name: String,
    pub firmware: Firmware,
    /// Virtio disks, in order (vda, vdb, ...), qcow2.
    pub disks: Vec<PathBuf>,
    pub seed: Option<PathBuf>,
    /// Direct kernel boot: (vmlinuz, initrd, command line).
    pub kernel: Option<(PathBuf, PathBuf, String)>,
    /// What to wait for instead of the report (then QEMU is killed: a power cut).
    pub cut_at: Option<String>,
    /// SSH logins tried with the OpenSSH client through a port forward
    /// while the guest is up, after its report.
    pub ssh: Vec<SshProbe>,
    /// The CA that must verify the HTTPS certificate (curl `--cacert`);
    /// `None`: the page is fetched without verification (`-k`).
    pub https_ca: Option<PathBuf>,
    /// The host port of the guest's port 80 (`None`: a free one), for a
    /// peer that must know it before the boot (the ACME server).
    pub http_port: Option<u16>,
    /// More options of the user network (e.g. a `guestfwd=...`).
    pub netdev_extra: Vec<String>,
    /// After the SSH probes: log in as root with the test key, have the
    /// guest issue a client certificate from its client CA (`/app/ecs-ca`)
    /// and fetch the HTTPS page with it ([`Outcome::https_client`]).
    pub client_cert: bool,
}

/// One SSH login: `user` with `key` (`None`: password and
/// keyboard-interactive only), running `command`.
#[derive(Clone, Debug)]
pub struct SshProbe {
    pub user: String,
    pub key: Option<SshKey>,
    pub command: String,
}

/// What one [`SshProbe`] gave.
#[derive(Clone, Debug)]
pub struct SshResult {
    pub probe: SshProbe,
    /// ssh's exit status (255: ssh itself failed, e.g. the login).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BootSpec {
    pub fn new(name: &str, firmware: Firmware, disks: Vec<PathBuf>, seed: Option<PathBuf>) -> Self {
        BootSpec {
            name: name.into(),
            firmware,
            disks,
            seed,
            kernel: None,
            cut_at: None,
            ssh: Vec::new(),
            https_ca: None,
            http_port: None,
            netdev_extra: Vec::new(),
            client_cert: false,
        }
    }
}

/// What one boot gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub report: Option<Report>,
    /// The status page's answer through the port forward, asked after the
    /// report: (status, body), or why there was none (e.g. no web server).
    pub http: Result<(u16, String), String>,
    pub console: String,
    pub console_log: PathBuf,
    /// From QEMU's start to the report (or to `cut_at`).
    pub wall: Duration,
    /// Port 80's `Location` header, when it answered with one.
    pub http_location: Option<String>,
    /// `https://TEST_DOMAIN/` through the port forward with curl (the name
    /// resolved to the forward): (status, body), or why there was none
    /// (with [`BootSpec::https_ca`]: also when the CA does not verify it).
    pub https: Result<(u16, String), String>,
    /// The certificate the HTTPS port served (PEM, from `openssl s_client`).
    pub served_cert: Option<String>,
    /// The SSH logins of [`BootSpec::ssh`], in order.
    pub ssh: Vec<SshResult>,
    /// The fingerprints (`SHA256:...`) of the host keys the SSH server
    /// showed, from the client's known_hosts.
    pub host_key_fingerprints: Vec<String>,
    /// With [`BootSpec::client_cert`]: the HTTPS page fetched with a
    /// client certificate from the guest's client CA.
    pub https_client: Option<Result<(u16, String), String>>,
}

impl Outcome {
    pub fn report(&self) -> &Report {
        self.report.as_ref().expect("a boot with a report")
    }

    /// The status page's (status, body); status 0 and the error when there
    /// was no answer. Port 80's answer, or HTTPS's when port 80 redirects
    /// (with a client certificate when the boot fetched one).
    pub fn page(&self) -> (u16, String) {
        match &self.http {
            Ok((301, _)) => self
                .https_client
                .clone()
                .unwrap_or_else(|| self.https.clone())
                .unwrap_or_else(|e| (0, e)),
            other => other.clone().unwrap_or_else(|e| (0, e)),
        }
    }

    /// The console's last lines, for failure messages.
    pub fn tail(&self) -> String {
        format!(
            "console {} (last {TAIL_LINES} lines):\n{}",
            self.console_log.display(),
            tail(&self.console, TAIL_LINES)
        )
    }

    /// Seconds from kernel start until `unit` became active.
    pub fn active_after_s(&self, unit: &str) -> Option<f64> {
        let u = self.report.as_ref()?.units.get(unit)?;
        (u.active_enter_us > 0).then(|| u.active_enter_us as f64 / 1e6)
    }
}

fn boot_timeout() -> Duration {
    std::env::var("QEMU_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(BOOT_TIMEOUT)
}

/// Boots `spec` and returns the guest's report (or, with `cut_at`, kills
/// the VM when that text appears). The caller holds [`serial`].
pub fn boot(spec: &BootSpec) -> Result<Outcome> {
    let dir = artifacts()?.join("consoles");
    fs::create_dir_all(&dir)?;
    let console_log = dir.join(format!("{}.log", spec.name));
    let port = match spec.http_port {
        Some(p) => p,
        None => free_port()?,
    };
    let ssh_port = free_port()?;
    let https_port = free_port()?;
    // qemu64 and two vCPUs boot fastest under TCG here (BENCHMARKS.md);
    // the image's command line carries the i8042 cure for -smp 2.
    let mut vm = Vm::new(&console_log)
        .firmware(spec.firmware)
        .cpu("qemu64")
        .smp(2)
        .timeout(boot_timeout())
        .arg("-netdev")
        .arg(format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:80,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443{}",
            spec.netdev_extra.iter().map(|o| format!(",{o}")).collect::<String>()
        ))
        .arg("-device")
        .arg("virtio-net-pci,netdev=net0");
    for d in &spec.disks {
        vm = vm.disk(d, "qcow2");
    }
    if let Some(s) = &spec.seed {
        vm = vm.cdrom(s);
    }
    if let Some((k, i, cmdline)) = &spec.kernel {
        vm = vm
            .arg("-kernel")
            .arg(k.display().to_string())
            .arg("-initrd")
            .arg(i.display().to_string())
            .arg("-append")
            .arg(cmdline.clone());
    }
    let read_console =
        || String::from_utf8_lossy(&fs::read(&console_log).unwrap_or_default()).into_owned();
    if let Some(cut) = &spec.cut_at {
        let b = vm.run_until(cut)?;
        return Ok(Outcome {
            name: spec.name.clone(),
            report: None,
            http: Err("no report: the power was cut".into()),
            console: read_console(),
            console_log,
            wall: b.marker_after,
            http_location: None,
            https: Err("no report: the power was cut".into()),
            served_cert: None,
            ssh: Vec::new(),
            host_key_fingerprints: Vec::new(),
            https_client: None,
        });
    }
    let known_hosts = dir.join(format!("{}.known_hosts", spec.name));
    let _ = fs::remove_file(&known_hosts);
    let (b, report) = vm.run_until_then(report::MARKER, |console| {
        // The marker is seen as soon as it is written; the line may still
        // be arriving.
        let deadline = Instant::now() + Duration::from_secs(10);
        let report = loop {
            let now = read_console();
            match report::parse(&now) {
                Ok(r) => break r,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("console tail:\n{}", tail(console, TAIL_LINES))))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let (http, http_location) = match http_get(port) {
            Ok((status, location, body)) => (Ok((status, body)), location),
            Err(e) => (Err(format!("{e:#}")), None),
        };
        let https =
            https_get(https_port, spec.https_ca.as_deref(), None).map_err(|e| format!("{e:#}"));
        let served_cert = served_cert(https_port).ok();
        let mut ssh = Vec::new();
        for p in &spec.ssh {
            ssh.push(ssh_probe(ssh_port, &known_hosts, p)?);
        }
        let https_client = if spec.client_cert {
            Some(
                client_cert(ssh_port, &known_hosts, &spec.name)
                    .and_then(|c| https_get(https_port, spec.https_ca.as_deref(), Some(&c)))
                    .map_err(|e| format!("{e:#}")),
            )
        } else {
            None
        };
        Ok((
            report,
            (http, http_location),
            (https, served_cert),
            (ssh, https_client),
        ))
    })?;
    let (report, (http, http_location), (https, served_cert), (ssh, https_client)) = report;
    let host_key_fingerprints = if known_hosts.exists() {
        run(
            Command::new("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(&known_hosts),
            "ssh-keygen -l of the known hosts",
        )?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
    } else {
        Vec::new()
    };
    Ok(Outcome {
        name: spec.name.clone(),
        report: Some(report),
        http,
        console: read_console(),
        console_log,
        wall: b.marker_after,
        http_location,
        https,
        served_cert,
        ssh,
        host_key_fingerprints,
        https_client,
    })
}

/// A client certificate from the guest's client CA: the guest makes a key
/// and signs its certificate with `/app/ecs-ca` (over SSH as root with the
/// test key); returns the PEM file (certificate and key) in the artifacts.
fn client_cert(ssh_port: u16, known_hosts: &Path, name: &str) -> Result<PathBuf> {
    let probe = SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command: "set -e; d=$(mktemp -d); \
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -subj /CN=boot-test-client -keyout $d/k -out $d/csr 2>/dev/null; \
            openssl x509 -req -days 1 -in $d/csr -CA /app/ecs-ca/ca.cert.pem \
              -CAkey /app/ecs-ca/private/ca.key.pem -CAcreateserial -CAserial $d/srl \
              -out $d/c 2>/dev/null; cat $d/c $d/k; rm -rf $d"
            .into(),
    };
    let r = ssh_probe(ssh_port, known_hosts, &probe)?;
    if r.status != Some(0) || !r.stdout.contains("BEGIN CERTIFICATE") {
        bail!(
            "issuing a client certificate on the guest: status {:?}, stderr {:?}",
            r.status,
            r.stderr
        );
    }
    let p = artifacts()?
        .join("consoles")
        .join(format!("{name}.client.pem"));
    fs::write(&p, r.stdout)?;
    Ok(p)
}

/// `https://TEST_DOMAIN/` with curl through the forward on `port`: (status,
/// body). With `ca`, the certificate must verify against it and name the
/// domain; without, it is not checked (`-k`). With `client`, curl shows
/// that certificate (PEM with its key).
pub fn https_get(port: u16, ca: Option<&Path>, client: Option<&Path>) -> Result<(u16, String)> {
    require_tool("curl")?;
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "--retry",
        "3",
        "--retry-connrefused",
    ])
    .arg("--resolve")
    .arg(format!("{TEST_DOMAIN}:{port}:127.0.0.1"))
    .args(["-w", "\n%{http_code}"]);
    match ca {
        Some(ca) => c.arg("--cacert").arg(ca),
        None => c.arg("-k"),
    };
    if let Some(pem) = client {
        c.arg("--cert").arg(pem);
    }
    c.arg(format!("https://{TEST_DOMAIN}:{port}/"));
    let out = run(&mut c, "curl of the HTTPS page")?;
    let (body, code) = out
        .rsplit_once('\n')
        .ok_or_else(|| anyhow!("curl printed no status: {out:?}"))?;
    Ok((
        code.trim().parse().context("curl's status")?,
        body.to_string(),
    ))
}

/// The certificate served on `port` (PEM), through `openssl s_client`.
pub fn served_cert(port: u16) -> Result<String> {
    require_tool("openssl")?;
    let out = run(
        Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", TEST_DOMAIN])
            .stdin(std::process::Stdio::null()),
        "openssl s_client",
    )?;
    let begin = out
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| anyhow!("no certificate from 127.0.0.1:{port}"))?;
    let end = out[begin..]
        .find("-----END CERTIFICATE-----")
        .ok_or_else(|| anyhow!("a cut certificate from 127.0.0.1:{port}"))?;
    Ok(out[begin..begin + end + "-----END CERTIFICATE-----".len()].to_string() + "\n")
}

/// One login with the OpenSSH client through the forward on `port`; retried
/// for up to 60 s while the server is not answering yet.
fn ssh_probe(port: u16, known_hosts: &Path, p: &SshProbe) -> Result<SshResult> {
    require_tool("ssh")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = Command::new("ssh");
        c.args(["-p", &port.to_string(), "-F", "/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "LogLevel=ERROR"]);
        match &p.key {
            Some(k) => {
                c.arg("-i").arg(&k.private).args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "PreferredAuthentications=publickey",
                ]);
            }
            None => {
                c.args([
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                ]);
            }
        }
        c.arg(format!("{}@127.0.0.1", p.user))
            .arg("--")
            .arg(&p.command)
            .stdin(std::process::Stdio::null());
        let out = c.output().context("running ssh")?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let not_up = out.status.code() == Some(255)
            && [
                "Connection refused",
                "Connection reset",
                "Connection closed",
                "timed out",
                "kex_exchange_identification",
            ]
            .iter()
            .any(|m| stderr.contains(m));
        if not_up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        return Ok(SshResult {
            probe: p.clone(),
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        });
    }
}

/// Collects failed checks of one boot and fails once, with all of them and
/// the console's tail.
pub struct Checks<'a> {
    outcome: &'a Outcome,
    failed: Vec<String>,
}

impl<'a> Checks<'a> {
    pub fn new(outcome: &'a Outcome) -> Self {
        Checks {
            outcome,
            failed: Vec::new(),
        }
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failed.push(what());
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: &str) {
        if got != want {
            self.failed
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Panics with every failed check and the console's tail.
    pub fn finish(self) {
        if !self.failed.is_empty() {
            panic!(
                "boot {} failed {} check(s):\n  - {}\n{}",
                self.outcome.name,
                self.failed.len(),
                self.failed.join("\n  - "),
                self.outcome.tail()
            );
        }
    }
}

/// Appends a line to `target/qemu-artifacts/timings.tsv` (boot, seconds
/// wall to report, seconds kernel → ecs-appliance.target, kernel →
/// appliance.service) for BENCHMARKS.md.
pub fn record_timing(o: &Outcome) {
    let Ok(dir) = artifacts() else { return };
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let line = format!(
        "{}\t{:.1}\t{}\t{}\n",
        o.name,
        o.wall.as_secs_f64(),
        f(o.active_after_s("ecs-appliance.target")),
        f(o.active_after_s("appliance.service")),
    );
    if let Ok(mut file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("timings.tsv"))
    {
        let _ = file.write_all(line.as_bytes());
    }
    eprint!("timing: {line}");
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
fn root_partition_offset(raw: &Path) -> Result<u64> {
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
