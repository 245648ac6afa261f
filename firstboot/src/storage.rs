//! Steps 2 and 3 of the first boot, grow and volumes: gather the facts
//! (under the boot disk's lock), plan, execute, log.
//!
//! Execution order: every partition-table edit in one commit
//! ([`crate::table`]), the kernel told with BLKPG, root grown with
//! `resize2fs`, then per volume format (pending label → label), mount,
//! fstab line. The lock is held throughout, so udev probes the new
//! partitions only once they are finished.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use seeds::cmd;

use crate::cmdline::Cmdline;
use crate::facts::{self, Gathered, Opener};
use crate::log::{Log, Timer};
use crate::plan::{self, human, Action, Plan, StoragePolicy, Table, Target, Volume};
use crate::sysfs::System;
use crate::table::{self, DiskFile};
use crate::volumes::{self, Dest, Mounter};

/// What the storage steps need from the machine; tests swap every part.
pub struct Host<'a> {
    pub sys: System,
    /// The system root (`/`; a temp dir in tests): mount points and /etc.
    pub root: PathBuf,
    pub open: Opener<'a>,
    pub mounter: &'a dyn Mounter,
    pub cmdline: Cmdline,
}

/// What the storage steps did, for the summary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes the root partition grew by.
    pub grew: u64,
    /// Per volume: `created`, `resumed`, `mounted`, `ok` or `dir`.
    pub volumes: Vec<(Volume, &'static str)>,
    /// Number of actions done.
    pub actions: usize,
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Runs the storage steps to convergence.
pub fn converge(h: &Host, policy: &StoragePolicy, log: &mut Log) -> Result<Outcome> {
    let t = Timer::start();
    let etc = under(&h.root, "/etc");
    let mut g = facts::gather(&h.sys, &etc, h.open)?;
    let found = describe_facts(&g);
    let plan = plan::plan(&g.facts, policy).map_err(|e| anyhow!(e))?;
    log.step(
        "storage-facts",
        &found,
        &format!("planned {} actions", plan.actions.len()),
        t.took(),
    );
    for n in &plan.notes {
        log.note("storage", n);
    }
    execute(h, &mut g, &plan, log)
}

fn describe_facts(g: &Gathered) -> String {
    let b = &g.facts.boot;
    let table = match &b.table {
        Table::Gpt(_) => "gpt",
        Table::Mbr(_) => "mbr",
        Table::None => "none",
    };
    let mut s = format!(
        "disk {} {} {table}, root {}",
        b.path.display(),
        human(b.sectors * b.sector_size),
        b.root_device.display()
    );
    if let Some(fs) = b.root_fs_bytes {
        s.push_str(&format!(" ext4 {}", human(fs)));
    }
    for f in &g.facts.filesystems {
        if Volume::ALL.iter().any(|v| f.label == v.label()) {
            s.push_str(&format!(", {} on {}", f.label, f.device.display()));
        }
    }
    s
}

fn execute(h: &Host, g: &mut Gathered, plan: &Plan, log: &mut Log) -> Result<Outcome> {
    let mut out = Outcome {
        actions: plan.actions.len(),
        ..Outcome::default()
    };
    let ss = g.facts.boot.sector_size;
    let table_actions: Vec<&Action> = plan.actions.iter().filter(|a| a.edits_table()).collect();
    if !table_actions.is_empty() {
        let t = Timer::start();
        check_free_space(g, &table_actions)?;
        table::commit(&mut g.disk, &table_actions).context("editing the partition table")?;
        let known = known_partitions(h, g);
        table::tell_kernel(&g.disk, &table_actions, &known)?;
        let did: Vec<String> = table_actions.iter().map(|a| a.to_string()).collect();
        log.step("table", "", &did.join("; "), t.took());
    }
    for a in &plan.actions {
        if let Action::GrowPartition {
            from_end, to_end, ..
        } = a
        {
            out.grew += (to_end - from_end) * ss;
        }
    }
    sync_root_size(h, g)?;
    if !table_actions.is_empty() {
        // Only after a table write: the boot after the power cut goes on.
        h.cmdline.pause_at("grow");
    }

    let mut state: Vec<(Volume, &'static str)> = Vec::new();
    let mut set = |v: Volume, s: &'static str| match state.iter_mut().find(|(x, _)| *x == v) {
        Some((_, cur)) if *cur == "created" || *cur == "resumed" => {}
        Some((_, cur)) => *cur = s,
        None => state.push((v, s)),
    };
    for a in &plan.actions {
        let t = Timer::start();
        match a {
            Action::GrowExt4 {
                device,
                from_bytes,
                to_bytes,
            } => {
                grow_ext4(g, device, *to_bytes)?;
                log.step(
                    "grow-fs",
                    &format!(
                        "ext4 {} on a {} device",
                        human(*from_bytes),
                        human(*to_bytes)
                    ),
                    &format!("grew {} to fill it", device.display()),
                    t.took(),
                );
            }
            Action::Format { volume, target } => {
                let dest = resolve(h, g, target)?;
                let resumed = plan.notes.iter().any(|n| n.starts_with(volume.label()));
                volumes::make_pending(*volume, &dest)?;
                if !resumed {
                    // Only on creation: the boot after the power cut resumes.
                    h.cmdline.pause_at("volumes");
                }
                volumes::commit_label(*volume, &dest)?;
                set(*volume, if resumed { "resumed" } else { "created" });
                log.step(
                    "volume",
                    &format!("no {volume}"),
                    &format!("formatted {target} as ext4 {volume}"),
                    t.took(),
                );
            }
            Action::Mount { volume, target } => {
                let dev = match resolve(h, g, target)? {
                    Dest::Node(p) => p,
                    Dest::Offset { image, offset, .. } => {
                        PathBuf::from(format!("{}?offset={offset}", image.display()))
                    }
                };
                let mp = under(&h.root, volume.mountpoint());
                volumes::ensure_dir(&h.root, volume.mountpoint())?;
                h.mounter.mount(&dev, &mp)?;
                set(*volume, "mounted");
                log.step(
                    "volume",
                    &format!("{volume} on {}", dev.display()),
                    &format!("mounted at {}", volume.mountpoint()),
                    t.took(),
                );
            }
            Action::Persist { volume } => {
                let fstype = g
                    .facts
                    .filesystems
                    .iter()
                    .find(|f| f.label == volume.label())
                    .map_or("ext4", |f| f.fstype.as_str());
                volumes::persist(&h.root, *volume, fstype)?;
                set(*volume, "mounted");
                log.step(
                    "volume",
                    &format!("no fstab line for {}", volume.mountpoint()),
                    &format!("added LABEL={volume} to /etc/fstab"),
                    t.took(),
                );
            }
            Action::Directory { volume } => {
                let made = volumes::ensure_dir(&h.root, volume.mountpoint())?;
                set(*volume, "dir");
                if made {
                    log.step(
                        "volume",
                        &format!("storage.ignore.{}", volume.key()),
                        &format!("made directory {}", volume.mountpoint()),
                        t.took(),
                    );
                }
            }
            _ => {}
        }
    }
    for v in Volume::ALL {
        if !state.iter().any(|(x, _)| *x == v) {
            state.push((v, "ok"));
        }
    }
    state.sort();
    out.volumes = state;
    Ok(out)
}

/// Refuses to create a partition over free space that still carries a
/// signature (a filesystem whose partition entry was deleted, say): it is
/// never formatted over. Nothing has been written when this fails.
fn check_free_space(g: &Gathered, actions: &[&Action]) -> Result<()> {
    let ss = g.disk.sector_size;
    for a in actions {
        if let Action::CreatePartition {
            start, end, volume, ..
        } = a
        {
            let found =
                crate::probe::region_signature(&g.disk.path, start * ss, (end - start + 1) * ss)
                    .map_err(|e| anyhow!("probing the free space for {volume}: {e}"))?;
            if let Some(sig) = found {
                bail!(
                    "{volume}: the free space at sectors {start}..={end} of {} carries {sig} \
                     (a filesystem whose partition was deleted?); refusing to create {volume} \
                     over it — wipe it (wipefs) or use device:",
                    g.disk.path.display()
                );
            }
        }
    }
    Ok(())
}

/// Makes the kernel's size of the root partition match the table (after a
/// crash between the table write and BLKPG, then a restart in the same
/// boot), so `resize2fs` sees the whole partition.
fn sync_root_size(h: &Host, g: &mut Gathered) -> Result<()> {
    if !g.disk.is_block_device() {
        return Ok(());
    }
    let Table::Gpt(t) = &g.facts.boot.table else {
        return Ok(());
    };
    let root = t.root;
    let (start, bytes) = gpt_range(&mut g.disk, root)?;
    let kernel = h
        .sys
        .partitions(&g.disk_name)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.partition == Some(root));
    if let Some(k) = kernel {
        if k.bytes != bytes && k.start_bytes == start {
            crate::blkpg::resize_partition(&g.disk.file, root, start, bytes)
                .context("telling the kernel the root partition's size (BLKPG)")?;
        }
    }
    Ok(())
}

