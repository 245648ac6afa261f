//! The whole storage pipeline (facts → plan → execute) on a fake sysfs whose
//! disks are sparse image files: the boot disk made by `sgdisk` with an ext4
//! root, enlarged; a second blank disk. Checked with `sgdisk -v`, `blkid -p`
//! and `e2fsck -fn`.

use super::*;
use crate::plan::{Placement, VolumePolicy};
use crate::sysfs::fake::FakeSys;
use crate::testutil::{enlarge, make_gpt_image, sh};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs;

const MIB: u64 = 1 << 20;

#[derive(Default)]
struct RecordingMounter(RefCell<Vec<(PathBuf, PathBuf)>>);

impl Mounter for RecordingMounter {
    fn mount(&self, device: &Path, mountpoint: &Path) -> Result<()> {
        self.0.borrow_mut().push((device.into(), mountpoint.into()));
        Ok(())
    }
}

struct World {
    fake: FakeSys,
    root: PathBuf,
    vda: PathBuf,
    vdb: PathBuf,
}

impl World {
    /// A 64 MiB image (root ext4) enlarged to `disk` bytes, plus a blank
    /// 64 MiB second disk.
    fn new(disk: u64) -> World {
        let fake = FakeSys::new();
        let dev = fake.dir.path().join("dev");
        let vda = dev.join("vda");
        make_gpt_image(&vda, 64 * MIB);
        let mut d = DiskFile::open_image(&vda, 512).unwrap();
        let gpt = d.read_gpt().unwrap();
        drop(d);
        let (s3, e3) = (gpt[3].starting_lba, gpt[3].ending_lba);
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-E",
                &format!("offset={}", s3 * 512),
                vda.to_str().unwrap(),
                &format!("{}k", (e3 - s3).div_ceil(2)),
            ],
        );
        enlarge(&vda, disk);
        fake.disk("vda", (252, 0), disk / 512, 512);
        for n in 1..=3u32 {
            let e = &gpt[n];
            let name = format!("vda{n}");
            fake.partition(
                "vda",
                &name,
                n,
                (252, n),
                e.starting_lba,
                e.ending_lba - e.starting_lba + 1,
            );
            fs::write(dev.join(&name), b"").unwrap();
        }
        let vdb = dev.join("vdb");
        fs::File::create(&vdb).unwrap().set_len(64 * MIB).unwrap();
        fake.disk("vdb", (252, 16), 64 * MIB / 512, 512);
        fake.mountinfo("22 1 252:3 / / rw,relatime shared:1 - ext4 /dev/vda3 rw\n");
        let root = fake.dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/fstab"), "UUID=x / ext4 defaults 0 1\n").unwrap();
        World {
            fake,
            root,
            vda,
            vdb,
        }
    }

    fn converge(
        &self,
        policy: &StoragePolicy,
        cmdline: Cmdline,
    ) -> (Result<Outcome>, Vec<(PathBuf, PathBuf)>) {
        let m = RecordingMounter::default();
        let open = |p: &Path| DiskFile::open_image(p, 512);
        let h = Host {
            sys: self.fake.system(),
            root: self.root.clone(),
            open: &open,
            mounter: &m,
            cmdline,
        };
        let mut log = Log::quiet();
        let r = converge(&h, policy, &mut log);
        (r, m.0.into_inner())
    }

    fn digest(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        for p in [&self.vda, &self.vdb] {
            let f = fs::File::open(p).unwrap();
            let len = f.metadata().unwrap().len();
            // Sparse files: hash the allocated-looking regions cheaply by
            // sampling every MiB's first 64 KiB (tables, superblocks,
            // group descriptors all start there).
            let mut buf = vec![0u8; 64 << 10];
            let mut off = 0;
            while off < len {
                let n = buf.len().min((len - off) as usize);
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf[..n], off).unwrap();
                h.update(&buf[..n]);
                off += MIB;
            }
            let mut tail = vec![0u8; MIB as usize];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, len - MIB).unwrap();
            h.update(&tail);
        }
        h.finalize().to_vec()
    }

    fn gpt(&self) -> gptman::GPT {
        DiskFile::open_image(&self.vda, 512)
            .unwrap()
            .read_gpt()
            .unwrap()
    }

    fn fstab(&self) -> String {
        fs::read_to_string(self.root.join("etc/fstab")).unwrap()
    }
}

