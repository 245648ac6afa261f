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

/// Known string keys whose values are multi-line text (tabs and newlines
/// allowed); every other known string is one line.
const MULTILINE: &[&str] = &[
    "appliance.ssl.key",
    "appliance.ssl.cert",
    "appliance.ssl.letsencrypt.directory_ca",
    "appliance.dkim.key",
    "appliance.backup.encrypt",
    "appliance.extra.states",
    "ecs.settings",
    "ecs.vault_encrypt",
    "ecs.vault_sign",
];

fn is_multiline(path: &str) -> bool {
    MULTILINE.contains(&path)
        || (path.starts_with("appliance.extra.files[") && path.ends_with("].contents"))
}

/// Walks the document, collecting problems; builds the typed model.
struct Checker<'t> {
    /// The source, to tell how an integer was written.
    text: &'t str,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

/// A map being checked: its entries, position and path, and the keys the
/// model knows (the rest are reported as unknown when `warn_unknown`).
struct MapCtx<'a> {
    node: Option<&'a Node>,
    path: String,
}

impl<'a> MapCtx<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.node.and_then(|n| n.get(key))
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn pos(&self) -> Option<Pos> {
        self.node.map(|n| n.pos)
    }
}

fn is_secret(path: &str) -> bool {
    secret_root(path).is_some()
}

