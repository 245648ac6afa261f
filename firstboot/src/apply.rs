//! Step 4, apply: what the env says about the host, written so that a second
//! run changes nothing.
//!
//! In order ([`apply`]):
//!
//! 1. [`hostname`]: `/etc/hostname` and the `127.0.1.1` line of `/etc/hosts`
//!    from `appliance.domain`, and the running kernel's host name
//!    (sethostname(2)) when [`Target::set_kernel_hostname`].
//! 2. [`directories`]: the appliance's directories on `/data` and `/volatile`
//!    ([`DIRECTORIES`], the one list of them). The caller runs this after
//!    the volumes step, so they land on the mounted volumes.
//! 3. [`ssh_keys`]: `ssh_authorized_keys` for `root` and `app` (`~/.ssh` 0700,
//!    `authorized_keys` 0600, owned by the user). Keys already there are kept,
//!    except those in `ssh_deprecated_keys`, which are removed.
//! 4. [`extra_files`]: `appliance.extra.files` with their owner and mode
//!    (default `root:root`, 0644); missing parent directories are created
//!    0755 `root:root`.
//! 5. [`metric_flags`]: `/app/etc/flags/metric.NAME` present exactly for the
//!    `appliance.metric.*` values that are true.
//!
//! Each step returns what it changed as short descriptions (paths and counts,
//! never contents), so the summary can say `apply=3 changes`; an empty list
//! means nothing was written. Files are written atomically
//! ([`seeds::atomic`]) with their final mode and owner before they are
//! renamed into place. Users and groups are resolved from the target's own
//! `/etc/passwd` and `/etc/group`, so tests run on a temporary root.
//!
//! Existing files are opened without following symbolic links: a link
//! planted in a user's home is replaced, never read through or written through.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use seeds::env::{Env, ExtraFile, Metric};

/// The system being configured.
#[derive(Clone, Debug)]
pub struct Target {
    /// `/` at boot; a temporary directory in tests.
    pub root: PathBuf,
    /// Also set the running kernel's host name (only when `root` is `/`).
    pub set_kernel_hostname: bool,
}

impl Target {
    /// `abs` (an absolute path on the target) under the root.
    fn path(&self, abs: &str) -> PathBuf {
        under(&self.root, abs)
    }
}

/// `abs`, an absolute path on the target, under `root`.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The appliance's directories, created `app:app` mode 0775 as the original
/// appliance's storage state made them (`salt/appliance/storage.sls`, where
/// uid 1000 was the ECS container's user: here the `app` user). Owner and
/// mode of existing ones are corrected.
///
/// Not here, because their own services make them with their own owners:
/// `/data/postgresql` (`prepare-postgresql`, owner `postgres`, layer
/// 30-appliance) and `/volatile/docker` (docker's data root, 0710 root).
pub const DIRECTORIES: &[&str] = &[
    "/data/ecs-storage-vault",
    "/data/ecs-pgdump",
    "/volatile/ecs-cache",
    "/volatile/ecs-backup-test",
    "/volatile/redis",
];

/// The owner of [`DIRECTORIES`].
pub const DIRECTORY_OWNER: &str = "app";
/// The mode of [`DIRECTORIES`].
pub const DIRECTORY_MODE: u32 = 0o775;

/// The users that get `ssh_authorized_keys`.
pub const SSH_USERS: &[&str] = &["root", "app"];

/// Where metric flag files live.
pub const FLAGS_DIR: &str = "/app/etc/flags";

/// The kernel's limit on a host name (HOST_NAME_MAX).
const HOST_NAME_MAX: usize = 64;

/// Runs every apply step in order; returns all changes.
pub fn apply(env: &Env, t: &Target) -> Result<Vec<String>> {
    let mut changes = hostname(&env.appliance.domain, t)?;
    changes.extend(directories(t)?);
    changes.extend(ssh_keys(
        &env.ssh_authorized_keys,
        &env.ssh_deprecated_keys,
        t,
    )?);
    changes.extend(extra_files(&env.appliance.extra.files, t)?);
    changes.extend(metric_flags(&env.appliance.metric, t)?);
    Ok(changes)
}

