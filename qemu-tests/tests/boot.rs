//! Boot tests: the default image (plus the test reporter layer), built from
//! Ubuntu noble once per run, booted in QEMU with seeds, one test per
//! scenario; the same layers on Debian bookworm boot under UEFI and SeaBIOS
//! beside them. Boots run one at a time ([`serial`]). Consoles and images
//! stay in `target/qemu-artifacts/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qemu_tests::acme::Pebble;
use qemu_tests::harness::{
    apt_state, artifacts, blank_disk, boot, build_image, check_services, debian_image,
    default_image, deprecated_ssh_key, distro_available, env_ignore_storage, env_volumes, flatten,
    kernel_of, overlay, programs, raw_seed, record_timing, seed, serial, services_probe, test_dkim,
    test_ssh_key, test_tls, BootSpec, Checks, Hardware, Image, ImageSpec, Outcome, Programs,
    SshProbe, TEST_DATABASE, TEST_DOMAIN,
};
use qemu_tests::report::Report;
use qemu_tests::{Bus, Firmware};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The programs and the default image; `None` (said in one line) when the
/// default distribution's archive does not answer.
fn setup() -> Option<(&'static Programs, &'static Image)> {
    if !distro_available("ubuntu") {
        return None;
    }
    let progs = ok(programs(Path::new(env!("CARGO_BIN_EXE_ecs-test-report"))));
    let image = ok(default_image(progs));
    Some((progs, image))
}

/// The distributions the scenarios of [`ignore_storage`] run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Distro {
    Ubuntu,
    Debian,
}

impl Distro {
    fn name(self) -> &'static str {
        match self {
            Distro::Ubuntu => "ubuntu",
            Distro::Debian => "debian",
        }
    }
    fn suite(self) -> &'static str {
        match self {
            Distro::Ubuntu => "noble",
            Distro::Debian => "bookworm",
        }
    }
    fn sources_file(self) -> &'static str {
        match self {
            Distro::Ubuntu => "ubuntu.sources",
            Distro::Debian => "debian.sources",
        }
    }
    fn image(self, progs: &'static Programs) -> &'static Image {
        match self {
            Distro::Ubuntu => ok(default_image(progs)),
            Distro::Debian => ok(debian_image(progs)),
        }
    }
}

fn disks_dir(name: &str) -> PathBuf {
    ok(artifacts()).join("disks").join(name)
}

/// The state every successful hand-off reaches.
fn check_handoff(c: &mut Checks, r: &Report, o: &Outcome, env: &str, flat: &str, source: &str) {
    let http = &o.page();
    check_https(c, r, o, env);
    // systemd breaks an ordering cycle by dropping a job at random.
    c.check(!o.console.contains("ordering cycle"), || {
        "systemd found an ordering cycle among the units (see the console)".into()
    });
    c.eq(r.hostname.as_str(), TEST_DOMAIN, "host name");
    match r.files.get("/run/active-env.yml") {
        Some(f) => {
            c.eq(f.mode, 0o600, "/run/active-env.yml mode");
            c.eq(f.uid, 0, "/run/active-env.yml owner");
            let content = f.content.as_deref().unwrap_or("");
            c.check(content.starts_with(env), || {
                format!("/run/active-env.yml does not start with the env:\n{content}")
            });
            c.check(
                content.contains(&format!("USERDATA_TYPE: {source}")),
                || format!("/run/active-env.yml lacks `USERDATA_TYPE: {source}`:\n{content}"),
            );
        }
        None => c.check(false, || "/run/active-env.yml is missing".into()),
    }
    match r.files.get("/run/active-env.env") {
        Some(f) => {
            c.eq(f.mode, 0o600, "/run/active-env.env mode");
            c.eq(
                f.content.as_deref().unwrap_or(""),
                flat,
                "/run/active-env.env vs imgbuild env check --flatten",
            );
        }
        None => c.check(false, || "/run/active-env.env is missing".into()),
    }
    let keys = r
        .files
        .get("/root/.ssh/authorized_keys")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    let key = test_ssh_key().public;
    // An env without a key: the appliance says so and still serves.
    let no_key = !env.contains(&key);
    c.check(no_key || keys.contains(&key), || {
        format!("root's authorized_keys lacks the env's key: {keys:?}")
    });
    // The startup page was last rendered for the application step.
    let startup = r
        .files
        .get("/run/ecs-appliance/www/startup.html")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    c.check(
        startup.contains("<li>services: done</li>")
            && startup.contains("<strong>application: in progress</strong>"),
        || format!("the startup page does not show the steps: {startup:?}"),
    );
    // The boots' machines (1 GiB) are below the sizing guide (3 GiB).
    let sizing = "below the sizing guide";
    c.check(
        o.console.contains(sizing) && http.1.contains(sizing),
        || {
            format!(
                "the console and the ready page should say {sizing:?}: {}",
                http.1
            )
        },
    );
    let notice = "no ssh key configured";
    c.check(http.1.contains(notice) == no_key, || {
        format!(
            "the ready page's notice {notice:?} is wrong here (env has a key: {}): {}",
            !no_key, http.1
        )
    });
    let old = deprecated_ssh_key().public;
    c.check(!keys.contains(&old), || {
        format!("root's authorized_keys keeps a deprecated key: {keys:?}")
    });
    // This machine's own TLS pair, made at first boot (the image has none).
    match r.files.get("/etc/ssl/private/ssl-cert-snakeoil.key") {
        Some(f) => {
            c.eq((f.mode, f.uid), (0o640, 0), "snakeoil key mode and owner");
            c.check(f.size > 0, || "the snakeoil key is empty".into());
            c.check(f.content.is_none(), || {
                "the reporter printed the snakeoil key's content".into()
            });
        }
        None => c.check(false, || "no snakeoil key at boot".into()),
    }
    let cert = r
        .files
        .get("/etc/ssl/certs/ssl-cert-snakeoil.pem")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    c.check(cert.contains("BEGIN CERTIFICATE"), || {
        format!("no snakeoil certificate at boot: {cert:?}")
    });
    c.eq(
        r.units
            .get("appliance-snakeoil.service")
            .map(|u| u.result.as_str()),
        Some("success"),
        "appliance-snakeoil.service result",
    );
    c.check(!r.files.contains_key("/run/appliance-failed"), || {
        format!(
            "/run/appliance-failed exists: {:?}",
            r.files["/run/appliance-failed"].content
        )
    });
    for unit in ["ecs-appliance.target", "nginx.service", "appliance.service"] {
        let state = r.units.get(unit).map(|u| u.active_state.as_str());
        c.eq(state, Some("active"), &format!("{unit} state"));
    }
    match &r.postgres {
        Some(pg) => {
            c.check(pg.data_directory.starts_with("/data/postgresql/"), || {
                format!("PostgreSQL's data directory is {}", pg.data_directory)
            });
            c.eq(
                pg.database_owners.get(TEST_DATABASE).map(String::as_str),
                Some("app"),
                "owner of the ecs.database database",
            );
        }
        None => c.check(false, || "no PostgreSQL facts".into()),
    }
    c.eq(
        http.0,
        200,
        "status page HTTP status through the port forward",
    );
    c.check(http.1.contains("Appliance Ready"), || {
        format!("status page is not the ready page: {}", http.1)
    });
    c.check(r.errors.is_empty(), || {
        format!("reporter errors: {:?}", r.errors)
    });
}

/// The root partition and filesystem fill a disk of `disk_bytes`.
fn check_root_fills(c: &mut Checks, r: &Report, disk_bytes: u64) {
    let root = &r.root;
    c.eq(root.disk_bytes, disk_bytes, "boot disk size");
    let end = root.part_start_bytes + root.part_bytes;
    c.check(end + MIB + 33 * 512 >= disk_bytes, || {
        format!("root partition ends at {end}, disk is {disk_bytes}: not grown to the end")
    });
    c.check(root.fs_bytes * 100 >= root.part_bytes * 90, || {
        format!(
            "root filesystem {} bytes in a partition of {}: not grown",
            root.fs_bytes, root.part_bytes
        )
    });
    let vda = r.disks.get(&root.disk);
    c.eq(
        vda.and_then(|d| d.gpt_backup_at_end),
        Some(true),
        "backup GPT header at the disk's end",
    );
}

/// How a scenario of [`ignore_storage`] gets its certificate.
#[derive(Clone, Copy, PartialEq)]
enum Tls {
    /// Let's Encrypt off: the machine's own self-signed pair.
    Own,
    /// From a local ACME server (pebble), with client certificates
    /// mandatory.
    Acme,
}

/// [`env_ignore_storage`] asking `pebble` for its certificate and requiring
/// client certificates.
fn env_acme(pebble: &Pebble) -> String {
    let ca: String = pebble
        .listener_ca_pem
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    env_ignore_storage().replace(
        "    letsencrypt: {enabled: false}\n",
        &format!(
            "    letsencrypt:\n      directory: {}\n      directory_ca: |\n{ca}    client_certs_mandatory: true\n",
            Pebble::guest_directory()
        ),
    )
}

/// Scenarios 1 and 2: one disk enlarged to 8 GiB, storage ignored.
fn ignore_storage(distro: Distro, firmware: Firmware, name: &str, tls: Tls) {
    if !distro_available(distro.name()) {
        return;
    }
    let _one = serial();
    let progs = ok(programs(Path::new(env!("CARGO_BIN_EXE_ecs-test-report"))));
    let image = distro.image(progs);
    let http_port = ok(qemu_tests::harness::free_port());
    let pebble = (tls == Tls::Acme).then(|| ok(Pebble::start(http_port)));
    let env = match &pebble {
        Some(p) => env_acme(p),
        None => env_ignore_storage(),
    };
    let (env_path, iso) = ok(seed(progs, name, &env));
    let flat = ok(flatten(progs, &env_path));
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let mut spec = BootSpec::new(name, firmware, vec![disk], Some(iso));
    spec.ssh = ssh_probes();
    spec.ssh.push(services_probe());
    spec.services = true;
    spec.http_port = Some(http_port);
    if let Some(p) = &pebble {
        spec.netdev_extra.push(p.guestfwd());
        spec.https_ca = Some(p.issuer_root.clone());
        spec.client_cert = true;
    }
    let o = ok(boot(&spec));
    drop(pebble);
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    check_ssh(&mut c, &o);
    check_services(&mut c, &o, o.ssh.get(4), test_dkim());
    for unit in [
        "appliance-mail.service",
        "postfix@-.service",
        "opendkim.service",
        "appliance-metrics.service",
        "prometheus-node-exporter.service",
        "prometheus-nginx-exporter.service",
        "prometheus-postgres-exporter.service",
    ] {
        let state = r.units.get(unit).map(|u| u.active_state.as_str());
        c.eq(state, Some("active"), &format!("{unit} state"));
    }
    let want_fw = if firmware == Firmware::Uefi {
        "uefi"
    } else {
        "bios"
    };
    c.eq(r.firmware.as_str(), want_fw, "firmware");
    check_root_fills(&mut c, r, 8 * GIB);
    check_handoff(&mut c, r, &o, &env, &flat, "cidata");
    let secrets = ok(tree_paths(image))
        .into_iter()
        .filter(|p| p.contains("ssl-cert-snakeoil") || p.contains("ssh_host_"))
        .collect::<Vec<_>>();
    c.check(secrets.is_empty(), || {
        format!("the image's tree carries keys every machine would share: {secrets:?}")
    });
    // Patched: with the build's own lists, apt finds nothing to upgrade, and
    // the image's sources name the security pocket for its own updates.
    let apt = ok(apt_state(image, distro.suite(), distro.sources_file()));
    c.check(
        apt.summary.starts_with("0 upgraded, 0 newly installed"),
        || {
            format!(
                "apt-get -s dist-upgrade on the image's tree: {}\n{}",
                apt.summary,
                apt.upgrades.join("\n")
            )
        },
    );
    check_own_identity(&mut c, distro, name, r, &o);
    let security = format!("{}-security", distro.suite());
    // The manifest names every pocket with its InRelease Date and sha256.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.dir.join("ecs.manifest.json")).expect("the manifest"),
    )
    .expect("the manifest is JSON");
    let pockets: Vec<(String, String, String)> = manifest["tree"]["pockets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let f = |k: &str| p[k].as_str().unwrap_or("").to_string();
                    (f("suite"), f("date"), f("sha256"))
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<String> = ["", "-updates", "-security"]
        .iter()
        .map(|p| format!("{}{p}", distro.suite()))
        .collect();
    c.eq(
        pockets.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        want,
        "the manifest's pockets",
    );
    c.check(
        pockets
            .iter()
            .all(|(_, date, sha)| date.len() > 20 && sha.len() == 64),
        || format!("a pocket without its Date or sha256 in the manifest: {pockets:?}"),
    );
    c.check(
        apt.sources
            .lines()
            .any(|l| l.starts_with("Suites:") && l.split_whitespace().any(|s| s == security)),
        || format!("the image's apt sources lack {security}:\n{}", apt.sources),
    );
    c.finish();
}

