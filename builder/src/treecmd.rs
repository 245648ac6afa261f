//! `imgbuild tree` and `imgbuild cache ls|gc|rm`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::{self, Cache};
use crate::cli::{CacheArgs, CacheCommand, TreeArgs};
use crate::exit::bad_input;
use crate::imagecache::{self, Images};
use crate::progress::Progress;
use crate::rootfs::{self, BuiltLayer, TreeOptions};

/// `imgbuild tree`: builds or checks the layers, prints their keys.
pub fn tree(args: &TreeArgs, verbosity: i8) -> anyhow::Result<()> {
    let opts = TreeOptions::from_args(&args.layers)?;
    let progress = Progress::new(verbosity);
    let layers = match &args.output {
        Some(dest) => {
            if dest.exists()
                && std::fs::read_dir(dest)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(bad_input(format!(
                    "-o {}: exists and is not an empty directory",
                    dest.display()
                )));
            }
            // On disk, so the finished tree can be renamed into place.
            let opts = TreeOptions {
                in_memory: false,
                ..opts
            };
            let built = rootfs::build_tree(&opts, &progress)?;
            let layers = built.layers.clone();
            built.move_to(dest)?;
            layers
        }
        None if args.extract => rootfs::build_tree(&opts, &progress)?.layers.clone(),
        None => rootfs::cache_layers(&opts, &progress)?,
    };
    print_layers(&layers, args.json)
}

fn print_layers(layers: &[BuiltLayer], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(layers)?);
    } else {
        for l in layers {
            let outcome = match l.outcome {
                rootfs::Outcome::Hit => "hit",
                rootfs::Outcome::Covered => "covered",
                rootfs::Outcome::Built => "built",
            };
            println!("{}\t{}\t{outcome}", l.name, l.key);
        }
    }
    Ok(())
}

/// `imgbuild cache ...`.
pub fn cache(args: &CacheArgs) -> anyhow::Result<()> {
    let dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(seeds::cachedir::default);
    if !dir.is_dir() && !dir.exists() {
        // Nothing cached yet: an empty cache, not an error.
        match &args.command {
            CacheCommand::Ls => {
                println!(
                    "the cache {} is empty (it does not exist yet)",
                    dir.display()
                );
                return Ok(());
            }
            CacheCommand::Gc { .. } => {
                tracing::info!(
                    "the cache {} does not exist yet: nothing to remove",
                    dir.display()
                );
                return Ok(());
            }
            CacheCommand::Rm { key } | CacheCommand::Extract { key, .. } => {
                return Err(bad_input(format!(
                    "no entry {key}: the cache {} does not exist yet",
                    dir.display()
                )))
            }
        }
    }
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "the cache {} is not a directory",
            dir.display()
        )));
    }
    let cache = Cache::open(&dir)?;
    let images = Images::new(&cache);
    match &args.command {
        CacheCommand::Ls => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let entries = cache.list()?;
            println!(
                "{:<16}  {:<16}  {:>9}  {:>9}  {:>9}  PARENT",
                "KEY", "LAYER", "SIZE", "BUILT", "USED"
            );
            for e in &entries {
                let parent = e
                    .inputs
                    .parent
                    .as_ref()
                    .map_or("-".to_string(), |p| p.key[..16].to_string());
                println!(
                    "{:<16}  {:<16}  {:>9}  {:>9}  {:>9}  {parent}",
                    &e.key[..16],
                    e.layer,
                    human_size(e.size),
                    ago(now, e.created),
                    ago(now, cache.last_used(&e.key)),
                );
            }
            let image_entries = images.list();
            for e in &image_entries {
                println!(
                    "{:<16}  {:<16}  {:>9}  {:>9}  {:>9}  {}",
                    &e.key[..16],
                    image_label(e),
                    human_size(e.size),
                    ago(now, e.created),
                    ago(now, images.last_used(&e.key)),
                    &e.inputs.top_layer.key[..16.min(e.inputs.top_layer.key.len())],
                );
            }
            let total: u64 = entries.iter().map(|e| e.size).sum::<u64>()
                + image_entries.iter().map(|e| e.size).sum::<u64>();
            eprintln!(
                "{} entries ({} images), {} in {}",
                entries.len() + image_entries.len(),
                image_entries.len(),
                human_size(total),
                dir.display()
            );
        }
        CacheCommand::Gc { keep } => {
            let lock = cache.lock()?;
            let removed = cache.gc(*keep)?;
            let removed_images = images.gc(&lock, *keep)?;
            let freed: u64 = removed.iter().map(|e| e.size).sum::<u64>()
                + removed_images.iter().map(|e| e.size).sum::<u64>();
            for e in &removed {
                println!("removed {} {}", &e.key[..16], e.layer);
            }
            for e in &removed_images {
                println!("removed {} {}", &e.key[..16], image_label(e));
            }
            eprintln!(
                "removed {} entries, freed {}",
                removed.len() + removed_images.len(),
                human_size(freed)
            );
        }
        CacheCommand::Rm { key } => {
            let lock = cache.lock()?;
            cache::check_key_prefix(key)?;
            let image_matches = images.matching(key);
            let layer_matches = cache
                .list()?
                .iter()
                .filter(|e| e.key.starts_with(key.as_str()))
                .count();
            match (image_matches.as_slice(), layer_matches) {
                ([], _) => {
                    let e = cache.remove(key)?;
                    println!("removed {} {}", e.key, e.layer);
                }
                ([one], 0) => {
                    images.delete(&lock, &one.key)?;
                    println!("removed {} {}", one.key, image_label(one));
                }
                (many, n) => {
                    return Err(bad_input(format!(
                        "{key} matches {} entries; give more digits",
                        many.len() + n
                    )))
                }
            }
        }
        CacheCommand::Extract { key, dest } => extract(&cache, key, dest)?,
    }
    Ok(())
}

