//! Where the plan puts things on the boot disk: the root partition grown
//! (GPT or MBR), new partitions in the free regions, sector alignment.

use super::*;

pub(super) fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

pub(super) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

pub(super) fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

/// Plans the boot disk's table edits and root growth; returns where the new
/// partitions go as (volume, disk, partition number).
pub(super) fn layout_boot_disk(
    facts: &DiskFacts,
    policy: &StoragePolicy,
    new: &[(Volume, Placement)],
    out: &mut Plan,
) -> Result<Vec<(Volume, PathBuf, u32)>, PlanError> {
    let b = &facts.boot;
    let ss = b.sector_size;
    match &b.table {
        Table::None => {
            if let Some((v, _)) = new.first() {
                return Err(PlanError::NoPartitionTable { label: v.label() });
            }
            if policy.grow_root {
                grow_fs(b, b.sectors * ss, out);
            }
            Ok(vec![])
        }
        Table::Mbr(m) => {
            if let Some((v, _)) = new.first() {
                return Err(PlanError::MbrVolume { label: v.label() });
            }
            if !policy.grow_root {
                return Ok(vec![]);
            }
            let root = m
                .partitions
                .iter()
                .find(|p| p.number == m.root)
                .ok_or(PlanError::NoRoot(m.root))?;
            if root.number > 4 {
                out.notes
                    .push("root is a logical MBR partition; not grown".to_string());
                grow_fs(b, (root.end - root.start + 1) * ss, out);
                return Ok(vec![]);
            }
            let next = m
                .partitions
                .iter()
                .filter(|p| p.start > root.end)
                .map(|p| p.start)
                .min()
                .unwrap_or(b.sectors);
            let mut limit = next - 1;
            let mbr_limit = (root.start + (MBR_MAX_SECTORS - 1) - 1).min(MBR_MAX_SECTORS - 1);
            if limit > mbr_limit {
                out.notes.push(format!(
                    "MBR partition table: root can only reach {} of the {} disk",
                    human((mbr_limit + 1) * ss),
                    human(b.sectors * ss)
                ));
                limit = mbr_limit;
            }
            let mut end = limit;
            if let Some(rs) = policy.root_size {
                end = end.min(root.start + div_ceil(rs, ss) - 1);
            }
            let end = grow_root_to(b, TableKind::Mbr, root, end, out);
            grow_fs(b, (end - root.start + 1) * ss, out);
            Ok(vec![])
        }
        Table::Gpt(g) => layout_gpt(facts, policy, g, new, out),
    }
}