/// A boot of an env with the test CA's certificate ([`env_volumes`]): curl
/// must verify it against the CA.
fn with_test_ca(mut spec: BootSpec) -> BootSpec {
    spec.https_ca = Some(test_tls().ca.clone());
    spec
}

/// HTTPS on a ready appliance: port 80 redirects to it, and 443 serves the
/// env's certificate (verified by the test CA), the one the local ACME
/// server issued (verified by its root; with client certificates
/// mandatory) or, with neither, the machine's own self-signed one.
fn check_https(c: &mut Checks, r: &Report, o: &Outcome, env: &str) {
    c.eq(
        o.http.as_ref().map(|h| h.0).ok(),
        Some(301),
        "port 80's status on a ready appliance (a redirect to HTTPS)",
    );
    c.check(
        o.http_location
            .as_deref()
            .is_some_and(|l| l.starts_with("https://")),
        || {
            format!(
                "port 80 redirects to {:?}, not to https://",
                o.http_location
            )
        },
    );
    let served = o.served_cert.as_deref().unwrap_or("").trim();
    let own = r
        .files
        .get("/etc/ssl/certs/ssl-cert-snakeoil.pem")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    let acme_ran = r
        .units
        .get("appliance-acme.service")
        .is_some_and(|u| u.ever_started());
    if env.contains("directory_ca:") {
        // Issued by pebble: curl verified the chain against the root it
        // issues from (fetched from pebble before the boot).
        c.check(
            matches!(&o.https_client, Some(Ok((200, _)))),
            || {
                format!(
                    "curl --cacert pebble's root --cert a client certificate from /app/ecs-ca against https://{TEST_DOMAIN}/: {:?}",
                    o.https_client
                )
            },
        );
        c.check(!served.is_empty() && served != own.trim(), || {
            "the served certificate is the machine's own, not the ACME one".into()
        });
        c.check(
            o.console.contains("appliance-acme: certificate for"),
            || "appliance-acme.service says nothing of a new certificate on the console".into(),
        );
        // Client certificates are mandatory: without one, nginx refuses.
        c.eq(
            o.https.as_ref().map(|h| h.0).ok(),
            Some(400),
            "HTTPS without a client certificate (client_certs_mandatory)",
        );
        c.eq(
            r.units
                .get("appliance-acme.timer")
                .map(|u| u.active_state.as_str()),
            Some("active"),
            "appliance-acme.timer (the renewal)",
        );
    } else if env.contains("    cert: |") {
        c.eq(
            served,
            test_tls().cert.trim(),
            "the served certificate (the env's)",
        );
        c.check(o.https.is_ok(), || {
            format!(
                "curl --cacert the test CA against https://{TEST_DOMAIN}/: {:?}",
                o.https
            )
        });
        c.check(
            acme_ran && o.console.contains("appliance-acme: the env's certificate"),
            || "appliance-acme.service did not say that the env's certificate serves".into(),
        );
    } else {
        c.check(!served.is_empty() && served == own.trim(), || {
            format!("the served certificate is not the machine's own:\n{served}\nvs\n{own}")
        });
        if env.contains("letsencrypt: {enabled: false}") {
            c.check(
                o.console
                    .contains("appliance-acme: appliance.ssl.letsencrypt.enabled is false"),
                || "appliance-acme.service did not say that Let's Encrypt is off".into(),
            );
        } else {
            // The default CA cannot be reached from the test network: the
            // warning on the console and the ready page.
            c.check(
                o.console
                    .contains("appliance-acme: warning: no certificate for"),
                || "no warning of the unreachable ACME server on the console".into(),
            );
            c.check(o.page().1.contains("Warning: no certificate for"), || {
                format!(
                    "no warning of the unreachable ACME server on the ready page:\n{}",
                    o.page().1
                )
            });
        }
    }
    match r.files.get("/etc/ecs-appliance/tls/server.key") {
        Some(f) => {
            c.eq((f.mode, f.uid), (0o600, 0), "the TLS key's mode and owner");
            c.check(f.content.is_none(), || {
                "the reporter printed the TLS key's content".into()
            });
        }
        None => c.check(false, || "no /etc/ecs-appliance/tls/server.key".into()),
    }
}

/// The SSH logins every ready appliance is tried with, in this order: root
/// and app with the env's key, root with a password only, root with the
/// deprecated key.
fn ssh_probes() -> Vec<SshProbe> {
    let probe = |user: &str, key: Option<qemu_tests::harness::SshKey>| SshProbe {
        user: user.into(),
        key,
        command: "id -un".into(),
    };
    vec![
        probe("root", Some(test_ssh_key())),
        probe("app", Some(test_ssh_key())),
        probe("root", None),
        probe("root", Some(deprecated_ssh_key())),
    ]
}

/// What [`ssh_probes`] must give, and the host keys: the machine's own,
/// printed on the console, shown to the client.
fn check_ssh(c: &mut Checks, o: &Outcome) {
    let [root, app, password, deprecated, ..] = o.ssh.as_slice() else {
        c.check(false, || {
            format!("{} SSH results, want 4 or more", o.ssh.len())
        });
        return;
    };
    for (r, user) in [(root, "root"), (app, "app")] {
        c.check(r.status == Some(0) && r.stdout.trim() == user, || {
            format!(
                "ssh {user}@ with the env's key: status {:?}, stdout {:?}, stderr {:?}",
                r.status, r.stdout, r.stderr
            )
        });
    }
    c.check(
        password.status == Some(255) && password.stderr.contains("Permission denied (publickey)"),
        || {
            format!(
                "a password login was not refused as key-only: status {:?}, stderr {:?}",
                password.status, password.stderr
            )
        },
    );
    c.check(
        deprecated.status == Some(255) && deprecated.stderr.contains("Permission denied"),
        || {
            format!(
                "the deprecated key was not refused: status {:?}, stdout {:?}, stderr {:?}",
                deprecated.status, deprecated.stdout, deprecated.stderr
            )
        },
    );
    // The fingerprints on the console, between cloud-init's markers.
    let printed: Vec<&str> = o
        .console
        .lines()
        .skip_while(|l| !l.contains("-----BEGIN SSH HOST KEY FINGERPRINTS-----"))
        .take_while(|l| !l.contains("-----END SSH HOST KEY FINGERPRINTS-----"))
        .collect();
    for kind in ["(ED25519)", "(ECDSA)", "(RSA)"] {
        c.check(printed.iter().any(|l| l.trim_end().ends_with(kind)), || {
            format!("no {kind} host key fingerprint on the console: {printed:?}")
        });
    }
    c.check(
        printed
            .iter()
            .any(|l| l.trim_end().ends_with("(RSA)") && l.split_whitespace().any(|w| w == "3072")),
        || format!("the RSA host key is not 3072 bits: {printed:?}"),
    );
    c.check(!o.host_key_fingerprints.is_empty(), || {
        "the SSH client recorded no host key".into()
    });
    for f in &o.host_key_fingerprints {
        c.check(printed.iter().any(|l| l.contains(f.as_str())), || {
            format!("the served host key {f} is not among the console's fingerprints {printed:?}")
        });
    }
}

/// What must differ between two machines booted from one image.
#[derive(Clone, Debug)]
struct Identity {
    boot: String,
    ssh_host_key: String,
    tls_cert: String,
    pg_system_identifier: String,
}

/// Records this boot's identity, and compares it with the other boot of
/// the same image (s1 and s2 on Ubuntu, d1 and d2 on Debian), whichever ran
/// first: no SSH host key, TLS certificate or PostgreSQL system identifier
/// may be the same.
fn check_own_identity(c: &mut Checks, distro: Distro, name: &str, r: &Report, o: &Outcome) {
    static SEEN: std::sync::Mutex<Vec<(Distro, Identity)>> = std::sync::Mutex::new(Vec::new());
    let me = Identity {
        boot: name.into(),
        ssh_host_key: o.host_key_fingerprints.first().cloned().unwrap_or_default(),
        tls_cert: o.served_cert.clone().unwrap_or_default(),
        pg_system_identifier: r
            .postgres
            .as_ref()
            .map(|p| p.system_identifier.clone())
            .unwrap_or_default(),
    };
    c.check(
        !me.ssh_host_key.is_empty()
            && !me.tls_cert.is_empty()
            && !me.pg_system_identifier.is_empty(),
        || format!("an identity fact is missing: {me:?}"),
    );
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for (_, other) in seen.iter().filter(|(d, _)| *d == distro) {
        for (what, a, b) in [
            ("SSH host key", &me.ssh_host_key, &other.ssh_host_key),
            ("TLS certificate", &me.tls_cert, &other.tls_cert),
            (
                "PostgreSQL system identifier",
                &me.pg_system_identifier,
                &other.pg_system_identifier,
            ),
        ] {
            c.check(a != b, || {
                format!(
                    "{} and {} from one image share their {what}",
                    me.boot, other.boot
                )
            });
        }
    }
    seen.push((distro, me));
}

/// Every path of the image's tree (`./etc/...`), as the layer cache holds
/// it (restored by `imgbuild cache extract`).
fn tree_paths(image: &Image) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let root = qemu_tests::harness::cached_tree(image)?;
    let out = std::process::Command::new("find")
        .arg(".")
        .current_dir(root.path())
        .output()
        .context("listing the restored tree")?;
    anyhow::ensure!(
        out.status.success(),
        "find: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            if l == "." {
                "./".to_string()
            } else {
                l.to_string()
            }
        })
        .collect())
}

#[test]
fn s1_uefi_ignore_storage_fills_disk() {
    ignore_storage(Distro::Ubuntu, Firmware::Uefi, "s1-uefi", Tls::Own);
}

#[test]
fn s2_seabios_same_state() {
    ignore_storage(Distro::Ubuntu, Firmware::Bios, "s2-bios", Tls::Acme);
}

#[test]
fn d1_debian_uefi_ready() {
    ignore_storage(Distro::Debian, Firmware::Uefi, "d1-debian-uefi", Tls::Own);
}

#[test]
fn d2_debian_seabios_ready() {
    ignore_storage(Distro::Debian, Firmware::Bios, "d2-debian-bios", Tls::Own);
}

/// Scenario 3's disks and first boot, shared with scenario 4.
struct Volumes {
    disks: Vec<PathBuf>,
    iso: PathBuf,
    flat: String,
    first: Outcome,
}

fn volumes_first_boot() -> &'static Volumes {
    static V: OnceLock<Result<Volumes, String>> = OnceLock::new();
    let v = V.get_or_init(|| {
        let (progs, image) = setup().expect("the callers check the distribution");
        let name = "s3-volumes";
        let go = || -> anyhow::Result<Volumes> {
            let (env_path, iso) = seed(progs, name, &env_volumes())?;
            let flat = flatten(progs, &env_path)?;
            let dir = disks_dir(name);
            let disks = vec![
                overlay(&image.qcow2, &dir, "vda.qcow2", "12G")?,
                blank_disk(&dir, "vdb.qcow2", "4G")?,
            ];
            let first = boot(&with_test_ca(BootSpec::new(
                name,
                Firmware::Bios,
                disks.clone(),
                Some(iso.clone()),
            )))?;
            record_timing(&first);
            Ok(Volumes {
                disks,
                iso,
                flat,
                first,
            })
        };
        go().map_err(|e| format!("{e:#}"))
    });
    match v {
        Ok(v) => v,
        Err(e) => panic!("scenario 3's first boot failed: {e}"),
    }
}

/// ecs-data on vdb, ecs-volatile on vda, both mounted, PostgreSQL on /data.
fn check_volumes(c: &mut Checks, r: &Report) {
    for (label, disk, mnt) in [
        ("ecs-data", "/dev/vdb", "/data"),
        ("ecs-volatile", "/dev/vda", "/volatile"),
    ] {
        let found = r.ext_labels.get(label).cloned().unwrap_or_default();
        c.eq(found.len(), 1, &format!("filesystems labelled {label}"));
        if let Some(fs) = found.first() {
            c.check(fs.device.starts_with(disk), || {
                format!("{label} is on {}, want {disk}*", fs.device)
            });
        }
        let m = r.mounts.get(mnt);
        c.eq(
            m.and_then(|m| m.label.as_deref()),
            Some(label),
            &format!("label of the filesystem at {mnt}"),
        );
    }
}

