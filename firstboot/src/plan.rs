//! The storage planner: disk facts in, actions out.
//!
//! [`plan`] is a pure function of [`DiskFacts`] (what the partition table,
//! sysfs, the superblocks, the mount table and fstab say right now) and the
//! env's [`StoragePolicy`]. It does no I/O, so every layout can be tested in
//! a table, and because the facts are read afresh on every boot the agent
//! converges: an interrupted boot leaves facts from which the next plan does
//! exactly what is still missing, and a finished layout plans nothing.
//!
//! Rules, in the order they are applied:
//!
//! - **Volumes** (`ecs-data` → `/data`, `ecs-volatile` → `/volatile`): with
//!   `ignore`, a directory on the root filesystem. Otherwise an existing
//!   filesystem with the label is used (exactly one, else an error listing
//!   them). A volume that a crashed boot left half made — a boot-disk
//!   partition named after the volume without a filesystem carrying its label,
//!   or a whole disk whose filesystem has the *pending* label — is formatted
//!   again. Else it is created as the env says: `size`/`rest` in the boot
//!   disk's free space (GPT only), `device` on a whole disk that carries no
//!   signature at all and is not the boot disk.
//! - **Primary GPT**: rewritten from the backup when only the backup is
//!   readable.
//! - **Backup GPT header**: moved to the last sector when the disk grew.
//! - **Root**: grown into the free space right after it, up to `root_size`
//!   when set, leaving room for the new sized volumes (placed at the end of
//!   that space, in the order data, volatile); a `rest` volume takes what is
//!   left after root, so with `rest` and no `root_size` root does not grow.
//!   Growth below [`SLACK`] is not worth a partition-table write.
//! - **Root filesystem**: grown when it is smaller than its partition (also
//!   after a boot that grew the partition and crashed before `resize2fs`).

use std::fmt;
use std::path::{Path, PathBuf};

mod layout;

use self::layout::*;

/// 1 MiB: alignment of new partitions, and the smallest growth worth doing.
pub const MIB: u64 = 1 << 20;
/// Growth below this is not done (no partition-table write for crumbs).
pub const SLACK: u64 = MIB;
/// The smallest `rest` volume worth creating.
pub const MIN_REST: u64 = 16 * MIB;
/// MBR partitions cannot address beyond 2^32 sectors.
const MBR_MAX_SECTORS: u64 = 1 << 32;

/// The two volumes the appliance expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Volume {
    Data,
    Volatile,
}

impl Volume {
    pub const ALL: [Volume; 2] = [Volume::Data, Volume::Volatile];

    /// The env key (`appliance.storage.<key>`).
    pub fn key(self) -> &'static str {
        match self {
            Volume::Data => "data",
            Volume::Volatile => "volatile",
        }
    }

    /// The filesystem label (and GPT partition name) of the finished volume.
    pub fn label(self) -> &'static str {
        match self {
            Volume::Data => "ecs-data",
            Volume::Volatile => "ecs-volatile",
        }
    }

    /// The label a volume carries between `mkfs` and the moment it is
    /// complete (ext4 labels hold 16 bytes; `ecs-volatile.new` is 16).
    pub fn pending_label(self) -> &'static str {
        match self {
            Volume::Data => "ecs-data.new",
            Volume::Volatile => "ecs-volatile.new",
        }
    }

    /// Where the volume is mounted (relative to the system root).
    pub fn mountpoint(self) -> &'static str {
        match self {
            Volume::Data => "/data",
            Volume::Volatile => "/volatile",
        }
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the disks look like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFacts {
    pub boot: BootDisk,
    /// Every whole disk other than the boot disk.
    pub disks: Vec<Disk>,
    /// Every device (disk or partition) holding a filesystem with a label.
    pub filesystems: Vec<Filesystem>,
    /// Mounted filesystems (device normalised to `/dev/<kernel name>`).
    pub mounts: Vec<MountFact>,
    /// Mount points that /etc/fstab already names.
    pub fstab: Vec<PathBuf>,
}

