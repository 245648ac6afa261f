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
//! 6. [`update_timer`]: `appliance.update.oncalendar` as the calendar of
//!    `appliance-update.timer` (the drop-in [`UPDATE_TIMER_DROPIN`]), and
//!    the flag `/app/etc/flags/update.automatic` present exactly when
//!    `appliance.update.automatic` is true; `appliance-timers.service`
//!    starts or stops the timer by it.
//!
//! Each step returns what it changed as short descriptions (paths and counts,
//! never contents), so the summary can say `apply=3 changes`; an empty list
//! means nothing was written. Files are written atomically
//! ([`safefs::Dir::replace`]) with their final mode and owner before they
//! are renamed into place. Users and groups are resolved from the target's own
//! `/etc/passwd` and `/etc/group`, so tests run on a temporary root.
//!
//! Every path is reached through [`safefs`]: no symbolic link is followed in
//! any component, owner and mode are set on descriptors, and a file with
//! other hard links is replaced, never read or changed in place. A link
//! planted where a file of the agent's goes is replaced; a link, or a file
//! or directory of another user, in the way of a directory or where a
//! file goes is skipped with a warning ([`Target::warnings`]), so a user's
//! files cannot stop the boot (see `docs/security.md`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use seeds::env::{Env, ExtraFile, Metric, Update};

use crate::safefs::{self, Dir, Kind, Obstacle, Read};

/// The system being configured.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `/` at boot; a temporary directory in tests.
    pub root: PathBuf,
    /// Also set the running kernel's host name (only when `root` is `/`).
    pub set_kernel_hostname: bool,
    /// What the steps skipped or replaced without reading, and why (paths,
    /// never contents); the agent logs them.
    pub warnings: RefCell<Vec<String>>,
}

impl Target {
    /// The target `root`, nothing skipped yet.
    pub fn new(root: impl Into<PathBuf>, set_kernel_hostname: bool) -> Target {
        Target {
            root: root.into(),
            set_kernel_hostname,
            warnings: RefCell::default(),
        }
    }

    /// The root directory, from which every path is walked ([`safefs`]).
    fn dir(&self) -> Result<Dir> {
        Dir::root(&self.root).with_context(|| format!("opening {}", self.root.display()))
    }

    fn warn(&self, w: String) {
        self.warnings.borrow_mut().push(w);
    }

    /// Something in the way of `what`: a symbolic link (never followed), or
    /// anything owned by someone other than the agent, is skipped with a
    /// warning, so no user's file can stop the boot. One the agent's own
    /// user owns (the image's or the operator's doing) is an error, as a
    /// configuration mistake is.
    fn skip(&self, o: &Obstacle, what: &str) -> Result<()> {
        self.skip_as(o, &format!("{what} skipped"))
    }

