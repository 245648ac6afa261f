//! The seed image writer and reader, checked against tools no one here wrote.
//!
//! Needs `isoinfo`, `genisoimage`, `xorriso`, `cloud-localds`, `blkid`,
//! `mkfs.vfat` and `mtools` (installed by `scripts/install-host-deps.sh`).
//! A missing tool fails the test with the tool's name; nothing is skipped.
//! Nothing is mounted: the host kernel may have neither iso9660 nor vfat.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proptest::prelude::*;
use seeds::iso::{write_iso, SECTOR};
use seeds::seed::{probe, read_seed, read_seed_with_limits, FsKind, Limits, SeedError};
use sha2::{Digest, Sha256};

const USER_DATA: &[u8] = b"#cloud-config\nappliance:\n  domain: ecs.example.org\n";
const META_DATA: &[u8] = b"instance-id: iid-0123456789abcdef\nlocal-hostname: ecs\n";
const NETWORK_CONFIG: &[u8] = b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";

fn seed_files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("user-data", USER_DATA),
        ("meta-data", META_DATA),
        ("network-config", NETWORK_CONFIG),
    ]
}

/// The path of an external tool, or a failure naming it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` is not installed; run scripts/install-host-deps.sh (these tests never skip)");
}

/// Runs `name args...`, failing the test with its stderr unless it succeeds.
fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(tool(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Writes the standard seed to `dir/seed.iso`.
fn written_seed(dir: &Path) -> PathBuf {
    let iso = write_iso("cidata", &seed_files(), 1_700_000_000).expect("writing the seed");
    let path = dir.join("seed.iso");
    std::fs::write(&path, iso).expect("saving the seed");
    path
}

/// Puts `files` (relative paths) under `dir/tree` and returns the tree.
fn make_tree(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let tree = dir.join("tree");
    for (name, data) in files {
        let path = tree.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, data).expect("writing a tree file");
    }
    tree
}

fn read_file(path: &Path) -> seeds::seed::Seed {
    let bytes = std::fs::read(path).expect("reading the image");
    read_seed(Cursor::new(bytes)).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn as_map(files: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(n, d)| ((*n).to_owned(), d.to_vec()))
        .collect()
}

// --- The writer, checked by other tools ------------------------------------

#[test]
fn isoinfo_finds_label_joliet_and_rock_ridge() {
    let dir = tempfile::tempdir().unwrap();
    let iso = written_seed(dir.path());
    let info = stdout(&run("isoinfo", &["-d", "-i", p(&iso)]));
    assert!(info.contains("Volume id: cidata\n"), "{info}");
    assert!(info.contains("Joliet with UCS level 3 found"), "{info}");
    assert!(
        info.contains("Rock Ridge signatures version 1 found"),
        "{info}"
    );
    assert!(info.contains("Logical block size is: 2048"), "{info}");
}

#[test]
fn isoinfo_lists_lowercase_names_in_rock_ridge_and_joliet() {
    let dir = tempfile::tempdir().unwrap();
    let iso = written_seed(dir.path());
    for mode in ["-R", "-J"] {
        let list = stdout(&run("isoinfo", &[mode, "-l", "-i", p(&iso)]));
        for (name, data) in seed_files() {
            let line = list
                .lines()
                .map(str::trim_end)
                .find(|l| l.ends_with(&format!(" {name}")) || l.ends_with(&format!(" {name};1")))
                .unwrap_or_else(|| panic!("isoinfo {mode} -l lacks {name}:\n{list}"));
            assert!(line.contains(&format!(" {} ", data.len())), "{line}");
        }
        assert!(
            !list.contains("USER_DAT"),
            "{mode} shows plain names:\n{list}"
        );
    }
    // Rock Ridge carries the modes: files read-only for everyone.
    let list = stdout(&run("isoinfo", &["-R", "-l", "-i", p(&iso)]));
    assert!(list.contains("-r--r--r--"), "{list}");
    // Without extensions, the level 1 names.
    let plain = stdout(&run("isoinfo", &["-l", "-i", p(&iso)]));
    assert!(plain.contains("USER_DAT.;1"), "{plain}");
}

#[test]
fn blkid_sees_an_iso9660_labelled_cidata() {
    let dir = tempfile::tempdir().unwrap();
    let iso = written_seed(dir.path());
    let out = stdout(&run("blkid", &["-p", "-o", "export", p(&iso)]));
    assert!(out.lines().any(|l| l == "LABEL=cidata"), "{out}");
    assert!(out.lines().any(|l| l == "TYPE=iso9660"), "{out}");
}

#[test]
fn xorriso_extracts_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = seed_files();
    files.push(("empty", b""));
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    files.push(("big.bin", &big));
    let iso_path = dir.path().join("x.iso");
    std::fs::write(&iso_path, write_iso("cidata", &files, 0).unwrap()).unwrap();
    let out = dir.path().join("out");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            p(&iso_path),
            "-extract",
            "/",
            p(&out),
        ],
    );
    let mut found: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<String> = files.iter().map(|(n, _)| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(out.join(name)).unwrap(), data, "{name}");
    }
    // xorriso's own consistency check of the tree.
    let report = run(
        "xorriso",
        &[
            "-indev",
            p(&iso_path),
            "-find",
            "/",
            "-exec",
            "report_damage",
        ],
    );
    let text = String::from_utf8_lossy(&report.stderr).into_owned() + &stdout(&report);
    assert!(!text.contains("FAILURE"), "{text}");
}

