//! apt in the tree: the base by mmdebstrap, the layers' packages, the
//! `updates` step, the keyrings and the apt sources, and the shared .deb
//! cache (its lock and the copies in and out of a tree).

use super::*;

/// Hard-links (or copies) the shared .debs into the new tree's apt cache.
pub(super) const SYNC_IN: &str = r#"set -e; d="$1/var/cache/apt/archives"; mkdir -p "$d/partial"; { find "$IMGBUILD_APT_ARCHIVES" -maxdepth 1 -name '*.deb' -exec cp -l -t "$d" {} + ; } 2>/dev/null || find "$IMGBUILD_APT_ARCHIVES" -maxdepth 1 -name '*.deb' -exec cp -f -t "$d" {} +"#;

/// Keeps what mmdebstrap downloaded in the shared apt cache.
pub(super) const SYNC_OUT: &str = r#"set -e; d="$1/var/cache/apt/archives"; { find "$d" -maxdepth 1 -name '*.deb' -exec cp -l -n -t "$IMGBUILD_APT_ARCHIVES" {} + ; } 2>/dev/null || find "$d" -maxdepth 1 -name '*.deb' -exec cp -n -t "$IMGBUILD_APT_ARCHIVES" {} +"#;

/// How apt installs and upgrades in the tree: no questions, no
/// recommends, the packaged configuration kept where a layer changed it.
pub(super) const APT_INSTALL_OPTS: &[&str] = &[
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    "Dpkg::Use-Pty=0",
];

/// Bounded network waits for apt inside the tree.
pub(super) const APT_NET_OPTS: &[&str] = &[
    "-o",
    "Acquire::http::Timeout=20",
    "-o",
    "Acquire::Retries=2",
];

pub(super) const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

