//! What a boot is given: SSH keys, test envs and TLS pairs, seeds, overlay
//! and blank disks.

use super::*;

/// A throw-away SSH key pair made with `ssh-keygen` for this test run
/// (under the artifacts, private half 0600).
#[derive(Clone, Debug)]
pub struct SshKey {
    pub private: PathBuf,
    /// The `authorized_keys` line.
    pub public: String,
}

/// The run's key pair named `name` (made on first use).
pub fn ssh_key(name: &str) -> Result<SshKey> {
    static KEYS: Mutex<Vec<(String, SshKey)>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, k)) = keys.iter().find(|(n, _)| n == name) {
        return Ok(k.clone());
    }
    require_tool("ssh-keygen")?;
    let dir = artifacts()?.join("ssh");
    fs::create_dir_all(&dir)?;
    let private = dir.join(name);
    let _ = fs::remove_file(&private);
    let _ = fs::remove_file(private.with_extension("pub"));
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@qemu-tests"))
            .arg("-f")
            .arg(&private),
        "ssh-keygen",
    )?;
    let public = fs::read_to_string(dir.join(format!("{name}.pub")))?
        .trim()
        .to_string();
    let k = SshKey { private, public };
    keys.push((name.to_string(), k.clone()));
    Ok(k)
}

/// The test envs' SSH key: logs in as root and app.
pub fn test_ssh_key() -> SshKey {
    ssh_key("boot-test").expect("making the test SSH key")
}

/// A key the test envs list in both `ssh_authorized_keys` and
/// `ssh_deprecated_keys`: deprecated wins, it must not log in.
pub fn deprecated_ssh_key() -> SshKey {
    ssh_key("deprecated").expect("making the deprecated SSH key")
}
/// The test envs' domain (and so the guest's host name).
pub const TEST_DOMAIN: &str = "ecs-boot-test.example.org";
/// The test envs' database name (`ecs.database`).
pub const TEST_DATABASE: &str = "ecsboottest";

/// The selector the appliance signs mail with (`layers/40-mail`).
pub const DKIM_SELECTOR: &str = "ecs";

/// The run's DKIM key (RSA 2048, made with openssl on first use).
#[derive(Clone, Debug)]
pub struct TestDkim {
    /// The private key, PEM (`appliance.dkim.key`).
    pub key: String,
    /// The public key's DER SubjectPublicKeyInfo, base64 (the `p=` of the
    /// DNS record).
    pub public: String,
}

pub fn test_dkim() -> &'static TestDkim {
    static DKIM: OnceLock<TestDkim> = OnceLock::new();
    DKIM.get_or_init(|| {
        (|| -> Result<TestDkim> {
            require_tool("openssl")?;
            let dir = artifacts()?.join("dkim");
            fs::create_dir_all(&dir)?;
            let key = dir.join("dkim.key");
            run(
                Command::new("openssl")
                    .args([
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-out",
                    ])
                    .arg(&key),
                "openssl: the test DKIM key",
            )?;
            // The PEM body of a public key is its DER SubjectPublicKeyInfo
            // in base64.
            let pem = run(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&key),
                "openssl pkey -pubout",
            )?;
            let public: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            Ok(TestDkim {
                key: fs::read_to_string(&key)?,
                public,
            })
        })()
        .expect("making the test DKIM key")
    })
}

/// A test env: storage as given (YAML flow map), placeholder secrets, the
/// node exporter on, mail signed with [`test_dkim`].
pub fn test_env(storage: &str) -> String {
    let (key, old) = (test_ssh_key().public, deprecated_ssh_key().public);
    let dkim: String = test_dkim()
        .key
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "#cloud-config\n\
         # Boot-test env: every secret is a placeholder.\n\
         ssh_authorized_keys:\n  - {key}\n  - {old}\n\
         ssh_deprecated_keys:\n  - {old}\n\
         disable_root: false\n\
         appliance:\n  domain: {TEST_DOMAIN}\n  ssl:\n    letsencrypt: {{enabled: false}}\n  \
         metric: {{exporter: true}}\n  dkim:\n    key: |\n{dkim}  \
         storage: {storage}\n\
         ecs:\n  database: {TEST_DATABASE}\n  settings: |\n    DOMAIN = '{TEST_DOMAIN}'\n  \
         vault_encrypt: placeholder-vault-encrypt\n  vault_sign: placeholder-vault-sign\n"
    )
}

/// A test CA and a certificate it signed for [`TEST_DOMAIN`] (EC P-256,
/// made with openssl for this test run).
#[derive(Debug)]
pub struct TestTls {
    /// The CA certificate (for curl `--cacert`).
    pub ca: PathBuf,
    /// The server certificate and key, PEM.
    pub cert: String,
    pub key: String,
}

