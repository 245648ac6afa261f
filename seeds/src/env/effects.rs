//! What each key of the env does on an appliance built from this
//! repository: the one table ([`EFFECTS`]) that says, for every key the
//! model knows, which unit or file it drives, or that it has no effect
//! yet. `docs/env.md` says the same in its column "in this image", and a
//! test holds the two (and the model's own key lists) together.
//!
//! A key with no effect that an env sets is reported as a warning,
//! `accepted, no effect in this image: KEY` ([`no_effect_warnings`]), by
//! `imgbuild env check` (and `seed`, and the build) and by `ecs-firstboot`:
//! an operator who sets such a key is told it does nothing, rather than
//! finding out. Making a key work is flipping its entry here to
//! [`Effect::Applied`] (and its row in `docs/env.md`).

use crate::yaml::{Node, Value};

use super::Problem;

/// What a key does in this image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It drives this unit, program or file (named as `docs/env.md` names
    /// it in the key's row).
    Applied(&'static str),
    /// Validated and kept in `/run/active-env.*`, but nothing acts on it.
    None,
}

/// Every key of the env reference, as a dotted path, with its effect.
///
/// An entry is a leaf of the reference: the keys below it (the items of
/// `appliance.extra.files`, `size` or `device` of a volume) belong to it.
/// The maps above the entries (`appliance`, `appliance.ssl`, ...) are not
/// listed.
pub const EFFECTS: &[(&str, Effect)] = &[
    ("ssh_authorized_keys", Effect::Applied("ecs-firstboot")),
    ("ssh_deprecated_keys", Effect::Applied("ecs-firstboot")),
    // cloud-init reads it from the seed's user-data, not the appliance.
    ("disable_root", Effect::Applied("cloud-init")),
    ("appliance.domain", Effect::Applied("ecs-firstboot")),
    ("appliance.standby", Effect::Applied("ecs-firstboot")),
    ("appliance.allowed_hosts", Effect::None),
    (
        "appliance.ssl.letsencrypt.enabled",
        Effect::Applied("appliance-acme.service"),
    ),
    (
        "appliance.ssl.letsencrypt.directory",
        Effect::Applied("appliance-acme.service"),
    ),
    (
        "appliance.ssl.letsencrypt.directory_ca",
        Effect::Applied("appliance-acme.service"),
    ),
    (
        "appliance.ssl.client_certs_mandatory",
        Effect::Applied("appliance-tls.service"),
    ),
    (
        "appliance.ssl.cert",
        Effect::Applied("appliance-tls.service"),
    ),
    (
        "appliance.ssl.key",
        Effect::Applied("appliance-tls.service"),
    ),
    (
        "appliance.sentry.dsn",
        Effect::Applied("appliance-sentry-report.service"),
    ),
    (
        "appliance.metric.exporter",
        Effect::Applied("layers/50-metrics"),
    ),
    ("appliance.metric.server", Effect::None),
    ("appliance.metric.gui", Effect::None),
    ("appliance.metric.pghero", Effect::None),
    ("appliance.git.branch", Effect::None),
    ("appliance.git.source", Effect::None),
    ("appliance.git.commitid", Effect::None),
    ("appliance.extra.files", Effect::Applied("ecs-firstboot")),
    (
        "appliance.extra.packages",
        Effect::Applied("appliance-extra-packages.service"),
    ),
    ("appliance.extra.states", Effect::None),
    (
        "appliance.update.automatic",
        Effect::Applied("appliance-update.timer"),
    ),
    (
        "appliance.update.oncalendar",
        Effect::Applied("appliance-update.timer"),
    ),
    (
        "appliance.dkim.key",
        Effect::Applied("appliance-mail.service"),
    ),
    (
        "appliance.backup.url",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.options",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.mount.type",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.mount.source",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.mount.target",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.mount.options",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.backup.encrypt",
        Effect::Applied("appliance-backup.service"),
    ),
    (
        "appliance.storage.ignore.data",
        Effect::Applied("ecs-firstboot"),
    ),
    (
        "appliance.storage.ignore.volatile",
        Effect::Applied("ecs-firstboot"),
    ),
    (
        "appliance.storage.grow_root",
        Effect::Applied("ecs-firstboot"),
    ),
    (
        "appliance.storage.root_size",
        Effect::Applied("ecs-firstboot"),
    ),
    ("appliance.storage.data", Effect::Applied("ecs-firstboot")),
    (
        "appliance.storage.volatile",
        Effect::Applied("ecs-firstboot"),
    ),
    ("ecs.settings", Effect::Applied("appliance.service")),
    ("ecs.vault_encrypt", Effect::Applied("appliance.service")),
    ("ecs.vault_sign", Effect::Applied("appliance.service")),
    ("ecs.git.branch", Effect::Applied("appliance.service")),
    ("ecs.git.source", Effect::Applied("appliance.service")),
    ("ecs.git.commitid", Effect::Applied("appliance.service")),
    ("ecs.docs.git.source", Effect::None),
    ("ecs.docs.git.branch", Effect::None),
    ("ecs.database", Effect::Applied("appliance.service")),
    (
        "ecs.userswitcher.enabled",
        Effect::Applied("appliance.service"),
    ),
];

