//! Step 1, env discovery: find the env in the appliance's order, validate
//! it, publish it under `/run`.
//!
//! The order ([`find`]):
//!
//! 1. `$ENV_YML`, a path; when set it must be readable;
//! 2. `/app/env.yml` — both `USERDATA_TYPE: local`;
//! 3. a volume labelled `cidata`/`CIDATA` (ISO9660 or vfat) → `user-data`;
//! 4. a volume labelled `config-2` → `openstack/latest/user_data`;
//! 5. only when nothing local was found: the platform from DMI
//!    ([`platform`]), then its metadata source, or on a platform not
//!    recognised EC2's, OpenStack's and GCE's services, in that order
//!    ([`platform::Platform::sources`]): each within [`Sources::timeout`],
//!    all within [`Sources::total`]; a host that did not answer one source
//!    is not asked for the next (EC2 and OpenStack share 169.254.169.254).
//!    The sources, one module each: [`ec2`], [`gce`], [`openstack`],
//!    [`azure`] (with its ready report, [`azure_ready`]), [`vmware`],
//!    [`hetzner`], [`digitalocean`], [`oracle`]; their HTTP is [`http`],
//!    their decoding [`text`].
//!
//! What a platform's provisioning data carries besides the env (Azure's
//! host name and admin keys, [`Provisioned`]) is merged into the env
//! [`Found::validate`] returns: the keys are added to
//! `ssh_authorized_keys`; the host name stays the env's domain (the name
//! TLS, nginx and mail use) and the platform's is recorded as
//! `PLATFORM_HOSTNAME` in `/run/active-env.yml`.
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
//! Everything fetched is hostile input: bounded in size ([`http`], the
//! seed reader's limits), and no message quotes it (user-data may hold
//! secrets).
//!
//! Every path is under [`Sources::root`] and the base URLs are fields, so
//! tests run the real code on a temporary tree and a loopback server.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use seeds::env::Env;

use crate::safefs::{self, Dir};

pub mod azure;
pub mod digitalocean;
pub mod ec2;
pub mod gce;
pub mod hetzner;
pub mod http;
pub mod openstack;
pub mod oracle;
pub mod platform;
pub mod text;
pub mod vmware;

use platform::{Dmi, Platform};

/// The link-local metadata address of EC2, OpenStack, Azure, Hetzner,
/// DigitalOcean and Oracle.
pub const LINK_LOCAL_BASE: &str = "http://169.254.169.254";
/// The EC2 metadata service.
pub const EC2_BASE: &str = LINK_LOCAL_BASE;
/// The GCE metadata service.
pub const GCE_BASE: &str = "http://metadata.google.internal";
/// How long each metadata source may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// How long all metadata sources together may take.
pub const METADATA_TOTAL: Duration = Duration::from_secs(8);

/// Where an env came from; its `USERDATA_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `$ENV_YML` or `/app/env.yml`.
    Local,
    Cidata,
    Config2,
    Ec2,
    Gce,
    Azure,
    /// OpenStack's metadata service over HTTP (the drive is `Config2`).
    OpenStack,
    Vmware,
    Hetzner,
    DigitalOcean,
    Oracle,
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
            Kind::Azure => "azure",
            Kind::OpenStack => "openstack",
            Kind::Vmware => "vmware",
            Kind::Hetzner => "hetzner",
            Kind::DigitalOcean => "digitalocean",
            Kind::Oracle => "oracle",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.userdata_type())
    }
}

/// The base URL of each HTTP metadata source; `None`: not asked.
#[derive(Clone, Debug, Default)]
pub struct Urls {
    pub ec2: Option<String>,
    pub gce: Option<String>,
    pub openstack: Option<String>,
    pub azure: Option<String>,
    pub hetzner: Option<String>,
    pub digitalocean: Option<String>,
    pub oracle: Option<String>,
    /// Azure's wire server; `None` with `azure` set: DHCP option 245 or
    /// the fixed address ([`azure::wire_server`]).
    pub wire: Option<String>,
}

