//! Checks of output paths, shared by the build and `imgbuild seed`: an
//! existing, writable directory, a regular file (or none), never one of the
//! command's inputs.

use std::path::Path;

use crate::exit::bad_input;

/// An output path must be in an existing, writable directory; if it exists
/// it must be a regular file (never a directory, a device, a FIFO or a
/// symbolic link, dangling or not: the output replaces what is at the path),
/// and without `force` it must not exist yet.
pub fn check_output_path(path: &Path, force: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if path.file_name().is_none() || path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(bad_input(format!(
            "output {} is not a file name",
            path.display()
        )));
    }
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "output directory {} does not exist",
            dir.display()
        )));
    }
    check_writable_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bad_input(format!("output {}: {e}", path.display()))),
        Ok(m) => {
            let ft = m.file_type();
            if let Some(what) = not_regular(&ft) {
                let hint = if ft.is_symlink() {
                    ": give the path of the file itself"
                } else {
                    ": an output replaces only a regular file"
                };
                return Err(bad_input(format!(
                    "output {} is {what}{hint}",
                    path.display()
                )));
            }
            if !force {
                return Err(bad_input(format!(
                    "output {} exists (use --force to replace it)",
                    path.display()
                )));
            }
            Ok(())
        }
    }
}

/// What a file is when it is not a regular file (`a directory`, ...).
pub fn not_regular(ft: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if ft.is_file() {
        return None;
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device node"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    })
}

/// Refuses an output directory this process cannot create files in.
pub fn check_writable_dir(dir: &Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| bad_input(format!("{} has a NUL byte", dir.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(bad_input(format!(
            "the output directory {} is not writable: {}",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The file an output path would replace, as (directory, name): two paths
/// with the same identity are one file, however they are spelled.
pub fn file_identity(path: &Path) -> Option<(std::path::PathBuf, std::ffi::OsString)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some((
        std::fs::canonicalize(dir).ok()?,
        path.file_name()?.to_owned(),
    ))
}

/// Whether two paths name one file: the same directory and name, or (when
/// both exist) the same inode, as a hard link or a symlink would.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Some(x), Some(y)) = (file_identity(a), file_identity(b)) {
        if x == y {
            return true;
        }
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses an output that is one of the command's inputs (`--force` would
/// replace the env with the seed).
pub fn check_not_an_input(output: &Path, inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (what, input) in inputs {
        if same_file(output, input) {
            return Err(bad_input(format!(
                "output {} is {what} ({}): write the output elsewhere",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}