/// The disk the root filesystem lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootDisk {
    pub path: PathBuf,
    pub sector_size: u64,
    /// Size of the disk in sectors of `sector_size`.
    pub sectors: u64,
    /// The root filesystem's device (a partition of `path`, or `path` itself).
    pub root_device: PathBuf,
    /// Size of the root filesystem in bytes, when it is ext4 (the only kind
    /// the agent grows).
    pub root_fs_bytes: Option<u64>,
    pub table: Table,
}

/// The boot disk's partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    Gpt(GptFacts),
    Mbr(MbrFacts),
    /// The root filesystem covers the whole disk.
    None,
}

impl Table {
    /// The root partition's entry (`None` without a table, or when the
    /// table has no entry of the root's number).
    pub fn root_partition(&self) -> Option<&Part> {
        let (partitions, root) = match self {
            Table::Gpt(t) => (&t.partitions, t.root),
            Table::Mbr(t) => (&t.partitions, t.root),
            Table::None => return None,
        };
        partitions.iter().find(|p| p.number == root)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptFacts {
    pub first_usable: u64,
    /// Where the backup header is now (the last sector unless the disk grew).
    pub backup_lba: u64,
    /// False when only the backup table is readable (a primary torn by a
    /// crash mid-write; the backup then already holds the new table).
    pub primary_ok: bool,
    /// Sectors taken by one copy of the partition entry array.
    pub array_sectors: u64,
    /// Number of entries the table has room for.
    pub entries: u32,
    pub partitions: Vec<Part>,
    /// The root partition's number.
    pub root: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrFacts {
    pub partitions: Vec<Part>,
    pub root: u32,
}

/// A used partition-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    /// First and last sector (inclusive).
    pub start: u64,
    pub end: u64,
    /// GPT partition name (empty on MBR).
    pub name: String,
    /// Signatures found on the partition (when the kernel knows it).
    pub signatures: Vec<Signature>,
}

/// A whole disk other than the boot disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub bytes: u64,
    /// Whatever libblkid recognised on the disk itself.
    pub signatures: Vec<Signature>,
    /// Partitions the kernel knows on it.
    pub partitions: u32,
    pub read_only: bool,
}

/// One thing found on a device: a filesystem, partition table, RAID member...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// libblkid's name: `ext4`, `gpt`, `dos`, `LVM2_member`, `crypto_LUKS`, `swap`...
    pub kind: String,
    pub label: Option<String>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{} (label {l:?})", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    pub device: PathBuf,
    pub fstype: String,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountFact {
    pub mountpoint: PathBuf,
    pub device: PathBuf,
}

/// The env's storage settings, in the planner's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePolicy {
    pub grow_root: bool,
    /// Upper bound for the root partition, in bytes.
    pub root_size: Option<u64>,
    pub data: VolumePolicy,
    pub volatile: VolumePolicy,
}

impl StoragePolicy {
    fn volume(&self, v: Volume) -> &VolumePolicy {
        match v {
            Volume::Data => &self.data,
            Volume::Volatile => &self.volatile,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumePolicy {
    /// No volume: a directory on the root filesystem.
    Ignore,
    /// A volume; where to create it when no filesystem has its label.
    Use(Option<Placement>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A new partition of this many bytes in the boot disk's free space.
    Size(u64),
    /// A new partition with the boot disk's free space left after root.
    Rest,
    /// A whole blank disk.
    Device(PathBuf),
}

/// Which partition table an action edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    Mbr,
}

/// A device that may not have a node yet when the plan is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An existing device node (a whole disk, or a partition the kernel knows).
    Device(PathBuf),
    /// Partition `number` of `disk` (created by this plan, or left by a
    /// crashed boot): the executor finds or adds its device.
    Partition { disk: PathBuf, number: u32 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Device(p) => write!(f, "{}", p.display()),
            Target::Partition { disk, number } => {
                write!(f, "partition {number} of {}", disk.display())
            }
        }
    }
}

/// One step that changes something. Sectors are in the disk's sector size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rewrite the primary GPT from the valid backup at the disk's end.
    RepairPrimaryGpt { disk: PathBuf },
    /// Move the backup GPT header and entry array to the disk's last sectors.
    RelocateBackupGpt {
        disk: PathBuf,
        from_lba: u64,
        to_lba: u64,
    },
    /// Move a partition's last sector (start unchanged).
    GrowPartition {
        disk: PathBuf,
        table: TableKind,
        number: u32,
        start: u64,
        from_end: u64,
        to_end: u64,
    },
    /// Grow a mounted ext4 filesystem to fill its device (`resize2fs`).
    GrowExt4 {
        device: PathBuf,
        from_bytes: u64,
        to_bytes: u64,
    },
    /// Add a GPT entry named after the volume (Linux filesystem type).
    CreatePartition {
        disk: PathBuf,
        number: u32,
        start: u64,
        end: u64,
        volume: Volume,
    },
    /// `mkfs.ext4` with the pending label, then set the final label.
    Format { volume: Volume, target: Target },
    /// Mount the volume's filesystem at its mount point.
    Mount { volume: Volume, target: Target },
    /// Add the volume's line to /etc/fstab.
    Persist { volume: Volume },
    /// `ignore`: make sure the mount point is a directory on the root fs.
    Directory { volume: Volume },
}

