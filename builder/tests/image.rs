//! End-to-end tests of the main command on a real Ubuntu noble tree:
//! every built image is checked with the standard tools, builds are
//! reproducible, bad input exits with 2 and a clear message, and the disk
//! boots under SeaBIOS and OVMF.
//!
//! They need root (the tree is root's) and the host tools from
//! scripts/install-host-deps.sh; a missing tool fails the test, with the
//! tool's name, instead of skipping it. The noble tree is built once per
//! machine (see `qemu_tests::fixtures`).

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{assert_ok as ok, run_ok as run};
use qemu_tests::{fixtures, require_tool, Firmware, Vm};

/// Heavy tests (tree copies, mkfs, QEMU) take turns: the machine has two cores.
static HEAVY: Mutex<()> = Mutex::new(());

const ENV: &str = "#cloud-config\n\
appliance:\n  domain: test.example.org\n  storage:\n    ignore: {data: true, volatile: true}\n\
ecs:\n  settings: s\n  vault_encrypt: SECRET-ENCRYPT-KEY-42\n  vault_sign: SECRET-SIGN-KEY-42\n";
const EPOCH: &str = "1700000000";

const TOOLS: &[&str] = &[
    "mkfs.ext4",
    "e2fsck",
    "debugfs",
    "mkfs.fat",
    "fsck.fat",
    "mmd",
    "mcopy",
    "mdir",
    "sgdisk",
    "blkid",
    "qemu-img",
    "losetup",
    "cp",
    "chattr",
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
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn imgbuild(args: &[&str]) -> Output {
    common::imgbuild_at(EPOCH, args)
}

fn bad(o: &Output, needle: &str) {
    common::assert_bad(o, &[needle]);
}

/// A private copy of the noble tree with the boot-marker unit.
fn marker_tree(work: &Path) -> PathBuf {
    let t = work.join("tree");
    fixtures::copy_tree(&fixtures::boot_tree().unwrap(), &t).unwrap();
    fixtures::add_marker_unit(&t).unwrap();
    t
}

fn write_env(dir: &Path) -> PathBuf {
    let p = dir.join("env.yml");
    fs::write(&p, ENV).unwrap();
    p
}

fn manifest(dir: &Path, stem: &str) -> serde_json::Value {
    let text = fs::read_to_string(dir.join(format!("{stem}.manifest.json"))).unwrap();
    assert!(!text.contains("SECRET-"), "the manifest carries a secret");
    serde_json::from_str(&text).unwrap()
}

fn sums(dir: &Path) -> String {
    fs::read_to_string(dir.join("ecs.SHA256SUMS")).unwrap()
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).unwrap();
    b
}

/// A read-only loop device over part of a file, detached on drop.
struct Loop(String);

