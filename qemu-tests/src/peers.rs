//! Outside peers of the boot tests that stand in for the internet: a local
//! apt archive with one tiny package ([`LocalArchive`], for
//! `appliance.extra.packages`) and a Sentry stand-in that records what it
//! is sent ([`SentrySink`], for `appliance.sentry.dsn`), and the
//! application's source: a git repository with a compose project and its
//! image ([`AppSource`], for `ecs.git.*`).
//!
//! Each listens on the host's loopback; the guest reaches it at a fixed
//! address through a QEMU `guestfwd` (one `socat` per connection), as
//! [`crate::acme`] does for pebble. A boot without the forward has no
//! route to it: the archive is then unreachable, as offline.
//! The processes are killed when the peer is dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::{artifacts, free_port, run, workspace};
use crate::require_tool;

/// The package the local archive carries.
pub const EXTRA_PACKAGE: &str = "ecs-test-extra";
/// The file it installs.
pub const EXTRA_PACKAGE_FILE: &str = "/usr/share/ecs-test-extra/installed";
/// The archive's address as the guest sees it (port 80).
pub const ARCHIVE_ADDR: &str = "10.0.2.101";
/// The Sentry stand-in's address as the guest sees it (port 80).
pub const SENTRY_ADDR: &str = "10.0.2.102";

fn forward(addr: &str, port: u16) -> String {
    format!("guestfwd=tcp:{addr}:80-cmd:socat - TCP:127.0.0.1:{port}")
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_listening(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(s) = child.try_wait()? {
            bail!("{what} exited before listening: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} does not listen on 127.0.0.1:{port} after 20 s")
}

/// A flat apt archive (`deb [trusted=yes] http://ARCHIVE_ADDR/ ./`) with
/// [`EXTRA_PACKAGE`], built with dpkg-deb and apt-ftparchive, served by
/// Python's http.server.
pub struct LocalArchive {
    child: Child,
    port: u16,
}

impl LocalArchive {
    pub fn start() -> Result<LocalArchive> {
        for t in ["dpkg-deb", "apt-ftparchive", "python3", "socat"] {
            require_tool(t)?;
        }
        let dir = artifacts()?.join("archive");
        let _ = fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        package_repo(&dir.join("build-1"), &repo, "1.0")?;
        package_repo(&dir.join("build-2"), &repo.join("v2"), "2.0")?;
        let port = free_port()?;
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&repo)
            .stdout(Stdio::from(fs::File::create(dir.join("http.log"))?))
            .stderr(Stdio::from(fs::File::create(dir.join("http.err"))?))
            .spawn()
            .context("starting python3 -m http.server")?;
        wait_listening(port, &mut child, "the local archive's http.server")?;
        Ok(LocalArchive { child, port })
    }

    /// The apt source line for the guest ([`EXTRA_PACKAGE`] 1.0).
    pub fn source_line() -> String {
        format!("deb [trusted=yes] http://{ARCHIVE_ADDR}/ ./")
    }

    /// The apt source line of the archive's update: [`EXTRA_PACKAGE`] 2.0.
    pub fn update_source_line() -> String {
        format!("deb [trusted=yes] http://{ARCHIVE_ADDR}/v2/ ./")
    }

    /// QEMU's `guestfwd` option for the guest to reach it.
    pub fn guestfwd(&self) -> String {
        forward(ARCHIVE_ADDR, self.port)
    }

    /// The requests it served (http.server's log).
    pub fn log(&self) -> String {
        artifacts()
            .ok()
            .and_then(|d| fs::read_to_string(d.join("archive/http.err")).ok())
            .unwrap_or_default()
    }
}

/// A flat archive in `repo` with [`EXTRA_PACKAGE`] at `version` (the
/// package built in `build` with dpkg-deb, indexed by apt-ftparchive).
fn package_repo(build: &std::path::Path, repo: &std::path::Path, version: &str) -> Result<()> {
    let file = build.join(EXTRA_PACKAGE_FILE.trim_start_matches('/'));
    fs::create_dir_all(file.parent().unwrap())?;
    fs::create_dir_all(build.join("DEBIAN"))?;
    fs::write(
        &file,
        format!("installed from the boot tests' local archive: {version}\n"),
    )?;
    fs::write(
        build.join("DEBIAN/control"),
        format!(
            "Package: {EXTRA_PACKAGE}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: imgbuild boot tests <root@localhost>\n\
             Description: a package for the appliance.extra.packages boot test\n"
        ),
    )?;
    fs::create_dir_all(repo)?;
    run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(build)
            .arg(repo.join(format!("{EXTRA_PACKAGE}_{version}_all.deb"))),
        "dpkg-deb: the test package",
    )?;
    let packages = run(
        Command::new("apt-ftparchive")
            .args(["packages", "."])
            .current_dir(repo),
        "apt-ftparchive packages",
    )?;
    fs::write(repo.join("Packages"), packages)?;
    Ok(())
}