/// The host name for a domain: without a trailing dot; its first label when
/// the whole name is longer than the kernel allows.
pub fn host_name_for(domain: &str) -> &str {
    let d = domain.trim_end_matches('.');
    if d.len() <= HOST_NAME_MAX {
        d
    } else {
        d.split('.').next().unwrap_or(d)
    }
}

/// Writes `/etc/hostname` and sets the kernel's host name if they differ.
pub fn hostname(domain: &str, t: &Target) -> Result<Vec<String>> {
    let name = host_name_for(domain);
    let mut changes = Vec::new();
    let path = t.path("/etc/hostname");
    let current = match fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading /etc/hostname"),
    };
    if current.as_deref().map(str::trim) != Some(name) {
        make_parents(&path)?;
        seeds::atomic::write_atomic(&path, format!("{name}\n").as_bytes(), 0o644)
            .context("writing /etc/hostname")?;
        changes.push(format!("/etc/hostname: {name}"));
    }
    changes.extend(etc_hosts(name, t)?);
    if t.set_kernel_hostname {
        let running = fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the kernel's host name")?;
        if running.trim() != name {
            set_kernel_hostname(name)?;
            changes.push(format!("host name set to {name}"));
        }
    }
    Ok(changes)
}

/// Points Debian's `127.0.1.1` line of `/etc/hosts` at the host name (the
/// name and its first label), adding the line if there is none; other lines
/// are kept as they are.
fn etc_hosts(name: &str, t: &Target) -> Result<Vec<String>> {
    let path = t.path("/etc/hosts");
    let old = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()
        }
        Err(e) => return Err(e).context("reading /etc/hosts"),
    };
    let new = hosts_with(&old, name);
    if new == old && path.exists() {
        return Ok(Vec::new());
    }
    seeds::atomic::write_atomic(&path, new.as_bytes(), 0o644).context("writing /etc/hosts")?;
    Ok(vec!["/etc/hosts".to_string()])
}

