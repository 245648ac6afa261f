//! YAML 1.1 loading, as cloud-init (PyYAML's `safe_load`) reads env.yml.
//!
//! Syntax comes from `saphyr-parser` (events with positions); this module
//! builds the document tree and resolves plain scalars with YAML 1.1's rules,
//! because no crate gives all of what the env needs at once: a position for
//! every node (so validation can report *every* problem with its line and
//! column, where a serde deserializer stops at the first), PyYAML's exact
//! implicit types (`yes/no/on/off`, `0644` octal, `0x1F`, `1_000`, `12:30`
//! base 60, dates, `1e3` staying a string), merge keys, and hard limits for
//! untrusted input (size, nesting depth, total nodes and total bytes of text
//! after alias expansion, so a "billion laughs" document, or one long string
//! referenced a few thousand times, fails at once instead of eating memory).
//!
//! [`load_with`] is told which key paths hold secrets: a problem at or below
//! such a path (a duplicate key of a secret written as a map, a tag on a
//! secret) is reported under the secret's path, never with its keys or tags.
//!
//! Tags: the standard `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`,
//! `!!seq` (and `!!binary` kept as text) are honoured; any other tag is
//! refused, as `safe_load` refuses it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

mod scalar;

pub use self::scalar::python_float_repr;
use self::scalar::*;

/// Largest env file accepted, in bytes.
pub const MAX_BYTES: usize = 4 << 20;
/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes in the document after aliases are expanded.
pub const MAX_NODES: usize = 200_000;
/// Most bytes of scalar text (values and keys) in the document after
/// aliases are expanded: four times the largest file.
pub const MAX_EXPANDED_BYTES: usize = 4 * MAX_BYTES;

/// A position in the source: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// A resolved YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A timestamp, kept in the form Python prints it (`2017-03-01`,
    /// `2001-12-14 21:59:43.100000+00:00`).
    Timestamp(String),
    Seq(Vec<Node>),
    /// Entries in document order (after merge keys are resolved).
    Map(Vec<(Node, Node)>),
}

/// A value with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// The entry of a map with the given key (keys compared as Python's `str()`).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.key_string() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key as Python's `str()` prints it, which is how the original
    /// appliance joined keys (a key `on:` is the boolean True, so `True`).
    pub fn key_string(&self) -> Cow<'_, str> {
        match &self.value {
            Value::Str(s) | Value::Timestamp(s) => Cow::Borrowed(s),
            Value::Null => Cow::Borrowed("None"),
            Value::Bool(true) => Cow::Borrowed("True"),
            Value::Bool(false) => Cow::Borrowed("False"),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(python_float_repr(*f)),
            Value::Seq(_) | Value::Map(_) => Cow::Borrowed("<collection>"),
        }
    }

    /// A short name of the value's type, for error messages (never the value).
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Timestamp(_) => "a date",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

/// Why a document could not be loaded. Messages never quote document
/// content (a key is named only outside every secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Where the problem is, when known.
    pub pos: Option<Pos>,
    /// The key path where it is (`appliance.storage`), when known; under a
    /// secret, the secret's path. Not part of `Display`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for LoadError {}

fn err(pos: Option<Pos>, message: impl Into<String>) -> LoadError {
    LoadError {
        pos,
        path: String::new(),
        message: message.into(),
    }
}

/// `s` as a message may name a key: control characters escaped (`\u{1b}`),
/// so none reaches a terminal raw, and cut to [`SHOWN_KEY_CHARS`].
pub fn printable(s: &str) -> Cow<'_, str> {
    let long = s.len() > SHOWN_KEY_CHARS && s.chars().count() > SHOWN_KEY_CHARS;
    if !long && !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out: String = s
        .chars()
        .take(SHOWN_KEY_CHARS)
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if long {
        out.push('…');
    }
    Cow::Owned(out)
}

/// The most characters of a key a message shows.
pub const SHOWN_KEY_CHARS: usize = 64;

/// Which key paths hold secrets: the secret path that a path is or lies
/// below, if any (see [`crate::secret::secret_root`]).
pub type SecretRoot<'f> = &'f dyn for<'p> Fn(&'p str) -> Option<&'p str>;

