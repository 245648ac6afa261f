//! The flattener against the original appliance's output, byte for byte.

use std::fs;
use std::path::PathBuf;

use seeds::flatten::{flatten, Trees};
use seeds::yaml;

fn vectors() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/flatten");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 4,
        "expected the reference vectors in {}",
        dir.display()
    );
    v
}

fn check(trees: &str, prefix: &str, suffix: &str) {
    for yml in vectors() {
        let src = fs::read(&yml).unwrap();
        let doc = yaml::load(yaml::decode(&src).unwrap()).unwrap().unwrap();
        let got = flatten(&doc, &Trees::parse(trees), prefix)
            .unwrap_or_else(|e| panic!("{}: {e:?}", yml.display()));
        let expected_path = yml.with_extension(suffix);
        let expected = fs::read_to_string(&expected_path).unwrap();
        assert!(
            got == expected,
            "{}: flattened output differs\n--- expected\n{expected}\n--- got\n{got}",
            expected_path.display()
        );
    }
}

#[test]
fn export_mode_matches_reference() {
    check("ecs,appliance", "export ", "export.expected");
}

#[test]
fn all_mode_matches_reference() {
    check(".", "", "all.expected");
}