/// `hosts` with its `127.0.1.1` line naming `name`.
pub fn hosts_with(hosts: &str, name: &str) -> String {
    let short = name.split('.').next().unwrap_or(name);
    let line = if short == name {
        format!("127.0.1.1\t{name}")
    } else {
        format!("127.0.1.1\t{name} {short}")
    };
    let mut found = false;
    let mut out = String::with_capacity(hosts.len() + line.len() + 1);
    for l in hosts.split_inclusive('\n') {
        if l.split_whitespace().next() == Some("127.0.1.1") {
            if !found {
                out.push_str(&line);
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(l);
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn set_kernel_hostname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which live for
    // the duration of the call; sethostname(2) does not keep them.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting the host name (sethostname)");
    }
    Ok(())
}

/// Creates the [`DIRECTORIES`] that are missing; corrects owner and mode of
/// those present. A symbolic link to a directory (an operator's
/// relocation) is followed.
pub fn directories(t: &Target) -> Result<Vec<String>> {
    let accounts = Accounts::load(&t.root)?;
    let user = accounts
        .user(DIRECTORY_OWNER)
        .context("finding the owner of the appliance's directories")?;
    let mut changes = Vec::new();
    for d in DIRECTORIES {
        let path = t.path(d);
        if let Some(c) = ensure_dir(&path, d, DIRECTORY_MODE, true, user.uid, user.gid, true)? {
            changes.push(c);
        }
    }
    Ok(changes)
}

/// Installs `authorized` for each of [`SSH_USERS`], removing `deprecated`.
pub fn ssh_keys(authorized: &[String], deprecated: &[String], t: &Target) -> Result<Vec<String>> {
    let accounts = Accounts::load(&t.root)?;
    let mut changes = Vec::new();
    for name in SSH_USERS {
        let user = accounts
            .user(name)
            .with_context(|| format!("installing ssh keys for {name}"))?;
        changes.extend(
            user_keys(user, authorized, deprecated, t)
                .with_context(|| format!("installing ssh keys for {name}"))?,
        );
    }
    Ok(changes)
}

fn user_keys(
    user: &User,
    authorized: &[String],
    deprecated: &[String],
    t: &Target,
) -> Result<Vec<String>> {
    let home = t.path(&user.home);
    let ssh_abs = format!("{}/.ssh", user.home.trim_end_matches('/'));
    let keys_abs = format!("{ssh_abs}/authorized_keys");
    let ssh = home.join(".ssh");
    let keys = ssh.join("authorized_keys");

    let existing = if ssh.is_symlink() {
        bail!("{ssh_abs} is a symbolic link; refusing to follow it");
    } else {
        read_regular(&keys).with_context(|| format!("reading {keys_abs}"))?
    };
    if existing.is_none() && authorized.is_empty() {
        return Ok(Vec::new());
    }
    let old = existing
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let merged = merge_key_lines(&old, authorized, deprecated);

    let mut changes = Vec::new();
    if !home.is_dir() {
        bail!("the home directory {} does not exist", user.home);
    }
    if let Some(c) = ensure_dir(&ssh, &ssh_abs, 0o700, true, user.uid, user.gid, false)? {
        changes.push(c);
    }
    let what = match (merged.added, merged.removed) {
        (0, 0) => None,
        (a, 0) => Some(format!("{keys_abs}: {a} key(s) added")),
        (0, r) => Some(format!("{keys_abs}: {r} key(s) removed")),
        (a, r) => Some(format!("{keys_abs}: {a} key(s) added, {r} removed")),
    };
    // Unchanged keys keep the file's bytes as they are (no reformatting).
    let data = match what {
        Some(_) => merged.text.into_bytes(),
        None => existing.clone().unwrap_or_default(),
    };
    if let Some(c) = ensure_file(&keys, &keys_abs, &data, 0o600, user.uid, user.gid, what)? {
        changes.push(c);
    }
    Ok(changes)
}

/// The `authorized_keys` text with `authorized` merged in and `deprecated`
/// removed (see [`merge_key_lines`]).
pub fn merge_keys(existing: &str, authorized: &[String], deprecated: &[String]) -> String {
    merge_key_lines(existing, authorized, deprecated).text
}

/// The result of merging keys into an `authorized_keys` text.
#[derive(Debug, PartialEq, Eq)]
pub struct MergedKeys {
    pub text: String,
    pub added: usize,
    pub removed: usize,
}

/// Keeps the lines of `existing` (comments too) except deprecated keys,
/// then appends the `authorized` keys not yet present. Keys are compared by
/// their base64 blob, so options and comments do not matter; a key that is
/// both authorized and deprecated is removed.
pub fn merge_key_lines(existing: &str, authorized: &[String], deprecated: &[String]) -> MergedKeys {
    let gone: HashSet<String> = deprecated
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| key_id(k))
        .collect();
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    let mut removed = 0;
    for line in existing.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            lines.push(line.to_string());
            continue;
        }
        let id = key_id(t);
        if gone.contains(&id) {
            removed += 1;
            continue;
        }
        seen.insert(id);
        lines.push(line.to_string());
    }
    let mut added = 0;
    for k in authorized {
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        let id = key_id(k);
        if gone.contains(&id) || !seen.insert(id) {
            continue;
        }
        lines.push(k.to_string());
        added += 1;
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    MergedKeys {
        text,
        added,
        removed,
    }
}

/// What identifies a key line: the blob after its type (`ssh-ed25519 AAAA…`),
/// whatever options precede it or comment follows; else the whole line.
fn key_id(line: &str) -> String {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        let is_type = w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-");
        if is_type {
            if let Some(blob) = words.next() {
                return blob.to_string();
            }
        }
    }
    line.trim().to_string()
}