#[test]
fn s3_volumes_on_free_space_and_blank_disk() {
    if !distro_available("ubuntu") {
        return;
    }
    let _one = serial();
    let v = volumes_first_boot();
    let o = &v.first;
    let r = o.report();
    let mut c = Checks::new(o);
    check_volumes(&mut c, r);
    check_handoff(&mut c, r, o, &env_volumes(), &v.flat, "cidata");
    c.eq(r.root.disk_bytes, 12 * GIB, "boot disk size");
    // appliance.metric.exporter: false: no exporter runs.
    for unit in [
        "appliance-metrics.service",
        "prometheus-node-exporter.service",
        "prometheus-nginx-exporter.service",
        "prometheus-postgres-exporter.service",
    ] {
        let state = r.units.get(unit).map(|u| u.active_state.as_str());
        c.eq(
            state,
            Some("inactive"),
            &format!("{unit} state (exporter off)"),
        );
    }
    check_guest_agents(&mut c, r, o);
    c.finish();
}

/// Layer 60-guest-agents under QEMU: systemd calls the machine `qemu`
/// (TCG) or `kvm`, qemu-guest-agent runs and answers `guest-ping` on its
/// virtio port; VMware's and Hyper-V's agents are installed but their
/// condition keeps them from starting.
fn check_guest_agents(c: &mut Checks, r: &Report, o: &Outcome) {
    c.check(r.virt == "qemu" || r.virt == "kvm", || {
        format!("systemd-detect-virt says {:?}, not qemu or kvm", r.virt)
    });
    let qga = r.units.get("qemu-guest-agent.service");
    c.eq(
        qga.map(|u| (u.active_state.as_str(), u.sub_state.as_str())),
        Some(("active", "running")),
        "qemu-guest-agent.service state under QEMU",
    );
    c.check(
        o.qga_ping
            .as_ref()
            .is_ok_and(|l| l.replace(' ', "") == "{\"return\":{}}"),
        || format!("guest-ping through the agent's port: {:?}", o.qga_ping),
    );
    for unit in ["open-vm-tools.service", "hv-kvp-daemon.service"] {
        let u = r.units.get(unit);
        c.check(
            u.is_some_and(|u| u.load_state == "loaded" && !u.ever_started()),
            || format!("{unit} must be installed and not started under QEMU: {u:?}"),
        );
    }
}

#[test]
fn s4_second_boot_changes_nothing() {
    if !distro_available("ubuntu") {
        return;
    }
    let _one = serial();
    let v = volumes_first_boot();
    let second = ok(boot(&with_test_ca(BootSpec::new(
        "s4-second-boot",
        Firmware::Bios,
        v.disks.clone(),
        Some(v.iso.clone()),
    ))));
    record_timing(&second);
    let (a, b) = (v.first.report(), second.report());
    let mut c = Checks::new(&second);
    check_volumes(&mut c, b);
    check_handoff(&mut c, b, &second, &env_volumes(), &v.flat, "cidata");
    c.eq(
        &b.ext_labels,
        &a.ext_labels,
        "filesystems (labels, UUIDs) after the second boot",
    );
    for disk in ["vda", "vdb"] {
        let (da, db) = (a.disks.get(disk), b.disks.get(disk));
        c.eq(
            db.map(|d| (&d.gpt_primary_sha256, &d.gpt_backup_sha256)),
            da.map(|d| (&d.gpt_primary_sha256, &d.gpt_backup_sha256)),
            &format!("{disk} partition table (sha256 of primary, backup) vs the first boot"),
        );
    }
    c.eq(
        b.postgres.as_ref().map(|p| &p.system_identifier),
        a.postgres.as_ref().map(|p| &p.system_identifier),
        "PostgreSQL cluster (system identifier) vs the first boot",
    );
    let cert = |r: &Report| {
        r.files
            .get("/etc/ssl/certs/ssl-cert-snakeoil.pem")
            .and_then(|f| f.content.clone())
    };
    c.eq(
        cert(b),
        cert(a),
        "snakeoil certificate vs the first boot (made once)",
    );
    c.finish();
}

#[test]
fn s5_invalid_env_fails_visibly() {
    let _one = serial();
    let Some((_, image)) = setup() else {
        return;
    };
    let name = "s5-invalid-env";
    // `appliance.domain` is required.
    let env = env_ignore_storage().replace(&format!("  domain: {TEST_DOMAIN}\n"), "");
    let iso = ok(raw_seed(name, env.as_bytes()));
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let o = ok(boot(&BootSpec::new(
        name,
        Firmware::Uefi,
        vec![disk.clone()],
        Some(iso),
    )));
    record_timing(&o);
    let r = o.report();
    let http = &o.page();
    let mut c = Checks::new(&o);
    let reason = r
        .files
        .get("/run/appliance-failed")
        .and_then(|f| f.content.clone());
    c.check(
        reason.as_deref().is_some_and(|s| s.contains("domain")),
        || format!("/run/appliance-failed should name appliance.domain: {reason:?}"),
    );
    let app = r.units.get("appliance.service");
    c.check(
        app.is_some_and(|u| !u.ever_started() && u.active_state != "active"),
        || format!("appliance.service must not start: {app:?}"),
    );
    c.eq(http.0, 503, "status page HTTP status");
    c.check(
        http.1.contains("Appliance Error") && http.1.contains("domain"),
        || format!("not the failure page with the reason: {}", http.1),
    );
    c.check(!http.1.contains("placeholder-vault"), || {
        "the failure page shows a secret".into()
    });
    c.check(o.console.contains("appliance.domain"), || {
        "the console does not name appliance.domain".into()
    });
    c.finish();

    // The same disk with a valid env in standby: the standby page, nothing
    // behind the hand-off started.
    let standby = env_ignore_storage().replace(
        &format!("  domain: {TEST_DOMAIN}\n"),
        &format!("  domain: {TEST_DOMAIN}\n  standby: true\n"),
    );
    let iso = ok(raw_seed(&format!("{name}-standby"), standby.as_bytes()));
    let o = ok(boot(&BootSpec::new(
        &format!("{name}-2-standby"),
        Firmware::Uefi,
        vec![disk],
        Some(iso),
    )));
    record_timing(&o);
    let r = o.report();
    let http = &o.page();
    let mut c = Checks::new(&o);
    c.eq(http.0, 503, "status page HTTP status in standby");
    c.check(http.1.contains("Appliance Standby"), || {
        format!("not the standby page: {}", http.1)
    });
    c.check(!r.files.contains_key("/run/appliance-failed"), || {
        "standby is not a failure".into()
    });
    for u in ["appliance.service", "appliance-postgresql.service"] {
        let f = r.units.get(u);
        c.check(f.is_some_and(|f| !f.ever_started()), || {
            format!("{u} must not start in standby: {f:?}")
        });
    }
    c.check(o.console.contains("ecs-firstboot: standby "), || {
        "the console lacks the agent's standby summary".into()
    });
    c.finish();
}

#[test]
fn s6_baked_env_without_seed() {
    let _one = serial();
    let Some((progs, _)) = setup() else {
        return;
    };
    let name = "s6-baked";
    let image = ok(build_image(
        progs,
        &ImageSpec {
            name: "baked".into(),
            env: env_without_ssh_keys(),
            bake_env: true,
            ..ImageSpec::default()
        },
    ));
    eprintln!(
        "baked image built in {:.1}s",
        image.build_time.as_secs_f64()
    );
    let env_path = image.dir.join("build-env.yml");
    let flat = ok(flatten(progs, &env_path));
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let o = ok(boot(&BootSpec::new(name, Firmware::Uefi, vec![disk], None)));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    check_root_fills(&mut c, r, 8 * GIB);
    check_handoff(&mut c, r, &o, &env_without_ssh_keys(), &flat, "local");
    c.check(o.console.contains("no ssh key configured"), || {
        "the console does not say that no ssh key is configured".into()
    });
    c.finish();
}

/// The baked scenario's env: no SSH key at all, and Let's Encrypt on with
/// its default CA (which the test network cannot reach).
fn env_without_ssh_keys() -> String {
    env_ignore_storage()
        .replace(
            "letsencrypt: {enabled: false}",
            "letsencrypt: {enabled: true}",
        )
        .lines()
        .filter(|l| !l.starts_with("ssh_") && !l.starts_with("  - ssh-"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn s8_power_cut_while_creating_volumes_converges() {
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let name = "s8-power-cut";
    let (env_path, iso) = ok(seed(progs, name, &env_volumes()));
    let flat = ok(flatten(progs, &env_path));
    let dir = disks_dir(name);
    let disks = vec![
        ok(overlay(&image.qcow2, &dir, "vda.qcow2", "12G")),
        ok(blank_disk(&dir, "vdb.qcow2", "4G")),
    ];
    let (k, i, cmdline) = ok(kernel_of(&image.qcow2, &dir.join("kernel")));
    let mut cut = BootSpec::new(
        &format!("{name}-1-cut"),
        Firmware::Bios,
        disks.clone(),
        Some(iso.clone()),
    );
    cut.kernel = Some((k, i, format!("{cmdline} ecs.firstboot.pause=volumes")));
    cut.cut_at = Some("pausing at volumes".into());
    let o = ok(boot(&cut));
    eprintln!("power cut after {:.1}s", o.wall.as_secs_f64());
    let again = ok(boot(&with_test_ca(BootSpec::new(
        &format!("{name}-2-converge"),
        Firmware::Bios,
        disks,
        Some(iso),
    ))));
    record_timing(&again);
    let r = again.report();
    let mut c = Checks::new(&again);
    check_volumes(&mut c, r);
    check_handoff(&mut c, r, &again, &env_volumes(), &flat, "cidata");
    c.finish();
}

#[test]
fn s7_cloud_init_reads_our_seed() {
    let _one = serial();
    let Some((progs, _)) = setup() else {
        return;
    };
    let name = "s7-cloud-init";
    // The base layers only (no agent, no appliance), then cloud-init.
    let layers = ok(artifacts()).join("cloud-init-layers");
    let _ = std::fs::remove_dir_all(&layers);
    std::fs::create_dir_all(&layers).unwrap();
    for l in ["00-base", "10-boot"] {
        ok(qemu_tests::fixtures::copy_tree(
            &qemu_tests::harness::workspace().join("layers").join(l),
            &layers.join(l),
        ));
    }
    let image = ok(build_image(
        progs,
        &ImageSpec {
            name: "cloud-init".into(),
            env: env_ignore_storage(),
            layers_dir: Some(layers),
            extra_layers: vec![
                qemu_tests::harness::workspace().join("qemu-tests/layers/70-cloud-init")
            ],
            ..ImageSpec::default()
        },
    ));
    eprintln!(
        "cloud-init image built in {:.1}s",
        image.build_time.as_secs_f64()
    );
    let (_, iso) = ok(seed(progs, name, &env_ignore_storage()));
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let o = ok(boot(&BootSpec::new(
        name,
        Firmware::Bios,
        vec![disk],
        Some(iso),
    )));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    let status = r.cloud_init_status.as_deref().unwrap_or("");
    c.check(status.contains("status: done"), || {
        format!("cloud-init status: {status:?}")
    });
    let short = TEST_DOMAIN.split('.').next().unwrap();
    c.check(r.hostname == TEST_DOMAIN || r.hostname == short, || {
        format!(
            "host name {:?} is not from our meta-data ({TEST_DOMAIN})",
            r.hostname
        )
    });
    c.check(!r.units.contains_key("ecs-firstboot.service"), || {
        "the cloud-init variant must not carry ecs-firstboot".into()
    });
    c.finish();
}

/// `imgbuild run`: boots the default image with its seed on a throw-away
/// overlay, prints an ssh line that logs in, stops on SIGINT, and leaves
/// the image and no overlay behind.
#[test]
fn r1_imgbuild_run_prints_a_working_ssh_line() {
    use std::io::BufRead;
    let Some((progs, image)) = setup() else {
        return;
    };
    let _one = serial();
    let (_, iso) = ok(seed(progs, "r1-run", &env_ignore_storage()));
    let before = std::fs::metadata(&image.qcow2).unwrap().modified().unwrap();
    let tmp = ok(artifacts()).join("r1-run-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let console = std::fs::File::create(ok(artifacts()).join("consoles/r1-run.log")).unwrap();
    let mut child = std::process::Command::new(&progs.imgbuild)
        .arg("run")
        .arg(&image.qcow2)
        .arg("--seed")
        .arg(&iso)
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::null())
        .stdout(console)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting imgbuild run");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + qemu_tests::harness::BOOT_TIMEOUT;
    let mut said = Vec::new();
    let port = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                said.push(l.clone());
                if let Some(rest) = l.strip_prefix("imgbuild run: ssh -p ") {
                    break rest.split_whitespace().next().unwrap().to_string();
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("imgbuild run printed no ssh line in time: {said:?}");
            }
        }
    };
    let key = test_ssh_key();
    let out = std::process::Command::new("ssh")
        .args(["-p", &port, "-i"])
        .arg(&key.private)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "root@localhost", "id", "-un"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ssh");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if stopped.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("imgbuild run did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "root",
        "the printed ssh line did not log in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "imgbuild run ended with {status}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "imgbuild run left {left:?} behind");
    assert_eq!(
        std::fs::metadata(&image.qcow2).unwrap().modified().unwrap(),
        before,
        "imgbuild run wrote the image (no overlay?)"
    );
}

