//! `ecs-test-report`: runs in the guest of a boot test (test layer
//! `90-test-report` only) once the boot settled, collects what the agent and
//! the appliance did, and prints one `TEST-RESULT {json}` line on the serial
//! console. The harness then powers the guest down through QMP.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use qemu_tests::report::{
    is_secret, DiskFact, ExtFs, FileFact, MountFact, PgFact, Report, RootFact, UnitFact, FILES,
    MARKER, UNITS,
};
use sha2::{Digest, Sha256};

const SECTOR: u64 = 512;

fn main() {
    let mut errors = Vec::new();
    let report = collect(&mut errors);
    let line = format!(
        "\n{MARKER}{}\n",
        serde_json::to_string(&report).expect("a report serializes")
    );
    let _ = fs::write("/run/ecs-test-report.json", &line);
    // One write, so nothing else on the console splits the line.
    match fs::OpenOptions::new().write(true).open("/dev/ttyS0") {
        Ok(mut tty) => {
            let _ = tty.write_all(line.as_bytes());
        }
        Err(e) => {
            eprintln!("ecs-test-report: opening /dev/ttyS0: {e}");
            print!("{line}");
        }
    }
}

fn collect(errors: &mut Vec<String>) -> Report {
    let mut r = Report {
        firmware: if Path::new("/sys/firmware/efi").exists() {
            "uefi".into()
        } else {
            "bios".into()
        },
        kernel_cmdline: read_trim("/proc/cmdline"),
        hostname: read_trim("/proc/sys/kernel/hostname"),
        uptime_s: read_trim("/proc/uptime")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
        // Exits 1 (and prints "none") on bare metal.
        virt: run("systemd-detect-virt", &[]).unwrap_or_else(|e| e),
        ..Report::default()
    };
    for f in FILES {
        if let Some(fact) = file_fact(f) {
            r.files.insert((*f).into(), fact);
        }
    }
    let pg_version = pg_version();
    for u in UNITS {
        let name = u.replace("VERSION", pg_version.as_deref().unwrap_or("none"));
        match unit_fact(&name) {
            Ok(Some(f)) => {
                r.units.insert(name, f);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    let mountinfo = read_trim("/proc/self/mountinfo");
    match root_fact(&mountinfo) {
        Ok(root) => r.root = root,
        Err(e) => errors.push(format!("root: {e}")),
    }
    for m in ["/data", "/volatile"] {
        if let Some((source, fstype)) = mount_of(&mountinfo, m) {
            let sb = ext_superblock(&source);
            r.mounts.insert(
                m.into(),
                MountFact {
                    source,
                    fstype,
                    label: sb.as_ref().map(|s| s.0.clone()),
                    uuid: sb.map(|s| s.1),
                },
            );
        }
    }
    if let Ok(entries) = fs::read_dir("/sys/class/block") {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            // No `dev`: a hidden disk (NVMe multipath's per-path node).
            if name.starts_with("sr")
                || name.starts_with("loop")
                || !Path::new(&format!("/sys/class/block/{name}/dev")).exists()
            {
                continue;
            }
            let dev = format!("/dev/{name}");
            if let Some((label, uuid)) = ext_superblock(&dev) {
                r.ext_labels
                    .entry(label)
                    .or_default()
                    .push(ExtFs { device: dev, uuid });
            }
            if !Path::new(&format!("/sys/class/block/{name}/partition")).exists() {
                match disk_fact(&name) {
                    Ok(d) => {
                        r.disks.insert(name, d);
                    }
                    Err(e) => errors.push(format!("disk {name}: {e}")),
                }
            }
        }
    }
    if pg_version.is_some() {
        match pg_fact() {
            Ok(p) => r.postgres = Some(p),
            Err(e) => errors.push(format!("postgres: {e}")),
        }
    }
    if Path::new("/usr/bin/cloud-init").exists() {
        match run("cloud-init", &["status"]) {
            Ok(s) => r.cloud_init_status = Some(s),
            Err(e) => errors.push(format!("cloud-init status: {e}")),
        }
    }
    r.errors = std::mem::take(errors);
    r
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn file_fact(path: &str) -> Option<FileFact> {
    let md = fs::metadata(path).ok()?;
    let content = (md.len() <= 64 * 1024 && !is_secret(path))
        .then(|| fs::read(path).ok())
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Some(FileFact {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.len(),
        content,
    })
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("running {cmd}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() && stdout.is_empty() {
        return Err(format!(
            "{cmd} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(stdout)
}

/// `None` when systemd does not know the unit.
fn unit_fact(unit: &str) -> Result<Option<UnitFact>, String> {
    let out = run(
        "systemctl",
        &[
            "show",
            "-p",
            "LoadState,ActiveState,SubState,Result,ActiveEnterTimestampMonotonic,ExecMainStartTimestampMonotonic",
            unit,
        ],
    )?;
    let mut f = UnitFact::default();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "LoadState" => f.load_state = v.into(),
            "ActiveState" => f.active_state = v.into(),
            "SubState" => f.sub_state = v.into(),
            "Result" => f.result = v.into(),
            "ActiveEnterTimestampMonotonic" => f.active_enter_us = v.parse().unwrap_or(0),
            "ExecMainStartTimestampMonotonic" => f.exec_main_start_us = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok((f.load_state != "not-found").then_some(f))
}

/// (source, fstype) of the mount at `point` (the last one wins).
fn mount_of(mountinfo: &str, point: &str) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mnt = left.split_whitespace().nth(4)?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let source = r.next()?;
        (mnt == point).then(|| (source.to_string(), fstype.to_string()))
    })
}

fn root_fact(mountinfo: &str) -> Result<RootFact, String> {
    let (source, _) = mount_of(mountinfo, "/").ok_or("no / in mountinfo")?;
    let name = Path::new(&source)
        .file_name()
        .ok_or("root source has no name")?
        .to_string_lossy()
        .into_owned();
    // /sys/class/block/vda3 → ../../devices/.../vda/vda3: the parent is the disk.
    let real = fs::canonicalize(format!("/sys/class/block/{name}"))
        .map_err(|e| format!("resolving /sys/class/block/{name}: {e}"))?;
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .ok_or("root partition has no parent disk")?
        .to_string_lossy()
        .into_owned();
    let sectors = |p: String| -> Result<u64, String> {
        read_trim(&p)
            .parse::<u64>()
            .map_err(|_| format!("reading {p}"))
    };
    let st = statvfs("/")?;
    Ok(RootFact {
        disk_bytes: sectors(format!("/sys/class/block/{disk}/size"))? * SECTOR,
        part_start_bytes: sectors(format!("/sys/class/block/{name}/start"))? * SECTOR,
        part_bytes: sectors(format!("/sys/class/block/{name}/size"))? * SECTOR,
        fs_bytes: st,
        source,
        disk,
    })
}

fn statvfs(path: &str) -> Result<u64, String> {
    let c = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, s a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(format!(
            "statvfs {path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(s.f_blocks as u64 * s.f_frsize as u64)
}

/// (label, uuid) of an ext2/3/4 filesystem on `dev`.
fn ext_superblock(dev: &str) -> Option<(String, String)> {
    let mut f = File::open(dev).ok()?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let label = String::from_utf8_lossy(&sb[0x78..0x88])
        .trim_end_matches('\0')
        .to_string();
    let u = &sb[0x68..0x78];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&u[0..4]),
        hex::encode(&u[4..6]),
        hex::encode(&u[6..8]),
        hex::encode(&u[8..10]),
        hex::encode(&u[10..16])
    );
    Some((label, uuid))
}

fn disk_fact(name: &str) -> Result<DiskFact, String> {
    let bytes = read_trim(&format!("/sys/class/block/{name}/size"))
        .parse::<u64>()
        .map_err(|_| "no size".to_string())?
        * SECTOR;
    let mut d = DiskFact {
        bytes,
        ..DiskFact::default()
    };
    let mut f = File::open(format!("/dev/{name}")).map_err(|e| e.to_string())?;
    let mut read = |at: u64, n: u64| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n as usize];
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        f.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(b)
    };
    if bytes < 68 * SECTOR {
        return Ok(d);
    }
    let primary = read(0, 34 * SECTOR)?;
    if &primary[512..520] != b"EFI PART" {
        return Ok(d);
    }
    let backup = read(bytes - 33 * SECTOR, 33 * SECTOR)?;
    d.gpt_backup_at_end = Some(&backup[32 * 512..32 * 512 + 8] == b"EFI PART");
    d.gpt_primary_sha256 = Some(hex::encode(Sha256::digest(&primary)));
    d.gpt_backup_sha256 = Some(hex::encode(Sha256::digest(&backup)));
    Ok(d)
}

fn pg_version() -> Option<String> {
    let mut v: Vec<String> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
    v.pop()
}

fn pg_fact() -> Result<PgFact, String> {
    let psql = |sql: &str| {
        run(
            "runuser",
            &["-u", "postgres", "--", "psql", "-X", "-A", "-t", "-c", sql],
        )
    };
    let mut p = PgFact {
        data_directory: psql("SHOW data_directory")?,
        system_identifier: psql("SELECT system_identifier FROM pg_control_system()")?,
        ..PgFact::default()
    };
    let rows = psql(
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database \
         WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname",
    )?;
    for row in rows.lines() {
        if let Some((db, owner)) = row.split_once('|') {
            p.databases.push(db.into());
            p.database_owners.insert(db.into(), owner.into());
        }
    }
    Ok(p)
}
