//! Discovery on a temporary root: seed images made by `genisoimage`,
//! `xorriso` and `mkfs.vfat` + `mcopy` are placed as files under a fake
//! `/dev`, named in a fake `/sys/class/block`, so the real scan runs; the
//! metadata services are a loopback server.

use super::*;
use crate::testutil::sh;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

const ENV: &str = "#cloud-config\n\
ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF0 admin@example\"]\n\
appliance:\n  domain: ecs.example.org\n  storage: {ignore: {volatile: true, data: true}}\n\
ecs:\n  settings: \"SECRET_KEY = 'TOP-SECRET-42'\"\n  vault_encrypt: enc\n  vault_sign: sign\n";

fn env_for(domain: &str) -> String {
    ENV.replace("ecs.example.org", domain)
}

enum Maker {
    Genisoimage,
    Xorriso,
    Vfat,
    /// genisoimage's ISO9660/UDF hybrid with the ISO9660 descriptors
    /// removed (its UDF recognition sequence moved to sector 16), as a
    /// UDF-only DVD.
    UdfOnly,
}

/// A seed image with `files` (path, content), labelled `label`.
fn seed_image(
    dir: &Path,
    name: &str,
    label: &str,
    files: &[(&str, &str)],
    maker: Maker,
) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    for (p, c) in files {
        let f = tree.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    let img = dir.join(format!("{name}.img"));
    let (i, t) = (img.to_str().unwrap(), tree.to_str().unwrap());
    match maker {
        Maker::Genisoimage => {
            sh(
                "genisoimage",
                &["-quiet", "-o", i, "-V", label, "-J", "-R", t],
            );
        }
        Maker::Xorriso => {
            sh(
                "xorriso",
                &[
                    "-as", "mkisofs", "-quiet", "-o", i, "-V", label, "-J", "-R", t,
                ],
            );
        }
        Maker::UdfOnly => {
            sh("genisoimage", &["-quiet", "-udf", "-o", i, "-V", label, t]);
            let mut d = fs::read(&img).unwrap();
            const S: usize = 2048;
            let vrs: Vec<Vec<u8>> = (16..32)
                .filter(|s| [&b"BEA01"[..], b"NSR02", b"TEA01"].contains(&&d[s * S + 1..s * S + 6]))
                .map(|s| d[s * S..(s + 1) * S].to_vec())
                .collect();
            assert_eq!(vrs.len(), 3, "genisoimage's UDF recognition sequence");
            d[16 * S..32 * S].fill(0);
            for (k, v) in vrs.iter().enumerate() {
                d[(16 + k) * S..(17 + k) * S].copy_from_slice(v);
            }
            fs::write(&img, d).unwrap();
        }
        Maker::Vfat => {
            File::create(&img).unwrap().set_len(2 << 20).unwrap();
            sh("mkfs.vfat", &["-n", label, i]);
            let mut made = std::collections::BTreeSet::new();
            for (p, _) in files {
                let parts: Vec<&str> = p.split('/').collect();
                for k in 1..parts.len() {
                    let d = format!("::/{}", parts[..k].join("/"));
                    if made.insert(d.clone()) {
                        sh("mmd", &["-i", i, &d]);
                    }
                }
                let src = tree.join(p);
                sh(
                    "mcopy",
                    &["-i", i, src.to_str().unwrap(), &format!("::/{p}")],
                );
            }
        }
    }
    img
}

/// A fake root: `/sys/class/block`, `/dev`, `/run`.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["sys/class/block", "dev", "run", "app", "work"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    /// Attaches `img` as block device `name`.
    fn attach(&self, name: &str, img: &Path) {
        fs::create_dir_all(self.path().join("sys/class/block").join(name)).unwrap();
        fs::copy(img, self.path().join("dev").join(name)).unwrap();
    }

    /// A device that is no seed (zeros, or a filesystem of another label).
    fn attach_bytes(&self, name: &str, bytes: &[u8]) {
        fs::create_dir_all(self.path().join("sys/class/block").join(name)).unwrap();
        fs::write(self.path().join("dev").join(name), bytes).unwrap();
    }

    fn sources(&self) -> Sources {
        Sources::under(self.path())
    }
}

fn cidata(root: &Root, name: &str, env: &str, maker: Maker, label: &str) -> PathBuf {
    seed_image(
        &root.work(),
        name,
        label,
        &[("user-data", env), ("meta-data", "instance-id: i-1\n")],
        maker,
    )
}

