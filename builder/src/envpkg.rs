//! `imgbuild env package` and `imgbuild env unpack`: an env kept for
//! safekeeping offline, and restored from paper.
//!
//! `package` writes, beside each other (mode 0600, all of them hold the
//! env's secrets):
//!
//! - `DOMAIN.env.pdf`: the env's text and QR codes that reproduce its exact
//!   bytes ([`crate::envpdf`], [`crate::envqr`]);
//! - `DOMAIN.env.DATE.tar.gz.gpg`: the env's directory as a gzip'd tar,
//!   encrypted by `gpg` ([`crate::openpgp`]) with a passphrase or to
//!   OpenPGP keys, readable by the stock `gpg --decrypt`;
//! - `DOMAIN.seed.iso`: the seed, as `imgbuild seed` writes it.
//!
//! `unpack` takes the QR payloads as a scanner prints them (a text file,
//! one per line, any order: `zbarimg --raw`), or the PDF itself, which it
//! renders with `pdftoppm` and reads with `zbarimg`: the same path a scan of
//! the paper takes, so a restore from the PDF proves its codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use seeds::cmd;
use seeds::nocloud::SeedInputs;
use seeds::secret::Secret;
use sha2::{Digest, Sha256};

use crate::cli::{EnvPackageArgs, EnvUnpackArgs};
use crate::env::load_env;
use crate::exit::bad_input;
use crate::openpgp::GpgHome;
use crate::outpath::{check_not_an_input, check_output_path};

/// The file names `package` writes for `domain` on `date` (YYYY-MM-DD):
/// the PDF, the archive, the seed.
pub fn output_names(domain: &str, date: &str) -> [String; 3] {
    [
        format!("{domain}.env.pdf"),
        format!("{domain}.env.{date}.tar.gz.gpg"),
        format!("{domain}.seed.iso"),
    ]
}

/// Today's date in UTC, YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = seeds::civil::civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn package(args: &EnvPackageArgs) -> anyhow::Result<()> {
    let (bytes, env) = load_env(&args.env)?;
    let domain = env.appliance.domain.trim_end_matches('.').to_string();
    let env_path = std::fs::canonicalize(&args.env)
        .map_err(|e| bad_input(format!("env {}: {e}", args.env.display())))?;
    let env_dir = env_path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let out_dir = args.output.clone().unwrap_or_else(|| env_dir.clone());
    // A missing directory is made (its parent must exist); anything else
    // that is not a directory is an error.
    if !out_dir.exists() && out_dir.symlink_metadata().is_err() {
        std::fs::create_dir(&out_dir)
            .map_err(|e| bad_input(format!("-o {}: cannot make it: {e}", out_dir.display())))?;
    }
    if !out_dir.is_dir() {
        return Err(bad_input(format!(
            "-o {}: not a directory",
            out_dir.display()
        )));
    }
    let names = output_names(&domain, &today());
    let paths: Vec<PathBuf> = names.iter().map(|n| out_dir.join(n)).collect();
    for p in &paths {
        check_output_path(p, args.force)?;
        check_not_an_input(p, &[("the env", args.env.as_path())])?;
    }

    // The archive's key first: bad input fails before anything is made.
    let gpg = GpgHome::new()?;
    let (passphrase, recipients) = match (&args.passphrase_file, &args.recipient_key) {
        (Some(f), _) => (Some(read_passphrase(f)?), Vec::new()),
        (None, keys) if !keys.is_empty() => {
            let mut fprs = Vec::new();
            for k in keys {
                let bytes = std::fs::read(k)
                    .map_err(|e| bad_input(format!("--recipient-key {}: {e}", k.display())))?;
                let got = gpg.import(&bytes).map_err(|e| {
                    bad_input(format!(
                        "--recipient-key {}: not an OpenPGP key gpg can import ({e:#})",
                        k.display()
                    ))
                })?;
                fprs = got;
            }
            (None, fprs)
        }
        _ => {
            return Err(bad_input(
                "the archive needs --passphrase-file FILE or --recipient-key FILE",
            ))
        }
    };

    let payloads = crate::envqr::payloads(&bytes);
    let pdf = crate::envpdf::render(
        &format!(
            "{domain} env.yml, {} bytes, sha256 {}...",
            bytes.len(),
            &hex::encode(Sha256::digest(&bytes))[..16]
        ),
        &bytes,
        &payloads,
    )?;

    let tarball = gpg.path().join("env.tar.gz");
    let dir_name = env_dir
        .file_name()
        .ok_or_else(|| bad_input("the env must be in a directory of its own, not in /"))?;
    let mut tar = Command::new("tar");
    tar.arg("--create")
        .arg("--gzip")
        .arg("--sort=name")
        .arg("--file")
        .arg(&tarball)
        .arg("--directory")
        .arg(env_dir.parent().unwrap_or(Path::new("/")));
    for pattern in ["*.env.pdf", "*.tar.gz.gpg", "*.seed.iso", ".*.tmp[0-9]*"] {
        tar.arg(format!("--exclude={pattern}"));
    }
    tar.arg("--").arg(dir_name);
    cmd::run(&mut tar).with_context(|| format!("archiving {}", env_dir.display()))?;
    let archive = gpg.encrypt(&tarball, &recipients, passphrase.as_ref())?;
    drop(gpg);

    let write = |path: &Path, data: &[u8]| {
        seeds::atomic::write_atomic(path, data, 0o600)
            .with_context(|| format!("writing {}", path.display()))
    };
    write(&paths[0], &pdf)?;
    write(&paths[1], &archive)?;
    crate::envcmd::write_seed(
        &paths[2],
        &SeedInputs {
            env_bytes: &bytes,
            env: &env,
            network_config: None,
            instance_id: None,
        },
    )?;
    tracing::info!(
        "packaged {} ({} QR codes; the archive holds {}/)",
        args.env.display(),
        payloads.len(),
        dir_name.to_string_lossy()
    );
    for p in &paths {
        println!("{}", p.display());
    }
    Ok(())
}

