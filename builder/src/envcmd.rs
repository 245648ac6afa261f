//! `imgbuild env check` and `imgbuild seed`.

use crate::cli::{EnvCheckArgs, SeedArgs};

pub fn check(_args: &EnvCheckArgs) -> anyhow::Result<()> {
    anyhow::bail!("env check: being written")
}

pub fn seed(_args: &SeedArgs) -> anyhow::Result<()> {
    anyhow::bail!("seed: being written")
}
