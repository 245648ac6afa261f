//! A local ACME server for the boot tests: Debian's `pebble` (Let's
//! Encrypt's test server) with `pebble-challtestsrv` as its DNS, so the
//! appliance's ACME client (dehydrated) gets a real certificate without the
//! internet.
//!
//! - The guest reaches pebble at [`GUEST_ADDR`]:[`GUEST_PORT`], a QEMU
//!   `guestfwd` through `socat` to pebble's port on the host's loopback
//!   (the boots use `restrict=on`: nothing else leaves the guest).
//! - Pebble's own listener certificate is signed by a CA made for this run
//!   ([`Pebble::listener_ca_pem`], given to the guest as
//!   `appliance.ssl.letsencrypt.directory_ca`).
//! - Its validation authority resolves every name to 127.0.0.1 (the DNS
//!   server) and connects to the `http_port` it was started with: the host
//!   side of the guest's port 80 forward, so the http-01 challenge reaches
//!   the guest's nginx.
//! - The root it issues from (random per start) is fetched from its
//!   management port: [`Pebble::issuer_root`], for curl `--cacert`.
//!
//! The processes are killed when the [`Pebble`] is dropped; their logs are
//! kept under `target/qemu-artifacts/acme/`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::{artifacts, free_port, run};
use crate::require_tool;

/// The guest's address for pebble (a `guestfwd` of QEMU's user network).
pub const GUEST_ADDR: &str = "10.0.2.100";
/// The guest's port for pebble's ACME API.
pub const GUEST_PORT: u16 = 14000;

/// A running pebble and its DNS.
pub struct Pebble {
    children: Vec<Child>,
    /// Pebble's ACME port on the host's 127.0.0.1.
    pub port: u16,
    /// The CA of pebble's listener certificate (PEM).
    pub listener_ca_pem: String,
    /// The root pebble issues from (PEM file).
    pub issuer_root: PathBuf,
}

impl Pebble {
    /// The directory URL as the guest sees it.
    pub fn guest_directory() -> String {
        format!("https://{GUEST_ADDR}:{GUEST_PORT}/dir")
    }

    /// QEMU's `guestfwd` option for the guest to reach this pebble: a
    /// `socat` per connection (a chardev target would carry only the
    /// first connection).
    pub fn guestfwd(&self) -> String {
        format!(
            "guestfwd=tcp:{GUEST_ADDR}:{GUEST_PORT}-cmd:socat - TCP:127.0.0.1:{}",
            self.port
        )
    }

    /// Starts pebble, validating http-01 on 127.0.0.1:`http_port`.
    pub fn start(http_port: u16) -> Result<Pebble> {
        for t in ["pebble", "pebble-challtestsrv", "openssl", "curl", "socat"] {
            require_tool(t)?;
        }
        let dir = artifacts()?.join("acme");
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
                .args(["-days", "2", "-subj", "/CN=boot-test ACME listener CA"])
                .arg("-keyout")
                .arg(p("listener-ca.key"))
                .arg("-out")
                .arg(p("listener-ca.crt")),
            "openssl: the ACME listener CA",
        )?;
        run(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", "/CN=pebble"])
                .arg("-keyout")
                .arg(p("listener.key"))
                .arg("-out")
                .arg(p("listener.csr")),
            "openssl: pebble's listener key",
        )?;
        fs::write(
            p("listener.ext"),
            format!("subjectAltName=IP:{GUEST_ADDR},IP:127.0.0.1\n"),
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(p("listener.csr"))
                .arg("-CA")
                .arg(p("listener-ca.crt"))
                .arg("-CAkey")
                .arg(p("listener-ca.key"))
                .args(["-CAcreateserial", "-extfile"])
                .arg(p("listener.ext"))
                .arg("-out")
                .arg(p("listener.crt")),
            "openssl: pebble's listener certificate",
        )?;
        let (port, mgmt, dns, dns_mgmt) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": p("listener.crt"),
            "privateKey": p("listener.key"),
            "httpPort": http_port,
            "tlsPort": free_port()?,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        fs::write(p("pebble.json"), serde_json::to_vec_pretty(&config)?)?;
        let log = |n: &str| -> Result<Stdio> { Ok(fs::File::create(p(n))?.into()) };
        let mut me = Pebble {
            children: Vec::new(),
            port,
            listener_ca_pem: fs::read_to_string(p("listener-ca.crt"))?,
            issuer_root: p("issuer-root.pem"),
        };
        me.children.push(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .arg("-dns01")
                .arg(format!("127.0.0.1:{dns}"))
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .arg("-management")
                .arg(format!("127.0.0.1:{dns_mgmt}"))
                .stdout(log("challtestsrv.log")?)
                .stderr(log("challtestsrv.err")?)
                .spawn()
                .context("starting pebble-challtestsrv")?,
        );
        me.children.push(
            Command::new("pebble")
                .arg("-config")
                .arg(p("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns}"))
                // No random sleeps before validating, no nonce rejected on
                // purpose: the test is about issuing, not client retries.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(log("pebble.log")?)
                .stderr(log("pebble.err")?)
                .spawn()
                .context("starting pebble")?,
        );
        // The issuing root, once pebble answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = run(
                Command::new("curl")
                    .args(["-sSf", "--max-time", "5", "--cacert"])
                    .arg(p("listener-ca.crt"))
                    .arg(format!("https://127.0.0.1:{mgmt}/roots/0")),
                "curl of pebble's issuing root",
            );
            match got {
                Ok(pem) if pem.contains("BEGIN CERTIFICATE") => {
                    fs::write(&me.issuer_root, pem)?;
                    break;
                }
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(300))
                }
                Ok(other) => bail!("pebble's /roots/0 is not a certificate: {other:?}"),
                Err(e) => {
                    return Err(e.context(format!(
                        "pebble did not answer in 30 s (logs in {})",
                        dir.display()
                    )))
                }
            }
        }
        // Both must still run (a bad flag ends one at once).
        for (c, name) in me.children.iter_mut().zip(["challtestsrv", "pebble"]) {
            if let Some(status) = c.try_wait()? {
                let err = fs::read_to_string(p(&format!("{name}.err"))).unwrap_or_default();
                bail!(
                    "{name} ended ({status}): {}",
                    err.lines().next().unwrap_or("")
                );
            }
        }
        Ok(me)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
