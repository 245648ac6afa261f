//! One boot: the VM started with its disks and seed, the guest's report,
//! SSH and HTTPS probes, the checks on the outcome, timings.

use super::*;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One HTTP/1.0 GET of `/` on 127.0.0.1:`port`: (status, Location, body).
pub fn http_get(port: u16) -> Result<(u16, Option<String>, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context(format!("connecting to 127.0.0.1:{port}")),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading the answer of 127.0.0.1:{port}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "not an HTTP answer from 127.0.0.1:{port}: {:?}",
                tail(&text, 5)
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Ok((status, location, body.to_string()))
}

/// One boot of a test.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// Names the console log: `target/qemu-artifacts/consoles/NAME.log`.
    pub name: String,
    pub firmware: Firmware,
    /// Virtio disks, in order (vda, vdb, ...), qcow2.
    pub disks: Vec<PathBuf>,
    pub seed: Option<PathBuf>,
    /// Direct kernel boot: (vmlinuz, initrd, command line).
    pub kernel: Option<(PathBuf, PathBuf, String)>,
    /// What to wait for instead of the report (then QEMU is killed: a power cut).
    pub cut_at: Option<String>,
    /// SSH logins tried with the OpenSSH client through a port forward
    /// while the guest is up, after its report.
    pub ssh: Vec<SshProbe>,
    /// The CA that must verify the HTTPS certificate (curl `--cacert`);
    /// `None`: the page is fetched without verification (`-k`).
    pub https_ca: Option<PathBuf>,
    /// The host port of the guest's port 80 (`None`: a free one), for a
    /// peer that must know it before the boot (the ACME server).
    pub http_port: Option<u16>,
    /// More options of the user network (e.g. a `guestfwd=...`).
    pub netdev_extra: Vec<String>,
    /// After the SSH probes: log in as root with the test key, have the
    /// guest issue a client certificate from its client CA (`/app/ecs-ca`)
    /// and fetch the HTTPS page with it ([`Outcome::https_client`]).
    pub client_cert: bool,
    /// Before the SSH probes: the outside peers of the mail and metrics
    /// ports ([`ServicePorts::probe`], [`Outcome::services`]).
    pub services: bool,
    /// The emulated machine (default: q35, 2 vCPUs, virtio disks and NIC).
    pub hardware: Hardware,
    /// The last SSH probe makes the guest reboot (QEMU exits, `-no-reboot`)
    /// within this long: the power button is not pressed.
    pub reboots_within: Option<Duration>,
}

/// The emulated hardware of one boot.
#[derive(Clone, Debug)]
pub struct Hardware {
    /// QEMU's `-machine`: `q35`, or `pc` (i440FX, with PIIX IDE).
    pub machine: String,
    pub cpus: u32,
    /// The controller of each of [`BootSpec::disks`], in order; a disk
    /// beyond the list is on virtio-blk.
    pub disk_buses: Vec<Bus>,
    /// The NICs' QEMU models. The first carries the port forwards (user
    /// network 10.0.2.0/24); NIC `i` after it has a user network of its own,
    /// 10.0.`2+i`.0/24. NIC `i`'s MAC is [`Hardware::mac`]`(i)`.
    pub nics: Vec<String>,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            machine: "q35".into(),
            // qemu64 and two vCPUs boot fastest under TCG here
            // (BENCHMARKS.md); the image's command line carries the i8042
            // cure for -smp 2.
            cpus: 2,
            disk_buses: Vec::new(),
            nics: vec!["virtio-net-pci".into()],
        }
    }
}

impl Hardware {
    /// NIC `i`'s MAC address (NIC 0's is QEMU's default one).
    pub fn mac(i: usize) -> String {
        format!("52:54:00:12:34:{:02x}", 0x56 + i)
    }
}

/// One SSH login: `user` with `key` (`None`: password and
/// keyboard-interactive only), running `command`.
#[derive(Clone, Debug)]
pub struct SshProbe {
    pub user: String,
    pub key: Option<SshKey>,
    pub command: String,
}

