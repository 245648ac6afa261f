//! `imgbuild env check` and `imgbuild seed`.

use std::path::Path;

use anyhow::Context;
use seeds::env::{Env, LoadError};
use seeds::flatten::{flatten, Trees};

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
    let env = Env::parse(&bytes, &path.display().to_string())
        .map_err(|e| bad_input(e.to_string()))?;
    for w in &env.warnings {
        tracing::warn!("{}:{w}", path.display());
    }
    Ok((bytes, env))
}

pub fn check(args: &EnvCheckArgs) -> anyhow::Result<()> {
    let (_, env) = load_env(&args.env)?;
    if args.flatten {
        let out = flatten(&env.doc.0, &Trees::parse(&args.trees), &args.prefix).map_err(|errs| {
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
    let (_bytes, _env) = load_env(&args.env)?;
    check_output_path(&args.output, args.force)?;
    anyhow::bail!("seed: the ISO writer is being integrated")
}

/// An output path must be in an existing directory and, without `force`,
/// must not exist yet.
pub fn check_output_path(path: &Path, force: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "output directory {} does not exist",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(bad_input(format!("output {} is a directory", path.display())));
    }
    if !force && path.exists() {
        return Err(bad_input(format!(
            "output {} exists (use --force to replace it)",
            path.display()
        )));
    }
    std::fs::metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    Ok(())
}
