//! `env-update`: a running appliance takes a changed env, as the original
//! appliance's manual has it (edit `/app/env.yml`, `env-update`,
//! `systemctl start appliance-update`).
//!
//! In order ([`run`]):
//!
//! 1. **Gather and validate** the env from every source in the agent's
//!    order ([`discover::find`], [`discover::Found::validate`]). An invalid
//!    env changes nothing: the running appliance keeps its active env, the
//!    error says why (never quoting a value).
//! 2. **Compare** with the active env (`/run/active-env.yml`): the keys of
//!    the reference whose value changed ([`seeds::env::effects::changed_keys`]),
//!    printed by name, never by value. A change the running machine cannot
//!    take ([`LIVE_REFUSED`]: storage, standby, which the agent applies at
//!    boot) refuses the whole update: nothing is half-done.
//! 3. **Publish** `/run/active-env.yml` and `/run/active-env.env`
//!    ([`discover::publish`]: atomic, 0600, only what differs).
//! 4. With `--apply`: the agent's **apply** step ([`apply::apply`]: host
//!    name, ssh keys, extra files, flags, the update timer's calendar), then
//!    **restart** the units whose configuration changed since the env last
//!    applied ([`APPLIED`], see [`run`]; [`restarts`], from [`RESTARTS`]),
//!    in [`ORDER`], the application
//!    (`appliance.service`) last, unless the caller restarts it itself
//!    ([`Request::defer_appliance`]); units the image does not have are
//!    left out.
//!
//! One update at a time: an exclusive lock on `/run/ecs-env-update.lock`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use seeds::env::effects::changed_keys;

use crate::apply;
use crate::discover::{self, Sources};
use crate::safefs::{self, Dir};

/// Keys the running machine cannot take: the agent applies them at boot.
pub const LIVE_REFUSED: &[&str] = &["appliance.standby", "appliance.storage."];

/// For a key (or a prefix ending in `.`), the units its change restarts;
/// the first matching entry counts. Keys not listed need no restart: the
/// apply step is their effect (ssh keys, extra files), or a unit reads them
/// when it runs (`appliance.sentry.dsn`).
pub const RESTARTS: &[(&str, &[&str])] = &[
    (
        "appliance.domain",
        &[
            "appliance-tls.service",
            "nginx.service",
            "appliance-acme.service",
            "appliance-mail.service",
            "opendkim.service",
            "postfix@-.service",
            "appliance.service",
        ],
    ),
    (
        "appliance.ssl.letsencrypt.",
        &[
            "appliance-tls.service",
            "nginx.service",
            "appliance-acme.service",
        ],
    ),
    (
        "appliance.ssl.",
        &["appliance-tls.service", "nginx.service"],
    ),
    (
        "appliance.dkim.",
        &[
            "appliance-mail.service",
            "opendkim.service",
            "postfix@-.service",
        ],
    ),
    (
        "appliance.metric.exporter",
        &[
            "appliance-metrics.service",
            "prometheus-node-exporter.service",
            "prometheus-nginx-exporter.service",
            "prometheus-postgres-exporter.service",
        ],
    ),
    (
        "appliance.extra.packages",
        &["appliance-extra-packages.service"],
    ),
    ("appliance.update.", &["appliance-timers.service"]),
    // appliance-backup.service reads them when it runs; its schedule and
    // profile are appliance-backup-setup.service's (layer 70-backup).
    ("appliance.backup.", &["appliance-backup-setup.service"]),
    // Read by appliance-sentry-report.service when a failure is recorded.
    ("appliance.sentry.", &[]),
    ("ecs.", &["appliance.service"]),
];

/// The order of restarts: configuration before the daemons that read it,
/// the application last.
pub const ORDER: &[&str] = &[
    "appliance-timers.service",
    "appliance-backup-setup.service",
    "appliance-extra-packages.service",
    "appliance-tls.service",
    "nginx.service",
    "appliance-acme.service",
    "appliance-mail.service",
    "opendkim.service",
    "postfix@-.service",
    "appliance-metrics.service",
    "prometheus-node-exporter.service",
    "prometheus-nginx-exporter.service",
    "prometheus-postgres-exporter.service",
    "appliance.service",
];

/// The application: restarted last.
pub const APPLIANCE: &str = "appliance.service";