fn policy(data: VolumePolicy, volatile: VolumePolicy) -> StoragePolicy {
    StoragePolicy {
        grow_root: true,
        root_size: None,
        data,
        volatile,
    }
}

fn blkid_at(img: &Path, offset: u64) -> String {
    sh(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            img.to_str().unwrap(),
        ],
    )
}

fn fsck_at(img: &Path, offset: u64) {
    sh(
        "e2fsck",
        &["-fn", &format!("{}?offset={offset}", img.display())],
    );
}

#[test]
fn first_boot_then_second_boot() {
    let w = World::new(512 * MIB);
    let p = policy(
        VolumePolicy::Use(Some(Placement::Size(128 * MIB))),
        VolumePolicy::Use(Some(Placement::Device(w.vdb.clone()))),
    );
    let (r, mounts) = w.converge(&p, Cmdline::default());
    let out = r.unwrap();
    assert!(out.grew > 300 * MIB, "{out:?}");
    assert_eq!(
        out.volumes,
        vec![(Volume::Data, "created"), (Volume::Volatile, "created")]
    );
    let out_sg = sh("sgdisk", &["-v", w.vda.to_str().unwrap()]);
    assert!(out_sg.contains("No problems found"), "{out_sg}");
    let gpt = w.gpt();
    assert_eq!(gpt[4].partition_name.as_str(), "ecs-data");
    assert_eq!(
        gpt[3].ending_lba + 1,
        gpt[4].starting_lba,
        "root fills up to data"
    );
    let data_off = gpt[4].starting_lba * 512;
    let b = blkid_at(&w.vda, data_off);
    assert!(
        b.contains("LABEL=ecs-data\n") && b.contains("TYPE=ext4"),
        "{b}"
    );
    fsck_at(&w.vda, data_off);
    // Root grew to its partition.
    let root_off = gpt[3].starting_lba * 512;
    let sb = crate::probe::read_ext4(&w.vda, root_off).unwrap().unwrap();
    assert_eq!(
        sb.bytes / 4096,
        (gpt[3].ending_lba - gpt[3].starting_lba + 1) * 512 / 4096
    );
    fsck_at(&w.vda, root_off);
    let v = sh("blkid", &["-p", "-o", "export", w.vdb.to_str().unwrap()]);
    assert!(v.contains("LABEL=ecs-volatile\n"), "{v}");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().any(|(_, mp)| mp == &w.root.join("data")));
    assert!(w.root.join("volatile").is_dir());
    let fstab = w.fstab();
    assert!(
        fstab.contains("LABEL=ecs-data /data ext4 defaults,nofail 0 2"),
        "{fstab}"
    );
    assert!(
        fstab.contains("LABEL=ecs-volatile /volatile ext4"),
        "{fstab}"
    );

    // Second boot: nothing written to any disk; only mounts again (the fake
    // mount table does not remember them).
    let before = w.digest();
    let fstab_before = w.fstab();
    let (r2, mounts2) = w.converge(&p, Cmdline::default());
    let out2 = r2.unwrap();
    assert_eq!(out2.grew, 0);
    assert_eq!(
        out2.volumes,
        vec![(Volume::Data, "mounted"), (Volume::Volatile, "mounted")]
    );
    assert_eq!(mounts2.len(), 2);
    assert_eq!(w.digest(), before, "second boot wrote to a disk");
    assert_eq!(w.fstab(), fstab_before, "fstab unchanged");
}

