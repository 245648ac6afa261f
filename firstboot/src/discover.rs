//! Step 1, env discovery: find the env in the appliance's order, validate
//! it, publish it under `/run`.
//!
//! The order ([`find`]):
//!
//! 1. `$ENV_YML`, a path; when set it must be readable;
//! 2. `/app/env.yml` — both `USERDATA_TYPE: local`;
//! 3. a volume labelled `cidata`/`CIDATA` (ISO9660 or vfat) → `user-data`;
//! 4. a volume labelled `config-2` → `openstack/latest/user_data`;
//! 5. only when nothing local was found: the EC2 metadata service
//!    (`/latest/user-data`, with an IMDSv2 token when the service hands one
//!    out), then GCE's (`/computeMetadata/v1/instance/attributes/user-data`
//!    with `Metadata-Flavor: Google`), each within [`Sources::timeout`].
//!
//! Volumes are read in process by [`seeds::seed`], never mounted: every block
//! device listed in `/sys/class/block` (disks and partitions; loop, ram and
//! zram skipped) is opened read-only and [`seeds::seed::probe`]d, which reads
//! a few sectors, so the scan is cheap. All seed volumes are read, and two
//! whose env differs are an error naming both: picking one would be a guess.
//! A seed volume that cannot be read (corrupt, no env file, a symbolic link
//! or other non-file in its place) beside one that can is passed over with
//! a warning ([`Found::warnings`]); alone, it is the error.
//!
//! [`publish`] writes `/run/active-env.yml` (the env as found, any
//! `USERDATA_TYPE:` line of its own dropped, ours appended) and
//! `/run/active-env.env` (the flattened env), both mode 0600 from creation
//! and atomically, and only when their content or mode differs, so a boot
//! with nothing to do writes nothing.
//!
//! HTTP: the metadata services are plain `http://` on a link-local address,
//! one GET (or the token PUT) per connection; no TLS, redirects, keep-alive
//! or chunking is needed. A few dozen lines over [`std::net::TcpStream`]
//! with one deadline over name resolution, connect, send and receive do it,
//! which a general client crate would not do without a runtime or a
//! resolver of its own, and they add no dependency to the image.
//!
//! Every path is under [`Sources::root`] and the base URLs are fields, so
//! tests run the real code on a temporary tree and a loopback server.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use seeds::env::Env;

use crate::safefs::{self, Dir};

/// The EC2 metadata service.
pub const EC2_BASE: &str = "http://169.254.169.254";
/// The GCE metadata service.
pub const GCE_BASE: &str = "http://metadata.google.internal";
/// How long each metadata service may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// Where an env came from; its `USERDATA_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `$ENV_YML` or `/app/env.yml`.
    Local,
    Cidata,
    Config2,
    Ec2,
    Gce,
}

impl Kind {
    /// The value of `USERDATA_TYPE`.
    pub fn userdata_type(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Cidata => "cidata",
            Kind::Config2 => "config-2",
            Kind::Ec2 => "ec2",
            Kind::Gce => "gce",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.userdata_type())
    }
}

/// Where to look.
#[derive(Clone, Debug)]
pub struct Sources {
    /// `/` at boot; `/app`, `/run`, `/dev` and `/sys` are under it.
    pub root: PathBuf,
    /// The value of `$ENV_YML` (a path on the running system).
    pub env_yml: Option<PathBuf>,
    /// Base URL of the EC2 metadata service; `None`: not asked.
    pub ec2: Option<String>,
    /// Base URL of the GCE metadata service; `None`: not asked.
    pub gce: Option<String>,
    /// The limit for each metadata service.
    pub timeout: Duration,
    /// Probe loop, ram and zram devices too (tests).
    pub include_virtual: bool,
}

impl Sources {
    /// The running system: `$ENV_YML` from the environment, both metadata
    /// services.
    pub fn real() -> Self {
        Sources {
            root: PathBuf::from("/"),
            env_yml: std::env::var_os("ENV_YML")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ec2: Some(EC2_BASE.to_string()),
            gce: Some(GCE_BASE.to_string()),
            timeout: METADATA_TIMEOUT,
            include_virtual: false,
        }
    }

    /// A tree under `root`, no `$ENV_YML`, no network.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Sources {
            root: root.into(),
            env_yml: None,
            ec2: None,
            gce: None,
            timeout: METADATA_TIMEOUT,
            include_virtual: false,
        }
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// An env as found, not yet validated.
#[derive(Debug)]
pub struct Found {
    pub kind: Kind,
    /// The file, device (`/dev/sr0`) or URL it came from.
    pub origin: String,
    pub bytes: Vec<u8>,
    /// What was passed over on the way (a seed volume that could not be
    /// read beside one that could), for the log.
    pub warnings: Vec<String>,
}