impl Drop for LocalArchive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the Sentry stand-in got.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SentryRequest {
    pub path: String,
    /// The `X-Sentry-Auth` header.
    pub auth: String,
    pub body: String,
}

/// `qemu-tests/scripts/sentry-sink.py`: records every POST.
pub struct SentrySink {
    child: Child,
    port: u16,
    file: PathBuf,
}

impl SentrySink {
    pub fn start() -> Result<SentrySink> {
        for t in ["python3", "socat"] {
            require_tool(t)?;
        }
        let dir = artifacts()?.join("sentry");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let file = dir.join("requests.jsonl");
        let port = free_port()?;
        let mut child = Command::new("python3")
            .arg(workspace().join("qemu-tests/scripts/sentry-sink.py"))
            .arg(port.to_string())
            .arg(&file)
            .stderr(Stdio::from(fs::File::create(dir.join("sink.err"))?))
            .spawn()
            .context("starting sentry-sink.py")?;
        wait_listening(port, &mut child, "sentry-sink.py")?;
        Ok(SentrySink { child, port, file })
    }

    /// A DSN for the guest with public key `key` and project `project`.
    pub fn dsn(key: &str, project: u32) -> String {
        format!("http://{key}@{SENTRY_ADDR}/{project}")
    }

    pub fn guestfwd(&self) -> String {
        forward(SENTRY_ADDR, self.port)
    }

    /// What it got so far, in order.
    pub fn requests(&self) -> Result<Vec<SentryRequest>> {
        let text = match fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context("reading the sink's requests"),
        };
        text.lines()
            .map(|l| serde_json::from_str(l).context("a line of the sink's requests"))
            .collect()
    }
}

impl Drop for SentrySink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The application's source as the guest fetches it: a git repository
/// (`ecs.git.source`) with a compose project whose web container answers
/// HTTP, and the container image bundled in it (`images/web.tar`, in
/// `docker save`'s layout, made here from the host's static busybox: no
/// registry needed). Served over git's "dumb" HTTP protocol by Python's
/// http.server at [`APP_SOURCE_ADDR`].
pub struct AppSource {
    child: Child,
    port: u16,
    /// The commit the branch points at.
    pub commit: String,
}

/// The application source's address as the guest sees it (port 80).
pub const APP_SOURCE_ADDR: &str = "10.0.2.103";
/// The branch of the test repository.
pub const APP_BRANCH: &str = "stable";
/// What the test application's `/` answers.
pub const APP_INDEX: &str = "ecs-test-application";
/// The file the test container writes into its `/data` volume.
pub const APP_DATA_FILE: &str = "/data/ecs-storage-vault/written-by-the-container";

/// The compose project: `web` prints the env it got into files it serves
/// (`/database_url`, `/settings`, `/vault_sign`, `/domain`; `/pg`: the
/// first byte PostgreSQL at 172.17.0.1:5432 answers to an SSLRequest,
/// `S`, when the container reaches it) and writes into the storage vault volume.
const APP_COMPOSE: &str = r#"# The boot tests' application: one web container (busybox httpd).
services:
  web:
    image: ecs-test/web:1
    command:
      - /bin/busybox
      - sh
      - -c
      - >-
        /bin/busybox mkdir -p /www &&
        echo ecs-test-application > /www/index.html &&
        printf '%s\n' "$$DATABASE_URL" > /www/database_url &&
        printf '%s' "$$ECS_SETTINGS" > /www/settings &&
        printf '%s' "$$ECS_VAULT_SIGN" > /www/vault_sign &&
        printf '%s\n' "$$ECS_DOMAIN" > /www/domain &&
        echo written > /app/ecs-storage-vault/written-by-the-container &&
        { printf '\000\000\000\010\004\322\026\057' |
          /bin/busybox nc -w 5 172.17.0.1 5432 | /bin/busybox head -c 1 > /www/pg; true; } &&
        exec /bin/busybox httpd -f -p 5000 -h /www
    ports: ["127.0.0.1:5000:5000"]
    env_file:
      - /etc/ecs-appliance/application/database_url.env
      - /etc/ecs-appliance/application/service_urls.env
    environment: [ECS_SETTINGS, ECS_VAULT_SIGN]
    volumes:
      - /data/ecs-storage-vault:/app/ecs-storage-vault
"#;

