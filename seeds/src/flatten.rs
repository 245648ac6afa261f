//! The flattened env: `NAME=value` lines that the appliance's shell units source.
//!
//! Byte-compatible with the original appliance's flattener (see
//! `shared/reference/flatten/`): nested keys joined with `_` and upper-cased,
//! list items `NAME_0`, `NAME_1`, ... plus `NAME_LEN`, strings stripped and
//! quoted like Python's `shlex.quote`, booleans `true`/`false`, null empty,
//! numbers as Python prints them. Within a tree the joined keys are sorted in
//! their original spelling (byte order), then upper-cased.
//!
//! Where the original printed something a shell cannot source (a name that is
//! not a shell variable name, or two keys that collide once upper-cased), this
//! refuses the env and names the key instead.

use std::collections::BTreeMap;
use std::fmt;

use crate::yaml::{python_float_repr, Node, Pos, Value};

/// Which top-level trees to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trees {
    /// Every top-level key (`.`), names without a tree prefix of their own.
    All,
    /// These top-level keys, in this order.
    Named(Vec<String>),
}

impl Trees {
    /// Parses `.` or a comma-separated list such as `ecs,appliance`.
    pub fn parse(s: &str) -> Trees {
        if s.trim() == "." {
            Trees::All
        } else {
            Trees::Named(
                s.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            )
        }
    }

    /// The appliance units' form: `ecs,appliance`.
    pub fn appliance() -> Trees {
        Trees::Named(vec!["ecs".into(), "appliance".into()])
    }
}

/// A key that would make a name the shell cannot source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlattenError {
    pub pos: Pos,
    /// The key path as the user wrote it (`appliance.x-y`).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FlattenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.pos, self.path, self.message)
    }
}

impl std::error::Error for FlattenError {}

struct Entry {
    /// The joined name in its original spelling (sorted on this).
    joined: String,
    /// The key path for messages (`ecs.nested[1].k`).
    path: String,
    pos: Pos,
    /// The printed value (already quoted).
    value: String,
}

/// Flattens `doc` (the whole env) into lines `{prefix}NAME=value\n`.
pub fn flatten(doc: &Node, trees: &Trees, prefix: &str) -> Result<String, Vec<FlattenError>> {
    let mut out = String::new();
    let mut errors = Vec::new();
    let groups: Vec<Vec<Entry>> = match trees {
        Trees::All => vec![collect(doc, "", "")],
        Trees::Named(names) => names
            .iter()
            .filter_map(|name| {
                doc.get(name)
                    .map(|tree| collect(tree, name.as_str(), name.as_str()))
            })
            .collect(),
    };
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for mut group in groups {
        group.sort_by(|a, b| a.joined.as_bytes().cmp(b.joined.as_bytes()));
        for e in group {
            let name = e.joined.to_uppercase();
            if !is_shell_name(&name) {
                errors.push(FlattenError {
                    pos: e.pos,
                    path: e.path.clone(),
                    message: format!(
                        "makes the variable name `{name}`, which a shell cannot source \
                         (use letters, digits and `_` in keys)"
                    ),
                });
                continue;
            }
            if let Some((other, other_pos)) = seen.get(&name) {
                errors.push(FlattenError {
                    pos: e.pos,
                    path: e.path.clone(),
                    message: format!(
                        "collides with `{other}` (line {}): both become `{name}`",
                        other_pos.line
                    ),
                });
                continue;
            }
            seen.insert(name.clone(), (e.path.clone(), e.pos));
            out.push_str(prefix);
            out.push_str(&name);
            out.push('=');
            out.push_str(&e.value);
            out.push('\n');
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Collects the entries below `node`, whose joined name so far is `joined`.
fn collect(node: &Node, joined: &str, path: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    walk(node, joined, path, &mut out);
    out
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}_{b}")
    }
}

fn join_path(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

fn walk(node: &Node, joined: &str, path: &str, out: &mut Vec<Entry>) {
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = k.key_string();
                walk(v, &join(joined, &key), &join_path(path, &key), out);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(
                    item,
                    &join(joined, &i.to_string()),
                    &format!("{path}[{i}]"),
                    out,
                );
            }
            out.push(Entry {
                joined: join(joined, "LEN"),
                path: path.to_string(),
                pos: node.pos,
                value: items.len().to_string(),
            });
        }
        scalar => out.push(Entry {
            joined: joined.to_string(),
            path: path.to_string(),
            pos: node.pos,
            value: scalar_text(scalar),
        }),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float_repr(*f),
        Value::Str(s) => shell_quote(python_strip(s)),
        Value::Timestamp(s) => shell_quote(s),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

/// Python's `str.isspace()`: Unicode whitespace plus the ASCII separators
/// U+001C..U+001F, which Rust does not count as whitespace.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(python_space)
}

/// Quotes like Python's `shlex.quote`: bare when every character is in
/// `[A-Za-z0-9_@%+=:,./-]`, else single-quoted with `'` as `'"'"'`.
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r#"'"'"'"#))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    fn flat(src: &str, trees: &str) -> Result<String, Vec<FlattenError>> {
        let doc = load(src).unwrap().unwrap();
        flatten(&doc, &Trees::parse(trees), "")
    }

    #[test]
    fn quoting_like_shlex() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_quote("abc-DEF_1.2/3:4@5%6+7=8,9"),
            "abc-DEF_1.2/3:4@5%6+7=8,9"
        );
        assert_eq!(shell_quote("it's"), r#"'it'"'"'s'"#);
        assert_eq!(shell_quote("ü"), "'ü'");
        assert_eq!(python_strip("\u{1f} x \u{a0}"), "x");
    }

    #[test]
    fn lists_and_empty_collections() {
        assert_eq!(
            flat("a: {l: [], m: {}, s: [x, {k: 1}]}\n", ".").unwrap(),
            "A_L_LEN=0\nA_S_0=x\nA_S_1_K=1\nA_S_LEN=2\n"
        );
    }

    #[test]
    fn unsourceable_key_is_named() {
        let e = flat("ecs: {x-y: 1}\n", "ecs").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "ecs.x-y");
        assert!(e[0].to_string().contains("`ECS_X-Y`"), "{}", e[0]);
    }

    #[test]
    fn colliding_keys_are_named() {
        let e = flat("ecs: {a: {b_c: 1}, a_b: {c: 2}}\n", "ecs").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("both become `ECS_A_B_C`"), "{}", e[0]);
        let e = flat("ecs: {Key: 1, key: 2}\n", "ecs").unwrap_err();
        assert!(e[0].message.contains("ECS_KEY"), "{}", e[0]);
    }

    #[test]
    fn missing_tree_prints_nothing() {
        assert_eq!(flat("a: 1\n", "ecs").unwrap(), "");
    }
}