/// `appliance.extra.packages` and `appliance.sentry.dsn`, three boots of one
/// disk: (1) the archive unreachable: the appliance stops with the reason on
/// the failure page, and the failure reaches the Sentry stand-in with the
/// DSN's key; (2) the local archive reachable: the package is installed and
/// the appliance is ready; (3) offline again: nothing to install, no apt,
/// ready.
#[test]
fn s9_extra_packages_and_sentry() {
    use qemu_tests::peers::{
        LocalArchive, SentrySink, EXTRA_PACKAGE, EXTRA_PACKAGE_FILE, SENTRY_ADDR,
    };
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let name = "s9-extra";
    let key = "s9sentrykey0123";
    let env = env_ignore_storage().replace(
        "  metric: {exporter: true}\n",
        &format!(
            "  metric: {{exporter: true}}\n  sentry:\n    dsn: \"{}\"\n  extra:\n    \
             packages: [{EXTRA_PACKAGE}]\n    files:\n      \
             - path: /etc/apt/sources.list.d/ecs-test.list\n        \
             contents: \"{}\\n\"\n",
            SentrySink::dsn(key, 7),
            LocalArchive::source_line()
        ),
    );
    let (env_path, iso) = ok(seed(progs, name, &env));
    let flat = ok(flatten(progs, &env_path));
    let sink = ok(SentrySink::start());
    let archive = ok(LocalArchive::start());
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let spec = |n: &str, online: bool| {
        let mut s = BootSpec::new(
            &format!("{name}-{n}"),
            Firmware::Uefi,
            vec![disk.clone()],
            Some(iso.clone()),
        );
        s.netdev_extra.push(sink.guestfwd());
        if online {
            s.netdev_extra.push(archive.guestfwd());
        }
        s
    };

    // 1: offline.
    let o = ok(boot(&spec("1-offline", false)));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    let reason = r
        .files
        .get("/run/appliance-failed")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    c.check(
        reason.contains("appliance.extra.packages") && reason.contains(EXTRA_PACKAGE),
        || format!("/run/appliance-failed should name the package: {reason:?}"),
    );
    c.check(!r.files.contains_key(EXTRA_PACKAGE_FILE), || {
        "the package is installed without an archive".into()
    });
    let app = r.units.get("appliance.service");
    c.check(app.is_some_and(|u| !u.ever_started()), || {
        format!("appliance.service must not start: {app:?}")
    });
    let page = o.page();
    c.eq(page.0, 503, "status page HTTP status (offline)");
    c.check(
        page.1.contains("Appliance Error") && page.1.contains(EXTRA_PACKAGE),
        || format!("not the failure page naming the package: {}", page.1),
    );
    let got = ok(sink.requests());
    c.eq(got.len(), 1, "events the Sentry stand-in got");
    if let Some(e) = got.first() {
        c.eq(e.path.as_str(), "/api/7/store/", "the event's endpoint");
        c.check(e.auth.contains(&format!("sentry_key={key}")), || {
            format!("X-Sentry-Auth without the DSN's key: {}", e.auth)
        });
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
        let msg = body["message"].as_str().unwrap_or("");
        c.check(msg.contains(EXTRA_PACKAGE), || {
            format!("the event's message is not the failure: {}", e.body)
        });
        c.eq(body["level"].as_str(), Some("error"), "the event's level");
    }
    // The report line carries /run/active-env.* by design; nothing else may.
    let leaked = o
        .console
        .lines()
        .filter(|l| !l.contains(qemu_tests::report::MARKER))
        .any(|l| l.contains(key));
    c.check(!leaked, || "the console shows the DSN's key".into());
    c.check(
        o.console
            .contains(&format!("reported the failure to {SENTRY_ADDR}")),
        || "the console does not say the failure was reported".into(),
    );
    c.finish();

    // 2: the archive reachable.
    let o = ok(boot(&spec("2-online", true)));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    check_handoff(&mut c, r, &o, &env, &flat, "cidata");
    c.check(r.files.contains_key(EXTRA_PACKAGE_FILE), || {
        format!("{EXTRA_PACKAGE_FILE} missing: the package was not installed")
    });
    c.check(
        o.console.contains(&format!("installed {EXTRA_PACKAGE}")),
        || "the console does not say the package was installed".into(),
    );
    c.check(archive.log().contains(EXTRA_PACKAGE), || {
        format!("the local archive served no package: {}", archive.log())
    });
    c.eq(ok(sink.requests()).len(), 1, "events after a good boot");
    c.finish();

    // 3: offline again, installed already.
    let o = ok(boot(&spec("3-installed", false)));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    check_handoff(&mut c, r, &o, &env, &flat, "cidata");
    c.check(
        o.console
            .contains(&format!("{EXTRA_PACKAGE} installed already")),
        || "the console does not say the package is installed already".into(),
    );
    c.check(!o.console.contains("extra-packages: installing"), || {
        "apt ran on a boot with nothing to install".into()
    });
    c.finish();
}

/// The application's containers (layer 65-application), one boot: the
/// source from a local git repository (`ecs.git.source`, dumb HTTP, pinned
/// by `ecs.git.commitid`) with its image bundled (docker load, no
/// registry), compose up, nginx proxies `/` to the web container, which
/// got the env (ECS_SETTINGS, a DATABASE_URL that logs in to the env's
/// database as app, the domain) and the `/data` volume; docker's data on
/// `/volatile/docker`; no password on the console or in the journal. Then
/// the web container is killed: `/run/appliance-failed` names it and the
/// HTTPS page is the failure page. As the manual says, removing
/// `/run/appliance-failed` and `systemctl restart appliance` bring the
/// application back (the project down and up again), from the checkout
/// already there when the source has become unreachable.
#[test]
fn s10_application_containers() {
    use qemu_tests::peers::{AppSource, APP_BRANCH, APP_DATA_FILE, APP_INDEX};
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let name = "s10-application";
    let source = ok(AppSource::start());
    let env = env_ignore_storage()
        .replace(
            "  metric: {exporter: true}\n",
            "  metric: {exporter: true}\n  update: {automatic: false}\n",
        )
        .replace(
            "ecs:\n",
            &format!(
                "ecs:\n  git:\n    source: {}\n    branch: {APP_BRANCH}\n    commitid: {}\n",
                AppSource::url(),
                source.commit
            ),
        );
    let (_env_path, iso) = ok(seed(progs, name, &env));
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let mut spec = BootSpec::new(name, Firmware::Uefi, vec![disk], Some(iso));
    spec.netdev_extra.push(source.guestfwd());
    let root = |command: String| SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command,
    };
    spec.ssh = vec![
        root(format!(
            "url=$(curl -s http://127.0.0.1:5000/database_url); \
             pw=$(cat /data/appliance/database.password); \
             echo \"head=$(git -C /app/ecs rev-parse HEAD)\"; \
             echo \"compose=$(cmp -s /app/ecs/docker-compose.yml /app/etc/ecs/docker-compose.yml && echo same)\"; \
             echo \"envfile=$(stat -c '%a %U' /etc/ecs-appliance/application/database_url.env)\"; \
             echo \"volume=$(cat {APP_DATA_FILE})\"; \
             echo \"dockerroot=$(docker info -f '{{{{.DockerRootDir}}}}')\"; \
             echo \"watcher=$(systemctl is-active appliance-containers.service)\"; \
             echo \"url=$(printf '%s' \"$url\" | sed \"s/$pw/PASSWORD/\")\"; \
             echo \"pwlen=${{#pw}}\"; echo \"pw=$pw\"; \
             echo \"domain=$(curl -s http://127.0.0.1:5000/domain)\"; \
             echo \"vault=$(curl -s http://127.0.0.1:5000/vault_sign)\"; \
             echo \"settings=$(curl -sk --resolve {TEST_DOMAIN}:443:127.0.0.1 https://{TEST_DOMAIN}/settings | tr '\\n' '|')\"; \
             psql() {{ /usr/lib/postgresql/*/bin/psql \"$1\" -XtAc 'select current_user || chr(47) || current_database()' 2>&1 | tr '\\n' ' ' | sed 's/ $//'; }}; \
             echo \"login=$(psql \"$(printf '%s' \"$url\" | sed 's/@172.17.0.1:/@127.0.0.1:/')\")\"; \
             echo \"lan=$(psql \"$url\")\"; \
             echo \"pg=$(curl -s http://127.0.0.1:5000/pg)\"; \
             echo \"journal=$(journalctl -b -o cat | grep -cF \"$pw\")\"; \
             web=$(docker ps -q --filter label=com.docker.compose.service=web); \
             bx() {{ printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | docker exec -i \"$web\" /bin/busybox nc -w 10 172.17.0.1 \"$1\" 2>&1; }}; \
             echo \"bridge_node=$(bx 9100 | grep -c '^node_')\"; \
             echo \"bridge_nginx=$(bx 9113 | grep '^nginx_up ')\"; \
             echo \"bridge_pg=$(bx 9187 | grep '^pg_up ')\"; \
             echo \"host_bridge=$(curl -s -m 5 http://172.17.0.1:9100/metrics | grep -c '^node_')\"; \
             own=$(ip -4 -o addr show scope global | grep -o ' 10\\.0\\.2\\.[0-9]*' | tr -d ' ' | head -n 1); \
             echo \"own=$own $(curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://$own:9100/metrics)\"; \
             echo \"timer=$(systemctl is-active appliance-update.timer) $(ls /app/etc/flags | tr '\\n' ' ')\"; \
             echo \"guard=$(iptables -w -S INPUT | grep -c -- '-d 172.17.0.1/32 -j ECS-BRIDGE') $(iptables -w -S ECS-BRIDGE | grep -c -- '-j DROP')\""
        )),
        root(
            "docker kill $(docker ps -q --filter label=com.docker.compose.service=web) >/dev/null; \
             for i in $(seq 90); do \
               code=$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/); \
               [ -e /run/appliance-failed ] && [ \"$code\" = 503 ] && \
                 curl -sk https://127.0.0.1/ | grep -q 'exited with code' && break; \
               sleep 1; done; \
             echo \"failed=$(cat /run/appliance-failed)\"; \
             echo \"status=$code\"; \
             echo \"page=$(curl -sk https://127.0.0.1/ | grep -o 'container [^ ]* exited with code [0-9]*' | head -n 1)\""
                .into(),
        ),
        // As the manual says: remove the failure, restart the appliance;
        // with the source unreachable now, the checkout there runs.
        root(
            "ip route add blackhole 10.0.2.103/32; \
             systemctl restart appliance; echo \"refused=$?\"; \
             echo \"refusal=$(journalctl -b -u appliance -o cat | grep -c 'refused: the appliance has failed: appliance.service: the application')\"; \
             rm /run/appliance-failed; systemctl restart appliance; echo \"restart=$?\"; \
             echo \"notice=$(cat /run/ecs-appliance/notices/application)\"; \
             echo \"after=$(curl -sk https://127.0.0.1/)\"; \
             echo \"failedpage=$(ls /run/ecs-appliance/www/failed.html 2>/dev/null)\"; \
             echo \"containers=$(docker ps -q --filter label=com.docker.compose.project=ecs | wc -l)\""
                .into(),
        ),
    ];
    let o = ok(boot(&spec));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    c.check(!r.files.contains_key("/run/appliance-failed"), || {
        format!(
            "/run/appliance-failed before the container was killed: {:?}",
            r.files["/run/appliance-failed"].content
        )
    });
    c.eq(
        r.units
            .get("appliance.service")
            .map(|u| u.active_state.as_str()),
        Some("active"),
        "appliance.service state",
    );
    c.eq(
        o.https.as_ref().ok().cloned(),
        Some((200, format!("{APP_INDEX}\n"))),
        "https://DOMAIN/: the application's web container through nginx",
    );
    c.check(source.log().contains("ecs.git/info/refs"), || {
        format!("the guest did not fetch the source: {}", source.log())
    });
    let facts = |i: usize| o.ssh_facts(i);
    let f = facts(0);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(
        get("head"),
        source.commit.as_str(),
        "/app/ecs's HEAD (ecs.git.commitid)",
    );
    c.eq(
        get("compose"),
        "same",
        "/app/etc/ecs/docker-compose.yml is the source's",
    );
    c.eq(
        get("envfile"),
        "600 root",
        "database_url.env mode and owner",
    );
    c.eq(
        get("volume"),
        "written",
        "the container's file in /data/ecs-storage-vault",
    );
    c.eq(get("dockerroot"), "/volatile/docker", "docker's data root");
    c.eq(get("watcher"), "active", "appliance-containers.service");
    c.eq(
        get("url"),
        format!("postgres://app:PASSWORD@172.17.0.1:5432/{TEST_DATABASE}").as_str(),
        "the container's DATABASE_URL",
    );
    c.eq(get("pwlen"), "40", "the database password's length");
    c.eq(get("domain"), TEST_DOMAIN, "the container's ECS_DOMAIN");
    c.eq(
        get("vault"),
        "placeholder-vault-sign",
        "the container's ECS_VAULT_SIGN",
    );
    c.eq(
        get("settings"),
        format!("DOMAIN = '{TEST_DOMAIN}'").as_str(),
        "the container's ECS_SETTINGS, through nginx",
    );
    c.eq(
        get("login"),
        format!("app/{TEST_DATABASE}").as_str(),
        "a login with the DATABASE_URL's role and password (on 127.0.0.1)",
    );
    c.check(get("lan").contains("no pg_hba.conf entry for host"), || {
        format!(
            "a login from the machine's own address (not a container network) is not refused: {:?}",
            get("lan")
        )
    });
    c.eq(
        get("pg"),
        "S",
        "PostgreSQL's answer at 172.17.0.1:5432 from the container",
    );
    c.eq(
        get("journal"),
        "0",
        "journal lines with the database password",
    );
    c.check(get("bridge_node").parse::<u32>().unwrap_or(0) > 10, || {
        format!(
            "node_ series from the container at 172.17.0.1:9100: {:?}",
            get("bridge_node")
        )
    });
    c.eq(
        get("bridge_nginx"),
        "nginx_up 1",
        "the nginx exporter from the container at 172.17.0.1:9113",
    );
    c.eq(
        get("bridge_pg"),
        "pg_up 1",
        "the PostgreSQL exporter from the container at 172.17.0.1:9187",
    );
    c.check(get("host_bridge").parse::<u32>().unwrap_or(0) > 10, || {
        format!(
            "node_ series on the machine itself at 172.17.0.1:9100: {:?}",
            get("host_bridge")
        )
    });
    c.check(
        get("own").starts_with("10.0.2.") && get("own").ends_with(" 000"),
        || {
            format!(
                "the node exporter on the machine's own address (want no answer): {:?}",
                get("own")
            )
        },
    );
    c.eq(
        get("guard"),
        "1 1",
        "INPUT's jump to ECS-BRIDGE and its DROP",
    );
    c.eq(
        get("timer"),
        "inactive metric.exporter ",
        "appliance-update.timer and the flags with update.automatic false",
    );
    let pw = get("pw");
    c.check(!pw.is_empty() && !o.console.contains(pw), || {
        "the console shows the database password (or the probe read none)".into()
    });
    let f = facts(1);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.check(
        get("failed").starts_with("appliance.service: the application's container ")
            && get("failed").ends_with("exited with code 137"),
        || {
            format!(
                "/run/appliance-failed after the kill: {:?} ({:?})",
                get("failed"),
                o.ssh.get(1)
            )
        },
    );
    c.eq(
        get("status"),
        "503",
        "HTTPS status after the container died",
    );
    c.check(get("page").ends_with("exited with code 137"), || {
        format!(
            "the failure page does not name the container: {:?}",
            get("page")
        )
    });
    let f = facts(2);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(
        get("refused"),
        "1",
        "systemctl restart appliance while /run/appliance-failed exists",
    );
    c.eq(
        get("refusal"),
        "1",
        "journal lines of the refusal with the reason",
    );
    c.eq(
        get("restart"),
        "0",
        "systemctl restart appliance after the failure",
    );
    c.eq(get("after"), APP_INDEX, "https://DOMAIN/ after the restart");
    c.check(
        get("notice").contains("was unreachable") && get("notice").contains(&source.commit[..12]),
        || format!("the notice of the unreachable source: {:?}", get("notice")),
    );
    c.eq(get("failedpage"), "", "the failure page after the restart");
    c.eq(
        get("containers"),
        "1",
        "running containers of the project after the restart",
    );
    c.finish();
}

