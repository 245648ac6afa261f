//! A layer into the cache: archived now ([`Run::store`]), or read into a
//! plain tar and compressed in the background ([`PendingStore`]).

use super::*;

/// The top layer's cache entry while its tar is compressed in the
/// background (see [`Stack::build_with_background_store`]). Committed by
/// [`BuiltTree::finish_store`], or when dropped (a failed build still caches
/// a layer that was built), unless interrupted. Holds the cache's lock until
/// then, as the layer stage does.
pub(super) struct PendingStore {
    pub(super) name: String,
    pub(super) inputs: Inputs,
    pub(super) cache: Cache,
    pub(super) started: Instant,
    pub(super) job: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    pub(super) zst: TempFile,
    pub(super) tar: TempFile,
    pub(super) lock: Option<cache::CacheLock>,
    pub(super) delta: Option<cache::Delta>,
}

impl PendingStore {
    pub(super) fn commit(&mut self) -> anyhow::Result<()> {
        let Some(job) = self.job.take() else {
            return Ok(());
        };
        let compressed = job
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the compression thread panicked")));
        let _ = fs::remove_file(&self.tar.0);
        compressed.with_context(|| format!("layer {}: archiving", self.name))?;
        mount::check_interrupted()?;
        let meta = self
            .cache
            .store(&self.zst.0, &self.inputs, self.delta.take())?;
        tracing::info!(
            "{}: archiving: stored {} ({} MiB), compressed beside the disk, in {:.1}s",
            self.name,
            &meta.key[..12],
            meta.size >> 20,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

impl Drop for PendingStore {
    fn drop(&mut self) {
        if self.job.is_some() {
            if let Err(e) = self.commit() {
                tracing::warn!("{}: not cached: {e:#}", self.name);
            }
        }
        drop(self.lock.take());
    }
}

/// Removes a file when dropped (a temp archive of a failed layer).
pub(super) struct TempFile(pub(super) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Run<'_> {
    /// Reads the tree at `root` into a plain tar in `scratch` and leaves
    /// its compression and cache entry to the returned [`PendingStore`].
    pub(super) fn store_later(
        &self,
        root: &Path,
        name: &str,
        inputs: &Inputs,
        scratch: &Path,
    ) -> anyhow::Result<PendingStore> {
        let step = self.progress.step(format!("{name}: archiving"));
        let mounted = mount::mounts_under(root)?;
        if !mounted.is_empty() {
            bail!("not archiving: still mounted in the tree: {mounted:?}");
        }
        let started = Instant::now();
        let key = inputs.key();
        let tar = TempFile(scratch.join(format!(".{key}.tar")));
        let change = self.change(root)?;
        archive::create_uncompressed(root, change.members(), &tar.0, self.sde, &step)?;
        let zst = TempFile(self.cache.temp_archive_path(&key));
        let (from, to) = (tar.0.clone(), zst.0.clone());
        let job = std::thread::spawn(move || archive::compress(&from, &to));
        step.done_with("tree read; compressing it beside the disk");
        Ok(PendingStore {
            name: name.to_string(),
            inputs: inputs.clone(),
            cache: self.cache.clone(),
            started,
            job: Some(job),
            zst,
            tar,
            lock: None,
            delta: change.delta,
        })
    }

    /// Archives the tree at `root` into the cache under `inputs`' key.
    pub(super) fn store(&self, root: &Path, what: &str, inputs: &Inputs) -> anyhow::Result<()> {
        let step = self.progress.step(what);
        let mounted = mount::mounts_under(root)?;
        if !mounted.is_empty() {
            bail!("not archiving: still mounted in the tree: {mounted:?}");
        }
        let key = inputs.key();
        let tmp = TempFile(self.cache.temp_archive_path(&key));
        let change = self.change(root)?;
        archive::create(root, change.members(), &tmp.0, self.sde, &step)?;
        let what = change.describe();
        let meta = self.cache.store(&tmp.0, inputs, change.delta)?;
        step.done_with(&format!(
            "stored {} ({} MiB, {what})",
            &meta.key[..12],
            meta.size >> 20
        ));
        *self.baseline.borrow_mut() = Some(Baseline {
            key: meta.key,
            snap: change.after,
        });
        Ok(())
    }

    /// Takes the baseline: the tree at `root` is what entry `key` restores.
    pub(super) fn set_baseline(&self, key: &str, root: &Path) -> anyhow::Result<()> {
        *self.baseline.borrow_mut() = Some(Baseline {
            key: key.to_string(),
            snap: crate::treediff::Snapshot::take(root)?,
        });
        Ok(())
    }

    /// What the tree at `root` changed since the baseline (the whole tree
    /// when there is none: the base layer).
    fn change(&self, root: &Path) -> anyhow::Result<Change> {
        let after = crate::treediff::Snapshot::take(root)?;
        let baseline = self.baseline.borrow();
        Ok(match baseline.as_ref() {
            None => Change {
                changed: None,
                delta: None,
                total: after.len(),
                after,
            },
            Some(b) => {
                let c = b.snap.changes_to(&after);
                Change {
                    changed: Some(c.changed),
                    delta: Some(cache::Delta {
                        of: b.key.clone(),
                        removed: c.removed,
                    }),
                    total: after.len(),
                    after,
                }
            }
        })
    }
}

/// A tree's change from the baseline, to store.
struct Change {
    /// The paths to archive; `None`: all.
    changed: Option<Vec<PathBuf>>,
    delta: Option<cache::Delta>,
    /// Paths in the tree now, and its snapshot.
    total: usize,
    after: crate::treediff::Snapshot,
}

impl Change {
    fn members(&self) -> archive::Members<'_> {
        match &self.changed {
            None => archive::Members::All,
            Some(p) => archive::Members::Only(p),
        }
    }

    fn describe(&self) -> String {
        match (&self.changed, &self.delta) {
            (Some(c), Some(d)) => format!(
                "{} of {} paths changed, {} removed, on {}",
                c.len(),
                self.total,
                d.removed.len(),
                &d.of[..12.min(d.of.len())]
            ),
            _ => format!("the whole tree, {} paths", self.total),
        }
    }
}