/// What one [`SshProbe`] gave.
#[derive(Clone, Debug)]
pub struct SshResult {
    pub probe: SshProbe,
    /// ssh's exit status (255: ssh itself failed, e.g. the login).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BootSpec {
    pub fn new(name: &str, firmware: Firmware, disks: Vec<PathBuf>, seed: Option<PathBuf>) -> Self {
        BootSpec {
            name: name.into(),
            firmware,
            disks,
            seed,
            kernel: None,
            cut_at: None,
            ssh: Vec::new(),
            https_ca: None,
            http_port: None,
            netdev_extra: Vec::new(),
            client_cert: false,
            services: false,
            hardware: Hardware::default(),
            reboots_within: None,
        }
    }
}

/// What one boot gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub report: Option<Report>,
    /// The status page's answer through the port forward, asked after the
    /// report: (status, body), or why there was none (e.g. no web server).
    pub http: Result<(u16, String), String>,
    pub console: String,
    pub console_log: PathBuf,
    /// From QEMU's start to the report (or to `cut_at`).
    pub wall: Duration,
    /// Port 80's `Location` header, when it answered with one.
    pub http_location: Option<String>,
    /// `https://TEST_DOMAIN/` through the port forward with curl (the name
    /// resolved to the forward): (status, body), or why there was none
    /// (with [`BootSpec::https_ca`]: also when the CA does not verify it).
    pub https: Result<(u16, String), String>,
    /// The certificate the HTTPS port served (PEM, from `openssl s_client`).
    pub served_cert: Option<String>,
    /// The SSH logins of [`BootSpec::ssh`], in order.
    pub ssh: Vec<SshResult>,
    /// The fingerprints (`SHA256:...`) of the host keys the SSH server
    /// showed, from the client's known_hosts.
    pub host_key_fingerprints: Vec<String>,
    /// With [`BootSpec::client_cert`]: the HTTPS page fetched with a
    /// client certificate from the guest's client CA.
    pub https_client: Option<Result<(u16, String), String>>,
    /// What the outside peers of mail and metrics got ([`BootSpec::services`]).
    pub services: Option<ServiceProbes>,
    /// The guest agent's answer to `guest-ping` on the virtio port
    /// `org.qemu.guest_agent.0` every boot has, asked after the report.
    pub qga_ping: Result<String, String>,
}