impl Checker<'_> {
    fn error(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The map at `key` of `parent` (absent or null → an empty context).
    fn map<'a>(&mut self, parent: &MapCtx<'a>, key: &str, known: &[&str]) -> MapCtx<'a> {
        let path = parent.child(key);
        let node = match parent.get(key) {
            None => None,
            Some(n) if n.value == Value::Null => None,
            Some(n) => self.as_map(n, &path, known),
        };
        MapCtx { node, path }
    }

    fn as_map<'a>(&mut self, n: &'a Node, path: &str, known: &[&str]) -> Option<&'a Node> {
        match &n.value {
            Value::Map(entries) => {
                for (k, _) in entries {
                    let name = k.key_string();
                    if !known.contains(&name.as_ref()) {
                        self.warn(
                            Some(k.pos),
                            &format!("{path}.{}", yaml::printable(&name)),
                            "unknown key (kept and passed through; check the spelling)",
                        );
                    }
                }
                Some(n)
            }
            _ => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a map, got {}", n.type_name()),
                );
                None
            }
        }
    }

    fn bool(&mut self, parent: &MapCtx, key: &str, default: bool) -> bool {
        let path = parent.child(key);
        match parent.get(key) {
            None => default,
            Some(n) => match &n.value {
                Value::Null => default,
                Value::Bool(b) => *b,
                Value::Str(s) => {
                    self.error(
                        Some(n.pos),
                        &path,
                        format!("{} is not a boolean (use true or false)", quoted(s)),
                    );
                    default
                }
                _ => {
                    self.error(
                        Some(n.pos),
                        &path,
                        format!("must be true or false, got {}", n.type_name()),
                    );
                    default
                }
            },
        }
    }

    /// An optional string. Null counts as absent.
    fn string(&mut self, parent: &MapCtx, key: &str) -> Option<String> {
        let path = parent.child(key);
        let n = parent.get(key)?;
        self.string_node(n, &path)
    }

    fn string_node(&mut self, n: &Node, path: &str) -> Option<String> {
        match &n.value {
            Value::Null => None,
            Value::Str(s) => {
                // Other control characters are refused for every string
                // (see `control_characters`); known keys that are not text
                // are one line.
                // (An ssh key's own check says more about a line break.)
                if !is_multiline(path) && !path.starts_with("ssh_") && s.contains(['\n', '\t']) {
                    self.error(
                        Some(n.pos),
                        path,
                        "contains a line break or tab: it must be one line",
                    );
                }
                Some(s.clone())
            }
            other => {
                let hint = if is_secret(path) {
                    String::new()
                } else {
                    match other {
                        Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => {
                            " (put it in quotes to keep it as text)".to_string()
                        }
                        _ => String::new(),
                    }
                };
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a string, got {}{hint}", n.type_name()),
                );
                None
            }
        }
    }

    fn secret(&mut self, parent: &MapCtx, key: &str) -> Option<Secret<String>> {
        self.string(parent, key).map(Secret::new)
    }

    /// A required string: missing or null is an error.
    fn required(&mut self, parent: &MapCtx, key: &str, what: &str) -> Option<String> {
        let path = parent.child(key);
        match parent.get(key) {
            None => {
                if parent.node.is_some() {
                    self.error(parent.pos(), &path, format!("is required ({what})"));
                }
                None
            }
            Some(n) if n.value == Value::Null => {
                self.error(
                    Some(n.pos),
                    &path,
                    format!("is empty; it is required ({what})"),
                );
                None
            }
            Some(n) => self.string_node(n, &path),
        }
    }

    fn string_list(&mut self, parent: &MapCtx, key: &str) -> Vec<String> {
        let path = parent.child(key);
        let Some(n) = parent.get(key) else {
            return Vec::new();
        };
        match &n.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string_node(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                self.error(
                    Some(n.pos),
                    &path,
                    format!("must be a list of strings, got {}", n.type_name()),
                );
                Vec::new()
            }
        }
    }

    fn size(&mut self, n: &Node, path: &str, allow_rest: bool) -> Option<VolumePlan> {
        let text = match &n.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("must be a size ({SIZE_HINT}), got {}", n.type_name()),
                );
                return None;
            }
        };
        if allow_rest && text == "rest" {
            return Some(VolumePlan::Rest);
        }
        match parse_size_checked(&text) {
            Ok(0) => {
                self.error(Some(n.pos), path, "must be larger than zero");
                None
            }
            Ok(bytes) if bytes < MIN_SIZE => {
                self.error(
                    Some(n.pos),
                    path,
                    format!(
                        "{} is below the smallest size, {}M",
                        quoted(&text),
                        MIN_SIZE >> 20
                    ),
                );
                None
            }
            Ok(bytes) => Some(VolumePlan::Size(bytes)),
            Err(SizeError::TooLarge) => {
                self.error(
                    Some(n.pos),
                    path,
                    format!("{} is too large (2^64 bytes or more)", quoted(&text)),
                );
                None
            }
            Err(SizeError::NotASize) => {
                let hint = if allow_rest {
                    format!("{SIZE_HINT}, or rest")
                } else {
                    SIZE_HINT.to_string()
                };
                self.error(
                    Some(n.pos),
                    path,
                    format!("{} is not a size ({hint})", quoted(&text)),
                );
                None
            }
        }
    }

    fn env(&mut self, doc: Node, text: &str) -> Option<Env> {
        if !matches!(doc.value, Value::Map(_)) {
            self.error(
                Some(doc.pos),
                "",
                format!(
                    "the top level must be a map with `appliance` and `ecs`, got {}",
                    doc.type_name()
                ),
            );
            return None;
        }
        if !text.starts_with("#cloud-config") {
            self.warn(
                Some(Pos { line: 1, col: 1 }),
                "",
                "the first line is not `#cloud-config`: cloud-init will not read this env as \
                 cloud-config user-data",
            );
        }
        let top = MapCtx {
            node: Some(&doc),
            path: String::new(),
        };
        let ssh_authorized_keys = self.ssh_keys(&top, "ssh_authorized_keys");
        let ssh_deprecated_keys = self.ssh_keys(&top, "ssh_deprecated_keys");
        let disable_root = top
            .get("disable_root")
            .map(|_| self.bool(&top, "disable_root", false));
        for (key, what) in [
            ("appliance", "the host side"),
            ("ecs", "the application side"),
        ] {
            match top.get(key) {
                None => self.error(Some(doc.pos), key, format!("is required (a map: {what})")),
                Some(n) if n.value == Value::Null => self.error(
                    Some(n.pos),
                    key,
                    format!("is empty; it is required (a map: {what})"),
                ),
                Some(_) => {}
            }
        }
        let appliance = self.appliance(&top);
        let ecs = self.ecs(&top);
        for tree in ["ecs", "appliance"] {
            if let Some(t) = doc.get(tree) {
                self.control_characters(t, tree);
            }
        }
        // The units source the flattened `ecs` and `appliance` trees.
        if let Err(errs) = flatten(&doc, &Trees::appliance(), "") {
            for e in errs {
                self.error(Some(e.pos), &e.path, e.message);
            }
        }
        Some(Env {
            ssh_authorized_keys,
            ssh_deprecated_keys,
            disable_root,
            appliance: appliance?,
            ecs: ecs?,
            warnings: Vec::new(),
            doc: Document(doc),
        })
    }

    fn appliance(&mut self, top: &MapCtx) -> Option<Appliance> {
        let a = self.map(
            top,
            "appliance",
            &[
                "domain",
                "standby",
                "allowed_hosts",
                "ssl",
                "sentry",
                "metric",
                "git",
                "extra",
                "update",
                "dkim",
                "backup",
                "storage",
            ],
        );
        let domain = self.required(
            &a,
            "domain",
            "the host name, web server name and mail domain",
        );
        if let (Some(d), Some(n)) = (&domain, a.get("domain")) {
            if let Err(why) = check_hostname(d) {
                self.error(
                    Some(n.pos),
                    "appliance.domain",
                    format!("{} {why}", quoted(d)),
                );
            }
        }
        let standby = self.bool(&a, "standby", false);
        let allowed_hosts = self.string(&a, "allowed_hosts");

        let ssl_map = self.map(
            &a,
            "ssl",
            &["letsencrypt", "client_certs_mandatory", "key", "cert"],
        );
        let le = self.map(
            &ssl_map,
            "letsencrypt",
            &["enabled", "directory", "directory_ca"],
        );
        let directory = self.string(&le, "directory");
        if let (Some(d), Some(n)) = (&directory, le.get("directory")) {
            if let Err(why) = check_acme_directory(d) {
                self.error(
                    Some(n.pos),
                    "appliance.ssl.letsencrypt.directory",
                    format!("{} {why}", quoted(d)),
                );
            }
        }
        let directory_ca = self.string(&le, "directory_ca");
        if let (Some(ca), Some(n)) = (&directory_ca, le.get("directory_ca")) {
            if !ca.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
                self.error(
                    Some(n.pos),
                    "appliance.ssl.letsencrypt.directory_ca",
                    "is not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
            }
        }
        let ssl = Ssl {
            letsencrypt_enabled: self.bool(&le, "enabled", true),
            letsencrypt_directory: directory.unwrap_or_else(|| LETSENCRYPT_DIRECTORY.into()),
            letsencrypt_directory_ca: directory_ca,
            client_certs_mandatory: self.bool(&ssl_map, "client_certs_mandatory", false),
            key: self.secret(&ssl_map, "key"),
            cert: self.string(&ssl_map, "cert"),
        };
        if ssl.key.is_some() != ssl.cert.is_some() {
            self.error(
                ssl_map.pos(),
                "appliance.ssl",
                "`key` and `cert` go together: give both or neither",
            );
        }
        let sentry = self.map(&a, "sentry", &["dsn"]);
        let sentry_dsn = self.secret(&sentry, "dsn");

        let m = self.map(&a, "metric", &["exporter", "server", "gui", "pghero"]);
        let metric = Metric {
            exporter: self.bool(&m, "exporter", false),
            server: self.bool(&m, "server", false),
            gui: self.bool(&m, "gui", false),
            pghero: self.bool(&m, "pghero", false),
        };
        let git = self.git(&a, APPLIANCE_GIT_SOURCE);
        let extra = self.extra(&a);

        let u = self.map(&a, "update", &["automatic", "oncalendar"]);
        let oncalendar = self.string(&u, "oncalendar");
        if let (Some(c), Some(n)) = (&oncalendar, u.get("oncalendar")) {
            if let Err(why) = crate::calendar::check(c) {
                self.error(
                    Some(n.pos),
                    "appliance.update.oncalendar",
                    format!("{} is not a systemd calendar expression ({why})", quoted(c)),
                );
            }
        }
        let update = Update {
            automatic: self.bool(&u, "automatic", true),
            oncalendar: oncalendar.unwrap_or_else(|| DEFAULT_ONCALENDAR.to_string()),
        };
        let dkim = self.map(&a, "dkim", &["key"]);
        let dkim_key = self.secret(&dkim, "key");

        let b = self.map(&a, "backup", &["url", "options", "mount", "encrypt"]);
        let mount_map = self.map(&b, "mount", &["type", "source", "target", "options"]);
        let mount = mount_map.node.is_some().then(|| BackupMount {
            fstype: self.string(&mount_map, "type"),
            source: self.string(&mount_map, "source"),
            target: self.string(&mount_map, "target"),
            options: self.secret(&mount_map, "options"),
        });
        let backup = Backup {
            url: self.secret(&b, "url"),
            options: self.string(&b, "options"),
            mount,
            encrypt: self.secret(&b, "encrypt"),
        };
        let storage = self.storage(&a);
        a.node?;
        Some(Appliance {
            domain: domain?,
            standby,
            allowed_hosts,
            ssl,
            sentry_dsn,
            metric,
            git,
            extra,
            update,
            dkim_key,
            backup,
            storage,
        })
    }

    fn git(&mut self, parent: &MapCtx, default_source: &str) -> Git {
        let g = self.map(parent, "git", &["branch", "source", "commitid"]);
        let branch = self.git_arg(&g, "branch");
        let source = self.git_arg(&g, "source");
        let commitid = self.git_arg(&g, "commitid");
        Git {
            branch: branch.unwrap_or_else(|| "master".into()),
            source: source.unwrap_or_else(|| default_source.into()),
            commitid: commitid.filter(|s| !s.is_empty()),
        }
    }

    /// A string that becomes an argument of `git`: never an option.
    fn git_arg(&mut self, parent: &MapCtx, key: &str) -> Option<String> {
        let v = self.string(parent, key)?;
        if v.starts_with('-') {
            self.error(
                parent.get(key).map(|n| n.pos),
                &parent.child(key),
                format!(
                    "{} starts with `-`: git would take it as an option",
                    quoted(&v)
                ),
            );
        }
        Some(v)
    }

    /// `ssh_authorized_keys` and `ssh_deprecated_keys`: lists of OpenSSH
    /// public key lines.
    fn ssh_keys(&mut self, top: &MapCtx, key: &str) -> Vec<String> {
        let keys = self.string_list(top, key);
        if let Some(Value::Seq(items)) = top.get(key).map(|n| &n.value) {
            for (i, (k, item)) in keys.iter().zip(items).enumerate() {
                if let Err(why) = check_ssh_key(k) {
                    self.error(Some(item.pos), &format!("{key}[{i}]"), why);
                }
            }
        }
        keys
    }

    /// Refuses control characters (tab and newline aside) in the strings
    /// and keys of a tree that is flattened into `/run/active-env.env`.
    fn control_characters(&mut self, n: &Node, path: &str) {
        match &n.value {
            Value::Str(s) => {
                if let Some((i, c)) = s
                    .chars()
                    .enumerate()
                    .find(|(_, c)| c.is_control() && *c != '\n' && *c != '\t')
                {
                    let message = if is_secret(path) {
                        "contains a control character (not shown: it is secret); only tab and \
                         newline may be in text"
                            .to_string()
                    } else {
                        format!(
                            "contains the control character U+{:04X} at character {}; only tab \
                             and newline may be in text",
                            c as u32,
                            i + 1
                        )
                    };
                    let shown = secret_root(path).unwrap_or(path).to_string();
                    self.error(Some(n.pos), &shown, message);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.control_characters(item, &format!("{path}[{i}]"));
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    // A key's control characters make a name the shell
                    // cannot source: the flattener reports those.
                    let key = k.key_string();
                    self.control_characters(v, &format!("{path}.{}", yaml::printable(&key)));
                }
            }
            _ => {}
        }
    }

    fn extra(&mut self, a: &MapCtx) -> Extra {
        let e = self.map(a, "extra", &["files", "packages", "states"]);
        let mut files = Vec::new();
        if let Some(n) = e.get("files") {
            match &n.value {
                Value::Null => {}
                Value::Seq(items) => {
                    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("appliance.extra.files[{i}]");
                        if let Some(f) = self.extra_file(item, &path) {
                            if let Some((j, line)) = seen.get(&f.path) {
                                let pos = item.get("path").map(|p| p.pos);
                                self.error(
                                    pos,
                                    &format!("{path}.path"),
                                    format!(
                                        "{} is also the path of files[{j}] (line {line})",
                                        quoted(&f.path)
                                    ),
                                );
                            } else {
                                let line = item.get("path").map_or(0, |p| p.pos.line);
                                seen.insert(f.path.clone(), (i, line));
                            }
                            files.push(f);
                        }
                    }
                }
                _ => self.error(
                    Some(n.pos),
                    "appliance.extra.files",
                    format!(
                        "must be a list of {{path, contents, owner, permissions}}, got {}",
                        n.type_name()
                    ),
                ),
            }
        }
        let packages = self.string_list(&e, "packages");
        if let Some(Value::Seq(items)) = e.get("packages").map(|n| &n.value) {
            for (i, (p, item)) in packages.iter().zip(items).enumerate() {
                if !is_package_name(p) {
                    self.error(
                        Some(item.pos),
                        &format!("appliance.extra.packages[{i}]"),
                        format!("{} is not a Debian/Ubuntu package name", quoted(p)),
                    );
                }
            }
        }
        Extra {
            files,
            packages,
            states: self.string(&e, "states"),
        }
    }

    fn extra_file(&mut self, n: &Node, path: &str) -> Option<ExtraFile> {
        let node = self.as_map(n, path, &["path", "contents", "owner", "permissions"])?;
        let f = MapCtx {
            node: Some(node),
            path: path.to_string(),
        };
        let file_path = self.required(&f, "path", "the absolute path of the file");
        if let (Some(p), Some(pn)) = (&file_path, f.get("path")) {
            if let Err(why) = check_file_path(p) {
                self.error(
                    Some(pn.pos),
                    &f.child("path"),
                    format!("{} {why}", quoted(p)),
                );
            }
        }
        let contents = self.string(&f, "contents").unwrap_or_default();
        let owner = self.string(&f, "owner");
        if let (Some(o), Some(on)) = (&owner, f.get("owner")) {
            if let Err(why) = check_owner(o) {
                self.error(
                    Some(on.pos),
                    &f.child("owner"),
                    format!("{} {why}", quoted(o)),
                );
            }
        }
        let permissions = match f.get("permissions") {
            None => None,
            Some(pn) => {
                let written = source_token(self.text, pn.pos);
                match check_mode(&pn.value, written) {
                    Ok(mode) => mode,
                    Err(why) => {
                        self.error(
                            Some(pn.pos),
                            &f.child("permissions"),
                            format!("is not a file mode: {why}"),
                        );
                        None
                    }
                }
            }
        };
        Some(ExtraFile {
            path: file_path?,
            contents: Secret::new(contents),
            owner,
            permissions,
        })
    }

    fn storage(&mut self, a: &MapCtx) -> Storage {
        let s = self.map(
            a,
            "storage",
            &["ignore", "grow_root", "root_size", "data", "volatile"],
        );
        let ig = self.map(&s, "ignore", &["data", "volatile"]);
        let mut st = Storage {
            ignore_data: self.bool(&ig, "data", false),
            ignore_volatile: self.bool(&ig, "volatile", false),
            grow_root: self.bool(&s, "grow_root", true),
            ..Storage::default()
        };
        if let Some(n) = s.get("root_size").filter(|n| n.value != Value::Null) {
            if let Some(VolumePlan::Size(b)) = self.size(n, "appliance.storage.root_size", false) {
                st.root_size = Some(b);
            }
        }
        for (name, ignored) in [("data", st.ignore_data), ("volatile", st.ignore_volatile)] {
            let v = self.map(&s, name, &["size", "device"]);
            let Some(vn) = v.node else { continue };
            let plan = match (v.get("size"), v.get("device")) {
                (Some(_), Some(_)) | (None, None) => {
                    self.error(
                        Some(vn.pos),
                        &v.path,
                        "needs exactly one of `size` (e.g. 50G or rest) or `device` (e.g. /dev/vdb)",
                    );
                    None
                }
                (Some(size), None) => self.size(size, &v.child("size"), true),
                (None, Some(dev)) => {
                    let p = self.string_node(dev, &v.child("device"));
                    match p {
                        Some(p) => match check_device(&p) {
                            Ok(()) => Some(VolumePlan::Device(PathBuf::from(p))),
                            Err(why) => {
                                self.error(
                                    Some(dev.pos),
                                    &v.child("device"),
                                    format!("{} {why}", quoted(&p)),
                                );
                                None
                            }
                        },
                        None => None,
                    }
                }
            };
            if ignored && plan.is_some() {
                self.warn(
                    Some(vn.pos),
                    &v.path,
                    format!("is not used because `storage.ignore.{name}` is true"),
                );
            }
            match name {
                "data" => st.data = plan,
                _ => st.volatile = plan,
            }
        }
        if st.data == Some(VolumePlan::Rest) && st.volatile == Some(VolumePlan::Rest) {
            self.error(
                s.pos(),
                "appliance.storage",
                "only one of `data` and `volatile` can take the `rest` of the disk",
            );
        }
        if let (Some(VolumePlan::Device(a)), Some(VolumePlan::Device(b))) = (&st.data, &st.volatile)
        {
            if a == b {
                self.error(
                    s.pos(),
                    "appliance.storage",
                    format!("`data` and `volatile` cannot both use {}", a.display()),
                );
            }
        }
        st
    }

    fn ecs(&mut self, top: &MapCtx) -> Option<Ecs> {
        let e = self.map(
            top,
            "ecs",
            &[
                "settings",
                "vault_encrypt",
                "vault_sign",
                "git",
                "docs",
                "database",
                "userswitcher",
            ],
        );
        let settings = self.required(&e, "settings", "the application's Python settings");
        let vault_encrypt = self.required(&e, "vault_encrypt", "an armored GPG private key");
        let vault_sign = self.required(&e, "vault_sign", "an armored GPG private key");
        let git = self.git(&e, ECS_GIT_SOURCE);
        let docs = self.map(&e, "docs", &["git"]);
        let docs_git = self.map(&docs, "git", &["source", "branch"]);
        let docs_git_source = self.git_arg(&docs_git, "source");
        let docs_git_branch = self.git_arg(&docs_git, "branch");
        let database = self.string(&e, "database").unwrap_or_else(|| "ecs".into());
        if let Some(n) = e.get("database") {
            if !is_identifier(&database) {
                self.error(
                    Some(n.pos),
                    "ecs.database",
                    format!(
                        "{} is not a database name (letters, digits and `_`, at most 63)",
                        quoted(&database)
                    ),
                );
            }
        }
        let us = self.map(&e, "userswitcher", &["enabled"]);
        let userswitcher_enabled = self.bool(&us, "enabled", false);
        e.node?;
        Some(Ecs {
            settings: Secret::new(settings?),
            vault_encrypt: Secret::new(vault_encrypt?),
            vault_sign: Secret::new(vault_sign?),
            git,
            docs_git_source,
            docs_git_branch,
            database,
            userswitcher_enabled,
        })
    }
}

