//! The table executor on sparse image files made by `sgdisk`/`sfdisk`,
//! checked with `sgdisk -v` and `sfdisk`.

use super::*;
use crate::facts::read_table;
use crate::plan::{plan, BootDisk, DiskFacts, Placement, StoragePolicy, Table, VolumePolicy};
use crate::testutil::{enlarge, make_gpt_image, sh};
use std::fs;

const MIB: u64 = 1 << 20;

fn facts_of(path: &Path, root: u32) -> (DiskFacts, DiskFile) {
    let mut d = DiskFile::open_image(path, 512).unwrap();
    let table = read_table(&mut d, Some(root)).unwrap();
    let facts = DiskFacts {
        boot: BootDisk {
            path: path.into(),
            sector_size: 512,
            sectors: d.sectors(),
            root_device: PathBuf::from(format!("{}#{root}", path.display())),
            root_fs_bytes: None,
            table,
        },
        disks: vec![],
        filesystems: vec![],
        mounts: vec![],
        fstab: vec![],
    };
    (facts, d)
}

fn policy(data: VolumePolicy, volatile: VolumePolicy) -> StoragePolicy {
    StoragePolicy {
        grow_root: true,
        root_size: None,
        data,
        volatile,
    }
}

fn run_table(path: &Path, policy: &StoragePolicy) -> Vec<Action> {
    let (facts, mut d) = facts_of(path, 3);
    let p = plan(&facts, policy).unwrap();
    let acts: Vec<&Action> = p.actions.iter().filter(|a| a.edits_table()).collect();
    if !acts.is_empty() {
        commit(&mut d, &acts).unwrap();
    }
    acts.into_iter().cloned().collect()
}

fn sgdisk_ok(path: &Path) {
    let out = sh("sgdisk", &["-v", path.to_str().unwrap()]);
    assert!(out.contains("No problems found"), "sgdisk -v:\n{out}");
}

/// A digest of the places a table edit can touch: the first and last MiB.
fn sha(path: &Path) -> Vec<u8> {
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut head = vec![0u8; MIB as usize];
    let mut tail = vec![0u8; MIB as usize];
    f.read_exact_at(&mut head, 0).unwrap();
    f.read_exact_at(&mut tail, len - MIB).unwrap();
    let mut h = Sha256::new();
    h.update(&head);
    h.update(&tail);
    h.finalize().to_vec()
}

fn ignore() -> StoragePolicy {
    policy(VolumePolicy::Ignore, VolumePolicy::Ignore)
}

#[test]
fn grow_moves_backup_header_and_fills_the_disk() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 1024 * MIB);
    let before = sh("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(
        !before.contains("No problems found"),
        "the stale header is noticed:\n{before}"
    );

    let acts = run_table(&img, &ignore());
    assert_eq!(acts.len(), 2, "{acts:?}");
    sgdisk_ok(&img);
    let mut f = DiskFile::open_image(&img, 512).unwrap();
    let gpt = f.read_gpt().unwrap();
    let last = 1024 * MIB / 512 - 1;
    assert_eq!(gpt.header.backup_lba, last);
    assert_eq!(gpt.header.last_usable_lba, last - 33);
    assert_eq!(gpt[3].ending_lba, last - 33, "root fills the disk");
    assert_eq!(gpt[3].partition_name.as_str(), "root", "entry kept");
    let mut old = [0u8; 512];
    f.file.read_exact_at(&mut old, 64 * MIB - 512).unwrap();
    assert!(old.iter().all(|b| *b == 0), "old backup header invalidated");
    // Protective MBR covers the new size.
    let mut s0 = [0u8; 512];
    f.file.read_exact_at(&mut s0, 0).unwrap();
    assert_eq!(
        u32::from_le_bytes(s0[458..462].try_into().unwrap()) as u64,
        last
    );
    drop(f);

    // Idempotent on the bytes: a second run plans and writes nothing.
    let h = sha(&img);
    assert!(run_table(&img, &ignore()).is_empty());
    assert_eq!(sha(&img), h);
}