impl Found {
    /// The name in front of line numbers in validation messages.
    pub fn source_name(&self) -> String {
        match self.kind {
            Kind::Cidata => format!("{}:user-data", self.origin),
            Kind::Config2 => format!("{}:openstack/latest/user_data", self.origin),
            _ => self.origin.clone(),
        }
    }

    /// Parses and validates the env; the error lists every problem (their
    /// messages never quote a secret).
    pub fn validate(&self) -> Result<Env> {
        Env::parse(&self.bytes, &self.source_name())
            .map_err(|e| anyhow!("invalid env ({} {}):\n{e}", self.kind, self.origin))
    }
}

/// What [`run`] found and did.
#[derive(Debug)]
pub struct Discovered {
    pub env: Env,
    pub kind: Kind,
    /// The file, device or URL, for the summary.
    pub origin: String,
    /// The files under `/run` that were (re)written; empty when up to date.
    pub written: Vec<&'static str>,
}

/// Finds, validates and publishes the env (the whole step).
pub fn run(s: &Sources) -> Result<Discovered> {
    let found = find(s)?;
    let env = found.validate()?;
    let written = publish(&s.root, &found, &env)?;
    Ok(Discovered {
        env,
        kind: found.kind,
        origin: found.origin,
        written,
    })
}

/// Finds the env in the appliance's order.
pub fn find(s: &Sources) -> Result<Found> {
    if let Some(p) = &s.env_yml {
        let bytes =
            read_env_file(p).with_context(|| format!("reading $ENV_YML ({})", p.display()))?;
        return Ok(Found {
            kind: Kind::Local,
            origin: p.display().to_string(),
            bytes,
            warnings: Vec::new(),
        });
    }
    let mut looked = vec!["$ENV_YML (not set)".to_string()];

    let mut passed_over = Vec::new();
    match read_app_env(&s.root).context("reading /app/env.yml")? {
        AppEnv::Env(bytes) => {
            return Ok(Found {
                kind: Kind::Local,
                origin: "/app/env.yml".into(),
                bytes,
                warnings: Vec::new(),
            })
        }
        AppEnv::Absent => looked.push("/app/env.yml (absent)".into()),
        AppEnv::Untrusted(why) => {
            let w = format!("/app/env.yml passed over: {why}");
            looked.push(w.clone());
            passed_over.push(w);
        }
    }

    let (seeds, probed, unreadable) = scan_seeds(s);
    if let Some(first) = seeds.first() {
        if let Some(other) = seeds.iter().find(|f| f.bytes != first.bytes) {
            bail!(
                "two seed volumes carry different envs: {} ({}) and {} ({}); detach one",
                first.origin,
                first.kind,
                other.origin,
                other.kind
            );
        }
        let pick = seeds
            .iter()
            .position(|f| f.kind == Kind::Cidata)
            .unwrap_or(0);
        let mut found = seeds.into_iter().nth(pick).expect("index in range");
        found.warnings = passed_over;
        found.warnings.extend(
            unreadable
                .iter()
                .map(|e| format!("{e:#}; using {}", found.origin)),
        );
        return Ok(found);
    }
    // Only unreadable seed volumes: the first one's reason.
    if let Some(e) = unreadable.into_iter().next() {
        return Err(e);
    }
    looked.push(format!(
        "{probed} block device(s) (no volume labelled cidata or config-2)"
    ));

    for (kind, base) in [(Kind::Ec2, &s.ec2), (Kind::Gce, &s.gce)] {
        let Some(base) = base else {
            looked.push(format!("{kind} metadata (not asked)"));
            continue;
        };
        let deadline = Instant::now() + s.timeout;
        let (url, got) = match kind {
            Kind::Ec2 => ec2(base, deadline),
            _ => gce(base, deadline),
        };
        match got {
            Ok(Some(bytes)) => {
                return Ok(Found {
                    kind,
                    origin: url,
                    bytes,
                    warnings: passed_over,
                })
            }
            Ok(None) => looked.push(format!("{kind} metadata {url} (no user-data)")),
            Err(e) => looked.push(format!("{kind} metadata {url} ({e:#})")),
        }
    }
    bail!("no env found; looked at: {}", looked.join(", "))
}

/// What `/app/env.yml` gave.
enum AppEnv {
    Absent,
    Env(Vec<u8>),
    /// A file that someone other than root wrote or may write: passed over
    /// (with a warning) for the next source.
    Untrusted(String),
}