#[test]
fn crash_after_table_and_after_mkfs_converge() {
    // Reference: an uninterrupted run.
    let p = policy(
        VolumePolicy::Use(Some(Placement::Size(64 * MIB))),
        VolumePolicy::Use(Some(Placement::Rest)),
    );
    let reference = World::new(384 * MIB);
    reference.converge(&p, Cmdline::default()).0.unwrap();
    let want = reference.gpt();

    // Crash after the table commit: replay only the table edits.
    let w = World::new(384 * MIB);
    {
        let open = |p: &Path| DiskFile::open_image(p, 512);
        let mut g = facts::gather(&w.fake.system(), &w.root.join("etc"), &open).unwrap();
        let plan = plan::plan(&g.facts, &p).unwrap();
        let acts: Vec<&Action> = plan.actions.iter().filter(|a| a.edits_table()).collect();
        table::commit(&mut g.disk, &acts).unwrap();
        // ... and a half-made volatile: mkfs done, label not committed.
        let gpt = g.disk.read_gpt().unwrap();
        let e = &gpt[5];
        volumes::make_pending(
            Volume::Volatile,
            &Dest::Offset {
                image: w.vda.clone(),
                offset: e.starting_lba * 512,
                bytes: (e.ending_lba - e.starting_lba + 1) * 512,
            },
        )
        .unwrap();
    }
    let (r, _) = w.converge(&p, Cmdline::default());
    let out = r.unwrap();
    assert_eq!(
        out.volumes,
        vec![(Volume::Data, "resumed"), (Volume::Volatile, "resumed")]
    );
    let got = w.gpt();
    for n in 1..=5 {
        assert_eq!(
            (
                got[n].starting_lba,
                got[n].ending_lba,
                got[n].partition_name.as_str()
            ),
            (
                want[n].starting_lba,
                want[n].ending_lba,
                want[n].partition_name.as_str()
            ),
            "partition {n}"
        );
    }
    for (n, label) in [(4, "ecs-data"), (5, "ecs-volatile")] {
        let off = got[n].starting_lba * 512;
        let b = blkid_at(&w.vda, off);
        assert!(b.contains(&format!("LABEL={label}\n")), "{b}");
        fsck_at(&w.vda, off);
    }
}

#[test]
fn refusals_leave_the_disks_untouched() {
    let w = World::new(256 * MIB);
    // A disk carrying a filesystem is not blank.
    sh("mkfs.ext4", &["-q", "-L", "home", w.vdb.to_str().unwrap()]);
    let before = w.digest();
    let cases = [
        (
            policy(
                VolumePolicy::Use(Some(Placement::Device(w.vdb.clone()))),
                VolumePolicy::Ignore,
            ),
            "is not blank: it carries ext4 (label \"home\")",
        ),
        (
            policy(
                VolumePolicy::Use(Some(Placement::Size(1024 * MIB))),
                VolumePolicy::Ignore,
            ),
            "ecs-data wants 1GiB",
        ),
        (
            policy(
                VolumePolicy::Use(Some(Placement::Device(w.vda.clone()))),
                VolumePolicy::Ignore,
            ),
            "is the boot disk",
        ),
        (
            policy(VolumePolicy::Use(None), VolumePolicy::Ignore),
            "no filesystem labelled ecs-data",
        ),
    ];
    for (p, want) in cases {
        let err = w.converge(&p, Cmdline::default()).0.unwrap_err();
        assert!(format!("{err:#}").contains(want), "{err:#} lacks {want}");
        assert_eq!(w.digest(), before, "a refusal wrote something ({want})");
    }
}

#[test]
fn stale_filesystem_in_free_space_is_not_formatted_over() {
    let w = World::new(384 * MIB);
    // Where a 64 MiB data volume goes: the last aligned 64 MiB.
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-L",
            "lost",
            "-E",
            &format!("offset={}", 319 * MIB),
            w.vda.to_str().unwrap(),
            "16M",
        ],
    );
    let before = w.digest();
    let p = policy(
        VolumePolicy::Use(Some(Placement::Size(64 * MIB))),
        VolumePolicy::Ignore,
    );
    let err = w.converge(&p, Cmdline::default()).0.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("carries ext4 (label \"lost\")"), "{msg}");
    assert_eq!(w.digest(), before, "nothing written");
}

