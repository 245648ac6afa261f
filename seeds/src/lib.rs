//! The ECS appliance's env model and its cidata seed.
//!
//! Both programs use this crate: `imgbuild` to validate the env and write the
//! seed ISO, `ecs-firstboot` to find, read and validate the env at boot.

pub mod atomic;
pub mod base64;
pub mod cachedir;
pub mod calendar;
pub mod civil;
pub mod cmd;
pub mod dkim;
pub mod env;
pub mod fat;
pub mod flatten;
pub mod iso;
pub mod mountinfo;
pub mod nocloud;
pub mod secret;
pub mod seed;
pub mod seedfs;
pub mod udf;
pub mod yaml;
