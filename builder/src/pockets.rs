//! The archive's pockets (`SUITE`, `SUITE-updates`, `SUITE-security`): their
//! state, which key each enters, and the `updates` step that brings a tree to
//! the pockets' current state.
//!
//! The design, chosen so that daily rebuilds stay cheap while the security
//! pocket moves several times a week:
//!
//! - every layer of the recipes is built from all pockets (mmdebstrap and apt
//!   see all three), but its key follows the **release pocket** only (its
//!   InRelease hash is part of the base layer's key; on Ubuntu that pocket
//!   never changes after the release, on Debian at point releases);
//! - one more step, `updates`, always last, runs `apt-get dist-upgrade`
//!   against all pockets, removes kernels an upgrade left behind, and writes
//!   the image's own apt sources; its key is its parent's plus the InRelease
//!   hashes of `-updates` and `-security`.
//!
//! So a cold build installs the newest packages directly (its `updates` step
//! finds nothing to do), and a rebuild after only the pockets moved reuses
//! every cached layer and upgrades just what moved. The package set (names
//! and versions) is the same either way: apt's candidate for every installed
//! package is the newest in the pockets. The miss of `updates` names the
//! pocket that moved and its new `Date`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use seeds::cmd;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::recipe::{BaseSettings, Pocket};

/// The name of the `updates` step, as it appears in logs, the cache and the
/// manifest.
pub const UPDATES_LAYER: &str = "updates";

/// A pocket as probed at the start of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PocketState {
    #[serde(flatten)]
    pub pocket: Pocket,
    /// sha256 of its InRelease.
    pub sha256: String,
    /// Its `Date:` as the archive writes it.
    pub date: String,
    /// The same date in seconds since the epoch, when it parses.
    #[serde(skip)]
    pub epoch: Option<i64>,
}

const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// Fetches every pocket's `InRelease` with bounded timeouts; an unreachable
/// pocket fails the build here, naming the URL.
pub fn probe_all(base: &BaseSettings, tmp: &Path) -> anyhow::Result<Vec<PocketState>> {
    base.pockets().into_iter().map(|p| probe(p, tmp)).collect()
}

fn probe(pocket: Pocket, tmp: &Path) -> anyhow::Result<PocketState> {
    let url = format!("{}/dists/{}/InRelease", pocket.mirror, pocket.suite);
    let dest = tmp.join(format!("{}.InRelease", pocket.suite));
    let mut c = cmd::command(
        APT_HELPER,
        [
            "-o",
            "Acquire::http::Timeout=10",
            "-o",
            "Acquire::https::Timeout=10",
            "-o",
            "Acquire::Retries=0",
            "-o",
            "APT::Sandbox::User=root",
            "download-file",
        ],
    );
    c.arg(&url).arg(&dest);
    if let Err(e) = cmd::run(&mut c) {
        let text = e.to_string();
        let flag = if pocket.name == "security" {
            "--security-mirror"
        } else {
            "--mirror"
        };
        let hint = if text.contains("404") {
            format!("is {} a suite of {}?", pocket.suite, pocket.mirror)
        } else {
            format!("is the mirror reachable from here (see {flag})?")
        };
        let alone = if pocket.name == "release" {
            String::new()
        } else {
            " (--release-pocket-only builds an unpatched image without it)".into()
        };
        bail!(
            "the mirror {} does not answer for {url}: {hint}{alone}\n{text}",
            pocket.mirror
        );
    }
    let bytes = fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let date = release_date_text(&text).unwrap_or_default();
    Ok(PocketState {
        pocket,
        sha256: hex::encode(Sha256::digest(&bytes)),
        epoch: parse_rfc2822(&date),
        date,
    })
}

/// The `Date:` line of a Release or InRelease file (before the signature
/// block).
fn release_date_text(text: &str) -> Option<String> {
    text.lines()
        .take_while(|l| !l.starts_with("-----BEGIN PGP SIGNATURE"))
        .find_map(|l| l.strip_prefix("Date: "))
        .map(|s| s.trim().to_string())
}