/// Writes `appliance.extra.files`.
pub fn extra_files(files: &[ExtraFile], t: &Target) -> Result<Vec<String>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let accounts = Accounts::load(&t.root)?;
    let mut changes = Vec::new();
    for f in files {
        let (uid, gid) = match &f.owner {
            Some(o) => accounts
                .owner(o)
                .with_context(|| format!("writing {} (appliance.extra.files)", f.path))?,
            None => (0, 0),
        };
        let mode = f.permissions.unwrap_or(0o644);
        check_abs(&f.path)?;
        let path = t.path(&f.path);
        let what = format!("{} (extra file)", f.path);
        let c = make_parents(&path)
            .and_then(|_| {
                ensure_file(
                    &path,
                    &f.path,
                    f.contents.expose().as_bytes(),
                    mode,
                    uid,
                    gid,
                    Some(what),
                )
            })
            .with_context(|| format!("writing {} (appliance.extra.files)", f.path))?;
        changes.extend(c);
    }
    Ok(changes)
}

/// Makes the flag files `metric.NAME` match `metric`.
pub fn metric_flags(metric: &Metric, t: &Target) -> Result<Vec<String>> {
    let on = metric.enabled();
    let mut changes = Vec::new();
    for name in ["exporter", "server", "gui", "pghero"] {
        let abs = format!("{FLAGS_DIR}/metric.{name}");
        let path = t.path(&abs);
        let present = path.symlink_metadata().is_ok();
        if on.contains(&name) && !present {
            make_parents(&path)?;
            seeds::atomic::write_atomic(&path, b"", 0o644)
                .with_context(|| format!("writing {abs}"))?;
            changes.push(format!("{abs} set"));
        } else if !on.contains(&name) && present {
            fs::remove_file(&path).with_context(|| format!("removing {abs}"))?;
            changes.push(format!("{abs} removed"));
        }
    }
    Ok(changes)
}

/// An absolute path without `..` (the env checks this too).
fn check_abs(p: &str) -> Result<()> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        bail!("{p} is not an absolute path without `..`");
    }
    Ok(())
}

/// Reads `path` if it is a regular file (not through a symbolic link);
/// `None` when absent or not a regular file.
fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    match path.symlink_metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(Some(data))
}

/// Makes `path` a regular file holding `data` with `mode` and owner, writing
/// only what differs. `what` describes a content change (default:
/// `ABS written`). Returns the change made, if any.
fn ensure_file(
    path: &Path,
    abs: &str,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    what: Option<String>,
) -> Result<Option<String>> {
    let meta = match path.symlink_metadata() {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {abs}")),
    };
    if let Some(m) = meta.as_ref().filter(|m| m.is_file()) {
        let same_content = m.len() == data.len() as u64
            && read_regular(path)
                .with_context(|| format!("reading {abs}"))?
                .is_some_and(|old| old == data);
        if same_content {
            if m.mode() & 0o7777 == mode && m.uid() == uid && m.gid() == gid {
                return Ok(None);
            }
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .with_context(|| format!("opening {abs}"))?;
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .with_context(|| format!("changing the owner of {abs}"))?;
            f.set_permissions(fs::Permissions::from_mode(mode))
                .with_context(|| format!("changing the mode of {abs}"))?;
            return Ok(Some(format!(
                "{abs}: owner/mode set to {uid}:{gid} {mode:04o}"
            )));
        }
    } else if let Some(m) = &meta {
        if m.is_dir() {
            bail!("{abs} is a directory");
        }
        // A symbolic link or special file: replaced by the rename below.
    }
    seeds::atomic::write_atomic_with(path, mode, |f| {
        std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))?;
        // fchown clears set-id bits; put the exact mode back.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)
    })
    .with_context(|| format!("writing {abs}"))?;
    Ok(Some(what.unwrap_or_else(|| format!("{abs} written"))))
}

