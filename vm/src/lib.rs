//! Launching QEMU guests: a small builder for one VM run, shared by the boot
//! tests (`qemu-tests`) and `imgbuild run`.
//!
//! ```no_run
//! use vm::{Firmware, Vm};
//! let boot = Vm::new("/tmp/console.log")
//!     .firmware(Firmware::Uefi)
//!     .disk("ecs.qcow2", "qcow2")
//!     .snapshot(true)
//!     .timeout(std::time::Duration::from_secs(300))
//!     .run_until("TEST-MARKER")
//!     .unwrap();
//! println!("marker after {:?}", boot.marker_after);
//! ```
//!
//! - The serial console goes to QEMU's stdout, which a thread copies to the
//!   console log (kept as a test artifact) and scans for the marker, so the
//!   wait is for the line itself, not a fixed sleep.
//! - Acceleration: KVM when it really runs guest code (probed once: SeaBIOS
//!   must print on the serial port within a few seconds), else TCG. On our
//!   machines /dev/kvm exists but hangs or fails, so this is TCG there.
//!   `QEMU_ACCEL=kvm|tcg` overrides the probe.
//! - Every run has a timeout; when it passes, QEMU is killed and the error
//!   says what was waited for, for how long, and shows the console's tail.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// OVMF's code and variable store templates (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// How many console lines an error shows.
pub const TAIL_LINES: usize = 40;
/// How long a guest gets to power off after QMP's `system_powerdown`.
pub const POWERDOWN_TIMEOUT: Duration = Duration::from_secs(90);

/// Kernel arguments that keep a Debian kernel from hanging at the i8042
/// probe under TCG (see MACHINE.md): no PS/2 aux port, no PnP probing.
pub const TCG_SAFE_CMDLINE: &str = "i8042.noaux i8042.nopnp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF, with a private copy of the variable store.
    Uefi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// QEMU's `-accel` value.
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator to use: `QEMU_ACCEL`, else a one-time probe.
pub fn accel() -> Result<Accel> {
    static PROBED: OnceLock<Accel> = OnceLock::new();
    if let Ok(v) = std::env::var("QEMU_ACCEL") {
        return match v.as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => bail!("QEMU_ACCEL={v:?}: use kvm or tcg"),
        };
    }
    if let Some(a) = PROBED.get() {
        return Ok(*a);
    }
    let a = probe_kvm()?;
    Ok(*PROBED.get_or_init(|| a))
}

/// KVM counts as usable when SeaBIOS, run under it with no disks, prints
/// its banner on the serial port within 5 seconds.
fn probe_kvm() -> Result<Accel> {
    require_tool(QEMU)?;
    let usable = File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return Ok(Accel::Tcg);
    }
    let mut child = Command::new(QEMU)
        .args([
            "-accel",
            "kvm",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "64",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {QEMU} to probe KVM"))?;
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&buf).contains("SeaBIOS") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let ok = rx.recv_timeout(Duration::from_secs(5)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    Ok(if ok { Accel::Kvm } else { Accel::Tcg })
}

/// Fails with a clear message when `tool` is not on PATH (tests must fail,
/// never skip, when a tool is missing).
pub fn require_tool(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("{tool} is not installed: run scripts/install-host-deps.sh (as root)");
    }
    Ok(())
}

/// The controller a disk hangs on. Disk N (counting the VM's disks from 0,
/// CD-ROMs aside) carries the serial `ecsdiskN` on every bus but virtio-blk,
/// so the guest's `/dev/disk/by-id/` names it (e.g.
/// `ata-QEMU_HARDDISK_ecsdisk1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk (`/dev/vdX`).
    Virtio,
    /// A disk on one virtio-scsi controller (`/dev/sdX`).
    VirtioScsi,
    /// Its own NVMe controller (`/dev/nvmeNn1`).
    Nvme,
    /// A port of one added AHCI controller (`/dev/sdX`).
    Sata,
    /// The secondary channel of the i440FX's PIIX IDE controller (the
    /// primary one has the CD-ROM); only with [`Vm::machine`] `pc`.
    Ide,
}

/// One disk attached to the VM.
#[derive(Clone, Debug)]
struct Drive {
    path: PathBuf,
    format: String,
    cdrom: bool,
    bus: Bus,
}

