//! The table against the reference (`docs/env.md`) and against the model's
//! own key lists; the warnings an env gets from it.

use std::collections::BTreeSet;

use super::*;
use crate::env::check::Checker;
use crate::env::Env;
use crate::secret::secret_root;
use crate::yaml;

/// An env that sets every key of the reference (and every map of the
/// model), each to a valid value; the secrets are `S3CR3T-...`.
const EVERY_KEY: &str = r#"#cloud-config
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example"]
ssh_deprecated_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe old@example"]
disable_root: false
appliance:
  domain: ecs.example.org
  standby: false
  allowed_hosts: ecs.example.org
  ssl:
    letsencrypt:
      enabled: true
      directory: https://acme.example.org/directory
      directory_ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    client_certs_mandatory: false
    cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key: "S3CR3T-TLS-KEY"
  sentry: {dsn: "https://S3CR3T-DSN@sentry.example.org/1"}
  metric: {exporter: true, server: false, gui: true, pghero: false}
  git: {branch: main, source: "https://example.org/a.git", commitid: abc123}
  extra:
    files:
      - {path: /etc/motd, contents: S3CR3T-FILE, owner: "root:root", permissions: 0644}
    packages: [qrencode]
    states: "x: y"
  update: {automatic: true, oncalendar: "*-*-* 06:30:00"}
  dkim: {key: S3CR3T-DKIM}
  backup:
    url: "ssh://u:S3CR3T-PW@backup.example.org/x"
    options: "--verbose"
    mount: {type: cifs, source: //nas/b, target: /mnt/b, options: "password=S3CR3T-MOUNT"}
    encrypt: S3CR3T-ENCRYPT
  storage:
    ignore: {data: false, volatile: false}
    grow_root: true
    root_size: 8G
    data: {size: 20G}
    volatile: {device: /dev/vdb}
ecs:
  settings: "SECRET_KEY = 'S3CR3T-SETTINGS'"
  vault_encrypt: S3CR3T-ENC
  vault_sign: S3CR3T-SIGN
  git: {branch: main, source: "https://example.org/e.git", commitid: def456}
  docs: {git: {source: "https://example.org/d.git", branch: main}}
  database: ecs
  userswitcher: {enabled: false}
"#;

/// `docs/env.md`'s key tables: each documented key (a full dotted path)
/// with the cell "in this image" of its row.
///
/// A section `## Top level` holds top-level keys, a section
/// ``## `PATH` `` the keys below `PATH`; every backquoted word in a row's
/// first cell is a key (`ssl.cert`, `ssl.key` (S) are two).
fn documented() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/env.md"))
        .expect("reading docs/env.md");
    let mut prefix: Option<String> = None;
    let mut effect_col = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            prefix = if h == "Top level" {
                Some(String::new())
            } else {
                h.strip_prefix('`')
                    .and_then(|h| h.strip_suffix('`'))
                    .map(|p| format!("{p}."))
            };
            effect_col = None;
            continue;
        }
        let Some(prefix) = &prefix else { continue };
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        if cells[0] == "key" {
            effect_col = cells.iter().position(|c| *c == "in this image");
            continue;
        }
        let Some(col) = effect_col else { continue };
        if !cells[0].starts_with('`') {
            continue;
        }
        let keys: Vec<&str> = cells[0].split('`').skip(1).step_by(2).collect();
        for k in keys {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    && !k.starts_with('.'),
                "docs/env.md: `{k}` is not a key path (write every key in full)"
            );
            out.push((format!("{prefix}{k}"), cells[col].to_string()));
        }
    }
    out
}

/// The leaves of a set of paths: those no other path lies below.
fn leaves(paths: &BTreeSet<String>) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}."))))
        .cloned()
        .collect()
}

fn table() -> BTreeSet<String> {
    EFFECTS.iter().map(|(p, _)| p.to_string()).collect()
}

#[test]
fn the_table_has_each_key_once() {
    assert_eq!(table().len(), EFFECTS.len(), "a key listed twice");
    assert_eq!(leaves(&table()), table(), "an entry below another");
}

#[test]
fn the_docs_document_every_key_of_the_table_and_no_other() {
    let docs = documented();
    let keys: BTreeSet<String> = docs.iter().map(|(k, _)| k.clone()).collect();
    assert!(keys.contains("appliance.storage.grow_root"), "{keys:?}");
    let leaves = leaves(&keys);
    let t = table();
    let undocumented: Vec<_> = t.difference(&leaves).collect();
    let unlisted: Vec<_> = leaves.difference(&t).collect();
    assert!(
        undocumented.is_empty() && unlisted.is_empty(),
        "in the table, not in docs/env.md: {undocumented:?}; in docs/env.md, not in the \
         table: {unlisted:?}"
    );
    for (key, cell) in docs.iter().filter(|(k, _)| leaves.contains(k)) {
        let says_none = cell.starts_with("accepted, no effect yet");
        match effect(key).unwrap() {
            Effect::None => assert!(
                says_none,
                "{key}: no effect in the table, docs/env.md says: {cell}"
            ),
            Effect::Applied(what) => {
                assert!(
                    !says_none && !cell.contains("no effect"),
                    "{key}: applied by {what} in the table, docs/env.md says: {cell}"
                );
                assert!(
                    cell.contains(what),
                    "{key}: docs/env.md does not name {what} (the table's effect): {cell}"
                );
            }
        }
    }
}