/// Decodes the bytes of an env file: UTF-8 (a BOM is skipped), within [`MAX_BYTES`].
pub fn decode(bytes: &[u8]) -> Result<&str, LoadError> {
    if bytes.len() > MAX_BYTES {
        return Err(err(
            None,
            format!(
                "file is too large ({} bytes; an env is at most {} MiB)",
                bytes.len(),
                MAX_BYTES >> 20
            ),
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        err(
            None,
            format!("not UTF-8 text (invalid byte at offset {offset}, line {line})"),
        )
    })
}

/// Loads a single-document YAML stream. `Ok(None)` when the stream holds no
/// document at all (empty, or only comments).
pub fn load(text: &str) -> Result<Option<Node>, LoadError> {
    load_with(text, &|_| None)
}

/// [`load`], with `secret` naming the key paths whose keys, values and tags
/// no message may show.
pub fn load_with(text: &str, secret: SecretRoot) -> Result<Option<Node>, LoadError> {
    if text.len() > MAX_BYTES {
        return Err(err(None, "file is too large"));
    }
    let mut builder = Builder {
        secret,
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
    };
    load_events(text, &mut builder).map_err(|mut e| {
        if e.path.is_empty() {
            e.path = builder.shown_path();
        }
        e
    })?;
    Ok(builder.root)
}

fn load_events(text: &str, builder: &mut Builder) -> Result<(), LoadError> {
    let mut docs = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            err(
                Some(Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                }),
                format!("malformed YAML: {}", e.info()),
            )
        })?;
        let pos = Pos::of(&span);
        match event {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(err(
                        Some(pos),
                        "more than one YAML document (`---`): an env is one document",
                    ));
                }
                builder.anchors.clear();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::Alias(id) => {
                let node = builder
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err(Some(pos), "alias to an unknown anchor"))?;
                // Counted before the subtree is copied.
                builder.count(node.1, node.2, pos)?;
                builder.push(node.0)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                builder.count(1, text.len(), pos)?;
                let redact = builder.in_secret();
                let value = resolve_scalar(&text, style, tag.as_deref(), pos, redact)?;
                let node = Node { value, pos };
                if anchor > 0 {
                    builder
                        .anchors
                        .insert(anchor, (node.clone(), 1, text.len()));
                }
                builder.push(node)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", pos, builder.in_secret())?;
                builder.open(Value::Seq(Vec::new()), pos, anchor)?;
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", pos, builder.in_secret())?;
                builder.open(Value::Map(Vec::new()), pos, anchor)?;
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
        }
    }
    Ok(())
}

/// An open collection: the node being filled, its anchor, the node and byte
/// counts when it opened, and for maps a key waiting for its value.
struct Open {
    node: Node,
    anchor: usize,
    nodes_at_start: usize,
    bytes_at_start: usize,
    pending_key: Option<Node>,
    merges: Vec<(Node, Pos)>,
}

struct Builder<'f> {
    secret: SecretRoot<'f>,
    stack: Vec<Open>,
    root: Option<Node>,
    /// Anchored nodes with the number of nodes and bytes of text each contains.
    anchors: HashMap<usize, (Node, usize, usize)>,
    nodes: usize,
    bytes: usize,
}

