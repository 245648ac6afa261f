//! Reading a seed filesystem without mounting it.
//!
//! `ecs-firstboot` looks for its env on any attached disk: a NoCloud seed
//! (ISO9660 or vfat, labelled `cidata`/`CIDATA`) or an OpenStack `config-2`
//! drive. The kernel may lack iso9660/vfat, and mounting an untrusted
//! filesystem is a larger attack surface than reading a few files, so this
//! module reads them in userspace:
//!
//! - [`probe`] reads only the volume descriptors / boot sector and returns the
//!   filesystem kind and label; use it to scan devices cheaply.
//! - [`read_seed`] detects ISO9660 (with Rock Ridge, Joliet or plain names; see
//!   [`crate::iso`]) or FAT12/16/32 (with long file names; see [`crate::fat`])
//!   and returns every regular file, keyed by its relative path
//!   (`user-data`, `openstack/latest/user_data`), and names what is neither
//!   a file nor a directory (a Rock Ridge symbolic link: [`Seed::not_regular`])
//!   without reading it;
//! - a UDF volume without ISO9660 descriptors (Azure's provisioning DVD;
//!   see [`crate::udf`]) the same way. A hybrid ISO9660/UDF image is read
//!   as ISO9660.
//!
//! The input is untrusted: every length and pointer read from it is checked
//! against the device size and against [`Limits`] before anything is
//! allocated, directory loops and looping cluster chains are detected, and no
//! input makes the reader panic (a fuzz target, `fuzz/` `seed_reader`, checks
//! that).

use std::io::{Read, Seek};

use crate::seedfs::Device;
pub use crate::seedfs::{FsKind, Limits, Seed, SeedError};

/// Reads the seed filesystem on `r` with the default [`Limits`].
pub fn read_seed<R: Read + Seek>(r: R) -> Result<Seed, SeedError> {
    read_seed_with_limits(r, &Limits::default())
}

/// Reads the seed filesystem on `r`, refusing anything beyond `limits`.
pub fn read_seed_with_limits<R: Read + Seek>(r: R, limits: &Limits) -> Result<Seed, SeedError> {
    let mut dev = Device::new(r)?;
    if crate::iso::has_signature(&mut dev)? {
        return crate::iso::read(&mut dev, limits);
    }
    if crate::udf::has_signature(&mut dev)? {
        return crate::udf::read(&mut dev, limits);
    }
    if let Some(bpb) = crate::fat::Bpb::probe(&mut dev)? {
        return crate::fat::read(&mut dev, bpb, limits);
    }
    Err(SeedError::NotSeed)
}

/// Cheaply identifies a seed filesystem: reads only the ISO9660 or UDF volume
/// descriptors, or the FAT boot sector and root directory, and returns the
/// kind and the label (empty if none; for FAT the root directory's volume
/// label entry first, then the boot sector's, as blkid does). `None` for
/// anything else, including read errors.
pub fn probe<R: Read + Seek>(r: R) -> Option<(FsKind, String)> {
    let mut dev = Device::new(r).ok()?;
    if crate::iso::has_signature(&mut dev).ok()? {
        return crate::iso::probe_label(&mut dev).map(|label| (FsKind::Iso9660, label));
    }
    if crate::udf::has_signature(&mut dev).ok()? {
        return crate::udf::probe_label(&mut dev).map(|label| (FsKind::Udf, label));
    }
    let bpb = crate::fat::Bpb::probe(&mut dev).ok()??;
    let kind = bpb.kind;
    Some((kind, crate::fat::label(&mut dev, bpb)))
}
