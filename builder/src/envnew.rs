//! `imgbuild env new DOMAIN`: a complete env.yml for a new appliance, with
//! every secret fresh: the storage vault's OpenPGP keys (`ecs.vault_encrypt`,
//! `ecs.vault_sign`) and the backup's (`appliance.backup.encrypt`) made by
//! `gpg` ([`crate::openpgp`]), the DKIM key by `openssl` ([`crate::dkim`]),
//! the application's secret settings from the kernel's random source
//! (getrandom). Comments in the file say what to edit.
//!
//! The file is written mode 0600 from creation and never over an existing
//! one; before it is written the generated text is validated exactly as
//! `imgbuild env check` validates an env. What is printed (the DKIM DNS
//! record, the keys' fingerprints, the path) holds no secret.

use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context;
use seeds::secret::Secret;

use crate::cli::EnvNewArgs;
use crate::exit::bad_input;
use crate::openpgp::{GpgHome, KeyInfo, KeyUse};

/// What `env new` made, without the secrets.
#[derive(Debug)]
pub struct NewEnv {
    pub path: PathBuf,
    pub dkim_record: String,
    /// (env key, key) for each OpenPGP key in the env.
    pub keys: Vec<(&'static str, KeyInfo)>,
}

pub fn run(args: &EnvNewArgs) -> anyhow::Result<()> {
    let made = create(args)?;
    tracing::info!(
        "wrote {} (mode 0600; edit the lines marked `edit:`, then run imgbuild env check on it)",
        made.path.display()
    );
    println!("DKIM record (publish it in the DNS zone of the domain):");
    println!("{}", made.dkim_record);
    println!("OpenPGP keys:");
    for (key, info) in &made.keys {
        println!("{key:<26} {}  {}", info.fingerprint, info.uid);
    }
    Ok(())
}

/// Makes the env (see the module doc) and returns what may be shown of it.
pub fn create(args: &EnvNewArgs) -> anyhow::Result<NewEnv> {
    let domain = args.domain.trim_end_matches('.').to_string();
    seeds::env::check_domain(&domain)
        .map_err(|e| bad_input(format!("the domain {:?} {e}", args.domain)))?;
    let ssh_keys = read_ssh_keys(&args.ssh_key)?;
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&domain));
    let path = dir.join("env.yml");
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(bad_input(format!(
            "{} exists: env new never replaces an env (choose another -o DIR)",
            path.display()
        )));
    }

    let gpg = GpgHome::new()?;
    let mut keys = Vec::new();
    let mut armored = Vec::new();
    for (env_key, name, usage) in [
        ("ecs.vault_encrypt", "ecs_vault_encrypt", KeyUse::Encrypt),
        ("ecs.vault_sign", "ecs_vault_sign", KeyUse::Sign),
        (
            "appliance.backup.encrypt",
            "appliance_backup_encrypt",
            KeyUse::Encrypt,
        ),
    ] {
        let info = gpg.generate(name, &format!("{name}@{domain}"), usage)?;
        armored.push(gpg.export_secret(&info.fingerprint)?);
        keys.push((env_key, info));
    }
    drop(gpg);
    let dkim_key = seeds::dkim::generate()?;
    let dkim_record = seeds::dkim::txt_record(&domain, &seeds::dkim::public_key_der(&dkim_key)?);
    let secrets = Secrets {
        vault_encrypt: &armored[0],
        vault_sign: &armored[1],
        backup_encrypt: &armored[2],
        dkim_key: &dkim_key,
        secret_key: random_token(50)?,
        registration_secret: random_token(50)?,
        password_reset_secret: random_token(50)?,
    };
    let text = render(&domain, &ssh_keys, &secrets);
    // What env check would say, before anything is written.
    let env = seeds::env::Env::parse(text.expose().as_bytes(), "env.yml")
        .map_err(|e| anyhow::anyhow!("the generated env does not pass env check (a bug): {e}"))?;
    anyhow::ensure!(
        env.appliance.domain == domain,
        "the generated env names another domain"
    );

    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| bad_input(format!("creating {}: {e}", dir.display())))?;
    }
    seeds::atomic::write_new(&path, text.expose().as_bytes(), 0o600).map_err(|e| {
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => bad_input(format!(
                "{} exists: env new never replaces an env (choose another -o DIR)",
                path.display()
            )),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                bad_input(format!("writing {}: {e}", path.display()))
            }
            _ => anyhow::Error::new(e).context(format!("writing {}", path.display())),
        }
    })?;
    Ok(NewEnv {
        path,
        dkim_record,
        keys,
    })
}