/// A VM run: firmware, disks and limits.
#[derive(Clone, Debug)]
pub struct Vm {
    console_log: PathBuf,
    firmware: Firmware,
    machine: String,
    drives: Vec<Drive>,
    memory_mib: u32,
    smp: u32,
    cpu: String,
    timeout: Duration,
    snapshot: bool,
    extra: Vec<String>,
    /// After the hook: wait this long for the guest to stop by itself (a
    /// reboot, which `-no-reboot` turns into QEMU's exit) instead of
    /// pressing the power button.
    stops_itself: Option<Duration>,
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct Boot {
    /// From QEMU's start until the marker appeared (or QEMU exited).
    pub marker_after: Duration,
    /// The whole console output so far.
    pub console: String,
    pub accel: Accel,
}

impl Vm {
    /// A VM whose serial console is copied to `console_log`.
    pub fn new(console_log: impl Into<PathBuf>) -> Vm {
        Vm {
            console_log: console_log.into(),
            firmware: Firmware::Bios,
            machine: "q35".into(),
            drives: Vec::new(),
            memory_mib: 1024,
            smp: 1,
            cpu: "max".into(),
            timeout: Duration::from_secs(300),
            snapshot: false,
            extra: Vec::new(),
            stops_itself: None,
        }
    }

    /// The guest reboots or powers off by itself after the hook of
    /// [`Vm::run_until_then`] (within `within`): no power button is pressed.
    pub fn stops_itself(mut self, within: Duration) -> Vm {
        self.stops_itself = Some(within);
        self
    }

    pub fn firmware(mut self, f: Firmware) -> Vm {
        self.firmware = f;
        self
    }

    /// QEMU's machine type (default `q35`; `pc` is the i440FX with IDE).
    pub fn machine(mut self, m: &str) -> Vm {
        self.machine = m.into();
        self
    }

    /// A virtio disk (`format` as QEMU names it: raw, qcow2, vmdk, vpc (VHD),
    /// vhdx, vdi).
    pub fn disk(self, path: impl Into<PathBuf>, format: &str) -> Vm {
        self.disk_on(path, format, Bus::Virtio)
    }

    /// A disk on `bus`. When any disk is not on virtio-blk, the first disk
    /// is the firmware's first boot device (`bootindex=0`).
    pub fn disk_on(mut self, path: impl Into<PathBuf>, format: &str, bus: Bus) -> Vm {
        self.drives.push(Drive {
            path: path.into(),
            format: format.into(),
            cdrom: false,
            bus,
        });
        self
    }

    /// A read-only CD-ROM (e.g. a seed ISO).
    pub fn cdrom(mut self, path: impl Into<PathBuf>) -> Vm {
        self.drives.push(Drive {
            path: path.into(),
            format: "raw".into(),
            cdrom: true,
            // Unused: a CD-ROM goes where QEMU puts `media=cdrom` (the
            // first IDE or SATA port).
            bus: Bus::Ide,
        });
        self
    }

    pub fn memory_mib(mut self, m: u32) -> Vm {
        self.memory_mib = m;
        self
    }

    /// The CPU model under TCG (default `max`; `qemu64` boots a Debian
    /// kernel faster under TCG: no AVX or SVM, so fewer modules load).
    pub fn cpu(mut self, model: &str) -> Vm {
        self.cpu = model.into();
        self
    }

