//! Host-side probes of the appliance's mail and metrics ports while the
//! guest is up ([`BootSpec::services`]): real peers from outside the
//! machine, curl speaking SMTP and SMTPS, `openssl s_client` reading the
//! mail certificate, and curl asking for the exporter's port.

use super::*;

/// The guest ports [`ServiceProbes`] reaches through forwards.
pub const SMTP: u16 = 25;
pub const SMTPS: u16 = 465;
pub const NODE_EXPORTER: u16 = 9100;

/// The sender of the message the outside peer sends ([`ServiceProbes`]).
pub const OUTSIDE_SENDER: &str = "outside-peer@example.net";

/// What the outside peers got.
#[derive(Clone, Debug)]
pub struct ServiceProbes {
    /// curl on port 25 with STARTTLS required, to `app@TEST_DOMAIN`:
    /// accepted (`Ok`) or curl's error.
    pub smtp_for_domain: Result<(), String>,
    /// The same, but to `someone@example.com`: an open relay would accept.
    pub smtp_relay: Result<(), String>,
    /// curl on port 465 (TLS from the first byte), to `app@TEST_DOMAIN`.
    pub smtps_for_domain: Result<(), String>,
    /// The certificate port 465 shows (PEM).
    pub smtps_cert: Result<String, String>,
    /// The certificate port 25 shows after STARTTLS (PEM).
    pub smtp_cert: Result<String, String>,
    /// `http://` to the node exporter's port from outside: must fail.
    pub metrics_from_outside: Result<String, String>,
}

/// The host ports forwarded to [`SMTP`], [`SMTPS`], [`NODE_EXPORTER`].
#[derive(Clone, Copy, Debug)]
pub struct ServicePorts {
    pub smtp: u16,
    pub smtps: u16,
    pub metrics: u16,
}

impl ServicePorts {
    pub fn new() -> Result<Self> {
        Ok(ServicePorts {
            smtp: free_port()?,
            smtps: free_port()?,
            metrics: free_port()?,
        })
    }

    /// The `hostfwd=` options of the user network.
    pub fn forwards(&self) -> Vec<String> {
        [
            (self.smtp, SMTP),
            (self.smtps, SMTPS),
            (self.metrics, NODE_EXPORTER),
        ]
        .iter()
        .map(|(h, g)| format!("hostfwd=tcp:127.0.0.1:{h}-:{g}"))
        .collect()
    }

    pub fn probe(&self, name: &str) -> Result<ServiceProbes> {
        require_tool("curl")?;
        let dir = artifacts()?.join("consoles");
        let msg = dir.join(format!("{name}.outside-mail.eml"));
        fs::write(
            &msg,
            format!(
                "From: <{OUTSIDE_SENDER}>\r\nTo: <app@{TEST_DOMAIN}>\r\n\
                 Subject: from outside\r\nMessage-ID: <outside@example.net>\r\n\r\n\
                 Mail for the application.\r\n"
            ),
        )?;
        let domain_rcpt = format!("app@{TEST_DOMAIN}");
        let smtp_url = format!("smtp://127.0.0.1:{}", self.smtp);
        let smtp_for_domain = send(&smtp_url, &msg, &domain_rcpt, true);
        let smtp_relay = send(&smtp_url, &msg, "someone@example.com", true);
        let smtps_url = format!("smtps://127.0.0.1:{}", self.smtps);
        let smtps_for_domain = send(&smtps_url, &msg, &domain_rcpt, false);
        let smtps_cert = cert_of(self.smtps, None).map_err(|e| format!("{e:#}"));
        let smtp_cert = cert_of(self.smtp, Some("smtp")).map_err(|e| format!("{e:#}"));
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .output()
            .context("running curl")?;
        let metrics_from_outside = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(400)
                .collect())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        };
        Ok(ServiceProbes {
            smtp_for_domain,
            smtp_relay,
            smtps_for_domain,
            smtps_cert,
            smtp_cert,
            metrics_from_outside,
        })
    }
}