impl Run<'_> {
    /// One apt at a time writes to the apt package cache, which several
    /// cache directories may share (`--apt-cache`).
    pub(super) fn lock_apt(&self) -> anyhow::Result<cache::CacheLock> {
        cache::lock_file(
            &self.apt_archives.join(".imgbuild.lock"),
            "the apt package cache",
        )
    }

    pub(super) fn install_packages(
        &self,
        p: &Planned,
        root: &Path,
        env: &ChrootEnv,
        packages: &[String],
    ) -> anyhow::Result<()> {
        let name = &p.layer.name;
        let step = self.progress.step(format!("{name}: apt-get update"));
        let mut c = env.command(root, &["apt-get", "update", "-q"]);
        c.args(APT_NET_OPTS);
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get update")?;
        step.done();
        mount::check_interrupted()?;
        let step = self.progress.step(format!(
            "{name}: apt-get install ({} packages)",
            packages.len()
        ));
        let mut c = env.command(root, &["apt-get", "install"]);
        c.args(APT_INSTALL_OPTS).args(APT_NET_OPTS).args(packages);
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get install")?;
        step.done();
        Ok(())
    }

    /// The updates step: `apt-get dist-upgrade` from every pocket, old
    /// kernels purged, then the image's own apt sources.
    pub(super) fn updates(&self, root: &Path, env: &ChrootEnv) -> anyhow::Result<()> {
        let name = UPDATES_LAYER;
        if !self.base.release_only {
            let _apt = self.lock_apt()?;
            let session = self.chroot(root)?;
            let step = self.progress.step(format!("{name}: apt-get update"));
            let mut c = env.command(root, &["apt-get", "update", "-q"]);
            c.args(APT_NET_OPTS);
            cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("apt-get update")?;
            step.done();
            mount::check_interrupted()?;
            let step = self.progress.step(format!("{name}: apt-get dist-upgrade"));
            let mut c = env.command(root, &["apt-get", "dist-upgrade"]);
            c.args(APT_INSTALL_OPTS).args(APT_NET_OPTS);
            let mut upgraded = String::new();
            cmd::run_streaming(&mut c, &mut |l| {
                if l.contains(" upgraded, ") && l.contains(" newly installed") {
                    upgraded = l.trim().to_string();
                }
                step.line(l)
            })
            .context("apt-get dist-upgrade")?;
            step.done_with(&upgraded);
            let step = self.progress.step(format!("{name}: old kernels"));
            let mut c = env.command(root, &["/bin/sh", "-c", pockets::PURGE_OLD_KERNELS]);
            cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("purging old kernels")?;
            step.done();
            session.close()?;
        }
        self.write_sources(root, &self.image_sources)
    }

    /// Copies the `--keyring` files into the tree's `/etc/apt/keyrings`.
    pub(super) fn install_keyrings(&self, root: &Path) -> anyhow::Result<()> {
        for k in &self.base.keyrings {
            let bytes =
                fs::read(&k.source).with_context(|| format!("reading {}", k.source.display()))?;
            let dest = root.join(k.tree_path().trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("has a parent"))?;
            seeds::atomic::write_atomic(&dest, &bytes, 0o644)
                .with_context(|| format!("writing {}", k.tree_path()))?;
        }
        Ok(())
    }

    /// Writes the tree's apt sources in deb822 (`sources.list.d/DISTRO.sources`)
    /// and retires the one-line `sources.list`.
    pub(super) fn write_sources(&self, root: &Path, text: &str) -> anyhow::Result<()> {
        let (keyring, package) = self.base.distro.tree_keyring();
        if !root.join(keyring.trim_start_matches('/')).is_file() {
            bail!(
                "the tree has no {keyring} for its apt sources' Signed-By (the base layer must \
                 include {package})"
            );
        }
        let dir = root.join("etc/apt/sources.list.d");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        seeds::atomic::write_atomic(
            &dir.join(self.base.distro.sources_file()),
            text.as_bytes(),
            0o644,
        )
        .context("writing the apt sources")?;
        let list = root.join("etc/apt/sources.list");
        match self.base.distro {
            recipe::Distro::Ubuntu => seeds::atomic::write_atomic(
                &list,
                b"# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n",
                0o644,
            )
            .context("writing sources.list")?,
            recipe::Distro::Debian => match fs::remove_file(&list) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("removing sources.list"),
            },
        }
        Ok(())
    }

    pub(super) fn mmdebstrap(&self, p: &Planned, root: &Path) -> anyhow::Result<()> {
        require_tools(&["mmdebstrap"])?;
        let b = &self.base;
        let step = self.progress.step(format!(
            "{}: mmdebstrap {} {} ({})",
            p.layer.name, b.distro, b.suite, b.variant
        ));
        let mut c = cmd::command("mmdebstrap", ["--mode=root", "--format=directory"]);
        c.arg(format!("--variant={}", b.variant))
            .arg(format!("--components={}", b.components.join(",")))
            .arg("--aptopt=Acquire::http::Timeout \"20\"")
            .arg("--aptopt=Acquire::Retries \"2\"")
            .arg("--skip=essential/unlink")
            .arg(format!("--setup-hook={SYNC_IN}"))
            .arg(format!("--customize-hook={SYNC_OUT}"))
            .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"; echo localhost > \"$1/etc/hostname\"; chmod 644 \"$1/etc/hostname\"");
        let packages = p.layer.packages_for(b.distro);
        if !packages.is_empty() {
            c.arg(format!("--include={}", packages.join(",")));
        }
        // With extra keyrings: a directory of all of them (mmdebstrap takes
        // one --keyring; the distribution's own comes first).
        let keyring_dir = WorkDir::create(next_work_path(&self.cache, "keyrings"))?;
        let own = b.distro.keyring().unwrap_or(b.distro.tree_keyring().0);
        if !Path::new(own).is_file() {
            bail!(
                "{own} is missing: install {} (scripts/install-host-deps.sh) to build {}",
                b.distro.tree_keyring().1,
                b.distro
            );
        }
        if !b.keyrings.is_empty() {
            fs::copy(
                own,
                keyring_dir
                    .path()
                    .join(b.distro.tree_keyring().1.to_string() + ".gpg"),
            )
            .with_context(|| format!("copying {own}"))?;
            for k in &b.keyrings {
                fs::copy(&k.source, keyring_dir.path().join(&k.name))
                    .with_context(|| format!("copying {}", k.source.display()))?;
            }
            c.arg(format!("--keyring={}", keyring_dir.path().display()));
        } else if let Some(k) = b.distro.keyring() {
            c.arg(format!("--keyring={k}"));
        }
        c.arg(&b.suite).arg(root);
        let comps = b.components.join(" ");
        for pk in b.pockets() {
            c.arg(format!("deb {} {} {comps}", pk.mirror, pk.suite));
        }
        c.env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("IMGBUILD_APT_ARCHIVES", &self.apt_archives)
            .env("LC_ALL", "C.UTF-8");
        cmd::run_streaming(&mut c, &mut |l| step.line(l)).context("mmdebstrap")?;
        keyring_dir.remove()?;
        step.done();
        Ok(())
    }
}
