//! Arbitrary bytes as env.yml: parsing, validation and flattening must never
//! panic, hang or blow up memory (the loader's limits must hold).
#![no_main]

use libfuzzer_sys::fuzz_target;
use seeds::env::Env;
use seeds::flatten::{flatten, Trees};

fuzz_target!(|data: &[u8]| {
    match Env::parse(data, "fuzz.yml") {
        Ok(env) => {
            let _ = env.flatten_for_units();
            let _ = flatten(&env.doc.0, &Trees::All, "");
            let _ = format!("{env:?}");
        }
        Err(e) => {
            assert!(
                !e.problems.is_empty(),
                "an error names at least one problem"
            );
            let _ = e.to_string();
        }
    }
});
