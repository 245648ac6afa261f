//! `imgbuild`: layer recipes → root tree → bootable disk image, plus the seed.
//!
//! `main.rs` parses the arguments ([`cli`]) and dispatches to one command
//! module ([`build`], [`treecmd`], [`envcmd`], [`envnew`], [`envpkg`], [`run`]).

pub mod archive;
pub mod assemble;
pub mod build;
pub mod cache;
pub mod cli;
pub mod disk;
pub mod entries;
pub mod env;
pub mod envcmd;
pub mod envnew;
pub mod envpdf;
pub mod envpkg;
pub mod envqr;
pub mod esp;
pub mod exit;
pub mod ext4;
pub mod fsutil;
pub mod grub;
pub mod imagecache;
pub mod logging;
pub mod mount;
pub mod openpgp;
pub mod outpath;
pub mod output;
pub mod pockets;
pub mod progress;
pub mod recipe;
pub mod rootfs;
pub mod run;
pub mod sbom;
#[cfg(test)]
mod testutil;
pub mod tlscheck;
pub mod treecmd;
pub mod treediff;