#[test]
fn writes_are_reproducible() {
    let hash = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    let a = write_iso("cidata", &seed_files(), 1_700_000_000).unwrap();
    let b = write_iso("cidata", &seed_files(), 1_700_000_000).unwrap();
    assert_eq!(hash(&a), hash(&b));
    // The order of the inputs does not matter.
    let mut reversed = seed_files();
    reversed.reverse();
    let c = write_iso("cidata", &reversed, 1_700_000_000).unwrap();
    assert_eq!(hash(&a), hash(&c));
    // The epoch does.
    let d = write_iso("cidata", &seed_files(), 1_700_000_001).unwrap();
    assert_ne!(hash(&a), hash(&d));
    assert_eq!(a.len() % SECTOR, 0);
}

// --- The reader, on images made by other tools -----------------------------

fn assert_seed(seed: &seeds::seed::Seed, kind: FsKind, label: &str, files: &[(&str, &[u8])]) {
    assert_eq!(seed.kind, kind);
    assert_eq!(seed.label, label);
    assert_eq!(seed.files, as_map(files));
}

#[test]
fn reads_our_own_seed() {
    let dir = tempfile::tempdir().unwrap();
    let seed = read_file(&written_seed(dir.path()));
    assert_seed(&seed, FsKind::Iso9660, "cidata", &seed_files());
    assert_eq!(seed.get("user-data"), Some(USER_DATA));
    assert_eq!(seed.get("/meta-data"), Some(META_DATA));
    assert_eq!(seed.get("missing"), None);
}

#[test]
fn reads_genisoimage_joliet_rock() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), &seed_files());
    let iso = dir.path().join("g.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-output",
            p(&iso),
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            p(&tree),
        ],
    );
    assert_seed(&read_file(&iso), FsKind::Iso9660, "cidata", &seed_files());
}

#[test]
fn reads_genisoimage_joliet_only_and_plain() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), &seed_files());
    // Joliet only: names from the supplementary descriptor.
    let iso = dir.path().join("j.iso");
    run(
        "genisoimage",
        &["-quiet", "-o", p(&iso), "-V", "cidata", "-J", p(&tree)],
    );
    assert_seed(&read_file(&iso), FsKind::Iso9660, "cidata", &seed_files());
    // Neither: plain 8.3 names, lowercased, version and dot stripped.
    let plain_tree = dir.path().join("plain");
    std::fs::create_dir(&plain_tree).unwrap();
    std::fs::write(plain_tree.join("readme.txt"), b"hello").unwrap();
    std::fs::write(plain_tree.join("userdata"), USER_DATA).unwrap();
    let iso = dir.path().join("p.iso");
    run(
        "genisoimage",
        &["-quiet", "-o", p(&iso), "-V", "CIDATA", p(&plain_tree)],
    );
    assert_seed(
        &read_file(&iso),
        FsKind::Iso9660,
        "CIDATA",
        &[("readme.txt", b"hello"), ("userdata", USER_DATA)],
    );
}

