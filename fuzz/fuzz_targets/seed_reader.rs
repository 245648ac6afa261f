//! Feeds arbitrary bytes to the seed reader: it must return, never panic,
//! and never allocate beyond its limits.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = seeds::seed::read_seed(Cursor::new(data));
    let _ = seeds::seed::probe(Cursor::new(data));
});