fn known_partitions(h: &Host, g: &Gathered) -> Vec<u32> {
    h.sys
        .partitions(&g.disk_name)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.partition)
        .collect()
}

fn gpt_range(disk: &mut DiskFile, number: u32) -> Result<(u64, u64)> {
    let gpt = disk.read_gpt()?;
    let e = &gpt[number];
    if e.is_unused() {
        bail!(
            "partition {number} of {} is not in the GPT",
            disk.path.display()
        );
    }
    let ss = disk.sector_size;
    Ok((
        e.starting_lba * ss,
        (e.ending_lba - e.starting_lba + 1) * ss,
    ))
}

/// Where a target is: its node (adding the partition to the kernel when it
/// is in the table but unknown, e.g. after a crash in the same boot), or a
/// byte range of an image file in tests.
fn resolve(h: &Host, g: &mut Gathered, target: &Target) -> Result<Dest> {
    match target {
        Target::Device(p) => {
            if !g.disk.is_block_device() {
                if let Some(n) = pseudo_number(&g.disk.path, p) {
                    let (offset, bytes) = gpt_range(&mut g.disk, n)?;
                    return Ok(Dest::Offset {
                        image: g.disk.path.clone(),
                        offset,
                        bytes,
                    });
                }
            }
            Ok(Dest::Node(p.clone()))
        }
        Target::Partition { number, .. } => {
            let (offset, bytes) = gpt_range(&mut g.disk, *number)?;
            if !g.disk.is_block_device() {
                return Ok(Dest::Offset {
                    image: g.disk.path.clone(),
                    offset,
                    bytes,
                });
            }
            if let Some(node) = partition_node(h, g, *number) {
                return Ok(Dest::Node(node));
            }
            crate::blkpg::add_partition(&g.disk.file, *number, offset, bytes)
                .with_context(|| format!("telling the kernel about partition {number} (BLKPG)"))?;
            // devtmpfs creates the node as the partition is added; allow the
            // sysfs entry a moment in case of a slow uevent path.
            for _ in 0..100 {
                if let Some(node) = partition_node(h, g, *number) {
                    if node.exists() {
                        return Ok(Dest::Node(node));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            bail!(
                "partition {number} of {} did not appear",
                g.disk.path.display()
            )
        }
    }
}

fn partition_node(h: &Host, g: &Gathered, number: u32) -> Option<PathBuf> {
    h.sys
        .partitions(&g.disk_name)
        .ok()?
        .iter()
        .find(|p| p.partition == Some(number))
        .map(|p| h.sys.node(&p.name))
}

fn pseudo_number(disk: &Path, p: &Path) -> Option<u32> {
    let s = p.to_str()?;
    let rest = s.strip_prefix(disk.to_str()?)?.strip_prefix('#')?;
    rest.parse().ok()
}

/// `_IOW('f', 16, __u64)`: grow a mounted ext4 to a number of blocks.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the mounted ext4 on `device` to fill the device, in process: the
/// `EXT4_IOC_RESIZE_FS` ioctl on its mount point, which is what `resize2fs`
/// does for a mounted filesystem, without a process to start (slow under
/// emulation). `Ok(false)` when the kernel cannot do it this way or the
/// filesystem is not mounted (then `resize2fs` is asked, which knows the
/// older ioctls and offline resizing).
fn grow_ext4_online(device: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(device)
        .with_context(|| format!("reading {}", device.display()))?
        .rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    // The kernel's own view of mounts (not a test's stand-in).
    let Some(mountpoint) = System::real()
        .mounts()
        .context("reading /proc/self/mountinfo")?
        .into_iter()
        .find(|m| m.major == major && m.minor == minor)
        .map(|m| m.mountpoint)
    else {
        // Not mounted (tests): resize2fs grows it offline.
        return Ok(false);
    };
    let dir =
        fs::File::open(&mountpoint).with_context(|| format!("opening {}", mountpoint.display()))?;
    // SAFETY: fstatvfs fills the struct it is given; the fd is open.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", mountpoint.display()));
    }
    let block = st.f_bsize as u64;
    let dev_bytes = {
        use std::io::Seek;
        let mut f =
            fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
        f.seek(std::io::SeekFrom::End(0))?
    };
    let blocks: u64 = dev_bytes / block;
    // SAFETY: the ioctl reads one u64 from the pointer, which outlives it.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks as *const u64) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e).with_context(|| {
            format!(
                "growing the root filesystem on {} online to {blocks} blocks \
                 (EXT4_IOC_RESIZE_FS on {}, as resize2fs does)",
                device.display(),
                mountpoint.display()
            )
        }),
    }
}

