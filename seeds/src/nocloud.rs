//! The files of a cloud-init NoCloud seed (`cidata`): `user-data` (the env
//! bytes verbatim), `meta-data` and an optional `network-config`.

use sha2::{Digest, Sha256};

use crate::env::Env;

/// The volume label NoCloud readers look for.
pub const VOLUME_ID: &str = "cidata";

/// Everything a seed is made of.
pub struct SeedInputs<'a> {
    /// The env file's bytes, carried verbatim as `user-data`.
    pub env_bytes: &'a [u8],
    /// The validated env (for `local-hostname`).
    pub env: &'a Env,
    pub network_config: Option<&'a [u8]>,
    /// `None`: derived from a hash of the env (and network-config).
    pub instance_id: Option<&'a str>,
}

/// The instance-id derived from the seed's content: `iid-ecs-` and 16 hex digits.
pub fn derived_instance_id(env_bytes: &[u8], network_config: Option<&[u8]>) -> String {
    let mut h = Sha256::new();
    h.update(b"imgbuild-instance-id-v1\0");
    h.update((env_bytes.len() as u64).to_le_bytes());
    h.update(env_bytes);
    if let Some(n) = network_config {
        h.update(n);
    }
    format!("iid-ecs-{}", &hex::encode(h.finalize())[..16])
}

/// Checks a user-given instance-id: 1 to 128 of `[A-Za-z0-9._-]`, so it can
/// be written into meta-data without quoting.
pub fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "instance-id {id:?} must be 1 to 128 letters, digits, `.`, `_` or `-`"
        ));
    }
    Ok(())
}

/// The `meta-data` file.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// The seed's files, by name, in a fixed order.
pub fn seed_files(inputs: &SeedInputs) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let id = match inputs.instance_id {
        Some(id) => {
            check_instance_id(id)?;
            id.to_string()
        }
        None => derived_instance_id(inputs.env_bytes, inputs.network_config),
    };
    let mut files = vec![
        (
            "meta-data",
            meta_data(&id, inputs.env.hostname()).into_bytes(),
        ),
        ("user-data", inputs.env_bytes.to_vec()),
    ];
    if let Some(n) = inputs.network_config {
        files.push(("network-config", n.to_vec()));
    }
    Ok(files)
}

/// `SOURCE_DATE_EPOCH` from the environment, or 0 (so output is reproducible
/// by default). A value that is not a number is an error.
pub fn source_date_epoch() -> Result<i64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => parse_source_date_epoch(&v),
    }
}

/// `SOURCE_DATE_EPOCH` from the environment when it is set and not empty
/// (the one parser of it: `imgbuild` and its seed); a value that is not a
/// number is an error.
pub fn source_date_epoch_var() -> Result<Option<i64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => parse_source_date_epoch(&v).map(Some),
        _ => Ok(None),
    }
}

fn parse_source_date_epoch(v: &str) -> Result<i64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "#cloud-config\nappliance: {domain: ecs.example.org}\necs: {settings: s, vault_encrypt: e, vault_sign: v}\n";

    #[test]
    fn files_and_meta_data() {
        let env = Env::parse(ENV.as_bytes(), "env.yml").unwrap();
        let files = seed_files(&SeedInputs {
            env_bytes: ENV.as_bytes(),
            env: &env,
            network_config: None,
            instance_id: None,
        })
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1], ("user-data", ENV.as_bytes().to_vec()));
        let meta = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(meta.starts_with("instance-id: iid-ecs-"), "{meta}");
        assert!(
            meta.ends_with("\nlocal-hostname: ecs.example.org\n"),
            "{meta}"
        );
    }

    #[test]
    fn instance_id_follows_content() {
        let a = derived_instance_id(b"a", None);
        assert_eq!(a, derived_instance_id(b"a", None));
        assert_ne!(a, derived_instance_id(b"b", None));
        assert_ne!(a, derived_instance_id(b"a", Some(b"n")));
        assert!(check_instance_id("i-123.x_y").is_ok());
        assert!(check_instance_id("bad\nid: x").is_err());
        assert!(check_instance_id("").is_err());
    }
}
