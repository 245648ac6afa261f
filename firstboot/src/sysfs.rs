//! Block devices as the kernel sees them: `/proc/self/mountinfo` for what is
//! mounted where (by major:minor), `/sys/dev/block/MAJ:MIN` and `/sys/block`
//! for names, partition numbers, parent disks and sizes.
//!
//! No device name is ever taken apart or put together as a string: the
//! parent of a partition is the sysfs directory that contains it, its number
//! is its `partition` file, and its node is `/dev/<kernel name>` (devtmpfs
//! names nodes after the kernel name). So vda3, sda3 and nvme0n1p3 are alike.
//!
//! All paths come from a [`System`], so tests run on a fake tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel's views live (the real ones, or a test's fake tree).
#[derive(Clone, Debug)]
pub struct System {
    pub sys: PathBuf,
    pub mountinfo: PathBuf,
    pub dev: PathBuf,
    /// `/proc/meminfo` (the sizing check).
    pub meminfo: PathBuf,
}

impl System {
    pub fn real() -> Self {
        System {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            dev: "/dev".into(),
            meminfo: "/proc/meminfo".into(),
        }
    }
}

/// A block device known to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`vda3`).
    pub name: String,
    pub major: u32,
    pub minor: u32,
    /// Partition number, for partitions.
    pub partition: Option<u32>,
    /// Kernel name of the disk holding this partition.
    pub parent: Option<String>,
    /// Size in bytes (sysfs counts 512-byte units whatever the sector size).
    pub bytes: u64,
    /// First byte, for partitions.
    pub start_bytes: u64,
    pub read_only: bool,
    /// Removable media, CD-ROMs: never a target.
    pub removable: bool,
}

/// One line of mountinfo, the parts we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLine {
    pub major: u32,
    pub minor: u32,
    pub mountpoint: PathBuf,
    pub fstype: String,
}

/// Parses mountinfo (see proc(5)); the mount point's octal escapes are undone.
pub fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || sep + 1 >= fields.len() {
            continue;
        }
        let Some((ma, mi)) = fields[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        out.push(MountLine {
            major,
            minor,
            mountpoint: PathBuf::from(seeds::mountinfo::unescape(fields[4])),
            fstype: fields[sep + 1].to_string(),
        });
    }
    out
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(p)?.trim().to_string())
}

fn read_u64(p: &Path) -> io::Result<u64> {
    read_trim(p)?
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display())))
}