/// The passphrase: the file's first line (without its line break), not empty.
fn read_passphrase(path: &Path) -> anyhow::Result<Secret<String>> {
    let bytes =
        seeds::env::read_limited(path).map_err(|e| bad_input(format!("--passphrase-file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        bad_input(format!(
            "--passphrase-file {}: not UTF-8 text",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(bad_input(format!(
            "--passphrase-file {}: its first line is empty",
            path.display()
        )));
    }
    Ok(Secret::new(line.to_string()))
}

pub fn unpack(args: &EnvUnpackArgs) -> anyhow::Result<()> {
    check_output_path(&args.output, args.force)?;
    check_not_an_input(&args.output, &[("the input", args.input.as_path())])?;
    let input = std::fs::read(&args.input)
        .map_err(|e| bad_input(format!("reading {}: {e}", args.input.display())))?;
    let text = if input.starts_with(b"%PDF-") {
        scan_pdf(&args.input)?
    } else {
        String::from_utf8(input)
            .map_err(|_| bad_input(format!("{}: not a PDF and not text", args.input.display())))?
    };
    let bytes = crate::envqr::reassemble(&text)
        .map_err(|e| bad_input(format!("{}: {e}", args.input.display())))?;
    let write = if args.force {
        seeds::atomic::write_atomic
    } else {
        seeds::atomic::write_new
    };
    write(&args.output, &bytes, 0o600).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bad_input(format!(
                "output {} exists (use --force to replace it)",
                args.output.display()
            ))
        } else {
            anyhow::Error::new(e).context(format!("writing {}", args.output.display()))
        }
    })?;
    match seeds::env::Env::parse(&bytes, &args.output.display().to_string()) {
        Ok(env) => tracing::info!(
            "restored {} ({} bytes, the env of {})",
            args.output.display(),
            bytes.len(),
            env.appliance.domain
        ),
        Err(e) => tracing::warn!(
            "restored {} ({} bytes, exactly as packaged), but it does not pass env check: {e}",
            args.output.display(),
            bytes.len()
        ),
    }
    Ok(())
}

/// The QR payloads in a PDF: each page rendered by `pdftoppm` (200 dpi,
/// grey) into a private temporary directory and read by `zbarimg`.
fn scan_pdf(pdf: &Path) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("imgbuild-unpack.")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut c = Command::new("pdftoppm");
    c.args(["-r", "200", "-gray", "-png"])
        .arg(pdf)
        .arg(dir.path().join("page"));
    cmd::run(&mut c).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "rendering {} (pdftoppm, Debian package poppler-utils)",
            pdf.display()
        ))
    })?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    let mut text = String::new();
    for page in pages {
        let mut c = Command::new("zbarimg");
        c.args(["--raw", "-q", "-Sdisable", "-Sqrcode.enable"])
            .arg(&page);
        match cmd::run(&mut c) {
            Ok(out) => text.push_str(&out.text()),
            // 4: no code on this page (a text page).
            Err(cmd::CmdError::Failed { status, .. }) if status.code() == Some(4) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "reading the QR codes of {} (zbarimg, Debian package zbar-tools)",
                    pdf.display()
                )))
            }
        }
    }
    Ok(text)
}
