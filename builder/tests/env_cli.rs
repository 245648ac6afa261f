//! `imgbuild env check` and `imgbuild seed` on good and bad input, through
//! the real binary: exit codes, messages, and no output file on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GOOD: &str = "#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMe admin@example\"]\nappliance:\n  domain: ecs.example.org\n  backup: {url: 'ssh://user:S3CR3T-PW@backup/x'}\necs:\n  settings: |\n    SECRET_KEY = 'S3CR3T-KEY'\n  vault_encrypt: S3CR3T-ENC\n  vault_sign: S3CR3T-SIGN\n";

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running imgbuild")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn good_env_checks_and_flattens() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let o = imgbuild(&["env", "check", env.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(!stderr(&o).contains("S3CR3T"), "{}", stderr(&o));
    let o = imgbuild(&["env", "check", env.to_str().unwrap(), "--flatten"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("export APPLIANCE_DOMAIN=ecs.example.org\n"),
        "{out}"
    );
    assert!(out.starts_with("export ECS_"), "{out}");
    let o = imgbuild(&[
        "env",
        "check",
        env.to_str().unwrap(),
        "--flatten",
        "--trees",
        ".",
        "--prefix",
        "",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("SSH_AUTHORIZED_KEYS_LEN=1\n"), "{out}");
}

/// Each bad env: exit 2, an error naming the problem, nothing else.
#[test]
fn bad_envs_exit_2_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let huge = format!("#cloud-config\nx: '{}'\n", "a".repeat(5 << 20));
    let with = |extra: &str| {
        GOOD.replace(
            "  domain: ecs.example.org\n",
            &format!("  domain: ecs.example.org\n{extra}"),
        )
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed",
            b"#cloud-config\nappliance: [1, 2\necs: {}\n".to_vec(),
            "malformed YAML",
        ),
        (
            "not-utf8",
            b"#cloud-config\nappliance: \xff\xfe\n".to_vec(),
            "not UTF-8 text",
        ),
        ("empty", Vec::new(), "empty: an env needs"),
        (
            "not-a-map",
            b"- a\n- b\n".to_vec(),
            "the top level must be a map",
        ),
        (
            "no-appliance",
            b"ecs: {settings: a, vault_encrypt: b, vault_sign: c}\n".to_vec(),
            "appliance: is required",
        ),
        (
            "no-ecs",
            b"appliance: {domain: a.b}\n".to_vec(),
            "ecs: is required",
        ),
        (
            "no-domain",
            GOOD.replace("  domain: ecs.example.org\n", "").into_bytes(),
            "appliance.domain: is required",
        ),
        (
            "no-settings",
            GOOD.replace("  settings: |\n    SECRET_KEY = 'S3CR3T-KEY'\n", "")
                .into_bytes(),
            "ecs.settings: is required",
        ),
        (
            "wrong-type",
            with("  standby: maybe\n").into_bytes(),
            "appliance.standby: \"maybe\" is not a boolean",
        ),
        (
            "bad-size",
            with("  storage: {data: {size: 12Q}}\n").into_bytes(),
            "appliance.storage.data.size: \"12Q\" is not a size",
        ),
        ("alias-bomb", bomb.into_bytes(), "alias bomb"),
        ("oversized", huge.into_bytes(), "too large"),
        (
            "unsourceable",
            with("  x-y: 1\n").into_bytes(),
            "appliance.x-y: makes the variable name",
        ),
        (
            "colliding",
            with("  a_b: 1\n  A_B: 2\n").into_bytes(),
            "both become `APPLIANCE_A_B`",
        ),
    ];
    for (name, bytes, want) in cases {
        let env = write(d.path(), &format!("{name}.yml"), &bytes);
        for args in [
            vec!["env", "check", env.to_str().unwrap()],
            vec![
                "seed",
                "--env",
                env.to_str().unwrap(),
                "-o",
                d.path().join(format!("{name}.iso")).to_str().unwrap(),
            ],
        ] {
            let t = std::time::Instant::now();
            let o = imgbuild(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
            assert!(
                err.lines().all(|l| l.starts_with("imgbuild: error: ")),
                "{name}: {err}"
            );
            assert!(
                !err.contains("panicked") && !err.contains("S3CR3T"),
                "{name}: {err}"
            );
            assert!(t.elapsed().as_secs() < 5, "{name} took {:?}", t.elapsed());
            assert!(
                !d.path().join(format!("{name}.iso")).exists(),
                "{name}: output written"
            );
        }
    }
}

