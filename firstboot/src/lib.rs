//! `ecs-firstboot`: the first-boot agent of the ECS appliance.
//!
//! A converging state machine: every step reads the facts from disk and does
//! only what is missing (see DESIGN.md, "First boot").

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
pub mod storage;
#[cfg(test)]
pub(crate) mod testutil;
pub mod volumes;
