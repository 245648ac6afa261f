//! The env model: every key of ENV.md, typed, with its default, and the
//! validation that reports every problem at once with its line, column and
//! key path.
//!
//! The whole document is kept as well ([`Env::doc`]), so keys this model does
//! not know (cloud-init understands many more) are passed through, never
//! dropped; unknown keys inside `appliance` and `ecs` give a warning, since
//! there they are most likely typos.
//!
//! Values marked (S) in ENV.md are [`Secret`]s, and no message here ever
//! quotes the value of a secret key, nor anything below it (the keys of a
//! secret written as a map, its tags): messages name the secret's path only
//! (see [`crate::secret::SECRET_PATHS`]).
//!
//! Besides types, the values the agent acts on as root are checked here, so
//! a bad env fails `imgbuild env check` rather than the boot: file modes,
//! paths, owners and ssh keys, devices and sizes, git arguments, the update
//! timer's calendar expression, control characters in anything that reaches
//! `/run/active-env.env` (docs/env-rules.md lists every rule).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::flatten::{flatten, Trees};
use crate::secret::{secret_root, Secret};
use crate::yaml::{self, Node, Pos, Value};

mod check;
pub mod effects;
mod values;

use self::check::*;
use self::values::*;

/// The upstream repositories used when `git.source` is not set.
pub const APPLIANCE_GIT_SOURCE: &str = "https://github.com/ecs-org/ecs-appliance.git";
pub const ECS_GIT_SOURCE: &str = "https://github.com/ecs-org/ecs.git";
/// Let's Encrypt's ACME directory: `appliance.ssl.letsencrypt.directory`'s
/// default.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// An ACME directory URL: `https://HOST[:PORT]/PATH`, nothing a shell or
/// a config file would read as more than one word.
fn check_acme_directory(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("is not an https:// URL (ACME needs TLS)")?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() {
        return Err("names no host");
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!&()*+,;=%".contains(&b))
    {
        return Err("has characters an ACME URL does not need (spaces, quotes, $, `, \\)");
    }
    Ok(())
}
/// Default `appliance.update.oncalendar`.
pub const DEFAULT_ONCALENDAR: &str = "*-*-* 06:30:00";

/// A validated env.
#[derive(Debug)]
pub struct Env {
    /// The document as read, with every key (known or not).
    pub doc: Document,
    pub ssh_authorized_keys: Vec<String>,
    pub ssh_deprecated_keys: Vec<String>,
    pub disable_root: Option<bool>,
    pub appliance: Appliance,
    pub ecs: Ecs,
    /// Things worth telling the user that do not make the env invalid.
    pub warnings: Vec<Problem>,
}

/// The parsed document; its `Debug` shows no content (it holds secrets).
pub struct Document(pub Node);

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<document>")
    }
}

#[derive(Debug)]
pub struct Appliance {
    pub domain: String,
    pub standby: bool,
    pub allowed_hosts: Option<String>,
    pub ssl: Ssl,
    pub sentry_dsn: Option<Secret<String>>,
    pub metric: Metric,
    pub git: Git,
    pub extra: Extra,
    pub update: Update,
    pub dkim_key: Option<Secret<String>>,
    pub backup: Backup,
    pub storage: Storage,
}

#[derive(Debug)]
pub struct Ssl {
    pub letsencrypt_enabled: bool,
    /// The ACME directory URL certificates are asked from (https).
    pub letsencrypt_directory: String,
    /// A CA certificate (PEM) to trust the ACME server's own TLS
    /// certificate with, for a private ACME server.
    pub letsencrypt_directory_ca: Option<String>,
    pub client_certs_mandatory: bool,
    pub key: Option<Secret<String>>,
    pub cert: Option<String>,
}

/// Each true value becomes a flag file `/app/etc/flags/metric.NAME`.
#[derive(Debug, Default)]
pub struct Metric {
    pub exporter: bool,
    pub server: bool,
    pub gui: bool,
    pub pghero: bool,
}

impl Metric {
    /// The metric names that are switched on.
    pub fn enabled(&self) -> Vec<&'static str> {
        [
            ("exporter", self.exporter),
            ("server", self.server),
            ("gui", self.gui),
            ("pghero", self.pghero),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }
}

#[derive(Debug)]
pub struct Git {
    pub branch: String,
    pub source: String,
    pub commitid: Option<String>,
}

#[derive(Debug, Default)]
pub struct Extra {
    pub files: Vec<ExtraFile>,
    pub packages: Vec<String>,
    pub states: Option<String>,
}

/// A file written at first boot (`appliance.extra.files`).
#[derive(Debug)]
pub struct ExtraFile {
    /// Absolute path.
    pub path: String,
    /// Treated as secret: such files often carry credentials.
    pub contents: Secret<String>,
    /// `user:group` or `user`.
    pub owner: Option<String>,
    /// Permission bits (`0644` in YAML 1.1 is octal; `"0600"` is read as octal too).
    pub permissions: Option<u32>,
}

#[derive(Debug)]
pub struct Update {
    pub automatic: bool,
    pub oncalendar: String,
}

#[derive(Debug, Default)]
pub struct Backup {
    pub url: Option<Secret<String>>,
    pub options: Option<String>,
    pub mount: Option<BackupMount>,
    pub encrypt: Option<Secret<String>>,
}

#[derive(Debug, Default)]
pub struct BackupMount {
    pub fstype: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub options: Option<Secret<String>>,
}