/// Units reloaded rather than restarted (`systemctl reload-or-restart`): a
/// restart of nginx would restart what `Requires=` it (`appliance.service`,
/// `appliance-acme.service`) out of order; a reload takes the new
/// certificate and configuration. postfix reads its new `main.cf`
/// (`appliance-mail.service` wrote it) on a reload too; a restart of it
/// failed now and then (a signal while it stopped), and the failure would
/// stop the appliance.
pub const RELOADED: &[&str] = &["nginx.service", "postfix@-.service"];

fn matches(key: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('.') {
        Some(prefix) => key.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')),
        None => key == pattern,
    }
}

/// The units to restart for these changed keys, in [`ORDER`].
pub fn restarts(changed: &[&str]) -> Vec<&'static str> {
    let wanted: Vec<&str> = changed
        .iter()
        .filter_map(|k| RESTARTS.iter().find(|(p, _)| matches(k, p)))
        .flat_map(|(_, units)| units.iter().copied())
        .collect();
    ORDER
        .iter()
        .copied()
        .filter(|u| wanted.contains(u))
        .collect()
}

/// The changed keys the running machine cannot take.
pub fn refused<'a>(changed: &[&'a str]) -> Vec<&'a str> {
    changed
        .iter()
        .copied()
        .filter(|k| LIVE_REFUSED.iter().any(|p| matches(k, p)))
        .collect()
}

/// What `env-update` is asked to do.
pub struct Request {
    pub sources: Sources,
    /// Apply the env and restart what changed.
    pub apply: bool,
    /// Leave `appliance.service` alone even when its configuration
    /// changed: the caller restarts it (`appliance-update`, after the
    /// package updates).
    pub defer_appliance: bool,
}