#[test]
fn duplicate_labels_are_an_error() {
    let w = World::new(256 * MIB);
    sh(
        "mkfs.ext4",
        &["-q", "-L", "ecs-data", w.vdb.to_str().unwrap()],
    );
    w.fake.disk("vdc", (252, 32), 64 * MIB / 512, 512);
    let vdc = w.fake.dir.path().join("dev/vdc");
    fs::File::create(&vdc).unwrap().set_len(64 * MIB).unwrap();
    sh(
        "mkfs.ext4",
        &["-q", "-L", "ecs-data", vdc.to_str().unwrap()],
    );
    let err = w
        .converge(
            &policy(VolumePolicy::Use(None), VolumePolicy::Ignore),
            Cmdline::default(),
        )
        .0
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("2 filesystems are labelled ecs-data"), "{msg}");
    assert!(msg.contains("vdb") && msg.contains("vdc"), "{msg}");
}

/// Whether this process may resize a mounted ext4 (CAP_SYS_RESOURCE, bit 24).
fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << 24) != 0
}

/// Loop-device tests run one at a time (`losetup -f` races).
static LOOP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Detaches a loop device it attached.
struct LoopDev(PathBuf);

impl Drop for LoopDev {
    fn drop(&mut self) {
        // Partitions added with BLKPG outlive the detach: remove them first.
        let name = self.0.file_name().unwrap().to_str().unwrap().to_string();
        for p in System::real().partitions(&name).unwrap_or_default() {
            if let Some(n) = p.partition {
                let _ = seeds::cmd::run(&mut seeds::cmd::command(
                    "delpart",
                    [self.0.to_str().unwrap(), &n.to_string()],
                ));
            }
        }
        let _ = seeds::cmd::run(&mut seeds::cmd::command(
            "losetup",
            ["-d".as_ref(), self.0.as_os_str()],
        ));
    }
}

