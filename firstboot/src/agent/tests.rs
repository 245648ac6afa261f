//! The whole agent in a temp root: fake sysfs, image-file disks, a cidata
//! seed made by genisoimage.

use super::*;
use crate::sysfs::fake::FakeSys;
use crate::table::DiskFile;
use crate::testutil::{enlarge, make_gpt_image, sh};
use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::MetadataExt;

const MIB: u64 = 1 << 20;

const ENV: &str = r#"#cloud-config
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF0 admin@example"]
appliance:
  domain: ecs.example.org
  storage:
    volatile: {size: 32M}
    data: {device: /dev/vdb}
ecs:
  settings: "SECRET_KEY = 'hunter2-very-secret'"
  vault_encrypt: enc
  vault_sign: sign
"#;

#[derive(Default)]
struct Mounts(RefCell<Vec<PathBuf>>);
impl Mounter for Mounts {
    fn mount(&self, _d: &Path, mp: &Path) -> Result<()> {
        self.0.borrow_mut().push(mp.into());
        Ok(())
    }
}

struct World {
    fake: FakeSys,
    root: PathBuf,
}

impl World {
    fn new(env: &str) -> World {
        let fake = FakeSys::new();
        let dev = fake.dir.path().join("dev");
        let vda = dev.join("vda");
        make_gpt_image(&vda, 64 * MIB);
        let gpt = DiskFile::open_image(&vda, 512).unwrap().read_gpt().unwrap();
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
        enlarge(&vda, 256 * MIB);
        fake.disk("vda", (252, 0), 256 * MIB / 512, 512);
        for n in 1..=3u32 {
            let e = &gpt[n];
            fake.partition(
                "vda",
                &format!("vda{n}"),
                n,
                (252, n),
                e.starting_lba,
                e.ending_lba - e.starting_lba + 1,
            );
            fs::write(dev.join(format!("vda{n}")), b"").unwrap();
        }
        fs::File::create(dev.join("vdb"))
            .unwrap()
            .set_len(64 * MIB)
            .unwrap();
        fake.disk("vdb", (252, 16), 64 * MIB / 512, 512);
        // The seed.
        let tree = fake.dir.path().join("seed");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("user-data"), env).unwrap();
        fs::write(tree.join("meta-data"), "instance-id: i-1\n").unwrap();
        let iso = dev.join("sr0");
        sh(
            "genisoimage",
            &[
                "-quiet",
                "-o",
                iso.to_str().unwrap(),
                "-V",
                "cidata",
                "-J",
                "-r",
                tree.to_str().unwrap(),
            ],
        );
        let len = fs::metadata(&iso).unwrap().len();
        fake.disk("sr0", (11, 0), len / 512, 2048);
        fake.mountinfo("22 1 252:3 / / rw - ext4 /dev/vda3 rw\n");
        // The system root holds the fake sys/ and dev/ too (discovery reads
        // <root>/sys/class/block and <root>/dev).
        let root = fake.dir.path().to_path_buf();
        for d in ["etc", "run", "root", "app/etc/flags"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\napp:x:999:998::/app:/bin/bash\npostgres:x:105:110::/var/lib/postgresql:/bin/bash\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:998:\npostgres:x:110:\n",
        )
        .unwrap();
        fs::write(root.join("etc/fstab"), "UUID=x / ext4 defaults 0 1\n").unwrap();
        World { fake, root }
    }

    fn run(&self) -> (Result<Ended>, Log, u8, Vec<PathBuf>) {
        let m = Mounts::default();
        let open = |p: &Path| DiskFile::open_image(p, 512);
        let a = Agent {
            root: self.root.clone(),
            sys: self.fake.system(),
            sources: crate::discover::Sources::under(&self.root),
            cmdline: Cmdline::default(),
            storage: true,
            open: &open,
            mounter: &m,
            set_running_hostname: false,
        };
        let mut log = Log::quiet();
        let r = a.run(&mut log);
        let code = finish(&self.root, &r, &mut log);
        (r, log, code, m.0.into_inner())
    }
}