/// Every key the model knows (the key lists of the maps it checks, read
/// while checking [`EVERY_KEY`]) is in the table, or a map above entries
/// of the table, or below an entry; every entry is a key of the model.
#[test]
fn the_model_knows_every_key_of_the_table_and_no_other() {
    let text = yaml::decode(EVERY_KEY.as_bytes()).unwrap();
    let doc = yaml::load_with(text, &secret_root).unwrap().unwrap();
    let mut c = Checker {
        text,
        errors: Vec::new(),
        warnings: Vec::new(),
        known: Some(BTreeSet::new()),
    };
    assert!(c.env(doc.clone(), text).is_some());
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let known = c.known.unwrap();
    let t = table();
    let node_at = |path: &str| path.split('.').try_fold(&doc, |n, p| n.get(p));
    for k in &known {
        // `appliance.extra.files[0].path` is below `appliance.extra.files`.
        let plain = k.split('[').next().unwrap();
        let below = |e: &String| (plain == e && plain != k) || k.starts_with(&format!("{e}."));
        if t.contains(k) || t.iter().any(below) {
            continue;
        }
        assert!(
            t.iter().any(|e| e.starts_with(&format!("{k}."))),
            "{k}: a key of the model that the effects table does not list"
        );
        // A map above entries: EVERY_KEY sets it, so its own keys were read.
        assert!(
            matches!(node_at(k).map(|n| &n.value), Some(Value::Map(_))),
            "{k}: a map of the model that EVERY_KEY does not set"
        );
    }
    let missing: Vec<_> = t.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "in the table, unknown to the model: {missing:?}"
    );
}

#[test]
fn every_key_without_effect_is_reported_by_name_and_nothing_else() {
    let env = Env::parse(EVERY_KEY.as_bytes(), "env.yml").unwrap();
    let w = env.no_effect_warnings();
    let reported: Vec<String> = w.iter().map(|p| p.message.clone()).collect();
    let expected: Vec<String> = EFFECTS
        .iter()
        .filter(|(_, e)| *e == Effect::None)
        .map(|(p, _)| format!("accepted, no effect in this image: {p}"))
        .collect();
    assert_eq!(reported, expected);
    let shown: Vec<String> = w.iter().map(|p| p.to_string()).collect();
    let line = 1 + EVERY_KEY
        .lines()
        .position(|l| l.starts_with("  allowed_hosts: "))
        .unwrap();
    let url = format!("{line}:3: accepted, no effect in this image: appliance.allowed_hosts");
    assert!(shown.contains(&url), "{url} in {shown:?}");
    assert!(!shown.join("\n").contains("S3CR3T"), "{shown:?}");
}

#[test]
fn only_keys_the_env_sets_are_reported() {
    let src = "#cloud-config\nruncmd: [echo hi]\npackages: [htop]\nappliance:\n  domain: ecs.example.org\n  standby: true\n  metric: {server: ~, gui: true}\n  dkim:\necs:\n  settings: x\n  vault_encrypt: x\n  vault_sign: x\n  git: {commitid: ''}\n  docs: {git: {branch: x}}\n";
    let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
    let paths: Vec<String> = env
        .no_effect_warnings()
        .iter()
        .map(|p| {
            p.message
                .strip_prefix("accepted, no effect in this image: ")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(paths, ["appliance.metric.gui", "ecs.docs.git.branch",]);
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
}

/// `env-update`'s list of what changed: the reference's keys whose value
/// differs, not positions, not absent against null.
#[test]
fn changed_keys_names_what_differs() {
    let old = yaml::load(
        "appliance:\n  domain: a.example.org\n  extra:\n    files: [{path: /x, contents: one}]\n\
         ssh_authorized_keys: [k1]\necs: {database: ecs}\n",
    )
    .unwrap()
    .unwrap();
    let new = yaml::load(
        "# moved around\nssh_authorized_keys: [k1, k2]\necs:\n  database: ecs\n  settings: null\n\
         appliance:\n  extra:\n    files:\n      - {contents: two, path: /x}\n  domain: a.example.org\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        changed_keys(Some(&old), &new),
        vec!["ssh_authorized_keys", "appliance.extra.files"]
    );
    assert!(changed_keys(Some(&new), &new).is_empty());
    let reordered = yaml::load(
        "ecs: {database: ecs}\nssh_authorized_keys: [k1, k2]\nappliance:\n  domain: a.example.org\n  \
         extra: {files: [{path: /x, contents: two}]}\n",
    )
    .unwrap()
    .unwrap();
    assert!(changed_keys(Some(&new), &reordered).is_empty());
    assert_eq!(
        changed_keys(None, &old),
        vec![
            "ssh_authorized_keys",
            "appliance.domain",
            "appliance.extra.files",
            "ecs.database"
        ]
    );
}
