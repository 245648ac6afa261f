//! `ecs-firstboot`: the first-boot agent of the ECS appliance.
//!
//! A converging state machine: every step reads the facts from disk and does
//! only what is missing (see DESIGN.md, "First boot"), so an interrupted boot
//! converges on the next one and a boot with nothing to do writes nothing.
//!
//! | step | modules |
//! | --- | --- |
//! | 1. env: find, validate, publish `/run/active-env.{yml,env}` | [`discover`] |
//! | 2. grow root, 3. volumes `ecs-data`/`ecs-volatile` | [`storage`] → [`facts`] ([`sysfs`], [`probe`]) → [`plan`] (pure) → [`table`] ([`blkpg`]), [`volumes`] |
//! | 4. apply: host name, ssh keys, extra files, flags, directories | [`apply`] ([`safefs`]) |
//! | 5. hand-off: `/run/ecs-firstboot.ready`, or `/run/appliance-failed` | [`handoff`] |
//! | order, summary, exit code | [`agent`], [`log`], [`cmdline`] |
//! | `env-update`: a running appliance takes a changed env | [`update`] (→ [`discover`], [`apply`]) |
//!
//! Output: one line per step on stderr (`ecs-firstboot: step=NAME found=...
//! did=... took=Nms`), one summary line on stdout (`ecs-firstboot: ok
//! env=cidata grow=+7.8GiB data=created volatile=mounted 412ms`; `standby`
//! or `failed step=NAME` instead of `ok`); the unit sends both to the journal
//! and the console. No env value other than the domain is ever printed.
//!
//! Exit codes: 0 handed off or standby, 1 a step failed (the reason is in
//! `/run/appliance-failed`), 2 bad arguments.
//!
//! Kernel command line (tests only): `ecs.firstboot.pause=grow|volumes`
//! sleeps at that point so a boot test can cut the power (see [`cmdline`]).

pub mod blkpg;
pub mod plan;
pub mod probe;
pub mod sysfs;
pub mod table;

pub mod agent;
pub mod apply;
pub mod cmdline;
pub mod discover;
pub mod facts;
pub mod handoff;
pub mod log;
pub mod safefs;
pub mod sizing;
pub mod storage;
#[cfg(test)]
pub(crate) mod testutil;
pub mod update;
pub mod volumes;