/// curl sends `msg` on `url` from [`OUTSIDE_SENDER`] to `rcpt` (with
/// `starttls`: STARTTLS required). The certificate is not checked here
/// ([`cert_of`] reads it).
fn send(url: &str, msg: &Path, rcpt: &str, starttls: bool) -> Result<(), String> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "60", "-k"]);
    if starttls {
        c.arg("--ssl-reqd");
    }
    let out = c
        .arg(url)
        .args(["--mail-from", OUTSIDE_SENDER, "--mail-rcpt", rcpt, "-T"])
        .arg(msg)
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "curl {url} to {rcpt} (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The certificate on `port` (PEM), with `openssl s_client` (`-starttls
/// PROTO` when given).
pub fn cert_of(port: u16, starttls: Option<&str>) -> Result<String> {
    require_tool("openssl")?;
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", TEST_DOMAIN]);
    if let Some(p) = starttls {
        c.args(["-starttls", p]);
    }
    let out = run(c.stdin(std::process::Stdio::null()), "openssl s_client")?;
    let begin = out
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| anyhow!("no certificate from 127.0.0.1:{port}"))?;
    let end = out[begin..]
        .find("-----END CERTIFICATE-----")
        .ok_or_else(|| anyhow!("a cut certificate from 127.0.0.1:{port}"))?;
    Ok(out[begin..begin + end + "-----END CERTIFICATE-----".len()].to_string() + "\n")
}

/// The SSH probe (root, the test key) that has the guest send one message
/// with `sendmail` and prints, for [`check_services`]: its queue entry
/// (`QUEUE-LOCAL`, once postfix tried to hand it on), the entry of the
/// outside peer's message (`QUEUE-OUTSIDE`), the queued message itself
/// between `MESSAGE-BEGIN` and `MESSAGE-END` (`postcat`), and one line of
/// each exporter's `/metrics` on 127.0.0.1 (`METRICS PORT LINE`).
pub fn services_probe() -> SshProbe {
    let d = TEST_DOMAIN;
    let command = format!(
        r#"set -u
printf 'From: ECS appliance <noreply@{d}>\nTo: <app@{d}>\nSubject: DKIM boot test\nMessage-ID: <dkim-boot-test@{d}>\n\nThis message is signed by the appliance.\n' |
    /usr/sbin/sendmail -oi -f noreply@{d} app@{d} || echo "SENDMAIL-FAILED $?"
line=""
for _ in $(seq 120); do
    line=$(postqueue -j | grep -E '"sender": ?"noreply@{d}"' | grep delay_reason) && break
    sleep 1
done
echo "QUEUE-LOCAL $line"
echo "QUEUE-OUTSIDE $(postqueue -j | grep -E '"sender": ?"{OUTSIDE_SENDER}"' | head -n 1)"
id=$(printf '%s' "$line" | sed -n 's/.*"queue_id": \{{0,1\}}"\([^"]*\)".*/\1/p')
echo MESSAGE-BEGIN
[ -n "$id" ] && postcat -bh -q "$id" | grep -v '^\*\*\* '
echo MESSAGE-END
for p in 9100 9113 9187; do
    echo "METRICS $p $(curl -s --max-time 20 http://127.0.0.1:$p/metrics | grep -E '^(node_boot_time_seconds|nginx_up|pg_up)' | head -n 1)"
done
"#
    );
    SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command,
    }
}

