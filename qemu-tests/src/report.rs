//! What the guest reports: one `TEST-RESULT {json}` line on the serial
//! console, written by `ecs-test-report` (a unit of the test layer
//! `qemu-tests/layers/90-test-report`, never in the default image) once the
//! boot settled, read back by the harness.
//!
//! Only test envs with placeholder secrets are ever booted, so the report may
//! carry the contents of `/run/active-env.*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The console line's prefix.
pub const MARKER: &str = "TEST-RESULT ";

/// Files whose facts are reported (contents only for these, up to 64 KiB).
pub const FILES: &[&str] = &[
    "/run/active-env.yml",
    "/run/active-env.env",
    "/run/appliance-failed",
    "/root/.ssh/authorized_keys",
    "/app/.ssh/authorized_keys",
    "/etc/hostname",
    "/run/ecs-appliance/www/startup.html",
    // appliance.extra.packages: the boot tests' package (crate::peers).
    "/usr/share/ecs-test-extra/installed",
    "/etc/fstab",
    "/etc/ssl/certs/ssl-cert-snakeoil.pem",
    // Secrets: facts only, never their content (see is_secret).
    "/etc/ssl/private/ssl-cert-snakeoil.key",
    "/etc/ecs-appliance/tls/server.crt",
    "/etc/ecs-appliance/tls/server.key",
];

/// Files reported without their content: private keys.
pub fn is_secret(path: &str) -> bool {
    path.starts_with("/etc/ssl/private/") || path.ends_with(".key")
}

/// Units whose state is reported (`VERSION` is PostgreSQL's major version).
pub const UNITS: &[&str] = &[
    "ecs-firstboot.service",
    "ecs-appliance.target",
    "appliance-postgresql.service",
    "appliance-snakeoil.service",
    "appliance-tls.service",
    "appliance-ssh-hostkeys.service",
    "appliance-acme.service",
    "appliance-acme.timer",
    "postgresql@VERSION-main.service",
    "nginx.service",
    "appliance.service",
    "appliance-extra-packages.service",
    "appliance-sentry-report.service",
    "appliance-mail.service",
    "postfix@-.service",
    "opendkim.service",
    "appliance-metrics.service",
    "prometheus-node-exporter.service",
    "prometheus-nginx-exporter.service",
    "prometheus-postgres-exporter.service",
    // The guest agents (layer 60-guest-agents): only QEMU's starts here.
    "qemu-guest-agent.service",
    "open-vm-tools.service",
    "hv-kvp-daemon.service",
    "cloud-init-local.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
];

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `uefi` or `bios`.
    pub firmware: String,
    pub kernel_cmdline: String,
    /// The kernel's host name.
    pub hostname: String,
    /// Seconds since the kernel started, when the report was made.
    pub uptime_s: f64,
    /// Path → facts; files that do not exist are absent.
    pub files: BTreeMap<String, FileFact>,
    /// Unit → state; `postgresql@VERSION-main` under its real name.
    pub units: BTreeMap<String, UnitFact>,
    pub root: RootFact,
    /// Mount point (`/data`, `/volatile`) → what is mounted there, if
    /// anything other than the root filesystem.
    pub mounts: BTreeMap<String, MountFact>,
    /// ext2/3/4 filesystems on any block device: label → devices and UUIDs.
    pub ext_labels: BTreeMap<String, Vec<ExtFs>>,
    /// Whole disks (`vda`, `vdb`): size and GPT hashes.
    pub disks: BTreeMap<String, DiskFact>,
    pub postgres: Option<PgFact>,
    /// `cloud-init status` output, when cloud-init is installed.
    pub cloud_init_status: Option<String>,
    /// What `systemd-detect-virt` says (`qemu` under TCG, `kvm` under KVM).
    #[serde(default)]
    pub virt: String,
    /// Problems the reporter met while collecting (never fatal).
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FileFact {
    /// Permission bits, e.g. 0o600.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UnitFact {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    /// CLOCK_MONOTONIC µs (since the kernel started) when the unit became
    /// active; 0 if it never did.
    pub active_enter_us: u64,
    /// When its main process started; 0 if never (the unit did not run).
    pub exec_main_start_us: u64,
}

impl UnitFact {
    /// True when the unit ran or is running (for a oneshot: started once).
    pub fn ever_started(&self) -> bool {
        self.exec_main_start_us > 0 || self.active_enter_us > 0
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RootFact {
    /// The root filesystem's device, e.g. `/dev/vda3`.
    pub source: String,
    /// Its disk, e.g. `vda`.
    pub disk: String,
    pub disk_bytes: u64,
    pub part_start_bytes: u64,
    pub part_bytes: u64,
    /// The filesystem's size (statvfs: blocks × fragment size).
    pub fs_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MountFact {
    pub source: String,
    pub fstype: String,
    /// The filesystem's label and UUID (ext only).
    pub label: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExtFs {
    pub device: String,
    pub uuid: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiskFact {
    pub bytes: u64,
    /// sha256 of LBA 0–33 (protective MBR, GPT header and entries), when
    /// LBA 1 carries a GPT signature.
    pub gpt_primary_sha256: Option<String>,
    /// sha256 of the last 33 sectors (backup entries and header).
    pub gpt_backup_sha256: Option<String>,
    /// The backup header is in the disk's last sector.
    pub gpt_backup_at_end: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PgFact {
    pub data_directory: String,
    /// Databases other than templates and `postgres`.
    pub databases: Vec<String>,
    pub database_owners: BTreeMap<String, String>,
    pub system_identifier: String,
}

/// Finds the report line in a console log and parses it.
pub fn parse(console: &str) -> anyhow::Result<Report> {
    let line = console
        .lines()
        .rev()
        .find_map(|l| l.find(MARKER).map(|i| &l[i + MARKER.len()..]))
        .ok_or_else(|| anyhow::anyhow!("no {MARKER:?} line on the console"))?;
    serde_json::from_str(line.trim())
        .map_err(|e| anyhow::anyhow!("the {MARKER:?} line is not a report ({e}): {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_report_line() {
        let mut r = Report {
            hostname: "x".into(),
            ..Report::default()
        };
        let first = serde_json::to_string(&r).unwrap();
        r.hostname = "y".into();
        let second = serde_json::to_string(&r).unwrap();
        let console = format!("boot\r\n{MARKER}{first}\r\nnoise {MARKER}{second}\r\n[ OK ]\n");
        assert_eq!(parse(&console).unwrap().hostname, "y");
        assert!(parse("nothing").is_err());
        assert!(parse(&format!("{MARKER}{{broken")).is_err());
    }
}