impl Urls {
    /// The real services.
    pub fn real() -> Urls {
        let ll = || Some(LINK_LOCAL_BASE.to_string());
        Urls {
            ec2: ll(),
            gce: Some(GCE_BASE.to_string()),
            openstack: ll(),
            azure: ll(),
            hetzner: ll(),
            digitalocean: ll(),
            oracle: ll(),
            wire: None,
        }
    }

    /// Every source (the wire server too) at one base URL (`--metadata-url`).
    pub fn all(base: &str) -> Urls {
        let b = || Some(base.to_string());
        Urls {
            ec2: b(),
            gce: b(),
            openstack: b(),
            azure: b(),
            hetzner: b(),
            digitalocean: b(),
            oracle: b(),
            wire: b(),
        }
    }

    fn of(&self, kind: Kind) -> Option<&String> {
        match kind {
            Kind::Ec2 => self.ec2.as_ref(),
            Kind::Gce => self.gce.as_ref(),
            Kind::OpenStack => self.openstack.as_ref(),
            Kind::Azure => self.azure.as_ref(),
            Kind::Hetzner => self.hetzner.as_ref(),
            Kind::DigitalOcean => self.digitalocean.as_ref(),
            Kind::Oracle => self.oracle.as_ref(),
            _ => None,
        }
    }
}

/// Where to look.
#[derive(Clone, Debug)]
pub struct Sources {
    /// `/` at boot; `/app`, `/run`, `/dev` and `/sys` are under it.
    pub root: PathBuf,
    /// The value of `$ENV_YML` (a path on the running system).
    pub env_yml: Option<PathBuf>,
    /// The HTTP metadata sources.
    pub urls: Urls,
    /// `vmware-rpctool` for VMware's guestinfo; `None`: not asked.
    pub rpctool: Option<PathBuf>,
    /// The limit for each metadata source.
    pub timeout: Duration,
    /// The limit for all metadata sources together.
    pub total: Duration,
    /// Probe loop, ram and zram devices too (tests).
    pub include_virtual: bool,
}

impl Sources {
    /// The running system: `$ENV_YML` from the environment, every metadata
    /// source.
    pub fn real() -> Self {
        Sources {
            root: PathBuf::from("/"),
            env_yml: std::env::var_os("ENV_YML")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            urls: Urls::real(),
            rpctool: Some(PathBuf::from(vmware::RPCTOOL)),
            timeout: METADATA_TIMEOUT,
            total: METADATA_TOTAL,
            include_virtual: false,
        }
    }

    /// A tree under `root`, no `$ENV_YML`, no network.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Sources {
            root: root.into(),
            env_yml: None,
            urls: Urls::default(),
            rpctool: None,
            timeout: METADATA_TIMEOUT,
            total: METADATA_TOTAL,
            include_virtual: false,
        }
    }

    /// No network source at all (`--no-metadata`).
    pub fn without_metadata(mut self) -> Self {
        self.urls = Urls::default();
        self.rpctool = None;
        self
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The platform, from DMI under the root.
    pub fn platform(&self) -> Platform {
        Dmi::read(&self.root).platform()
    }
}

/// What a platform's provisioning data carries besides the env.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// The host name the platform gave the machine (checked).
    pub hostname: Option<String>,
    /// The admin's OpenSSH public keys (checked, one line each).
    pub ssh_keys: Vec<String>,
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
    /// The platform's host name and keys, merged by [`Found::validate`].
    pub provisioned: Provisioned,
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
        let mut env = Env::parse(&self.bytes, &self.source_name())
            .map_err(|e| anyhow!("invalid env ({} {}):\n{e}", self.kind, self.origin))?;
        for k in &self.provisioned.ssh_keys {
            if !env.ssh_authorized_keys.contains(k) {
                env.ssh_authorized_keys.push(k.clone());
            }
        }
        Ok(env)
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
            provisioned: Provisioned::default(),
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
                provisioned: Provisioned::default(),
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

    let platform = s.platform();
    looked.push(format!("platform {} (DMI)", platform.name()));
    match ask_metadata(s, platform, &mut looked) {
        Some((kind, origin, got)) => Ok(Found {
            kind,
            origin,
            bytes: got.bytes,
            warnings: passed_over,
            provisioned: got.provisioned,
        }),
        None => bail!("no env found; looked at: {}", looked.join(", ")),
    }
}