impl Outcome {
    /// The `KEY=VALUE` lines SSH probe `i` printed (empty when it did not
    /// run), the first `=` splitting.
    pub fn ssh_facts(&self, i: usize) -> std::collections::BTreeMap<String, String> {
        self.ssh
            .get(i)
            .map(|r| {
                r.stdout
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn report(&self) -> &Report {
        self.report.as_ref().expect("a boot with a report")
    }

    /// The status page's (status, body); status 0 and the error when there
    /// was no answer. Port 80's answer, or HTTPS's when port 80 redirects
    /// (with a client certificate when the boot fetched one).
    pub fn page(&self) -> (u16, String) {
        match &self.http {
            Ok((301, _)) => self
                .https_client
                .clone()
                .unwrap_or_else(|| self.https.clone())
                .unwrap_or_else(|e| (0, e)),
            other => other.clone().unwrap_or_else(|e| (0, e)),
        }
    }

    /// The console's last lines, for failure messages.
    pub fn tail(&self) -> String {
        format!(
            "console {} (last {TAIL_LINES} lines):\n{}",
            self.console_log.display(),
            tail(&self.console, TAIL_LINES)
        )
    }

    /// Seconds from kernel start until `unit` became active.
    pub fn active_after_s(&self, unit: &str) -> Option<f64> {
        let u = self.report.as_ref()?.units.get(unit)?;
        (u.active_enter_us > 0).then(|| u.active_enter_us as f64 / 1e6)
    }
}

pub(super) fn boot_timeout() -> Duration {
    std::env::var("QEMU_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(BOOT_TIMEOUT)
}

/// Boots `spec` and returns the guest's report (or, with `cut_at`, kills
/// the VM when that text appears). The caller holds [`serial`].
pub fn boot(spec: &BootSpec) -> Result<Outcome> {
    let dir = artifacts()?.join("consoles");
    fs::create_dir_all(&dir)?;
    let console_log = dir.join(format!("{}.log", spec.name));
    let qga_socket = dir.join(format!("{}.qga", spec.name));
    let _ = fs::remove_file(&qga_socket);
    let port = match spec.http_port {
        Some(p) => p,
        None => free_port()?,
    };
    let ssh_port = free_port()?;
    let https_port = free_port()?;
    let service_ports = if spec.services {
        Some(ServicePorts::new()?)
    } else {
        None
    };
    let forwards: Vec<String> = spec
        .netdev_extra
        .iter()
        .cloned()
        .chain(service_ports.iter().flat_map(|p| p.forwards()))
        .collect();
    let hw = &spec.hardware;
    if hw.nics.is_empty() {
        bail!("boot {}: no NIC (the probes need one)", spec.name);
    }
    let mut vm = Vm::new(&console_log)
        .firmware(spec.firmware)
        .machine(&hw.machine)
        .cpu("qemu64")
        .smp(hw.cpus)
        .timeout(boot_timeout())
        .arg("-netdev")
        .arg(format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:80,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443{}",
            forwards.iter().map(|o| format!(",{o}")).collect::<String>()
        ));
    for (i, model) in hw.nics.iter().enumerate() {
        if i > 0 {
            vm = vm.arg("-netdev").arg(format!(
                "user,id=net{i},restrict=on,net=10.0.{}.0/24",
                2 + i
            ));
        }
        let mut dev = format!("{model},netdev=net{i}");
        if hw.nics.len() > 1 || model != "virtio-net-pci" {
            // No option ROM: the firmware boots the disk, never PXE, and
            // QEMU needs no ROM file per model.
            dev.push_str(&format!(",mac={},romfile=", Hardware::mac(i)));
        }
        vm = vm.arg("-device").arg(dev);
    }
    vm = vm
        // The port qemu-guest-agent serves (as Proxmox and libvirt attach it).
        .arg("-device")
        .arg("virtio-serial-pci,id=vser0")
        .arg("-chardev")
        .arg(format!(
            "socket,id=qga0,path={},server=on,wait=off",
            qga_socket.display()
        ))
        .arg("-device")
        .arg("virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0");
    for (i, d) in spec.disks.iter().enumerate() {
        let bus = hw.disk_buses.get(i).copied().unwrap_or(Bus::Virtio);
        vm = vm.disk_on(d, "qcow2", bus);
    }
    if let Some(s) = &spec.seed {
        vm = vm.cdrom(s);
    }
    if let Some((k, i, cmdline)) = &spec.kernel {
        vm = vm
            .arg("-kernel")
            .arg(k.display().to_string())
            .arg("-initrd")
            .arg(i.display().to_string())
            .arg("-append")
            .arg(cmdline.clone());
    }
    if let Some(within) = spec.reboots_within {
        vm = vm.stops_itself(within);
    }
    let read_console =
        || String::from_utf8_lossy(&fs::read(&console_log).unwrap_or_default()).into_owned();
    if let Some(cut) = &spec.cut_at {
        let b = vm.run_until(cut)?;
        return Ok(Outcome {
            name: spec.name.clone(),
            report: None,
            http: Err("no report: the power was cut".into()),
            console: read_console(),
            console_log,
            wall: b.marker_after,
            http_location: None,
            https: Err("no report: the power was cut".into()),
            served_cert: None,
            ssh: Vec::new(),
            host_key_fingerprints: Vec::new(),
            https_client: None,
            services: None,
            qga_ping: Err("no report: the power was cut".into()),
        });
    }
    let known_hosts = dir.join(format!("{}.known_hosts", spec.name));
    let _ = fs::remove_file(&known_hosts);
    let (b, report) = vm.run_until_then(report::MARKER, |console| {
        // The marker is seen as soon as it is written; the line may still
        // be arriving.
        let deadline = Instant::now() + Duration::from_secs(10);
        let report = loop {
            let now = read_console();
            match report::parse(&now) {
                Ok(r) => break r,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("console tail:\n{}", tail(console, TAIL_LINES))))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let (http, http_location) = match http_get(port) {
            Ok((status, location, body)) => (Ok((status, body)), location),
            Err(e) => (Err(format!("{e:#}")), None),
        };
        let https =
            https_get(https_port, spec.https_ca.as_deref(), None).map_err(|e| format!("{e:#}"));
        let served_cert = served_cert(https_port).ok();
        let services = match &service_ports {
            Some(p) => Some(p.probe(&spec.name)?),
            None => None,
        };
        // Only where the agent runs (not in images without layer 60).
        let qga_running = report
            .units
            .get("qemu-guest-agent.service")
            .is_some_and(|u| u.active_state == "active");
        let qga_ping = if qga_running {
            qga_ping(&qga_socket).map_err(|e| format!("{e:#}"))
        } else {
            Err("qemu-guest-agent.service is not active".into())
        };
        let mut ssh = Vec::new();
        for p in &spec.ssh {
            ssh.push(ssh_probe(ssh_port, &known_hosts, p)?);
        }
        let https_client = if spec.client_cert {
            Some(
                client_cert(ssh_port, &known_hosts, &spec.name)
                    .and_then(|c| https_get(https_port, spec.https_ca.as_deref(), Some(&c)))
                    .map_err(|e| format!("{e:#}")),
            )
        } else {
            None
        };
        Ok((
            report,
            (http, http_location),
            (https, served_cert),
            (ssh, https_client, services, qga_ping),
        ))
    })?;
    let (
        report,
        (http, http_location),
        (https, served_cert),
        (ssh, https_client, services, qga_ping),
    ) = report;
    let host_key_fingerprints = if known_hosts.exists() {
        run(
            Command::new("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(&known_hosts),
            "ssh-keygen -l of the known hosts",
        )?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
    } else {
        Vec::new()
    };
    Ok(Outcome {
        name: spec.name.clone(),
        report: Some(report),
        http,
        console: read_console(),
        console_log,
        wall: b.marker_after,
        http_location,
        https,
        served_cert,
        ssh,
        host_key_fingerprints,
        https_client,
        services,
        qga_ping,
    })
}

/// Sends `guest-ping` to the guest agent on the chardev socket; its answer
/// line (`{"return": {}}`), within 20 s.
fn qga_ping(socket: &Path) -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    // A sync with a random id first: the agent answers it once it reads
    // the port, discarding anything a previous client left behind.
    conn.write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4711}}\n")?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).context("no answer to guest-sync")? == 0 {
            bail!("the agent's port closed");
        }
        if line.contains("4711") {
            break;
        }
    }
    conn.write_all(b"{\"execute\":\"guest-ping\"}\n")?;
    line.clear();
    r.read_line(&mut line).context("no answer to guest-ping")?;
    Ok(line.trim().to_string())
}

