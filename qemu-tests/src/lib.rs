//! Boot tests in QEMU: the harness that builds the test images and boots them
//! ([`harness`]), the guest's report ([`report`]) and test trees
//! ([`fixtures`]). The VM launcher itself is the `vm` crate, re-exported
//! here.

pub use vm::*;

pub mod acme;
pub mod fixtures;
pub mod harness;
pub mod peers;
pub mod report;
