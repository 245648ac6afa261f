//! `imgbuild run IMAGE`: boots an image locally, as `mkosi qemu` does.
//!
//! The guest gets its seed (`NAME.seed.iso` beside the image, or `--seed`)
//! as a CD-ROM, a throw-away qcow2 overlay over the image (unless
//! `--persistent`), UEFI (OVMF, a private copy of its variable store) unless
//! `--bios`, KVM when it really runs guests else TCG (said on start), the
//! serial console on the terminal, and user-mode networking with SSH and
//! HTTPS forwarded to localhost. Once the guest's SSH server and web server
//! answer, the lines to reach them are printed. Ctrl-C (or SIGTERM) stops
//! QEMU; the guest powering off ends it too; the overlay and the variable
//! store go with the run's temporary directory either way.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seeds::cmd;
use vm::{Accel, Firmware, Vm};

use crate::exit::bad_input;

/// What `imgbuild run` was asked for (from the command line).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub image: PathBuf,
    pub seed: Option<PathBuf>,
    pub persistent: bool,
    pub bios: bool,
    pub ssh_port: Option<u16>,
    pub https_port: Option<u16>,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl RunOptions {
    /// From `imgbuild run`'s arguments.
    pub fn from_args(args: crate::cli::RunArgs) -> RunOptions {
        RunOptions {
            image: args.image,
            seed: args.seed,
            persistent: args.persistent,
            bios: args.bios,
            ssh_port: args.ssh_port,
            https_port: args.https_port,
            memory_mib: args.memory,
            cpus: args.cpus,
        }
    }
}

