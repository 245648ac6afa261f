//! A layer's files: the `files/` overlay, host files, owners and modes,
//! every path resolved inside the tree without following a link out of it.

use super::*;

/// Resolves `rel` inside `root` as the tree itself would see it: symlinks in
/// the parent directories are followed (absolute ones relative to `root`,
/// never out of it); the last component is not followed.
pub fn resolve_in_root(root: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    let Some(last) = rel.file_name() else {
        return Ok(root.to_path_buf());
    };
    for c in rel.parent().unwrap_or(Path::new("")).components() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push("..".into()),
            _ => {}
        }
    }
    pending.reverse();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let here: PathBuf = root
            .iter()
            .chain(cur.iter().map(|s| s.as_os_str()))
            .collect::<PathBuf>()
            .join(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    bail!(
                        "too many symlinks resolving {} in {}",
                        rel.display(),
                        root.display()
                    );
                }
                let target = fs::read_link(&here)?;
                if target.is_absolute() {
                    cur.clear();
                }
                let mut parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
            _ => cur.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(cur);
    Ok(p.join(last))
}

/// Copies the overlay `src` into the tree at `rel` (owner root, modes from
/// the overlay; existing directories keep their own mode and owner).
pub(super) fn copy_overlay(src: &Path, root: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let rel = rel.join(e.file_name());
        let to = resolve_in_root(root, &rel)?;
        let meta = fs::symlink_metadata(&from)?;
        let mode = meta.permissions().mode() & 0o7777;
        let existing = fs::symlink_metadata(&to).ok();
        let ctx = || format!("copying {} to /{}", from.display(), rel.display());
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                // A symlink to a directory (e.g. /bin → usr/bin): go through it.
                Some(m) if m.file_type().is_symlink() && to.is_dir() => {}
                Some(_) => bail!(
                    "{}: a directory in the overlay, but not in the tree at /{}",
                    from.display(),
                    rel.display()
                ),
                None => {
                    fs::create_dir(&to).with_context(ctx)?;
                    std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
                    fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(ctx)?;
                }
            }
            copy_overlay(&from, root, &rel)?;
            continue;
        }
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!(
                    "{}: a file in the overlay, but a directory in the tree at /{}",
                    from.display(),
                    rel.display()
                );
            }
            fs::remove_file(&to).with_context(ctx)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to).with_context(ctx)?;
        } else if meta.is_file() {
            fs::copy(&from, &to).with_context(ctx)?;
            // chown before chmod: chown clears set-id bits.
            std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(ctx)?;
            continue;
        } else {
            bail!(
                "{}: only files, directories and symlinks may be in an overlay",
                from.display()
            );
        }
        std::os::unix::fs::lchown(&to, Some(0), Some(0)).with_context(ctx)?;
    }
    Ok(())
}

pub(super) fn install_host_file(
    root: &Path,
    src: &Path,
    to: &str,
    mode: Mode,
) -> anyhow::Result<()> {
    let rel = recipe::tree_path(to).map_err(anyhow::Error::msg)?;
    let dest = resolve_in_root(root, &rel)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if fs::symlink_metadata(&dest).is_ok() {
        fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    fs::copy(src, &dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    std::os::unix::fs::chown(&dest, Some(0), Some(0))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode.0))?;
    Ok(())
}

pub(super) fn apply_attrs(root: &Path, fa: &recipe::FileAttrs) -> anyhow::Result<()> {
    let rel = recipe::tree_path(&fa.path).map_err(anyhow::Error::msg)?;
    let p = resolve_in_root(root, &rel)?;
    let uid = fa
        .owner
        .as_deref()
        .map(|o| lookup_id(root, "etc/passwd", o))
        .transpose()?;
    let gid = fa
        .group
        .as_deref()
        .map(|g| lookup_id(root, "etc/group", g))
        .transpose()?;
    let before =
        fs::symlink_metadata(&p).with_context(|| format!("{}: not in the tree", fa.path))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(&p, uid, gid).with_context(|| format!("chown {}", fa.path))?;
    }
    // chown clears set-id bits: put the mode back (or set the new one).
    let mode = fa
        .mode
        .map(|m| m.0)
        .or((!before.file_type().is_symlink()).then(|| before.permissions().mode() & 0o7777));
    if let Some(m) = mode.map(Mode) {
        fs::set_permissions(&p, fs::Permissions::from_mode(m.0))
            .with_context(|| format!("chmod {}", fa.path))?;
    }
    Ok(())
}

/// A user or group id from the tree's passwd/group file, or a number.
pub(super) fn lookup_id(root: &Path, db: &str, name: &str) -> anyhow::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text =
        fs::read_to_string(root.join(db)).with_context(|| format!("reading /{db} in the tree"))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| {
            bad_input(format!(
                "{name}: not in the tree's /{db} (an earlier layer or this one must create it)"
            ))
        })
}
