//! `imgbuild env check` and `imgbuild seed`.

use std::path::Path;

use anyhow::Context;
use seeds::env::{Env, LoadError};
use seeds::flatten::{flatten, Trees};
use seeds::nocloud::{seed_files, source_date_epoch, SeedInputs, VOLUME_ID};

use crate::cli::{EnvCheckArgs, SeedArgs};
use crate::exit::bad_input;

/// Loads and validates an env file: every problem becomes bad input (exit 2),
/// warnings are logged.
pub fn load_env(path: &Path) -> anyhow::Result<(Vec<u8>, Env)> {
    let bytes = match seeds::env::read_limited(path) {
        Ok(b) => b,
        Err(LoadError::Io { path, source }) => {
            return Err(bad_input(format!("reading env {path}: {source}")))
        }
        Err(LoadError::Invalid(e)) => return Err(bad_input(e.to_string())),
    };
    let env =
        Env::parse(&bytes, &path.display().to_string()).map_err(|e| bad_input(e.to_string()))?;
    for w in &env.warnings {
        tracing::warn!("{}:{w}", path.display());
    }
    crate::tlscheck::check(&env, &path.display().to_string())?;
    Ok((bytes, env))
}

pub fn check(args: &EnvCheckArgs) -> anyhow::Result<()> {
    let (_, env) = load_env(&args.env)?;
    if args.flatten {
        let out =
            flatten(&env.doc.0, &Trees::parse(&args.trees), &args.prefix).map_err(|errs| {
                bad_input(
                    errs.iter()
                        .map(|e| format!("{}:{e}", args.env.display()))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
        print!("{out}");
    }
    tracing::info!(
        "{}: ok (domain {}, {} warning(s))",
        args.env.display(),
        env.appliance.domain,
        env.warnings.len()
    );
    Ok(())
}

pub fn seed(args: &SeedArgs) -> anyhow::Result<()> {
    let (bytes, env) = load_env(&args.env)?;
    check_output_path(&args.output, args.force)?;
    let mut inputs = vec![("the env", args.env.as_path())];
    if let Some(n) = &args.network_config {
        inputs.push(("the network-config", n.as_path()));
    }
    check_not_an_input(&args.output, &inputs)?;
    let network_config = match &args.network_config {
        Some(p) => Some(read_network_config(p)?),
        None => None,
    };
    write_seed(
        &args.output,
        &SeedInputs {
            env_bytes: &bytes,
            env: &env,
            network_config: network_config.as_deref(),
            instance_id: args.instance_id.as_deref(),
        },
    )?;
    tracing::info!(
        "wrote {} (cidata seed for {})",
        args.output.display(),
        env.appliance.domain
    );
    Ok(())
}

/// Writes the seed ISO for `inputs` to `path`: mode 0600 from creation (it
/// holds the env's secrets), through a temp file and rename.
pub fn write_seed(path: &Path, inputs: &SeedInputs) -> anyhow::Result<()> {
    let files = seed_files(inputs).map_err(bad_input)?;
    let epoch = source_date_epoch().map_err(bad_input)?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let iso = seeds::iso::write_iso(VOLUME_ID, &refs, epoch).context("making the seed ISO")?;
    // What a killed earlier run left behind (`.NAME.tmpPID`).
    match seeds::atomic::remove_stale_temps(path) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "removed {n} temporary file(s) of an interrupted write of {}",
            path.display()
        ),
        Err(e) => tracing::warn!("looking for temporary files beside {}: {e}", path.display()),
    }
    seeds::atomic::write_atomic(path, &iso, 0o600).map_err(|e| {
        let msg = format!("writing {}: {e}", path.display());
        if matches!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        ) {
            bad_input(msg)
        } else {
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        }
    })
}

/// A network-config file: at most 1 MiB of YAML.
fn read_network_config(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = seeds::env::read_limited(path).map_err(|e| match e {
        LoadError::Io { path, source } => {
            bad_input(format!("reading network-config {path}: {source}"))
        }
        LoadError::Invalid(e) => bad_input(e.to_string()),
    })?;
    if bytes.len() > 1 << 20 {
        return Err(bad_input(format!(
            "network-config {} is larger than 1 MiB",
            path.display()
        )));
    }
    let text = seeds::yaml::decode(&bytes)
        .map_err(|e| bad_input(format!("network-config {}: {e}", path.display())))?;
    seeds::yaml::load(text)
        .map_err(|e| bad_input(format!("network-config {}:{e}", path.display())))?;
    Ok(bytes)
}

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