/// A client certificate from the guest's client CA: the guest makes a key
/// and signs its certificate with `/app/ecs-ca` (over SSH as root with the
/// test key); returns the PEM file (certificate and key) in the artifacts.
pub(super) fn client_cert(ssh_port: u16, known_hosts: &Path, name: &str) -> Result<PathBuf> {
    let probe = SshProbe {
        user: "root".into(),
        key: Some(test_ssh_key()),
        command: "set -e; d=$(mktemp -d); \
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -subj /CN=boot-test-client -keyout $d/k -out $d/csr 2>/dev/null; \
            openssl x509 -req -days 1 -in $d/csr -CA /app/ecs-ca/ca.cert.pem \
              -CAkey /app/ecs-ca/private/ca.key.pem -CAcreateserial -CAserial $d/srl \
              -out $d/c 2>/dev/null; cat $d/c $d/k; rm -rf $d"
            .into(),
    };
    let r = ssh_probe(ssh_port, known_hosts, &probe)?;
    if r.status != Some(0) || !r.stdout.contains("BEGIN CERTIFICATE") {
        bail!(
            "issuing a client certificate on the guest: status {:?}, stderr {:?}",
            r.status,
            r.stderr
        );
    }
    let p = artifacts()?
        .join("consoles")
        .join(format!("{name}.client.pem"));
    fs::write(&p, r.stdout)?;
    Ok(p)
}