#[test]
fn first_and_second_boot() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let w = World::new(ENV);
    let (r, log, code, mounts) = w.run();
    assert_eq!(code, 0, "{r:?}");
    let s = log.summary("ok");
    assert!(
        s.starts_with("ecs-firstboot: ok env=cidata grow=+")
            && s.contains(" data=created volatile=created "),
        "{s}"
    );
    assert_eq!(mounts, vec![w.root.join("data"), w.root.join("volatile")]);
    let yml = w.root.join("run/active-env.yml");
    assert_eq!(fs::metadata(&yml).unwrap().mode() & 0o777, 0o600);
    assert!(fs::read_to_string(&yml)
        .unwrap()
        .ends_with("USERDATA_TYPE: cidata\n"));
    assert!(w.root.join(handoff::READY).exists());
    assert_eq!(
        fs::read_to_string(w.root.join("etc/hostname")).unwrap(),
        "ecs.example.org\n"
    );
    let v = sh(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            w.fake.dir.path().join("dev/vdb").to_str().unwrap(),
        ],
    );
    assert!(v.contains("LABEL=ecs-data\n"), "{v}");
    // No secret in any line.
    for l in log.lines.iter().chain([&s]) {
        assert!(!l.contains("hunter2"), "secret leaked: {l}");
    }

    let (r2, log2, code2, _) = w.run();
    assert_eq!(code2, 0, "{r2:?}");
    let s2 = log2.summary("ok");
    assert!(
        s2.contains(" grow=no data=mounted volatile=mounted "),
        "{s2}"
    );
}

#[test]
fn standby_stops_before_storage() {
    let w = World::new(&ENV.replace(
        "  domain: ecs.example.org\n",
        "  domain: ecs.example.org\n  standby: true\n",
    ));
    let vda = w.fake.dir.path().join("dev/vda");
    let before = fs::read(&vda).unwrap().len();
    let (r, log, code, mounts) = w.run();
    assert_eq!((r.unwrap(), code), (Ended::Standby, 0));
    assert!(
        w.root.join("run/ecs-appliance/standby").is_file(),
        "the status page's standby marker"
    );
    assert!(log
        .summary("standby")
        .starts_with("ecs-firstboot: standby env=cidata standby=yes "));
    assert!(mounts.is_empty());
    assert!(w.root.join("run/active-env.yml").exists());
    assert!(
        !w.root.join(handoff::READY).exists(),
        "no hand-off in standby"
    );
    assert_eq!(fs::metadata(&vda).unwrap().len() as usize, before);
    let gpt = DiskFile::open_image(&vda, 512).unwrap().read_gpt().unwrap();
    assert_ne!(
        gpt.header.backup_lba,
        256 * MIB / 512 - 1,
        "disk not touched"
    );
}

#[test]
fn invalid_env_fails_closed() {
    let w = World::new(&ENV.replace("  domain: ecs.example.org\n", "  domain: [no]\n"));
    let (_, log, code, mounts) = w.run();
    assert_eq!(code, 1);
    assert!(mounts.is_empty());
    let reason = fs::read_to_string(w.root.join(handoff::FAILED)).unwrap();
    assert!(
        reason.starts_with("ecs-firstboot: env failed: invalid env"),
        "{reason}"
    );
    assert!(
        reason.contains("sr0:user-data:4:"),
        "names the line: {reason}"
    );
    assert!(!reason.contains("hunter2"));
    assert!(!w.root.join(handoff::READY).exists());
    assert!(log.summary("failed").contains("step=env"));
}

#[test]
fn storage_error_fails_closed() {
    // data on a device that carries a filesystem.
    let w = World::new(ENV);
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-L",
            "other",
            w.fake.dir.path().join("dev/vdb").to_str().unwrap(),
        ],
    );
    let (_, _, code, _) = w.run();
    assert_eq!(code, 1);
    let reason = fs::read_to_string(w.root.join(handoff::FAILED)).unwrap();
    assert!(
        reason.contains("storage failed") && reason.contains("is not blank"),
        "{reason}"
    );
}

/// Keys with no effect in this image are warned by name in the env step,
/// never with their value.
#[test]
fn keys_without_effect_are_warned() {
    let w = World::new(&ENV.replace(
        "  domain: ecs.example.org\n",
        "  domain: ecs.example.org\n  standby: true\n  allowed_hosts: hunter2.example.org\n  backup: {url: 'ssh://u:hunter2-pw@b/x'}\n",
    ));
    let (r, log, _, _) = w.run();
    r.unwrap();
    let all = log.lines.join("\n");
    assert!(
        all.contains("accepted, no effect in this image: appliance.allowed_hosts"),
        "{all}"
    );
    // Keys that take effect are not warned.
    for key in ["ecs.settings", "appliance.backup.url"] {
        assert!(
            !all.contains(&format!("no effect in this image: {key}")),
            "{all}"
        );
    }
    assert!(!all.contains("hunter2"), "{all}");
}