pub(super) fn layout_gpt(
    facts: &DiskFacts,
    policy: &StoragePolicy,
    g: &GptFacts,
    new: &[(Volume, Placement)],
    out: &mut Plan,
) -> Result<Vec<(Volume, PathBuf, u32)>, PlanError> {
    let b = &facts.boot;
    let ss = b.sector_size;
    let align = (MIB / ss).max(1);
    let last_lba = b.sectors - 1;
    let last_usable = last_lba - g.array_sectors - 1;
    if !g.primary_ok {
        out.actions.push(Action::RepairPrimaryGpt {
            disk: b.path.clone(),
        });
    }
    if g.backup_lba != last_lba {
        out.actions.push(Action::RelocateBackupGpt {
            disk: b.path.clone(),
            from_lba: g.backup_lba,
            to_lba: last_lba,
        });
    }
    let root = g
        .partitions
        .iter()
        .find(|p| p.number == g.root)
        .ok_or(PlanError::NoRoot(g.root))?;
    let next_start = g
        .partitions
        .iter()
        .filter(|p| p.start > root.end)
        .map(|p| p.start)
        .min();
    if next_start.is_some() {
        out.notes.push(format!(
            "root (partition {}) is not the last partition; it can only grow into the space before the next one",
            root.number
        ));
    }
    let region_end = next_start.map_or(last_usable, |s| s - 1);
    let min_start = align_up(root.end + 1, align);

    let rest: Vec<&(Volume, Placement)> =
        new.iter().filter(|(_, p)| *p == Placement::Rest).collect();
    if rest.len() > 1 {
        return Err(PlanError::TwoRest);
    }
    let mut free_numbers = (1..=g.entries).filter(|n| g.partitions.iter().all(|p| p.number != *n));
    let mut placed: Vec<(Volume, u64, u64)> = Vec::new();
    let mut elsewhere: Vec<(u64, u64)> = free_regions(g, last_usable, root.end, region_end, align);

    // Sized volumes at the end of the space after root, data before volatile.
    let mut cursor = region_end + 1;
    for (v, p) in new.iter().rev() {
        let Placement::Size(bytes) = p else { continue };
        let size = div_ceil(*bytes, ss);
        let start = cursor.checked_sub(size).map(|s| align_down(s, align));
        match start {
            Some(s) if s >= min_start => {
                placed.push((*v, s, s + size - 1));
                cursor = s;
            }
            _ => {
                // First fit in another free region of the disk.
                let slot = elsewhere
                    .iter_mut()
                    .find(|(s, e)| *e >= *s && e - s + 1 >= size);
                match slot {
                    Some((s, e)) => {
                        placed.push((*v, *s, *s + size - 1));
                        *s = align_up(*s + size, align);
                        let _ = e;
                    }
                    None => {
                        let free_after_root = (cursor.saturating_sub(min_start)) * ss;
                        let free = elsewhere
                            .iter()
                            .map(|(s, e)| (e + 1).saturating_sub(*s) * ss)
                            .fold(free_after_root, u64::max);
                        return Err(PlanError::TooBig {
                            label: v.label(),
                            want: *bytes,
                            free,
                        });
                    }
                }
            }
        }
    }

    // Root.
    let mut root_limit = cursor - 1;
    let mut root_want = root_limit;
    if let Some((v, _)) = rest.first() {
        let reserve = div_ceil(MIN_REST, ss);
        let max = cursor
            .checked_sub(reserve)
            .map(|s| align_down(s, align))
            .filter(|s| *s >= min_start);
        match max {
            Some(s) => root_limit = root_limit.min(s - 1),
            None => {
                return Err(PlanError::RestTooSmall {
                    label: v.label(),
                    free: cursor.saturating_sub(min_start) * ss,
                })
            }
        }
        root_want = root.end;
    }
    if let Some(rs) = policy.root_size {
        root_want = root.start + div_ceil(rs, ss) - 1;
        if root_want < root.end {
            out.notes.push(format!(
                "root is already {}, more than root_size {}; it is never shrunk",
                human((root.end - root.start + 1) * ss),
                human(rs)
            ));
        }
    }
    let root_end = if policy.grow_root {
        grow_root_to(b, TableKind::Gpt, root, root_want.min(root_limit), out)
    } else {
        root.end
    };
    if let Some((v, _)) = rest.first() {
        let start = align_up(root_end + 1, align);
        let end = cursor - 1;
        if end < start || (end - start + 1) * ss < MIN_REST {
            return Err(PlanError::RestTooSmall {
                label: v.label(),
                free: (end + 1).saturating_sub(start) * ss,
            });
        }
        placed.push((*v, start, end));
    }
    if policy.grow_root {
        grow_fs(b, (root_end - root.start + 1) * ss, out);
    }

    let mut created = Vec::new();
    for (v, _) in new {
        let (_, start, end) = *placed
            .iter()
            .find(|(pv, _, _)| pv == v)
            .expect("every new volume was placed");
        let number = free_numbers
            .next()
            .ok_or(PlanError::NoFreeEntry { label: v.label() })?;
        out.actions.push(Action::CreatePartition {
            disk: b.path.clone(),
            number,
            start,
            end,
            volume: *v,
        });
        created.push((*v, b.path.clone(), number));
    }
    Ok(created)
}

/// Free, aligned regions of the GPT other than the one right after root.
pub(super) fn free_regions(
    g: &GptFacts,
    last_usable: u64,
    root_end: u64,
    region_end: u64,
    align: u64,
) -> Vec<(u64, u64)> {
    let mut parts: Vec<(u64, u64)> = g.partitions.iter().map(|p| (p.start, p.end)).collect();
    parts.sort();
    let mut out = Vec::new();
    let mut pos = g.first_usable;
    for (s, e) in parts
        .iter()
        .copied()
        .chain([(last_usable + 1, last_usable)])
    {
        if s > pos {
            let (a, b) = (align_up(pos, align), s - 1);
            let is_root_region = pos == root_end + 1 && b == region_end;
            if a <= b && !is_root_region {
                out.push((a, b));
            }
        }
        pos = pos.max(e + 1);
    }
    out
}

/// Plans growing `root` to `want_end` when that gains at least [`SLACK`];
/// returns the root's end after the plan.
pub(super) fn grow_root_to(
    b: &BootDisk,
    table: TableKind,
    root: &Part,
    want_end: u64,
    out: &mut Plan,
) -> u64 {
    if want_end > root.end && (want_end - root.end) * b.sector_size >= SLACK {
        out.actions.push(Action::GrowPartition {
            disk: b.path.clone(),
            table,
            number: root.number,
            start: root.start,
            from_end: root.end,
            to_end: want_end,
        });
        want_end
    } else {
        root.end
    }
}

pub(super) fn grow_fs(b: &BootDisk, device_bytes: u64, out: &mut Plan) {
    match b.root_fs_bytes {
        Some(fs) if fs + SLACK <= device_bytes => out.actions.push(Action::GrowExt4 {
            device: b.root_device.clone(),
            from_bytes: fs,
            to_bytes: device_bytes,
        }),
        Some(_) => {}
        None => out
            .notes
            .push("root filesystem is not ext4; it is not grown".to_string()),
    }
}
