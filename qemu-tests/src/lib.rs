//! Boot tests in QEMU.