/// A value quoted for a message (only ever used for non-secret keys).
fn quoted(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    let ell = if s.chars().count() > 60 { "…" } else { "" };
    format!("{:?}", format!("{short}{ell}"))
}

/// A DNS host name (RFC 1123): labels of letters, digits and inner hyphens.
fn check_hostname(d: &str) -> Result<(), &'static str> {
    if d.is_empty() || d.len() > 253 {
        return Err("is not a host name (1 to 253 characters)");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address: the domain must be a host name (e.g. ecs.example.org)");
    }
    let last = d.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a host name (its last label is all digits, like an IP address)");
    }
    for label in d.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("is not a host name (empty or overlong label)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("is not a host name (use letters, digits, `-` and `.`)");
        }
    }
    Ok(())
}

fn is_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// `user:group` or `user`; names, or numeric ids that fit `uid_t`/`gid_t`
/// (not 4294967295, which is `(uid_t)-1`, "no change", to chown).
fn check_owner(o: &str) -> Result<(), String> {
    let part = |s: &str, what: &str| -> Result<(), String> {
        if s.is_empty()
            || s.len() > 32
            || s.starts_with('-')
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(
                "is not `user:group` or `user` (names of letters, digits, `_`, `-`, `.`)"
                    .to_string(),
            );
        }
        if s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().map_or(true, |n| n == u32::MAX)
        {
            return Err(format!(
                "has the {what} id {s}, which does not fit a {what} id (at most {})",
                u32::MAX - 1
            ));
        }
        Ok(())
    };
    match o.split_once(':') {
        Some((u, g)) => part(u, "user").and_then(|_| part(g, "group")),
        None => part(o, "user"),
    }
}

