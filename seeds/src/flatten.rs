//! The flattened env: `NAME=value` lines that the appliance's shell units source.
//!
//! Byte-compatible with the original appliance's flattener (see
//! the vectors in `seeds/tests/vectors/flatten/`): nested keys joined with `_` and upper-cased,
//! list items `NAME_0`, `NAME_1`, ... plus `NAME_LEN`, strings stripped and
//! quoted like Python's `shlex.quote`, booleans `true`/`false`, null empty,
//! numbers as Python prints them. Within a tree the joined keys are sorted in
//! their original spelling (byte order), then upper-cased.
//!
//! Where the original printed something a shell cannot source (a name that is
//! not a shell variable name, or two keys that collide once upper-cased), this
//! refuses the env and names the key instead; a key below a secret (a secret
//! written as a map) is never named, only the secret's path.
//!
//! The output is bounded ([`MAX_FLAT_BYTES`]): every name repeats its
//! parents' keys, so a long key over many children, or aliases, could
//! otherwise make gigabytes from a small document.

use std::collections::BTreeMap;
use std::fmt;

use crate::secret::secret_root;
use crate::yaml::{printable, python_float_repr, Node, Pos, Value};

/// Most bytes of flattened names, paths and values made from one document.
pub const MAX_FLAT_BYTES: usize = 4 * crate::yaml::MAX_BYTES;

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
    let mut w = Walk {
        out: Vec::new(),
        budget: MAX_FLAT_BYTES,
        over: None,
    };
    let mut groups: Vec<Vec<Entry>> = Vec::new();
    match trees {
        Trees::All => {
            walk(doc, "", "", &mut w);
            groups.push(std::mem::take(&mut w.out));
        }
        Trees::Named(names) => {
            for name in names {
                if let Some(tree) = doc.get(name) {
                    let shown = printable(name);
                    walk(tree, name, &shown, &mut w);
                    groups.push(std::mem::take(&mut w.out));
                }
            }
        }
    }
    if let Some((pos, path)) = w.over {
        return Err(vec![too_large(pos, path)]);
    }
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for mut group in groups {
        group.sort_by(|a, b| a.joined.as_bytes().cmp(b.joined.as_bytes()));
        for e in group {
            let name = e.joined.to_uppercase();
            if !is_shell_name(&name) {
                errors.push(match below_secret(&e.path) {
                    Some(root) => FlattenError {
                        pos: e.pos,
                        path: root.to_string(),
                        message: "a key in it makes a variable name a shell cannot source \
                                  (not shown: it is secret; a secret is one string, not a map)"
                            .into(),
                    },
                    None => FlattenError {
                        pos: e.pos,
                        path: e.path.clone(),
                        message: format!(
                            "makes the variable name `{}`, which a shell cannot source \
                             (use letters, digits and `_` in keys)",
                            printable(&name)
                        ),
                    },
                });
                continue;
            }
            if let Some((other, other_pos)) = seen.get(&name) {
                let (mine, theirs) = (below_secret(&e.path), below_secret(other));
                errors.push(match (mine, theirs) {
                    (None, None) => FlattenError {
                        pos: e.pos,
                        path: e.path.clone(),
                        message: format!(
                            "collides with `{other}` (line {}): both become `{name}`",
                            other_pos.line
                        ),
                    },
                    _ => FlattenError {
                        pos: e.pos,
                        path: mine.unwrap_or(&e.path).to_string(),
                        message: format!(
                            "{} collides with {} (line {}): both become the same variable \
                             (not shown: it is secret)",
                            if mine.is_some() { "a key in it" } else { "it" },
                            match theirs {
                                Some(root) => format!("a key in `{root}`"),
                                None => format!("`{other}`"),
                            },
                            other_pos.line
                        ),
                    },
                });
                continue;
            }
            if out.len() + prefix.len() + name.len() + e.value.len() + 2 > MAX_FLAT_BYTES {
                return Err(vec![too_large(e.pos, e.path)]);
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

/// The secret that `path` lies strictly below (a key of a secret map).
fn below_secret(path: &str) -> Option<&str> {
    secret_root(path).filter(|r| r.len() < path.len())
}

fn too_large(pos: Pos, path: String) -> FlattenError {
    FlattenError {
        pos,
        path: secret_root(&path).unwrap_or(&path).to_string(),
        message: format!(
            "the flattened env would be larger than {} MiB (long keys or values, repeated \
             by nesting or aliases)",
            MAX_FLAT_BYTES >> 20
        ),
    }
}

/// The entries collected so far, and what may still be spent on names,
/// paths and values; `over` is where the budget ran out.
struct Walk {
    out: Vec<Entry>,
    budget: usize,
    over: Option<(Pos, String)>,
}

impl Walk {
    /// Spends `n` bytes; false (and walking stops) once the budget is gone.
    fn spend(&mut self, n: usize, pos: Pos, path: &str) -> bool {
        if self.over.is_some() {
            return false;
        }
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                true
            }
            None => {
                self.over = Some((pos, path.to_string()));
                false
            }
        }
    }
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

/// Collects the entries below `node` into `w.out`; `joined` is the name so
/// far, `path` the key path for messages.
fn walk(node: &Node, joined: &str, path: &str, w: &mut Walk) {
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = k.key_string();
                // Charged before the strings are made.
                if !w.spend(2 * (joined.len() + key.len() + 1), k.pos, path) {
                    return;
                }
                walk(
                    v,
                    &join(joined, &key),
                    &join_path(path, &printable(&key)),
                    w,
                );
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                if !w.spend(2 * (joined.len() + 24), item.pos, path) {
                    return;
                }
                walk(
                    item,
                    &join(joined, &i.to_string()),
                    &format!("{path}[{i}]"),
                    w,
                );
            }
            if !w.spend(2 * (joined.len() + 24), node.pos, path) {
                return;
            }
            w.out.push(Entry {
                joined: join(joined, "LEN"),
                path: path.to_string(),
                pos: node.pos,
                value: items.len().to_string(),
            });
        }
        scalar => {
            let value = scalar_text(scalar);
            if !w.spend(value.len(), node.pos, path) {
                return;
            }
            w.out.push(Entry {
                joined: joined.to_string(),
                path: path.to_string(),
                pos: node.pos,
                value,
            })
        }
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