/// The run's test CA and server certificate (made on first use).
pub fn test_tls() -> &'static TestTls {
    static T: OnceLock<Result<TestTls, String>> = OnceLock::new();
    once(&T, || {
        require_tool("openssl")?;
        let dir = artifacts()?.join("tls");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args([
                    "-days",
                    "30",
                    "-subj",
                    "/CN=imgbuild boot-test CA",
                    "-keyout",
                ])
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.crt")),
            "openssl: the test CA",
        )?;
        run(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", &format!("/CN={TEST_DOMAIN}"), "-keyout"])
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl: the server key",
        )?;
        fs::write(p("san.ext"), format!("subjectAltName=DNS:{TEST_DOMAIN}\n"))?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "30", "-in"])
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .args(["-CAcreateserial", "-extfile"])
                .arg(p("san.ext"))
                .arg("-out")
                .arg(p("server.crt")),
            "openssl: the server certificate",
        )?;
        Ok(TestTls {
            ca: p("ca.crt"),
            cert: fs::read_to_string(p("server.crt"))?,
            key: fs::read_to_string(p("server.key"))?,
        })
    })
    .expect("making the test TLS certificate")
}

/// Scenario 1's env: no separate volumes.
pub fn env_ignore_storage() -> String {
    test_env("{ignore: {data: true, volatile: true}}")
}

/// Scenario 3's env: volatile in the boot disk's free space, data on vdb.
/// It also carries the test CA's certificate for the domain
/// (`appliance.ssl.cert`/`key`), and the exporters are off.
pub fn env_volumes() -> String {
    let tls = test_tls();
    let block = |pem: &str| {
        pem.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    test_env("{volatile: {size: 2G}, data: {device: /dev/vdb}}")
        .replace("metric: {exporter: true}", "metric: {exporter: false}")
        .replace(
            "    letsencrypt: {enabled: false}\n",
            &format!(
                "    letsencrypt: {{enabled: false}}\n    cert: |\n{}    key: |\n{}",
                block(&tls.cert),
                block(&tls.key)
            ),
        )
}

/// Writes `env` to the artifacts and makes its seed with `imgbuild seed`.
pub fn seed(progs: &Programs, name: &str, env: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = artifacts()?.join("seeds");
    fs::create_dir_all(&dir)?;
    let env_path = dir.join(format!("{name}.env.yml"));
    fs::write(&env_path, env)?;
    let iso = dir.join(format!("{name}.seed.iso"));
    run(
        Command::new(&progs.imgbuild)
            .arg("seed")
            .arg("--env")
            .arg(&env_path)
            .arg("-o")
            .arg(&iso)
            .arg("--force"),
        "imgbuild seed",
    )?;
    Ok((env_path, iso))
}

/// A seed that `imgbuild seed` would refuse (an invalid env), written with
/// the seeds library directly.
pub fn raw_seed(name: &str, user_data: &[u8]) -> Result<PathBuf> {
    let dir = artifacts()?.join("seeds");
    fs::create_dir_all(&dir)?;
    let meta = seeds::nocloud::meta_data("iid-boot-test-invalid", "invalid-env");
    let files: Vec<(&str, &[u8])> = vec![("meta-data", meta.as_bytes()), ("user-data", user_data)];
    let iso = seeds::iso::write_iso("cidata", &files, 1_700_000_000)
        .map_err(|e| anyhow!("writing the seed ISO: {e}"))?;
    let path = dir.join(format!("{name}.seed.iso"));
    fs::write(&path, iso)?;
    Ok(path)
}

/// `imgbuild env check --flatten ENV`.
pub fn flatten(progs: &Programs, env: &Path) -> Result<String> {
    run(
        Command::new(&progs.imgbuild)
            .args(["env", "check", "--flatten"])
            .arg(env),
        "imgbuild env check --flatten",
    )
}

/// The format QEMU reads `base` as, by its suffix: qcow2, vmdk, vpc (`.vhd`),
/// vhdx, vdi, else raw.
pub fn backing_format(base: &Path) -> &'static str {
    let ext = base
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "qcow2" => "qcow2",
        "vmdk" => "vmdk",
        "vhd" => "vpc",
        "vhdx" => "vhdx",
        "vdi" => "vdi",
        _ => "raw",
    }
}

/// A fresh qcow2 overlay over `base` (any format QEMU reads, see
/// [`backing_format`]), enlarged to `size` with `qemu-img resize`.
pub fn overlay(base: &Path, dir: &Path, name: &str, size: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    run(
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                backing_format(base),
                "-b",
            ])
            .arg(base)
            .arg(&p),
        "qemu-img create (overlay)",
    )?;
    run(
        Command::new("qemu-img")
            .args(["resize", "-q"])
            .arg(&p)
            .arg(size),
        "qemu-img resize",
    )?;
    Ok(p)
}

/// A blank (all zero) qcow2 disk.
pub fn blank_disk(dir: &Path, name: &str, size: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&p)
            .arg(size),
        "qemu-img create (blank disk)",
    )?;
    Ok(p)
}