/// `imgbuild cache extract KEY DIR`.
fn extract(cache: &Cache, key: &str, dest: &std::path::Path) -> anyhow::Result<()> {
    cache::check_key_prefix(key)?;
    let _lock = cache.lock()?;
    let all = cache.list()?;
    let entry = match crate::entries::matching(&all, key, |e| &e.key).as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(bad_input(format!(
                "no layer entry {key} in {}",
                cache.dir().display()
            )))
        }
        many => {
            return Err(bad_input(format!(
                "{key} matches {} entries; give more digits",
                many.len()
            )))
        }
    };
    match std::fs::read_dir(dest).map(|mut d| d.next().is_some()) {
        Ok(true) => {
            return Err(bad_input(format!(
                "{}: exists and is not an empty directory",
                dest.display()
            )))
        }
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(dest)
            .map_err(|e| bad_input(format!("creating {}: {e}", dest.display())))?,
        Err(e) => return Err(bad_input(format!("{}: {e}", dest.display()))),
    }
    crate::exit::require_root(
        "restoring a tree needs root: its owners, device nodes and security attributes",
    )?;
    let progress = Progress::new(0);
    let step = progress.step(format!(
        "extracting {} ({}) into {}",
        entry.layer,
        &entry.key[..12],
        dest.display()
    ));
    cache.extract(&entry.key, dest, &step)?;
    step.done();
    println!("{}\t{}\t{}", entry.layer, entry.key, dest.display());
    Ok(())
}

/// `image (qcow2)`: how `cache ls` names an image entry.
fn image_label(e: &imagecache::EntryMeta) -> String {
    format!("image ({})", e.inputs.image_format)
}

fn human_size(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", b as f64 / 1_073_741_824.0),
    }
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        7200..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(human_size(5), "5 B");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
        assert_eq!(ago(1000, 990), "10s ago");
        assert_eq!(ago(100_000, 0), "27h ago");
    }
}