    fn skip_as(&self, o: &Obstacle, skipped: &str) -> Result<()> {
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if o.kind == Kind::Symlink || o.uid != me {
            self.warn(format!("{o}; {skipped}"));
            Ok(())
        } else {
            bail!("{o}")
        }
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
    changes.extend(update_timer(&env.appliance.update, t)?);
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
    let etc = match t.dir()?.walk("/etc", true).context("opening /etc")? {
        Ok(d) => d,
        Err(o) => {
            t.skip(&o, "/etc/hostname and /etc/hosts")?;
            return Ok(changes);
        }
    };
    let current = match etc.read("hostname").context("reading /etc/hostname")? {
        Read::Data(d, _, _) => Some(String::from_utf8_lossy(&d).into_owned()),
        _ => None,
    };
    if current.as_deref().map(str::trim) != Some(name) {
        etc.replace("hostname", format!("{name}\n").as_bytes(), 0o644, None)
            .context("writing /etc/hostname")?;
        changes.push(format!("/etc/hostname: {name}"));
    }
    changes.extend(etc_hosts(name, &etc, t)?);
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
/// are kept as they are. A `/etc/hosts` that is not a regular file with one
/// link is not read (it could be another file's content) but replaced.
fn etc_hosts(name: &str, etc: &Dir, t: &Target) -> Result<Vec<String>> {
    let default =
        || "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string();
    let (old, present) = match etc.read("hosts").context("reading /etc/hosts")? {
        Read::Data(d, _, _) => (String::from_utf8_lossy(&d).into_owned(), true),
        Read::Missing => (default(), false),
        Read::Other(m) if m.is_dir() => {
            let o = Obstacle {
                path: "/etc/hosts".into(),
                kind: Kind::Dir,
                uid: m.uid(),
            };
            t.skip(&o, "/etc/hosts")?;
            return Ok(Vec::new());
        }
        _ => {
            t.warn("/etc/hosts is not a regular file with one link; replaced, not read".into());
            (default(), false)
        }
    };
    let new = hosts_with(&old, name);
    if new == old && present {
        return Ok(Vec::new());
    }
    etc.replace("hosts", new.as_bytes(), 0o644, None)
        .context("writing /etc/hosts")?;
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
/// those present. A symbolic link at one of them, or in its parent, is not
/// followed: that directory is skipped with a warning.
pub fn directories(t: &Target) -> Result<Vec<String>> {
    let accounts = Accounts::load(&t.root)?;
    let user = accounts
        .user(DIRECTORY_OWNER)
        .context("finding the owner of the appliance's directories")?;
    let root = t.dir()?;
    let mut changes = Vec::new();
    for d in DIRECTORIES {
        let (parent, name) = safefs::split(d)?;
        let parent = match root
            .walk(&parent, true)
            .with_context(|| format!("creating {parent}"))?
        {
            Ok(p) => p,
            Err(o) => {
                t.skip(&o, d)?;
                continue;
            }
        };
        let owner = (user.uid, user.gid);
        if let Some((_, Some(c))) = ensure_dir(&parent, name, DIRECTORY_MODE, owner, t)? {
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

/// One user's `~/.ssh/authorized_keys`. The home, `~/.ssh` and the file are
/// reached without following links; a link or a foreign directory in the
/// way skips this user with a warning, a file with other hard links is
/// replaced without being read.
fn user_keys(
    user: &User,
    authorized: &[String],
    deprecated: &[String],
    t: &Target,
) -> Result<Vec<String>> {
    let ssh_abs = format!("{}/.ssh", user.home.trim_end_matches('/'));
    let keys_abs = format!("{ssh_abs}/authorized_keys");
    let skipped = format!("ssh keys for {} skipped", user.name);
    let home = match t.dir()?.walk(&user.home, false) {
        Ok(Ok(d)) => d,
        Ok(Err(o)) => {
            t.skip_as(&o, &skipped)?;
            return Ok(Vec::new());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if authorized.is_empty() {
                return Ok(Vec::new());
            }
            bail!("the home directory {} does not exist", user.home);
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", user.home)),
    };
    let ssh = match home
        .subdir(".ssh")
        .with_context(|| format!("opening {ssh_abs}"))?
    {
        Some(Ok(d)) => Some(d),
        Some(Err(o)) => {
            t.skip_as(&o, &skipped)?;
            return Ok(Vec::new());
        }
        None => None,
    };
    // `replace`: something to replace that is not read (a link, a file
    // with other links).
    let (existing, replace) = match ssh.as_ref().map(|d| d.read("authorized_keys")) {
        None => (None, false),
        Some(r) => match r.with_context(|| format!("reading {keys_abs}"))? {
            Read::Data(d, _, _) => (Some(d), false),
            Read::Missing => (None, false),
            Read::Other(m) if m.is_dir() => {
                let o = Obstacle {
                    path: keys_abs.clone(),
                    kind: Kind::Dir,
                    uid: m.uid(),
                };
                t.skip_as(&o, &skipped)?;
                return Ok(Vec::new());
            }
            // A link planted in the user's home: replaced when there is
            // something to install, never read or written through.
            Read::Other(_) => (None, false),
            Read::Linked(_) | Read::TooLarge(_) => {
                t.warn(format!(
                    "{keys_abs} has other hard links or is too large; replaced, not read"
                ));
                (None, true)
            }
        },
    };
    if existing.is_none() && authorized.is_empty() && !replace {
        return Ok(Vec::new());
    }
    let old = existing
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let merged = merge_key_lines(&old, authorized, deprecated);

    let mut changes = Vec::new();
    let owner = (user.uid, user.gid);
    let Some((ssh, c)) = ensure_dir(&home, ".ssh", 0o700, owner, t)? else {
        return Ok(Vec::new());
    };
    changes.extend(c);
    let what = match (merged.added, merged.removed) {
        (0, 0) => None,
        (a, 0) => Some(format!("{keys_abs}: {a} key(s) added")),
        (0, r) => Some(format!("{keys_abs}: {r} key(s) removed")),
        (a, r) => Some(format!("{keys_abs}: {a} key(s) added, {r} removed")),
    };
    // Unchanged keys keep the file's bytes as they are (no reformatting).
    let data = match what {
        Some(_) => merged.text.into_bytes(),
        None if replace => merged.text.into_bytes(),
        None => existing.clone().unwrap_or_default(),
    };
    if let Some(c) = ensure_file(&ssh, "authorized_keys", &data, 0o600, owner, what, t)? {
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

/// Writes `appliance.extra.files`. A link or a foreign file in the way of
/// one skips it with a warning.
pub fn extra_files(files: &[ExtraFile], t: &Target) -> Result<Vec<String>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let accounts = Accounts::load(&t.root)?;
    let root = t.dir()?;
    let mut changes = Vec::new();
    for f in files {
        let context = || format!("writing {} (appliance.extra.files)", f.path);
        let owner = match &f.owner {
            Some(o) => accounts.owner(o).with_context(context)?,
            None => (0, 0),
        };
        let mode = f.permissions.unwrap_or(0o644);
        check_abs(&f.path)?;
        let (parent, name) = safefs::split(&f.path).with_context(context)?;
        let dir = match root.walk(&parent, true).with_context(context)? {
            Ok(d) => d,
            Err(o) => {
                t.skip(&o, &format!("{} (appliance.extra.files)", f.path))?;
                continue;
            }
        };
        let what = format!("{} (extra file)", f.path);
        let data = f.contents.expose().as_bytes();
        let c = ensure_file(&dir, name, data, mode, owner, Some(what), t).with_context(context)?;
        changes.extend(c);
    }
    Ok(changes)
}

/// Makes the flag files `metric.NAME` match `metric`.
pub fn metric_flags(metric: &Metric, t: &Target) -> Result<Vec<String>> {
    let on = metric.enabled();
    let dir = match t.dir()?.walk(FLAGS_DIR, !on.is_empty()) {
        Ok(Ok(d)) => d,
        Ok(Err(o)) => {
            t.skip(&o, "the metric flags")?;
            return Ok(Vec::new());
        }
        // Nothing to set, and no flags directory: nothing to remove.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {FLAGS_DIR}")),
    };
    let mut changes = Vec::new();
    for name in ["exporter", "server", "gui", "pghero"] {
        changes.extend(flag(
            &dir,
            &format!("metric.{name}"),
            on.contains(&name),
            t,
        )?);
    }
    Ok(changes)
}

/// Makes the flag file `name` in `dir` present (empty, 0644) or absent; a
/// directory in its place is skipped (see [`Target::skip`]).
fn flag(dir: &Dir, name: &str, on: bool, t: &Target) -> Result<Option<String>> {
    let abs = dir.child(name);
    let present = dir.entry(name).with_context(|| format!("reading {abs}"))?;
    if let Some(m) = present.as_ref().filter(|m| m.is_dir()) {
        let o = Obstacle {
            path: abs.clone(),
            kind: Kind::Dir,
            uid: m.uid(),
        };
        t.skip(&o, &abs)?;
    } else if on && present.is_none() {
        dir.replace(name, b"", 0o644, None)
            .with_context(|| format!("writing {abs}"))?;
        return Ok(Some(format!("{abs} set")));
    } else if !on && present.is_some() {
        dir.remove(name)
            .with_context(|| format!("removing {abs}"))?;
        return Ok(Some(format!("{abs} removed")));
    }
    Ok(None)
}

/// The drop-in that gives `appliance-update.timer` the env's calendar.
pub const UPDATE_TIMER_DROPIN: &str = "/etc/systemd/system/appliance-update.timer.d/ecs-env.conf";

/// The flag file of `appliance.update.automatic`, in [`FLAGS_DIR`].
pub const UPDATE_FLAG: &str = "update.automatic";

/// The drop-in's text for a calendar (checked by the env as systemd checks
/// it; a control character is refused here as well, so nothing but the
/// one setting can reach the unit file).
pub fn update_timer_dropin(oncalendar: &str) -> Result<String> {
    if oncalendar.chars().any(char::is_control) {
        bail!("appliance.update.oncalendar holds a control character");
    }
    Ok(format!(
        "# Written by ecs-firstboot from appliance.update.oncalendar.\n\
         [Timer]\nOnCalendar=\nOnCalendar={oncalendar}\n"
    ))
}

/// Makes the update timer's drop-in and flag match `update`.
pub fn update_timer(update: &Update, t: &Target) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    let text = update_timer_dropin(&update.oncalendar)?;
    let (parent, name) = safefs::split(UPDATE_TIMER_DROPIN)?;
    match t
        .dir()?
        .walk(&parent, true)
        .with_context(|| format!("creating {parent}"))?
    {
        Ok(dir) => changes.extend(ensure_file(
            &dir,
            name,
            text.as_bytes(),
            0o644,
            (0, 0),
            Some(format!(
                "{UPDATE_TIMER_DROPIN} (appliance.update.oncalendar)"
            )),
            t,
        )?),
        Err(o) => t.skip(&o, UPDATE_TIMER_DROPIN)?,
    }
    let on = update.automatic;
    let dir = match t.dir()?.walk(FLAGS_DIR, on) {
        Ok(Ok(d)) => d,
        Ok(Err(o)) => {
            t.skip(&o, "the update flag")?;
            return Ok(changes);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(changes),
        Err(e) => return Err(e).with_context(|| format!("opening {FLAGS_DIR}")),
    };
    changes.extend(flag(&dir, UPDATE_FLAG, on, t)?);
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

/// Makes `name` in `dir` a regular file holding `data` with `mode` and
/// `owner`, writing only what differs. A file with this one link is fixed in
/// place (on its descriptor); anything else that is not a directory (a
/// link, a FIFO, a file with other links) is replaced, never written
/// through. `what` describes a content change (default: `ABS written`).
/// Returns the change made, if any.
fn ensure_file(
    dir: &Dir,
    name: &str,
    data: &[u8],
    mode: u32,
    (uid, gid): (u32, u32),
    what: Option<String>,
    t: &Target,
) -> Result<Option<String>> {
    let abs = dir.child(name);
    match dir.read(name).with_context(|| format!("reading {abs}"))? {
        Read::Data(old, f, m) if old == data => {
            if m.mode() & 0o7777 == mode && m.uid() == uid && m.gid() == gid {
                return Ok(None);
            }
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .with_context(|| format!("changing the owner of {abs}"))?;
            f.set_permissions(fs::Permissions::from_mode(mode))
                .with_context(|| format!("changing the mode of {abs}"))?;
            return Ok(Some(format!(
                "{abs}: owner/mode set to {uid}:{gid} {mode:04o}"
            )));
        }
        Read::Other(m) if m.is_dir() => {
            let o = Obstacle {
                path: abs.clone(),
                kind: Kind::Dir,
                uid: m.uid(),
            };
            t.skip(&o, &abs)?;
            return Ok(None);
        }
        Read::Linked(_) => t.warn(format!(
            "{abs} has other hard links; replaced, the other links left as they are"
        )),
        // Different content, absent, too large, a link or special file:
        // replaced by the rename below.
        _ => {}
    }
    dir.replace(name, data, mode, Some((uid, gid)))
        .with_context(|| format!("writing {abs}"))?;
    Ok(Some(what.unwrap_or_else(|| format!("{abs} written"))))
}

/// Makes `name` in `parent` a directory with owner `uid:gid` and `mode`;
/// returns it and the change made. `None`: something is in the way and was
/// skipped with a warning (see [`Target::skip`]).
fn ensure_dir(
    parent: &Dir,
    name: &str,
    mode: u32,
    (uid, gid): (u32, u32),
    t: &Target,
) -> Result<Option<(Dir, Option<String>)>> {
    let abs = parent.child(name);
    let dir = match parent
        .subdir(name)
        .with_context(|| format!("reading {abs}"))?
    {
        Some(Ok(d)) => d,
        Some(Err(o)) => {
            t.skip(&o, &abs)?;
            return Ok(None);
        }
        None => {
            let d = parent
                .mkdir(name, mode)
                .with_context(|| format!("creating {abs}"))?;
            d.chown(uid, gid)
                .with_context(|| format!("changing the owner of {abs}"))?;
            // fchown may clear set-id bits.
            d.chmod(mode)
                .with_context(|| format!("changing the mode of {abs}"))?;
            return Ok(Some((d, Some(format!("{abs} created")))));
        }
    };
    let m = dir.metadata().with_context(|| format!("reading {abs}"))?;
    let mut fixed = Vec::new();
    if m.uid() != uid || m.gid() != gid {
        dir.chown(uid, gid)
            .with_context(|| format!("changing the owner of {abs}"))?;
        fixed.push(format!("owner {uid}:{gid}"));
    }
    if m.mode() & 0o7777 != mode {
        dir.chmod(mode)
            .with_context(|| format!("changing the mode of {abs}"))?;
        fixed.push(format!("mode {mode:04o}"));
    }
    let change = (!fixed.is_empty()).then(|| format!("{abs}: {}", fixed.join(", ")));
    Ok(Some((dir, change)))
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
        let etc = match Dir::root(root).and_then(|r| r.walk("/etc", false)) {
            Ok(Ok(d)) => d,
            Ok(Err(o)) => bail!("{o}"),
            Err(e) => return Err(e).context("opening /etc"),
        };
        let read = |name: &str| -> Result<String> {
            match etc
                .read(name)
                .with_context(|| format!("reading /etc/{name}"))?
            {
                Read::Data(d, _, _) => Ok(String::from_utf8_lossy(&d).into_owned()),
                Read::Missing => bail!("reading /etc/{name}: it does not exist"),
                _ => bail!("reading /etc/{name}: not a regular file with one link"),
            }
        };
        Ok(Accounts::parse(&read("passwd")?, &read("group")?))
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