impl Loop {
    fn new(file: &Path, offset: u64, size: u64) -> Loop {
        let dev = run(
            "losetup",
            &[
                "--read-only",
                "--find",
                "--show",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
                file.to_str().unwrap(),
            ],
        );
        Loop(dev.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn blkid(dev: &str) -> String {
    run("blkid", &["-p", "-o", "export", dev])
}

/// Everything the issue asks to check on a built raw image.
fn check_image(raw: &Path, m: &serde_json::Value, tree: &Path, scratch: &Path) {
    let layout = &m["disk"]["layout"];
    let part = |name: &str| {
        (
            layout[name]["offset"].as_u64().unwrap(),
            layout[name]["size"].as_u64().unwrap(),
        )
    };
    let raw_s = raw.to_str().unwrap();

    // GPT.
    let v = run("sgdisk", &["-v", raw_s]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let p3 = run("sgdisk", &["-i", "3", raw_s]);
    assert!(p3.contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), "{p3}");
    let p1 = run("sgdisk", &["-i", "1", raw_s]);
    assert!(p1.contains("21686148-6449-6E6F-744E-656564454649"), "{p1}");
    assert!(blkid(raw_s).contains("PTTYPE=gpt"));

    // MBR: GRUB's boot code with core.img's sector, then the protective MBR.
    let (bios_off, _) = part("bios_boot");
    let mbr = read_range(raw, 0, 512);
    let boot_img = fs::read(tree.join("usr/lib/grub/i386-pc/boot.img")).unwrap();
    assert_eq!(
        &mbr[0x68..0x1b8],
        &boot_img[0x68..0x1b8],
        "GRUB boot code in the MBR"
    );
    assert_eq!(mbr[..2], boot_img[..2], "boot.img's jump");
    assert_eq!(
        u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
        bios_off / 512
    );
    assert_eq!(mbr[0x1c2], 0xee, "protective MBR partition");
    assert_eq!(&mbr[0x1fe..], &[0x55, 0xaa]);
    // core.img's blocklist: the rest of core.img right after its first sector.
    let core0 = read_range(raw, bios_off, 512);
    assert_eq!(
        u64::from_le_bytes(core0[0x1f4..0x1fc].try_into().unwrap()),
        bios_off / 512 + 1
    );

    // ESP.
    let (esp_off, esp_size) = part("esp");
    let esp = scratch.join("esp.part");
    fs::write(&esp, read_range(raw, esp_off, esp_size)).unwrap();
    let esp_s = esp.to_str().unwrap();
    run("fsck.fat", &["-n", esp_s]);
    let b = blkid(esp_s);
    assert!(b.contains("TYPE=vfat") && b.contains("LABEL=ESP"), "{b}");
    let d = Command::new("mdir")
        .args(["-i", esp_s, "::/EFI/BOOT/BOOTX64.EFI"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(d.status.success(), "no BOOTX64.EFI on the ESP");
    fs::remove_file(&esp).unwrap();

    // Root.
    let (root_off, root_size) = part("root");
    let lo = Loop::new(raw, root_off, root_size);
    run("e2fsck", &["-fn", &lo.0]);
    let b = blkid(&lo.0);
    assert!(b.contains("TYPE=ext4") && b.contains("LABEL=root"), "{b}");
    let uuid = m["disk"]["root_uuid"].as_str().unwrap();
    assert!(b.contains(&format!("UUID={uuid}")), "{b}");
    let cfg = run("debugfs", &["-R", "cat /boot/grub/grub.cfg", &lo.0]);
    assert!(cfg.contains(&format!("root=UUID={uuid}")), "{cfg}");
    assert!(cfg.contains("console=ttyS0,115200"), "{cfg}");
}

#[test]
fn image_passes_the_tools_checks_and_is_reproducible() {
    let _g = setup();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = marker_tree(work.path());
    let env = write_env(work.path());
    let tree_s = tree.to_str().unwrap();
    let env_s = env.to_str().unwrap();
    let out = |name: &str| {
        let d = work.path().join(name);
        fs::create_dir(&d).unwrap();
        d
    };

    // Raw, twice.
    let (a, b) = (out("a"), out("b"));
    for d in [&a, &b] {
        let t = Instant::now();
        ok(&imgbuild(&[
            "--env",
            env_s,
            "--tree",
            tree_s,
            "-o",
            d.join("ecs.raw").to_str().unwrap(),
        ]));
        eprintln!("raw build: {:.1}s", t.elapsed().as_secs_f64());
    }
    let m = manifest(&a, "ecs");
    check_image(&a.join("ecs.raw"), &m, &tree, work.path());
    assert_eq!(sums(&a), sums(&b), "raw image and seed reproducible");
    assert!(sums(&a).contains("  ecs.seed.iso\n"));
    let packages = m["packages"].as_array().unwrap();
    assert!(packages.iter().any(|p| p["name"] == "linux-image-virtual"));
    assert!(fs::metadata(a.join("ecs.seed.iso")).unwrap().len() > 0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(a.join("ecs.seed.iso")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the seed holds secrets");
    let leftovers: Vec<_> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    fs::remove_dir_all(&b).unwrap();

    // qcow2, twice; compressed qcow2 once, from the same raw, twice.
    let (c, d) = (out("c"), out("d"));
    for dir in [&c, &d] {
        ok(&imgbuild(&[
            "--env",
            env_s,
            "--tree",
            tree_s,
            "-o",
            dir.join("ecs.qcow2").to_str().unwrap(),
        ]));
    }
    assert_eq!(sums(&c), sums(&d), "qcow2 reproducible");
    let info = run("qemu-img", &["info", c.join("ecs.qcow2").to_str().unwrap()]);
    assert!(info.contains("file format: qcow2"), "{info}");
    for i in 0..2 {
        imgbuild::output::convert(
            &a.join("ecs.raw"),
            &work.path().join(format!("z{i}.qcow2")),
            imgbuild::output::Format::Qcow2,
            true,
        )
        .unwrap();
    }
    for i in 0..2 {
        let v = work.path().join(format!("v{i}/ecs.vmdk"));
        fs::create_dir(v.parent().unwrap()).unwrap();
        imgbuild::output::convert(
            &a.join("ecs.raw"),
            &v,
            imgbuild::output::Format::Vmdk,
            false,
        )
        .unwrap();
        imgbuild::output::set_vmdk_cid(&v, 0x1234_5678).unwrap();
    }
    assert_eq!(
        imgbuild::output::sha256_file(&work.path().join("v0/ecs.vmdk")).unwrap(),
        imgbuild::output::sha256_file(&work.path().join("v1/ecs.vmdk")).unwrap(),
        "vmdk reproducible once its CID is fixed"
    );
    let z0 = imgbuild::output::sha256_file(&work.path().join("z0.qcow2")).unwrap();
    let z1 = imgbuild::output::sha256_file(&work.path().join("z1.qcow2")).unwrap();
    assert_eq!(z0, z1, "compressed qcow2 reproducible");
    eprintln!(
        "sizes: raw allocated {} MiB, qcow2 {} MiB, compressed qcow2 {} MiB, virtual {} MiB",
        imgbuild::output::allocated_bytes(&a.join("ecs.raw")).unwrap() >> 20,
        fs::metadata(c.join("ecs.qcow2")).unwrap().len() >> 20,
        fs::metadata(work.path().join("z0.qcow2")).unwrap().len() >> 20,
        m["image"]["virtual_size"].as_u64().unwrap() >> 20
    );

    // Baked env: at /app/env.yml, mode 0600, no seed; existing outputs need --force.
    let e = out("e");
    let raw_e = e.join("ecs.raw");
    let args = [
        "--env",
        env_s,
        "--tree",
        tree_s,
        "--bake-env",
        "-o",
        raw_e.to_str().unwrap(),
    ];
    ok(&imgbuild(&args));
    assert!(!e.join("ecs.seed.iso").exists());
    assert_eq!(
        fs::metadata(&raw_e).unwrap().permissions().mode() & 0o777,
        0o600,
        "an image with a baked env holds its secrets: owner only"
    );
    bad(&imgbuild(&args), "--force");
    let me = manifest(&e, "ecs");
    let root = &me["disk"]["layout"]["root"];
    let lo = Loop::new(
        &raw_e,
        root["offset"].as_u64().unwrap(),
        root["size"].as_u64().unwrap(),
    );
    let stat = run("debugfs", &["-R", "stat /app/env.yml", &lo.0]);
    assert!(
        stat.contains("Mode:  0600") && stat.contains("User:     0"),
        "{stat}"
    );
    let cat = run("debugfs", &["-R", "cat /app/env.yml", &lo.0]);
    assert_eq!(cat, ENV);
}

/// The same build as a fixed VHD (booted under SeaBIOS) and as a VHDX
/// (under OVMF): two of the formats QEMU reads besides qcow2, which the boot
/// suite boots.
#[test]
fn disk_boots_with_seabios_and_ovmf() {
    let _g = setup();
    require_tool(qemu_tests::QEMU).unwrap();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = marker_tree(work.path());
    let env = write_env(work.path());
    let image = |suffix: &str| work.path().join(format!("ecs.{suffix}"));
    for suffix in ["vhd", "vhdx"] {
        let t = Instant::now();
        ok(&imgbuild(&[
            "--env",
            env.to_str().unwrap(),
            "--tree",
            tree.to_str().unwrap(),
            "--cmdline",
            qemu_tests::TCG_SAFE_CMDLINE,
            "--force",
            "-o",
            image(suffix).to_str().unwrap(),
        ]));
        eprintln!("{suffix} build: {:.1}s", t.elapsed().as_secs_f64());
    }
    fs::remove_dir_all(&tree).unwrap();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (fw, name, suffix, format) in [
        (Firmware::Bios, "bios", "vhd", "vpc"),
        (Firmware::Uefi, "uefi", "vhdx", "vhdx"),
    ] {
        let boot = Vm::new(logs.join(format!("disk-boot-{name}.log")))
            .firmware(fw)
            .disk(image(suffix), format)
            .cdrom(work.path().join("ecs.seed.iso"))
            .snapshot(true)
            .timeout(Duration::from_secs(360))
            .run_until(&format!("{} firmware={name}", fixtures::BOOT_MARKER))
            .unwrap_or_else(|e| panic!("{name} boot of the {suffix}: {e:#}"));
        eprintln!(
            "{name} from the {suffix}: marker after {:.1}s ({:?})",
            boot.marker_after.as_secs_f64(),
            boot.accel
        );
    }
}

#[test]
fn bad_input_exits_2_and_says_what_is_wrong() {
    let _g = setup();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let env = write_env(work.path());
    let env_s = env.to_str().unwrap();
    let big_tree = fixtures::boot_tree().unwrap();
    let big = big_tree.to_str().unwrap();
    let o = |name: &str| work.path().join(name).to_str().unwrap().to_string();

    // Output paths and formats.
    bad(
        &imgbuild(&["--env", env_s, "--tree", big, "-o", &o("nope/ecs.qcow2")]),
        "does not exist",
    );
    bad(
        &imgbuild(&["--env", env_s, "--tree", big, "-o", &o("ecs.vpc")]),
        "cannot tell the image format",
    );
    bad(
        &imgbuild(&[
            "--env",
            env_s,
            "--tree",
            big,
            "--format",
            "vpc",
            "-o",
            &o("x.img"),
        ]),
        "unknown image format",
    );
    bad(
        &imgbuild(&[
            "--env",
            env_s,
            "--tree",
            big,
            "--compress",
            "-o",
            &o("x.raw"),
        ]),
        "--compress needs a qcow2",
    );
    let ro = work.path().join("ro");
    fs::create_dir(&ro).unwrap();
    run("chattr", &["+i", ro.to_str().unwrap()]);
    let r = imgbuild(&["--env", env_s, "--tree", big, "-o", &o("ro/ecs.qcow2")]);
    run("chattr", &["-i", ro.to_str().unwrap()]);
    bad(&r, "not writable");

    // An invalid env fails before anything slow (copying the big tree).
    let bad_env = work.path().join("bad.yml");
    fs::write(&bad_env, "#cloud-config\nappliance: {}\n").unwrap();
    let t = Instant::now();
    let r = imgbuild(&[
        "--env",
        bad_env.to_str().unwrap(),
        "--tree",
        big,
        "-o",
        &o("ecs.qcow2"),
    ]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    bad(&r, "bad.yml");
    bad(
        &imgbuild(&[
            "--env",
            &o("missing.yml"),
            "--tree",
            big,
            "-o",
            &o("ecs.qcow2"),
        ]),
        "missing.yml",
    );

    // Trees without a kernel, without GRUB.
    let small = work.path().join("small");
    fs::create_dir_all(small.join("usr/bin")).unwrap();
    let small_s = small.to_str().unwrap();
    let r = imgbuild(&["--env", env_s, "--tree", small_s, "-o", &o("k.raw")]);
    bad(&r, "no kernel");
    bad(&r, "10-boot");
    fs::create_dir_all(small.join("boot")).unwrap();
    fs::write(small.join("boot/vmlinuz-6"), "k").unwrap();
    fs::write(small.join("boot/initrd.img-6"), "i").unwrap();
    std::os::unix::fs::symlink("boot/vmlinuz-6", small.join("vmlinuz")).unwrap();
    std::os::unix::fs::symlink("boot/initrd.img-6", small.join("initrd.img")).unwrap();
    let r = imgbuild(&["--env", env_s, "--tree", small_s, "-o", &o("g.raw")]);
    bad(&r, "lacks GRUB files");
    bad(&r, "grub-pc-bin");
    assert!(!work.path().join("g.raw").exists());

    // A --size below what the tree needs says how much it needs.
    let r = imgbuild(&[
        "--env",
        env_s,
        "--tree",
        big,
        "--size",
        "300M",
        "-o",
        &o("s.raw"),
    ]);
    bad(&r, "too small");
    bad(&r, "needs a disk of at least");
    let left: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".imgbuild"))
        .collect();
    assert!(left.is_empty(), "work directories left behind: {left:?}");
}
