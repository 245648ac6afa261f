//! `imgbuild`: layer recipes → root tree → bootable disk image, plus the seed.
//!
//! `main.rs` only parses arguments ([`cli`]) and calls into these modules.

pub mod cli;
pub mod envcmd;
pub mod exit;
pub mod logging;