    pub fn smp(mut self, n: u32) -> Vm {
        self.smp = n;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Vm {
        self.timeout = t;
        self
    }

    /// Discard writes to the disks (QEMU's `snapshot=on`).
    pub fn snapshot(mut self, on: bool) -> Vm {
        self.snapshot = on;
        self
    }

    /// Extra QEMU arguments.
    pub fn arg(mut self, a: impl Into<String>) -> Vm {
        self.extra.push(a.into());
        self
    }

    /// The QEMU command line (without spawning it). `vars` is the OVMF
    /// variable store copy for UEFI runs.
    pub fn command(&self, accel: Accel, vars: Option<&Path>) -> Command {
        let mut c = Command::new(QEMU);
        c.args(["-accel", accel.arg(), "-machine", &self.machine])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.smp.to_string()])
            .args(["-display", "none", "-nodefaults", "-monitor", "none"])
            .args(["-serial", "stdio", "-no-reboot"]);
        if accel == Accel::Tcg {
            c.args(["-cpu", &self.cpu]);
        }
        if self.firmware == Firmware::Uefi {
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ));
            if let Some(v) = vars {
                c.arg("-drive")
                    .arg(format!("if=pflash,format=raw,unit=1,file={}", v.display()));
            }
        }
        // Today's command line (`if=virtio`) unless a disk is elsewhere;
        // then every disk is a `-device` of its controller.
        let devices = self.drives.iter().any(|d| !d.cdrom && d.bus != Bus::Virtio);
        let (mut scsi, mut sata) = (false, 0);
        for (n, d) in self.drives.iter().filter(|d| !d.cdrom).enumerate() {
            let file = format!("file={},format={}", d.path.display(), d.format);
            let snap = if self.snapshot { ",snapshot=on" } else { "" };
            if !devices {
                c.arg("-drive").arg(format!("{file},if=virtio{snap}"));
                continue;
            }
            // A guest that zeroes without a zeroing command (ext4's inode
            // tables over AHCI or IDE) then allocates nothing in the file.
            c.arg("-drive")
                .arg(format!("{file},if=none,id=disk{n},detect-zeroes=on{snap}"));
            let serial = format!("drive=disk{n},serial=ecsdisk{n}");
            let dev = match d.bus {
                Bus::Virtio => format!("virtio-blk-pci,drive=disk{n}"),
                Bus::VirtioScsi => {
                    if !scsi {
                        c.args(["-device", "virtio-scsi-pci,id=scsi0"]);
                        scsi = true;
                    }
                    format!("scsi-hd,bus=scsi0.0,{serial}")
                }
                Bus::Nvme => format!("nvme,{serial}"),
                Bus::Sata => {
                    if sata == 0 {
                        c.args(["-device", "ahci,id=ahci0"]);
                    }
                    sata += 1;
                    format!("ide-hd,bus=ahci0.{},{serial}", sata - 1)
                }
                Bus::Ide => format!("ide-hd,bus=ide.1,{serial}"),
            };
            let boot = if n == 0 { ",bootindex=0" } else { "" };
            c.arg("-device").arg(format!("{dev}{boot}"));
        }
        for d in self.drives.iter().filter(|d| d.cdrom) {
            c.arg("-drive").arg(format!(
                "file={},format={},media=cdrom,readonly=on",
                d.path.display(),
                d.format
            ));
        }
        c.args(&self.extra);
        c
    }

    /// Boots and waits for `marker` on the console, then stops QEMU.
    pub fn run_until(&self, marker: &str) -> Result<Boot> {
        self.run(Some(marker))
    }

    /// Boots and waits for the guest to power off (QEMU exits).
    pub fn run_to_poweroff(&self) -> Result<Boot> {
        self.run(None)
    }

    /// Boots, waits for `marker`, then runs `then` with the console so far
    /// while the guest is still up (e.g. to fetch a page through a port
    /// forward), then presses the ACPI power button through QMP and waits
    /// up to [`POWERDOWN_TIMEOUT`] for QEMU to exit (killing it after that).
    pub fn run_until_then<T>(
        &self,
        marker: &str,
        then: impl FnOnce(&str) -> Result<T>,
    ) -> Result<(Boot, T)> {
        let mut then = Some(then);
        let mut out = None;
        let mut hook = |console: &str| -> Result<()> {
            let f = then.take().expect("the hook runs once");
            out = Some(f(console)?);
            Ok(())
        };
        let boot = self.run_with(Some(marker), Some(&mut hook))?;
        Ok((boot, out.expect("the hook ran")))
    }

    fn run(&self, marker: Option<&str>) -> Result<Boot> {
        self.run_with(marker, None)
    }

    fn run_with(&self, marker: Option<&str>, mut hook: Option<Hook>) -> Result<Boot> {
        require_tool(QEMU)?;
        let accel = accel()?;
        let vars_dir = tempfile_dir()?;
        let vars = if self.firmware == Firmware::Uefi {
            for f in [OVMF_CODE, OVMF_VARS] {
                if !Path::new(f).is_file() {
                    bail!(
                        "{f} is missing: install the ovmf package (scripts/install-host-deps.sh)"
                    );
                }
            }
            let v = vars_dir.0.join("OVMF_VARS.fd");
            fs::copy(OVMF_VARS, &v).context("copying the OVMF variable store")?;
            Some(v)
        } else {
            None
        };
        for d in &self.drives {
            if !d.path.exists() {
                bail!("disk {} does not exist", d.path.display());
            }
            if d.bus == Bus::Ide && !d.cdrom && !self.machine.starts_with("pc") {
                bail!(
                    "an IDE disk needs the i440FX machine (`pc`), not {:?}: q35's IDE buses are AHCI ports",
                    self.machine
                );
            }
        }
        let mut cmd = self.command(accel, vars.as_deref());
        let qmp = vars_dir.0.join("qmp.sock");
        if hook.is_some() {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {QEMU}"))?;
        let guard = KillOnDrop(&mut child);
        let stdout = guard.0.stdout.take().expect("piped");
        let mut stderr = guard.0.stderr.take().expect("piped");
        let log = File::create(&self.console_log)
            .with_context(|| format!("creating {}", self.console_log.display()))?;
        let (tx, rx) = mpsc::channel::<Event>();
        let want = marker.map(str::to_owned);
        let reader = std::thread::spawn(move || copy_console(stdout, log, want, tx));
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = start + self.timeout;
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = match rx.recv_timeout(left) {
            Ok(Event::Marker) => match hook.take() {
                None => Ok(start.elapsed()),
                Some(hook) => self
                    .then_power_down(hook, &rx, &qmp)
                    .map(|()| start.elapsed()),
            },
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // QEMU exited (powered off, or failed).
                let status = guard.0.wait().context("waiting for QEMU")?;
                match marker {
                    None if status.success() => Ok(start.elapsed()),
                    Some(m) => Err(anyhow!(
                        "QEMU exited ({status}) after {:.0}s before the console showed {m:?}",
                        start.elapsed().as_secs_f64()
                    )),
                    None => Err(anyhow!("QEMU exited with {status}")),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!(
                "timeout: {} not reached within {}s ({:?} firmware, {} accel); QEMU killed",
                marker
                    .map(|m| format!("{m:?}"))
                    .unwrap_or("power-off".into()),
                self.timeout.as_secs(),
                self.firmware,
                accel.arg(),
            )),
        };
        drop(guard);
        let _ = reader.join();
        let qemu_err = err_reader.join().unwrap_or_default();
        let console =
            String::from_utf8_lossy(&fs::read(&self.console_log).unwrap_or_default()).into_owned();
        match outcome {
            Ok(t) => Ok(Boot {
                marker_after: t,
                console,
                accel,
            }),
            Err(e) => Err(e.context(format!(
                "console ({}), last {TAIL_LINES} lines:\n{}\nQEMU stderr:\n{}",
                self.console_log.display(),
                tail(&console, TAIL_LINES),
                qemu_err.trim()
            ))),
        }
    }
}