/// The effect of a key of the reference (`None` for a path not in it).
pub fn effect(path: &str) -> Option<Effect> {
    EFFECTS.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// The message of the warning for a key with no effect.
pub fn no_effect_message(path: &str) -> String {
    format!("accepted, no effect in this image: {path}")
}

/// One warning for each key with no effect that the document sets (present
/// and not null), at the key's position, in the table's order. The message
/// names the key, never its value.
pub fn no_effect_warnings(doc: &Node) -> Vec<Problem> {
    EFFECTS
        .iter()
        .filter(|(_, e)| *e == Effect::None)
        .filter_map(|(path, _)| {
            let key = lookup(doc, path)?;
            Some(Problem {
                pos: Some(key.pos),
                path: String::new(),
                message: no_effect_message(path),
            })
        })
        .collect()
}

/// The keys of the reference whose value differs between two env
/// documents, in the table's order (for `env-update`: names only, never
/// values). Absent and null are the same; positions are not compared.
/// Without an `old` document every key the new one sets has changed.
pub fn changed_keys(old: Option<&Node>, new: &Node) -> Vec<&'static str> {
    EFFECTS
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| {
            let a = old.and_then(|o| value_at(o, path));
            let b = value_at(new, path);
            match (a, b) {
                (None, None) => false,
                (Some(a), Some(b)) => !same(a, b),
                _ => true,
            }
        })
        .collect()
}

/// The value node of a dotted path, when present and not null.
fn value_at<'a>(doc: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = doc;
    for part in path.split('.') {
        node = node.get(part)?;
    }
    (node.value != Value::Null).then_some(node)
}

/// Two values are equal, whatever their positions (a map's duplicate keys
/// resolved as [`Node::get`] does: the last wins).
fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            let keys = |m: &Vec<(Node, Node)>| {
                let mut k: Vec<String> =
                    m.iter().map(|(k, _)| k.key_string().into_owned()).collect();
                k.sort();
                k.dedup();
                k
            };
            let kx = keys(x);
            kx == keys(y)
                && kx.iter().all(|k| match (a.get(k), b.get(k)) {
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                })
        }
        (x, y) => x == y,
    }
}

/// The key node of a dotted path whose value is present and not null.
fn lookup<'a>(doc: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = doc;
    let mut key = None;
    for part in path.split('.') {
        let Value::Map(entries) = &node.value else {
            return None;
        };
        // The last of duplicate keys wins, as in [`Node::get`].
        let (k, v) = entries.iter().rev().find(|(k, _)| k.key_string() == part)?;
        key = Some(k);
        node = v;
    }
    (node.value != Value::Null).then_some(key?)
}

#[cfg(test)]
mod tests;
