//! Apply in a temp root with its own /etc/passwd and /etc/group: contents,
//! owners, modes, idempotence, deprecated keys, flags, secrets kept out.
//!
//! As root the fake users get their own ids (root 0:0, app 999:998); as a
//! normal user both map to the caller's ids, so chown always succeeds.

use super::*;
use std::os::unix::fs::MetadataExt;

const ENV: &str = r#"#cloud-config
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP dup@example
ssh_deprecated_keys: ["ssh-rsa AAAAB3NzaC1yc2EAAAAOLD old@example"]
appliance:
  domain: ecs.example.org
  metric: {exporter: true, gui: yes}
  storage: {ignore: {volatile: true, data: true}}
  extra:
    files:
      - {path: /etc/app/secret.conf, contents: "s3cret-VALUE\n", owner: "app:app", permissions: 0600}
      - {path: /etc/motd, contents: "hello\n"}
ecs:
  settings: "x"
  vault_encrypt: enc
  vault_sign: sign
"#;

/// (root uid, root gid, app uid, app gid) in the fake passwd.
fn ids() -> (u32, u32, u32, u32) {
    // SAFETY: geteuid/getegid cannot fail.
    let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
    if u == 0 {
        (0, 0, 999, 998)
    } else {
        (u, g, u, g)
    }
}

fn root() -> tempfile::TempDir {
    let (ru, rg, au, ag) = ids();
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::create_dir_all(r.join("root/.ssh")).unwrap();
    fs::create_dir_all(r.join("app/etc/flags")).unwrap();
    fs::write(
        r.join("etc/passwd"),
        format!(
            "root:x:{ru}:{rg}:root:/root:/bin/bash\n\
             bad line\n\
             app:x:{au}:{ag}:ECS:/app:/bin/bash\n"
        ),
    )
    .unwrap();
    fs::write(
        r.join("etc/group"),
        format!("root:x:{rg}:\napp:x:{ag}:\nstaff:x:50:\n"),
    )
    .unwrap();
    fs::write(
        r.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tbuild\n::1\tlocalhost\n",
    )
    .unwrap();
    fs::write(
        r.join("root/.ssh/authorized_keys"),
        "ssh-rsa AAAAB3NzaC1yc2EAAAAOLD old@example\nno-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP operator@site\n",
    )
    .unwrap();
    fs::write(r.join("app/etc/flags/metric.server"), "").unwrap();
    d
}

fn t(r: &Path) -> Target {
    Target::new(r, false)
}