#[test]
fn reads_cloud_localds() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), &seed_files());
    let iso = dir.path().join("c.iso");
    run(
        "cloud-localds",
        &[
            "--network-config",
            p(&tree.join("network-config")),
            p(&iso),
            p(&tree.join("user-data")),
            p(&tree.join("meta-data")),
        ],
    );
    assert_seed(&read_file(&iso), FsKind::Iso9660, "cidata", &seed_files());
}

#[test]
fn reads_xorriso_mkisofs() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), &seed_files());
    let iso = dir.path().join("x.iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            p(&iso),
            "-V",
            "cidata",
            "-J",
            "-R",
            p(&tree),
        ],
    );
    assert_seed(&read_file(&iso), FsKind::Iso9660, "cidata", &seed_files());
}

const CONFIG2: &[(&str, &[u8])] = &[
    (
        "openstack/latest/user_data",
        b"#cloud-config\nappliance: {}\n",
    ),
    ("openstack/latest/meta_data.json", b"{\"uuid\": \"0f4e\"}"),
    ("openstack/2012-08-10/user_data", b"#cloud-config\n"),
    ("openstack/content/0000", b"file contents"),
    ("ec2/latest/meta-data.json", b"{}"),
];

#[test]
fn reads_config2_drives_with_nested_directories() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), CONFIG2);
    let g = dir.path().join("g.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-o",
            p(&g),
            "-V",
            "config-2",
            "-J",
            "-R",
            p(&tree),
        ],
    );
    let x = dir.path().join("x.iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            p(&x),
            "-V",
            "config-2",
            "-J",
            "-R",
            p(&tree),
        ],
    );
    // Joliet only: nested names from the supplementary tree.
    let j = dir.path().join("j.iso");
    run(
        "genisoimage",
        &["-quiet", "-o", p(&j), "-V", "config-2", "-J", p(&tree)],
    );
    for iso in [g, x, j] {
        let seed = read_file(&iso);
        assert_seed(&seed, FsKind::Iso9660, "config-2", CONFIG2);
        assert_eq!(
            seed.get("openstack/latest/user_data"),
            Some(&b"#cloud-config\nappliance: {}\n"[..])
        );
    }
}

/// A vfat image of `size_kib` made by mkfs.vfat with `mkfs_args`, holding
/// `files` (nested paths allowed) copied in with mtools.
fn vfat(dir: &Path, size_kib: u32, mkfs_args: &[&str], files: &[(&str, &[u8])]) -> PathBuf {
    let img = dir.join("fat.img");
    let size = size_kib.to_string();
    let mut args = vec!["-C", p(&img)];
    args.extend_from_slice(mkfs_args);
    args.push(&size);
    run("mkfs.vfat", &args);
    let tree = make_tree(dir, files);
    let mut made = std::collections::BTreeSet::new();
    for (name, _) in files {
        let parts: Vec<&str> = name.split('/').collect();
        for i in 1..parts.len() {
            let sub = parts[..i].join("/");
            if made.insert(sub.clone()) {
                run("mmd", &["-i", p(&img), &format!("::{sub}")]);
            }
        }
        run(
            "mcopy",
            &["-i", p(&img), p(&tree.join(name)), &format!("::{name}")],
        );
    }
    img
}

#[test]
fn reads_vfat_labelled_cidata() {
    let dir = tempfile::tempdir().unwrap();
    let img = vfat(dir.path(), 1440, &["-n", "cidata"], &seed_files());
    let seed = read_file(&img);
    assert_eq!(seed.kind, FsKind::Fat12);
    assert!(seed.label.eq_ignore_ascii_case("cidata"), "{}", seed.label);
    assert_eq!(seed.files, as_map(&seed_files()));
    let probed = probe(Cursor::new(std::fs::read(&img).unwrap())).expect("probe");
    assert_eq!(probed.0, FsKind::Fat12);
    assert!(probed.1.eq_ignore_ascii_case("cidata"), "{probed:?}");
}

#[test]
fn reads_vfat_labelled_uppercase_cidata() {
    let dir = tempfile::tempdir().unwrap();
    let img = vfat(
        dir.path(),
        32768,
        &["-F", "16", "-n", "CIDATA"],
        &seed_files(),
    );
    assert_seed(&read_file(&img), FsKind::Fat16, "CIDATA", &seed_files());
    let blk = stdout(&run("blkid", &["-p", "-o", "export", p(&img)]));
    assert!(blk.lines().any(|l| l == "LABEL=CIDATA"), "{blk}");
}

