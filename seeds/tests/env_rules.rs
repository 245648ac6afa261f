//! Every env rule (tests/rules/table.rs) against the model: the env is
//! refused, one problem is at the expected line, column and key path and says
//! what is wrong, and no problem shows a secret.

#[path = "rules/table.rs"]
mod table;

use seeds::env::Env;

#[test]
fn every_rule_refuses_with_line_path_and_no_secret() {
    let mut failed = Vec::new();
    for c in table::cases() {
        let t = std::time::Instant::now();
        let lines = match Env::parse(&c.env, "env.yml") {
            Ok(_) => {
                failed.push(format!("{}: accepted", c.name));
                continue;
            }
            Err(e) => e.lines(),
        };
        let all = lines.join("\n");
        let want = format!("env.yml:{} ", c.at);
        if !lines
            .iter()
            .any(|l| l.starts_with(&want) && l.contains(c.says))
        {
            failed.push(format!(
                "{}: no problem `{want}... {}`; got:\n{}",
                c.name,
                c.says,
                shorten(&all)
            ));
        }
        if all.to_lowercase().contains(table::SECRET_MARKER) {
            failed.push(format!("{}: a secret in:\n{}", c.name, shorten(&all)));
        }
        if all.contains('\u{1b}') || all.contains('\0') {
            failed.push(format!("{}: a raw control character in a message", c.name));
        }
        if all.len() > 4096 {
            failed.push(format!("{}: {} bytes of messages", c.name, all.len()));
        }
        if t.elapsed().as_secs() >= 2 {
            failed.push(format!("{}: took {:?}", c.name, t.elapsed()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn the_base_env_and_the_example_pass() {
    let env = Env::parse(table::BASE.as_bytes(), "env.yml").unwrap();
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    let example = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/env.yml"));
    Env::parse(&example.unwrap(), "examples/env.yml").unwrap();
}

/// What the rules still accept: the forms next to each refused one.
#[test]
fn neighbours_of_the_rules_are_accepted() {
    for (name, env) in [
        ("mode-octal", table::file("path: /etc/x, permissions: 0644")),
        (
            "mode-quoted",
            table::file("path: /etc/x, permissions: '644'"),
        ),
        (
            "mode-sticky",
            table::file("path: /etc/x, permissions: 01777"),
        ),
        ("mode-zero", table::file("path: /etc/x, permissions: 0")),
        (
            "owner-ids",
            table::file("path: /etc/x, owner: '1000:4294967294'"),
        ),
        ("path-var-run-other", table::file("path: /var/run/x.conf")),
        ("path-run-other", table::file("path: /run/active-envx")),
        ("path-devices-lookalike", table::file("path: /devices/x")),
        (
            "device-by-id",
            table::with("  storage: {data: {device: /dev/disk/by-id/virtio-data}}\n"),
        ),
        (
            "device-nvme",
            table::with("  storage: {data: {device: /dev/nvme1n1}}\n"),
        ),
        (
            "size-minimum",
            table::with("  storage: {data: {size: 16M}}\n"),
        ),
        (
            "calendar",
            table::with("  update: {oncalendar: 'Mon..Fri *-*-* 06:30:00 UTC'}\n"),
        ),
        (
            "calendar-shorthand",
            table::with("  update: {oncalendar: daily}\n"),
        ),
        (
            "multi-line-text",
            table::replaced(
                "settings: \"SECRET_KEY = 'hunter2-SECRET'\"",
                "settings: \"A = 1\\n\\tB = 2\\n\"",
            ),
        ),
        (
            "unknown-key-multi-line",
            table::with("  notes: |\n    one\n    two\n"),
        ),
        (
            "ssh-key-unpadded-no-comment",
            table::replaced(
                "AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example",
                "AAAAC3NzaC1lZDI1NTE5AAAAIF0",
            ),
        ),
        (
            "ssh-key-comment-with-spaces",
            table::replaced("admin@example", "the admin at example"),
        ),
        (
            "domain-numeric-label",
            table::replaced("ecs.example.org", "1.example.org"),
        ),
    ] {
        if let Err(e) = Env::parse(&env, "env.yml") {
            panic!("{name}: refused:\n{e}");
        }
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 2000 {
        format!("{}…", &s[..s.floor_char_boundary_compat(2000)])
    } else {
        s.to_string()
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}