/// `/app/env.yml`, reached without following a link ([`crate::safefs`]):
/// `/app` is the `app` user's, so a link there could make the agent read a
/// file of root's into its error messages. And since the env grants root's
/// SSH keys, only a file that root owns and only root may write is an env:
/// one the `app` user made or may change is passed over.
fn read_app_env(root: &Path) -> Result<AppEnv> {
    let app = match Dir::root(root)?.walk("/app", false) {
        Ok(Ok(d)) => d,
        Ok(Err(o)) => bail!("{o}"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AppEnv::Absent),
        Err(e) => return Err(e.into()),
    };
    match app.read("env.yml")? {
        safefs::Read::Missing => Ok(AppEnv::Absent),
        safefs::Read::Data(_, _, m) if m.uid() != 0 || m.mode() & 0o022 != 0 => {
            Ok(AppEnv::Untrusted(format!(
                "owned by uid {} with mode {:04o}: only a file that root owns and only root \
                 may write is an env (chown root: /app/env.yml; chmod go-w /app/env.yml)",
                m.uid(),
                m.mode() & 0o7777
            )))
        }
        safefs::Read::Data(d, _, _) if d.len() <= seeds::yaml::MAX_BYTES => Ok(AppEnv::Env(d)),
        safefs::Read::Data(..) | safefs::Read::TooLarge(_) => bail!(
            "file is too large (an env is at most {} MiB)",
            seeds::yaml::MAX_BYTES >> 20
        ),
        safefs::Read::Linked(_) => {
            bail!("it has other hard links (it is another file as well); refusing it")
        }
        safefs::Read::Other(m) if m.file_type().is_symlink() => {
            bail!("it is a symbolic link; refusing to follow it")
        }
        safefs::Read::Other(_) => bail!("it is not a regular file"),
    }
}

/// Reads an env file, refusing one larger than an env may be.
fn read_env_file(p: &Path) -> Result<Vec<u8>> {
    seeds::env::read_limited(p).map_err(|e| match e {
        seeds::env::LoadError::Io { source, .. } => anyhow::Error::new(source),
        other => anyhow!("{other}"),
    })
}

/// The kernel names of the block devices to probe, sorted.
fn block_devices(s: &Sources) -> Result<Vec<String>> {
    let dir = s.path("/sys/class/block");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("listing /sys/class/block"),
    };
    let mut names = Vec::new();
    for e in entries {
        let name = e.context("listing /sys/class/block")?.file_name();
        let Some(name) = name.to_str() else { continue };
        let virt = ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p));
        if !virt || s.include_virtual {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Every seed volume that could be read, in device order; how many devices
/// were probed; why the others (labelled as seeds, but corrupt, without
/// the file, or with a link or other non-file in its place) could not be.
fn scan_seeds(s: &Sources) -> (Vec<Found>, usize, Vec<anyhow::Error>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut probed = 0;
    let names = match block_devices(s) {
        Ok(n) => n,
        Err(e) => return (out, probed, vec![e]),
    };
    for name in names {
        let node = s.path("/dev").join(&name);
        let shown = format!("/dev/{name}");
        // A drive without a medium, a node udev has not made yet: nothing to read.
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&node)
        else {
            continue;
        };
        probed += 1;
        let Some((_, label)) = seeds::seed::probe(&f) else {
            continue;
        };
        let (kind, file) = if label.eq_ignore_ascii_case("cidata") {
            (Kind::Cidata, "user-data")
        } else if label.eq_ignore_ascii_case("config-2") {
            (Kind::Config2, "openstack/latest/user_data")
        } else {
            continue;
        };
        match read_volume(&f, kind, file, &shown) {
            Ok(bytes) => out.push(Found {
                kind,
                origin: shown,
                bytes,
                warnings: Vec::new(),
            }),
            Err(e) => unreadable.push(e),
        }
    }
    (out, probed, unreadable)
}

/// The env file `file` of the seed volume open as `f`.
fn read_volume(f: &File, kind: Kind, file: &str, shown: &str) -> Result<Vec<u8>> {
    let seed =
        seeds::seed::read_seed(f).with_context(|| format!("reading the {kind} volume {shown}"))?;
    if let Some(what) = seed.not_regular_at(file) {
        bail!("the {kind} volume {shown}: {file} is {what}; refusing it");
    }
    Ok(seed
        .get(file)
        .with_context(|| format!("the {kind} volume {shown} has no {file}"))?
        .to_vec())
}

