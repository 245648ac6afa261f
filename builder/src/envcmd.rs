//! `imgbuild env check` and `imgbuild seed`.

use std::path::Path;

use anyhow::Context;
use seeds::dkim::{self, DkimError};
use seeds::env::{Env, LoadError};
use seeds::flatten::{flatten, Trees};
use seeds::nocloud::{seed_files, source_date_epoch, SeedInputs, VOLUME_ID};

use crate::cli::{EnvCheckArgs, SeedArgs};
use crate::env::load_env;
use crate::exit::bad_input;
use crate::outpath::{check_not_an_input, check_output_path};

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
    if args.dkim_record {
        print_dkim_record(&env, &args.env)?;
    }
    tracing::info!(
        "{}: ok (domain {}, {} warning(s))",
        args.env.display(),
        env.appliance.domain,
        env.warnings.len() + env.no_effect_warnings().len()
    );
    Ok(())
}

/// `--dkim-record`: the TXT record for the env's DKIM key on stdout.
fn print_dkim_record(env: &Env, path: &Path) -> anyhow::Result<()> {
    let what = "appliance.dkim.key";
    let Some(key) = &env.appliance.dkim_key else {
        return Err(bad_input(format!(
            "{}: {what}: is not set: --dkim-record needs the DKIM private key (PEM RSA)",
            path.display()
        )));
    };
    let der = dkim::public_key_der(key).map_err(|e| match e {
        DkimError::NoOpenssl(_) | DkimError::Generate => anyhow::Error::new(e),
        DkimError::NotAnRsaKey => bad_input(format!("{}: {what}: {e}", path.display())),
    })?;
    println!("{}", dkim::txt_record(&env.appliance.domain, &der));
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
