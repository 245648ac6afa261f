//! Every output format, checked by its own tool: `qemu-img info`, `check`
//! and `compare` for the disk formats (VHD: fixed, its footer, a whole
//! number of MiB), GNU tar, `sha256sum` and `xmllint` for the OVA, GNU tar
//! and `cmp` for the GCE tar; the same raw disk gives the same bytes twice
//! in every format, and bad format arguments exit with 2 and list the
//! formats.
//!
//! They need root (the test tree is root's) and the host tools from
//! scripts/install-host-deps.sh; a missing tool fails the test with its
//! name. The OVF descriptor is checked structurally with XPath (the DMTF
//! envelope schema cannot be fetched on these machines): well-formed, and
//! every element an import reads is there with the right values.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Instant;

use common::{assert_bad as bad, assert_ok as ok, run_ok as run};
use imgbuild::output::{self, Format, Identity};
use qemu_tests::{fixtures, require_tool};

static HEAVY: Mutex<()> = Mutex::new(());

/// The Common OVF Tool, in the venv scripts/install-host-deps.sh makes.
const COT: &str = "/opt/imgbuild-tests/cot/bin/cot";

const ENV: &str = "#cloud-config\n\
appliance:\n  domain: test.example.org\n  storage:\n    ignore: {data: true, volatile: true}\n\
ecs:\n  settings: s\n  vault_encrypt: SECRET-ENCRYPT-KEY-42\n  vault_sign: SECRET-SIGN-KEY-42\n";
const EPOCH: i64 = 1_700_000_000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const TOOLS: &[&str] = &[
    "qemu-img",
    "tar",
    "gzip",
    "sha256sum",
    "xmllint",
    "cmp",
    "mkfs.ext4",
    "mkfs.fat",
    "mcopy",
];