/// The `Date:` of a Release or InRelease file, in seconds.
pub fn release_date(text: &str) -> Option<i64> {
    release_date_text(text).and_then(|d| parse_rfc2822(&d))
}

/// Parses `Sat, 10 May 2025 09:48:51 UTC` (the Release file's Date).
fn parse_rfc2822(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT" | "+0000") {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = hms.as_slice() else {
        return None;
    };
    let days = seeds::civil::days_from_civil(y, m, d);
    Some(days * 86400 + h * 3600 + mi * 60 + se)
}

/// The pockets whose state enters the `updates` step's key (all but the
/// release pocket, whose state is in the base layer's key).
pub fn moving(states: &[PocketState]) -> Vec<PocketState> {
    states
        .iter()
        .filter(|s| s.pocket.name != "release")
        .cloned()
        .collect()
}

/// Why the `updates` step misses: the pockets that moved, with their new Date.
pub fn describe_moves(old: &[PocketState], new: &[PocketState]) -> Vec<String> {
    let mut why = Vec::new();
    for n in new {
        match old.iter().find(|o| o.pocket.suite == n.pocket.suite) {
            Some(o) if o.sha256 == n.sha256 && o.pocket.mirror == n.pocket.mirror => {}
            Some(o) if o.pocket.mirror != n.pocket.mirror => why.push(format!(
                "{} now comes from {} (was {})",
                n.pocket.suite, n.pocket.mirror, o.pocket.mirror
            )),
            Some(_) => why.push(format!("{} moved (Date: {})", n.pocket.suite, n.date)),
            None => why.push(format!("{} is new (Date: {})", n.pocket.suite, n.date)),
        }
    }
    for o in old {
        if !new.iter().any(|n| n.pocket.suite == o.pocket.suite) {
            why.push(format!("{} is no longer used", o.pocket.suite));
        }
    }
    why
}

/// Shell run in the tree by the `updates` step after `apt-get dist-upgrade`:
/// purges the kernels an upgrade left beside the newest one (apt's
/// autoremove keeps one old kernel by design; an image boots one).
pub const PURGE_OLD_KERNELS: &str = r#"set -eu
newest=$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
[ -n "$newest" ] || exit 0
old=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'linux-image-[0-9]*' 'linux-modules-[0-9]*' 'linux-modules-extra-[0-9]*' 2>/dev/null | awk '$1 ~ /^.i/ {print $2}' | grep -v -- "-$newest\$" || true)
if [ -n "$old" ]; then
  echo "purging kernels older than $newest: $old"
  apt-get purge -y -q -o Dpkg::Use-Pty=0 $old
fi
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn st(suite: &str, sha: &str, date: &str) -> PocketState {
        PocketState {
            pocket: Pocket {
                name: "security".into(),
                suite: suite.into(),
                mirror: "http://m".into(),
            },
            sha256: sha.into(),
            date: date.into(),
            epoch: None,
        }
    }

    #[test]
    fn release_dates_parse() {
        assert_eq!(
            parse_rfc2822("Sat, 10 May 2025 09:48:51 UTC"),
            Some(1746870531)
        );
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_rfc2822("garbage"), None);
        let signed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\n\
                      Date: Sat, 10 May 2025 09:48:51 UTC\nSHA256:\n abc 1 main/x\n\
                      -----BEGIN PGP SIGNATURE-----\n\nDate: Thu, 01 Jan 1970 00:00:00 UTC\n";
        assert_eq!(release_date(signed), Some(1746870531));
    }

    #[test]
    fn a_moved_pocket_is_named_with_its_date() {
        let old = [st("noble-security", "a", "Mon, 01 Dec 2026 10:00:00 UTC")];
        let new = [st("noble-security", "b", "Wed, 03 Dec 2026 10:00:00 UTC")];
        assert_eq!(
            describe_moves(&old, &new),
            ["noble-security moved (Date: Wed, 03 Dec 2026 10:00:00 UTC)"]
        );
        assert!(describe_moves(&old, &old).is_empty());
        assert_eq!(
            describe_moves(&old, &[]),
            ["noble-security is no longer used"]
        );
    }
}