/// The systemd calls of `--apply`, injectable for tests.
pub trait Units {
    /// Which of `units` the system has (loaded, not "not-found").
    fn present(&self, units: &[&'static str]) -> Result<Vec<&'static str>>;
    /// `systemctl restart`, or `reload-or-restart` when `reload`.
    fn restart(&self, unit: &str, reload: bool) -> Result<()>;
}

/// `systemctl`.
pub struct Systemctl;

impl Units for Systemctl {
    fn present(&self, units: &[&'static str]) -> Result<Vec<&'static str>> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["show", "--property=LoadState", "--value"];
        args.extend(units);
        let out = seeds::cmd::run(&mut seeds::cmd::command("systemctl", &args))?;
        Ok(loaded(units, &out.text()))
    }

    fn restart(&self, unit: &str, reload: bool) -> Result<()> {
        let action = if reload {
            "reload-or-restart"
        } else {
            "restart"
        };
        seeds::cmd::run(&mut seeds::cmd::command("systemctl", [action, unit]))?;
        Ok(())
    }
}

/// The units whose `LoadState` is `loaded` in the output of `systemctl show
/// --property=LoadState --value UNITS`: one value per unit, the units'
/// blocks apart by an empty line.
pub fn loaded(units: &[&'static str], show: &str) -> Vec<&'static str> {
    let mut states = show.lines().filter(|l| !l.is_empty());
    units
        .iter()
        .copied()
        .filter(|_| states.next() == Some("loaded"))
        .collect()
}

/// Holds `/run/ecs-env-update.lock` until dropped.
struct Lock(#[allow(dead_code)] std::fs::File);

fn lock(root: &Path) -> Result<Lock> {
    let path = apply::under(root, "/run/ecs-env-update.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid descriptor; flock has no memory effects.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        println!("env-update: waiting for another env-update to finish");
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("locking /run/ecs-env-update.lock");
        }
    }
    Ok(Lock(f))
}

/// The file, in `/run`, of the env that was last applied to the running
/// machine: what `--apply` compares with to know what to restart.
pub const APPLIED: &str = "ecs-applied-env.yml";

/// The bytes of `/run/NAME`, when it is a regular file (never through a
/// link).
fn run_file(root: &Path, name: &str) -> Option<Vec<u8>> {
    let run = Dir::root(root).ok()?.walk("/run", false).ok()?.ok()?;
    match run.read(name).ok()? {
        safefs::Read::Data(bytes, _, _) => Some(bytes),
        _ => None,
    }
}

/// A document that parses.
fn parse(bytes: &[u8]) -> Option<seeds::yaml::Node> {
    seeds::yaml::load(std::str::from_utf8(bytes).ok()?).ok()?
}

/// Writes `/run/NAME` (0600, atomically).
fn write_run(root: &Path, name: &str, data: &[u8]) -> Result<()> {
    let run = match Dir::root(root)
        .and_then(|r| r.walk("/run", true))
        .context("opening /run")?
    {
        Ok(d) => d,
        Err(o) => bail!("{o}"),
    };
    run.replace(name, data, 0o600, None)
        .with_context(|| format!("writing /run/{name}"))
}

/// What an update did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The keys that differ from the active env (what this run changed).
    pub changed: Vec<&'static str>,
    pub written: Vec<&'static str>,
    /// With `--apply`: the keys that differ from the env last applied (a
    /// plain `env-update` before changed the active env, not the machine).
    pub applying: Vec<&'static str>,
    pub applied: Vec<String>,
    pub restarted: Vec<&'static str>,
}

fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "no key changed".to_string()
    } else {
        format!("changed {}", keys.join(", "))
    }
}

/// Runs `env-update` (see the module's doc); prints its progress on stdout.
///
/// The env the running machine has is the one last applied
/// (`/run/ecs-applied-env.yml`, written after a successful `--apply`) or,
/// before any, the active env the agent applied at boot; the first update
/// keeps a copy of that as the applied one before it replaces the active
/// env, so a plain `env-update` followed by `appliance-update` restarts
/// what changed since the boot.
pub fn run(req: &Request, units: &dyn Units) -> Result<Report> {
    let root = req.sources.root.clone();
    let _lock = lock(&root)?;
    let found = discover::find(&req.sources)?;
    let env = found
        .validate()
        .context("the env is invalid; nothing changed, the appliance keeps its active env")?;
    for w in &found.warnings {
        println!("env-update: warning: {w}");
    }
    for w in env.warnings.iter().chain(&env.no_effect_warnings()) {
        println!("env-update: {}: {w}", found.source_name());
    }
    let active = run_file(&root, "active-env.yml");
    let applied = run_file(&root, APPLIED).or_else(|| active.clone());
    let old = active.as_deref().and_then(parse);
    let base = applied.as_deref().and_then(parse);
    let changed = changed_keys(old.as_ref(), &env.doc.0);
    let applying = changed_keys(base.as_ref(), &env.doc.0);
    // Without an env running (the agent stopped before publishing one)
    // there is nothing to protect.
    let no = if base.is_some() {
        refused(&applying)
    } else {
        Vec::new()
    };
    if !no.is_empty() {
        bail!(
            "{} changed, which a running appliance cannot take (ecs-firstboot applies it at boot); \
             nothing changed: revert it, or reboot to apply the new env",
            no.join(", ")
        );
    }
    println!(
        "env-update: env from {} {}: {}",
        found.kind,
        found.origin,
        list(&changed)
    );
    if let (Some(bytes), None) = (&applied, run_file(&root, APPLIED)) {
        write_run(&root, APPLIED, bytes)?;
    }
    let written = discover::publish(&root, &found, &env).context("publishing the env")?;
    if !written.is_empty() {
        println!("env-update: wrote {}", written.join(", "));
    }
    let mut report = Report {
        changed,
        written,
        ..Report::default()
    };
    if !req.apply {
        return Ok(report);
    }
    report.applying = applying;
    if report.applying != report.changed {
        println!(
            "env-update: since the env last applied: {}",
            list(&report.applying)
        );
    }
    let target = apply::Target::new(root.clone(), root == Path::new("/"));
    report.applied = apply::apply(&env, &target)?;
    for w in target.warnings.take() {
        println!("env-update: warning: {w}");
    }
    println!(
        "env-update: applied: {}",
        if report.applied.is_empty() {
            "nothing to change".to_string()
        } else {
            report.applied.join(", ")
        }
    );
    let mut wanted = restarts(&report.applying);
    if req.defer_appliance {
        wanted.retain(|u| *u != APPLIANCE);
    }
    let present = units.present(&wanted)?;
    for unit in &present {
        let reload = RELOADED.contains(unit);
        let doing = if reload { "reloading" } else { "restarting" };
        println!("env-update: {doing} {unit}");
        units
            .restart(unit, reload)
            .with_context(|| format!("{doing} {unit} (journalctl -b -u {unit})"))?;
        report.restarted.push(unit);
    }
    write_run(&root, APPLIED, &discover::active_env_yml(&found))?;
    Ok(report)
}

#[cfg(test)]
mod tests;