fn setup() -> std::sync::MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests need root: the root tree and its device nodes belong to root"
    );
    for t in TOOLS {
        require_tool(t).unwrap();
    }
    assert!(
        Path::new(COT).is_file(),
        "{COT} is missing: run scripts/install-host-deps.sh"
    );
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn imgbuild(args: &[&str]) -> Output {
    common::imgbuild_at(&EPOCH.to_string(), args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha(p: &Path) -> String {
    output::sha256_file(p).unwrap()
}

/// `qemu-img info`, the format probed, or given with `-f` (`force`).
fn info_as(p: &Path, force: Option<&str>) -> serde_json::Value {
    let mut c = Command::new("qemu-img");
    c.args(["info", "--output=json"]);
    if let Some(f) = force {
        c.args(["-f", f]);
    }
    let o = c.arg(p).output().unwrap();
    assert!(o.status.success(), "qemu-img info {}", p.display());
    assert!(
        o.stderr.is_empty(),
        "qemu-img info {} warned: {}",
        p.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn info(p: &Path) -> serde_json::Value {
    info_as(p, None)
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("ecs.manifest.json")).unwrap()).unwrap()
}

fn xpath(file: &Path, expr: &str) -> String {
    run("xmllint", &["--xpath", expr, s(file)])
        .trim()
        .to_string()
}

/// One format's checks on `img`, converted from `raw`.
fn check_disk_format(raw: &Path, img: &Path, format: Format) {
    let qemu = format.qemu_name().unwrap();
    let virtual_size = fs::metadata(raw).unwrap().len();
    // A fixed VHD has no header, only a footer: QEMU does not probe it (a
    // raw disk it would read), so it is read as `-f vpc`, which checks the
    // footer and its checksum.
    if format == Format::Vhd {
        assert_eq!(info(img)["format"], "raw");
    }
    let i = info_as(img, (format == Format::Vhd).then_some("vpc"));
    assert_eq!(i["format"], qemu, "{format}: {i}");
    assert_eq!(i["virtual-size"], virtual_size, "{format}: {i}");
    // `qemu-img check` knows the formats with metadata to check.
    if matches!(
        format,
        Format::Qcow2 | Format::Vmdk | Format::Vhdx | Format::Vdi
    ) {
        run("qemu-img", &["check", "-f", qemu, s(img)]);
    }
    let cmp = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", qemu, s(raw), s(img)],
    );
    assert!(cmp.contains("Images are identical"), "{format}: {cmp}");
    match format {
        Format::Vmdk => {
            assert_eq!(
                i["format-specific"]["data"]["create-type"], "streamOptimized",
                "{i}"
            );
        }
        Format::Vhd => {
            // Fixed: the disk's bytes, then the footer, and nothing else.
            let len = fs::metadata(img).unwrap().len();
            assert_eq!(
                len,
                virtual_size + 512,
                "a fixed VHD is the disk and a footer"
            );
            assert_eq!(virtual_size % MIB, 0, "Azure wants whole MiB");
            let bytes = read_at(img, len - 512, 512);
            assert_eq!(&bytes[..8], b"conectix");
            assert_eq!(
                u32::from_be_bytes(bytes[60..64].try_into().unwrap()),
                2,
                "fixed"
            );
            let size = u64::from_be_bytes(bytes[48..56].try_into().unwrap());
            assert_eq!(size, virtual_size, "the footer's current size");
            let footer: [u8; 512] = bytes.try_into().unwrap();
            assert_eq!(
                u32::from_be_bytes(footer[64..68].try_into().unwrap()),
                output::stamp::vhd_checksum(&footer)
            );
        }
        _ => {}
    }
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

/// The OVA's members in order, with `tar -tvf`'s owner column.
fn check_ova(ova: &Path, virtual_size: u64, scratch: &Path) {
    let list = run("tar", &["-tvf", s(ova), "--full-time"]);
    let lines: Vec<&str> = list.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ecs.ovf", "ecs.mf", "ecs-disk1.vmdk"],
        "descriptor, manifest, disk:\n{list}"
    );
    for l in &lines {
        assert!(l.starts_with("-rw-r--r-- root/root "), "{l}");
        assert!(
            l.contains(" 2023-11-14 22:13:20 "),
            "mtime from SOURCE_DATE_EPOCH: {l}"
        );
    }
    let x = scratch.join("ova-x");
    fs::create_dir(&x).unwrap();
    run("tar", &["-xf", s(ova), "-C", s(&x)]);
    // The manifest's sums, checked by sha256sum against the members.
    let mf = fs::read_to_string(x.join("ecs.mf")).unwrap();
    let mut mf_lines = mf.lines();
    for member in ["ecs.ovf", "ecs-disk1.vmdk"] {
        let line = mf_lines.next().unwrap();
        let want = format!("SHA256({member})= ");
        assert!(line.starts_with(&want), "{mf}");
        let sum = run("sha256sum", &[s(&x.join(member))]);
        assert_eq!(&line[want.len()..], sum.split_whitespace().next().unwrap());
    }
    assert!(mf_lines.next().is_none(), "{mf}");
    // The descriptor: well-formed, and what an import reads.
    let ovf = x.join("ecs.ovf");
    run("xmllint", &["--noout", s(&ovf)]);
    let vmdk = x.join("ecs-disk1.vmdk");
    let ns = |e: &str| format!("//*[local-name()='{e}']");
    assert_eq!(
        xpath(
            &ovf,
            &format!("string({}/@*[local-name()='version'])", ns("Envelope"))
        ),
        "1.0"
    );
    assert_eq!(
        xpath(
            &ovf,
            &format!("string({}/@*[local-name()='href'])", ns("File"))
        ),
        "ecs-disk1.vmdk"
    );
    assert_eq!(
        xpath(
            &ovf,
            &format!("string({}/@*[local-name()='size'])", ns("File"))
        ),
        fs::metadata(&vmdk).unwrap().len().to_string(),
        "References: the vmdk's size"
    );
    assert_eq!(
        xpath(
            &ovf,
            &format!("string({}/@*[local-name()='capacity'])", ns("Disk"))
        ),
        virtual_size.to_string(),
        "DiskSection: the virtual size"
    );
    assert!(xpath(
        &ovf,
        &format!("string({}/@*[local-name()='format'])", ns("Disk"))
    )
    .ends_with("#streamOptimized"));
    assert_eq!(
        xpath(
            &ovf,
            &format!("string({}/@*[local-name()='id'])", ns("VirtualSystem"))
        ),
        "ecs"
    );
    assert_eq!(xpath(&ovf, &format!("string({})", ns("Name"))), "ecs");
    assert_eq!(
        xpath(&ovf, &format!("count({})", ns("NetworkSection"))),
        "1"
    );
    assert_eq!(
        xpath(&ovf, &format!("count({})", ns("OperatingSystemSection"))),
        "1"
    );
    // One item each: CPU 3, memory 4, SCSI controller 6, disk 17, NIC 10.
    for t in ["3", "4", "6", "17", "10"] {
        assert_eq!(
            xpath(
                &ovf,
                &format!(
                    "count({}[*[local-name()='ResourceType']='{t}'])",
                    ns("Item")
                )
            ),
            "1",
            "ResourceType {t}"
        );
    }
    assert_eq!(
        xpath(
            &ovf,
            &format!(
                "string({}[*[local-name()='ResourceType']='17']/*[local-name()='HostResource'])",
                ns("Item")
            )
        ),
        "ovf:/disk/vmdisk1"
    );
    // A second reader of the whole OVA: the Common OVF Tool's summary of
    // the disk and the hardware. (COT 2.2.1 checks an OVF 1.x manifest as
    // SHA-1 whatever its lines say, and logs that as an error; the sums
    // were checked with sha256sum above.)
    let cot = Command::new(COT).args(["info", s(ova)]).output().unwrap();
    assert!(cot.status.success(), "cot info: {cot:?}");
    let summary = String::from_utf8_lossy(&cot.stdout);
    let line = |start: &str| {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} in cot info:\n{summary}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let disk = line("ecs-disk1.vmdk");
    let d: Vec<&str> = disk.split(' ').collect();
    assert_eq!(&d[5..], ["harddisk", "@", "SCSI", "0:0"], "{summary}");
    let unit = |u: &str| match u {
        "MiB" => MIB as f64,
        "GiB" => GIB as f64,
        _ => panic!("unit {u:?} in {disk:?}"),
    };
    let capacity = d[3].parse::<f64>().unwrap() * unit(d[4]);
    assert!(
        (capacity - virtual_size as f64).abs() < virtual_size as f64 / 100.0,
        "cot's capacity {disk:?}, want {virtual_size} bytes"
    );
    assert_eq!(line("SCSI device types:"), "SCSI device types: lsilogic");
    assert_eq!(
        line("Ethernet device types:"),
        "Ethernet device types: E1000"
    );
    assert!(
        line("None (default)").starts_with("None (default) 2 4 GiB 1 0 1"),
        "{summary}"
    );
    assert_eq!(line("Network adapter 1"), "Network adapter 1 : VM Network");

    // The disk inside, by qemu-img.
    let i = info(&vmdk);
    assert_eq!(i["format"], "vmdk");
    assert_eq!(i["virtual-size"], virtual_size);
    assert_eq!(
        i["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    run("qemu-img", &["check", "-f", "vmdk", s(&vmdk)]);
}

/// The GCE tar: exactly `disk.raw`, GNU format (sparse), its bytes the disk's.
fn check_gce(tgz: &Path, raw: &Path, scratch: &Path) {
    let size = fs::metadata(raw).unwrap().len();
    assert_eq!(size % GIB, 0, "GCE wants whole GiB");
    let list = run("tar", &["-tzvf", s(tgz)]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "{list}");
    let f: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(f[1], "root/root", "{list}");
    assert_eq!(f[2], size.to_string(), "{list}");
    assert_eq!(*f.last().unwrap(), "disk.raw", "{list}");
    // GNU format: the old GNU magic, a sparse member.
    let mut h = vec![0u8; 512];
    std::io::Read::read_exact(
        &mut flate2::read::GzDecoder::new(fs::File::open(tgz).unwrap()),
        &mut h,
    )
    .unwrap();
    assert_eq!(h.len(), 512);
    assert_eq!(&h[257..265], b"ustar  \0", "old GNU magic");
    assert_eq!(h[156], b'S', "GNU sparse member");
    run("gzip", &["-t", s(tgz)]);
    let x = scratch.join("gce-x");
    fs::create_dir(&x).unwrap();
    run("tar", &["-xzf", s(tgz), "-C", s(&x)]);
    run("cmp", &[s(raw), s(&x.join("disk.raw"))]);
    fs::remove_dir_all(&x).unwrap();
}

#[test]
fn every_format_passes_its_tools_checks_and_is_reproducible() {
    let _g = setup();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let w = work.path();
    let tree = w.join("tree");
    fixtures::copy_tree(&fixtures::boot_tree().unwrap(), &tree).unwrap();
    let env = w.join("env.yml");
    fs::write(&env, ENV).unwrap();
    let dir = |name: &str| {
        let d = w.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let build = |out: &Path, extra: &[&str]| {
        let t = Instant::now();
        let mut args = vec!["--env", s(&env), "--tree", s(&tree), "-o", s(out)];
        args.extend_from_slice(extra);
        ok(&imgbuild(&args));
        eprintln!("build {}: {:.1}s", out.display(), t.elapsed().as_secs_f64());
    };

    // A raw disk of 2 GiB, and the GCE tar of the same build: its disk.raw
    // is that raw disk, byte for byte.
    let a = dir("a");
    let raw = a.join("ecs.raw");
    build(&raw, &["--size", "2G"]);
    let g = dir("g");
    build(&g.join("ecs.tar.gz"), &["--size", "2G"]);
    check_gce(&g.join("ecs.tar.gz"), &raw, w);
    let mg = manifest(&g);
    assert_eq!(mg["image"]["file"], "ecs.tar.gz");
    assert_eq!(mg["image"]["format"], "gce");
    assert_eq!(mg["image"]["virtual_size"], 2 * GIB);
    let sums = fs::read_to_string(g.join("ecs.SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{}  ecs.tar.gz\n", sha(&g.join("ecs.tar.gz")))),
        "{sums}"
    );
    assert!(sums.contains("  ecs.seed.iso\n"), "{sums}");

    // The OVA of a build of the default size.
    let o = dir("o");
    build(&o.join("ecs.ova"), &[]);
    let mo = manifest(&o);
    assert_eq!(mo["image"]["format"], "ova");
    let vs = mo["image"]["virtual_size"].as_u64().unwrap();
    check_ova(&o.join("ecs.ova"), vs, w);
    let sums = fs::read_to_string(o.join("ecs.SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{}  ecs.ova\n", sha(&o.join("ecs.ova")))));

    // Every format from the 2 GiB raw disk, twice, as the build converts.
    let id = Identity {
        name: "ecs".into(),
        disk_guid: [0x42; 16],
        epoch: EPOCH,
    };
    let mut sizes = Vec::new();
    for format in [
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Vdi,
        Format::Ova,
        Format::Gce,
    ] {
        let mut shas = Vec::new();
        for i in 0..2 {
            let d = dir(&format!("{format}{i}"));
            let out = d.join(format!("ecs.{}", format.suffixes()[0]));
            let t = Instant::now();
            output::write_image(&raw, &out, format, false, &id).unwrap();
            let secs = t.elapsed().as_secs_f64();
            match format {
                Format::Ova => check_ova(&out, 2 * GIB, &dir(&format!("x-{format}{i}"))),
                Format::Gce => check_gce(&out, &raw, &dir(&format!("x-{format}{i}"))),
                _ => check_disk_format(&raw, &out, format),
            }
            shas.push(sha(&out));
            if i == 0 {
                sizes.push(format!(
                    "{format} {} MiB in {secs:.1}s",
                    fs::metadata(&out).unwrap().len() / MIB
                ));
            }
            let stray: Vec<PathBuf> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p != &out)
                .collect();
            assert!(stray.is_empty(), "{format}: left {stray:?}");
        }
        assert_eq!(shas[0], shas[1], "{format} reproducible");
        if format == Format::Gce {
            assert_eq!(
                shas[0],
                sha(&g.join("ecs.tar.gz")),
                "the build's GCE tar is its raw disk's"
            );
        }
    }
    eprintln!("from a 2 GiB disk: {}", sizes.join(", "));
}

#[test]
fn bad_format_arguments_exit_2_and_list_the_formats() {
    let _g = setup();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let env = work.path().join("env.yml");
    fs::write(&env, ENV).unwrap();
    let tree = fixtures::boot_tree().unwrap();
    let o = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["--env", s(&env), "--tree", s(&tree)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let go = |extra: &[&str]| {
        let a = args(extra);
        let r: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
        imgbuild(&r)
    };
    bad(
        &go(&["-o", &o("ecs.gz")]),
        &[
            "cannot tell the image format",
            ".raw, .img, .qcow2, .vmdk, .vhd, .vhdx, .vdi, .ova, .tar.gz",
            "--format",
        ],
    );
    bad(
        &go(&["--format", "vpc", "-o", &o("ecs.bin")]),
        &[
            "unknown image format \"vpc\"",
            "raw, qcow2, vmdk, vhd, vhdx, vdi, ova, gce",
        ],
    );
    bad(
        &go(&["--format", "vhdx", "-o", &o("ecs.vhd")]),
        &["conflicts with the output's name", "vhd"],
    );
    bad(
        &go(&["--size", "1500M", "-o", &o("ecs.tar.gz")]),
        &["not a whole number of GiB", "gce", "--size 2G"],
    );
    bad(
        &go(&[
            "--format",
            "gce",
            "--size",
            "3000M",
            "-o",
            &o("ecs.img.bin"),
        ]),
        &["--size 2.9 GiB is not a whole number of GiB", "--size 3G"],
    );
    bad(
        &go(&["--compress", "-o", &o("ecs.vhd")]),
        &["--compress needs a qcow2 output, not vhd"],
    );
    let long = "x".repeat(100);
    bad(
        &go(&["-o", &o(&format!("{long}.ova"))]),
        &["too long for an OVA"],
    );
    // Nothing was written.
    let left: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "env.yml")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // `imgbuild run` boots disks, not the archives that hold one.
    for (name, what) in [
        ("x.ova", "ova is an archive"),
        ("x.tar.gz", "gce is an archive"),
    ] {
        fs::write(work.path().join(name), b"not a disk").unwrap();
        bad(
            &imgbuild(&["run", &o(name)]),
            &[what, "not a disk QEMU boots"],
        );
    }
}