enum Event {
    Marker,
    Eof,
}

/// Runs once the marker was seen, with the console so far.
type Hook<'a> = &'a mut dyn FnMut(&str) -> Result<()>;

impl Vm {
    /// After the marker: runs `hook` while the guest is up, then presses the
    /// power button and waits for QEMU to exit.
    fn then_power_down(&self, hook: Hook, rx: &mpsc::Receiver<Event>, qmp: &Path) -> Result<()> {
        let console =
            String::from_utf8_lossy(&fs::read(&self.console_log).unwrap_or_default()).into_owned();
        hook(&console)?;
        if let Some(within) = self.stops_itself {
            return match rx.recv_timeout(within) {
                Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => Ok(()),
                _ => Err(anyhow!(
                    "the guest did not stop by itself within {}s; QEMU killed",
                    within.as_secs()
                )),
            };
        }
        qmp_powerdown(qmp)?;
        match rx.recv_timeout(POWERDOWN_TIMEOUT) {
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => Ok(()),
            _ => Err(anyhow!(
                "the guest did not power off within {}s of system_powerdown; QEMU killed",
                POWERDOWN_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Presses the guest's ACPI power button through QEMU's QMP socket.
fn qmp_powerdown(sock: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let s = UnixStream::connect(sock)
        .with_context(|| format!("connecting to QMP at {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    // Greeting, then each command's reply ({"return": {}} or an error).
    r.read_line(&mut line).context("reading QMP's greeting")?;
    for cmd in ["qmp_capabilities", "system_powerdown"] {
        writeln!(w, "{{\"execute\": \"{cmd}\"}}").context("writing to QMP")?;
        loop {
            line.clear();
            if r.read_line(&mut line).context("reading QMP's reply")? == 0 {
                bail!("QMP closed the connection during {cmd}");
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                bail!("QMP {cmd}: {}", line.trim());
            }
            // An asynchronous event: keep reading.
        }
    }
    Ok(())
}

fn copy_console(
    mut out: impl Read,
    mut log: File,
    marker: Option<String>,
    tx: mpsc::Sender<Event>,
) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut sent = false;
    loop {
        match out.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = log.write_all(&chunk[..n]);
                if let (Some(m), false) = (&marker, sent) {
                    seen.extend_from_slice(&chunk[..n]);
                    if memmem(&seen, m.as_bytes()) {
                        let _ = log.flush();
                        let _ = tx.send(Event::Marker);
                        sent = true;
                    }
                    // Keep only what a marker could still straddle.
                    let keep = m.len().max(1) - 1;
                    if seen.len() > keep {
                        seen.drain(..seen.len() - keep);
                    }
                }
            }
        }
    }
    let _ = log.flush();
    let _ = tx.send(Event::Eof);
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

fn tempfile_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("qemu-tests-{}-{i}", std::process::id()));
        if fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!("cannot create a temporary directory in {}", base.display())
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_firmware_disks_and_snapshot() {
        let vm = Vm::new("/tmp/c.log")
            .firmware(Firmware::Uefi)
            .disk("/d.qcow2", "qcow2")
            .cdrom("/s.iso")
            .snapshot(true);
        let c = vm.command(Accel::Tcg, Some(Path::new("/v.fd")));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(line.contains(&format!("file={OVMF_CODE}")), "{line}");
        assert!(line.contains("unit=1,file=/v.fd"), "{line}");
        assert!(
            line.contains("file=/d.qcow2,format=qcow2,if=virtio,snapshot=on"),
            "{line}"
        );
        assert!(
            line.contains("file=/s.iso,format=raw,media=cdrom"),
            "{line}"
        );
    }

    #[test]
    fn command_line_puts_disks_on_their_controllers() {
        let vm = Vm::new("/tmp/c.log")
            .machine("pc")
            .disk_on("/root.qcow2", "qcow2", Bus::VirtioScsi)
            .disk_on("/ide.qcow2", "qcow2", Bus::Ide)
            .disk_on("/nvme.qcow2", "qcow2", Bus::Nvme)
            .disk_on("/sata.qcow2", "qcow2", Bus::Sata)
            .disk_on("/sata2.qcow2", "qcow2", Bus::Sata)
            .disk("/vd.qcow2", "qcow2")
            .cdrom("/s.iso");
        let c = vm.command(Accel::Tcg, None);
        let line = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "-machine pc ",
            "-drive file=/root.qcow2,format=qcow2,if=none,id=disk0,detect-zeroes=on",
            "-device virtio-scsi-pci,id=scsi0 -device scsi-hd,bus=scsi0.0,drive=disk0,serial=ecsdisk0,bootindex=0",
            "-device ide-hd,bus=ide.1,drive=disk1,serial=ecsdisk1 ",
            "-device nvme,drive=disk2,serial=ecsdisk2 ",
            "-device ahci,id=ahci0 -device ide-hd,bus=ahci0.0,drive=disk3,serial=ecsdisk3 ",
            "-device ide-hd,bus=ahci0.1,drive=disk4,serial=ecsdisk4 ",
            "-device virtio-blk-pci,drive=disk5 ",
            "file=/s.iso,format=raw,media=cdrom,readonly=on",
        ] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
        assert_eq!(line.matches("virtio-scsi-pci").count(), 1, "{line}");
        assert_eq!(line.matches("-device ahci,").count(), 1, "{line}");
    }

    #[test]
    fn marker_found_across_chunks() {
        assert!(memmem(b"abc MARK def", b"MARK"));
        assert!(!memmem(b"MAR", b"MARK"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