impl AppSource {
    pub fn start() -> Result<AppSource> {
        for t in ["git", "tar", "python3", "socat"] {
            require_tool(t)?;
        }
        let busybox = std::path::Path::new("/bin/busybox");
        if !busybox.exists() {
            bail!("/bin/busybox is missing: install busybox-static (scripts/install-host-deps.sh)");
        }
        let dir = artifacts()?.join("app-source");
        let _ = fs::remove_dir_all(&dir);
        let work = dir.join("work");
        fs::create_dir_all(work.join("images"))?;
        fs::write(work.join("docker-compose.yml"), APP_COMPOSE)?;
        image_archive(busybox, &dir.join("image"), &work.join("images/web.tar"))?;
        let git = |args: &[&str], cwd: &std::path::Path| -> Result<String> {
            run(
                Command::new("git")
                    .args(["-c", "init.defaultBranch=stable"])
                    .args(args)
                    .current_dir(cwd)
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .env("GIT_AUTHOR_NAME", "imgbuild boot tests")
                    .env("GIT_AUTHOR_EMAIL", "root@localhost")
                    .env("GIT_COMMITTER_NAME", "imgbuild boot tests")
                    .env("GIT_COMMITTER_EMAIL", "root@localhost")
                    .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
                    .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
                &format!("git {}", args.join(" ")),
            )
        };
        git(&["init", "-q", "-b", APP_BRANCH], &work)?;
        git(&["add", "."], &work)?;
        git(
            &["commit", "-q", "-m", "the boot tests' application"],
            &work,
        )?;
        let commit = git(&["rev-parse", "HEAD"], &work)?.trim().to_string();
        let srv = dir.join("srv");
        fs::create_dir_all(&srv)?;
        git(&["clone", "-q", "--bare", "work", "srv/ecs.git"], &dir)?;
        git(&["update-server-info"], &srv.join("ecs.git"))?;
        let port = free_port()?;
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&srv)
            .stdout(Stdio::from(fs::File::create(dir.join("http.log"))?))
            .stderr(Stdio::from(fs::File::create(dir.join("http.err"))?))
            .spawn()
            .context("starting python3 -m http.server")?;
        wait_listening(port, &mut child, "the application source's http.server")?;
        Ok(AppSource {
            child,
            port,
            commit,
        })
    }

    /// `ecs.git.source` for the guest.
    pub fn url() -> String {
        format!("http://{APP_SOURCE_ADDR}/ecs.git")
    }

    /// QEMU's `guestfwd` option for the guest to reach it.
    pub fn guestfwd(&self) -> String {
        forward(APP_SOURCE_ADDR, self.port)
    }

    /// The requests it served (http.server's log).
    pub fn log(&self) -> String {
        artifacts()
            .ok()
            .and_then(|d| fs::read_to_string(d.join("app-source/http.err")).ok())
            .unwrap_or_default()
    }
}

impl Drop for AppSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-layer image `ecs-test/web:1` in `docker save`'s layout
/// (manifest.json, the config, the layer tar), with `busybox` as
/// `/bin/busybox`: what `docker load` reads.
fn image_archive(
    busybox: &std::path::Path,
    scratch: &std::path::Path,
    out: &std::path::Path,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let root = scratch.join("root");
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("www"))?;
    fs::copy(busybox, root.join("bin/busybox"))?;
    let layer = scratch.join("layer.tar");
    let tar = |args: &[&str], cwd: &std::path::Path, what: &str| -> Result<String> {
        run(
            Command::new("tar")
                .args([
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "--mtime=@0",
                    "--sort=name",
                ])
                .args(args)
                .current_dir(cwd),
            what,
        )
    };
    tar(
        &["-cf", layer.to_str().unwrap(), "bin", "www"],
        &root,
        "tar: the image's layer",
    )?;
    let layer_sha = format!("{:x}", Sha256::digest(fs::read(&layer)?));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "imgbuild boot tests"}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_sha = format!("{:x}", Sha256::digest(&config));
    let pack = scratch.join("pack");
    fs::create_dir_all(pack.join(&layer_sha))?;
    fs::rename(&layer, pack.join(&layer_sha).join("layer.tar"))?;
    fs::write(pack.join(format!("{config_sha}.json")), &config)?;
    let manifest = serde_json::json!([{
        "Config": format!("{config_sha}.json"),
        "RepoTags": ["ecs-test/web:1"],
        "Layers": [format!("{layer_sha}/layer.tar")],
    }]);
    fs::write(pack.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    tar(
        &[
            "-cf",
            out.to_str().unwrap(),
            "manifest.json",
            &format!("{config_sha}.json"),
            &layer_sha,
        ],
        &pack,
        "tar: the image archive",
    )?;
    Ok(())
}