/// Boots the image and waits for QEMU to end.
pub fn run(opts: &RunOptions) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&opts.image)
        .map_err(|e| bad_input(format!("{}: {e}", opts.image.display())))?;
    if !meta.is_file() {
        return Err(bad_input(format!(
            "{}: not an image file",
            opts.image.display()
        )));
    }
    let image = std::fs::canonicalize(&opts.image)
        .with_context(|| format!("resolving {}", opts.image.display()))?;
    let seed = match &opts.seed {
        Some(s) if !s.is_file() => {
            return Err(bad_input(format!("--seed {}: no such file", s.display())))
        }
        Some(s) => Some(s.clone()),
        None => default_seed(&image),
    };
    let format = image_format(&image)?;
    let tmp = tempfile::Builder::new()
        .prefix("imgbuild-run-")
        .tempdir()
        .context("creating the run's temporary directory")?;
    let disk = if opts.persistent {
        image.clone()
    } else {
        let overlay = tmp.path().join("overlay.qcow2");
        let mut c = cmd::command(
            "qemu-img",
            ["create", "-q", "-f", "qcow2", "-F", &format, "-b"],
        );
        c.arg(&image).arg(&overlay);
        cmd::run(&mut c).context("creating the overlay")?;
        overlay
    };
    let disk_format = if opts.persistent {
        format.as_str()
    } else {
        "qcow2"
    };
    let ssh_port = port_or_free(opts.ssh_port)?;
    let https_port = port_or_free(opts.https_port)?;
    let firmware = if opts.bios {
        Firmware::Bios
    } else {
        Firmware::Uefi
    };
    let accel = vm::accel()?;
    eprintln!(
        "imgbuild run: {} with {} ({}), {}, {} MiB, {} vCPUs{}",
        image.display(),
        match &seed {
            Some(s) => format!("seed {}", s.display()),
            None => "no seed".into(),
        },
        if opts.persistent {
            "writes go to the image"
        } else {
            "on a throw-away overlay"
        },
        match firmware {
            Firmware::Uefi => "UEFI",
            Firmware::Bios => "BIOS",
        },
        opts.memory_mib,
        opts.cpus,
        match accel {
            Accel::Kvm => ", KVM".to_string(),
            Accel::Tcg =>
                ", TCG (no usable KVM here: slow, a first boot takes minutes)".to_string(),
        }
    );
    let mut machine = Vm::new("/dev/null")
        .firmware(firmware)
        .memory_mib(opts.memory_mib)
        .smp(opts.cpus)
        .cpu("qemu64")
        .disk(&disk, disk_format)
        .arg("-netdev")
        .arg(format!(
            "user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443"
        ))
        .arg("-device")
        .arg("virtio-net-pci,netdev=net0");
    if let Some(s) = &seed {
        machine = machine.cdrom(s);
    }
    let vars = if firmware == Firmware::Uefi {
        let v = tmp.path().join("OVMF_VARS.fd");
        std::fs::copy(vm::OVMF_VARS, &v).with_context(|| {
            format!(
                "copying {} (install the ovmf package, or use --bios)",
                vm::OVMF_VARS
            )
        })?;
        Some(v)
    } else {
        None
    };
    crate::mount::install_interrupt_handler();
    let mut qemu = machine.command(accel, vars.as_deref());
    qemu.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = qemu
        .spawn()
        .with_context(|| format!("starting {} (scripts/install-host-deps.sh)", vm::QEMU))?;
    let (mut ssh_said, mut https_said) = (false, false);
    let mut next_probe = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        if crate::mount::interrupted() {
            eprintln!("imgbuild run: stopping the guest");
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            break child.wait()?;
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + Duration::from_secs(2);
            if !ssh_said && ssh_answers(ssh_port) {
                ssh_said = true;
                eprintln!("imgbuild run: ssh -p {ssh_port} root@localhost");
            }
            if !https_said && https_answers(https_port) {
                https_said = true;
                eprintln!("imgbuild run: https://localhost:{https_port}/");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(tmp);
    if crate::mount::interrupted() {
        eprintln!("imgbuild run: stopped");
        return Ok(());
    }
    if !status.success() {
        bail!("QEMU ended with {status}");
    }
    eprintln!("imgbuild run: the guest powered off");
    Ok(())
}

/// `NAME.seed.iso` beside `NAME.EXT`, when it exists.
fn default_seed(image: &Path) -> Option<PathBuf> {
    let stem = crate::output::Format::stem(image);
    let seed = image.with_file_name(format!("{stem}.seed.iso"));
    seed.is_file().then_some(seed)
}

/// The image's format as `qemu-img info` reads it (its JSON output). A
/// fixed VHD has no header for QEMU to probe: a `.vhd` is read as `vpc`.
/// The archives (OVA, GCE tar) are refused: the disk is inside.
fn image_format(image: &Path) -> anyhow::Result<String> {
    use crate::output::Format;
    let by_name = Format::from_path(image);
    if let Some(f @ (Format::Ova | Format::Gce)) = by_name {
        return Err(bad_input(format!(
            "{}: {f} is an archive, not a disk QEMU boots: boot the disk inside it (the \
             OVA's .vmdk, the GCE tar's disk.raw), or build another format",
            image.display()
        )));
    }
    let mut c = cmd::command("qemu-img", ["info", "--output=json"]);
    if by_name == Some(Format::Vhd) {
        c.args(["-f", "vpc"]);
    }
    c.arg(image);
    let out = cmd::run(&mut c).context("reading the image's format")?;
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("qemu-img info's JSON")?;
    match info["format"].as_str() {
        Some(f @ ("raw" | "qcow2" | "vmdk" | "vpc" | "vhdx" | "vdi")) => Ok(f.to_string()),
        other => Err(bad_input(format!(
            "{}: not a disk image QEMU boots (format {other:?})",
            image.display()
        ))),
    }
}

fn port_or_free(p: Option<u16>) -> anyhow::Result<u16> {
    match p {
        Some(p) => {
            TcpListener::bind(("127.0.0.1", p))
                .map_err(|e| bad_input(format!("port {p} on 127.0.0.1: {e}")))?;
            Ok(p)
        }
        None => Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
    }
}

/// The guest's SSH server sent its banner through the forward.
fn ssh_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    matches!(s.read(&mut buf), Ok(n) if n >= 4 && buf.starts_with(b"SSH-"))
}

/// The guest's web server answered on HTTPS through the forward (curl, when
/// the host has it; any HTTP status counts).
fn https_answers(port: u16) -> bool {
    Command::new("curl")
        .args(["-k", "-s", "-o", "/dev/null", "--max-time", "3"])
        .arg(format!("https://localhost:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
