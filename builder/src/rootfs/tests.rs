use super::*;

#[test]
fn paths_resolve_inside_the_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
    assert_eq!(
        resolve_in_root(root, Path::new("bin/ls")).unwrap(),
        root.join("usr/bin/ls")
    );
    assert_eq!(
        resolve_in_root(root, Path::new("abs/bin/ls")).unwrap(),
        root.join("usr/bin/ls")
    );
    assert_eq!(
        resolve_in_root(root, Path::new("up/etc/passwd")).unwrap(),
        root.join("etc/passwd")
    );
    // The last component is not followed.
    assert_eq!(
        resolve_in_root(root, Path::new("bin")).unwrap(),
        root.join("bin")
    );
}

#[test]
fn overlay_keeps_modes_and_existing_dirs() {
    if !crate::testutil::root_or_skip("owners in the overlay") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let src = d.path().join("files");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::create_dir_all(src.join("etc/new")).unwrap();
    fs::write(src.join("bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("tool", src.join("bin/alias")).unwrap();
    copy_overlay(&src, &root, Path::new("")).unwrap();
    let m = fs::metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        fs::read_link(root.join("usr/bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert!(root.join("etc/new").is_dir());
    assert!(fs::symlink_metadata(root.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn keys_follow_inputs_not_noise() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("10-x");
    fs::create_dir_all(dir.join("files/etc")).unwrap();
    fs::write(dir.join("files/etc/motd"), "hello\n").unwrap();
    fs::set_permissions(
        dir.join("files/etc/motd"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::write(dir.join("README.md"), "notes").unwrap();
    let key = |text: &str| {
        fs::write(dir.join("layer.yml"), text).unwrap();
        let layer = recipe::load_layer(&dir).unwrap();
        layer_inputs(&layer, recipe::Distro::Debian, None, None, &[])
            .unwrap()
            .key()
    };
    let k0 = key("packages: [aa, bb]\n");
    // Comments, order of packages, description: same key.
    assert_eq!(
        k0,
        key("# comment\ndescription: words\npackages: [bb, aa, aa]\n")
    );
    // Unrelated file in the layer dir: same key.
    fs::write(dir.join("README.md"), "other notes").unwrap();
    assert_eq!(k0, key("packages: [aa, bb]\n"));
    // Another package: new key.
    assert_ne!(k0, key("packages: [aa, bb, cc]\n"));
    // A package for another distro only: same key.
    assert_eq!(
        k0,
        key("packages: [aa, bb]\ndistro_packages: {ubuntu: [uu]}\n")
    );
    // A changed byte: new key.
    fs::write(dir.join("files/etc/motd"), "hellO\n").unwrap();
    let k1 = key("packages: [aa, bb]\n");
    assert_ne!(k0, k1);
    // A changed mode: new key.
    fs::set_permissions(
        dir.join("files/etc/motd"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_ne!(k1, key("packages: [aa, bb]\n"));
    // A different parent: new key.
    let layer = recipe::load_layer(&dir).unwrap();
    let with_parent = |k: &str| {
        let p = Some(ParentRef {
            layer: "00-base".into(),
            key: k.into(),
        });
        layer_inputs(&layer, recipe::Distro::Debian, p, None, &[])
            .unwrap()
            .key()
    };
    assert_ne!(with_parent("a"), with_parent("b"));
}

/// Needs root (mounts); the tree is a skeleton in a tempdir.
#[test]
fn chroot_setup_is_undone() {
    if !crate::testutil::root_or_skip("mounts in the chroot") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        root.join("etc/resolv.conf"),
    )
    .unwrap();
    let (archives, lists) = (d.path().join("archives"), d.path().join("lists"));
    fs::create_dir_all(&archives).unwrap();
    let s =
        Chroot::open(&root, &archives, &lists, &[]).expect("setting up the tree (are we root?)");
    assert!(root.join("proc/self").exists(), "/proc mounted");
    assert!(root.join("dev/null").exists(), "/dev mounted");
    assert_eq!(mount::mounts_under(&root).unwrap().len(), 6);
    let policy = fs::read_to_string(root.join("usr/sbin/policy-rc.d")).unwrap();
    assert!(policy.contains("exit 101"));
    assert!(fs::symlink_metadata(root.join("etc/resolv.conf"))
        .unwrap()
        .is_file());
    s.close().unwrap();
    assert!(mount::mounts_under(&root).unwrap().is_empty());
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert_eq!(
        fs::read_link(root.join("etc/resolv.conf")).unwrap(),
        Path::new("../run/systemd/resolve/stub-resolv.conf"),
        "the tree's own resolv.conf is back"
    );

    // Dropped without close (an error): still undone. A resolv.conf a
    // package put there in the meantime stays.
    let s = Chroot::open(&root, &archives, &lists, &[]).unwrap();
    fs::remove_file(root.join("etc/resolv.conf")).unwrap();
    fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    drop(s);
    assert!(mount::mounts_under(&root).unwrap().is_empty());
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "nameserver 127.0.0.53\n"
    );
    assert!(!root.join("etc/.resolv.conf.imgbuild-saved").exists());
}

#[test]
fn package_stage_ignores_files_and_scripts() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("30-app");
    fs::create_dir_all(dir.join("files/etc")).unwrap();
    fs::write(dir.join("files/etc/app.conf"), "a\n").unwrap();
    let stage = |recipe: &str| {
        fs::write(dir.join("layer.yml"), recipe).unwrap();
        let layer = recipe::load_layer(&dir).unwrap();
        packages_stage_inputs(&layer, recipe::Distro::Debian, None).map(|i| i.key())
    };
    let k = stage("packages: [nginx]\n").expect("packages and files: a stage");
    fs::write(dir.join("files/etc/app.conf"), "b\n").unwrap();
    assert_eq!(
        stage("packages: [nginx]\nenable: [nginx.service]\n"),
        Some(k.clone())
    );
    assert_ne!(stage("packages: [nginx, curl]\n"), Some(k));
    fs::remove_dir_all(dir.join("files")).unwrap();
    assert_eq!(
        stage("packages: [nginx]\n"),
        None,
        "packages alone: no extra stage"
    );
}

#[test]
fn host_file_bytes_enter_the_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("20-agent");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("layer.yml"),
        "host_files: [{from: '@agent', to: /usr/sbin/agent, mode: 0755}]\n",
    )
    .unwrap();
    let bin = d.path().join("agent");
    fs::write(&bin, "v1").unwrap();
    let layer = recipe::load_layer(&dir).unwrap();
    let mut opts = TreeOptions::new(d.path(), d.path().join("cache"));
    opts.host_bins.insert("agent".into(), bin.clone());
    let srcs = resolve_host_files(&layer, &opts).unwrap();
    assert_eq!(srcs, vec![bin.clone()]);
    let a = layer_inputs(&layer, recipe::Distro::Debian, None, None, &srcs).unwrap();
    fs::write(&bin, "v2").unwrap();
    let b = layer_inputs(&layer, recipe::Distro::Debian, None, None, &srcs).unwrap();
    assert_ne!(a.key(), b.key());
    assert_eq!(
        cache::diff(&a, &b),
        vec!["@agent → /usr/sbin/agent changed"]
    );
    opts.host_bins
        .insert("agent".into(), d.path().join("missing"));
    let e = format!("{:#}", resolve_host_files(&layer, &opts).unwrap_err());
    assert!(
        e.contains("host_files[0].from") && e.contains("--host-bin agent=PATH"),
        "{e}"
    );
}