/// The real block-device path: open (flock, BLKSSZGET, BLKGETSIZE64),
/// commit, BLKPG resize of a "mounted-like" partition and BLKPG add of the
/// new one, then mkfs on its node. Needs root and loop devices, so it is
/// fails with a clear message when not run as root (scripts/test.sh runs as root).
#[test]
fn loop_device_blkpg() {
    if !crate::testutil::root_or_skip("loop devices and BLKPG") {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 256 * MIB);
    let dev = PathBuf::from(sh("losetup", &["-f", "--show", img.to_str().unwrap()]).trim());
    let _guard = LoopDev(dev.clone());
    let name = dev.file_name().unwrap().to_str().unwrap().to_string();
    // The kernel knows partitions 1-3, as after a boot.
    let gpt = DiskFile::open_image(&img, 512).unwrap().read_gpt().unwrap();
    for n in 1..=3u32 {
        let e = &gpt[n];
        sh(
            "addpart",
            &[
                dev.to_str().unwrap(),
                &n.to_string(),
                &e.starting_lba.to_string(),
                &(e.ending_lba - e.starting_lba + 1).to_string(),
            ],
        );
    }
    let mut disk = DiskFile::open_device(&dev).unwrap();
    assert_eq!((disk.sector_size, disk.bytes), (512, 256 * MIB));
    // Read-only until a write is due (closing a writable descriptor makes
    // udev re-probe the disk), and locked against others either way.
    let access = |f: &std::fs::File| {
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_ACCMODE
    };
    let locked_by_us = || {
        use std::os::fd::AsRawFd;
        let other = std::fs::File::open(&dev).unwrap();
        // SAFETY: flock on an open descriptor.
        unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
    };
    assert_eq!(access(&disk.file), libc::O_RDONLY);
    assert!(!disk.is_writable());
    assert!(locked_by_us(), "the read-only descriptor holds the lock");
    let table = facts::read_table(&mut disk, Some(3)).unwrap();
    let f = plan::DiskFacts {
        boot: plan::BootDisk {
            path: dev.clone(),
            sector_size: 512,
            sectors: disk.sectors(),
            root_device: PathBuf::from(format!("/dev/{name}p3")),
            root_fs_bytes: None,
            table,
        },
        disks: vec![],
        filesystems: vec![],
        mounts: vec![],
        fstab: vec![],
    };
    let p = plan::plan(
        &f,
        &policy(
            VolumePolicy::Use(Some(Placement::Size(64 * MIB))),
            VolumePolicy::Ignore,
        ),
    )
    .unwrap();
    let acts: Vec<&Action> = p.actions.iter().filter(|a| a.edits_table()).collect();
    table::commit(&mut disk, &acts).unwrap();
    assert_eq!(access(&disk.file), libc::O_RDWR, "reopened for the write");
    assert!(locked_by_us(), "still locked after reopening");
    table::tell_kernel(&disk, &acts, &[1, 2, 3]).unwrap();
    let gpt = disk.read_gpt().unwrap();
    let sys = System::real();
    let parts = sys.partitions(&name).unwrap();
    let p3 = parts.iter().find(|x| x.partition == Some(3)).unwrap();
    assert_eq!(
        p3.bytes,
        (gpt[3].ending_lba - gpt[3].starting_lba + 1) * 512,
        "root resized"
    );
    let p4 = parts
        .iter()
        .find(|x| x.partition == Some(4))
        .expect("p4 added");
    assert_eq!(p4.start_bytes, gpt[4].starting_lba * 512);
    assert_eq!(p4.bytes, 64 * MIB);
    let node = sys.node(&p4.name);
    volumes::make_pending(Volume::Data, &Dest::Node(node.clone())).unwrap();
    volumes::commit_label(Volume::Data, &Dest::Node(node.clone())).unwrap();
    drop(disk);
    let b = sh("blkid", &["-p", "-o", "export", node.to_str().unwrap()]);
    assert!(b.contains("LABEL=ecs-data\n"), "{b}");
    let out = sh("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(out.contains("No problems found"), "{out}");
}

/// Unmounts what it mounted.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = seeds::cmd::run(&mut seeds::cmd::command("umount", [self.0.as_os_str()]));
    }
}