/// The agent's own files, and the kernel's: an extra file may not be there.
const RESERVED_PATHS: &[(&str, &str)] = &[
    ("/proc", "is under /proc: the agent writes no kernel files"),
    ("/sys", "is under /sys: the agent writes no kernel files"),
    ("/dev", "is under /dev: the agent writes no device files"),
    (
        "/run/active-env.",
        "is the active env the agent publishes (/run/active-env.*)",
    ),
    (
        "/run/appliance-failed",
        "is the agent's failure report (/run/appliance-failed)",
    ),
    (
        "/run/ecs-firstboot.",
        "is the agent's hand-off file (/run/ecs-firstboot.*)",
    ),
];

/// Linux's PATH_MAX, counting the terminating NUL.
const PATH_MAX: usize = 4096;
/// Linux's NAME_MAX.
const NAME_MAX: usize = 255;

/// An `extra.files` path: absolute, normalised, of a size Linux takes, and
/// not a kernel, device or agent file.
fn check_file_path(p: &str) -> Result<(), String> {
    if p.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if !p.starts_with('/') {
        return Err("must be an absolute file path (starting with /)".into());
    }
    if p.len() >= PATH_MAX {
        return Err(format!(
            "is longer than PATH_MAX ({} bytes at most)",
            PATH_MAX - 1
        ));
    }
    if p.ends_with('/') {
        return Err("ends with `/`: it must name a file".into());
    }
    for c in p[1..].split('/') {
        match c {
            "" => return Err("is not normalised (it has `//`)".into()),
            "." => return Err("is not normalised (it has a `.` component)".into()),
            ".." => return Err("is not normalised (it has a `..` component)".into()),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "has a component longer than NAME_MAX ({NAME_MAX} bytes)"
                ))
            }
            _ => {}
        }
    }
    // /var/run is a symlink to /run.
    let p = match p.strip_prefix("/var/run") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("/run{rest}"),
        _ => p.to_string(),
    };
    for (reserved, why) in RESERVED_PATHS {
        let under = match reserved.strip_suffix('.') {
            // A prefix of file names: /run/active-env.*
            Some(_) => p.starts_with(reserved),
            None => {
                p == *reserved
                    || p.strip_prefix(reserved)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        if under {
            return Err((*why).to_string());
        }
    }
    Ok(())
}

/// The source text of the scalar at `pos` (after an anchor or a tag), to
/// tell `0644` from `644`, which YAML 1.1 resolves to different numbers.
fn source_token(text: &str, pos: Pos) -> Option<&str> {
    let line = text.split('\n').nth(pos.line.checked_sub(1)?)?;
    let start = line.char_indices().nth(pos.col.checked_sub(1)?)?.0;
    let mut rest = &line[start..];
    while rest.starts_with(['&', '!']) {
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        rest = rest[end..].trim_start_matches([' ', '\t']);
    }
    let end = rest
        .find(|c: char| c.is_whitespace() || ",]}#".contains(c))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `permissions`: an octal mode of at most 07777, neither setuid nor
/// setgid; `written` is how an integer was written.
fn check_mode(v: &Value, written: Option<&str>) -> Result<Option<u32>, String> {
    let mode = match v {
        Value::Null => return Ok(None),
        Value::Int(i) => {
            let digits = written
                .unwrap_or("")
                .trim_matches(['"', '\''])
                .trim_start_matches(['+', '-'])
                .replace('_', "");
            let radix_literal = digits == "0"
                || digits.starts_with("0x")
                || digits.starts_with("0b")
                || (digits.starts_with('0') && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)));
            if !radix_literal {
                let decimal = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                return Err(
                    if decimal && digits.len() <= 4 && digits.bytes().all(|b| b < b'8') {
                        format!(
                            "{digits} unquoted is the decimal number {digits} (mode 0{:o}); \
                             write 0{digits} or '{digits}'",
                            i
                        )
                    } else if decimal {
                        format!(
                            "{digits} unquoted is a decimal number; write the mode in octal, \
                             e.g. 0644 or '0644'"
                        )
                    } else {
                        "it is not written in octal; write it as 0644 or '0644'".to_string()
                    },
                );
            }
            u32::try_from(*i).map_err(|_| "write it in octal, e.g. 0644 or \"0600\"")?
        }
        Value::Str(s) if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            u32::from_str_radix(s, 8).map_err(|_| "it is larger than 07777")?
        }
        _ => return Err("write it in octal, e.g. 0644 or \"0600\"".into()),
    };
    if mode > 0o7777 {
        return Err(format!(
            "0{mode:o} is larger than 07777 (a mode has permission, setuid, setgid and sticky \
             bits only)"
        ));
    }
    if mode & 0o6000 != 0 {
        let which = match mode & 0o6000 {
            0o4000 => "setuid (04000)",
            0o2000 => "setgid (02000)",
            _ => "setuid and setgid (06000)",
        };
        return Err(format!(
            "0{mode:o} sets {which}: an extra file may not be setuid or setgid"
        ));
    }
    Ok(Some(mode))
}

