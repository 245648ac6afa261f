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

/// The tag as a message shows it: never under a secret.
fn tag_name(t: &Tag, redact: bool) -> String {
    if redact {
        " (not shown: it is on a secret)".to_string()
    } else if is_core(t) {
        format!(" `!!{}`", printable(&t.suffix))
    } else {
        format!(" `{}{}`", printable(&t.handle), printable(&t.suffix))
    }
}

fn check_collection_tag(
    tag: Option<&Tag>,
    want: &str,
    pos: Pos,
    redact: bool,
) -> Result<(), LoadError> {
    match tag {
        None => Ok(()),
        Some(t) if is_core(t) && t.suffix == want => Ok(()),
        Some(t) => Err(err(
            Some(pos),
            format!("unsupported tag{}", tag_name(t, redact)),
        )),
    }
}

fn is_core(t: &Tag) -> bool {
    t.handle == "tag:yaml.org,2002:" || t.handle == "!!"
}

fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
    redact: bool,
) -> Result<Value, LoadError> {
    if let Some(t) = tag {
        if !is_core(t) {
            // A lone `!` is the non-specific tag: the scalar is a string.
            if t.handle == "!" && t.suffix.is_empty() {
                return Ok(Value::Str(text.to_owned()));
            }
            return Err(err(
                Some(pos),
                format!("unsupported tag{}", tag_name(t, redact)),
            ));
        }
        let bad = || {
            err(
                Some(pos),
                format!("value does not match its tag{}", tag_name(t, redact)),
            )
        };
        return match t.suffix.as_str() {
            "str" | "binary" => Ok(Value::Str(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => resolve_bool(text).map(Value::Bool).ok_or_else(bad),
            "int" => match resolve_plain(text, pos)? {
                v @ Value::Int(_) => Ok(v),
                _ => Err(bad()),
            },
            "float" => match resolve_plain(text, pos)? {
                v @ Value::Float(_) => Ok(v),
                Value::Int(i) => Ok(Value::Float(i as f64)),
                _ => Err(bad()),
            },
            "timestamp" => match resolve_plain(text, pos)? {
                v @ Value::Timestamp(_) => Ok(v),
                _ => Err(bad()),
            },
            _ => Err(err(
                Some(pos),
                format!("unsupported tag{}", tag_name(t, redact)),
            )),
        };
    }
    match style {
        ScalarStyle::Plain => resolve_plain(text, pos),
        _ => Ok(Value::Str(text.to_owned())),
    }
}

fn resolve_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// PyYAML's implicit resolvers for plain scalars (YAML 1.1).
fn resolve_plain(s: &str, pos: Pos) -> Result<Value, LoadError> {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = resolve_bool(s) {
        return Ok(Value::Bool(b));
    }
    if is_int(s) {
        return parse_int(s)
            .map(Value::Int)
            .ok_or_else(|| err(Some(pos), "integer is too large"));
    }
    if is_float(s) {
        return Ok(Value::Float(parse_float(s)));
    }
    if let Some(ts) = resolve_timestamp(s) {
        return Ok(Value::Timestamp(ts));
    }
    Ok(Value::Str(s.to_owned()))
}

fn strip_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

fn all(s: &str, f: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(f)
}

/// `[-+]?0b[01_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+
///  | [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`
fn is_int(s: &str) -> bool {
    let (_, d) = strip_sign(s);
    if let Some(b) = d.strip_prefix("0b") {
        return !b.is_empty() && all(b, |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(h) = d.strip_prefix("0x") {
        return !h.is_empty() && all(h, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if d == "0" {
        return true;
    }
    if let Some(o) = d.strip_prefix('0') {
        return !o.is_empty() && all(o, |c| matches!(c, b'0'..=b'7' | b'_'));
    }
    let mut parts = d.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| matches!(c, '1'..='9'))
        || !all(first, |c| c.is_ascii_digit() || c == b'_')
    {
        return false;
    }
    parts.all(is_sexagesimal_part)
}

fn is_sexagesimal_part(p: &str) -> bool {
    let b = p.as_bytes();
    match b.len() {
        1 => b[0].is_ascii_digit(),
        2 => matches!(b[0], b'0'..=b'5') && b[1].is_ascii_digit(),
        _ => false,
    }
}

fn parse_int(s: &str) -> Option<i128> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, d) = strip_sign(&cleaned);
    let v: i128 = if d == "0" {
        0
    } else if let Some(b) = d.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = d.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = d.strip_prefix('0') {
        i128::from_str_radix(o, 8).ok()?
    } else if d.contains(':') {
        let mut v: i128 = 0;
        for part in d.split(':') {
            v = v.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        v
    } else {
        d.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)? | [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
///  | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
fn is_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, d) = strip_sign(s);
    if matches!(d, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // Mantissa and optional exponent (the exponent needs a sign in YAML 1.1).
    let (mant, exp) = match d.find(['e', 'E']) {
        Some(i) => (&d[..i], Some(&d[i + 1..])),
        None => (d, None),
    };
    if let Some(e) = exp {
        let (_, digits) = match e.as_bytes().first() {
            Some(b'-') | Some(b'+') => strip_sign(e),
            _ => return false,
        };
        if digits.is_empty() || !all(digits, |c| c.is_ascii_digit()) {
            return false;
        }
    }
    let Some(dot) = mant.find('.') else {
        return false;
    };
    let (int_part, frac) = (&mant[..dot], &mant[dot + 1..]);
    if !all(frac, |c| c.is_ascii_digit() || c == b'_') {
        return false;
    }
    if int_part.is_empty() {
        // `.5`, `.5e+3`; PyYAML requires a digit after the dot here.
        return frac.starts_with(|c: char| c.is_ascii_digit());
    }
    if int_part.contains(':') {
        if exp.is_some() {
            return false;
        }
        let mut parts = int_part.split(':');
        let first = parts.next().unwrap_or("");
        return first.starts_with(|c: char| c.is_ascii_digit())
            && all(first, |c| c.is_ascii_digit() || c == b'_')
            && parts.all(is_sexagesimal_part);
    }
    int_part.starts_with(|c: char| c.is_ascii_digit())
        && all(int_part, |c| c.is_ascii_digit() || c == b'_')
}

fn parse_float(s: &str) -> f64 {
    let cleaned: String = s
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_lowercase();
    let (neg, d) = strip_sign(&cleaned);
    let sign = if neg { -1.0 } else { 1.0 };
    if d == ".inf" {
        return sign * f64::INFINITY;
    }
    if d == ".nan" {
        return f64::NAN;
    }
    if d.contains(':') {
        let mut v = 0.0;
        for part in d.split(':') {
            v = v * 60.0 + part.parse::<f64>().unwrap_or(0.0);
        }
        return sign * v;
    }
    // Rust's parser accepts the forms is_float admits (`1.`, `.5`, `1.5e+3`).
    let d = if d.ends_with('.') {
        format!("{d}0")
    } else if d.starts_with('.') {
        format!("0{d}")
    } else {
        d.to_string()
    };
    sign * d.replace(".e", ".0e").parse::<f64>().unwrap_or(f64::NAN)
}

/// YAML 1.1 timestamps, printed as Python's `str()` of the date or datetime.
fn resolve_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // A bare date: exactly YYYY-MM-DD.
    if b.len() == 10 && is_date_shape(b) {
        return valid_date(&s[0..4], &s[5..7], &s[8..10]).then(|| s.to_owned());
    }
    // YYYY-M(M)-D(D) then [Tt] or spaces, H(H):MM:SS(.frac)? (spaces? (Z|±H(H)(:MM)?))?
    let (date, rest) = split_date(s)?;
    let rest = if let Some(r) = rest.strip_prefix(['T', 't']) {
        r
    } else {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        if trimmed.len() == rest.len() {
            return None;
        }
        trimmed
    };
    let (h, rest) = take_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (mi, rest) = take_digits(rest, 2, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (sec, mut rest) = take_digits(rest, 2, 2)?;
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = &r[..n];
        rest = &r[n..];
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let tz = if rest.is_empty() {
        None
    } else if rest == "Z" {
        Some("+00:00".to_string())
    } else {
        let (neg, r) = match rest.as_bytes()[0] {
            b'-' => (true, &rest[1..]),
            b'+' => (false, &rest[1..]),
            _ => return None,
        };
        let (th, r) = take_digits(r, 1, 2)?;
        let tm = match r.strip_prefix(':') {
            Some(r2) => {
                let (tm, r3) = take_digits(r2, 2, 2)?;
                if !r3.is_empty() {
                    return None;
                }
                tm
            }
            None if r.is_empty() => "00",
            None => return None,
        };
        Some(format!(
            "{}{:02}:{}",
            if neg { '-' } else { '+' },
            th.parse::<u32>().ok()?,
            tm
        ))
    };
    let (y, mo, d) = date;
    if !valid_date(y, mo, d) {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let mi: u32 = mi.parse().ok()?;
    let sec: u32 = sec.parse().ok()?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut out = format!(
        "{y}-{:02}-{:02} {h:02}:{mi:02}:{sec:02}",
        mo.parse::<u32>().ok()?,
        d.parse::<u32>().ok()?
    );
    if !frac.is_empty() {
        // Python keeps microseconds: 6 digits, padded or cut.
        let mut micro: String = frac.chars().take(6).collect();
        while micro.len() < 6 {
            micro.push('0');
        }
        if micro != "000000" {
            out.push('.');
            out.push_str(&micro);
        }
    }
    if let Some(tz) = tz {
        out.push_str(&tz);
    }
    Some(out)
}

fn is_date_shape(b: &[u8]) -> bool {
    b[0..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

fn split_date(s: &str) -> Option<((&str, &str, &str), &str)> {
    let (y, rest) = take_digits(s, 4, 4)?;
    let rest = rest.strip_prefix('-')?;
    let (m, rest) = take_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (d, rest) = take_digits(rest, 1, 2)?;
    Some(((y, m, d), rest))
}

fn take_digits(s: &str, min: usize, max: usize) -> Option<(&str, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    (n >= min).then(|| s.split_at(n))
}

fn valid_date(y: &str, m: &str, d: &str) -> bool {
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1 && (1..=days).contains(&d)
}

/// A float printed as Python's `repr()` does: the shortest digits that round
/// trip, fixed notation for decimal exponents in -4..16, else `1e+16` style.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e0", "1e16", "-2.5e-7".
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests;