fn grow_ext4(g: &mut Gathered, device: &Path, to_bytes: u64) -> Result<()> {
    let mut c = if g.disk.is_block_device() {
        // Online: the mounted filesystem fills its (just grown) partition.
        if grow_ext4_online(device)? {
            return Ok(());
        }
        cmd::command("resize2fs", [device.as_os_str()])
    } else {
        let name = match &g.facts.boot.table {
            Table::None => g.disk.path.display().to_string(),
            table => {
                let root = table.root_partition().context("root")?;
                format!(
                    "{}?offset={}",
                    g.disk.path.display(),
                    root.start * g.disk.sector_size
                )
            }
        };
        cmd::command("resize2fs", [name, format!("{}K", to_bytes / 1024)])
    };
    // resize2fs cuts a regular file to the filesystem's size, ignoring the
    // offset; on images (tests) keep what lies beyond and put it back.
    let saved = if g.disk.is_block_device() {
        None
    } else {
        Some(save_data_extents(&g.disk.file)?)
    };
    cmd::run(&mut c).context("growing the root filesystem")?;
    if let Some((len, extents)) = saved {
        use std::os::unix::fs::FileExt;
        let f = &g.disk.file;
        let now = f.metadata()?.len();
        if now != len {
            f.set_len(len)?;
            for (off, bytes) in extents {
                if off + bytes.len() as u64 > now {
                    f.write_all_at(&bytes, off)?;
                }
            }
        }
    }
    Ok(())
}

/// The length of an image and its data extents (sparse holes skipped).
/// An image's length and its data extents (offset, bytes).
type Extents = (u64, Vec<(u64, Vec<u8>)>);

fn save_data_extents(f: &std::fs::File) -> Result<Extents> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    loop {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut buf = vec![0u8; (end - data) as usize];
        f.read_exact_at(&mut buf, data as u64)?;
        out.push((data as u64, buf));
        pos = end;
        if end as u64 >= len {
            break;
        }
    }
    Ok((len, out))
}

#[cfg(test)]
mod tests;