fn config2(root: &Root, name: &str, env: &str) -> PathBuf {
    seed_image(
        &root.work(),
        name,
        "config-2",
        &[
            ("openstack/latest/user_data", env),
            ("openstack/latest/meta_data.json", "{\"uuid\": \"x\"}"),
        ],
        Maker::Genisoimage,
    )
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn cidata_iso_by_genisoimage_published_once() {
    let root = Root::new();
    let img = cidata(&root, "seed", ENV, Maker::Genisoimage, "cidata");
    root.attach_bytes("vda", &vec![0u8; 1 << 20]);
    root.attach("sr0", &img);
    let d = run(&root.sources()).unwrap();
    assert_eq!((d.kind, d.origin.as_str()), (Kind::Cidata, "/dev/sr0"));
    assert_eq!(d.env.appliance.domain, "ecs.example.org");
    assert_eq!(d.written, ["/run/active-env.yml", "/run/active-env.env"]);

    let yml = root.path().join("run/active-env.yml");
    let envf = root.path().join("run/active-env.env");
    assert_eq!((mode(&yml), mode(&envf)), (0o600, 0o600));
    assert_eq!(
        fs::read_to_string(&yml).unwrap(),
        format!("{ENV}USERDATA_TYPE: cidata\n")
    );
    let flat = fs::read_to_string(&envf).unwrap();
    assert_eq!(flat, d.env.flatten_for_units());
    assert!(flat.contains("export APPLIANCE_DOMAIN="), "{flat}");

    // A second run finds the same and writes nothing.
    let before = (stamp(&yml), stamp(&envf));
    let d2 = run(&root.sources()).unwrap();
    assert!(d2.written.is_empty(), "{:?}", d2.written);
    assert_eq!((stamp(&yml), stamp(&envf)), before);

    // A mode loosened behind our back is put right (a new file, 0600).
    fs::set_permissions(&yml, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        run(&root.sources()).unwrap().written,
        ["/run/active-env.yml"]
    );
    assert_eq!(mode(&yml), 0o600);
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn cidata_iso_by_xorriso_upper_case_label() {
    let root = Root::new();
    let img = cidata(&root, "seed", ENV, Maker::Xorriso, "CIDATA");
    root.attach("sr1", &img);
    let f = find(&root.sources()).unwrap();
    assert_eq!((f.kind, f.origin.as_str()), (Kind::Cidata, "/dev/sr1"));
    assert_eq!(f.bytes, ENV.as_bytes());
}

#[test]
fn cidata_vfat_on_a_partition() {
    let root = Root::new();
    let img = cidata(&root, "seed", ENV, Maker::Vfat, "CIDATA");
    root.attach_bytes("vdb", &vec![0u8; 4096]);
    root.attach("vdb1", &img);
    let f = find(&root.sources()).unwrap();
    assert_eq!((f.kind, f.origin.as_str()), (Kind::Cidata, "/dev/vdb1"));
    assert_eq!(f.bytes, ENV.as_bytes());
}

#[test]
fn config2_drive() {
    let root = Root::new();
    let img = config2(&root, "cfg", ENV);
    root.attach("vdc", &img);
    let d = run(&root.sources()).unwrap();
    assert_eq!((d.kind, d.origin.as_str()), (Kind::Config2, "/dev/vdc"));
    let yml = fs::read_to_string(root.path().join("run/active-env.yml")).unwrap();
    assert!(yml.ends_with("\nUSERDATA_TYPE: config-2\n"), "{yml}");
}

#[test]
fn precedence() {
    if !crate::testutil::root_or_skip("an /app/env.yml owned by root") {
        return;
    }
    let root = Root::new();
    // Every source carries a different domain; the seeds agree with each
    // other only when there is one of them.
    let env_yml = root.work().join("explicit.yml");
    fs::write(&env_yml, env_for("explicit.example.org")).unwrap();
    fs::write(root.path().join("app/env.yml"), env_for("app.example.org")).unwrap();
    let c = cidata(
        &root,
        "c",
        &env_for("cidata.example.org"),
        Maker::Genisoimage,
        "cidata",
    );
    let k = config2(&root, "k", &env_for("config2.example.org"));
    let srv = Server::start(|_| Some((200, env_for("ec2.example.org").into_bytes())));

    let mut s = root.sources();
    s.env_yml = Some(env_yml.clone());
    s.urls.ec2 = Some(srv.base.clone());
    root.attach("sr0", &c);
    let domain = |s: &Sources| run(s).unwrap().env.appliance.domain;
    assert_eq!(domain(&s), "explicit.example.org");
    s.env_yml = None;
    assert_eq!(domain(&s), "app.example.org");
    fs::remove_file(root.path().join("app/env.yml")).unwrap();
    assert_eq!(domain(&s), "cidata.example.org");
    assert!(
        srv.requests().is_empty(),
        "network asked though a seed exists"
    );
    fs::remove_file(root.path().join("dev/sr0")).unwrap();
    root.attach("vdc", &k);
    assert_eq!(domain(&s), "config2.example.org");
    fs::remove_file(root.path().join("dev/vdc")).unwrap();
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::Ec2, "ec2.example.org")
    );
    assert_eq!(d.origin, format!("{}/latest/user-data", srv.base));

    // An agreeing cidata and config-2 pair: cidata is named.
    root.attach("sr0", &c);
    let same = config2(&root, "same", &env_for("cidata.example.org"));
    root.attach("vda", &same);
    let f = find(&s).unwrap();
    assert_eq!((f.kind, f.origin.as_str()), (Kind::Cidata, "/dev/sr0"));

    // $ENV_YML named but absent: an error, not a fallback.
    s.env_yml = Some(root.work().join("missing.yml"));
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("$ENV_YML") && msg.contains("missing.yml"),
        "{msg}"
    );
}