#[test]
fn reads_fat32_with_nested_directories_and_a_multi_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut files = CONFIG2.to_vec();
    files.push(("openstack/latest/vendor_data.json", &big));
    files.push(("a-rather-long-file-name-for-lfn-entries.yaml", USER_DATA));
    let img = vfat(dir.path(), 65536, &["-F", "32", "-n", "CIDATA"], &files);
    assert_seed(&read_file(&img), FsKind::Fat32, "CIDATA", &files);
    assert_eq!(
        probe(Cursor::new(std::fs::read(&img).unwrap())),
        Some((FsKind::Fat32, "CIDATA".to_owned()))
    );
}

#[test]
fn probe_reads_the_label_only() {
    let iso = write_iso("cidata", &seed_files(), 0).unwrap();
    assert_eq!(
        probe(Cursor::new(&iso[..])),
        Some((FsKind::Iso9660, "cidata".to_owned()))
    );
    // Only the descriptors are needed: the rest may be gone.
    assert_eq!(
        probe(Cursor::new(&iso[..19 * SECTOR])),
        Some((FsKind::Iso9660, "cidata".to_owned()))
    );
    assert_eq!(probe(Cursor::new(vec![0u8; 1 << 16])), None);
    assert_eq!(probe(Cursor::new(Vec::new())), None);
}

// --- Untrusted input --------------------------------------------------------

fn is_corrupt(r: &Result<seeds::seed::Seed, SeedError>) -> bool {
    matches!(r, Err(SeedError::Corrupt { .. }))
}

#[test]
fn non_filesystems_are_not_seeds() {
    for bytes in [Vec::new(), vec![0u8; 40_000], vec![0xFFu8; 1 << 20]] {
        assert!(matches!(
            read_seed(Cursor::new(bytes)),
            Err(SeedError::NotSeed)
        ));
    }
}

#[test]
fn truncated_images_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let iso = write_iso("cidata", &seed_files(), 0).unwrap();
    let fat = std::fs::read(vfat(dir.path(), 1440, &["-n", "cidata"], &seed_files())).unwrap();
    // The ISO's file data comes last: any cut before the end of the last
    // file is an error, never a panic and never a partial seed.
    let data_end = iso.len() - SECTOR + USER_DATA.len();
    for cut in (0..data_end).step_by(509) {
        let r = read_seed(Cursor::new(&iso[..cut]));
        assert!(r.is_err(), "ISO cut at {cut} read as a seed");
    }
    // The FAT's data is near its start: a cut either fails or leaves
    // everything needed (the whole seed, identical).
    let mut failures = 0;
    for cut in (0..fat.len()).step_by(509) {
        match read_seed(Cursor::new(&fat[..cut])) {
            Ok(seed) => assert_eq!(seed.files, as_map(&seed_files()), "FAT cut at {cut}"),
            Err(_) => failures += 1,
        }
    }
    assert!(failures > 30, "only {failures} FAT cuts failed");
    // Cut within the ISO's volume descriptors or directories: corrupt.
    assert!(is_corrupt(&read_seed(Cursor::new(&iso[..17 * SECTOR]))));
    assert!(is_corrupt(&read_seed(Cursor::new(&iso[..24 * SECTOR]))));
}

#[test]
fn flipped_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let iso = write_iso("cidata", &seed_files(), 0).unwrap();
    let fat = std::fs::read(vfat(dir.path(), 1440, &["-n", "cidata"], &seed_files())).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for image in [&iso, &fat] {
        // Damage the metadata (the first 30 KiB) a few bytes at a time.
        for _ in 0..2000 {
            let mut bad = image.clone();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() % 30_000) as usize % bad.len();
                bad[at] = next() as u8;
            }
            let _ = read_seed(Cursor::new(&bad));
            let _ = probe(Cursor::new(&bad));
        }
    }
}

/// The offset of the ISO9660 root directory record named `id`.
fn iso_record(iso: &[u8], id: &[u8]) -> usize {
    let root = 24 * SECTOR;
    let mut pos = root;
    while iso[pos] != 0 {
        let len = iso[pos] as usize;
        if &iso[pos + 33..pos + 33 + iso[pos + 32] as usize] == id {
            return pos;
        }
        pos += len;
    }
    panic!("no record {id:?}");
}