/// What one metadata source gave.
struct Got {
    bytes: Vec<u8>,
    provisioned: Provisioned,
}

/// Asks the platform's metadata sources in order; the first with
/// user-data wins. Each is noted in `looked`.
fn ask_metadata(
    s: &Sources,
    platform: Platform,
    looked: &mut Vec<String>,
) -> Option<(Kind, String, Got)> {
    let all_by = Instant::now() + s.total;
    // Hosts that did not answer at all: not asked again.
    let mut dead: Vec<String> = Vec::new();
    for &kind in platform.sources() {
        let base = match kind {
            Kind::Vmware => s.rpctool.as_ref().map(|p| p.display().to_string()),
            _ => s.urls.of(kind).cloned(),
        };
        let Some(base) = base else {
            looked.push(format!("{kind} metadata (not asked)"));
            continue;
        };
        if dead.contains(&base) {
            looked.push(format!(
                "{kind} metadata (not asked: {base} did not answer)"
            ));
            continue;
        }
        let deadline = (Instant::now() + s.timeout).min(all_by);
        if deadline <= Instant::now() {
            looked.push(format!(
                "{kind} metadata (not asked: {:.0} s for all sources spent)",
                s.total.as_secs_f64()
            ));
            continue;
        }
        let plain = |(url, r): (String, Result<Option<Vec<u8>>>)| {
            let got = r.map(|o| {
                o.map(|bytes| Got {
                    bytes,
                    provisioned: Provisioned::default(),
                })
            });
            (url, got)
        };
        let (url, got) = match kind {
            Kind::Ec2 => plain(ec2::fetch(&base, deadline)),
            Kind::Gce => plain(gce::fetch(&base, deadline)),
            Kind::OpenStack => plain(openstack::fetch(&base, deadline)),
            Kind::Hetzner => plain(hetzner::fetch(&base, deadline)),
            Kind::DigitalOcean => plain(digitalocean::fetch(&base, deadline)),
            Kind::Oracle => plain(oracle::fetch(&base, deadline)),
            Kind::Vmware => plain(vmware::fetch(Path::new(&base), deadline)),
            Kind::Azure => azure_source(s, &base, deadline),
            Kind::Local | Kind::Cidata | Kind::Config2 => continue,
        };
        match got {
            Ok(Some(got)) if got.bytes.len() > seeds::yaml::MAX_BYTES => looked.push(format!(
                "{kind} metadata {url} (user-data larger than {} MiB; refused)",
                seeds::yaml::MAX_BYTES >> 20
            )),
            Ok(Some(got)) => return Some((kind, url, got)),
            Ok(None) => looked.push(format!("{kind} metadata {url} (no user-data)")),
            Err(e) => {
                if http::is_unreachable(&e) {
                    dead.push(base.clone());
                }
                looked.push(format!("{kind} metadata {url} ({e:#})"));
            }
        }
    }
    None
}