fn env(src: &str) -> Env {
    Env::parse(src.as_bytes(), "env.yml").unwrap()
}

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// (inode, mtime in ns) of every file and directory under `r`.
fn snapshot(r: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![r.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            out.push((p.clone(), m.ino(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn applies_and_then_changes_nothing() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let (ru, rg, au, ag) = ids();
    let d = root();
    let r = d.path();
    let env = env(ENV);
    let first = apply(&env, &t(r)).unwrap();
    assert!(!first.is_empty());

    assert_eq!(
        fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "ecs.example.org\n"
    );
    assert_eq!(mode(&r.join("etc/hostname")).0, 0o644);
    assert_eq!(
        fs::read_to_string(r.join("etc/hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n127.0.1.1\tecs.example.org ecs\n::1\tlocalhost\n"
    );
    // root: deprecated key gone, the operator's line (same key as an env
    // key) kept once, the new key added.
    let rk = fs::read_to_string(r.join("root/.ssh/authorized_keys")).unwrap();
    assert_eq!(
        rk,
        "no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP operator@site\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example\n"
    );
    assert_eq!(mode(&r.join("root/.ssh")), (0o700, ru, rg));
    assert_eq!(mode(&r.join("root/.ssh/authorized_keys")), (0o600, ru, rg));
    // app: fresh .ssh, owned by app.
    assert_eq!(mode(&r.join("app/.ssh")), (0o700, au, ag));
    assert_eq!(mode(&r.join("app/.ssh/authorized_keys")), (0o600, au, ag));
    assert_eq!(
        fs::read_to_string(r.join("app/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP dup@example\n"
    );
    // extra files, parents created 0755.
    assert_eq!(
        fs::read_to_string(r.join("etc/app/secret.conf")).unwrap(),
        "s3cret-VALUE\n"
    );
    assert_eq!(mode(&r.join("etc/app/secret.conf")), (0o600, au, ag));
    assert_eq!(mode(&r.join("etc/app")).0, 0o755);
    assert_eq!(mode(&r.join("etc/motd")).0, 0o644);
    // flags: exporter and gui on, server (stale) removed; the update
    // timer's (automatic by default) and its calendar.
    let mut flags: Vec<String> = fs::read_dir(r.join("app/etc/flags"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    flags.sort();
    assert_eq!(flags, ["metric.exporter", "metric.gui", "update.automatic"]);
    assert_eq!(
        fs::read_to_string(under(r, UPDATE_TIMER_DROPIN)).unwrap(),
        "# Written by ecs-firstboot from appliance.update.oncalendar.\n\
         [Timer]\nOnCalendar=\nOnCalendar=*-*-* 06:30:00\n"
    );
    for dir in DIRECTORIES {
        assert_eq!(mode(&under(r, dir)), (0o775, au, ag), "{dir}");
    }
    // No secret in what is reported.
    let report = first.join("\n");
    assert!(!report.contains("s3cret"), "{report}");
    for want in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/app/secret.conf",
        "/app/etc/flags/metric.server removed",
        "/app/etc/flags/metric.gui set",
        "/root/.ssh/authorized_keys: 1 key(s) added, 1 removed",
        "/app/.ssh created",
        "/data/ecs-pgdump created",
    ] {
        assert!(report.contains(want), "{want:?} missing in:\n{report}");
    }

    let before = snapshot(r);
    let second = apply(&env, &t(r)).unwrap();
    assert_eq!(second, Vec::<String>::new(), "second apply changed things");
    assert_eq!(snapshot(r), before, "second apply touched files");
}

#[test]
fn unknown_owner_is_an_error_without_the_contents() {
    let d = root();
    let env = env(&ENV.replace("app:app", "nobody:app"));
    let err = apply(&env, &t(d.path())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no user \"nobody\""), "{msg}");
    assert!(msg.contains("/etc/app/secret.conf"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    let env2 = self::env(&ENV.replace("app:app", "app:wheel"));
    let msg = format!("{:#}", apply(&env2, &t(d.path())).unwrap_err());
    assert!(msg.contains("no group \"wheel\""), "{msg}");
}

#[test]
fn extra_file_converges_on_content_mode_and_owner() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let (_, _, au, ag) = ids();
    let d = root();
    let r = d.path();
    let env = env(ENV);
    apply(&env, &t(r)).unwrap();
    let p = r.join("etc/app/secret.conf");

    // Mode changed behind our back: fixed in place, content untouched.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let ino = fs::metadata(&p).unwrap().ino();
    let c = apply(&env, &t(r)).unwrap();
    assert_eq!(
        c,
        ["/etc/app/secret.conf: owner/mode set to ".to_string() + &format!("{au}:{ag} 0600")]
    );
    assert_eq!(mode(&p), (0o600, au, ag));
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino, "fixed in place");

    // Content changed: rewritten atomically (a new inode).
    fs::write(&p, "edited\n").unwrap();
    let c = apply(&env, &t(r)).unwrap();
    assert_eq!(c, ["/etc/app/secret.conf (extra file)"]);
    assert_eq!(fs::read_to_string(&p).unwrap(), "s3cret-VALUE\n");
    assert_eq!(mode(&p), (0o600, au, ag));

    // A directory where the file should be: a clear error, no contents.
    let env2 = self::env(&ENV.replace("/etc/motd", "/etc/app"));
    let msg = format!("{:#}", apply(&env2, &t(r)).unwrap_err());
    assert!(msg.contains("/etc/app is a directory"), "{msg}");
}

#[test]
fn numeric_owner_and_user_only_owner() {
    let (_, _, au, ag) = ids();
    let d = root();
    let r = d.path();
    let a = Accounts::load(r).unwrap();
    assert_eq!(a.owner("app").unwrap(), (au, ag));
    assert_eq!(a.owner("app:staff").unwrap(), (au, 50));
    assert_eq!(a.owner("4242:4343").unwrap(), (4242, 4343));
    assert_eq!(a.user("app").unwrap().home, "/app");
}

#[test]
fn deprecated_keys_removed_without_new_keys() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let d = root();
    let r = d.path();
    let src = ENV.replace(
        "ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAANEW admin@example\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP dup@example\n",
        "",
    )
    .replace(
        "[\"ssh-rsa AAAAB3NzaC1yc2EAAAAOLD old@example\"]",
        "[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAKEEP some-other-comment\", \"ssh-rsa AAAAB3NzaC1yc2EAAAAOLD\"]",
    );
    let c = apply(&env(&src), &t(r)).unwrap();
    assert_eq!(
        fs::read_to_string(r.join("root/.ssh/authorized_keys")).unwrap(),
        ""
    );
    assert!(
        c.contains(&"/root/.ssh/authorized_keys: 2 key(s) removed".to_string()),
        "{c:?}"
    );
    // No keys for app: nothing created there.
    assert!(!r.join("app/.ssh").exists());
    assert!(apply(&env(&src), &t(r)).unwrap().is_empty());
}

#[test]
fn key_merging() {
    let got = merge_keys(
        "# comment\nssh-ed25519 AAAA1 a\n",
        &[
            "ssh-ed25519 AAAA1 other-comment".into(),
            "ssh-ed25519 AAAA2 b".into(),
        ],
        &["ssh-ed25519 AAAA3".into()],
    );
    assert_eq!(got, "# comment\nssh-ed25519 AAAA1 a\nssh-ed25519 AAAA2 b\n");

    // Options before the key; a key both authorized and deprecated goes.
    let m = merge_key_lines(
        "command=\"/bin/true\",no-pty ecdsa-sha2-nistp256 AAAAE x\nssh-rsa AAAAR y\n\n",
        &[
            "ssh-rsa AAAAR y".into(),
            "ssh-ed25519 AAAAD d".into(),
            "  ".into(),
        ],
        &[
            "ssh-ed25519 AAAAD".into(),
            "ecdsa-sha2-nistp256 AAAAE".into(),
        ],
    );
    assert_eq!(m.text, "ssh-rsa AAAAR y\n\n");
    assert_eq!((m.added, m.removed), (0, 1));

    // Nothing at all stays empty.
    assert_eq!(merge_keys("", &[], &[]), "");
}

#[test]
fn symlinked_keys_are_replaced_not_read() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let d = root();
    let r = d.path();
    fs::write(r.join("shadow"), "ssh-ed25519 AAAASECRET from-shadow\n").unwrap();
    fs::create_dir_all(r.join("app/.ssh")).unwrap();
    std::os::unix::fs::symlink(r.join("shadow"), r.join("app/.ssh/authorized_keys")).unwrap();
    apply(&env(ENV), &t(r)).unwrap();
    let k = r.join("app/.ssh/authorized_keys");
    assert!(fs::symlink_metadata(&k).unwrap().is_file());
    let text = fs::read_to_string(&k).unwrap();
    assert!(!text.contains("AAAASECRET"), "{text}");
    assert_eq!(
        fs::read_to_string(r.join("shadow")).unwrap(),
        "ssh-ed25519 AAAASECRET from-shadow\n"
    );

    // A .ssh that is a link is not followed: that user is skipped with a
    // warning, the rest is applied.
    fs::remove_dir_all(r.join("app/.ssh")).unwrap();
    fs::create_dir(r.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(r.join("elsewhere"), r.join("app/.ssh")).unwrap();
    let target = t(r);
    apply(&env(ENV), &target).unwrap();
    let msg = target.warnings.take().join("\n");
    assert!(msg.contains("/app/.ssh is a symbolic link"), "{msg}");
    assert!(msg.contains("ssh keys for app skipped"), "{msg}");
    assert_eq!(fs::read_dir(r.join("elsewhere")).unwrap().count(), 0);
}

#[test]
fn metric_flags_on_then_off() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let d = root();
    let r = d.path();
    let all = ENV.replace(
        "metric: {exporter: true, gui: yes}",
        "metric: {exporter: true, server: on, gui: yes, pghero: true}",
    );
    apply(&env(&all), &t(r)).unwrap();
    for n in ["exporter", "server", "gui", "pghero"] {
        let p = r.join(format!("app/etc/flags/metric.{n}"));
        assert!(p.is_file(), "{n}");
        assert_eq!(mode(&p).0, 0o644);
    }
    let none = ENV.replace("metric: {exporter: true, gui: yes}", "metric: {gui: false}");
    let c = metric_flags(&env(&none).appliance.metric, &t(r)).unwrap();
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(fs::read_dir(r.join("app/etc/flags")).unwrap().count(), 1);
    assert!(metric_flags(&env(&none).appliance.metric, &t(r))
        .unwrap()
        .is_empty());
    // A missing flags directory is created when a flag is set.
    fs::remove_dir_all(r.join("app/etc/flags")).unwrap();
    metric_flags(&env(ENV).appliance.metric, &t(r)).unwrap();
    assert!(r.join("app/etc/flags/metric.gui").is_file());
}

#[test]
fn directories_are_corrected_and_links_not_followed() {
    let (_, _, au, ag) = ids();
    let d = root();
    let r = d.path();
    fs::create_dir_all(r.join("data/ecs-pgdump")).unwrap();
    fs::set_permissions(r.join("data/ecs-pgdump"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(r.join("big/cache")).unwrap();
    fs::set_permissions(r.join("big/cache"), fs::Permissions::from_mode(0o755)).unwrap();
    let cache = mode(&r.join("big/cache"));
    fs::create_dir_all(r.join("volatile")).unwrap();
    std::os::unix::fs::symlink(r.join("big/cache"), r.join("volatile/ecs-cache")).unwrap();
    let target = t(r);
    let c = directories(&target).unwrap();
    assert!(
        c.contains(&"/data/ecs-pgdump: mode 0775".to_string())
            || c.iter().any(|x| x.starts_with("/data/ecs-pgdump: owner")),
        "{c:?}"
    );
    assert_eq!(mode(&r.join("data/ecs-pgdump")), (0o775, au, ag));
    // The link's target keeps its owner and mode; the link stays.
    assert_eq!(mode(&r.join("big/cache")), cache);
    assert!(fs::symlink_metadata(r.join("volatile/ecs-cache"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        target.warnings.take(),
        ["/volatile/ecs-cache is a symbolic link; refusing to follow it; /volatile/ecs-cache skipped"]
    );
    assert!(directories(&t(r)).unwrap().is_empty());

    // A file in the way is an error.
    fs::remove_dir(r.join("data/ecs-pgdump")).unwrap();
    fs::write(r.join("data/ecs-pgdump"), "").unwrap();
    let msg = format!("{:#}", directories(&t(r)).unwrap_err());
    assert!(
        msg.contains("/data/ecs-pgdump exists and is not a directory"),
        "{msg}"
    );
}

#[test]
fn host_names() {
    assert_eq!(host_name_for("ecs.example.org."), "ecs.example.org");
    let long = format!("{}.{}.example.org", "a".repeat(40), "b".repeat(40));
    assert_eq!(host_name_for(&long), "a".repeat(40));
    assert_eq!(
        hosts_with("127.0.0.1 localhost", "ecs.example.org"),
        "127.0.0.1 localhost\n127.0.1.1\tecs.example.org ecs\n"
    );
    assert_eq!(hosts_with("", "single"), "127.0.1.1\tsingle\n");
    assert_eq!(
        hosts_with("127.0.1.1 a\n127.0.1.1 b\n# x\n", "h.example"),
        "127.0.1.1\th.example h\n# x\n"
    );

    // A missing /etc/hosts is created with localhost lines.
    let d = root();
    let r = d.path();
    fs::remove_file(r.join("etc/hosts")).unwrap();
    let c = hostname("ecs.example.org", &t(r)).unwrap();
    assert_eq!(c, ["/etc/hostname: ecs.example.org", "/etc/hosts"]);
    let hosts = fs::read_to_string(r.join("etc/hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.contains("127.0.1.1\tecs.example.org ecs\n"),
        "{hosts}"
    );
    assert!(hostname("ecs.example.org", &t(r)).unwrap().is_empty());
}

#[test]
fn update_timer_follows_the_env() {
    if !crate::testutil::root_or_skip("owners of the files it applies") {
        return;
    }
    let d = root();
    let r = d.path();
    let mut u = env(ENV).appliance.update;
    u.oncalendar = "Mon *-*-* 04:00:00".into();
    u.automatic = false;
    let c = update_timer(&u, &t(r)).unwrap();
    assert_eq!(
        c,
        [format!(
            "{UPDATE_TIMER_DROPIN} (appliance.update.oncalendar)"
        )]
    );
    assert!(fs::read_to_string(under(r, UPDATE_TIMER_DROPIN))
        .unwrap()
        .ends_with("\nOnCalendar=\nOnCalendar=Mon *-*-* 04:00:00\n"));
    assert!(!r.join("app/etc/flags/update.automatic").exists());
    assert!(update_timer(&u, &t(r)).unwrap().is_empty());
    u.automatic = true;
    assert_eq!(update_timer(&u, &t(r)).unwrap().len(), 1);
    assert!(r.join("app/etc/flags/update.automatic").is_file());
    u.oncalendar = "daily\n[Service]\nExecStart=/bin/sh".into();
    let e = update_timer(&u, &t(r)).unwrap_err().to_string();
    assert!(e.contains("control character"), "{e}");
}