/// The public key lines of the `--ssh-key` files (blank lines and `#`
/// comments skipped), each checked as the env check checks them.
fn read_ssh_keys(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for file in files {
        let bytes = seeds::env::read_limited(file).map_err(|e| match e {
            seeds::env::LoadError::Io { path, source } => {
                bad_input(format!("reading --ssh-key {path}: {source}"))
            }
            seeds::env::LoadError::Invalid(e) => bad_input(format!("--ssh-key: {e}")),
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| bad_input(format!("--ssh-key {}: not UTF-8 text", file.display())))?;
        let before = keys.len();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            seeds::env::check_ssh_key(line).map_err(|e| {
                bad_input(format!(
                    "--ssh-key {}:{}: the key {e}",
                    file.display(),
                    n + 1
                ))
            })?;
            keys.push(line.to_string());
        }
        if keys.len() == before {
            return Err(bad_input(format!(
                "--ssh-key {}: holds no public key line",
                file.display()
            )));
        }
    }
    Ok(keys)
}

struct Secrets<'a> {
    vault_encrypt: &'a Secret<String>,
    vault_sign: &'a Secret<String>,
    backup_encrypt: &'a Secret<String>,
    dkim_key: &'a Secret<String>,
    secret_key: Secret<String>,
    registration_secret: Secret<String>,
    password_reset_secret: Secret<String>,
}

/// `n` characters of `[A-Za-z0-9_-]` (6 bits each) from getrandom.
fn random_token(n: usize) -> anyhow::Result<Secret<String>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; n];
    os_random(&mut bytes)?;
    Ok(Secret::new(
        bytes
            .iter()
            .map(|b| ALPHABET[usize::from(b & 63)] as char)
            .collect(),
    ))
}

/// Fills `buf` from the kernel's random source (getrandom(2), blocking
/// until it is seeded).
fn os_random(buf: &mut [u8]) -> anyhow::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("reading the kernel's random source (getrandom)");
        }
        filled += n as usize;
    }
    Ok(())
}

/// `text` as a YAML block scalar's body, every line indented by `indent`.
fn block(text: &str, indent: &str) -> String {
    let mut out = String::new();
    for line in text.trim_end_matches('\n').lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{indent}{line}");
        }
    }
    out
}