/// What a ready appliance's mail and metrics must give: the outside peers
/// ([`Outcome::services`]) and [`services_probe`]'s result `guest`. `dkim`:
/// the env's key, whose signature a real verifier (dkimpy,
/// `scripts/dkim-verify.py`) must accept on the queued message.
pub fn check_services(c: &mut Checks, o: &Outcome, guest: Option<&SshResult>, dkim: &TestDkim) {
    let Some(s) = &o.services else {
        c.check(false, || "no service probes ran".into());
        return;
    };
    c.check(s.smtp_for_domain.is_ok(), || {
        format!(
            "SMTP with STARTTLS from outside to app@{TEST_DOMAIN} was not accepted: {:?}",
            s.smtp_for_domain
        )
    });
    c.check(s.smtps_for_domain.is_ok(), || {
        format!(
            "SMTPS from outside to app@{TEST_DOMAIN} was not accepted: {:?}",
            s.smtps_for_domain
        )
    });
    c.check(
        matches!(&s.smtp_relay, Err(e) if e.contains("554") || e.contains("Relay")),
        || {
            format!(
                "relaying from outside to someone@example.com was not refused: {:?}",
                s.smtp_relay
            )
        },
    );
    let https = o.served_cert.clone().unwrap_or_default();
    for (what, cert) in [("465", &s.smtps_cert), ("25 (STARTTLS)", &s.smtp_cert)] {
        c.check(
            cert.as_ref()
                .is_ok_and(|p| !https.is_empty() && *p == https),
            || format!("port {what} does not show the certificate HTTPS serves: {cert:?}"),
        );
    }
    c.check(s.metrics_from_outside.is_err(), || {
        format!(
            "the node exporter answers from outside: {:?}",
            s.metrics_from_outside
        )
    });
    let Some(g) = guest else {
        c.check(false, || "the mail and metrics probe did not run".into());
        return;
    };
    c.check(g.status == Some(0), || {
        format!(
            "the mail and metrics probe: status {:?}, stderr {:?}",
            g.status, g.stderr
        )
    });
    let field = |tag: &str| {
        g.stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or("")
            .to_string()
    };
    let local = field("QUEUE-LOCAL ");
    c.check(local.contains("127.0.0.1") && local.contains(":8025"), || {
        format!("mail for app@{TEST_DOMAIN} is not handed to the application's smtpd on 127.0.0.1:8025: {local:?}")
    });
    let outside = field("QUEUE-OUTSIDE ");
    c.check(outside.contains(&format!("app@{TEST_DOMAIN}")), || {
        format!("the outside peer's message is not queued for app@{TEST_DOMAIN}: {outside:?}")
    });
    let message: String = g
        .stdout
        .split_once("MESSAGE-BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("MESSAGE-END"))
        .map(|(m, _)| m.to_string())
        .unwrap_or_default();
    let verified = (|| -> Result<String> {
        if !message.contains("DKIM-Signature:") {
            bail!("the queued message has no DKIM-Signature header:\n{message}");
        }
        let path = artifacts()?
            .join("consoles")
            .join(format!("{}.signed.eml", o.name));
        fs::write(&path, &message)?;
        let script = workspace().join("qemu-tests/scripts/dkim-verify.py");
        let out = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&path)
            .args([DKIM_SELECTOR, TEST_DOMAIN, &dkim.public])
            .output()
            .context("running /usr/bin/python3 dkim-verify.py")?;
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("dkimpy: {}", said.trim());
        }
        Ok(said)
    })();
    c.check(verified.is_ok(), || {
        format!("the appliance's mail does not carry a valid DKIM signature: {verified:?}")
    });
    let record = format!("p={}", dkim.public);
    c.check(
        o.console
            .contains("appliance-mail: DKIM: publish this DNS record")
            && o.console.contains(&record),
        || "the console does not show the DKIM DNS record with the env key's public half".into(),
    );
    for (port, want) in [
        ("9100", "node_boot_time_seconds"),
        ("9113", "nginx_up 1"),
        ("9187", "pg_up 1"),
    ] {
        let line = g
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("METRICS {port} ")))
            .unwrap_or("");
        c.check(line.starts_with(want), || {
            format!("127.0.0.1:{port}/metrics on the guest: {line:?}, want {want}...")
        });
    }
}