/// The whole storage step on a loop device whose partition 3 is mounted as
/// "root" (a mountinfo naming it at `/`, the real /sys and /dev): the root
/// partition is grown while mounted (BLKPG), ext4 grown online, a data
/// volume created, formatted, mounted and persisted; a second run does
/// nothing. Needs root and loop devices (fails clearly without them).
#[test]
fn loop_device_converge_online() {
    if !crate::testutil::root_or_skip("loop devices and BLKPG") {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 320 * MIB);
    let dev = PathBuf::from(sh("losetup", &["-f", "--show", img.to_str().unwrap()]).trim());
    let _guard = LoopDev(dev.clone());
    let name = dev.file_name().unwrap().to_str().unwrap().to_string();
    let gpt = DiskFile::open_image(&img, 512).unwrap().read_gpt().unwrap();
    for n in 1..=3u32 {
        let e = &gpt[n];
        sh(
            "addpart",
            &[
                dev.to_str().unwrap(),
                &n.to_string(),
                &e.starting_lba.to_string(),
                &(e.ending_lba - e.starting_lba + 1).to_string(),
            ],
        );
    }
    let sys = System::real();
    let p3 = sys
        .partitions(&name)
        .unwrap()
        .into_iter()
        .find(|p| p.partition == Some(3))
        .unwrap();
    let p3node = sys.node(&p3.name);
    sh("mkfs.ext4", &["-q", p3node.to_str().unwrap()]);
    let rootmnt = d.path().join("rootfs");
    fs::create_dir_all(&rootmnt).unwrap();
    sh(
        "mount",
        &[p3node.to_str().unwrap(), rootmnt.to_str().unwrap()],
    );
    let _root_guard = Mounted(rootmnt.clone());
    // The "system root" for mount points and /etc.
    let root = d.path().join("sysroot");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        d.path().join("mountinfo"),
        format!(
            "22 1 {}:{} / / rw - ext4 {} rw\n",
            p3.major,
            p3.minor,
            p3node.display()
        ),
    )
    .unwrap();
    let system = System {
        mountinfo: d.path().join("mountinfo"),
        ..System::real()
    };
    let open = |p: &Path| {
        anyhow::ensure!(p == dev, "the test may only open {}", dev.display());
        DiskFile::open_device(p)
    };
    let h = Host {
        sys: system,
        root: root.clone(),
        open: &open,
        mounter: &volumes::SystemMounter,
        cmdline: Cmdline::default(),
    };
    let p = policy(
        VolumePolicy::Use(Some(Placement::Size(64 * MIB))),
        VolumePolicy::Ignore,
    );
    let mut log = Log::quiet();
    let out = if has_cap_sys_resource() {
        converge(&h, &p, &mut log).unwrap()
    } else {
        // Containers without CAP_SYS_RESOURCE cannot resize online
        // (EXT4_IOC_RESIZE_FS). Then check what precedes it, and that the
        // next run converges from "partition grown, filesystem not".
        let err = converge(&h, &p, &mut log).unwrap_err();
        assert!(format!("{err:#}").contains("resize2fs"), "{err:#}");
        let now = sys
            .partitions(&name)
            .unwrap()
            .into_iter()
            .find(|x| x.partition == Some(3))
            .unwrap();
        assert!(
            now.bytes > p3.bytes + 150 * MIB,
            "mounted partition grown with BLKPG"
        );
        drop(_root_guard);
        sh("e2fsck", &["-fp", p3node.to_str().unwrap()]);
        sh(
            "mount",
            &[p3node.to_str().unwrap(), rootmnt.to_str().unwrap()],
        );
        let _ = sh("umount", &[rootmnt.to_str().unwrap()]);
        sh("e2fsck", &["-fp", p3node.to_str().unwrap()]);
        let mut out = converge(&h, &p, &mut log).unwrap();
        sh(
            "mount",
            &[p3node.to_str().unwrap(), rootmnt.to_str().unwrap()],
        );
        out.grew = now.bytes - p3.bytes;
        // The data partition was in the table write before resize2fs.
        assert_eq!(out.volumes[0], (Volume::Data, "resumed"));
        out.volumes[0].1 = "created";
        out
    };
    let _root_guard2 = Mounted(rootmnt.clone());
    let _data_guard = Mounted(root.join("data"));
    assert!(out.grew > 150 * MIB, "{out:?}");
    assert_eq!(
        out.volumes,
        vec![(Volume::Data, "created"), (Volume::Volatile, "dir")]
    );
    let df = sh("df", &["-B1", "--output=size", rootmnt.to_str().unwrap()]);
    let size: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(size > 200 * MIB, "root grew online: {size}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts.contains(&format!(" {} ", root.join("data").display())),
        "data mounted"
    );
    assert!(fs::read_to_string(root.join("etc/fstab"))
        .unwrap()
        .contains("LABEL=ecs-data /data ext4"));

    // Second run: the data mount is in the real mountinfo, not in ours;
    // give it the line so the facts match a real second boot.
    let data = sys
        .partitions(&name)
        .unwrap()
        .into_iter()
        .find(|p| p.partition == Some(4))
        .unwrap();
    fs::write(
        d.path().join("mountinfo"),
        format!(
            "22 1 {}:{} / / rw - ext4 {} rw\n30 22 {}:{} / /data rw - ext4 {} rw\n",
            p3.major,
            p3.minor,
            p3node.display(),
            data.major,
            data.minor,
            sys.node(&data.name).display()
        ),
    )
    .unwrap();
    let mut log = Log::quiet();
    let out2 = converge(&h, &p, &mut log).unwrap();
    assert_eq!(out2.actions, 1, "only the directory check: {:?}", log.lines);
    assert_eq!(out2.grew, 0);
}
