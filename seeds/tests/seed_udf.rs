//! The UDF reader, on volumes made by tools no one here wrote: genisoimage's
//! `-udf` (UDF 1.02, beside ISO9660; made UDF-only by moving its volume
//! recognition sequence over the ISO9660 descriptors, as a DVD without
//! ISO9660 has it) and mkudffs (UDF 2.01 and 1.02). udfinfo checks every
//! fixture first. Needs `genisoimage`, `mkudffs` and `udfinfo`
//! (`scripts/install-host-deps.sh`); a missing tool fails the test.
//! Nothing is mounted.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use seeds::seed::{probe, read_seed, read_seed_with_limits, FsKind, Limits, SeedError};

const SECTOR: usize = 2048;

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

fn run(name: &str, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A provisioning medium's files: a small XML, a file of many blocks, a
/// nested one, and a name that needs 16-bit characters.
fn files() -> Vec<(String, Vec<u8>)> {
    let big: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        (
            "ovf-env.xml".into(),
            b"<?xml version=\"1.0\"?><Environment/>\n".to_vec(),
        ),
        ("big.bin".into(), big),
        ("a/b/c/deep.txt".into(), b"deep\n".to_vec()),
        ("ключ.txt".into(), b"unicode\n".to_vec()),
        ("empty".into(), Vec::new()),
    ]
}

fn tree(dir: &Path, files: &[(String, Vec<u8>)]) -> PathBuf {
    let t = dir.join("tree");
    for (name, data) in files {
        let f = t.join(name);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    t
}

/// genisoimage's hybrid: ISO9660 and UDF 1.02 over the same files.
fn hybrid(dir: &Path, label: &str) -> PathBuf {
    let t = tree(dir, &files());
    let img = dir.join("hybrid.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-udf",
            "-R",
            "-J",
            "-V",
            label,
            "-o",
            p(&img),
            p(&t),
        ],
    );
    img
}

/// The hybrid with its ISO9660 descriptors gone: the volume recognition
/// sequence (BEA01, NSR02, TEA01) moved to sector 16, where a UDF-only
/// disc has it.
fn udf_only(hybrid: &Path, dir: &Path) -> PathBuf {
    let mut d = std::fs::read(hybrid).unwrap();
    let vrs: Vec<usize> = (16..32)
        .filter(|s| {
            let id = &d[s * SECTOR + 1..s * SECTOR + 6];
            [&b"BEA01"[..], b"NSR02", b"NSR03", b"TEA01"].contains(&id)
        })
        .collect();
    assert_eq!(vrs.len(), 3, "genisoimage's VRS: {vrs:?}");
    let moved: Vec<Vec<u8>> = vrs
        .iter()
        .map(|s| d[s * SECTOR..(s + 1) * SECTOR].to_vec())
        .collect();
    d[16 * SECTOR..32 * SECTOR].fill(0);
    for (i, s) in moved.iter().enumerate() {
        d[(16 + i) * SECTOR..(17 + i) * SECTOR].copy_from_slice(s);
    }
    let out = dir.join("udf-only.img");
    std::fs::write(&out, d).unwrap();
    out
}

fn udfinfo(img: &Path) -> String {
    run("udfinfo", &[p(img)])
}

fn read(img: &Path) -> Result<seeds::seed::Seed, SeedError> {
    read_seed(Cursor::new(std::fs::read(img).unwrap()))
}

#[test]
fn a_udf_only_dvd_is_read_with_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = hybrid(dir.path(), "rd_rom");
    let img = udf_only(&h, dir.path());
    let info = udfinfo(&img);
    assert!(info.contains("udfrev=1.02"), "{info}");
    assert!(info.contains("lvid=rd_rom"), "{info}");
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&img).unwrap()[16 * SECTOR..20 * SECTOR])
            .contains("CD001"),
        "ISO9660 descriptors left"
    );

    let seed = read(&img).unwrap();
    assert_eq!(seed.kind, FsKind::Udf);
    assert_eq!(seed.label, "rd_rom");
    let want: BTreeMap<String, Vec<u8>> = files().into_iter().collect();
    assert_eq!(
        seed.files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert_eq!(seed.files, want);
    assert!(seed.not_regular.is_empty());
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(
        probe(Cursor::new(&bytes)),
        Some((FsKind::Udf, "rd_rom".into()))
    );

    // The hybrid itself is read as ISO9660, with the same files.
    let iso = read(&h).unwrap();
    assert_eq!(iso.kind, FsKind::Iso9660);
    assert_eq!(iso.get("ovf-env.xml"), seed.get("ovf-env.xml"));
}