#[test]
fn iso_extent_past_the_end_is_corrupt() {
    let mut iso = write_iso("cidata", &seed_files(), 0).unwrap();
    let rec = iso_record(&iso, b"USER_DAT.;1");
    iso[rec + 2..rec + 6].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    let err = read_seed(Cursor::new(&iso)).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn iso_directory_loop_is_corrupt() {
    let mut iso = write_iso("cidata", &seed_files(), 0).unwrap();
    let rec = iso_record(&iso, b"USER_DAT.;1");
    iso[rec + 2..rec + 6].copy_from_slice(&24u32.to_le_bytes()); // the root itself
    iso[rec + 10..rec + 14].copy_from_slice(&2048u32.to_le_bytes());
    iso[rec + 25] = 0x02; // a directory
    let err = read_seed(Cursor::new(&iso)).unwrap_err();
    assert!(err.to_string().contains("loops"), "{err}");
}

#[test]
fn limits_are_enforced() {
    let iso = write_iso("cidata", &seed_files(), 0).unwrap();
    let small = Limits {
        max_file_size: 40,
        ..Limits::default()
    };
    assert!(matches!(
        read_seed_with_limits(Cursor::new(&iso), &small),
        Err(SeedError::Limit { .. })
    ));
    let few = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    assert!(matches!(
        read_seed_with_limits(Cursor::new(&iso), &few),
        Err(SeedError::Limit { .. })
    ));
    let total = Limits {
        max_total_size: 100,
        ..Limits::default()
    };
    assert!(matches!(
        read_seed_with_limits(Cursor::new(&iso), &total),
        Err(SeedError::Limit { .. })
    ));
    // Depth: config-2's openstack/latest is depth 2.
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), CONFIG2);
    let g = dir.path().join("g.iso");
    run(
        "genisoimage",
        &["-quiet", "-o", p(&g), "-J", "-R", p(&tree)],
    );
    let shallow = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    let bytes = std::fs::read(&g).unwrap();
    assert!(matches!(
        read_seed_with_limits(Cursor::new(&bytes), &shallow),
        Err(SeedError::Limit { .. })
    ));
}

/// Boot sector fields of a FAT12/16 image: (FAT offset, root dir offset,
/// bytes per cluster, data offset).
fn fat_layout(img: &[u8]) -> (usize, usize, usize, usize) {
    let u16_at = |at: usize| u16::from_le_bytes([img[at], img[at + 1]]) as usize;
    let bps = u16_at(11);
    let spc = img[13] as usize;
    let reserved = u16_at(14);
    let fats = img[16] as usize;
    let root_entries = u16_at(17);
    let fat_size = u16_at(22);
    let fat = reserved * bps;
    let root = fat + fats * fat_size * bps;
    (fat, root, spc * bps, root + root_entries * 32)
}

#[test]
fn rock_ridge_symlink_is_named_not_read_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path(), &[("meta-data", b"instance-id: x\n")]);
    std::os::unix::fs::symlink("meta-data", tree.join("user-data")).unwrap();
    let iso = dir.path().join("link.iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            p(&iso),
            "-V",
            "cidata",
            "-R",
            p(&tree),
        ],
    );
    let seed = read_file(&iso);
    assert_eq!(seed.get("user-data"), None);
    assert_eq!(seed.not_regular_at("user-data"), Some("a symlink"));
    assert_eq!(seed.get("meta-data"), Some(&b"instance-id: x\n"[..]));
    assert!(seed.not_regular_at("meta-data").is_none());
}