/// EC2: a session token first (IMDSv2); without one, a plain GET (IMDSv1).
/// A service that cannot be reached at all is not asked twice.
fn ec2(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/latest/user-data");
    let token = match http(
        "PUT",
        &format!("{base}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        deadline,
    ) {
        Ok(r) if r.status == 200 && !r.body.is_empty() => {
            Some(String::from_utf8_lossy(&r.body).trim().to_string())
        }
        Ok(_) => None,
        Err(e) => return (url, Err(e)),
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| ("X-aws-ec2-metadata-token", t))
        .into_iter()
        .collect();
    let got = http("GET", &url, &headers, deadline).and_then(user_data);
    (url, got)
}

fn gce(base: &str, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let url = format!(
        "{}/computeMetadata/v1/instance/attributes/user-data",
        base.trim_end_matches('/')
    );
    let got = http("GET", &url, &[("Metadata-Flavor", "Google")], deadline).and_then(user_data);
    (url, got)
}

/// 200: the user-data (none if empty); 404: none; else an error.
fn user_data(r: Response) -> Result<Option<Vec<u8>>> {
    match r.status {
        200 if r.body.iter().all(u8::is_ascii_whitespace) => Ok(None),
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        s => bail!("HTTP status {s}"),
    }
}

/// An HTTP answer.
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// The largest answer read: an env's limit plus room for headers.
const MAX_ANSWER: usize = seeds::yaml::MAX_BYTES + 65536;

/// One HTTP/1.0 request to a plain `http://` URL, finished by `deadline`.
fn http(method: &str, url: &str, headers: &[(&str, &str)], deadline: Instant) -> Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = resolve(authority, deadline)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("timed out"))
    };
    let mut conn = TcpStream::connect_timeout(&addr, left()?).context("connecting")?;
    conn.set_write_timeout(Some(left()?))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())
        .context("sending the request")?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        conn.set_read_timeout(Some(left()?))?;
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                bail!("timed out")
            }
            Err(e) => return Err(e).context("reading the answer"),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_ANSWER {
            bail!("answer larger than {} MiB", MAX_ANSWER >> 20);
        }
    }
    parse_answer(&raw).context("reading the answer")
}

/// `host[:port]` as an address; a name is resolved within the deadline
/// (a resolver that hangs is left behind on its thread).
fn resolve(authority: &str, deadline: Instant) -> Result<SocketAddr> {
    if let Ok(a) = authority.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = authority.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 80));
    }
    let hostport = match authority.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
        _ => format!("{authority}:80"),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let name = hostport.clone();
    std::thread::spawn(move || {
        let _ = tx.send(name.to_socket_addrs().map(|mut a| a.next()));
    });
    let wait = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(wait) {
        Ok(Ok(Some(a))) => Ok(a),
        Ok(Ok(None)) => bail!("{hostport} has no address"),
        Ok(Err(e)) => Err(e).with_context(|| format!("resolving {hostport}")),
        Err(_) => bail!("resolving {hostport}: timed out"),
    }
}

fn parse_answer(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().split_whitespace();
    if !status_line
        .next()
        .unwrap_or_default()
        .starts_with("HTTP/1.")
    {
        bail!("not an HTTP answer");
    }
    let status: u16 = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    let mut body = raw[end + 4..].to_vec();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("content-length") {
            let n: usize = v.trim().parse().context("bad Content-Length")?;
            if body.len() < n {
                bail!("answer cut short ({} of {n} bytes)", body.len());
            }
            body.truncate(n);
        } else if k.trim().eq_ignore_ascii_case("transfer-encoding") {
            bail!("unexpected Transfer-Encoding in an HTTP/1.0 answer");
        }
    }
    Ok(Response { status, body })
}

/// The bytes of `/run/active-env.yml`: the env as found, without its own
/// top-level `USERDATA_TYPE:` lines, ending in a newline, then ours.
pub fn active_env_yml(found: &Found) -> Vec<u8> {
    let mut out = Vec::with_capacity(found.bytes.len() + 32);
    for line in found.bytes.split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"USERDATA_TYPE:") {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("USERDATA_TYPE: {}\n", found.kind.userdata_type()).as_bytes());
    out
}

/// Writes `/run/active-env.yml` and `/run/active-env.env` where they differ
/// from what is there; returns the ones written. Reached without following
/// a link ([`crate::safefs`]).
pub fn publish(root: &Path, found: &Found, env: &Env) -> Result<Vec<&'static str>> {
    let run = match Dir::root(root)
        .and_then(|r| r.walk("/run", true))
        .context("creating /run")?
    {
        Ok(d) => d,
        Err(o) => bail!("{o}"),
    };
    let mut written = Vec::new();
    for (name, abs, data) in [
        (
            "active-env.yml",
            "/run/active-env.yml",
            active_env_yml(found),
        ),
        (
            "active-env.env",
            "/run/active-env.env",
            env.flatten_for_units().into_bytes(),
        ),
    ] {
        if up_to_date(&run, name, &data, 0o600) {
            continue;
        }
        run.replace(name, &data, 0o600, None)
            .with_context(|| format!("writing {abs}"))?;
        written.push(abs);
    }
    Ok(written)
}

/// `name` is a regular file (not a link, no other link) with exactly
/// `data` and `mode`.
fn up_to_date(run: &Dir, name: &str, data: &[u8], mode: u32) -> bool {
    match run.read(name) {
        Ok(safefs::Read::Data(old, _, m)) => m.mode() & 0o7777 == mode && old == data,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