/// The env's text.
fn render(domain: &str, ssh_keys: &[String], s: &Secrets) -> Secret<String> {
    let ssh = if ssh_keys.is_empty() {
        "ssh_authorized_keys: []\n# edit: add the administrators' public keys, e.g.\n\
         # ssh_authorized_keys:\n#   - \"ssh-ed25519 AAAA... admin@example.org\"\n"
            .to_string()
    } else {
        let mut t = String::from("ssh_authorized_keys:\n");
        for k in ssh_keys {
            // A JSON string is a YAML double-quoted scalar.
            let _ = writeln!(
                t,
                "  - {}",
                serde_json::to_string(k).expect("a string serializes")
            );
        }
        t
    };
    let settings = format!(
        "DOMAIN = '{domain}'\n\
         ABSOLUTE_URL_PREFIX = 'https://{{}}'.format(DOMAIN)\n\
         ALLOWED_HOSTS = [DOMAIN, ]\n\
         PDFAS_SERVICE = ABSOLUTE_URL_PREFIX + '/pdf-as-web/'\n\
         SECURE_PROXY_SSL = True\n\
         # edit: the UUID of the ethics commission this appliance serves\n\
         ETHICS_COMMISSION_UUID = 'ecececececececececececececececec'\n\
         # edit: the Sentry DSN, if there is one\n\
         # SENTRY_DSN = 'https://key@sentry.example.org/1'\n\
         # fresh secrets of this appliance: keep them, never reuse them elsewhere\n\
         SECRET_KEY = '{}'\n\
         REGISTRATION_SECRET = '{}'\n\
         PASSWORD_RESET_SECRET = '{}'\n\
         EMAIL_BACKEND = 'django.core.mail.backends.smtp.EmailBackend'\n\
         EMAIL_BACKEND_UNFILTERED = 'django.core.mail.backends.smtp.EmailBackend'\n\
         # edit: domains and addresses that get mail unfiltered\n\
         EMAIL_UNFILTERED_DOMAINS = ()\n\
         EMAIL_UNFILTERED_INDIVIDUALS = ()\n\
         SMTPD_CONFIG = {{'listen_addr': ('0.0.0.0', 8025), 'domain': DOMAIN, }}\n",
        s.secret_key.expose(),
        s.registration_secret.expose(),
        s.password_reset_secret.expose(),
    );
    Secret::new(format!(
        "#cloud-config\n\
         # The env of the ECS appliance {domain}, made by `imgbuild env new`.\n\
         # It holds this appliance's secrets: keep it mode 0600, out of version\n\
         # control, and a copy offline (`imgbuild env package`). Lines marked\n\
         # `edit:` need your values; every key is described in imgbuild's docs/env.md.\n\
         # Check it after editing: imgbuild env check env.yml\n\
         {ssh}\
         disable_root: false\n\
         appliance:\n  \
           domain: {domain}\n  \
           ssl:\n    \
             # Let's Encrypt certificate for the domain (needs port 80 reachable from the\n    \
             # internet); edit: or give your own as ssl.cert and ssl.key (PEM).\n    \
             letsencrypt: {{enabled: true}}\n  \
           storage:\n    \
             # edit: /data and /volatile as directories on the root disk. For a real\n    \
             # appliance give them their own volumes instead (see docs/env.md), e.g.\n    \
             #   data: {{size: 50G}}\n    \
             #   volatile: {{size: rest}}\n    \
             ignore: {{data: true, volatile: true}}\n  \
           # the DKIM key mail from the appliance is signed with; its public half\n  \
           # goes into the DNS (`imgbuild env new` printed the record)\n  \
           dkim:\n    \
             key: |\n{dkim}  \
           backup:\n    \
             # edit: where backups go (duplicity URL), e.g. sftp://user@host/path\n    \
             url: file:///volatile/ecs-backup-test/\n    \
             # the OpenPGP key backups are encrypted to (keep a copy: without it\n    \
             # no backup can be restored)\n    \
             encrypt: |\n{backup}\
         ecs:\n  \
           # the application's Python settings\n  \
           settings: |\n{settings}  \
           # the storage vault's OpenPGP keys (documents are encrypted and signed with them)\n  \
           vault_encrypt: |\n{enc}  \
           vault_sign: |\n{sign}",
        dkim = block(s.dkim_key.expose(), "      "),
        backup = block(s.backup_encrypt.expose(), "      "),
        settings = block(&settings, "    "),
        enc = block(s.vault_encrypt.expose(), "    "),
        sign = block(s.vault_sign.expose(), "    "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_use_the_alphabet() {
        let a = random_token(50).unwrap();
        let b = random_token(50).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 50);
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn rendered_env_passes_the_check() {
        let k = |s: &str| Secret::new(format!("-----BEGIN X-----\n{s}\n-----END X-----\n"));
        let (e, g, b, d) = (k("enc"), k("sign"), k("backup"), k("dkim"));
        let s = Secrets {
            vault_encrypt: &e,
            vault_sign: &g,
            backup_encrypt: &b,
            dkim_key: &d,
            secret_key: Secret::new("sk".into()),
            registration_secret: Secret::new("rs".into()),
            password_reset_secret: Secret::new("pr".into()),
        };
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example";
        for keys in [vec![], vec![key.to_string()]] {
            let text = render("ecs.example.org", &keys, &s);
            let env = seeds::env::Env::parse(text.expose().as_bytes(), "env.yml")
                .unwrap_or_else(|e| panic!("{e}\n{}", text.expose()));
            assert!(env.warnings.is_empty(), "{:?}", env.warnings);
            assert_eq!(env.ssh_authorized_keys, keys);
            assert_eq!(env.ecs.vault_sign.expose(), g.expose());
            assert_eq!(
                env.appliance.dkim_key.as_ref().unwrap().expose(),
                d.expose()
            );
            assert_eq!(
                env.appliance.backup.encrypt.as_ref().unwrap().expose(),
                b.expose()
            );
            assert!(env.ecs.settings.expose().contains("SECRET_KEY = 'sk'\n"));
        }
    }
}