#[test]
fn disagreeing_seeds_name_both_devices() {
    let root = Root::new();
    let a = cidata(&root, "a", ENV, Maker::Genisoimage, "cidata");
    let b = cidata(
        &root,
        "b",
        &env_for("other.example.org"),
        Maker::Vfat,
        "CIDATA",
    );
    root.attach("sr0", &a);
    root.attach("vdb", &b);
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(
        msg.contains("/dev/sr0") && msg.contains("/dev/vdb"),
        "{msg}"
    );
    assert!(msg.contains("different envs"), "{msg}");

    // The same env twice is fine.
    let b2 = cidata(&root, "b2", ENV, Maker::Vfat, "CIDATA");
    root.attach("vdb", &b2);
    assert_eq!(find(&root.sources()).unwrap().origin, "/dev/sr0");
}

#[test]
fn seed_without_user_data_is_an_error() {
    let root = Root::new();
    let img = seed_image(
        &root.work(),
        "empty",
        "cidata",
        &[("meta-data", "instance-id: x\n")],
        Maker::Genisoimage,
    );
    root.attach("sr0", &img);
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(msg.contains("/dev/sr0 has no user-data"), "{msg}");
}

#[test]
fn corrupt_seed_beside_a_good_one_is_passed_over_with_a_warning() {
    let root = Root::new();
    let bad = cidata(&root, "bad", ENV, Maker::Genisoimage, "cidata");
    // The volume descriptors survive (it is labelled cidata), its
    // directories do not.
    let bytes = fs::read(&bad).unwrap();
    root.attach_bytes("sr0", &bytes[..19 * 2048]);
    let good = cidata(&root, "good", ENV, Maker::Vfat, "CIDATA");
    root.attach("vdb", &good);
    let found = find(&root.sources()).unwrap();
    assert_eq!(found.origin, "/dev/vdb");
    assert_eq!(found.bytes, ENV.as_bytes());
    let w = found.warnings.join("\n");
    assert!(
        w.contains("reading the cidata volume /dev/sr0")
            && w.contains("corrupt iso9660")
            && w.contains("using /dev/vdb"),
        "{w}"
    );
    assert!(!w.contains("TOP-SECRET"), "{w}");

    // Alone, it is the error.
    fs::remove_dir(root.path().join("sys/class/block/vdb")).unwrap();
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(msg.contains("reading the cidata volume /dev/sr0"), "{msg}");
}

#[test]
fn rock_ridge_symlink_as_user_data_is_refused() {
    let root = Root::new();
    let tree = root.work().join("link.tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("meta-data"), "instance-id: i-1\n").unwrap();
    std::os::unix::fs::symlink("meta-data", tree.join("user-data")).unwrap();
    let img = root.work().join("link.iso");
    sh(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            img.to_str().unwrap(),
            "-V",
            "cidata",
            "-R",
            tree.to_str().unwrap(),
        ],
    );
    root.attach("sr0", &img);
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(
        msg.contains("the cidata volume /dev/sr0: user-data is a symlink; refusing it"),
        "{msg}"
    );
}

