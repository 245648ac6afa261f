//! Tests of the builder's library that need root (owners, device nodes,
//! `security.*` attributes, mount(2)): here rather than in the lib's unit
//! tests, so `cargo test --lib` runs unprivileged; the full test run (as
//! root, scripts/test.sh) runs them.

mod archive {
    use std::path::Path;

    use imgbuild::archive::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use imgbuild::progress::Progress;

    /// Runs as root (owners, mknod, security.* xattrs); fails clearly otherwise.
    #[test]
    fn archive_round_trip() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (chown, mknod, security.capability)"
        );
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::create_dir_all(src.join("dev")).unwrap();
        let f = src.join("usr/bin/ping");
        fs::write(&f, b"binary").unwrap();
        std::os::unix::fs::chown(&f, Some(1234), Some(4321)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
        // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
        let cap: [u8; 20] = [
            0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        xattr_set(&f, "security.capability", &cap);
        xattr_set(&f, "user.note", b"kept");
        fs::hard_link(&f, src.join("usr/bin/ping-link")).unwrap();
        std::os::unix::fs::symlink("ping", src.join("usr/bin/ping6")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/abs", src.join("dangling")).unwrap();
        let dir = src.join("private");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(7), Some(8)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1710)).unwrap();
        mknod(
            &src.join("dev/null"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        );
        mknod(
            &src.join("dev/loop9"),
            libc::S_IFBLK | 0o660,
            libc::makedev(7, 9),
        );
        mknod(&src.join("fifo"), libc::S_IFIFO | 0o600, 0);

        let p = Progress::plain();
        let step = p.step("test");
        let tarball = d.path().join("t.tar.zst");
        create(&src, Members::All, &tarball, 1_700_000_000, &step).unwrap();
        // The same archive in two halves (a plain tar, compressed later).
        let plain = d.path().join("t.tar");
        let later = d.path().join("t-later.tar.zst");
        create_uncompressed(&src, Members::All, &plain, 1_700_000_000, &step).unwrap();
        compress(&plain, &later).unwrap();
        for (i, archive) in [&tarball, &later].into_iter().enumerate() {
            let out = d.path().join(format!("out{i}"));
            fs::create_dir(&out).unwrap();
            extract(archive, &out, &step).unwrap();
            check_extracted(&out, &cap);
        }

        // Same tree, same epoch: the same bytes.
        let again = d.path().join("t2.tar.zst");
        create(&src, Members::All, &again, 1_700_000_000, &step).unwrap();
        assert_eq!(fs::read(&tarball).unwrap(), fs::read(&again).unwrap());
        let mut z = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .arg(&tarball)
            .output()
            .unwrap();
        assert!(z.status.success());
        assert_eq!(
            std::mem::take(&mut z.stdout),
            fs::read(&plain).unwrap(),
            "the two halves archive the same tar"
        );
    }

    /// A tree changed as a layer changes it (a file rewritten, a mode and
    /// an owner changed, a hard link added, a directory replaced by a file,
    /// a device node and a subtree removed), stored as a delta on the
    /// archive of the tree before: the restored tree is the tree after,
    /// path for path.
    #[test]
    fn delta_round_trip() {
        use imgbuild::treediff::{remove_paths, Snapshot};
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (chown, mknod)"
        );
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("etc/old/deep")).unwrap();
        fs::create_dir_all(src.join("dev")).unwrap();
        fs::create_dir_all(src.join("var/lib/becomes-file")).unwrap();
        fs::write(src.join("etc/motd"), "one").unwrap();
        fs::write(src.join("etc/owned"), "o").unwrap();
        fs::write(src.join("etc/old/deep/x"), "x").unwrap();
        fs::write(src.join("etc/same"), "same").unwrap();
        mknod(
            &src.join("dev/loop9"),
            libc::S_IFBLK | 0o660,
            libc::makedev(7, 9),
        );
        let p = Progress::plain();
        let step = p.step("test");
        let full = d.path().join("full.tar.zst");
        create(&src, Members::All, &full, 1_700_000_000, &step).unwrap();
        let before = Snapshot::take(&src).unwrap();

        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(src.join("etc/motd"), "two").unwrap();
        std::os::unix::fs::chown(src.join("etc/owned"), Some(99), Some(98)).unwrap();
        fs::set_permissions(src.join("etc/owned"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(src.join("etc/motd"), src.join("etc/motd.link")).unwrap();
        fs::remove_dir_all(src.join("etc/old")).unwrap();
        fs::remove_dir(src.join("var/lib/becomes-file")).unwrap();
        fs::write(src.join("var/lib/becomes-file"), "file").unwrap();
        fs::remove_file(src.join("dev/loop9")).unwrap();
        let after = Snapshot::take(&src).unwrap();
        let changes = before.changes_to(&after);
        let delta = d.path().join("delta.tar.zst");
        create(
            &src,
            Members::Only(&changes.changed),
            &delta,
            1_700_000_000,
            &step,
        )
        .unwrap();

        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        extract(&full, &out, &step).unwrap();
        remove_paths(&out, &changes.removed).unwrap();
        extract(&delta, &out, &step).unwrap();
        let list = |root: &Path| {
            let o = std::process::Command::new("find")
                .arg(".")
                .args(["-printf", "%p %y %m %U %G %n %s\\n"])
                .current_dir(root)
                .output()
                .unwrap();
            let mut v: Vec<String> = String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            v.sort();
            v
        };
        assert_eq!(list(&out), list(&src));
        assert_eq!(fs::read_to_string(out.join("etc/motd")).unwrap(), "two");
        assert_eq!(
            fs::metadata(out.join("etc/motd")).unwrap().ino(),
            fs::metadata(out.join("etc/motd.link")).unwrap().ino()
        );
        assert!(!changes.changed.iter().any(|p| p.ends_with("same")));
    }

    /// What every archive of `archive_round_trip`'s tree must give back.
    fn check_extracted(out: &Path, cap: &[u8; 20]) {
        let m = fs::symlink_metadata(out.join("usr/bin/ping")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1234, 4321));
        assert_eq!(
            m.mtime(),
            1_700_000_000,
            "mtime clamped to SOURCE_DATE_EPOCH"
        );
        assert_eq!(m.nlink(), 2, "hard link kept");
        assert_eq!(
            m.ino(),
            fs::metadata(out.join("usr/bin/ping-link")).unwrap().ino()
        );
        assert_eq!(
            xattr_get(&out.join("usr/bin/ping"), "security.capability"),
            cap.to_vec()
        );
        assert_eq!(
            xattr_get(&out.join("usr/bin/ping"), "user.note"),
            b"kept".to_vec()
        );
        assert_eq!(
            fs::read_link(out.join("usr/bin/ping6")).unwrap(),
            Path::new("ping")
        );
        assert_eq!(
            fs::read_link(out.join("dangling")).unwrap(),
            Path::new("/nonexistent/abs")
        );
        let m = fs::metadata(out.join("private")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o1710, 7, 8));
        let m = fs::symlink_metadata(out.join("dev/null")).unwrap();
        assert_eq!(
            (m.mode(), m.rdev()),
            (libc::S_IFCHR | 0o666, libc::makedev(1, 3))
        );
        let m = fs::symlink_metadata(out.join("dev/loop9")).unwrap();
        assert_eq!(
            (m.mode(), m.rdev()),
            (libc::S_IFBLK | 0o660, libc::makedev(7, 9))
        );
        let m = fs::symlink_metadata(out.join("fifo")).unwrap();
        assert_eq!(m.mode(), libc::S_IFIFO | 0o600);
    }

    fn c(p: &Path) -> std::ffi::CString {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
    }

    fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) {
        let rc = unsafe { libc::mknod(c(p).as_ptr(), mode, dev) };
        assert_eq!(
            rc,
            0,
            "mknod {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        // mknod applies the umask.
        fs::set_permissions(p, fs::Permissions::from_mode(mode & 0o7777)).unwrap();
    }

    fn xattr_set(p: &Path, name: &str, value: &[u8]) {
        let n = std::ffi::CString::new(name).unwrap();
        let rc = unsafe {
            libc::lsetxattr(
                c(p).as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "setxattr {name}: {}",
            std::io::Error::last_os_error()
        );
    }

    fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        let rc = unsafe {
            libc::lgetxattr(
                c(p).as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(
            rc >= 0,
            "getxattr {name} on {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        buf.truncate(rc as usize);
        buf
    }
}

mod mount {
    use imgbuild::mount::*;

    /// Needs root (mount(2)); tests run as root on our machines and in CI.
    #[test]
    fn guards_unmount_and_protect_directories() {
        let d = tempfile::tempdir().unwrap();
        let work = WorkDir::create(d.path().join("w")).unwrap();
        let target = work.path().join("proc");
        std::fs::create_dir(&target).unwrap();
        let m = Mount::filesystem("proc", &target, 0, "").expect("mounting proc (are we root?)");
        assert!(target.join("self").exists());
        assert_eq!(
            mounts_under(work.path()).unwrap(),
            vec![target.canonicalize().unwrap()]
        );
        // A directory with a mount beneath it is never deleted.
        let err = remove_unless_mounted(work.path()).unwrap_err();
        assert!(err.to_string().contains("still mounted"), "{err}");
        assert!(target.join("self").exists());
        drop(m);
        assert!(mounts_under(work.path()).unwrap().is_empty());
        let p = work.path().to_path_buf();
        drop(work);
        assert!(!p.exists());
    }
}