/// `https://TEST_DOMAIN/` with curl through the forward on `port`: (status,
/// body). With `ca`, the certificate must verify against it and name the
/// domain; without, it is not checked (`-k`). With `client`, curl shows
/// that certificate (PEM with its key).
pub fn https_get(port: u16, ca: Option<&Path>, client: Option<&Path>) -> Result<(u16, String)> {
    require_tool("curl")?;
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "--retry",
        "3",
        "--retry-connrefused",
    ])
    .arg("--resolve")
    .arg(format!("{TEST_DOMAIN}:{port}:127.0.0.1"))
    .args(["-w", "\n%{http_code}"]);
    match ca {
        Some(ca) => c.arg("--cacert").arg(ca),
        None => c.arg("-k"),
    };
    if let Some(pem) = client {
        c.arg("--cert").arg(pem);
    }
    c.arg(format!("https://{TEST_DOMAIN}:{port}/"));
    let out = run(&mut c, "curl of the HTTPS page")?;
    let (body, code) = out
        .rsplit_once('\n')
        .ok_or_else(|| anyhow!("curl printed no status: {out:?}"))?;
    Ok((
        code.trim().parse().context("curl's status")?,
        body.to_string(),
    ))
}

/// The certificate served on `port` (PEM), through `openssl s_client`.
pub fn served_cert(port: u16) -> Result<String> {
    cert_of(port, None)
}

/// One login with the OpenSSH client through the forward on `port`; retried
/// for up to 60 s while the server is not answering yet.
pub(super) fn ssh_probe(port: u16, known_hosts: &Path, p: &SshProbe) -> Result<SshResult> {
    require_tool("ssh")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = Command::new("ssh");
        c.args(["-p", &port.to_string(), "-F", "/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "LogLevel=ERROR"]);
        match &p.key {
            Some(k) => {
                c.arg("-i").arg(&k.private).args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "PreferredAuthentications=publickey",
                ]);
            }
            None => {
                c.args([
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                ]);
            }
        }
        c.arg(format!("{}@127.0.0.1", p.user))
            .arg("--")
            .arg(&p.command)
            .stdin(std::process::Stdio::null());
        let out = c.output().context("running ssh")?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let not_up = out.status.code() == Some(255)
            && [
                "Connection refused",
                "Connection reset",
                "Connection closed",
                "timed out",
                "kex_exchange_identification",
            ]
            .iter()
            .any(|m| stderr.contains(m));
        if not_up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        return Ok(SshResult {
            probe: p.clone(),
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        });
    }
}

/// Collects failed checks of one boot and fails once, with all of them and
/// the console's tail.
pub struct Checks<'a> {
    outcome: &'a Outcome,
    failed: Vec<String>,
}

impl<'a> Checks<'a> {
    pub fn new(outcome: &'a Outcome) -> Self {
        Checks {
            outcome,
            failed: Vec::new(),
        }
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failed.push(what());
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: &str) {
        if got != want {
            self.failed
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Panics with every failed check and the console's tail.
    pub fn finish(self) {
        if let Err(e) = self.result() {
            panic!("{e}");
        }
    }

    /// Every failed check and the console's tail, as an error.
    pub fn result(self) -> std::result::Result<(), String> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(format!(
            "boot {} failed {} check(s):\n  - {}\n{}",
            self.outcome.name,
            self.failed.len(),
            self.failed.join("\n  - "),
            self.outcome.tail()
        ))
    }
}

/// Appends a line to `target/qemu-artifacts/timings.tsv` (boot, seconds
/// wall to report, seconds kernel → ecs-appliance.target, kernel →
/// appliance.service) for BENCHMARKS.md.
pub fn record_timing(o: &Outcome) {
    let Ok(dir) = artifacts() else { return };
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let line = format!(
        "{}\t{:.1}\t{}\t{}\n",
        o.name,
        o.wall.as_secs_f64(),
        f(o.active_after_s("ecs-appliance.target")),
        f(o.active_after_s("appliance.service")),
    );
    if let Ok(mut file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("timings.tsv"))
    {
        let _ = file.write_all(line.as_bytes());
    }
    eprint!("timing: {line}");
}