#[test]
fn vfat_label_of_the_root_directory_wins() {
    let root = Root::new();
    let img = cidata(&root, "v", ENV, Maker::Vfat, "CIDATA");
    let mut bytes = fs::read(&img).unwrap();
    // The boot sector's label (FAT12/16: at byte 43) says otherwise; the
    // root directory's volume label entry still says CIDATA, as blkid reads.
    assert_eq!(&bytes[43..54], b"CIDATA     ");
    bytes[43..54].copy_from_slice(b"OTHER      ");
    root.attach_bytes("vdb", &bytes);
    let found = find(&root.sources()).unwrap();
    assert_eq!(
        (found.kind, found.origin.as_str()),
        (Kind::Cidata, "/dev/vdb")
    );
}

#[test]
fn app_env_yml_never_through_a_link() {
    let root = Root::new();
    let secret = root.path().join("work/root-only");
    fs::write(&secret, "password: TOP-SECRET-42\n").unwrap();
    let env = root.path().join("app/env.yml");
    std::os::unix::fs::symlink(&secret, &env).unwrap();
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(msg.contains("reading /app/env.yml"), "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
    fs::remove_file(&env).unwrap();
    fs::hard_link(&secret, &env).unwrap();
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(msg.contains("other hard links"), "{msg}");
    assert!(!msg.contains("TOP-SECRET"), "{msg}");
}

#[test]
fn loop_devices_skipped_unless_asked() {
    let root = Root::new();
    let img = cidata(&root, "seed", ENV, Maker::Genisoimage, "cidata");
    root.attach("loop0", &img);
    root.attach_bytes("ram0", b"");
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(msg.contains("0 block device(s)"), "{msg}");
    let mut s = root.sources();
    s.include_virtual = true;
    assert_eq!(find(&s).unwrap().origin, "/dev/loop0");
}

#[test]
fn nothing_anywhere_says_where_it_looked() {
    let root = Root::new();
    root.attach_bytes("vda", &vec![0u8; 1 << 16]);
    let other = seed_image(
        &root.work(),
        "o",
        "OTHER",
        &[("x", "y")],
        Maker::Genisoimage,
    );
    root.attach("sr0", &other);
    // A device listed without a node (not readable) is passed over.
    fs::create_dir_all(root.path().join("sys/class/block/vdz")).unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let srv = Server::start(|_| Some((404, Vec::new())));
    let mut s = root.sources();
    s.urls.ec2 = Some(closed_base);
    s.urls.gce = Some(srv.base.clone());
    let msg = format!("{:#}", find(&s).unwrap_err());
    for want in [
        "no env found",
        "$ENV_YML (not set)",
        "/app/env.yml (absent)",
        "2 block device(s) (no volume labelled cidata or config-2)",
        "ec2 metadata http://127.0.0.1:",
        "/latest/user-data (connecting",
        "gce metadata",
        "(no user-data)",
    ] {
        assert!(msg.contains(want), "{want:?} missing in: {msg}");
    }
}

#[test]
fn invalid_env_shows_the_problems_not_the_secrets() {
    let root = Root::new();
    let bad = ENV.replace("domain: ecs.example.org", "domain: [not, a, string]")
        + "  vault_sign_typo: TOP-SECRET-42\n";
    let img = cidata(&root, "seed", &bad, Maker::Genisoimage, "cidata");
    root.attach("sr0", &img);
    let msg = format!("{:#}", run(&root.sources()).unwrap_err());
    assert!(msg.starts_with("invalid env (cidata /dev/sr0):"), "{msg}");
    assert!(msg.contains("/dev/sr0:user-data:"), "{msg}");
    assert!(msg.contains("appliance.domain"), "{msg}");
    assert!(!msg.contains("TOP-SECRET-42"), "{msg}");
    assert!(!root.path().join("run/active-env.yml").exists());
}

#[test]
fn userdata_type_line() {
    let f = |bytes: &[u8]| {
        String::from_utf8(active_env_yml(&Found {
            kind: Kind::Local,
            origin: "/app/env.yml".into(),
            bytes: bytes.to_vec(),
            warnings: Vec::new(),
            provisioned: Provisioned::default(),
        }))
        .unwrap()
    };
    assert_eq!(f(b"a: 1"), "a: 1\nUSERDATA_TYPE: local\n");
    assert_eq!(f(b"a: 1\n"), "a: 1\nUSERDATA_TYPE: local\n");
    assert_eq!(
        f(b"a: 1\nUSERDATA_TYPE: cidata\nb:\n  USERDATA_TYPE: kept\n"),
        "a: 1\nb:\n  USERDATA_TYPE: kept\nUSERDATA_TYPE: local\n"
    );
    assert_eq!(f(b""), "USERDATA_TYPE: local\n");
}

#[test]
fn ec2_with_token_then_gce_with_its_header() {
    let root = Root::new();
    let ec2 = Server::start(|req| {
        if req.starts_with("PUT /latest/api/token ") {
            assert!(req.contains("X-aws-ec2-metadata-token-ttl-seconds: 60\r\n"));
            Some((200, b"TOKEN123".to_vec()))
        } else if req.starts_with("GET /latest/user-data ") {
            if req.contains("X-aws-ec2-metadata-token: TOKEN123\r\n") {
                Some((200, env_for("ec2.example.org").into_bytes()))
            } else {
                Some((401, Vec::new()))
            }
        } else {
            Some((404, Vec::new()))
        }
    });
    let mut s = root.sources();
    s.urls.ec2 = Some(ec2.base.clone());
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::Ec2, "ec2.example.org")
    );
    let yml = fs::read_to_string(root.path().join("run/active-env.yml")).unwrap();
    assert!(yml.ends_with("USERDATA_TYPE: ec2\n"), "{yml}");
    let reqs = ec2.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].contains(&format!("Host: {}\r\n", &ec2.base[7..])));

    // IMDSv1 only (the token is refused): a plain GET.
    let v1 = Server::start(|req| {
        if req.starts_with("PUT ") {
            Some((403, Vec::new()))
        } else {
            Some((200, env_for("v1.example.org").into_bytes()))
        }
    });
    s.urls.ec2 = Some(v1.base.clone());
    assert_eq!(
        find(&s).unwrap().bytes,
        env_for("v1.example.org").as_bytes()
    );

    // No EC2 user-data; GCE answers only with Metadata-Flavor: Google.
    let none = Server::start(|_| Some((404, Vec::new())));
    let gce = Server::start(|req| {
        if !req.contains("Metadata-Flavor: Google\r\n") {
            Some((403, Vec::new()))
        } else if req.starts_with("GET /computeMetadata/v1/instance/attributes/user-data ") {
            Some((200, env_for("gce.example.org").into_bytes()))
        } else {
            Some((404, Vec::new()))
        }
    });
    s.urls.ec2 = Some(none.base.clone());
    s.urls.gce = Some(gce.base.clone());
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::Gce, "gce.example.org")
    );
    let yml = fs::read_to_string(root.path().join("run/active-env.yml")).unwrap();
    assert!(yml.ends_with("USERDATA_TYPE: gce\n"), "{yml}");
}