fn with_path(p: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

impl System {
    /// The current mounts.
    pub fn mounts(&self) -> io::Result<Vec<MountLine>> {
        let text = fs::read_to_string(&self.mountinfo).map_err(with_path(&self.mountinfo))?;
        Ok(parse_mountinfo(&text))
    }

    /// The device node of a kernel name.
    pub fn node(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// The block device behind `major:minor`.
    pub fn by_devno(&self, major: u32, minor: u32) -> io::Result<BlockDev> {
        let link = self.sys.join(format!("dev/block/{major}:{minor}"));
        let dir = fs::canonicalize(&link).map_err(with_path(&link))?;
        self.read_dev(&dir)
    }

    fn read_dev(&self, dir: &Path) -> io::Result<BlockDev> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other(format!("{}: no device name", dir.display())))?
            .to_string();
        let devno = read_trim(&dir.join("dev")).map_err(with_path(dir))?;
        let (major, minor) = devno
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| io::Error::other(format!("{}/dev: bad {devno:?}", dir.display())))?;
        let partition = match read_u64(&dir.join("partition")) {
            Ok(n) => Some(n as u32),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let parent = if partition.is_some() {
            dir.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .map(str::to_string)
        } else {
            None
        };
        let bytes = read_u64(&dir.join("size"))? * 512;
        let start_bytes = if partition.is_some() {
            read_u64(&dir.join("start"))? * 512
        } else {
            0
        };
        let read_only = read_u64(&dir.join("ro")).unwrap_or(0) != 0;
        let removable = read_u64(&dir.join("removable")).unwrap_or(0) != 0;
        Ok(BlockDev {
            name,
            major,
            minor,
            partition,
            parent,
            bytes,
            start_bytes,
            read_only,
            removable,
        })
    }

    /// Whole disks (`/sys/block/*`), without loop, ram and zram devices
    /// and without hidden disks, sorted by name. A hidden disk has no device
    /// number and no node: NVMe multipath's per-path `nvmeXcYnZ` beside its
    /// namespace's `nvmeXnZ` (Ubuntu's kernels, QEMU's and real NVMe).
    pub fn disks(&self) -> io::Result<Vec<BlockDev>> {
        let dir = self.sys.join("block");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(with_path(&dir))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let real = fs::canonicalize(e.path())?;
            if !real.join("dev").exists() {
                continue;
            }
            out.push(self.read_dev(&real)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The partitions the kernel knows on `disk` (by kernel name), by number.
    pub fn partitions(&self, disk: &str) -> io::Result<Vec<BlockDev>> {
        let dir = fs::canonicalize(self.sys.join("block").join(disk))?;
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)? {
            let e = e?;
            if e.path().join("partition").is_file() {
                out.push(self.read_dev(&e.path())?);
            }
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    /// The logical sector size of a disk.
    pub fn sector_size(&self, disk: &str) -> io::Result<u64> {
        read_u64(
            &self
                .sys
                .join("block")
                .join(disk)
                .join("queue/logical_block_size"),
        )
    }

    /// The block device mounted at `/`.
    pub fn root(&self) -> io::Result<(BlockDev, String)> {
        let mounts = self.mounts()?;
        let m = mounts
            .iter()
            .rev()
            .find(|m| m.mountpoint == Path::new("/"))
            .ok_or_else(|| io::Error::other("no mount at / in mountinfo"))?;
        if m.major == 0 {
            return Err(io::Error::other(format!(
                "the root filesystem ({}) is not on a block device",
                m.fstype
            )));
        }
        Ok((self.by_devno(m.major, m.minor)?, m.fstype.clone()))
    }
}

#[cfg(test)]
pub mod fake {
    //! A fake sysfs tree laid out like the kernel's.
    use super::*;
    use std::os::unix::fs::symlink;

    pub struct FakeSys {
        pub dir: tempfile::TempDir,
    }

    impl Default for FakeSys {
        fn default() -> Self {
            Self::new()
        }
    }

    impl FakeSys {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for d in [
                "sys/class/block",
                "sys/block",
                "sys/dev/block",
                "sys/devices/virtual",
                "dev",
                "proc",
            ] {
                fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            fs::write(dir.path().join("proc/mountinfo"), "").unwrap();
            FakeSys { dir }
        }

        pub fn system(&self) -> System {
            System {
                sys: self.dir.path().join("sys"),
                mountinfo: self.dir.path().join("proc/mountinfo"),
                dev: self.dir.path().join("dev"),
                meminfo: self.dir.path().join("proc/meminfo"),
            }
        }

        /// Adds a disk under a PCI-like device path; sizes in 512-byte units.
        pub fn disk(&self, name: &str, devno: (u32, u32), sectors512: u64, ss: u64) {
            let d = self
                .dir
                .path()
                .join(format!("sys/devices/pci0000:00/virtio/block/{name}"));
            fs::create_dir_all(d.join("queue")).unwrap();
            fs::write(d.join("dev"), format!("{}:{}\n", devno.0, devno.1)).unwrap();
            fs::write(d.join("size"), format!("{sectors512}\n")).unwrap();
            fs::write(d.join("ro"), "0\n").unwrap();
            fs::write(d.join("removable"), "0\n").unwrap();
            fs::write(d.join("queue/logical_block_size"), format!("{ss}\n")).unwrap();
            symlink(&d, self.dir.path().join("sys/block").join(name)).unwrap();
            symlink(&d, self.dir.path().join("sys/class/block").join(name)).unwrap();
            symlink(
                &d,
                self.dir
                    .path()
                    .join(format!("sys/dev/block/{}:{}", devno.0, devno.1)),
            )
            .unwrap();
        }

        pub fn partition(
            &self,
            disk: &str,
            name: &str,
            number: u32,
            devno: (u32, u32),
            start512: u64,
            sectors512: u64,
        ) {
            let d = self
                .dir
                .path()
                .join(format!("sys/devices/pci0000:00/virtio/block/{disk}/{name}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("dev"), format!("{}:{}\n", devno.0, devno.1)).unwrap();
            fs::write(d.join("size"), format!("{sectors512}\n")).unwrap();
            fs::write(d.join("start"), format!("{start512}\n")).unwrap();
            fs::write(d.join("partition"), format!("{number}\n")).unwrap();
            fs::write(d.join("ro"), "0\n").unwrap();
            symlink(
                &d,
                self.dir
                    .path()
                    .join(format!("sys/dev/block/{}:{}", devno.0, devno.1)),
            )
            .unwrap();
            symlink(&d, self.dir.path().join("sys/class/block").join(name)).unwrap();
        }

        pub fn mountinfo(&self, text: &str) {
            fs::write(self.dir.path().join("proc/mountinfo"), text).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeSys;
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo(
            "22 1 252:3 / / rw,relatime shared:1 - ext4 /dev/vda3 rw\n\
             30 22 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n\
             40 22 259:2 / /mnt/with\\040space rw - ext4 /dev/nvme0n1p2 rw\n\
             41 22 8:1 / /x rw master:3 foo:2 - xfs /dev/sda1 rw\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].major, m[0].minor), (252, 3));
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[2].mountpoint, Path::new("/mnt/with space"));
        assert_eq!(m[3].fstype, "xfs");
    }

    #[test]
    fn root_partition_and_its_disk() {
        for (disk, part) in [("vda", "vda3"), ("nvme0n1", "nvme0n1p3"), ("sda", "sda3")] {
            let f = FakeSys::new();
            f.disk(disk, (259, 0), 20_971_520, 512);
            f.partition(disk, part, 3, (259, 3), 413_696, 4_000_000);
            f.mountinfo("22 1 259:3 / / rw - ext4 /dev/root rw\n");
            let sys = f.system();
            let (root, fstype) = sys.root().unwrap();
            assert_eq!(fstype, "ext4");
            assert_eq!(root.name, part);
            assert_eq!(root.partition, Some(3));
            assert_eq!(root.parent.as_deref(), Some(disk));
            assert_eq!(root.start_bytes, 413_696 * 512);
            let disks = sys.disks().unwrap();
            assert_eq!(disks.len(), 1);
            assert_eq!(disks[0].bytes, 20_971_520 * 512);
            assert_eq!(sys.partitions(disk).unwrap()[0].name, part);
            assert_eq!(sys.sector_size(disk).unwrap(), 512);
        }
    }

    #[test]
    fn hidden_nvme_path_disk_is_not_a_disk() {
        let f = FakeSys::new();
        f.disk("nvme0n1", (259, 0), 20_971_520, 512);
        // The per-path node: in /sys/block, with a size, without `dev`.
        f.disk("nvme0c0n1", (259, 9), 20_971_520, 512);
        let hidden = f.dir.path().join("sys/block/nvme0c0n1");
        fs::remove_file(fs::canonicalize(&hidden).unwrap().join("dev")).unwrap();
        let names: Vec<String> = f
            .system()
            .disks()
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["nvme0n1"]);
    }

    #[test]
    fn root_not_on_a_block_device() {
        let f = FakeSys::new();
        f.mountinfo("22 1 0:21 / / rw - btrfs /dev/root rw\n");
        let err = f.system().root().unwrap_err();
        assert!(err.to_string().contains("not on a block device"), "{err}");
    }
}