#[test]
fn mkudffs_volumes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    for (rev, want) in [("0x0201", "udfrev=2.01"), ("0x0102", "udfrev=1.02")] {
        let img = dir.path().join(format!("m{rev}.udf"));
        run(
            "mkudffs",
            &[
                "--media-type=hd",
                "--blocksize=2048",
                &format!("--udfrev={rev}"),
                "--label=prov",
                p(&img),
                "2048",
            ],
        );
        let info = udfinfo(&img);
        assert!(info.contains(want), "{info}");
        let seed = read(&img).unwrap_or_else(|e| panic!("{rev}: {e}"));
        assert_eq!(seed.kind, FsKind::Udf, "{rev}");
        assert_eq!(seed.label, "prov", "{rev}");
        assert!(seed.files.is_empty(), "{rev}: {:?}", seed.files.keys());
    }
    // mkudffs' default for a hard disk, 512-byte blocks, is refused as
    // such: the reader knows 2048 only.
    let img = dir.path().join("512.udf");
    run(
        "mkudffs",
        &[
            "--media-type=hd",
            "--blocksize=512",
            "--label=prov",
            p(&img),
            "8192",
        ],
    );
    assert!(udfinfo(&img).contains("blocksize=512"));
    assert!(
        matches!(
            read(&img),
            Err(SeedError::NotSeed) | Err(SeedError::Corrupt { .. })
        ),
        "{:?}",
        read(&img).map(|s| s.kind)
    );
}

#[test]
fn limits_hold_on_udf() {
    let dir = tempfile::tempdir().unwrap();
    let img = udf_only(&hybrid(dir.path(), "rd_rom"), dir.path());
    let bytes = std::fs::read(&img).unwrap();
    let small = Limits {
        max_file_size: 100_000,
        ..Limits::default()
    };
    let e = read_seed_with_limits(Cursor::new(&bytes), &small).unwrap_err();
    assert!(
        matches!(&e, SeedError::Limit { fs: FsKind::Udf, reason } if reason.contains("big.bin")),
        "{e}"
    );
    let shallow = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    let e = read_seed_with_limits(Cursor::new(&bytes), &shallow).unwrap_err();
    assert!(matches!(e, SeedError::Limit { .. }), "{e}");
    let few = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let e = read_seed_with_limits(Cursor::new(&bytes), &few).unwrap_err();
    assert!(matches!(e, SeedError::Limit { .. }), "{e}");
}

#[test]
fn damaged_udf_is_refused_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = udf_only(&hybrid(dir.path(), "rd_rom"), dir.path());
    let good = std::fs::read(&img).unwrap();
    // Every byte of the descriptors and the directory area, flipped one at
    // a time: an error or (where the byte is not covered by a CRC, such as
    // reserved space or file data) a seed, never a panic. Where the byte is
    // in a tagged descriptor the reader uses, an error.
    let used_end = 300 * SECTOR;
    let mut refused = 0;
    let mut d = good.clone();
    for at in (16 * SECTOR..used_end).step_by(61) {
        d[at] ^= 0x5A;
        match read_seed(Cursor::new(&d)) {
            Ok(_) => {}
            Err(SeedError::Io(e)) => panic!("I/O error on a byte flip at {at}: {e}"),
            Err(_) => refused += 1,
        }
        d[at] ^= 0x5A;
    }
    assert!(refused > 30, "only {refused} flips refused");

    // A truncated image: the anchor's sequence lies past the end.
    let cut = &good[..257 * SECTOR];
    assert!(read_seed(Cursor::new(cut)).is_err());
}