#[test]
fn grow_to_16_tib_sparse() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    // 16 TiB less 1 MiB: ext4's largest file (the test's /tmp may be ext4).
    let size = (16u64 << 40) - MIB;
    enlarge(&img, size);
    run_table(&img, &ignore());
    sgdisk_ok(&img);
    let mut f = DiskFile::open_image(&img, 512).unwrap();
    assert_eq!(f.read_gpt().unwrap()[3].ending_lba, size / 512 - 34);
}

#[test]
fn new_partitions_are_added_with_name_and_type() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 512 * MIB);
    let p = policy(
        VolumePolicy::Use(Some(Placement::Size(128 * MIB))),
        VolumePolicy::Use(Some(Placement::Rest)),
    );
    let acts = run_table(&img, &p);
    assert_eq!(
        acts.len(),
        3,
        "relocate + 2 creates (rest: root stays) {acts:?}"
    );
    sgdisk_ok(&img);
    let info = sh("sgdisk", &["-i", "4", img.to_str().unwrap()]);
    assert!(info.contains("Partition name: 'ecs-data'"), "{info}");
    assert!(
        info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{info}"
    );
    let info5 = sh("sgdisk", &["-i", "5", img.to_str().unwrap()]);
    assert!(info5.contains("Partition name: 'ecs-volatile'"), "{info5}");
    let mut f = DiskFile::open_image(&img, 512).unwrap();
    let gpt = f.read_gpt().unwrap();
    // data (sized) at the end, volatile (rest) between root and data.
    assert_eq!(
        (gpt[4].ending_lba - gpt[4].starting_lba + 1) * 512,
        128 * MIB
    );
    assert!(gpt[5].starting_lba > gpt[3].ending_lba && gpt[5].ending_lba < gpt[4].starting_lba);
    assert_eq!(gpt[4].starting_lba % 2048, 0);
    assert_eq!(gpt[5].starting_lba % 2048, 0);
    assert_eq!(
        gpt[4].unique_partition_guid,
        partition_guid(&gpt.header.disk_guid, Volume::Data),
        "deterministic GUID"
    );
}

#[test]
fn crash_after_the_backup_write_converges() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 256 * MIB);
    // Do only step 1 of the commit: the new backup at the end.
    let (facts, mut disk) = facts_of(&img, 3);
    let p = plan(&facts, &ignore()).unwrap();
    let mut gpt = disk.read_gpt().unwrap();
    let last = disk.sectors() - 1;
    gpt.header.backup_lba = last;
    gpt.header.last_usable_lba = last - 33;
    gpt[3].ending_lba = last - 33;
    let entries: Vec<GPTPartitionEntry> = gpt.iter().map(|(_, e)| e.clone()).collect();
    let mut backup = gpt.header.clone();
    backup.primary_lba = last;
    backup.backup_lba = 1;
    backup.partition_entry_lba = last - 32;
    let (bh, ba) = serialize(&mut backup, 512, &entries).unwrap();
    disk.put(ba.0, &ba.1).unwrap();
    disk.put(bh.0, &bh.1).unwrap();
    drop(disk);
    // The old primary still rules; the next run plans the same edit.
    let (facts2, _) = facts_of(&img, 3);
    assert_eq!(plan(&facts2, &ignore()).unwrap().actions, p.actions);
    run_table(&img, &ignore());
    sgdisk_ok(&img);

    // And a primary torn after its array was written, before its header:
    let disk = DiskFile::open_image(&img, 512).unwrap();
    disk.put(2 * 512, &[0xAB; 512]).unwrap();
    drop(disk);
    let (facts3, _) = facts_of(&img, 3);
    let Table::Gpt(g) = &facts3.boot.table else {
        panic!()
    };
    assert!(!g.primary_ok, "torn primary seen");
    let acts = run_table(&img, &ignore());
    assert!(
        matches!(acts[0], Action::RepairPrimaryGpt { .. }),
        "{acts:?}"
    );
    sgdisk_ok(&img);
}

