//! The env as the builder uses it: read, validated (every problem is bad
//! input, exit 2), its TLS pair checked.

use std::path::Path;

use seeds::env::{Env, LoadError};

use crate::exit::bad_input;

/// Loads and validates an env file: every problem becomes bad input (exit 2),
/// warnings (and the keys it sets that have no effect in this image) are
/// logged.
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
    for w in env.warnings.iter().chain(&env.no_effect_warnings()) {
        tracing::warn!("{}:{w}", path.display());
    }
    crate::tlscheck::check(&env, &path.display().to_string())?;
    Ok((bytes, env))
}