impl Action {
    /// Whether the action writes a partition table.
    pub fn edits_table(&self) -> bool {
        matches!(
            self,
            Action::RepairPrimaryGpt { .. }
                | Action::RelocateBackupGpt { .. }
                | Action::GrowPartition { .. }
                | Action::CreatePartition { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RepairPrimaryGpt { disk } => {
                write!(
                    f,
                    "rewrite the primary GPT of {} from its backup",
                    disk.display()
                )
            }
            Action::RelocateBackupGpt {
                disk,
                from_lba,
                to_lba,
            } => write!(
                f,
                "move backup GPT of {} from sector {from_lba} to {to_lba}",
                disk.display()
            ),
            Action::GrowPartition {
                disk,
                number,
                from_end,
                to_end,
                ..
            } => write!(
                f,
                "grow partition {number} of {} (end sector {from_end} -> {to_end})",
                disk.display()
            ),
            Action::GrowExt4 {
                device,
                from_bytes,
                to_bytes,
            } => write!(
                f,
                "grow ext4 on {} from {} to {}",
                device.display(),
                human(*from_bytes),
                human(*to_bytes)
            ),
            Action::CreatePartition {
                disk,
                number,
                start,
                end,
                volume,
            } => write!(
                f,
                "create partition {number} of {} named {volume} (sectors {start}..={end})",
                disk.display()
            ),
            Action::Format { volume, target } => write!(f, "format {target} as ext4 {volume}"),
            Action::Mount { volume, target } => {
                write!(f, "mount {target} ({volume}) at {}", volume.mountpoint())
            }
            Action::Persist { volume } => {
                write!(f, "add {volume} at {} to /etc/fstab", volume.mountpoint())
            }
            Action::Directory { volume } => {
                write!(
                    f,
                    "use directory {} on the root filesystem",
                    volume.mountpoint()
                )
            }
        }
    }
}

/// The planner's result: what to do, and what is worth telling about what
/// will not be done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
}

