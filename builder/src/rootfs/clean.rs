//! The tree's cleanup after a layer (caches, logs, machine identity).

use super::*;

/// Removes what makes trees differ between builds or carry build-host state.
pub(super) fn cleanup_tree(root: &Path) -> anyhow::Result<()> {
    const REMOVE: &[&str] = &[
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/cache/ldconfig/aux-cache",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/apt/history.log",
        "var/log/apt/term.log",
        "var/log/apt/eipp.log.xz",
        "var/lib/dbus/machine-id",
        "var/lib/systemd/random-seed",
        // systemd-resolved's postinst backs up the build host's resolv.conf.
        "etc/.resolv.conf.systemd-resolved.bak",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/lib/dpkg/statoverride-old",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/subuid-",
        "etc/subgid-",
    ];
    for rel in REMOVE {
        let p = resolve_in_root(root, Path::new(rel))?;
        if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for rel in [
        "tmp",
        "var/tmp",
        "var/lib/apt/lists",
        "var/cache/apt/archives",
    ] {
        let dir = resolve_in_root(root, Path::new(rel))?;
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let keep = rel != "tmp"
                && rel != "var/tmp"
                && matches!(e.file_name().to_str(), Some("partial" | "lock"));
            if keep {
                continue;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                mount::remove_unless_mounted(&p)?;
            } else {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    // Every machine made from the image gets its own id on first boot.
    let mid = resolve_in_root(root, Path::new("etc/machine-id"))?;
    if fs::symlink_metadata(&mid).is_ok_and(|m| m.is_file() && m.len() > 0) {
        fs::write(&mid, b"").with_context(|| format!("emptying {}", mid.display()))?;
    }
    Ok(())
}
