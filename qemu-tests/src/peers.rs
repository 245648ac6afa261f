//! Outside peers of the boot tests that stand in for the internet: a local
//! apt archive with one tiny package ([`LocalArchive`], for
//! `appliance.extra.packages`) and a Sentry stand-in that records what it
//! is sent ([`SentrySink`], for `appliance.sentry.dsn`).
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
        let pkg = dir.join("build");
        let file = pkg.join(EXTRA_PACKAGE_FILE.trim_start_matches('/'));
        fs::create_dir_all(file.parent().unwrap())?;
        fs::create_dir_all(pkg.join("DEBIAN"))?;
        fs::write(&file, "installed from the boot tests' local archive\n")?;
        fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: {EXTRA_PACKAGE}\nVersion: 1.0\nArchitecture: all\n\
                 Maintainer: imgbuild boot tests <root@localhost>\n\
                 Description: a package for the appliance.extra.packages boot test\n"
            ),
        )?;
        let repo = dir.join("repo");
        fs::create_dir_all(&repo)?;
        run(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "--build"])
                .arg(&pkg)
                .arg(repo.join(format!("{EXTRA_PACKAGE}_1.0_all.deb"))),
            "dpkg-deb: the test package",
        )?;
        let packages = run(
            Command::new("apt-ftparchive")
                .args(["packages", "."])
                .current_dir(&repo),
            "apt-ftparchive packages",
        )?;
        fs::write(repo.join("Packages"), packages)?;
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

    /// The apt source line for the guest.
    pub fn source_line() -> String {
        format!("deb [trusted=yes] http://{ARCHIVE_ADDR}/ ./")
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