/// Day two, as the original's manual has it (`docs/day-two.md`), in one
/// boot: the failed state refuses `systemctl restart appliance` with the
/// reason until `/run/appliance-failed` is removed; a changed
/// `/app/env.yml` (new domain, a key added and one retired, an extra file,
/// the update calendar, the apt source of the archive's update) is taken by
/// `env-update`, which names the changed keys only, and applied by
/// `systemctl start appliance-update`: the new key logs in and the retired
/// one does not, the file and the timer changed, nginx serves a
/// certificate for the new name, the local archive's newer package is
/// installed and the appliance restarted; then an invalid env and a
/// storage change: nothing changes and the appliance keeps serving.
#[test]
fn s12_day_two() {
    use qemu_tests::harness::ssh_key;
    use qemu_tests::peers::{LocalArchive, EXTRA_PACKAGE, EXTRA_PACKAGE_FILE};
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let name = "s12-day-two";
    let new_domain = "ecs-day-two.example.org";
    let (retired, added) = (ok(ssh_key("retired")), ok(ssh_key("added")));
    let old = deprecated_ssh_key().public;
    let env = env_ignore_storage()
        .replace(
            &format!("ssh_deprecated_keys:\n  - {old}\n"),
            &format!("  - {}\nssh_deprecated_keys:\n  - {old}\n", retired.public),
        )
        .replace(
            "  metric: {exporter: true}\n",
            &format!(
                "  metric: {{exporter: true}}\n  update: {{oncalendar: \"Mon *-*-* 04:00:00\"}}\n  \
                 extra:\n    packages: [{EXTRA_PACKAGE}]\n    files:\n      \
                 - {{path: /etc/ecs-test/day-two, contents: \"one\\n\"}}\n      \
                 - {{path: /etc/apt/sources.list.d/ecs-test.list, contents: \"{}\\n\"}}\n",
                LocalArchive::source_line()
            ),
        );
    let new_env = env
        .replace(TEST_DOMAIN, new_domain)
        .replace(
            &format!("  - {}\nssh_deprecated_keys:\n  - {old}\n", retired.public),
            &format!(
                "  - {}\nssh_deprecated_keys:\n  - {old}\n  - {}\n",
                added.public, retired.public
            ),
        )
        .replace("contents: \"one\\n\"", "contents: \"two\\n\"")
        .replace("Mon *-*-* 04:00:00", "Sat *-*-* 05:30:00")
        .replace(
            &LocalArchive::source_line(),
            &LocalArchive::update_source_line(),
        );
    assert_ne!(env, new_env);
    let invalid = new_env.replace(
        "  update: {oncalendar: \"Sat *-*-* 05:30:00\"}\n",
        "  update: {oncalendar: \"every full moon\"}\n",
    );
    let storage = new_env.replace(
        "{ignore: {data: true, volatile: true}}",
        "{ignore: {data: true, volatile: false}}",
    );
    let (_env_path, iso) = ok(seed(progs, name, &env));
    let archive = ok(LocalArchive::start());
    let disk = ok(overlay(&image.qcow2, &disks_dir(name), "vda.qcow2", "8G"));
    let mut spec = BootSpec::new(name, Firmware::Uefi, vec![disk], Some(iso));
    spec.netdev_extra.push(archive.guestfwd());
    let as_root = |key: &qemu_tests::harness::SshKey, command: &str| SshProbe {
        user: "root".into(),
        key: Some(key.clone()),
        command: command.into(),
    };
    let write_env = |text: &str| {
        format!("install -m 0600 /dev/stdin /app/env.yml <<'ECS_ENV'\n{text}ECS_ENV\n")
    };
    let facts = "echo \"hostname=$(hostname)\"; \
         echo \"file=$(cat /etc/ecs-test/day-two)\"; \
         echo \"timer=$(systemctl is-active appliance-update.timer) $(systemctl show -P TimersCalendar appliance-update.timer)\"; \
         echo \"package=$(dpkg-query -W -f '${Version}' ecs-test-extra)\"; \
         echo \"invocation=$(systemctl show -P InvocationID appliance.service)\"; \
         echo \"active=$(systemctl is-active appliance.service)\"; \
         echo \"sum=$(sha256sum /run/active-env.yml /run/active-env.env | cut -c1-16 | tr '\\n' ' ')\"; \
         echo \"ready=$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/)\"; ";
    spec.ssh = vec![
        // 0: before; the retired key still logs in.
        as_root(&retired, &format!("echo login=retired; {facts}")),
        // 1: the failed state.
        as_root(
            &test_ssh_key(),
            "echo 'appliance-failed@nginx.service: a test failure' > /run/appliance-failed; \
             systemctl restart appliance 2>/dev/null; echo \"refused=$?\"; \
             echo \"refusal=$(journalctl -b -u appliance -o cat | grep -c 'refused: the appliance has failed: appliance-failed@nginx.service: a test failure')\"; \
             for i in $(seq 30); do [ \"$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/)\" = 503 ] && break; sleep 1; done; \
             echo \"failedpage=$(curl -sk https://127.0.0.1/ | grep -c 'a test failure')\"; \
             rm /run/appliance-failed; systemctl restart appliance; echo \"restart=$?\"; \
             echo \"after=$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/)\"",
        ),
        // 2: reconfigure and update.
        as_root(
            &test_ssh_key(),
            &format!(
                "{}env-update > /tmp/env-update.out 2>&1; echo \"envupdate=$?\"; \
                 echo \"changed=$(sed -n 's/.*: changed //p' /tmp/env-update.out)\"; \
                 echo \"secret=$(grep -c placeholder /tmp/env-update.out)\"; \
                 systemctl start appliance-update; echo \"update=$?\"; \
                 echo \"journal=$(journalctl -b -u appliance-update -o cat | grep -c 'updating 1 package(s): {EXTRA_PACKAGE}')\"; \
                 echo \"cert=$(echo | openssl s_client -connect 127.0.0.1:443 -servername {new_domain} 2>/dev/null | openssl x509 -noout -checkhost {new_domain} 2>&1)\"; \
                 echo \"newpage=$(curl -sk --resolve {new_domain}:443:127.0.0.1 https://{new_domain}/ | grep -q 'Appliance Ready' && echo yes)\"; \
                 echo \"installed=$(cat {EXTRA_PACKAGE_FILE})\"; {facts}",
                write_env(&new_env)
            ),
        ),
        // 3, 4: the added key logs in, the retired one does not.
        as_root(&added, "echo login=added"),
        as_root(&retired, "echo login=retired"),
        // 5: an invalid env, then a storage change: nothing changes.
        as_root(
            &test_ssh_key(),
            &format!(
                "{}env-update > /tmp/invalid.out 2>&1; echo \"invalid=$?\"; \
                 echo \"invalidmsg=$(grep -c 'the env is invalid; nothing changed' /tmp/invalid.out)\"; \
                 systemctl start appliance-update 2>/dev/null; echo \"invalidupdate=$?\"; \
                 {}env-update > /tmp/storage.out 2>&1; echo \"storage=$?\"; \
                 echo \"storagemsg=$(grep -c 'appliance.storage.ignore.volatile changed, which a running appliance cannot take' /tmp/storage.out)\"; {facts}",
                write_env(&invalid),
                write_env(&storage)
            ),
        ),
        // 6: a package asks for a reboot (as a kernel's postinst does):
        // appliance-update announces it and reboots a minute later, which
        // ends this boot (QEMU runs with -no-reboot).
        as_root(
            &test_ssh_key(),
            &format!(
                "{}printf 'linux-image-test\\n' > /run/reboot-required.pkgs; touch /run/reboot-required; \
                 systemctl start appliance-update; echo \"rebootupdate=$?\"; \
                 echo \"rebootpage=$(curl -sk --resolve {new_domain}:443:127.0.0.1 https://{new_domain}/ | grep -c 'Rebooting at about .* after the update: linux-image-test asked for it')\"; \
                 echo \"scheduled=$(busctl get-property org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager ScheduledShutdown | cut -d' ' -f1-2)\"; \
                 echo \"rebootjournal=$(journalctl -b -u appliance-update -o cat | grep -c 'rebooting in one minute: /run/reboot-required (linux-image-test)')\"",
                write_env(&new_env)
            ),
        ),
    ];
    // The reboot: a minute, then the shutdown under TCG.
    spec.reboots_within = Some(std::time::Duration::from_secs(240));
    let o = ok(boot(&spec));
    record_timing(&o);
    let mut c = Checks::new(&o);
    let facts = |i: usize| o.ssh_facts(i);
    let (before, failed, update, after) = (facts(0), facts(1), facts(2), facts(5));
    let g = |m: &std::collections::BTreeMap<String, String>, k: &str| {
        m.get(k).cloned().unwrap_or_default()
    };
    c.eq(
        g(&before, "login").as_str(),
        "retired",
        "the retired key before the update",
    );
    c.eq(
        g(&before, "hostname").as_str(),
        TEST_DOMAIN,
        "the host name before",
    );
    c.eq(g(&before, "file").as_str(), "one", "the extra file before");
    c.check(
        g(&before, "timer").starts_with("active ")
            && g(&before, "timer").contains("OnCalendar=Mon *-*-* 04:00:00 ;"),
        || format!("appliance-update.timer before: {:?}", g(&before, "timer")),
    );
    c.eq(g(&before, "package").as_str(), "1.0", "the package before");
    // The failed state.
    c.eq(
        g(&failed, "refused").as_str(),
        "1",
        "systemctl restart appliance while failed",
    );
    c.eq(
        g(&failed, "refusal").as_str(),
        "1",
        "journal lines of the refusal with the reason",
    );
    c.eq(
        g(&failed, "failedpage").as_str(),
        "1",
        "the failure page with the reason",
    );
    c.eq(
        g(&failed, "restart").as_str(),
        "0",
        "systemctl restart appliance after rm",
    );
    c.eq(
        g(&failed, "after").as_str(),
        "200",
        "HTTPS after the restart",
    );
    // Reconfigure and update.
    c.eq(
        g(&update, "envupdate").as_str(),
        "0",
        "env-update's exit code",
    );
    c.eq(
        g(&update, "changed").as_str(),
        "ssh_authorized_keys, ssh_deprecated_keys, appliance.domain, appliance.extra.files, appliance.update.oncalendar, ecs.settings",
        "the keys env-update says changed",
    );
    c.eq(
        g(&update, "secret").as_str(),
        "0",
        "env-update output lines with a secret",
    );
    c.eq(
        g(&update, "update").as_str(),
        "0",
        "systemctl start appliance-update",
    );
    c.eq(
        g(&update, "journal").as_str(),
        "1",
        "appliance-update's line naming the package",
    );
    c.eq(
        g(&update, "cert").as_str(),
        format!("Hostname {new_domain} does match certificate").as_str(),
        "the certificate nginx serves after the domain changed",
    );
    c.eq(
        g(&update, "newpage").as_str(),
        "yes",
        "the ready page at the new name",
    );
    c.eq(
        g(&update, "hostname").as_str(),
        new_domain,
        "the host name after",
    );
    c.eq(g(&update, "file").as_str(), "two", "the extra file after");
    c.check(
        g(&update, "timer").starts_with("active ")
            && g(&update, "timer").contains("OnCalendar=Sat *-*-* 05:30:00 ;"),
        || format!("appliance-update.timer after: {:?}", g(&update, "timer")),
    );
    c.eq(
        g(&update, "package").as_str(),
        "2.0",
        "the package after appliance-update",
    );
    c.check(g(&update, "installed").ends_with(": 2.0"), || {
        format!(
            "the package's file after the update: {:?}",
            g(&update, "installed")
        )
    });
    c.check(
        !g(&update, "invocation").is_empty()
            && g(&update, "invocation") != g(&before, "invocation")
            && g(&update, "active") == "active",
        || "appliance.service was not restarted by appliance-update".into(),
    );
    c.eq(
        o.ssh.get(3).map(|r| r.stdout.trim()),
        Some("login=added"),
        "the added key logs in",
    );
    c.check(
        o.ssh
            .get(4)
            .is_some_and(|r| r.status == Some(255) && !r.stdout.contains("login")),
        || {
            format!(
                "the retired key logs in after the update: {:?}",
                o.ssh.get(4)
            )
        },
    );
    // Invalid and storage: nothing changed, still serving.
    c.eq(
        g(&after, "invalid").as_str(),
        "1",
        "env-update with an invalid env",
    );
    c.eq(
        g(&after, "invalidmsg").as_str(),
        "1",
        "env-update's message for an invalid env",
    );
    c.eq(
        g(&after, "invalidupdate").as_str(),
        "1",
        "appliance-update with an invalid env",
    );
    c.eq(
        g(&after, "storage").as_str(),
        "1",
        "env-update with a storage change",
    );
    c.eq(
        g(&after, "storagemsg").as_str(),
        "1",
        "env-update's message for a storage change",
    );
    c.eq(
        g(&after, "sum"),
        g(&update, "sum"),
        "/run/active-env.* after the refused updates",
    );
    c.eq(
        g(&after, "invocation"),
        g(&update, "invocation"),
        "appliance.service after the refused updates",
    );
    c.eq(
        g(&after, "ready").as_str(),
        "200",
        "HTTPS after the refused updates",
    );
    c.eq(
        g(&after, "hostname").as_str(),
        new_domain,
        "the host name after the refused updates",
    );
    // The reboot a package asked for.
    let reboot = facts(6);
    c.eq(
        g(&reboot, "rebootupdate").as_str(),
        "0",
        "appliance-update with /run/reboot-required",
    );
    c.eq(
        g(&reboot, "rebootpage").as_str(),
        "1",
        "the ready page's reboot notice",
    );
    c.eq(
        g(&reboot, "scheduled").as_str(),
        "(st) \"reboot\"",
        "logind's scheduled shutdown",
    );
    c.eq(
        g(&reboot, "rebootjournal").as_str(),
        "1",
        "appliance-update's line on the reboot",
    );
    c.check(o.console.contains("reboot: Restarting system"), || {
        "the guest did not reboot (no \"reboot: Restarting system\" on the console)".into()
    });
    c.finish();
}