/// The label blkid reports for an image file.
fn blkid_label(img: &Path) -> String {
    let out = stdout(&run("blkid", &["-p", "-o", "export", p(img)]));
    out.lines()
        .find_map(|l| l.strip_prefix("LABEL="))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn vfat_label_from_the_root_directory_first_as_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let path = vfat(dir.path(), 1440, &["-n", "CIDATA"], &seed_files());
    let orig = std::fs::read(&path).unwrap();
    let (_, root, _, _) = fat_layout(&orig);
    let label_entry = (0..224)
        .map(|i| root + i * 32)
        .find(|&e| orig[e + 11] == 0x08)
        .expect("mkfs.vfat writes a volume label entry");
    assert_eq!(&orig[43..54], b"CIDATA     ", "boot sector label");

    // Boot sector says OTHER, the root directory CIDATA: a cidata volume.
    let mut img = orig.clone();
    img[43..54].copy_from_slice(b"OTHER      ");
    std::fs::write(&path, &img).unwrap();
    assert_eq!(blkid_label(&path), "CIDATA");
    assert_eq!(
        probe(Cursor::new(&img)),
        Some((FsKind::Fat12, "CIDATA".to_owned()))
    );
    assert_eq!(read_seed(Cursor::new(&img)).unwrap().label, "CIDATA");

    // The other way round: not a cidata volume, for blkid or for us.
    let mut img = orig.clone();
    img[label_entry..label_entry + 11].copy_from_slice(b"OTHER      ");
    std::fs::write(&path, &img).unwrap();
    assert_eq!(blkid_label(&path), "OTHER");
    assert_eq!(
        probe(Cursor::new(&img)),
        Some((FsKind::Fat12, "OTHER".to_owned()))
    );
    assert_eq!(read_seed(Cursor::new(&img)).unwrap().label, "OTHER");

    // No label entry: the boot sector's.
    let mut img = orig;
    img[label_entry] = 0xE5;
    assert_eq!(
        probe(Cursor::new(&img)),
        Some((FsKind::Fat12, "CIDATA".to_owned()))
    );
}

#[test]
fn fat_cluster_chain_loop_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let mut img = std::fs::read(vfat(
        dir.path(),
        1440,
        &["-n", "cidata", "-s", "1"],
        &[("user-data", &big)],
    ))
    .unwrap();
    let (fat, root, _, _) = fat_layout(&img);
    // The file's short entry: the first entry with a non-zero size.
    let entry = (0..224)
        .map(|i| root + i * 32)
        .find(|&e| img[e + 11] & 0x18 == 0 && img[e + 11] != 0x0F && img[e] != 0)
        .expect("the file's entry");
    let first = u16::from_le_bytes([img[entry + 26], img[entry + 27]]) as usize;
    // FAT12: point the first cluster's entry at itself.
    let off = fat + first + first / 2;
    let v = u16::from_le_bytes([img[off], img[off + 1]]);
    let v = if first & 1 == 0 {
        (v & 0xF000) | first as u16
    } else {
        (v & 0x000F) | ((first as u16) << 4)
    };
    img[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let err = read_seed(Cursor::new(&img)).unwrap_err();
    assert!(err.to_string().contains("loops"), "{err}");
    assert!(is_corrupt(&Err(err)));
}

// --- Round trips -------------------------------------------------------------

/// Env-like text: `key: value` lines, sometimes nested, any printable ASCII.
fn env_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(("[a-z_]{1,12}", "( {2})?", "[ -~]{0,60}"), 0..40).prop_map(|lines| {
        let mut s = String::from("#cloud-config\n");
        for (key, indent, value) in lines {
            s.push_str(&format!("{indent}{key}: {value}\n"));
        }
        s.into_bytes()
    })
}

proptest! {
    #[test]
    fn write_then_read_gives_identical_bytes(
        user_data in env_text(),
        meta_data in prop::collection::vec(any::<u8>(), 0..3000),
        network in prop::option::of(prop::collection::vec(any::<u8>(), 0..5000)),
        extra in prop::collection::btree_map("[a-z0-9][a-z0-9._-]{0,40}", prop::collection::vec(any::<u8>(), 0..3000), 0..6),
        epoch in any::<i64>(),
    ) {
        let mut files: BTreeMap<String, Vec<u8>> = extra;
        files.insert("user-data".into(), user_data);
        files.insert("meta-data".into(), meta_data);
        if let Some(n) = network {
            files.insert("network-config".into(), n);
        }
        let list: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let iso = write_iso("cidata", &list, epoch).unwrap();
        let seed = read_seed(Cursor::new(&iso)).unwrap();
        prop_assert_eq!(seed.kind, FsKind::Iso9660);
        prop_assert_eq!(seed.label.as_str(), "cidata");
        prop_assert_eq!(seed.files, files);
    }
}
