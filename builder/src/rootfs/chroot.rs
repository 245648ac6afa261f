//! The chroot a layer's steps run in: /proc, /sys, /dev and the apt
//! caches mounted (RAII guards), no services started, the host's
//! resolv.conf, a clean environment; all of it undone on close, on drop
//! and on Ctrl-C. Layer scripts run here.

use super::*;

/// The environment of every command run in the tree.
pub(super) struct ChrootEnv {
    pub(super) layer: String,
    pub(super) sde: i64,
}

impl ChrootEnv {
    pub(super) fn command(&self, root: &Path, argv: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(root).args(argv);
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
            .env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("IMGBUILD_LAYER", &self.layer);
        c
    }
}

/// What is set up in the tree while a layer's steps run inside it.
pub(super) struct Chroot {
    pub(super) mounts: MountStack,
    pub(super) policy_rc_d: Option<PathBuf>,
    pub(super) resolv: Option<Resolv>,
    /// Directories made in the tree for local (file://) mirrors, outermost
    /// first; removed again after their unmount.
    pub(super) made_dirs: Vec<PathBuf>,
}

pub(super) struct Resolv {
    pub(super) path: PathBuf,
    pub(super) saved: Option<PathBuf>,
    pub(super) ours: Vec<u8>,
}

impl Chroot {
    pub(super) fn open(
        root: &Path,
        apt_archives: &Path,
        apt_lists: &Path,
        local_mirrors: &[PathBuf],
    ) -> anyhow::Result<Chroot> {
        let mut s = Chroot {
            mounts: MountStack::default(),
            policy_rc_d: None,
            resolv: None,
            made_dirs: Vec::new(),
        };
        let dir = |rel: &str| -> anyhow::Result<PathBuf> {
            let p = resolve_in_root(root, Path::new(rel))?;
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            Ok(p)
        };
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        s.mounts
            .push(Mount::filesystem("proc", &dir("proc")?, nosuid, "")?);
        s.mounts.push(Mount::filesystem(
            "sysfs",
            &dir("sys")?,
            nosuid | libc::MS_RDONLY,
            "",
        )?);
        s.mounts.push(Mount::bind(Path::new("/dev"), &dir("dev")?)?);
        s.mounts
            .push(Mount::bind(Path::new("/dev/pts"), &dir("dev/pts")?)?);
        fs::create_dir_all(apt_lists.join("partial"))?;
        s.mounts
            .push(Mount::bind(apt_archives, &dir("var/cache/apt/archives")?)?);
        s.mounts
            .push(Mount::bind(apt_lists, &dir("var/lib/apt/lists")?)?);
        // A file:// mirror is seen at its own path inside the tree, as
        // mmdebstrap does for the base.
        for m in local_mirrors {
            let rel = m.strip_prefix("/").unwrap_or(m);
            let target = resolve_in_root(root, rel)?;
            if !target.starts_with(root) {
                bail!("{} leads out of the tree", m.display());
            }
            let mut missing: Vec<PathBuf> = target
                .ancestors()
                .take_while(|a| *a != root && a.symlink_metadata().is_err())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            s.made_dirs.extend(missing);
            s.mounts.push(Mount::bind(m, &target)?);
        }

        // Services must not start while packages install.
        let policy = resolve_in_root(root, Path::new("usr/sbin/policy-rc.d"))?;
        if policy.symlink_metadata().is_err() {
            fs::create_dir_all(policy.parent().expect("has parent"))?;
            fs::write(
                &policy,
                "#!/bin/sh\n# imgbuild: no services start while a layer is built\nexit 101\n",
            )
            .with_context(|| format!("writing {}", policy.display()))?;
            fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
            s.policy_rc_d = Some(policy);
        }

        // Name resolution for apt: the host's resolv.conf, for the layer only.
        let ours = fs::read("/etc/resolv.conf").unwrap_or_default();
        let path = resolve_in_root(root, Path::new("etc/resolv.conf"))?;
        let saved = if path.symlink_metadata().is_ok() {
            let saved = path.with_file_name(".resolv.conf.imgbuild-saved");
            fs::rename(&path, &saved)
                .with_context(|| format!("moving {} aside", path.display()))?;
            Some(saved)
        } else {
            None
        };
        s.resolv = Some(Resolv {
            path: path.clone(),
            saved,
            ours: ours.clone(),
        });
        fs::write(&path, &ours).with_context(|| format!("writing {}", path.display()))?;
        Ok(s)
    }

    /// Undoes everything, reporting failures.
    pub(super) fn close(mut self) -> anyhow::Result<()> {
        let mounts = std::mem::take(&mut self.mounts);
        let unmounted = mounts.unmount_all();
        let restored = self.restore();
        unmounted.and(restored)
    }

    pub(super) fn restore(&mut self) -> anyhow::Result<()> {
        for d in std::mem::take(&mut self.made_dirs).iter().rev() {
            fs::remove_dir(d).with_context(|| format!("removing {}", d.display()))?;
        }
        if let Some(p) = self.policy_rc_d.take() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        if let Some(r) = self.resolv.take() {
            let still_ours = fs::symlink_metadata(&r.path).is_ok_and(|m| m.is_file())
                && fs::read(&r.path).is_ok_and(|b| b == r.ours);
            if still_ours {
                fs::remove_file(&r.path)?;
                if let Some(saved) = &r.saved {
                    fs::rename(saved, &r.path)?;
                }
            } else if let Some(saved) = &r.saved {
                // A package replaced resolv.conf: keep its version.
                fs::remove_file(saved)?;
            }
        }
        Ok(())
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        // Unmount first (MountStack's drop), then restore the files.
        drop(std::mem::take(&mut self.mounts));
        if let Err(e) = self.restore() {
            tracing::error!("restoring the tree after a layer: {e:#}");
        }
    }
}

pub(super) fn run_script(
    root: &Path,
    script: &Path,
    env: &ChrootEnv,
    step: &Step,
) -> anyhow::Result<()> {
    let dir = resolve_in_root(root, Path::new("tmp/imgbuild-scripts"))?;
    fs::create_dir_all(&dir)?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let name = script.file_name().context("script has a name")?;
    let inside = dir.join(name);
    fs::copy(script, &inside)
        .with_context(|| format!("copying {} into the tree", script.display()))?;
    fs::set_permissions(&inside, fs::Permissions::from_mode(0o755))?;
    let in_tree = format!("/tmp/imgbuild-scripts/{}", name.to_string_lossy());
    let mut c = env.command(root, &[in_tree.as_str()]);
    cmd::run_streaming(&mut c, &mut |l| step.line(l))?;
    Ok(())
}

impl Run<'_> {
    pub(super) fn chroot(&self, root: &Path) -> anyhow::Result<Chroot> {
        let local: Vec<PathBuf> = self
            .base
            .pockets()
            .iter()
            .filter_map(|p| p.mirror.strip_prefix("file://").map(PathBuf::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Chroot::open(
            root,
            &self.apt_archives,
            &self.cache.apt_lists(&self.base),
            &local,
        )
    }
}