#[test]
fn a_silent_metadata_service_times_out_in_3s() {
    let root = Root::new();
    let silent = Server::start(|_| None);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut s = root.sources();
    s.urls.ec2 = Some(silent.base.clone());
    s.urls.gce = Some(closed_base);
    assert_eq!(s.timeout, Duration::from_secs(3));
    let t = Instant::now();
    let msg = format!("{:#}", find(&s).unwrap_err());
    let took = t.elapsed();
    // At least the 3 s timeout; the upper bound only proves it does not
    // hang (a loaded CI machine can be slow to wake the thread).
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(30),
        "took {took:?}: {msg}"
    );
    assert!(msg.contains("timed out"), "{msg}");
}

#[test]
fn answers_parsed() {
    let r = http::parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    let r = http::parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
    assert_eq!(r.status, 404);
    assert!(http::parse_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
    assert!(
        http::parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc")
            .is_err()
    );
    assert!(http::parse_answer(b"garbage").is_err());
    assert!(http::parse_answer(b"SSH-2.0\r\n\r\n").is_err());
}

#[test]
fn addresses_and_names() {
    let far = Instant::now() + Duration::from_secs(3);
    assert_eq!(
        http::resolve("169.254.169.254", far).unwrap(),
        "169.254.169.254:80".parse().unwrap()
    );
    assert_eq!(
        http::resolve("127.0.0.1:8080", far).unwrap(),
        "127.0.0.1:8080".parse().unwrap()
    );
    assert_eq!(http::resolve("localhost:81", far).unwrap().port(), 81);
    let msg = format!("{:#}", http::get("https://x/", &[], far).err().unwrap());
    assert!(msg.contains("only http://"), "{msg}");
}

/// What a test server answers: status and body, or `None` for silence.
type Route = fn(&str) -> Option<(u16, Vec<u8>)>;

/// A test server's answer.
pub(super) enum Reply {
    /// Status, `Content-Type` (none: no header), body.
    Answer(u16, Option<&'static str>, Vec<u8>),
    /// Headers promising `n` bytes (`usize::MAX`: no `Content-Length`),
    /// then `x`s in 64 KiB pieces, as long as the client reads.
    Endless(u16, usize),
    /// The headers, then silence.
    Stall,
    /// Nothing at all.
    Silence,
}

type Handler = Box<dyn Fn(&str) -> Reply + Send + Sync>;

/// A loopback server answering `route(request)`; it records each request
/// (its head, and its body when it declares one).
pub(super) struct Server {
    pub(super) base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(route: Route) -> Server {
        Server::with(move |req| match route(req) {
            Some((status, body)) => Reply::Answer(status, None, body),
            None => Reply::Silence,
        })
    }

    pub(super) fn with(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let route: Arc<Handler> = Arc::new(Box::new(route));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let rec = rec.clone();
                let route = route.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let end = text.find("\r\n\r\n").unwrap() + 4;
                    let declared = text.lines().find_map(|l| {
                        l.strip_prefix("Content-Length: ")
                            .and_then(|n| n.trim().parse::<usize>().ok())
                    });
                    let mut req = head;
                    while req.len() < end + declared.unwrap_or(0) {
                        match conn.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&b[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).into_owned();
                    rec.lock().unwrap().push(text.clone());
                    match route(&text) {
                        Reply::Answer(status, ctype, body) => {
                            let ct = ctype
                                .map(|c| format!("Content-Type: {c}\r\n"))
                                .unwrap_or_default();
                            let _ = write!(
                                conn,
                                "HTTP/1.0 {status} X\r\n{ct}Content-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let _ = conn.write_all(&body);
                        }
                        Reply::Endless(status, n) => {
                            // n == usize::MAX: no Content-Length at all.
                            let cl = if n == usize::MAX {
                                String::new()
                            } else {
                                format!("Content-Length: {n}\r\n")
                            };
                            let _ = write!(conn, "HTTP/1.0 {status} X\r\n{cl}\r\n");
                            let piece = vec![b'x'; 65536];
                            let mut sent = 0;
                            while sent < n {
                                if conn.write_all(&piece).is_err() {
                                    return;
                                }
                                sent += piece.len();
                            }
                        }
                        Reply::Stall => {
                            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n");
                            std::thread::sleep(Duration::from_secs(10));
                        }
                        Reply::Silence => std::thread::sleep(Duration::from_secs(10)),
                    }
                });
            }
        });
        Server { base, seen }
    }

    pub(super) fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn app_env_yml_that_root_does_not_own_is_passed_over() {
    if !crate::testutil::root_or_skip("an /app/env.yml owned by root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let env = root.path().join("app/env.yml");
    fs::write(&env, env_for("planted.example.org")).unwrap();
    // Written by the app user (any uid but root's): not an env.
    std::os::unix::fs::chown(&env, Some(1000), Some(1000)).unwrap();
    let msg = format!("{:#}", find(&root.sources()).unwrap_err());
    assert!(
        msg.contains("/app/env.yml passed over: owned by uid 1000"),
        "{msg}"
    );
    // A seed is used instead, with a warning.
    let img = cidata(&root, "seed", ENV, Maker::Genisoimage, "cidata");
    root.attach("sr0", &img);
    let found = find(&root.sources()).unwrap();
    assert_eq!(found.kind, Kind::Cidata);
    assert!(
        found
            .warnings
            .iter()
            .any(|w| w.contains("/app/env.yml passed over")),
        "{:?}",
        found.warnings
    );
    // Root's, but writable by others: passed over as well.
    std::os::unix::fs::chown(&env, Some(0), Some(0)).unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o666)).unwrap();
    let found = find(&root.sources()).unwrap();
    assert_eq!(found.kind, Kind::Cidata);
    // Root's and only root's: the env.
    fs::set_permissions(&env, fs::Permissions::from_mode(0o600)).unwrap();
    let found = find(&root.sources()).unwrap();
    assert_eq!(
        (found.kind, found.origin.as_str()),
        (Kind::Local, "/app/env.yml")
    );
}

mod sources;