/// Key types `authorized_keys` takes as plain public keys.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One OpenSSH public key line: `type base64 [comment]`, a known type, the
/// base64 decoding to a key blob that starts with the same type; no options
/// and no line break (which would add a line to `authorized_keys`).
fn check_ssh_key(k: &str) -> Result<(), String> {
    if k.contains(['\n', '\r']) {
        return Err("contains a line break: an entry is one public key line".into());
    }
    if k.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    let hint = "is not an OpenSSH public key line (`type base64 [comment]`, e.g. ssh-ed25519 AAAA... user@host)";
    let k = k.trim_matches([' ', '\t']);
    let Some((ty, rest)) = k.split_once([' ', '\t']) else {
        return Err(hint.into());
    };
    if !SSH_KEY_TYPES.contains(&ty) {
        if ty.contains(['=', ',', '"']) || SSH_KEY_TYPES.iter().any(|t| rest.contains(t)) {
            return Err(format!(
                "{hint}: it starts with options; give the key alone"
            ));
        }
        return Err(format!(
            "`{}` is not a known key type ({})",
            yaml::printable(&ty.chars().take(40).collect::<String>()),
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let b64 = rest.split([' ', '\t']).next().unwrap_or("");
    let blob = base64_decode(b64).ok_or_else(|| format!("{hint}: the key is not base64"))?;
    let embedded = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4usize.checked_add(n)?));
    match embedded {
        Some(t) if t == ty.as_bytes() => Ok(()),
        Some(t) if t.len() <= 64 && t.iter().all(|b| b.is_ascii_graphic()) => Err(format!(
            "says `{ty}` but the key is a `{}` key",
            String::from_utf8_lossy(t)
        )),
        _ => Err(format!("{hint}: the base64 is not a `{ty}` key")),
    }
}

/// Standard base64, padding optional; `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 || body.is_empty() {
        return None;
    }
    if s.len() != body.len() && s.len() & 3 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A `device:` value: a disk's path under /dev, as written (no spaces).