impl Builder<'_> {
    fn count(&mut self, n: usize, bytes: usize, pos: Pos) -> Result<(), LoadError> {
        self.nodes = self.nodes.saturating_add(n);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(err(
                Some(pos),
                format!(
                    "document too large once aliases are expanded (more than {MAX_NODES} values): \
                     refusing a possible alias bomb"
                ),
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(err(
                Some(pos),
                format!(
                    "document too large once aliases are expanded (more than {} MiB of text): \
                     refusing a possible alias bomb",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// The key path of the node that comes next (for a map key: the map's).
    fn path(&self) -> String {
        let mut path = String::new();
        for open in &self.stack {
            match &open.node.value {
                Value::Seq(items) => path.push_str(&format!("[{}]", items.len())),
                Value::Map(_) => match &open.pending_key {
                    Some(k) => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&printable(&k.key_string()));
                    }
                    None => break,
                },
                _ => break,
            }
        }
        path
    }

    /// [`Builder::path`] as a message may show it: cut at a secret's path.
    fn shown_path(&self) -> String {
        redact_path(&self.path(), self.secret)
    }

    fn in_secret(&self) -> bool {
        (self.secret)(&self.path()).is_some()
    }

    fn open(&mut self, value: Value, pos: Pos, anchor: usize) -> Result<(), LoadError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(err(
                Some(pos),
                format!("nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.count(1, 0, pos)?;
        self.stack.push(Open {
            node: Node { value, pos },
            anchor,
            nodes_at_start: self.nodes - 1,
            bytes_at_start: self.bytes,
            pending_key: None,
            merges: Vec::new(),
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), LoadError> {
        let open = self
            .stack
            .pop()
            .ok_or_else(|| err(None, "malformed YAML: unbalanced collection"))?;
        let mut node = open.node;
        if !open.merges.is_empty() {
            apply_merges(&mut node, open.merges)?;
        }
        if open.anchor > 0 {
            let size = self.nodes - open.nodes_at_start;
            let bytes = self.bytes - open.bytes_at_start;
            self.anchors
                .insert(open.anchor, (node.clone(), size, bytes));
        }
        self.push(node)
    }

    fn push(&mut self, node: Node) -> Result<(), LoadError> {
        // The path of the value being pushed: for a map's value, it ends
        // with its key (a duplicate key is reported there).
        let here = self.path();
        let secret = self.secret;
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut top.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match top.pending_key.take() {
                None => {
                    if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
                        return Err(err(
                            Some(node.pos),
                            "a map key must be a plain value, not a list or map",
                        ));
                    }
                    top.pending_key = Some(node);
                }
                Some(key) => {
                    // Merge keys are resolved from plain `<<` scalars only; a quoted
                    // "<<" is resolved to a string before here and is
                    // indistinguishable, which matches PyYAML closely
                    // enough for env files.
                    if key.value == Value::Str("<<".into()) {
                        top.merges.push((node, key.pos));
                    } else {
                        if let Some((first, _)) = entries.iter().find(|(k, _)| {
                            k.value == key.value && k.key_string() == key.key_string()
                        }) {
                            let name = key.key_string();
                            let name = printable(&name);
                            let path = here;
                            let mut e = match secret(&path).filter(|r| r.len() < path.len()) {
                                Some(root) => LoadError {
                                    pos: Some(key.pos),
                                    path: root.to_string(),
                                    message: format!(
                                        "a key in it appears twice (first at line {}; \
                                         not shown: it is secret)",
                                        first.pos.line
                                    ),
                                },
                                None => err(
                                    Some(key.pos),
                                    format!(
                                        "duplicate key `{name}` (first at line {})",
                                        first.pos.line
                                    ),
                                ),
                            };
                            if e.path.is_empty() {
                                e.path = path;
                            }
                            return Err(e);
                        }
                        entries.push((key, node));
                    }
                }
            },
            _ => return Err(err(Some(node.pos), "malformed YAML")),
        }
        Ok(())
    }
}

/// `path` cut at the secret it is or lies below (`ecs.settings.KEY` →
/// `ecs.settings`).
pub fn redact_path(path: &str, secret: SecretRoot) -> String {
    secret(path).unwrap_or(path).to_string()
}

/// Applies `<<` merge keys: keys already in the map win, then the merged
/// maps in order (earlier ones win), as PyYAML's `flatten_mapping` does.
fn apply_merges(node: &mut Node, merges: Vec<(Node, Pos)>) -> Result<(), LoadError> {
    let Value::Map(entries) = &mut node.value else {
        return Ok(());
    };
    let mut sources: Vec<Node> = Vec::new();
    for (value, pos) in merges {
        match value.value {
            Value::Map(_) => sources.push(value),
            Value::Seq(items) => {
                for item in items {
                    if !matches!(item.value, Value::Map(_)) {
                        return Err(err(
                            Some(item.pos),
                            "a merge key (<<) list must contain only maps",
                        ));
                    }
                    sources.push(item);
                }
            }
            _ => {
                return Err(err(
                    Some(pos),
                    "a merge key (<<) needs a map or a list of maps",
                ))
            }
        }
    }
    for source in sources {
        if let Value::Map(more) = source.value {
            for (k, v) in more {
                if !entries.iter().any(|(e, _)| e.value == k.value) {
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
