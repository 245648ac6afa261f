//! Table-driven tests of the planner, plus two properties checked on every
//! layout that plans successfully:
//!
//! - idempotent: applying the plan to the facts and planning again gives no
//!   actions;
//! - crash-safe: stopping after any action (the partition-table edits count
//!   as one, as the executor commits them in one GPT write; a format may stop
//!   half way, leaving the pending label) and planning again from the facts
//!   reaches the same end state.

use super::*;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const SS: u64 = 512;

fn dev(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn part(number: u32, start: u64, end: u64, name: &str) -> Part {
    Part {
        number,
        start,
        end,
        name: name.into(),
        signatures: vec![],
    }
}

/// The builder's layout: BIOS boot, ESP, root; a GPT image of `image` bytes
/// whose root fills it, on a disk of `disk` bytes.
fn gpt_disk(image: u64, disk: u64) -> DiskFacts {
    let image_sectors = image / SS;
    let last_usable = image_sectors - 34;
    let parts = vec![
        part(1, 2048, 4095, "bios"),
        part(2, 4096, 413_695, "esp"),
        part(3, 413_696, last_usable, "root"),
    ];
    let root_bytes = (last_usable - 413_696 + 1) * SS;
    DiskFacts {
        boot: BootDisk {
            path: dev("/dev/vda"),
            sector_size: SS,
            sectors: disk / SS,
            root_device: dev("/dev/vda3"),
            root_fs_bytes: Some(root_bytes / 4096 * 4096),
            table: Table::Gpt(GptFacts {
                first_usable: 34,
                backup_lba: image_sectors - 1,
                primary_ok: true,
                array_sectors: 32,
                entries: 128,
                partitions: parts,
                root: 3,
            }),
        },
        disks: vec![],
        filesystems: vec![],
        mounts: vec![],
        fstab: vec![],
    }
}

fn ignore_all() -> StoragePolicy {
    StoragePolicy {
        grow_root: true,
        root_size: None,
        data: VolumePolicy::Ignore,
        volatile: VolumePolicy::Ignore,
    }
}

fn with(data: VolumePolicy, volatile: VolumePolicy) -> StoragePolicy {
    StoragePolicy {
        data,
        volatile,
        ..ignore_all()
    }
}

fn size(b: u64) -> VolumePolicy {
    VolumePolicy::Use(Some(Placement::Size(b)))
}

fn rest() -> VolumePolicy {
    VolumePolicy::Use(Some(Placement::Rest))
}

fn device(p: &str) -> VolumePolicy {
    VolumePolicy::Use(Some(Placement::Device(dev(p))))
}

fn gpt(f: &DiskFacts) -> &GptFacts {
    match &f.boot.table {
        Table::Gpt(g) => g,
        _ => panic!("not gpt"),
    }
}

fn gpt_mut(f: &mut DiskFacts) -> &mut GptFacts {
    match &mut f.boot.table {
        Table::Gpt(g) => g,
        _ => panic!("not gpt"),
    }
}

fn blank_disk(path: &str, bytes: u64) -> Disk {
    Disk {
        path: dev(path),
        bytes,
        signatures: vec![],
        partitions: 0,
        read_only: false,
    }
}

fn sig(kind: &str, label: Option<&str>) -> Signature {
    Signature {
        kind: kind.into(),
        label: label.map(Into::into),
    }
}

fn labelled(device: &str, label: &str) -> Filesystem {
    Filesystem {
        device: dev(device),
        fstype: "ext4".into(),
        label: label.into(),
    }
}

fn partition_device(disk: &Path, number: u32) -> PathBuf {
    PathBuf::from(format!("{}{number}", disk.display()))
}

fn target_device(t: &Target) -> PathBuf {
    match t {
        Target::Device(d) => d.clone(),
        Target::Partition { disk, number } => partition_device(disk, *number),
    }
}

/// What the executor does to the facts, in the planner's terms.
fn apply(f: &mut DiskFacts, a: &Action, half_done: bool) {
    match a {
        Action::RepairPrimaryGpt { .. } => gpt_mut(f).primary_ok = true,
        Action::RelocateBackupGpt { to_lba, .. } => gpt_mut(f).backup_lba = *to_lba,
        Action::GrowPartition { number, to_end, .. } => {
            let parts = match &mut f.boot.table {
                Table::Gpt(g) => &mut g.partitions,
                Table::Mbr(m) => &mut m.partitions,
                Table::None => panic!("no table"),
            };
            parts.iter_mut().find(|p| p.number == *number).unwrap().end = *to_end;
        }
        Action::GrowExt4 { to_bytes, .. } => f.boot.root_fs_bytes = Some(*to_bytes),
        Action::CreatePartition {
            number,
            start,
            end,
            volume,
            ..
        } => gpt_mut(f)
            .partitions
            .push(part(*number, *start, *end, volume.label())),
        Action::Format { volume, target } => {
            let label = if half_done {
                volume.pending_label()
            } else {
                volume.label()
            };
            let s = vec![sig("ext4", Some(label))];
            match target {
                Target::Partition { number, .. } => {
                    gpt_mut(f)
                        .partitions
                        .iter_mut()
                        .find(|p| p.number == *number)
                        .unwrap()
                        .signatures = s
                }
                Target::Device(d) => {
                    if let Some(disk) = f.disks.iter_mut().find(|x| x.path == *d) {
                        disk.signatures = s;
                    } else if let Table::Gpt(g) = &mut f.boot.table {
                        if let Some(p) = g
                            .partitions
                            .iter_mut()
                            .find(|p| partition_device(&f.boot.path, p.number) == *d)
                        {
                            p.signatures = s;
                        }
                    }
                }
            }
            if !half_done {
                let d = target_device(target);
                f.filesystems.retain(|x| x.device != d);
                f.filesystems
                    .push(labelled(d.to_str().unwrap(), volume.label()));
            }
        }
        Action::Mount { volume, target } => f.mounts.push(MountFact {
            mountpoint: volume.mountpoint().into(),
            device: target_device(target),
        }),
        Action::Persist { volume } => f.fstab.push(volume.mountpoint().into()),
        Action::Directory { .. } => {}
    }
}

fn apply_all(f: &mut DiskFacts, actions: &[Action]) {
    for a in actions {
        apply(f, a, false);
    }
}

/// Checks idempotence and convergence after a crash at every point.
fn check_properties(name: &str, facts: &DiskFacts, policy: &StoragePolicy) {
    let first = plan(facts, policy).unwrap();
    let mut done = facts.clone();
    apply_all(&mut done, &first.actions);
    let again = plan(&done, policy).unwrap();
    assert!(
        again
            .actions
            .iter()
            .all(|a| matches!(a, Action::Directory { .. })),
        "{name}: not idempotent: second plan {:?}",
        again.actions
    );
    // Crash points: before each action that is not part of the table commit,
    // and in the middle of each format.
    let n = first.actions.len();
    for cut in 0..=n {
        if cut > 0 && cut < n && first.actions[cut].edits_table() {
            continue; // inside the single GPT write
        }
        for half in [false, true] {
            let mut crashed = facts.clone();
            apply_all(&mut crashed, &first.actions[..cut]);
            if half {
                match first.actions.get(cut) {
                    Some(a @ Action::Format { .. }) => apply(&mut crashed, a, true),
                    _ => continue,
                }
            }
            let resumed = plan(&crashed, policy)
                .unwrap_or_else(|e| panic!("{name}: after crash at {cut} (half={half}): {e}"));
            apply_all(&mut crashed, &resumed.actions);
            assert_eq!(
                (
                    gpt_or_none(&crashed),
                    &crashed.filesystems,
                    crashed.boot.root_fs_bytes
                ),
                (
                    gpt_or_none(&done),
                    &done.filesystems,
                    done.boot.root_fs_bytes
                ),
                "{name}: crash at {cut} (half={half}) converged elsewhere"
            );
            let mut mounts = crashed.mounts.clone();
            mounts.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
            let mut want = done.mounts.clone();
            want.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
            assert_eq!(mounts, want, "{name}: mounts after crash at {cut}");
        }
    }
}

fn gpt_or_none(f: &DiskFacts) -> Option<Vec<(u32, u64, u64, String)>> {
    match &f.boot.table {
        Table::Gpt(g) => {
            let mut v: Vec<_> = g
                .partitions
                .iter()
                .map(|p| (p.number, p.start, p.end, p.name.clone()))
                .collect();
            v.sort();
            Some(v)
        }
        _ => None,
    }
}

/// Short names of the actions, for compact expectations.
fn kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::RepairPrimaryGpt { .. } => "repair".into(),
            Action::RelocateBackupGpt { .. } => "relocate".into(),
            Action::GrowPartition { number, .. } => format!("grow{number}"),
            Action::GrowExt4 { .. } => "resize2fs".into(),
            Action::CreatePartition { number, volume, .. } => {
                format!("create{number}:{}", volume.key())
            }
            Action::Format { volume, .. } => format!("format:{}", volume.key()),
            Action::Mount { volume, .. } => format!("mount:{}", volume.key()),
            Action::Persist { volume } => format!("persist:{}", volume.key()),
            Action::Directory { volume } => format!("dir:{}", volume.key()),
        })
        .collect()
}