/// Why no plan can satisfy the env on these disks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "no filesystem labelled {label} exists and appliance.storage.{key} does not say where to \
         create one: set appliance.storage.{key} to {{size: 50G}}, {{size: rest}} or \
         {{device: /dev/vdb}}, or set appliance.storage.ignore.{key}: true"
    )]
    NoVolume {
        label: &'static str,
        key: &'static str,
    },
    #[error("{} filesystems are labelled {label}: {}; exactly one is allowed (relabel or wipe the others)", .devices.len(), list(.devices))]
    DuplicateLabel {
        label: &'static str,
        devices: Vec<PathBuf>,
    },
    #[error("{label} wants {} but the boot disk has only {} free", human(*.want), human(*.free))]
    TooBig {
        label: &'static str,
        want: u64,
        free: u64,
    },
    #[error("{label}: size: rest leaves only {} free on the boot disk (at least {} needed)", human(*.free), human(MIN_REST))]
    RestTooSmall { label: &'static str, free: u64 },
    #[error("both data and volatile ask for size: rest; only one volume can take the rest")]
    TwoRest,
    #[error("{label}: device {} is not blank: it carries {found}; refusing to format it", .device.display())]
    NotBlank {
        label: &'static str,
        device: PathBuf,
        found: String,
    },
    #[error("{label}: device {} is the boot disk; give a separate blank disk or use size:", .device.display())]
    DeviceIsBootDisk {
        label: &'static str,
        device: PathBuf,
    },
    #[error("{label}: device {} is not a whole disk on this machine (disks: {})", .device.display(), list(.known))]
    NoSuchDevice {
        label: &'static str,
        device: PathBuf,
        known: Vec<PathBuf>,
    },
    #[error("{label}: device {} is read-only", .device.display())]
    ReadOnly {
        label: &'static str,
        device: PathBuf,
    },
    #[error("data and volatile both name device {}", .device.display())]
    SameDevice { device: PathBuf },
    #[error("{label}: the boot disk has no partition table (root is a whole-disk filesystem), so no partition can be made; use device: or ignore")]
    NoPartitionTable { label: &'static str },
    #[error("{label}: the boot disk has an MBR partition table; new volumes are only made on GPT disks; use device: or ignore")]
    MbrVolume { label: &'static str },
    #[error("{mountpoint} is already a mount of {}, not of the {label} filesystem on {}", .mounted.display(), .device.display())]
    MountpointBusy {
        label: &'static str,
        mountpoint: &'static str,
        mounted: PathBuf,
        device: PathBuf,
    },
    #[error("the GPT of the boot disk has no free entry for {label}")]
    NoFreeEntry { label: &'static str },
    #[error("root partition {0} is not in the boot disk's partition table")]
    NoRoot(u32),
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes as a short 1024-based figure: `7.8GiB`, `512MiB`, `0B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 100.0 || (v - v.round()).abs() < 0.05 {
        format!("{}{}", v.round() as u64, UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// How a volume will be provided.
#[derive(Debug)]
enum Resolved {
    Directory,
    Existing(PathBuf),
    /// Half made by an interrupted boot: format again.
    Resume(Target),
    NewOnDisk(PathBuf),
    NewInFreeSpace(Placement),
}

/// Works out what to do. See the module documentation for the rules.
pub fn plan(facts: &DiskFacts, policy: &StoragePolicy) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut resolved = Vec::new();
    for v in Volume::ALL {
        resolved.push((v, resolve(facts, policy, v)?));
    }
    if let [(_, Resolved::NewOnDisk(a)), (_, Resolved::NewOnDisk(b))] = &resolved[..] {
        if a == b {
            return Err(PlanError::SameDevice { device: a.clone() });
        }
    }
    let new_space: Vec<(Volume, Placement)> = resolved
        .iter()
        .filter_map(|(v, r)| match r {
            Resolved::NewInFreeSpace(p) => Some((*v, p.clone())),
            _ => None,
        })
        .collect();
    let created = layout_boot_disk(facts, policy, &new_space, &mut out)?;

    for (v, r) in resolved {
        let target = match r {
            Resolved::Directory => {
                out.actions.push(Action::Directory { volume: v });
                continue;
            }
            Resolved::Existing(dev) => Target::Device(dev),
            Resolved::Resume(t) => {
                out.notes.push(format!(
                    "{v}: {t} was left unfinished by an earlier boot; formatting it again"
                ));
                out.actions.push(Action::Format {
                    volume: v,
                    target: t.clone(),
                });
                t
            }
            Resolved::NewOnDisk(dev) => {
                let t = Target::Device(dev);
                out.actions.push(Action::Format {
                    volume: v,
                    target: t.clone(),
                });
                t
            }
            Resolved::NewInFreeSpace(_) => {
                let (disk, number) = created
                    .iter()
                    .find(|(cv, _, _)| *cv == v)
                    .map(|(_, d, n)| (d.clone(), *n))
                    .expect("layout places every new volume or fails");
                let t = Target::Partition { disk, number };
                out.actions.push(Action::Format {
                    volume: v,
                    target: t.clone(),
                });
                t
            }
        };
        mount_actions(facts, v, target, &mut out)?;
    }
    Ok(out)
}

fn mount_actions(
    facts: &DiskFacts,
    v: Volume,
    target: Target,
    out: &mut Plan,
) -> Result<(), PlanError> {
    let mp = Path::new(v.mountpoint());
    match facts.mounts.iter().rev().find(|m| m.mountpoint == mp) {
        Some(m) => match &target {
            Target::Device(d) if *d == m.device => {}
            _ => {
                return Err(PlanError::MountpointBusy {
                    label: v.label(),
                    mountpoint: v.mountpoint(),
                    mounted: m.device.clone(),
                    device: match &target {
                        Target::Device(d) => d.clone(),
                        Target::Partition { disk, .. } => disk.clone(),
                    },
                })
            }
        },
        None => out.actions.push(Action::Mount { volume: v, target }),
    }
    if !facts.fstab.iter().any(|p| p == mp) {
        out.actions.push(Action::Persist { volume: v });
    }
    Ok(())
}

fn resolve(facts: &DiskFacts, policy: &StoragePolicy, v: Volume) -> Result<Resolved, PlanError> {
    let placement = match policy.volume(v) {
        VolumePolicy::Ignore => return Ok(Resolved::Directory),
        VolumePolicy::Use(p) => p,
    };
    let labelled: Vec<&Filesystem> = facts
        .filesystems
        .iter()
        .filter(|f| f.label == v.label())
        .collect();
    match labelled.as_slice() {
        [one] => return Ok(Resolved::Existing(one.device.clone())),
        [] => {}
        many => {
            return Err(PlanError::DuplicateLabel {
                label: v.label(),
                devices: many.iter().map(|f| f.device.clone()).collect(),
            })
        }
    }
    // A boot-disk partition we created whose mkfs did not complete.
    if let Table::Gpt(g) = &facts.boot.table {
        if let Some(p) = g.partitions.iter().find(|p| p.name == v.label()) {
            let foreign: Vec<&Signature> = p
                .signatures
                .iter()
                .filter(|s| s.label.as_deref() != Some(v.pending_label()))
                .collect();
            if let Some(s) = foreign.first() {
                return Err(PlanError::NotBlank {
                    label: v.label(),
                    device: PathBuf::from(format!(
                        "partition {} of {}",
                        p.number,
                        facts.boot.path.display()
                    )),
                    found: s.to_string(),
                });
            }
            return Ok(Resolved::Resume(Target::Partition {
                disk: facts.boot.path.clone(),
                number: p.number,
            }));
        }
    }
    match placement {
        None => Err(PlanError::NoVolume {
            label: v.label(),
            key: v.key(),
        }),
        Some(Placement::Device(dev)) => {
            if dev.starts_with(&facts.boot.path) {
                return Err(PlanError::DeviceIsBootDisk {
                    label: v.label(),
                    device: dev.clone(),
                });
            }
            if *dev == facts.boot.root_device {
                return Err(PlanError::DeviceIsBootDisk {
                    label: v.label(),
                    device: dev.clone(),
                });
            }
            let Some(disk) = facts.disks.iter().find(|d| d.path == *dev) else {
                return Err(PlanError::NoSuchDevice {
                    label: v.label(),
                    device: dev.clone(),
                    known: facts.disks.iter().map(|d| d.path.clone()).collect(),
                });
            };
            if disk.read_only {
                return Err(PlanError::ReadOnly {
                    label: v.label(),
                    device: dev.clone(),
                });
            }
            let sigs = &disk.signatures;
            if sigs.len() == 1
                && sigs[0].kind == "ext4"
                && sigs[0].label.as_deref() == Some(v.pending_label())
                && disk.partitions == 0
            {
                return Ok(Resolved::Resume(Target::Device(dev.clone())));
            }
            if !sigs.is_empty() || disk.partitions > 0 {
                let mut found: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
                if disk.partitions > 0 {
                    found.push(format!("{} partition(s)", disk.partitions));
                }
                return Err(PlanError::NotBlank {
                    label: v.label(),
                    device: dev.clone(),
                    found: found.join(", "),
                });
            }
            Ok(Resolved::NewOnDisk(dev.clone()))
        }
        Some(p) => Ok(Resolved::NewInFreeSpace(p.clone())),
    }
}

#[cfg(test)]
mod tests;
