//! The agent's steps in order: env → grow and volumes → apply → hand-off.
//! Each step returns early when not configured and logs one line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use seeds::env::{Env, Storage, VolumePlan};

use crate::apply;
use crate::cmdline::Cmdline;
use crate::discover::{self, Sources};
use crate::facts::Opener;
use crate::handoff;
use crate::log::{Log, Timer};
use crate::plan::{human, Placement, StoragePolicy, VolumePolicy};
use crate::sizing;
use crate::storage::{self, Host};
use crate::sysfs::System;
use crate::volumes::Mounter;

/// Everything the agent touches, injectable for tests.
pub struct Agent<'a> {
    /// The system root: `/`, or a temp dir in tests.
    pub root: PathBuf,
    pub sys: System,
    /// Where discovery looks (its `root` is the system root as well).
    pub sources: Sources,
    pub cmdline: Cmdline,
    /// `false` skips grow and volumes (e.g. `--root` runs on a build host).
    pub storage: bool,
    pub open: Opener<'a>,
    pub mounter: &'a dyn Mounter,
    pub set_running_hostname: bool,
}

/// How a run ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    HandedOff,
    Standby,
}

/// The storage policy of an env. `device:` paths under `/dev/` are taken
/// relative to `dev` (the real `/dev`, or a test's fake one) and, on the real
/// system, symlinks such as `/dev/disk/by-id/...` are resolved.
pub fn policy(s: &Storage, dev: &Path, canonicalize: bool) -> StoragePolicy {
    let conv = |ignore: bool, plan: &Option<VolumePlan>| {
        if ignore {
            return VolumePolicy::Ignore;
        }
        VolumePolicy::Use(plan.as_ref().map(|p| match p {
            VolumePlan::Size(n) => Placement::Size(*n),
            VolumePlan::Rest => Placement::Rest,
            VolumePlan::Device(d) => {
                let d = match d.strip_prefix("/dev") {
                    Ok(rel) => dev.join(rel),
                    Err(_) => d.clone(),
                };
                Placement::Device(if canonicalize {
                    std::fs::canonicalize(&d).unwrap_or(d)
                } else {
                    d
                })
            }
        }))
    };
    StoragePolicy {
        grow_root: s.grow_root,
        root_size: s.root_size,
        data: conv(s.ignore_data, &s.data),
        volatile: conv(s.ignore_volatile, &s.volatile),
    }
}

impl Agent<'_> {
    /// Runs every step; `log.step_name` says which one failed.
    pub fn run(&self, log: &mut Log) -> Result<Ended> {
        handoff::start(&self.root)?;

        log.current = "env";
        let t = Timer::start();
        let env = self.env_step(log)?;
        if self.storage {
            self.sizing(log)?;
        }
        handoff::standby(&self.root, env.appliance.standby)?;
        if env.appliance.standby {
            log.step(
                "env",
                "appliance.standby: true",
                "stopped before storage and services",
                t.took(),
            );
            log.field("standby", "yes");
            return Ok(Ended::Standby);
        }

        log.current = "storage";
        if self.storage {
            let host = Host {
                sys: self.sys.clone(),
                root: self.root.clone(),
                open: self.open,
                mounter: self.mounter,
                cmdline: self.cmdline.clone(),
            };
            let p = policy(
                &env.appliance.storage,
                &self.sys.dev,
                self.root == Path::new("/"),
            );
            let out = storage::converge(&host, &p, log)?;
            log.field(
                "grow",
                if out.grew > 0 {
                    format!("+{}", human(out.grew))
                } else {
                    "no".into()
                },
            );
            for (v, s) in &out.volumes {
                log.field(v.key(), *s);
            }
        } else {
            log.note("storage", "skipped (--root is not /)");
        }

        log.current = "apply";
        let t = Timer::start();
        let target = apply::Target::new(self.root.clone(), self.set_running_hostname);
        let applied = apply::apply(&env, &target)?;
        for w in target.warnings.take() {
            log.note("apply", &format!("warning: {w}"));
        }
        log.step(
            "apply",
            &format!("domain {}", env.appliance.domain),
            &if applied.is_empty() {
                "nothing to change".to_string()
            } else {
                format!("{} changes: {}", applied.len(), applied.join(", "))
            },
            t.took(),
        );

        log.current = "handoff";
        handoff::ready(&self.root, &log.summary("ok"))?;
        Ok(Ended::HandedOff)
    }

    /// The sizing guide (see [`sizing`]): a warning on the console and a
    /// notice on the status page when the machine falls short.
    fn sizing(&self, log: &mut Log) -> Result<()> {
        let warning = match sizing::read(&self.sys.sys, &self.sys.meminfo) {
            Ok(m) => sizing::shortfall(m),
            Err(e) => {
                log.note("sizing", &format!("not checked: {e}"));
                None
            }
        };
        if let Some(w) = &warning {
            log.note("sizing", &format!("warning: {w}"));
        }
        handoff::notice(&self.root, "sizing", warning.as_deref())
    }

    fn env_step(&self, log: &mut Log) -> Result<Env> {
        let t = Timer::start();
        let found = discover::find(&self.sources);
        match discover::azure_ready(&self.sources) {
            Some(Ok(inc)) => log.note(
                "env",
                &format!("azure: reported ready to the wire server (incarnation {inc})"),
            ),
            Some(Err(e)) => log.note("env", &format!("warning: azure ready report: {e:#}")),
            None => {}
        }
        let found = found?;
        log.field("env", found.kind.userdata_type());
        let p = &found.provisioned;
        if p.hostname.is_some() || !p.ssh_keys.is_empty() {
            log.note(
                "env",
                &format!(
                    "{}: {} ssh key(s) added; platform host name {} (the host name stays the domain)",
                    found.kind,
                    p.ssh_keys.len(),
                    p.hostname.as_deref().unwrap_or("none")
                ),
            );
        }
        let env = found.validate()?;
        for w in &found.warnings {
            log.note("env", &format!("warning: {w}"));
        }
        for w in env.warnings.iter().chain(&env.no_effect_warnings()) {
            log.note("env", &format!("{}: {w}", found.source_name()));
        }
        let written = discover::publish(&self.root, &found, &env).context("publishing the env")?;
        log.step(
            "env",
            &format!("{} {}", found.kind, found.origin),
            &if written.is_empty() {
                "/run/active-env.* up to date".to_string()
            } else {
                format!("wrote {}", written.join(", "))
            },
            t.took(),
        );
        Ok(env)
    }
}

#[cfg(test)]
mod tests;

/// Prints the summary, records a failure; returns the exit code
/// (0 handed off or standby, 1 failed).
pub fn finish(root: &Path, result: &Result<Ended>, log: &mut Log) -> u8 {
    match result {
        Ok(Ended::HandedOff) => {
            println!("{}", log.summary("ok"));
            0
        }
        Ok(Ended::Standby) => {
            println!("{}", log.summary("standby"));
            0
        }
        Err(e) => {
            let reason = format!("{} failed: {e:#}", log.current);
            for line in reason.lines() {
                eprintln!("ecs-firstboot: {line}");
            }
            if let Err(w) = handoff::failed(root, &reason) {
                eprintln!("ecs-firstboot: {w:#}");
            }
            log.field("step", log.current);
            println!("{}", log.summary("failed"));
            1
        }
    }
}