struct Case {
    name: &'static str,
    facts: DiskFacts,
    policy: StoragePolicy,
    want: Result<&'static [&'static str], &'static str>,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.push(Case {
        name: "exact fit: nothing to do",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: ignore_all(),
        want: Ok(&["dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "enlarged disk, stale backup header",
        facts: gpt_disk(2 * GIB, 10 * GIB),
        policy: ignore_all(),
        want: Ok(&["relocate", "grow3", "resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "16 TiB sparse",
        facts: gpt_disk(2 * GIB, 16 * TIB),
        policy: with(size(50 * GIB), size(2 * GIB)),
        want: Ok(&[
            "relocate",
            "grow3",
            "resize2fs",
            "create4:data",
            "create5:volatile",
            "format:data",
            "mount:data",
            "persist:data",
            "format:volatile",
            "mount:volatile",
            "persist:volatile",
        ]),
    });
    v.push(Case {
        name: "primary torn by a crash: repaired from the backup, then grown",
        facts: {
            let mut f = gpt_disk(2 * GIB, 10 * GIB);
            let g = gpt_mut(&mut f);
            g.primary_ok = false;
            g.backup_lba = 10 * GIB / SS - 1;
            f
        },
        policy: ignore_all(),
        want: Ok(&["repair", "grow3", "resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "grow_root false only moves the header",
        facts: gpt_disk(2 * GIB, 10 * GIB),
        policy: StoragePolicy {
            grow_root: false,
            ..ignore_all()
        },
        want: Ok(&["relocate", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "less than 1 MiB of slack: nothing",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            let g = gpt_mut(&mut f);
            g.partitions[2].end -= 2047;
            f
        },
        policy: ignore_all(),
        want: Ok(&["dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "exactly 1 MiB of slack: grow",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            gpt_mut(&mut f).partitions[2].end -= 2048;
            f.boot.root_fs_bytes = Some(f.boot.root_fs_bytes.unwrap() - 2 * MIB);
            f
        },
        policy: ignore_all(),
        want: Ok(&["grow3", "resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "partition grown, filesystem not (crash before resize2fs)",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.boot.root_fs_bytes = Some(GIB);
            f
        },
        policy: ignore_all(),
        want: Ok(&["resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "root not last: grows into the gap only",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            let g = gpt_mut(&mut f);
            g.partitions[2].end = 2_000_000;
            g.partitions.push(part(4, 3_000_000, 4_000_000, "swap"));
            f.boot.root_fs_bytes = Some((2_000_000 - 413_696 + 1) * SS);
            f
        },
        policy: ignore_all(),
        want: Ok(&["grow3", "resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "root not last, no gap: nothing",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            let g = gpt_mut(&mut f);
            g.partitions[2].end = 2_000_000;
            g.partitions.push(part(4, 2_000_001, 4_000_000, "swap"));
            f.boot.root_fs_bytes = Some((2_000_000 - 413_696 + 1) * SS);
            f
        },
        policy: ignore_all(),
        want: Ok(&["dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "whole-disk filesystem grows the fs only",
        facts: {
            let mut f = gpt_disk(2 * GIB, 4 * GIB);
            f.boot.table = Table::None;
            f.boot.root_device = dev("/dev/vda");
            f.boot.root_fs_bytes = Some(2 * GIB);
            f
        },
        policy: ignore_all(),
        want: Ok(&["resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "whole-disk filesystem cannot hold a sized volume",
        facts: {
            let mut f = gpt_disk(2 * GIB, 4 * GIB);
            f.boot.table = Table::None;
            f
        },
        policy: with(size(GIB), VolumePolicy::Ignore),
        want: Err("no partition table"),
    });
    v.push(Case {
        name: "MBR disk grows root",
        facts: mbr_disk(2 * GIB, 8 * GIB),
        policy: ignore_all(),
        want: Ok(&["grow1", "resize2fs", "dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "MBR disk refuses new volumes",
        facts: mbr_disk(2 * GIB, 8 * GIB),
        policy: with(size(GIB), VolumePolicy::Ignore),
        want: Err("MBR"),
    });
    v.push(Case {
        name: "label present, not mounted",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.disks.push(Disk {
                signatures: vec![sig("ext4", Some("ecs-data"))],
                ..blank_disk("/dev/vdb", 4 * GIB)
            });
            f.filesystems.push(labelled("/dev/vdb", "ecs-data"));
            f
        },
        policy: with(device("/dev/vdb"), VolumePolicy::Ignore),
        want: Ok(&["mount:data", "persist:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "label present, mounted and persisted: nothing",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.filesystems.push(labelled("/dev/vdb", "ecs-data"));
            f.mounts.push(MountFact {
                mountpoint: "/data".into(),
                device: dev("/dev/vdb"),
            });
            f.fstab.push("/data".into());
            f
        },
        policy: with(VolumePolicy::Use(None), VolumePolicy::Ignore),
        want: Ok(&["dir:volatile"]),
    });
    v.push(Case {
        name: "label present wins over the plan",
        facts: {
            let mut f = gpt_disk(2 * GIB, 10 * GIB);
            f.filesystems.push(labelled("/dev/vdc", "ecs-volatile"));
            f
        },
        policy: with(VolumePolicy::Ignore, size(GIB)),
        want: Ok(&[
            "relocate",
            "grow3",
            "resize2fs",
            "dir:data",
            "mount:volatile",
            "persist:volatile",
        ]),
    });
    v.push(Case {
        name: "label duplicated",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.filesystems.push(labelled("/dev/vdb", "ecs-data"));
            f.filesystems.push(labelled("/dev/vdc1", "ecs-data"));
            f
        },
        policy: with(VolumePolicy::Use(None), VolumePolicy::Ignore),
        want: Err("2 filesystems are labelled ecs-data: /dev/vdb, /dev/vdc1"),
    });
    v.push(Case {
        name: "label absent, no plan",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: with(VolumePolicy::Use(None), VolumePolicy::Ignore),
        want: Err("no filesystem labelled ecs-data exists"),
    });
    v.push(Case {
        name: "mount point used by something else",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.filesystems.push(labelled("/dev/vdb", "ecs-data"));
            f.mounts.push(MountFact {
                mountpoint: "/data".into(),
                device: dev("/dev/vdc"),
            });
            f
        },
        policy: with(VolumePolicy::Use(None), VolumePolicy::Ignore),
        want: Err("/data is already a mount of /dev/vdc"),
    });
    v.push(Case {
        name: "blank device is formatted",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.disks.push(blank_disk("/dev/vdb", 4 * GIB));
            f
        },
        policy: with(device("/dev/vdb"), VolumePolicy::Ignore),
        want: Ok(&["format:data", "mount:data", "persist:data", "dir:volatile"]),
    });
    for (kind, label) in [
        ("ext4", Some("home")),
        ("gpt", None),
        ("LVM2_member", None),
        ("crypto_LUKS", None),
        ("linux_raid_member", None),
        ("swap", None),
    ] {
        v.push(Case {
            name: "device carrying a signature is refused",
            facts: {
                let mut f = gpt_disk(2 * GIB, 2 * GIB);
                f.disks.push(Disk {
                    signatures: vec![sig(kind, label)],
                    ..blank_disk("/dev/vdb", 4 * GIB)
                });
                f
            },
            policy: with(device("/dev/vdb"), VolumePolicy::Ignore),
            want: Err("/dev/vdb is not blank"),
        });
    }
    v.push(Case {
        name: "device with partitions is refused",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.disks.push(Disk {
                partitions: 1,
                ..blank_disk("/dev/vdb", 4 * GIB)
            });
            f
        },
        policy: with(device("/dev/vdb"), VolumePolicy::Ignore),
        want: Err("1 partition(s)"),
    });
    v.push(Case {
        name: "device is the boot disk",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: with(device("/dev/vda"), VolumePolicy::Ignore),
        want: Err("is the boot disk"),
    });
    v.push(Case {
        name: "device is the root partition",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: with(device("/dev/vda3"), VolumePolicy::Ignore),
        want: Err("is the boot disk"),
    });
    v.push(Case {
        name: "device unknown",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: with(device("/dev/vdq"), VolumePolicy::Ignore),
        want: Err("not a whole disk on this machine"),
    });
    v.push(Case {
        name: "same device twice",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.disks.push(blank_disk("/dev/vdb", 4 * GIB));
            f
        },
        policy: with(device("/dev/vdb"), device("/dev/vdb")),
        want: Err("both name device /dev/vdb"),
    });
    v.push(Case {
        name: "half-formatted device (pending label) is formatted again",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            f.disks.push(Disk {
                signatures: vec![sig("ext4", Some("ecs-data.new"))],
                ..blank_disk("/dev/vdb", 4 * GIB)
            });
            f
        },
        policy: with(device("/dev/vdb"), VolumePolicy::Ignore),
        want: Ok(&["format:data", "mount:data", "persist:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "volume bigger than the free space",
        facts: gpt_disk(2 * GIB, 10 * GIB),
        policy: with(size(9 * GIB), VolumePolicy::Ignore),
        want: Err("ecs-data wants 9GiB but the boot disk has only 8GiB free"),
    });
    v.push(Case {
        name: "two volumes bigger than the free space",
        facts: gpt_disk(2 * GIB, 10 * GIB),
        policy: with(size(5 * GIB), size(4 * GIB)),
        want: Err("ecs-data wants 5GiB"),
    });
    v.push(Case {
        name: "root_size caps root, volumes at the end",
        facts: gpt_disk(2 * GIB, 100 * GIB),
        policy: StoragePolicy {
            root_size: Some(20 * GIB),
            ..with(size(10 * GIB), VolumePolicy::Ignore)
        },
        want: Ok(&[
            "relocate",
            "grow3",
            "resize2fs",
            "create4:data",
            "format:data",
            "mount:data",
            "persist:data",
            "dir:volatile",
        ]),
    });
    v.push(Case {
        name: "root_size already reached",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: StoragePolicy {
            root_size: Some(GIB),
            ..ignore_all()
        },
        want: Ok(&["dir:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "rest: root stays, data takes the rest, volatile at the end",
        facts: gpt_disk(2 * GIB, 12 * GIB),
        policy: with(rest(), size(2 * GIB)),
        want: Ok(&[
            "relocate",
            "create4:data",
            "create5:volatile",
            "format:data",
            "mount:data",
            "persist:data",
            "format:volatile",
            "mount:volatile",
            "persist:volatile",
        ]),
    });
    v.push(Case {
        name: "rest with root_size",
        facts: gpt_disk(2 * GIB, 12 * GIB),
        policy: StoragePolicy {
            root_size: Some(4 * GIB),
            ..with(rest(), VolumePolicy::Ignore)
        },
        want: Ok(&[
            "relocate",
            "grow3",
            "resize2fs",
            "create4:data",
            "format:data",
            "mount:data",
            "persist:data",
            "dir:volatile",
        ]),
    });
    v.push(Case {
        name: "rest on a full disk",
        facts: gpt_disk(2 * GIB, 2 * GIB),
        policy: with(rest(), VolumePolicy::Ignore),
        want: Err("size: rest leaves only"),
    });
    v.push(Case {
        name: "two rests",
        facts: gpt_disk(2 * GIB, 12 * GIB),
        policy: with(rest(), rest()),
        want: Err("only one volume can take the rest"),
    });
    v.push(Case {
        name: "partition left by a crashed boot is formatted again",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            gpt_mut(&mut f).partitions[2].end -= 2 * GIB / SS / 2;
            let end = gpt(&f).partitions[2].end;
            gpt_mut(&mut f)
                .partitions
                .push(part(4, end + 1, 4_194_270, "ecs-data"));
            f.boot.root_fs_bytes = Some((end - 413_696 + 1) * SS);
            f
        },
        policy: with(size(GIB), VolumePolicy::Ignore),
        want: Ok(&["format:data", "mount:data", "persist:data", "dir:volatile"]),
    });
    v.push(Case {
        name: "partition named ecs-data with a foreign filesystem is refused",
        facts: {
            let mut f = gpt_disk(2 * GIB, 4 * GIB);
            let mut p = part(4, 4_194_304, 6_000_000, "ecs-data");
            p.signatures.push(sig("xfs", Some("other")));
            gpt_mut(&mut f).partitions.push(p);
            f
        },
        policy: with(size(GIB), VolumePolicy::Ignore),
        want: Err("is not blank: it carries xfs"),
    });
    v.push(Case {
        name: "sized volume falls back to a free region before root",
        facts: {
            let mut f = gpt_disk(2 * GIB, 2 * GIB);
            let g = gpt_mut(&mut f);
            g.partitions[2].start = 1_500_000;
            g.partitions[2].end = g.partitions[2].end.min(4_194_270);
            f.boot.root_fs_bytes = Some((4_194_270 - 1_500_000 + 1) * SS);
            f
        },
        policy: with(size(256 * MIB), VolumePolicy::Ignore),
        want: Ok(&[
            "create4:data",
            "format:data",
            "mount:data",
            "persist:data",
            "dir:volatile",
        ]),
    });
    v
}

fn mbr_disk(image: u64, disk: u64) -> DiskFacts {
    let mut f = gpt_disk(image, disk);
    let end = image / SS - 1;
    f.boot.table = Table::Mbr(MbrFacts {
        partitions: vec![part(1, 2048, end, "")],
        root: 1,
    });
    f.boot.root_device = dev("/dev/vda1");
    f.boot.root_fs_bytes = Some((end - 2048 + 1) * SS);
    f
}

#[test]
fn table() {
    for c in cases() {
        let got = plan(&c.facts, &c.policy);
        match (&got, c.want) {
            (Ok(p), Ok(want)) => {
                assert_eq!(kinds(p), want, "{}", c.name);
                check_layout(c.name, &c.facts, p);
                check_properties(c.name, &c.facts, &c.policy);
            }
            (Err(e), Err(want)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(want),
                    "{}: error {msg:?} lacks {want:?}",
                    c.name
                );
            }
            (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
        }
    }
}

/// Whatever the plan, the resulting table is valid: partitions within the
/// usable area, no overlaps, new partitions aligned to 1 MiB.
fn check_layout(name: &str, facts: &DiskFacts, p: &Plan) {
    let mut f = facts.clone();
    apply_all(&mut f, &p.actions);
    let Table::Gpt(g) = &f.boot.table else { return };
    let last_usable = f.boot.sectors - 1 - g.array_sectors - 1;
    let mut parts: Vec<&Part> = g.partitions.iter().collect();
    parts.sort_by_key(|p| p.start);
    for w in parts.windows(2) {
        assert!(w[0].end < w[1].start, "{name}: overlap {:?}", w);
    }
    for p in &parts {
        assert!(
            p.start >= g.first_usable && p.end <= last_usable,
            "{name}: {p:?} outside"
        );
    }
    for a in &p.actions {
        if let Action::CreatePartition { start, .. } = a {
            assert_eq!(start % (MIB / SS), 0, "{name}: unaligned");
        }
    }
}

#[test]
fn sizes_on_an_enlarged_disk() {
    let f = gpt_disk(2 * GIB, 12 * GIB);
    let p = plan(&f, &with(VolumePolicy::Ignore, size(2 * GIB))).unwrap();
    let last_usable = 12 * GIB / SS - 34;
    let create = p
        .actions
        .iter()
        .find_map(|a| match a {
            Action::CreatePartition { start, end, .. } => Some((*start, *end)),
            _ => None,
        })
        .unwrap();
    assert_eq!((create.1 - create.0 + 1) * SS, 2 * GIB, "exact size");
    assert!(last_usable - create.1 < 2048, "at the end of the disk");
    let root_end = p
        .actions
        .iter()
        .find_map(|a| match a {
            Action::GrowPartition { to_end, .. } => Some(*to_end),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        root_end + 1,
        create.0,
        "root fills the space up to the volume"
    );
}

#[test]
fn mbr_is_capped_at_2_tib() {
    let f = mbr_disk(2 * GIB, 3 * TIB);
    let p = plan(&f, &ignore_all()).unwrap();
    let to_end = p
        .actions
        .iter()
        .find_map(|a| match a {
            Action::GrowPartition { to_end, .. } => Some(*to_end),
            _ => None,
        })
        .unwrap();
    assert!(to_end - 2048 < u32::MAX as u64, "size fits 32 bits");
    assert!(to_end < 1 << 32, "end fits 32 bits");
    assert!(p.notes.iter().any(|n| n.contains("MBR")), "{:?}", p.notes);
}

#[test]
fn human_sizes() {
    assert_eq!(human(0), "0B");
    assert_eq!(human(512 * MIB), "512MiB");
    assert_eq!(human(7_800 * MIB), "7.6GiB");
    assert_eq!(human(16 * TIB), "16TiB");
}