#[test]
fn missing_env_file_and_output_dir() {
    let d = tempfile::tempdir().unwrap();
    let o = imgbuild(&["env", "check", d.path().join("nope.yml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.yml"), "{}", stderr(&o));
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let out = d.path().join("missing/seed.iso");
    let o = imgbuild(&[
        "seed",
        "--env",
        env.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("output directory") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn seed_cmd(env: &Path, out: &Path, epoch: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args([
            "seed",
            "--env",
            env.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .expect("running imgbuild seed")
}

#[test]
fn seed_is_private_reproducible_and_extractable() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let net = write(
        d.path(),
        "net.yml",
        b"version: 2\nethernets: {eth0: {dhcp4: true}}\n",
    );
    let a = d.path().join("a.iso");
    let b = d.path().join("b.iso");
    let c = d.path().join("c.iso");
    for (out, epoch) in [(&a, "1700000000"), (&b, "1700000000"), (&c, "1700000001")] {
        let o = seed_cmd(
            &env,
            out,
            epoch,
            &["--network-config", net.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(!stderr(&o).contains("S3CR3T"));
    }
    assert_eq!(
        fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(sha256(&a), sha256(&b), "same inputs and SOURCE_DATE_EPOCH");
    assert_ne!(sha256(&a), sha256(&c), "SOURCE_DATE_EPOCH is used");

    // An existing output is kept without --force, replaced with it.
    let o = seed_cmd(&env, &a, "1", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(sha256(&a), sha256(&b));
    let o = seed_cmd(&env, &a, "1", &["--force", "--instance-id", "i-test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Tools no one here wrote read what we wrote.
    let x = d.path().join("x");
    let o = Command::new("xorriso")
        .args([
            "-osirrox",
            "on",
            "-indev",
            a.to_str().unwrap(),
            "-extract",
            "/",
            x.to_str().unwrap(),
        ])
        .output()
        .expect("xorriso is needed (scripts/install-host-deps.sh installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(x.join("user-data")).unwrap(), GOOD.as_bytes());
    assert_eq!(
        fs::read_to_string(x.join("meta-data")).unwrap(),
        "instance-id: i-test\nlocal-hostname: ecs.example.org\n"
    );
    // The forced rewrite had no --network-config: the replaced seed has none.
    assert!(!x.join("network-config").exists());
    let o = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&a)
        .output()
        .expect("blkid");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("LABEL=cidata") && out.contains("TYPE=iso9660"),
        "{out}"
    );
}

#[test]
fn bad_seed_arguments() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let bad_net = write(d.path(), "net.yml", b"version: [2\n");
    let out = d.path().join("s.iso");
    for (extra, want) in [
        (
            vec!["--network-config", bad_net.to_str().unwrap()],
            "malformed YAML",
        ),
        (vec!["--instance-id", "a b"], "instance-id"),
    ] {
        let o = seed_cmd(&env, &out, "0", &extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(!out.exists());
    }
    let o = seed_cmd(&env, &out, "soon", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SOURCE_DATE_EPOCH"), "{}", stderr(&o));
}

/// Runs imgbuild; kills it after `secs` (a FIFO must never block it).
fn imgbuild_within(args: &[&str], secs: u64) -> Output {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running imgbuild");
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed().as_secs() >= secs {
            child.kill().unwrap();
            panic!("imgbuild {args:?} still runs after {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A regular file's bytes (never opening a FIFO).
fn contents(p: &Path) -> Option<Vec<u8>> {
    let m = fs::symlink_metadata(p).ok()?;
    m.file_type().is_file().then(|| fs::read(p).unwrap())
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// The CLI's rules for inputs and outputs: each bad command line exits 2
/// with a message naming the path, touches no file, shows no secret, and
/// returns at once.
#[test]
fn bad_paths_and_arguments_exit_2() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name);
    let s = |path: &Path| path.to_str().unwrap().to_string();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let env_copy = write(d.path(), "env.qcow2", GOOD.as_bytes());
    fs::hard_link(&env, p("linked.iso")).unwrap();
    fs::create_dir(p("dir.iso")).unwrap();
    fs::create_dir(p("dir.qcow2")).unwrap();
    symlink(p("nowhere"), p("dangling.iso")).unwrap();
    symlink(p("nowhere"), p("dangling.qcow2")).unwrap();
    let target = write(d.path(), "target.iso", b"keep");
    symlink(&target, p("link.iso")).unwrap();
    mkfifo(&p("fifo.iso"));
    mkfifo(&p("fifo.yml"));
    fs::create_dir(p("ro")).unwrap();
    fs::set_permissions(p("ro"), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let seed = |out: &Path, extra: &[&str]| {
        let mut v = vec![
            "seed".to_string(),
            "--env".into(),
            s(&env),
            "-o".into(),
            s(out),
        ];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let build = |extra: &[&str]| {
        let mut v = vec!["--env".to_string(), s(&env)];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let mut cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "format-conflicts-with-suffix",
            build(&["-o", &s(&p("x.qcow2")), "--format", "raw"]),
            "--format raw conflicts with the output's name".into(),
        ),
        (
            "seed-onto-the-env",
            seed(&env, &["--force"]),
            format!("output {} is the env", s(&env)),
        ),
        (
            "seed-onto-a-hard-link-of-the-env",
            seed(&p("linked.iso"), &["--force"]),
            "linked.iso is the env".into(),
        ),
        (
            "seed-onto-the-network-config",
            seed(
                &p("target.iso"),
                &["--force", "--network-config", &s(&p("target.iso"))],
            ),
            "target.iso is the network-config".into(),
        ),
        (
            "seed-onto-a-device",
            seed(Path::new("/dev/null"), &["--force"]),
            "/dev/null is a device node".into(),
        ),
        (
            "seed-onto-a-fifo",
            seed(&p("fifo.iso"), &["--force"]),
            "fifo.iso is a FIFO".into(),
        ),
        (
            "seed-onto-a-dangling-symlink",
            seed(&p("dangling.iso"), &[]),
            "dangling.iso is a symbolic link".into(),
        ),
        (
            "seed-onto-a-symlink",
            seed(&p("link.iso"), &["--force"]),
            "link.iso is a symbolic link".into(),
        ),
        (
            "seed-onto-a-directory",
            seed(&p("dir.iso"), &["--force"]),
            "dir.iso is a directory".into(),
        ),
        (
            "seed-into-an-unwritable-directory",
            seed(Path::new("/proc/sys/seed.iso"), &[]),
            "/proc/sys is not writable".into(),
        ),
        (
            "env-check-a-fifo",
            vec!["env".into(), "check".into(), s(&p("fifo.yml"))],
            "fifo.yml: not a regular file (a FIFO)".into(),
        ),
        (
            "seed-from-a-fifo",
            vec![
                "seed".into(),
                "--env".into(),
                s(&p("fifo.yml")),
                "-o".into(),
                s(&p("n.iso")),
            ],
            "fifo.yml: not a regular file (a FIFO)".into(),
        ),
        (
            "env-check-a-directory",
            vec!["env".into(), "check".into(), s(&p("dir.iso"))],
            "not a regular file (a directory)".into(),
        ),
        (
            "build-from-a-fifo",
            vec![
                "--env".into(),
                s(&p("fifo.yml")),
                "-o".into(),
                s(&p("n.qcow2")),
            ],
            "fifo.yml: not a regular file (a FIFO)".into(),
        ),
        (
            "build-seed-equal-to-output",
            build(&["-o", &s(&p("x.qcow2")), "--seed", &s(&p("x.qcow2"))]),
            "are the same file".into(),
        ),
        (
            "build-seed-equal-to-output-spelled-otherwise",
            build(&[
                "-o",
                &s(&p("x.qcow2")),
                "--seed",
                &format!("{}/./x.qcow2", s(d.path())),
            ]),
            "are the same file".into(),
        ),
        (
            "build-onto-the-env",
            vec![
                "--env".into(),
                s(&env_copy),
                "-o".into(),
                s(&env_copy),
                "--force".into(),
            ],
            "env.qcow2 is the env".into(),
        ),
        (
            "build-onto-a-directory",
            build(&["-o", &s(&p("dir.qcow2")), "--force"]),
            "dir.qcow2 is a directory".into(),
        ),
        (
            "build-onto-a-dangling-symlink",
            build(&["-o", &s(&p("dangling.qcow2"))]),
            "dangling.qcow2 is a symbolic link".into(),
        ),
        (
            "build-into-an-unwritable-directory",
            build(&["-o", "/proc/sys/x.qcow2"]),
            "/proc/sys is not writable".into(),
        ),
        (
            "build-option-with-a-subcommand",
            vec!["--force".into(), "env".into(), "check".into(), s(&env)],
            "cannot be used with '--force'".into(),
        ),
    ];
    if !root {
        // Root may write into a mode 0555 directory anyway.
        cases.push((
            "seed-into-a-read-only-directory",
            seed(&p("ro/seed.iso"), &[]),
            "is not writable".into(),
        ));
    }
    let before: Vec<(PathBuf, Option<Vec<u8>>)> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|f| (f.clone(), contents(&f)))
        .collect();
    for (name, args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = std::time::Instant::now();
        let o = imgbuild_within(&args, 10);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&want), "{name}: expected {want:?} in:\n{err}");
        assert!(
            !format!("{out}{err}").contains("S3CR3T"),
            "{name}: a secret in the output"
        );
        assert!(t.elapsed().as_secs() < 5, "{name} took {:?}", t.elapsed());
    }
    // Nothing was created, replaced or removed.
    let after: Vec<(PathBuf, Option<Vec<u8>>)> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|f| (f.clone(), contents(&f)))
        .collect();
    let mut before = before;
    let mut after = after;
    before.sort();
    after.sort();
    assert_eq!(before, after);
    assert!(fs::symlink_metadata(p("dangling.iso"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&env).unwrap(), GOOD.as_bytes());
}

/// `-q` and `-v` are global: before or after a subcommand.
#[test]
fn quiet_and_verbose_go_anywhere() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let e = env.to_str().unwrap();
    for args in [
        vec!["-q", "env", "check", e],
        vec!["env", "-q", "check", e],
        vec!["env", "check", "-q", e],
        vec!["env", "check", e, "--quiet"],
    ] {
        let o = imgbuild(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        // Only the warnings: GOOD sets keys with no effect in this image.
        assert!(
            stderr(&o)
                .lines()
                .all(|l| l.contains(" WARN ") && l.contains("no effect in this image")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let out = d.path().join("s.iso");
    for (i, args) in [
        vec!["-v", "seed", "--env", e, "-o"],
        vec!["seed", "-v", "--env", e, "-o"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = out.with_extension(format!("{i}.iso"));
        let mut args = args;
        args.push(out.to_str().unwrap());
        let o = imgbuild(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("wrote"), "{}", stderr(&o));
        assert!(out.exists());
    }
    let o = imgbuild(&["-q", "-v", "env", "check", e]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A temp file a killed `imgbuild seed` left (`.NAME.tmpPID`, its process
/// gone) is removed by the next run; one of a live writer is kept.
#[test]
fn leftover_temp_files_of_killed_runs_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let env = write(d.path(), "env.yml", GOOD.as_bytes());
    let out = d.path().join("seed.iso");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = write(d.path(), &format!(".seed.iso.tmp{dead}"), b"half a seed");
    let live = write(
        d.path(),
        &format!(".seed.iso.tmp{}", std::process::id()),
        b"being written",
    );
    let o = seed_cmd(&env, &out, "0", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stale.exists(), "the dead run's temp file is still there");
    assert!(live.exists(), "a live writer's temp file was removed");
    assert!(out.exists());
}

/// A key with no effect in this image is a warning naming it (never its
/// value); the exit code is unchanged, and a cloud-init key is not named.
#[test]
fn keys_without_effect_are_warned_by_name() {
    let d = tempfile::tempdir().unwrap();
    let src = GOOD
        .replace("#cloud-config\n", "#cloud-config\nruncmd: [echo hi]\n")
        .replace("  backup:", "  allowed_hosts: ecs.example.org\n  backup:");
    let env = write(d.path(), "env.yml", src.as_bytes());
    let e = env.to_str().unwrap();
    let iso = d.path().join("s.iso");
    for args in [
        vec!["env", "check", e],
        vec!["seed", "--env", e, "-o", iso.to_str().unwrap()],
    ] {
        let o = imgbuild(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "WARN {e}:6:3: accepted, no effect in this image: appliance.allowed_hosts\n"
            )),
            "{args:?}: {err}"
        );
        // The backup keys take effect (layer 70-backup).
        assert!(
            !err.contains("no effect in this image: appliance.backup.url"),
            "{args:?}: {err}"
        );
        // The application's keys take effect (layer 65-application).
        for key in ["ecs.settings", "ecs.vault_encrypt", "ecs.vault_sign"] {
            assert!(
                !err.contains(&format!("accepted, no effect in this image: {key}\n")),
                "{key}: {err}"
            );
        }
        assert!(!err.contains("S3CR3T"), "{err}");
        assert!(
            !err.contains("runcmd") && !err.contains("ssh_authorized_keys"),
            "{err}"
        );
    }
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running openssl");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "openssl {args:?}");
    o.stdout
}

/// `--dkim-record`: the TXT record of the env's DKIM key, its `p=` the
/// key's SubjectPublicKeyInfo as openssl writes it; the private key is not
/// printed; no key, or a key that is not RSA, is exit 2.
#[test]
fn dkim_record_publishes_the_public_key() {
    let d = tempfile::tempdir().unwrap();
    let key = openssl(&["genrsa", "2048"], b"");
    let key = String::from_utf8(key).unwrap();
    let der = openssl(&["rsa", "-pubout", "-outform", "DER"], key.as_bytes());
    let b64 = Command::new("base64")
        .arg("-w0")
        .arg(write(d.path(), "pub.der", &der))
        .output()
        .unwrap()
        .stdout;
    let b64 = String::from_utf8(b64).unwrap();
    let indented: String = key.lines().map(|l| format!("    {l}\n")).collect();
    let src = GOOD.replace(
        "  domain: ecs.example.org\n",
        &format!("  domain: ecs.example.org\n  dkim:\n   key: |\n{indented}"),
    );
    let env = write(d.path(), "env.yml", src.as_bytes());
    let o = imgbuild(&["env", "check", env.to_str().unwrap(), "--dkim-record"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let out = String::from_utf8(o.stdout).unwrap();
    let line = out.strip_suffix('\n').unwrap();
    assert!(!line.contains('\n'), "one line: {out}");
    let rest = line
        .strip_prefix("ecs._domainkey.ecs.example.org. IN TXT ")
        .unwrap_or_else(|| panic!("{out}"));
    let strings: Vec<&str> = rest.split("\" \"").collect();
    let mut value = String::new();
    for (i, s) in strings.iter().enumerate() {
        let s = s.trim_start_matches('"').trim_end_matches('"');
        assert!(s.len() <= 255, "string {i} is {} long: {out}", s.len());
        value.push_str(s);
    }
    assert!(strings.len() > 1, "a 2048-bit key needs two strings: {out}");
    assert_eq!(value, format!("v=DKIM1; k=rsa; p={b64}"));
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for part in [&body[..40], &body[body.len() - 40..]] {
        assert!(!out.contains(part) && !err.contains(part), "{out}{err}");
    }
    assert!(!err.contains("S3CR3T") && !out.contains("S3CR3T"), "{err}");

    let no_key = write(d.path(), "nokey.yml", GOOD.as_bytes());
    let o = imgbuild(&["env", "check", no_key.to_str().unwrap(), "--dkim-record"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("appliance.dkim.key: is not set: --dkim-record needs"),
        "{}",
        stderr(&o)
    );

    let ec = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        b"",
    );
    let ec = String::from_utf8(ec).unwrap();
    let indented: String = ec.lines().map(|l| format!("    {l}\n")).collect();
    let src = GOOD.replace(
        "  domain: ecs.example.org\n",
        &format!("  domain: ecs.example.org\n  dkim:\n   key: |\n{indented}"),
    );
    let env = write(d.path(), "ec.yml", src.as_bytes());
    let o = imgbuild(&["env", "check", env.to_str().unwrap(), "--dkim-record"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("appliance.dkim.key: is not a PEM RSA private key"),
        "{err}"
    );
    let body: String = ec.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!err.contains(&body[..20]), "{err}");
}
