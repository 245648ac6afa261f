//! `ecs-firstboot --root DIR` on a prepared root, once per attack a user of
//! the target could plant before the agent runs: a hard link, a symbolic
//! link in a parent directory, a symbolic link at an appliance directory,
//! at `~app/.ssh` and at the flags directory, a directory at
//! `authorized_keys`. Each run must hand off (exit 0, the ready marker
//! written), leave every file other than the intended ones byte-, mode- and
//! owner-identical (inside the root and in a directory beside it), and say
//! what it skipped.
//!
//! Run as root: the fake `app` user (uid 999) must own what it plants.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const APP: (u32, u32) = (999, 998);

const ENV: &str = r#"#cloud-config
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example"]
appliance:
  domain: ecs.example.org
  metric: {gui: true}
  extra:
    files:
      - {path: /etc/evil/x.conf, contents: "planted-SECRET\n", owner: "app:app", permissions: 0600}
      - {path: /etc/app/ok.conf, contents: "fine\n"}
ecs:
  settings: "SECRET_KEY = 'hunter2-very-secret'"
  vault_encrypt: enc
  vault_sign: sign
"#;

/// A temporary directory holding the target root and, beside it, files
/// outside the root an attack points at.
struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn need_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests need root: the fake app user must own what it plants"
    );
}

fn chown(p: &Path, (u, g): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

impl World {
    fn new() -> World {
        need_root();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        for d in [
            "etc",
            "run",
            "root/.ssh",
            "app/etc/flags",
            "data",
            "volatile",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        chmod(&root.join("root/.ssh"), 0o700);
        chown(&root.join("app"), APP);
        chown(&root.join("app/etc"), APP);
        chown(&root.join("app/etc/flags"), APP);
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\napp:x:999:998:ECS:/app:/bin/bash\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\napp:x:998:\n").unwrap();
        fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        fs::write(root.join("app/env.yml"), ENV).unwrap();
        // Root-only files an attack would like to read or change.
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("shadow"), "root:$6$hash:1:0:99999:7:::\n").unwrap();
        chmod(&outside.join("shadow"), 0o640);
        fs::create_dir(outside.join("vault")).unwrap();
        chmod(&outside.join("vault"), 0o700);
        fs::write(root.join("etc/root-only"), "ssh-ed25519 AAAAROOTONLY x\n").unwrap();
        chmod(&root.join("etc/root-only"), 0o640);
        World {
            _dir: dir,
            root,
            outside,
        }
    }

    /// Runs the agent; returns (exit code, stdout, stderr).
    fn run(&self) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ecs-firstboot"))
            .arg("--root")
            .arg(&self.root)
            .arg("--no-metadata")
            .env_remove("ENV_YML")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the agent and checks the hand-off, that nothing but `intended`
    /// (root-relative paths, with everything below them) changed, inside
    /// the root or outside it, and that no secret was printed. Returns
    /// stderr.
    fn run_and_check(&self, intended: &[&str]) -> String {
        let before = snapshot(self._dir.path());
        let (code, stdout, stderr) = self.run();
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.starts_with("ecs-firstboot: ok "), "{stdout}");
        assert!(
            self.root.join("run/ecs-firstboot.ready").is_file(),
            "no hand-off"
        );
        assert!(!self.root.join("run/appliance-failed").exists());
        for secret in ["hunter2", "planted-SECRET", "AAAAROOTONLY", "$6$hash"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{secret} printed"
            );
        }
        let after = snapshot(self._dir.path());
        let mut always = vec![
            "root/run",
            "root/etc/hostname",
            "root/etc/hosts",
            "root/root/.ssh/authorized_keys",
            "root/app/.ssh",
            "root/data/ecs-storage-vault",
            "root/data/ecs-pgdump",
            "root/volatile/ecs-cache",
            "root/volatile/ecs-backup-test",
            "root/volatile/redis",
            "root/app/etc/flags/metric.gui",
            "root/app/etc/flags/update.automatic",
            "root/etc/systemd/system/appliance-update.timer.d/ecs-env.conf",
            "root/etc/app",
        ];
        always.extend(intended);
        let allowed = |p: &Path| {
            always
                .iter()
                .any(|a| p == Path::new(a) || p.starts_with(Path::new(a)))
                // The drop-in's parents, made for it.
                || ["root/etc/systemd", "root/etc/systemd/system", "root/etc/systemd/system/appliance-update.timer.d"]
                    .iter()
                    .any(|d| p == Path::new(d))
        };
        for (p, b) in &before {
            if !allowed(p) {
                assert_eq!(after.get(p), Some(b), "{} changed", p.display());
            }
        }
        for p in after.keys() {
            assert!(
                before.contains_key(p) || allowed(p),
                "{} appeared",
                p.display()
            );
        }
        // The parts nothing planted stood in the way of are applied.
        assert_eq!(
            fs::read_to_string(self.root.join("etc/hostname")).unwrap(),
            "ecs.example.org\n"
        );
        assert_eq!(
            fs::read_to_string(self.root.join("root/.ssh/authorized_keys")).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example\n"
        );
        assert_eq!(
            fs::read_to_string(self.root.join("etc/app/ok.conf")).unwrap(),
            "fine\n"
        );
        stderr
    }
}