/// Makes `path` a directory with owner `uid:gid`, created with `mode` (and
/// kept at it when `enforce_mode`). `follow`: accept a symbolic link to a
/// directory (an operator's relocation) rather than refusing it.
fn ensure_dir(
    path: &Path,
    abs: &str,
    mode: u32,
    enforce_mode: bool,
    uid: u32,
    gid: u32,
    follow: bool,
) -> Result<Option<String>> {
    let meta = if follow {
        path.metadata()
    } else {
        path.symlink_metadata()
    };
    match meta {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if path.is_symlink() {
                bail!("{abs} is a dangling symbolic link");
            }
            make_parents(path)?;
            fs::DirBuilder::new()
                .mode(mode)
                .create(path)
                .with_context(|| format!("creating {abs}"))?;
            // The umask may have removed bits.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("creating {abs}"))?;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .with_context(|| format!("changing the owner of {abs}"))?;
            Ok(Some(format!("{abs} created")))
        }
        Err(e) => Err(e).with_context(|| format!("reading {abs}")),
        Ok(m) if !m.is_dir() => {
            if m.file_type().is_symlink() {
                bail!("{abs} is a symbolic link; refusing to follow it");
            }
            bail!("{abs} exists and is not a directory")
        }
        Ok(m) => {
            let mut fixed = Vec::new();
            if m.uid() != uid || m.gid() != gid {
                let r = if follow {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                } else {
                    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                };
                r.with_context(|| format!("changing the owner of {abs}"))?;
                fixed.push(format!("owner {uid}:{gid}"));
            }
            if enforce_mode && m.mode() & 0o7777 != mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("changing the mode of {abs}"))?;
                fixed.push(format!("mode {mode:04o}"));
            }
            Ok((!fixed.is_empty()).then(|| format!("{abs}: {}", fixed.join(", "))))
        }
    }
}

/// Creates the missing parent directories of `path`, 0755, owned by the
/// creator (root at boot).
fn make_parents(path: &Path) -> Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    make_parents(parent)?;
    match fs::DirBuilder::new().mode(0o755).create(parent) {
        Ok(()) => fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("creating {}", parent.display())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && parent.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", parent.display())),
    }
}

/// A user of the target system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The target's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Default)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<(String, u32)>,
}

impl Accounts {
    /// Reads `root/etc/passwd` and `root/etc/group`.
    pub fn load(root: &Path) -> Result<Accounts> {
        let read = |p: &str| -> Result<String> {
            let mut s = String::new();
            File::open(root.join(p))
                .and_then(|mut f| f.read_to_string(&mut s))
                .with_context(|| format!("reading /{p}"))?;
            Ok(s)
        };
        Ok(Accounts::parse(&read("etc/passwd")?, &read("etc/group")?))
    }

    /// Parses passwd(5) and group(5) texts; malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7).then_some(())?;
                Some(User {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3).then_some(())?;
                Some((f[0].to_string(), f[2].parse().ok()?))
            })
            .collect();
        Accounts { users, groups }
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Result<&User> {
        self.users
            .iter()
            .find(|u| u.name == name)
            .with_context(|| format!("no user {name:?} in /etc/passwd"))
    }

    /// `user:group` or `user` (group: the user's primary group) as ids;
    /// numeric ids are accepted for names not found.
    pub fn owner(&self, spec: &str) -> Result<(u32, u32)> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, primary) = match self.users.iter().find(|x| x.name == u) {
            Some(x) => (x.uid, Some(x.gid)),
            None => match u.parse::<u32>() {
                Ok(n) => (n, None),
                Err(_) => bail!("no user {u:?} in /etc/passwd"),
            },
        };
        let gid = match g {
            Some(g) => match self.groups.iter().find(|x| x.0 == g) {
                Some(x) => x.1,
                None => g
                    .parse::<u32>()
                    .map_err(|_| anyhow::anyhow!("no group {g:?} in /etc/group"))?,
            },
            None => primary.unwrap_or(uid),
        };
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests;