/// `appliance.storage`: where `ecs-data` and `ecs-volatile` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub ignore_data: bool,
    pub ignore_volatile: bool,
    pub grow_root: bool,
    /// Grow root only up to this many bytes.
    pub root_size: Option<u64>,
    pub data: Option<VolumePlan>,
    pub volatile: Option<VolumePlan>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            ignore_data: false,
            ignore_volatile: false,
            grow_root: true,
            root_size: None,
            data: None,
            volatile: None,
        }
    }
}

/// Where to create a volume when no filesystem with its label exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    /// A new partition of this many bytes in the boot disk's free space.
    Size(u64),
    /// A new partition with all the boot disk's remaining free space.
    Rest,
    /// A whole blank disk.
    Device(PathBuf),
}

#[derive(Debug)]
pub struct Ecs {
    pub settings: Secret<String>,
    pub vault_encrypt: Secret<String>,
    pub vault_sign: Secret<String>,
    pub git: Git,
    pub docs_git_source: Option<String>,
    pub docs_git_branch: Option<String>,
    pub database: String,
    pub userswitcher_enabled: bool,
}

/// One problem in an env, at a position, under a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub pos: Option<Pos>,
    /// Dotted key path (`appliance.storage.data.size`); empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pos {
            write!(f, "{p}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why an env was refused: every problem found, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvErrors {
    /// The file name shown in front of each problem (`env.yml`).
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl EnvErrors {
    /// One line per problem: `origin:line:col: key.path: message`.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| format!("{}:{p}", self.origin))
            .collect()
    }
}

impl fmt::Display for EnvErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for EnvErrors {}

impl Env {
    /// Parses and validates env bytes; `origin` names the source in messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Env, EnvErrors> {
        let fail = |pos: Option<Pos>, path: String, message: String| EnvErrors {
            origin: origin.to_string(),
            problems: vec![Problem { pos, path, message }],
        };
        let text = yaml::decode(bytes).map_err(|e| fail(e.pos, e.path, e.message))?;
        let doc = yaml::load_with(text, &secret_root)
            .map_err(|e| fail(e.pos, e.path, e.message))?
            .ok_or_else(|| {
                fail(
                    None,
                    String::new(),
                    "empty: an env needs at least the maps `appliance` and `ecs`".into(),
                )
            })?;
        let mut c = Checker {
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
            known: None,
        };
        let env = c.env(doc, text);
        if c.errors.is_empty() {
            if let Some(mut env) = env {
                env.warnings = c.warnings;
                return Ok(env);
            }
        }
        c.errors.sort_by_key(|p| p.pos);
        Err(EnvErrors {
            origin: origin.to_string(),
            problems: c.errors,
        })
    }

    /// Reads `path` (at most [`yaml::MAX_BYTES`]) and parses it.
    pub fn load(path: &Path) -> Result<Env, LoadError> {
        let bytes = read_limited(path)?;
        Env::parse(&bytes, &path.display().to_string()).map_err(LoadError::Invalid)
    }

    /// The flattened env for the appliance's units (`export NAME=value`).
    pub fn flatten_for_units(&self) -> String {
        // Validation already refused envs whose appliance trees do not flatten.
        flatten(&self.doc.0, &Trees::appliance(), "export ").unwrap_or_default()
    }

    /// One warning for each key this env sets that has no effect in this
    /// image, `accepted, no effect in this image: KEY` (see [`effects`]).
    pub fn no_effect_warnings(&self) -> Vec<Problem> {
        effects::no_effect_warnings(&self.doc.0)
    }

    /// The `cloud-init` meta-data for this env.
    pub fn hostname(&self) -> &str {
        &self.appliance.domain
    }
}

/// Reading an env file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(EnvErrors),
}

/// Checks a domain as `appliance.domain` is checked (an RFC 1123 host name,
/// not an IP address); the error completes "DOMAIN ...".
pub fn check_domain(domain: &str) -> Result<(), &'static str> {
    values::check_hostname(domain)
}

/// Checks one OpenSSH public key line as `ssh_authorized_keys` entries are
/// checked; the error completes "the key ...".
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    values::check_ssh_key(line)
}

/// Reads a file of at most [`yaml::MAX_BYTES`], refusing larger ones without
/// reading them whole, and anything but a regular file (a FIFO, a device, a
/// directory): it is opened without blocking and its type checked first, so
/// a FIFO with no writer cannot stall the reader.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let io = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let ft = f.metadata().map_err(io)?.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        )));
    }
    let mut bytes = Vec::new();
    f.take(yaml::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > yaml::MAX_BYTES {
        return Err(LoadError::Invalid(EnvErrors {
            origin: path.display().to_string(),
            problems: vec![Problem {
                pos: None,
                path: String::new(),
                message: format!(
                    "file is too large (an env is at most {} MiB)",
                    yaml::MAX_BYTES >> 20
                ),
            }],
        }));
    }
    Ok(bytes)
}

/// Parses a 1024-based size: `512M`, `20G`, `2T` (also `K`, and `MiB` forms).
pub fn parse_size(s: &str) -> Option<u64> {
    parse_size_checked(s).ok()
}

/// Why [`parse_size_checked`] refused a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number with a unit.
    NotASize,
    /// 2^64 bytes or more.
    TooLarge,
}

/// [`parse_size`], saying whether a size is malformed or too large.
pub fn parse_size_checked(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::NotASize);
    }
    let unit = &s[digits..];
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let shift = match unit {
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(SizeError::NotASize),
    };
    let n: u64 = s[..digits].parse().map_err(|_| SizeError::TooLarge)?;
    n.checked_mul(1u64 << shift).ok_or(SizeError::TooLarge)
}

const SIZE_HINT: &str = "use 512M, 20G, 2T";

/// The smallest size accepted for a volume or `root_size`.
pub const MIN_SIZE: u64 = 16 << 20;

#[cfg(test)]
mod tests;