/// Every path below `dir` (relative) with its type, mode, owner, link
/// count (of non-directories) and content (a link's target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            // A directory's link count follows its subdirectories.
            let links = if m.is_dir() { 0 } else { m.nlink() };
            out.insert(rel, (m.mode(), m.uid(), m.gid(), links, content));
        }
    }
    out
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn hard_linked_authorized_keys_is_replaced_not_read_or_chowned() {
    let w = World::new();
    let r = &w.root;
    fs::create_dir(r.join("app/.ssh")).unwrap();
    chown(&r.join("app/.ssh"), APP);
    fs::hard_link(r.join("etc/root-only"), r.join("app/.ssh/authorized_keys")).unwrap();
    // Its link count drops to 1; the rest is checked here.
    let stderr = w.run_and_check(&["root/etc/evil", "root/etc/root-only"]);
    // The root-only file: same bytes, owner and mode, no other link now.
    assert_eq!(
        fs::read_to_string(r.join("etc/root-only")).unwrap(),
        "ssh-ed25519 AAAAROOTONLY x\n"
    );
    assert_eq!(mode_owner(&r.join("etc/root-only")), (0o640, 0, 0));
    assert_eq!(fs::metadata(r.join("etc/root-only")).unwrap().nlink(), 1);
    let keys = r.join("app/.ssh/authorized_keys");
    assert_eq!(mode_owner(&keys), (0o600, APP.0, APP.1));
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example\n",
        "the linked file's content was copied"
    );
    assert!(
        stderr.contains("/app/.ssh/authorized_keys has other hard links"),
        "{stderr}"
    );
}

#[test]
fn symlink_in_a_parent_of_an_extra_file_is_not_followed() {
    let w = World::new();
    symlink(&w.outside, w.root.join("etc/evil")).unwrap();
    let stderr = w.run_and_check(&[]);
    assert!(
        !w.outside.join("x.conf").exists(),
        "written through the link"
    );
    assert!(
        stderr.contains(
            "/etc/evil is a symbolic link; refusing to follow it; /etc/evil/x.conf (appliance.extra.files) skipped"
        ),
        "{stderr}"
    );
}

#[test]
fn symlinked_appliance_directory_is_left_alone() {
    let w = World::new();
    let r = &w.root;
    symlink(w.outside.join("vault"), r.join("data/ecs-storage-vault")).unwrap();
    symlink(&w.outside, r.join("volatile/redis")).unwrap();
    let stderr = w.run_and_check(&["root/etc/evil"]);
    assert_eq!(mode_owner(&w.outside.join("vault")), (0o700, 0, 0));
    assert!(fs::symlink_metadata(r.join("data/ecs-storage-vault"))
        .unwrap()
        .file_type()
        .is_symlink());
    // The others are made.
    assert_eq!(
        mode_owner(&r.join("data/ecs-pgdump")),
        (0o775, APP.0, APP.1)
    );
    for p in ["/data/ecs-storage-vault", "/volatile/redis"] {
        assert!(
            stderr.contains(&format!("{p} is a symbolic link; refusing to follow it")),
            "{stderr}"
        );
    }
}

#[test]
fn symlinked_ssh_and_flags_directories_are_skipped() {
    let w = World::new();
    let r = &w.root;
    fs::create_dir(w.outside.join("ssh")).unwrap();
    symlink(w.outside.join("ssh"), r.join("app/.ssh")).unwrap();
    fs::remove_dir(r.join("app/etc/flags")).unwrap();
    symlink(&w.outside, r.join("app/etc/flags")).unwrap();
    let stderr = w.run_and_check(&["root/etc/evil"]);
    assert_eq!(fs::read_dir(w.outside.join("ssh")).unwrap().count(), 0);
    assert!(fs::symlink_metadata(r.join("app/.ssh"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!w.outside.join("metric.gui").exists());
    assert!(
        stderr.contains(
            "/app/.ssh is a symbolic link; refusing to follow it; ssh keys for app skipped"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("/app/etc/flags is a symbolic link"),
        "{stderr}"
    );
}

#[test]
fn directory_at_authorized_keys_is_skipped() {
    let w = World::new();
    let r = &w.root;
    let keys = r.join("app/.ssh/authorized_keys");
    fs::create_dir_all(&keys).unwrap();
    fs::write(keys.join("mine"), "user data\n").unwrap();
    for p in [r.join("app/.ssh"), keys.clone(), keys.join("mine")] {
        chown(&p, APP);
    }
    chmod(&r.join("app/.ssh"), 0o700);
    let stderr = w.run_and_check(&["root/etc/evil"]);
    assert_eq!(
        fs::read_to_string(keys.join("mine")).unwrap(),
        "user data\n"
    );
    assert_eq!(mode_owner(&keys.join("mine")), (0o644, APP.0, APP.1));
    assert!(fs::symlink_metadata(&keys).unwrap().is_dir());
    assert!(
        stderr.contains("/app/.ssh/authorized_keys is a directory; ssh keys for app skipped"),
        "{stderr}"
    );
}