/// Azure: the provisioning ISO's `ovf-env.xml` first (its `CustomData`,
/// host name and keys), then IMDS for what it did not give.
fn azure_source(s: &Sources, base: &str, deadline: Instant) -> (String, Result<Option<Got>>) {
    let (mut origin, mut prov) = match scan_ovf_env(s) {
        Some(Ok((dev, xml))) => match azure::ovf_env(&xml) {
            Ok(p) => (format!("{dev}:ovf-env.xml"), p),
            Err(e) => {
                return (
                    format!("{dev}:ovf-env.xml"),
                    Err(e.context(format!("reading {dev}:ovf-env.xml"))),
                )
            }
        },
        Some(Err(e)) => return (base.to_string(), Err(e)),
        None => (String::new(), azure::Provisioning::default()),
    };
    let need = prov.user_data.is_none()
        || prov.provisioned.hostname.is_none()
        || prov.provisioned.ssh_keys.is_empty();
    if need {
        let (url, got) = azure::imds(base, deadline);
        match got {
            Ok(imds) => {
                if prov.user_data.is_none() {
                    prov.user_data = imds.user_data;
                    origin = url;
                }
                if prov.provisioned.hostname.is_none() {
                    prov.provisioned.hostname = imds.provisioned.hostname;
                }
                if prov.provisioned.ssh_keys.is_empty() {
                    prov.provisioned.ssh_keys = imds.provisioned.ssh_keys;
                }
            }
            // Without the ISO's env, IMDS' failure is the answer.
            Err(e) if prov.user_data.is_none() => return (url, Err(e)),
            Err(_) => {}
        }
    }
    let got = prov.user_data.map(|bytes| Got {
        bytes,
        provisioned: prov.provisioned,
    });
    (origin, Ok(got))
}

/// The first CD-ROM (`sr*`) whose ISO9660 or UDF volume carries `ovf-env.xml`:
/// (device, its bytes); an error when one has it but it cannot be read.
fn scan_ovf_env(s: &Sources) -> Option<Result<(String, Vec<u8>)>> {
    let names = block_devices(s).ok()?;
    for name in names.into_iter().filter(|n| n.starts_with("sr")) {
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(s.path("/dev").join(&name))
        else {
            continue;
        };
        if seeds::seed::probe(&f).is_none() {
            continue;
        }
        let Ok(seed) = seeds::seed::read_seed(&f) else {
            continue;
        };
        let shown = format!("/dev/{name}");
        if let Some(what) = seed.not_regular_at("ovf-env.xml") {
            return Some(Err(anyhow!("{shown}: ovf-env.xml is {what}; refusing it")));
        }
        if let Some(xml) = seed.get("ovf-env.xml") {
            return Some(Ok((shown, xml.to_vec())));
        }
    }
    None
}

/// On Azure (by DMI), tells the wire server the machine is ready: `None`
/// elsewhere or when the network is not asked (`--no-metadata`); else the
/// incarnation reported, or why not. Called on every boot, also when no
/// env was found (Azure marks a VM that never reports as failed).
pub fn azure_ready(s: &Sources) -> Option<Result<String>> {
    if s.platform() != Platform::Azure || s.urls.azure.is_none() {
        return None;
    }
    let base = s
        .urls
        .wire
        .clone()
        .unwrap_or_else(|| azure::wire_server(&s.root));
    Some(azure::report_ready(&base, Instant::now() + s.timeout))
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
                provisioned: Provisioned::default(),
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

/// The bytes of `/run/active-env.yml`: the env as found, without its own
/// top-level `USERDATA_TYPE:` and `PLATFORM_HOSTNAME:` lines, ending in a
/// newline, then ours (the platform's host name only when it gave one).
pub fn active_env_yml(found: &Found) -> Vec<u8> {
    let mut out = Vec::with_capacity(found.bytes.len() + 32);
    for line in found.bytes.split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"USERDATA_TYPE:") && !line.starts_with(b"PLATFORM_HOSTNAME:") {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("USERDATA_TYPE: {}\n", found.kind.userdata_type()).as_bytes());
    if let Some(h) = &found.provisioned.hostname {
        out.extend_from_slice(format!("PLATFORM_HOSTNAME: {h}\n").as_bytes());
    }
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