#[test]
fn mbr_grows_within_2_tib() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    fs::File::create(&img).unwrap().set_len(64 * MIB).unwrap();
    sh(
        "sh",
        &[
            "-c",
            &format!("echo 'start=2048, type=83' | sfdisk -q {}", img.display()),
        ],
    );
    enlarge(&img, 3 << 40);
    let (facts, mut disk) = facts_of(&img, 1);
    assert!(matches!(facts.boot.table, Table::Mbr(_)));
    let p = plan(&facts, &ignore()).unwrap();
    let acts: Vec<&Action> = p.actions.iter().filter(|a| a.edits_table()).collect();
    commit(&mut disk, &acts).unwrap();
    drop(disk);
    let dump = sh("sfdisk", &["-d", img.to_str().unwrap()]);
    // Ends at sector 2^32 - 1, the last one 32-bit LBAs reach.
    assert!(
        dump.contains("start=        2048, size=  4294965248"),
        "{dump}"
    );
    let again = plan(&facts_of(&img, 1).0, &ignore()).unwrap();
    assert!(
        again.actions.iter().all(|a| !a.edits_table()),
        "{:?}",
        again.actions
    );
}

#[test]
fn image_constructor_refuses_devices_and_device_constructor_refuses_files() {
    let err = DiskFile::open_image(Path::new("/dev/null"), 512).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x");
    fs::write(&f, b"").unwrap();
    let err = DiskFile::open_device(&f).unwrap_err();
    assert!(err.to_string().contains("not a block device"), "{err}");
}

#[test]
fn changed_table_is_not_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    enlarge(&img, 256 * MIB);
    let (facts, _) = facts_of(&img, 3);
    let p = plan(&facts, &ignore()).unwrap();
    // Someone else grows root in between.
    sh(
        "sgdisk",
        &["-e", "-d", "3", "-n", "3:0:+20M", img.to_str().unwrap()],
    );
    let h = sha(&img);
    let disk_ = DiskFile::open_image(&img, 512);
    let mut disk = disk_.unwrap();
    let acts: Vec<&Action> = p.actions.iter().filter(|a| a.edits_table()).collect();
    let err = commit(&mut disk, &acts).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was read"),
        "{err}"
    );
    drop(disk);
    assert_eq!(sha(&img), h, "nothing written");
}

#[test]
fn chunks_read_the_same_bytes_as_the_file() {
    use std::io::Read;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    // Not a multiple of the chunk size, so the last chunk is short.
    let data: Vec<u8> = (0..(3 * Chunks::SIZE + 777))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(&p, &data).unwrap();
    let f = File::open(&p).unwrap();
    let mut c = Chunks::new(&f, data.len() as u64);
    let len = data.len() as u64;
    for (at, n) in [
        (0, 512),
        (Chunks::SIZE - 3, 10),
        (2 * Chunks::SIZE - 128, 3 * 128),
        (len - 100, 100),
        (len - 5, 64),
        (len, 8),
        (1, 2 * Chunks::SIZE as usize + 5),
    ] {
        c.seek(SeekFrom::Start(at)).unwrap();
        let mut got = Vec::new();
        (&mut c).take(n as u64).read_to_end(&mut got).unwrap();
        let end = (at as usize + n).min(data.len());
        assert_eq!(got, data[at as usize..end], "at {at}, {n} bytes");
    }
    assert_eq!(c.seek(SeekFrom::End(-1)).unwrap(), len - 1);
    assert_eq!(c.seek(SeekFrom::Current(-2)).unwrap(), len - 3);
    assert!(c.seek(SeekFrom::Current(-(len as i64))).is_err());
}

#[test]
fn gpt_through_chunks_equals_gpt_read_directly() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    make_gpt_image(&img, 64 * MIB);
    let mut disk = DiskFile::open_image(&img, 512).unwrap();
    let direct = GPT::read_from(&mut disk.file, 512).unwrap();
    let chunked = disk.read_gpt().unwrap();
    assert_eq!(chunked.header, direct.header);
    let a: Vec<_> = direct.iter().map(|(n, e)| (n, e.clone())).collect();
    let b: Vec<_> = chunked.iter().map(|(n, e)| (n, e.clone())).collect();
    assert_eq!(a, b);
    assert!(a.iter().filter(|(_, e)| e.is_used()).count() >= 2);
}