/// The default image's SBOM (no boot): valid SPDX by the SPDX validator,
/// the manifest's packages, and for nearly all of them the archive's
/// download location and `.deb` sha256 (the build's indexes list what it
/// installed), for many a licence; the agent as one of imgbuild's programs.
#[test]
fn i1_default_image_sbom() {
    let Some((_, image)) = setup() else {
        return;
    };
    let sbom = image.dir.join("ecs.spdx.json");
    let o = std::process::Command::new(qemu_tests::harness::workspace().join("scripts/check-sbom"))
        .arg(&sbom)
        .arg(image.dir.join("ecs.manifest.json"))
        .output()
        .expect("running scripts/check-sbom");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "check-sbom failed:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", out.trim());
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    let pkgs = doc["packages"].as_array().unwrap();
    let debs: Vec<&serde_json::Value> = pkgs
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .unwrap()
                .starts_with("SPDXRef-Package-")
        })
        .collect();
    let with = |f: &dyn Fn(&serde_json::Value) -> bool| debs.iter().filter(|p| f(p)).count();
    let located = with(&|p| {
        p["downloadLocation"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://archive.ubuntu.com/ubuntu/pool/"))
            && p["checksums"][0]["checksumValue"].as_str().is_some()
    });
    assert!(
        located * 100 >= debs.len() * 95,
        "only {located} of {} packages have the archive's location and sha256",
        debs.len()
    );
    let licensed = with(&|p| p["licenseDeclared"] != "NOASSERTION");
    assert!(
        licensed * 100 >= debs.len() * 20,
        "only {licensed} of {} packages have a licence",
        debs.len()
    );
    let agent = pkgs.iter().find(|p| p["name"] == "ecs-firstboot");
    let want = {
        use sha2::Digest;
        let progs = ok(programs(Path::new(env!("CARGO_BIN_EXE_ecs-test-report"))));
        let bytes = std::fs::read(&progs.firstboot).unwrap();
        format!("{:x}", sha2::Sha256::digest(&bytes))
    };
    assert_eq!(
        agent.and_then(|a| a["checksums"][0]["checksumValue"].as_str()),
        Some(want.as_str()),
        "the agent's entry and its sha256"
    );
}

