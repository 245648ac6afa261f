//! What the layer cache ([`crate::cache`]) and the image cache
//! ([`crate::imagecache`]) share about their entries: an entry's last use is
//! the modification time of its marker file (the layer's `KEY.json`, the
//! image's `entry.json`), touched on every hit; gc keeps the most recently
//! used; an entry is named by its key or a unique prefix of 8+ hex digits.
//! Each cache keeps its own files on disk (the format is unchanged).

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exit::bad_input;

/// Marks an entry as used now.
pub fn touch(marker: &Path) {
    if let Ok(f) = File::options().write(true).open(marker) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Unix time an entry was last used (written or hit); 0 when unknown.
pub fn last_used(marker: &Path) -> u64 {
    fs::metadata(marker).map_or(0, |m| m.mtime().max(0) as u64)
}

/// When an entry was last used, to the nanosecond (for ordering).
pub fn used_at(marker: &Path) -> SystemTime {
    fs::metadata(marker)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH)
}

/// The entries beyond the `keep` most recently used (`used` orders them,
/// the most recent first), to delete.
pub fn beyond_keep<E, U: Ord>(entries: Vec<E>, keep: usize, used: impl Fn(&E) -> U) -> Vec<E> {
    let mut entries: Vec<(U, E)> = entries.into_iter().map(|e| (used(&e), e)).collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    entries.into_iter().skip(keep).map(|(_, e)| e).collect()
}

/// Refuses anything but a key or at least 8 of its leading hex digits.
pub fn check_key_prefix(key_or_prefix: &str) -> anyhow::Result<()> {
    if key_or_prefix.len() < 8 || !key_or_prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad_input(format!(
            "{key_or_prefix:?}: give a cache key or at least 8 of its leading hex digits (see `imgbuild cache ls`)"
        )));
    }
    Ok(())
}

/// The entries whose key starts with `prefix`.
pub fn matching<'a, E>(entries: &'a [E], prefix: &str, key: impl Fn(&E) -> &str) -> Vec<&'a E> {
    entries
        .iter()
        .filter(|e| key(e).starts_with(prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_the_most_recent_and_match_prefixes() {
        let gone = beyond_keep(vec![("a", 1), ("b", 3), ("c", 2)], 2, |e| e.1);
        assert_eq!(gone, vec![("a", 1)]);
        assert!(beyond_keep(vec![("a", 1)], 1, |e| e.1).is_empty());
        let keys = ["0123456789ab", "0123456799ab", "ffff0000aaaa"];
        assert_eq!(matching(&keys, "01234567", |k| k).len(), 2);
        assert_eq!(matching(&keys, "ffff0000", |k| k), vec![&keys[2]]);
        assert!(check_key_prefix("0123456").is_err());
        assert!(check_key_prefix("0123456z").is_err());
        check_key_prefix("01234567").unwrap();
    }

    #[test]
    fn last_use_is_the_markers_mtime() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("entry.json");
        assert_eq!(last_used(&m), 0);
        fs::write(&m, "{}").unwrap();
        let f = File::options().write(true).open(&m).unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        assert_eq!(last_used(&m), 1000);
        touch(&m);
        assert!(last_used(&m) > 1000);
        assert!(used_at(&m) > UNIX_EPOCH + std::time::Duration::from_secs(1000));
    }
}
