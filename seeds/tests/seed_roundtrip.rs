//! Property: any valid env → seed ISO → seed reader gives back the env bytes
//! (user-data verbatim) and meta-data naming the env's domain.

use proptest::prelude::*;
use seeds::env::Env;
use seeds::nocloud::{seed_files, SeedInputs, VOLUME_ID};
use seeds::seed::{read_seed, FsKind};
use std::io::Cursor;

/// A YAML double-quoted string holding `s` (escapes for `"`, `\` and controls).
fn dq(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key() -> impl Strategy<Value = String> {
    // No `_` in keys: joined names then never collide.
    "[a-z][a-z0-9]{0,11}"
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| dq(&s)),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("~".to_string()),
        "[a-z]{1,8}( [a-z]{1,8}){0,3}",
    ]
}

/// A flow-style YAML value: scalar, list or map, a few levels deep.
fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::btree_map(key(), inner, 0..5).prop_map(|m| {
                let body: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

fn env_text() -> impl Strategy<Value = String> {
    (
        "ecs-[a-z]{1,10}(\\.[a-z]{1,10}){0,2}",
        prop::collection::btree_map(key().prop_map(|k| format!("x{k}")), value(), 0..6),
        prop::collection::btree_map(key().prop_map(|k| format!("x{k}")), value(), 0..6),
        prop::collection::btree_map(key().prop_map(|k| format!("top{k}")), value(), 0..4),
        any::<String>(),
    )
        .prop_map(|(domain, app, ecs, top, settings)| {
            let mut s = String::from("#cloud-config\n");
            for (k, v) in top {
                s.push_str(&format!("{k}: {v}\n"));
            }
            s.push_str(&format!("appliance:\n  domain: {domain}\n"));
            for (k, v) in app {
                s.push_str(&format!("  {k}: {v}\n"));
            }
            s.push_str(&format!(
                "ecs:\n  settings: {}\n  vault_encrypt: e\n  vault_sign: s\n",
                dq(&settings)
            ));
            for (k, v) in ecs {
                s.push_str(&format!("  {k}: {v}\n"));
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn env_survives_the_seed_round_trip(text in env_text(), epoch in 0i64..4_000_000_000) {
        let env = Env::parse(text.as_bytes(), "env.yml")
            .map_err(|e| TestCaseError::fail(format!("generated env invalid: {e}\n{text}")))?;
        let files = seed_files(&SeedInputs {
            env_bytes: text.as_bytes(),
            env: &env,
            network_config: None,
            instance_id: None,
        }).unwrap();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let iso = seeds::iso::write_iso(VOLUME_ID, &refs, epoch).unwrap();
        let seed = read_seed(Cursor::new(&iso)).unwrap();
        prop_assert_eq!(seed.kind, FsKind::Iso9660);
        prop_assert_eq!(seed.label.as_str(), "cidata");
        prop_assert_eq!(seed.get("user-data"), Some(text.as_bytes()));
        let meta = String::from_utf8(seed.get("meta-data").unwrap().to_vec()).unwrap();
        let expected_hostname = format!("local-hostname: {}\n", env.appliance.domain);
        prop_assert!(meta.ends_with(&expected_hostname), "{}", meta);
        // And the env read back from the seed is the same env.
        let again = Env::parse(seed.get("user-data").unwrap(), "user-data").unwrap();
        prop_assert_eq!(again.flatten_for_units(), env.flatten_for_units());
    }
}