/// One row of [`h1_hardware_matrix`]: one boot of the default image.
struct HardwareRow {
    name: &'static str,
    firmware: Firmware,
    machine: &'static str,
    cpus: u32,
    /// The root disk: its controller, the driver that must bind it, its
    /// size (an overlay of the image, sparse).
    root: (Bus, &'static str, u64),
    /// The blank disk that becomes `ecs-data`: its controller and driver.
    data: (Bus, &'static str),
    /// The NICs (model, the drivers that may bind it); the first carries
    /// SSH and HTTP.
    nics: [(&'static str, &'static [&'static str]); 2],
}

/// The matrix: each controller and NIC once, not their product (each TCG
/// boot costs minutes). virtio-blk and virtio-net are every other boot's.
const HARDWARE_MATRIX: &[HardwareRow] = &[
    HardwareRow {
        name: "h1-a-pc-bios",
        firmware: Firmware::Bios,
        machine: "pc",
        cpus: 4,
        // Beyond the MBR's 2^32 sectors.
        root: (Bus::VirtioScsi, "virtio_scsi", 2560 * GIB),
        data: (Bus::Ide, "ata_piix"),
        nics: [("rtl8139", &["8139cp", "8139too"]), ("e1000", &["e1000"])],
    },
    HardwareRow {
        name: "h1-b-q35-uefi",
        firmware: Firmware::Uefi,
        machine: "q35",
        cpus: 1,
        root: (Bus::Nvme, "nvme", 8 * GIB),
        data: (Bus::Sata, "ahci"),
        nics: [("vmxnet3", &["vmxnet3"]), ("e1000e", &["e1000e"])],
    },
];

/// What the guest says about its hardware: `nproc`, `/sys/firmware/efi`,
/// each disk's drivers (from the disk, or an NVMe multipath namespace's
/// first controller, up to its PCI device), each NIC's
/// MAC, driver, carrier, operstate, name and IPv4 address.
const HARDWARE_PROBE: &str = r#"echo "nproc $(nproc)"
if [ -d /sys/firmware/efi ]; then echo "efi yes"; else echo "efi no"; fi
for b in /sys/block/*; do
  n=${b##*/}; case $n in loop*|sr*|ram*) continue;; esac
  p=$(readlink -f "$b"); drv=""
  # An NVMe namespace under native multipath is virtual, under its
  # subsystem (device), which links to its controllers (nvmeN): the first
  # one's PCI device.
  case $p in /sys/devices/virtual/*)
    for c in "$b"/device/nvme[0-9]*; do
      [ -L "$c" ] || continue
      q=$(readlink -f "$c")
      case $q in /sys/devices/virtual/*) continue;; esac
      p=$q; break
    done;;
  esac
  while [ "$p" != /sys ] && [ "$p" != / ]; do
    [ -e "$p/driver" ] && drv="$drv $(basename "$(readlink -f "$p/driver")")"
    p=${p%/*}
  done
  echo "disk $n$drv"
done
for i in /sys/class/net/*; do
  [ -e "$i/device/driver" ] || continue
  n=${i##*/}
  echo "nic $(cat "$i/address") $(basename "$(readlink -f "$i/device/driver")") $(cat "$i/carrier" 2>/dev/null || echo -) $(cat "$i/operstate") $n $(ip -4 -o addr show dev "$n" | awk '{print $4}' | head -n 1)"
done"#;

fn bus_name(b: Bus) -> &'static str {
    match b {
        Bus::Virtio => "virtio-blk",
        Bus::VirtioScsi => "virtio-scsi",
        Bus::Nvme => "NVMe",
        Bus::Sata => "SATA (AHCI)",
        Bus::Ide => "IDE (PIIX)",
    }
}

/// The issue's hardware matrix, one boot per row of [`HARDWARE_MATRIX`]:
/// the image boots, grows root, puts `ecs-data` on the blank disk of the
/// row's controller and hands off; the guest shows the row's firmware,
/// vCPUs, disk drivers and NIC drivers (each NIC with carrier and a DHCP
/// address of its own network). Every row runs; the failures come at the end.
#[test]
fn h1_hardware_matrix() {
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let mut failed = Vec::new();
    let mut ran = Vec::new();
    for row in HARDWARE_MATRIX {
        let what = format!(
            "{}: -machine {}, {:?}, {} vCPU(s), root on {} ({} GiB), data on {}, NICs {} (primary) + {}",
            row.name,
            row.machine,
            row.firmware,
            row.cpus,
            bus_name(row.root.0),
            row.root.2 / GIB,
            bus_name(row.data.0),
            row.nics[0].0,
            row.nics[1].0
        );
        eprintln!("h1 boot {what}");
        match hardware_row(progs, image, row) {
            Ok(wall) => {
                eprintln!("h1 passed {what} (report after {wall:.0} s)");
                ran.push(format!("passed ({wall:.0} s) {what}"));
            }
            Err(e) => {
                eprintln!("h1 FAILED {what}");
                ran.push(format!("FAILED {what}"));
                failed.push(e);
            }
        }
    }
    eprintln!("h1 matrix:\n  {}", ran.join("\n  "));
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// One row's boot and checks; the boot's wall time to the report.
fn hardware_row(progs: &Programs, image: &Image, row: &HardwareRow) -> Result<f64, String> {
    let (root_bus, root_driver, root_bytes) = row.root;
    let (data_bus, data_driver) = row.data;
    // Disk 1 (the blank one) carries the serial `ecsdisk1` (vm::Bus); on
    // AHCI and IDE alike udev names it after libata's model and serial.
    let data_dev = "/dev/disk/by-id/ata-QEMU_HARDDISK_ecsdisk1";
    let env = qemu_tests::harness::test_env(&format!(
        "{{ignore: {{volatile: true}}, data: {{device: {data_dev}}}}}"
    ));
    let (env_path, iso) = seed(progs, row.name, &env).map_err(|e| format!("{e:#}"))?;
    let flat = flatten(progs, &env_path).map_err(|e| format!("{e:#}"))?;
    let dir = disks_dir(row.name);
    let root = overlay(
        &image.qcow2,
        &dir,
        "root.qcow2",
        &format!("{}G", root_bytes / GIB),
    )
    .map_err(|e| format!("{e:#}"))?;
    let data = blank_disk(&dir, "data.qcow2", "2G").map_err(|e| format!("{e:#}"))?;
    let mut spec = BootSpec::new(row.name, row.firmware, vec![root.clone(), data], Some(iso));
    spec.hardware = Hardware {
        machine: row.machine.into(),
        cpus: row.cpus,
        disk_buses: vec![root_bus, data_bus],
        nics: row.nics.iter().map(|n| n.0.to_string()).collect(),
    };
    spec.ssh = vec![SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command: HARDWARE_PROBE.into(),
    }];
    let o = boot(&spec).map_err(|e| format!("{}: {e:#}", row.name))?;
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    check_handoff(&mut c, r, &o, &env, &flat, "cidata");
    let want_fw = if row.firmware == Firmware::Uefi {
        "uefi"
    } else {
        "bios"
    };
    c.eq(r.firmware.as_str(), want_fw, "firmware (report)");
    check_root_fills(&mut c, r, root_bytes);
    let disk = r.disks.get(&r.root.disk);
    c.check(disk.is_some_and(|d| d.gpt_primary_sha256.is_some()), || {
        format!("the root disk {} has no GPT: {disk:?}", r.root.disk)
    });
    if root_bytes > (1 << 32) * 512 {
        let end = r.root.part_start_bytes + r.root.part_bytes;
        c.check(end / 512 > 1 << 32, || {
            format!("root ends at sector {}, not beyond 2^32", end / 512)
        });
        c.check(r.root.fs_bytes > 2048 * GIB, || {
            format!(
                "root filesystem is {} bytes, not over 2 TiB",
                r.root.fs_bytes
            )
        });
    }
    // The probe's answer.
    let probe = o.ssh.first();
    c.check(probe.is_some_and(|p| p.status == Some(0)), || {
        format!("the hardware probe over SSH: {probe:?}")
    });
    let out = probe.map(|p| p.stdout.clone()).unwrap_or_default();
    eprintln!("h1 {}: the guest's hardware:\n{}", row.name, out.trim_end());
    let field = |key: &str| -> Vec<Vec<String>> {
        out.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    c.eq(
        field("nproc"),
        vec![vec![row.cpus.to_string()]],
        "nproc in the guest",
    );
    let efi = if row.firmware == Firmware::Uefi {
        "yes"
    } else {
        "no"
    };
    c.eq(
        field("efi"),
        vec![vec![efi.to_string()]],
        "/sys/firmware/efi",
    );
    let disks = field("disk");
    let drivers_of = |name: &str| -> Vec<String> {
        disks
            .iter()
            .find(|d| d.first().map(String::as_str) == Some(name))
            .map(|d| d[1..].to_vec())
            .unwrap_or_default()
    };
    let root_drivers = drivers_of(&r.root.disk);
    c.check(root_drivers.iter().any(|d| d == root_driver), || {
        format!(
            "root disk {} is driven by {root_drivers:?}, want {root_driver}; disks: {disks:?}",
            r.root.disk
        )
    });
    let data_fs = r.ext_labels.get("ecs-data").cloned().unwrap_or_default();
    c.eq(data_fs.len(), 1, "filesystems labelled ecs-data");
    let data_disk = data_fs
        .first()
        .map(|f| f.device.trim_start_matches("/dev/").to_string())
        .unwrap_or_default();
    let data_drivers = drivers_of(&data_disk);
    c.check(data_drivers.iter().any(|d| d == data_driver), || {
        format!(
            "ecs-data is on {data_disk:?}, driven by {data_drivers:?}, want {data_driver}; disks: {disks:?}"
        )
    });
    c.check(data_disk != r.root.disk, || {
        format!("ecs-data is on the root disk {data_disk}")
    });
    c.eq(
        r.mounts.get("/data").and_then(|m| m.label.as_deref()),
        Some("ecs-data"),
        "label of the filesystem at /data",
    );
    let nics = field("nic");
    for (i, (model, drivers)) in row.nics.iter().enumerate() {
        let mac = Hardware::mac(i);
        let nic = nics.iter().find(|n| n.first() == Some(&mac));
        let want_net = format!("10.0.{}.", 2 + i);
        c.check(
            nic.is_some_and(|n| {
                n.len() == 6
                    && drivers.contains(&n[1].as_str())
                    && n[2] == "1"
                    && n[3] == "up"
                    && n[5].starts_with(&want_net)
            }),
            || {
                format!(
                    "NIC {i} ({model}, {mac}): want driver {drivers:?}, carrier 1, up, \
                     an address in {want_net}0/24; the guest's NICs: {nics:?}"
                )
            },
        );
    }
    c.check(nics.len() == row.nics.len(), || {
        format!("the guest has NICs {nics:?}, want {}", row.nics.len())
    });
    // What the sparse root disk took on the host.
    if let Ok(m) = std::fs::metadata(&root) {
        use std::os::unix::fs::MetadataExt;
        eprintln!(
            "h1 {}: root overlay {} MiB allocated on the host for {} GiB virtual",
            row.name,
            m.blocks() * 512 / MIB,
            root_bytes / GIB
        );
    }
    let wall = o.wall.as_secs_f64();
    c.result().map(|()| wall)
}

/// An OpenPGP key without a passphrase for `appliance.backup.encrypt`
/// (ed25519 + cv25519, made by the host's gpg in `dir`): its armored
/// private key.
fn backup_key(dir: &Path) -> String {
    let home = dir.join("gnupg");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str], what: &str| {
        ok(qemu_tests::harness::run(
            std::process::Command::new("gpg")
                .arg("--homedir")
                .arg(&home)
                .args(["--batch", "--passphrase", ""])
                .args(args),
            what,
        ))
    };
    gpg(
        &[
            "--quick-gen-key",
            "ECS boot-test backups <backup@ecs-boot-test.example.org>",
            "future-default",
            "default",
            "never",
        ],
        "gpg: the test backup key",
    );
    let key = gpg(
        &["--armor", "--export-secret-keys"],
        "gpg: exporting the backup key",
    );
    // No agent left behind on the host.
    let _ = std::process::Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "gpg-agent"])
        .status();
    key
}

/// A qcow2 disk with an empty ext4 filesystem (mkfs.ext4 on a raw file,
/// converted): the backup disk both appliances of b1 mount.
fn ext4_disk(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    let qcow2 = dir.join(format!("{name}.qcow2"));
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&qcow2);
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(2 * GIB)
        .unwrap();
    ok(qemu_tests::harness::run(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "ecs-backup"])
            .arg(&raw),
        "mkfs.ext4 (the backup disk)",
    ));
    ok(qemu_tests::harness::run(
        std::process::Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2),
        "qemu-img convert (the backup disk)",
    ));
    std::fs::remove_file(&raw).unwrap();
    qcow2
}