fn check_device(p: &str) -> Result<(), String> {
    let hint = "(e.g. /dev/vdb, /dev/nvme1n1 or /dev/disk/by-id/...)";
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "has spaces or control characters: it must be a disk's path {hint}"
        ));
    }
    let Some(rel) = p.strip_prefix("/dev/").filter(|r| !r.is_empty()) else {
        return Err(format!("is not a device path {hint}"));
    };
    if rel.ends_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("is not a normalised device path {hint}"));
    }
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let letters = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase());
    let parts: Vec<&str> = rel.split('/').collect();
    let disk = match parts.as_slice() {
        [name] => {
            ["sd", "vd", "xvd", "hd"]
                .iter()
                .any(|pre| name.strip_prefix(pre).is_some_and(letters))
                || name
                    .strip_prefix("nvme")
                    .and_then(|r| r.split_once('n'))
                    .is_some_and(|(c, n)| num(c) && num(n))
                || ["mmcblk", "md", "dm-", "loop"]
                    .iter()
                    .any(|pre| name.strip_prefix(pre).is_some_and(num))
        }
        ["mapper", name] => !name.is_empty() && *name != "control",
        ["disk", by, _] => by.starts_with("by-"),
        _ => false,
    };
    if disk {
        Ok(())
    } else {
        Err(format!("does not name a disk {hint}"))
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "#cloud-config\nappliance:\n  domain: ecs.example.org\necs:\n  settings: S3CR3T-SETTINGS\n  vault_encrypt: S3CR3T-ENC\n  vault_sign: S3CR3T-SIGN\n";

    fn problems(src: &str) -> Vec<String> {
        Env::parse(src.as_bytes(), "env.yml").unwrap_err().lines()
    }

    #[test]
    fn minimal_env_defaults() {
        let env = Env::parse(MINIMAL.as_bytes(), "env.yml").unwrap();
        assert_eq!(env.appliance.domain, "ecs.example.org");
        assert!(!env.appliance.standby);
        assert!(env.appliance.ssl.letsencrypt_enabled);
        assert_eq!(
            env.appliance.ssl.letsencrypt_directory,
            LETSENCRYPT_DIRECTORY
        );
        assert!(env.appliance.ssl.letsencrypt_directory_ca.is_none());
        assert!(env.appliance.update.automatic);
        assert_eq!(env.appliance.update.oncalendar, DEFAULT_ONCALENDAR);
        assert_eq!(env.appliance.git.branch, "master");
        assert_eq!(env.appliance.git.source, APPLIANCE_GIT_SOURCE);
        assert_eq!(env.ecs.git.source, ECS_GIT_SOURCE);
        assert_eq!(env.ecs.database, "ecs");
        assert_eq!(env.appliance.storage, Storage::default());
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  dkim: {key: S3CR3T-DKIM}\n  backup: {url: 'ssh://u:S3CR3T-PW@h/x'}\n  extra: {files: [{path: /x, contents: S3CR3T-FILE}]}\n",
        );
        let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
        let dbg = format!("{env:?}");
        assert!(!dbg.contains("S3CR3T"), "{dbg}");
        assert!(dbg.contains("ecs.example.org"));
        assert_eq!(
            env.appliance.dkim_key.as_ref().unwrap().expose(),
            "S3CR3T-DKIM"
        );
    }

    #[test]
    fn every_problem_is_reported_with_position() {
        let src = "#cloud-config\nappliance:\n  domain: ecs.example.org\n  standby: maybe\n  storage:\n    data: {size: 12Q}\n    root_size: lots\necs:\n  settings: x\n  vault_encrypt: x\n";
        assert_eq!(
            problems(src),
            vec![
                "env.yml:4:12: appliance.standby: \"maybe\" is not a boolean (use true or false)",
                "env.yml:6:18: appliance.storage.data.size: \"12Q\" is not a size (use 512M, 20G, 2T, or rest)",
                "env.yml:7:16: appliance.storage.root_size: \"lots\" is not a size (use 512M, 20G, 2T)",
                "env.yml:9:3: ecs.vault_sign: is required (an armored GPG private key)",
            ]
        );
    }

    #[test]
    fn missing_required_keys() {
        assert_eq!(
            problems("#cloud-config\nfoo: 1\n"),
            vec![
                "env.yml:2:1: appliance: is required (a map: the host side)",
                "env.yml:2:1: ecs: is required (a map: the application side)",
            ]
        );
        let p = problems("appliance: {}\necs: {vault_encrypt: a, vault_sign: b}\n");
        assert!(
            p.iter()
                .any(|l| l.contains("appliance.domain: is required")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|l| l.contains("ecs.settings: is required")),
            "{p:?}"
        );
    }

    #[test]
    fn secrets_never_in_errors() {
        let src = "appliance:\n  domain: d\n  dkim: {key: [S3CR3T]}\n  ssl: {key: S3CR3T}\necs:\n  settings: 12345\n  vault_encrypt: yes\n  vault_sign: b\n";
        let all = problems(src).join("\n");
        assert!(!all.contains("S3CR3T") && !all.contains("12345"), "{all}");
        assert!(
            all.contains("ecs.settings: must be a string, got an integer"),
            "{all}"
        );
        assert!(
            all.contains("appliance.ssl: `key` and `cert` go together"),
            "{all}"
        );
    }

    #[test]
    fn acme_directory_and_its_ca() {
        let with = |le: &str| {
            MINIMAL.replace(
                "  domain: ecs.example.org\n",
                &format!("  domain: ecs.example.org\n  ssl:\n    letsencrypt: {le}\n"),
            )
        };
        let env = Env::parse(
            with("{directory: 'https://10.0.2.100:14000/dir', directory_ca: \"-----BEGIN CERTIFICATE-----\\nx\\n-----END CERTIFICATE-----\\n\"}").as_bytes(),
            "env.yml",
        )
        .unwrap();
        assert_eq!(
            env.appliance.ssl.letsencrypt_directory,
            "https://10.0.2.100:14000/dir"
        );
        assert!(env.appliance.ssl.letsencrypt_directory_ca.is_some());
        for (bad, why) in [
            ("http://acme.example/dir", "is not an https:// URL"),
            ("https:///dir", "names no host"),
            ("https://a.example/$(reboot)", "has characters"),
        ] {
            let p = problems(&with(&format!("{{directory: '{bad}'}}")));
            assert!(
                p.iter()
                    .any(|l| l.contains("appliance.ssl.letsencrypt.directory:") && l.contains(why)),
                "{bad}: {p:?}"
            );
        }
        let p = problems(&with("{directory_ca: not a certificate}"));
        assert!(
            p.iter()
                .any(|l| l
                    .contains("appliance.ssl.letsencrypt.directory_ca: is not a PEM certificate")),
            "{p:?}"
        );
    }

    #[test]
    fn empty_required_maps() {
        let p = problems("appliance:\necs:\n");
        assert_eq!(
            p,
            vec![
                "env.yml:1:10: appliance: is empty; it is required (a map: the host side)",
                "env.yml:2:4: ecs: is empty; it is required (a map: the application side)",
            ]
        );
    }

    #[test]
    fn top_level_must_be_a_map() {
        assert_eq!(
            problems("- a\n- b\n"),
            vec!["env.yml:1:1: the top level must be a map with `appliance` and `ecs`, got a list"]
        );
    }

    #[test]
    fn empty_and_binary_files() {
        assert_eq!(
            problems(""),
            vec!["env.yml:empty: an env needs at least the maps `appliance` and `ecs`"]
        );
        let e = Env::parse(b"\xff\xfe", "env.yml").unwrap_err().to_string();
        assert!(e.starts_with("env.yml:not UTF-8 text"), "{e}");
    }

    #[test]
    fn storage_plans() {
        let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  storage:\n    root_size: 20G\n    data: {device: /dev/vdb}\n    volatile: {size: rest}\n",
        );
        let st = Env::parse(src.as_bytes(), "env.yml")
            .unwrap()
            .appliance
            .storage;
        assert_eq!(st.root_size, Some(20 << 30));
        assert_eq!(st.data, Some(VolumePlan::Device("/dev/vdb".into())));
        assert_eq!(st.volatile, Some(VolumePlan::Rest));
        let bad = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  storage:\n    data: {size: rest, device: /dev/vdb}\n    volatile: {device: vdc}\n",
        );
        let p = problems(&bad).join("\n");
        assert!(
            p.contains("appliance.storage.data: needs exactly one of"),
            "{p}"
        );
        assert!(p.contains("\"vdc\" is not a device path"), "{p}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("1024"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn extra_files_modes_and_owner() {
        let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  extra:\n    files:\n      - {path: /etc/motd, contents: hi, owner: 'root:root', permissions: 0644}\n      - {path: /x, permissions: \"0600\"}\n",
        );
        let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
        let f = &env.appliance.extra.files;
        assert_eq!(f[0].permissions, Some(0o644));
        assert_eq!(f[1].permissions, Some(0o600));
        assert_eq!(f[0].owner.as_deref(), Some("root:root"));
        let bad = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  extra:\n    files:\n      - {path: etc/motd, owner: 'a b', permissions: 99999}\n    packages: [Bad_Name]\n",
        );
        let p = problems(&bad).join("\n");
        assert!(
            p.contains("files[0].path: \"etc/motd\" must be an absolute"),
            "{p}"
        );
        assert!(p.contains("files[0].owner"), "{p}");
        assert!(
            p.contains("files[0].permissions: is not a file mode"),
            "{p}"
        );
        assert!(
            p.contains("packages[0]: \"Bad_Name\" is not a Debian/Ubuntu package name"),
            "{p}"
        );
    }

    #[test]
    fn unknown_keys_kept_and_warned() {
        let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  domian: typo\n",
        ) + "runcmd: [echo hi]\n";
        let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
        assert_eq!(env.warnings.len(), 1);
        assert_eq!(env.warnings[0].path, "appliance.domian");
        assert!(env.doc.0.get("runcmd").is_some());
        assert!(env.doc.0.get("appliance").unwrap().get("domian").is_some());
    }

    #[test]
    fn unsourceable_keys_refused() {
        let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  x-y: 1\n",
        );
        let p = problems(&src).join("\n");
        assert!(
            p.contains("appliance.x-y: makes the variable name `APPLIANCE_X-Y`"),
            "{p}"
        );
    }

    #[test]
    fn bad_domain() {
        let src = MINIMAL.replace("ecs.example.org", "bad_domain!");
        let p = problems(&src).join("\n");
        assert!(
            p.contains("appliance.domain: \"bad_domain!\" is not a host name"),
            "{p}"
        );
    }
}
