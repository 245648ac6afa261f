//! Every env rule (seeds/tests/rules/table.rs) through the real binary:
//! `imgbuild env check` and `imgbuild seed` exit 2, name the file, line,
//! column and key path, write no output, and show no secret on stdout or
//! stderr. The string alias bomb also runs under a 1 GiB address-space
//! limit and must be refused in under a second.

use std::path::Path;
use std::process::{Command, Output};

#[allow(dead_code)]
#[path = "../../seeds/tests/rules/table.rs"]
mod table;

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running imgbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shorten(s: &str) -> String {
    s.chars().take(2000).collect()
}

#[test]
fn every_env_rule_exits_2_with_line_path_and_no_secret() {
    let d = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for c in table::cases() {
        let env = d.path().join("env.yml");
        std::fs::write(&env, &c.env).unwrap();
        let iso = d.path().join("seed.iso");
        let (env_s, iso_s) = (env.to_str().unwrap(), iso.to_str().unwrap());
        for args in [
            vec!["env", "check", env_s],
            vec!["seed", "--env", env_s, "-o", iso_s],
        ] {
            let o = imgbuild(&args);
            let (out, err) = (text(&o.stdout), text(&o.stderr));
            let want = format!("imgbuild: error: {env_s}:{} ", c.at);
            if o.status.code() != Some(2) {
                failed.push(format!("{} {:?}: exit {:?}", c.name, args[0], o.status));
            }
            if !err
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(c.says))
            {
                failed.push(format!(
                    "{} {:?}: no line `{want}... {}` in:\n{}",
                    c.name,
                    args[0],
                    c.says,
                    shorten(&err)
                ));
            }
            let both = format!("{out}{err}").to_lowercase();
            if both.contains(table::SECRET_MARKER) {
                failed.push(format!("{} {:?}: a secret in the output", c.name, args[0]));
            }
            if both.contains('\u{1b}') || both.contains("panicked") {
                failed.push(format!("{} {:?}: {}", c.name, args[0], shorten(&err)));
            }
            if iso.exists() {
                failed.push(format!("{}: a seed was written", c.name));
                std::fs::remove_file(&iso).unwrap();
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Runs imgbuild with at most 1 GiB of address space.
fn imgbuild_limited(args: &[&str]) -> (Output, std::time::Duration) {
    let t = std::time::Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running sh");
    (o, t.elapsed())
}

#[test]
fn string_alias_bomb_is_refused_fast_in_1_gib() {
    let d = tempfile::tempdir().unwrap();
    let bomb = table::cases()
        .into_iter()
        .find(|c| c.name == "string-alias-bomb")
        .unwrap();
    let env = d.path().join("bomb.yml");
    std::fs::write(&env, &bomb.env).unwrap();
    let iso = d.path().join("s.iso");
    for args in [
        vec!["env", "check", env.to_str().unwrap()],
        vec!["env", "check", "--flatten", env.to_str().unwrap()],
        vec![
            "seed",
            "--env",
            env.to_str().unwrap(),
            "-o",
            iso.to_str().unwrap(),
        ],
    ] {
        let (o, took) = imgbuild_limited(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&format!("bomb.yml:{}", bomb.at)), "{err}");
        assert!(err.contains("alias bomb"), "{err}");
        assert!(took.as_secs_f64() < 1.0, "{args:?} took {took:?}");
    }
    assert!(!Path::new(&iso).exists());
}