/// Backups and disaster recovery (layer 70-backup), the original manual's
/// chapter end to end in two boots sharing one backup disk (vdb, ext4,
/// mounted through `appliance.backup.mount`, the `file://` target on it).
/// Appliance A: the timer runs; a row and a file, `systemctl start
/// appliance-backup` (full; no key or mount option in the process list or
/// the journal), another row and file, a second backup (incremental), a
/// third row and 40 MB more, a third backup killed (`kill -9` of duplicity
/// after two volumes: a power loss for the backup); without
/// `backup.url` the timer stops and a notice says so. Appliance B, a fresh
/// overlay of the image with the same env and backup disk: the start stops
/// before the application ("restore with recover-from-backup") and refuses
/// to back up; `recover-from-backup` without `--yes-i-am-sure` does
/// nothing; with another key it fails saying so and changes nothing; with
/// the env's key it restores the second backup (two rows, two files, not
/// the interrupted third) and the appliance is ready.
#[test]
fn b1_backup_and_recovery() {
    let _one = serial();
    let Some((progs, image)) = setup() else {
        return;
    };
    let name = "b1-backup";
    let dir = disks_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let key = backup_key(&dir);
    let key_block: String = key.trim().lines().map(|l| format!("      {l}\n")).collect();
    let env = env_ignore_storage().replace(
        "  metric: {exporter: true}\n",
        &format!(
            "  metric: {{exporter: true}}\n  backup:\n    \
             url: file:///mnt/ecs-backup/appliance\n    \
             options: \"--volsize 5\"\n    \
             mount: {{type: ext4, source: /dev/vdb, target: /mnt/ecs-backup, options: \"noatime,nodiratime\"}}\n    \
             encrypt: |\n{key_block}"
        ),
    );
    let (_env_path, iso) = ok(seed(progs, name, &env));
    let backup_disk = ext4_disk(&dir, "backup");
    let root = |command: &str| SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command: command.into(),
    };
    // Shared by the probes: psql as postgres in the env's database; what
    // the backup disk holds (mounted read-only while no backup runs).
    let helpers = format!(
        "q() {{ runuser -u postgres -- /usr/lib/postgresql/*/bin/psql -X -qtA -d {TEST_DATABASE} -c \"$1\" 2>&1; }}; \
         target() {{ mkdir -p /mnt/look; mount -o ro /dev/vdb /mnt/look && ls /mnt/look/appliance; umount /mnt/look; }}; "
    );
    // Needles made at run time: the probe's own command line (in the
    // process list while it runs) must not hold them.
    let backup_watched = "o=nodira; o=${o}time; \
         frag=$(. /run/active-env.env; printf '%s\\n' \"$APPLIANCE_BACKUP_ENCRYPT\" | sed -n 4p); \
         rm -f /run/ps.log; ( while :; do ps -eo comm=,args= >> /run/ps.log; sleep 0.2; done ) & sampler=$!; \
         systemctl start appliance-backup; echo \"backup=$?\"; \
         kill $sampler; \
         n=dupli; echo \"ps_runs=$(grep -c \"bin/${n}city \" /run/ps.log)\"; \
         echo \"ps_key=$(grep -cF -- \"$frag\" /run/ps.log)\"; \
         echo \"ps_opts=$(grep -c \"$o\" /run/ps.log)\"; \
         echo \"journal_key=$(journalctl -b -o cat -u appliance-backup -u appliance-backup-setup -u appliance | grep -cF -- \"$frag\")\"; \
         echo \"journal_opts=$(journalctl -b -o cat -u appliance-backup -u appliance-backup-setup -u appliance | grep -c \"$o\")\"; \
         echo \"mounted=$(findmnt -n /mnt/ecs-backup | wc -l)\"; ";

    // A: three backups, the third interrupted.
    let disk_a = ok(overlay(&image.qcow2, &dir, "a.qcow2", "8G"));
    let mut spec = BootSpec::new(
        &format!("{name}-a"),
        Firmware::Uefi,
        vec![disk_a, backup_disk.clone()],
        Some(iso.clone()),
    );
    spec.ssh = vec![
        root(&format!(
            "{helpers} echo \"timer=$(systemctl is-active appliance-backup.timer)\"; \
             echo \"calendar=$(systemctl show -P TimersCalendar appliance-backup.timer)\"; \
             echo \"create=$(q \"SET ROLE app; CREATE TABLE notes (t text); INSERT INTO notes VALUES ('first')\")\"; \
             install -d /data/ecs-storage-vault; echo doc-one > /data/ecs-storage-vault/doc1; \
             {backup_watched} \
             echo \"full=$(target | grep -c '^duplicity-full\\..*\\.manifest\\.gpg$')\"; \
             echo \"dump=$(ls /data/ecs-pgdump)\"; \
             echo \"notice=$(cat /run/ecs-appliance/notices/backup 2>/dev/null)\""
        )),
        root(&format!(
            "{helpers} q \"SET ROLE app; INSERT INTO notes VALUES ('second')\" >/dev/null; \
             echo doc-two > /data/ecs-storage-vault/doc2; \
             systemctl start appliance-backup; echo \"backup=$?\"; \
             echo \"inc=$(target | grep -c '^duplicity-inc\\..*\\.manifest\\.gpg$')\"; \
             echo \"full=$(target | grep -c '^duplicity-full\\..*\\.manifest\\.gpg$')\""
        )),
        root(&format!(
            "{helpers} q \"SET ROLE app; INSERT INTO notes VALUES ('third')\" >/dev/null; \
             head -c 40M /dev/urandom > /data/ecs-storage-vault/big.bin; \
             vols0=$(target | grep -c 'difftar\\.gpg$'); \
             systemctl start --no-block appliance-backup; \
             for i in $(seq 600); do \
               n=$(ls /mnt/ecs-backup/appliance 2>/dev/null | grep -c 'difftar\\.gpg$'); \
               [ \"$n\" -ge $((vols0 + 2)) ] && break; sleep 0.5; done; \
             n=dupli; pid=$(pgrep -f \"/usr/bin/${{n}}city \" | head -n 1); echo \"killed=$([ -n \"$pid\" ] && kill -9 $pid && echo yes)\"; \
             for i in $(seq 120); do [ \"$(systemctl is-active appliance-backup)\" = activating ] || break; sleep 1; done; \
             echo \"result=$(systemctl show -P Result appliance-backup)\"; \
             echo \"notice=$(cat /run/ecs-appliance/notices/backup 2>/dev/null)\"; \
             echo \"vols=$vols0 $(target | grep -c 'difftar\\.gpg$')\"; \
             echo \"inc=$(target | grep -c '^duplicity-inc\\..*\\.manifest\\.gpg$')\""
        )),
        root(
            "cp /run/active-env.env /run/env.keep; echo APPLIANCE_BACKUP_URL= >> /run/active-env.env; \
             systemctl restart appliance-backup-setup; \
             echo \"timer=$(systemctl is-active appliance-backup.timer)\"; \
             echo \"notice=$(cat /run/ecs-appliance/notices/backup 2>/dev/null)\"; \
             cp /run/env.keep /run/active-env.env",
        ),
    ];
    let o = ok(boot(&spec));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    c.eq(
        r.units
            .get("appliance.service")
            .map(|u| u.active_state.as_str()),
        Some("active"),
        "A: appliance.service (no backup yet: no stop)",
    );
    let f = o.ssh_facts(0);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("timer"), "active", "A: appliance-backup.timer");
    c.check(
        get("calendar").contains("OnCalendar=*-*-* 02:30:00"),
        || format!("A: the timer's calendar: {:?}", get("calendar")),
    );
    c.eq(get("create"), "", "A: the first row (psql's complaints)");
    c.eq(get("backup"), "0", "A: the first backup's status");
    c.check(get("ps_runs").parse::<u32>().unwrap_or(0) > 0, || {
        format!(
            "A: the process list sampler never saw duplicity ({:?})",
            o.ssh.first()
        )
    });
    c.eq(
        get("ps_key"),
        "0",
        "A: process list lines with the backup key",
    );
    c.eq(
        get("ps_opts"),
        "0",
        "A: process list lines with the mount options",
    );
    c.eq(
        get("journal_key"),
        "0",
        "A: journal lines with the backup key",
    );
    c.eq(
        get("journal_opts"),
        "0",
        "A: journal lines with the mount options",
    );
    c.eq(get("mounted"), "0", "A: the backup mount after the backup");
    let frag = key.lines().nth(3).unwrap_or("no key line");
    c.check(
        !o.console
            .lines()
            .filter(|l| !l.contains(qemu_tests::report::MARKER))
            .any(|l| l.contains(frag)),
        || "A: the console shows the backup key".into(),
    );
    c.eq(
        get("full"),
        "1",
        "A: full backups on the target after the first",
    );
    c.eq(
        get("dump"),
        format!("{TEST_DATABASE}.pgdump").as_str(),
        "A: /data/ecs-pgdump",
    );
    c.eq(
        get("notice"),
        "",
        "A: the backup notice after a good backup",
    );
    let f = o.ssh_facts(1);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("backup"), "0", "A: the second backup's status");
    c.eq(get("inc"), "1", "A: incremental backups after the second");
    c.eq(get("full"), "1", "A: full backups after the second");
    let f = o.ssh_facts(2);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("killed"), "yes", "A: duplicity killed mid-backup");
    c.eq(
        get("result"),
        "exit-code",
        "A: the interrupted backup's result",
    );
    c.check(get("notice").contains("failed"), || {
        format!("A: the notice of the failed backup: {:?}", get("notice"))
    });
    let vols: Vec<u32> = get("vols")
        .split(' ')
        .filter_map(|v| v.parse().ok())
        .collect();
    c.check(vols.len() == 2 && vols[1] >= vols[0] + 2, || {
        format!(
            "A: the interrupted backup left no volumes (before, after): {:?}",
            get("vols")
        )
    });
    c.eq(
        get("inc"),
        "1",
        "A: complete incremental backups after the kill",
    );
    let f = o.ssh_facts(3);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("timer"), "inactive", "A: the timer without backup.url");
    c.eq(
        get("notice"),
        "no backups: appliance.backup.url is not set",
        "A: the notice without backup.url",
    );
    c.finish();

    // B: a new machine, the same env and backup disk.
    let disk_b = ok(overlay(&image.qcow2, &dir, "b.qcow2", "8G"));
    let mut spec = BootSpec::new(
        &format!("{name}-b"),
        Firmware::Uefi,
        vec![disk_b, backup_disk],
        Some(iso),
    );
    let state = "state() { echo \"$(find /data -path /data/postgresql -prune -o -type f -printf '%p %s %T@\\n' -o -printf '%p/\\n' | sort | sha256sum | cut -c1-16) \
         $(q \"select count(*) from pg_tables where schemaname = 'public'\") $(sha256sum < /run/appliance-failed | cut -c1-16) $(systemctl is-active appliance)\"; }; ";
    spec.ssh = vec![
        root(&format!(
            "{helpers} {state} before=$(state); \
             out=$(recover-from-backup 2>&1); echo \"rc=$?\"; \
             echo \"says=$(printf '%s' \"$out\" | grep -c -- '--yes-i-am-sure')\"; \
             echo \"nothing=$(printf '%s' \"$out\" | grep -c 'Nothing was done')\"; \
             systemctl start appliance-backup; echo \"backup=$?\"; \
             echo \"refused=$(journalctl -b -u appliance-backup -o cat | grep -c 'waits for recover-from-backup')\"; \
             echo \"same=$([ \"$before\" = \"$(state)\" ] && echo yes || echo \"no: $before / $(state)\")\""
        )),
        root(&format!(
            "{helpers} {state} before=$(state); \
             d=$(mktemp -d); gpg --homedir $d --batch --passphrase '' --quick-gen-key 'wrong <wrong@example.org>' future-default default never 2>/dev/null; \
             cp /run/active-env.env /run/env.keep; \
             printf \"APPLIANCE_BACKUP_ENCRYPT='%s'\\n\" \"$(gpg --homedir $d --batch --armor --export-secret-keys)\" >> /run/active-env.env; \
             gpgconf --homedir $d --kill gpg-agent; rm -rf $d; \
             out=$(recover-from-backup --yes-i-am-sure 2>&1); echo \"rc=$?\"; \
             cp /run/env.keep /run/active-env.env; \
             echo \"msg=$(printf '%s\\n' \"$out\" | grep 'appliance-backup: failed' | tail -n 1)\"; \
             echo \"same=$([ \"$before\" = \"$(state)\" ] && echo yes || echo \"no: $before / $(state)\")\""
        )),
        root(&format!(
            "{helpers} recover-from-backup --yes-i-am-sure > /run/recover.log 2>&1; echo \"rc=$?\"; \
             echo \"last=$(tail -n 1 /run/recover.log)\"; \
             echo \"rows=$(q 'select string_agg(t, chr(44) order by t) from notes')\"; \
             echo \"owner=$(q \"select tableowner from pg_tables where tablename = 'notes'\")\"; \
             echo \"docs=$(cat /data/ecs-storage-vault/doc1 /data/ecs-storage-vault/doc2 | tr '\\n' ' ')\"; \
             echo \"big=$(ls /data/ecs-storage-vault/big.bin 2>/dev/null)\"; \
             echo \"appliance=$(systemctl is-active appliance)\"; \
             echo \"failed=$(cat /run/appliance-failed 2>/dev/null)\"; \
             echo \"leftover=$(ls -d /data/.recover-* 2>/dev/null | wc -l)\"; \
             echo \"page=$(curl -sk https://127.0.0.1/ | grep -c 'Appliance Ready')\""
        )),
    ];
    let o = ok(boot(&spec));
    record_timing(&o);
    let r = o.report();
    let mut c = Checks::new(&o);
    let reason = r
        .files
        .get("/run/appliance-failed")
        .and_then(|f| f.content.clone())
        .unwrap_or_default();
    c.check(
        reason.contains("is empty and a backup exists")
            && reason.contains("restore with recover-from-backup --yes-i-am-sure"),
        || format!("B: /run/appliance-failed should ask for recover-from-backup: {reason:?}"),
    );
    c.eq(
        o.page().0,
        503,
        "B: the status page while the recovery waits",
    );
    let f = o.ssh_facts(0);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(
        get("rc"),
        "2",
        "B: recover-from-backup without --yes-i-am-sure",
    );
    c.check(get("says").parse::<u32>().unwrap_or(0) > 0, || {
        format!(
            "B: the explanation does not name --yes-i-am-sure: {:?}",
            o.ssh.first()
        )
    });
    c.eq(
        get("nothing"),
        "1",
        "B: the explanation says nothing was done",
    );
    c.check(get("backup") != "0" && get("refused") != "0", || {
        format!(
            "B: a backup while waiting for the recovery must be refused: {:?}",
            o.ssh.first()
        )
    });
    c.eq(
        get("same"),
        "yes",
        "B: /data and the database without --yes-i-am-sure",
    );
    let f = o.ssh_facts(1);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("rc"), "1", "B: recover-from-backup with another key");
    c.check(
        get("msg").contains("cannot be decrypted with the key in appliance.backup.encrypt")
            && get("msg").contains("nothing was changed"),
        || {
            format!(
                "B: the wrong key's message: {:?} ({:?})",
                get("msg"),
                o.ssh.get(1)
            )
        },
    );
    c.eq(
        get("same"),
        "yes",
        "B: /data and the database after the wrong key",
    );
    let f = o.ssh_facts(2);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    c.eq(get("rc"), "0", "B: recover-from-backup --yes-i-am-sure");
    c.eq(
        get("rows"),
        "first,second",
        "B: the rows restored (the third backup was interrupted)",
    );
    c.eq(get("owner"), "app", "B: the restored table's owner");
    c.eq(get("docs"), "doc-one doc-two ", "B: the restored files");
    c.eq(get("big"), "", "B: the interrupted backup's file");
    c.eq(
        get("appliance"),
        "active",
        "B: appliance.service after the recovery",
    );
    c.eq(
        get("failed"),
        "",
        "B: /run/appliance-failed after the recovery",
    );
    c.eq(
        get("leftover"),
        "0",
        "B: /data/.recover-* after the recovery",
    );
    c.check(get("page").parse::<u32>().unwrap_or(0) > 0, || {
        format!(
            "B: not the ready page after the recovery ({:?} lines with Appliance Ready)",
            get("page")
        )
    });
    c.check(get("last").contains("recovered"), || {
        format!(
            "B: recover-from-backup's last line: {:?} ({:?})",
            get("last"),
            o.ssh.get(2)
        )
    });
    c.finish();
}
