//! The tree stage end to end, through the `imgbuild` binary, against the
//! default distribution's archive (Ubuntu noble, every pocket).
//!
//! Tests named `slow_*` build small stacks with mmdebstrap and apt (a minute
//! or two each on the first run on a machine). They run as root, like the
//! tool, and fail — never skip — when a tool or the network is missing.
//!
//! Downloaded packages are kept in a persistent cache outside the checkout,
//! `$IMGBUILD_TEST_CACHE`, else `$IMGBUILD_CACHE_DIR` (as scripts/test.sh
//! sets it), else `/var/tmp/imgbuild-test-cache`, shared by all test runs on
//! a machine; so is the layer cache used by the failure tests, so their base
//! is built once per machine. The build-twice test uses a fresh layer cache
//! (it must see the first build miss) with the shared package cache.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{apt_cache, base_layer, imgbuild, persistent_cache, stderr, tree_args, write};

/// `(layer, outcome)` pairs from `imgbuild tree` output.
fn outcomes(o: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "tree output line {l:?}");
            assert_eq!(f[1].len(), 64, "a sha256 key in {l:?}");
            (f[0].to_string(), f[2].to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn assert_no_mounts_under(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.canonicalize().unwrap();
    for l in info.lines() {
        let mp = l.split(' ').nth(4).unwrap();
        assert!(!Path::new(mp).starts_with(&dir), "left mounted: {mp}");
    }
}

fn assert_work_empty(cache: &Path) {
    let left: Vec<_> = fs::read_dir(cache.join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "work trees left behind: {left:?}");
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (rc >= 0).then(|| {
        buf.truncate(rc as usize);
        buf
    })
}

/// What the test layer put into the tree, checked on a fresh build and on
/// a tree extracted from the cache alike.
fn check_tree(root: &Path) {
    let m = fs::metadata(root.join("etc/imgbuild-test")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o640, 0),
        "overlay file mode from files:"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/imgbuild-test")).unwrap(),
        "one\n"
    );
    // Times come from SOURCE_DATE_EPOCH, by default the archive's Release date.
    assert!(
        m.mtime() > 1_600_000_000,
        "mtime {} is not the archive's date",
        m.mtime()
    );
    let h = fs::metadata(root.join("etc/hostname")).unwrap();
    assert_eq!(h.mode() & 0o7777, 0o644);
    let m = fs::metadata(root.join("usr/local/bin/hosttool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_to_string(root.join("etc/script-ran"))
            .unwrap()
            .trim(),
        "10-test"
    );
    // iputils-ping's postinst gives ping a file capability when setcap exists.
    let ping = root.join("usr/bin/ping");
    assert!(
        xattr(&ping, "security.capability").is_some(),
        "ping lost its file capability"
    );
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(
        null.file_type().is_char_device(),
        "/dev/null is a device node"
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed after the layer"
    );
    assert!(!root.join("etc/.resolv.conf.imgbuild-saved").exists());
    assert!(fs::read_dir(root.join("var/cache/apt/archives"))
        .unwrap()
        .all(|e| {
            let n = e.unwrap().file_name();
            n == "partial" || n == "lock"
        }));
}

#[test]
fn slow_tree_builds_then_hits_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    let l = layers.join("10-test");
    write(
        &l.join("layer.yml"),
        "packages: [iputils-ping, libcap2-bin]\n\
         files: [{path: /etc/imgbuild-test, mode: 0640}]\n\
         host_files: [{from: '@tool', to: /usr/local/bin/hosttool, mode: 0755}]\n\
         scripts: [setup.sh]\n",
        0o644,
    );
    write(&l.join("files/etc/imgbuild-test"), "one\n", 0o644);
    write(
        &l.join("setup.sh"),
        "#!/bin/sh\nset -e\necho \"$IMGBUILD_LAYER\" > /etc/script-ran\n",
        0o755,
    );
    let tool = tmp.path().join("tool");
    write(&tool, "#!/bin/sh\necho v1\n", 0o755);
    let host_bin = format!("tool={}", tool.display());
    let cache = tmp.path().join("cache");
    let (ls, cs, apt) = (
        layers.to_str().unwrap().to_string(),
        cache.to_str().unwrap().to_string(),
        apt_cache().to_str().unwrap().to_string(),
    );
    let mut args = tree_args(&ls, &cs, &apt);
    args.extend(["--host-bin", &host_bin]);

    // 1: everything is built.
    let out1 = tmp.path().join("out1");
    let mut a = args.clone();
    a.extend(["-o", out1.to_str().unwrap()]);
    let o = imgbuild(&a);
    assert!(o.status.success(), "first build failed:\n{}", stderr(&o));
    assert_eq!(
        outcomes(&o),
        pairs(&[
            ("00-base", "built"),
            ("10-test", "built"),
            ("updates", "built")
        ])
    );
    assert!(stderr(&o).contains("10-test: miss"), "{}", stderr(&o));
    check_tree(&out1);
    assert_no_mounts_under(&cache);
    assert_work_empty(&cache);

    // 2: nothing changed: the top layer is a hit, nothing is built.
    let out2 = tmp.path().join("out2");
    let mut a = args.clone();
    a.extend(["-o", out2.to_str().unwrap()]);
    let started = Instant::now();
    let o = imgbuild(&a);
    let took = started.elapsed();
    assert!(o.status.success(), "second build failed:\n{}", stderr(&o));
    assert_eq!(
        outcomes(&o),
        pairs(&[
            ("00-base", "covered"),
            ("10-test", "covered"),
            ("updates", "hit")
        ])
    );
    assert!(stderr(&o).contains("updates: hit"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("miss"), "{}", stderr(&o));
    check_tree(&out2);
    assert!(took < Duration::from_secs(60), "a no-op took {took:?}");
    assert_work_empty(&cache);
    // Without -o, a fully cached stack is only checked.
    let o = imgbuild(&args);
    assert!(o.status.success());
    assert_eq!(
        outcomes(&o),
        pairs(&[
            ("00-base", "covered"),
            ("10-test", "covered"),
            ("updates", "hit")
        ])
    );

    // 3: a changed overlay file and a rebuilt host program: only 10-test
    // misses, and it says why.
    write(&l.join("files/etc/imgbuild-test"), "two\n", 0o644);
    write(&tool, "#!/bin/sh\necho v2\n", 0o755);
    let o = imgbuild(&args);
    assert!(o.status.success(), "third build failed:\n{}", stderr(&o));
    // The layer's package stage is cached on its own: only the files and the
    // script run again, not apt.
    assert_eq!(
        outcomes(&o),
        pairs(&[
            ("00-base", "covered"),
            ("10-test", "built"),
            ("updates", "built")
        ])
    );
    let err = stderr(&o);
    assert!(
        err.contains("10-test: miss") && err.contains("files/etc/imgbuild-test changed"),
        "{err}"
    );
    assert!(
        err.contains("@tool → /usr/local/bin/hosttool changed"),
        "{err}"
    );
    assert!(err.contains("its packages are cached"), "{err}");
    assert!(err.contains("10-test: extracting its packages"), "{err}");
    assert!(!err.contains("apt-get install"), "apt ran again: {err}");

    // The cache lists both 10-test entries (and the package stage); gc keeps
    // the newest of each.
    let count = |name: &str| {
        let o = imgbuild(&["cache", "--cache-dir", &cs, "ls"]);
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(name))
            .count()
    };
    assert_eq!(count("10-test"), 2);
    assert_eq!(count("10-test+packages"), 1);
    let o = imgbuild(&["cache", "--cache-dir", &cs, "gc", "--keep", "1"]);
    assert!(o.status.success());
    assert_eq!(count("10-test"), 1);
    assert_eq!(count("00-base"), 1);
    assert_no_mounts_under(&cache);
}

/// A stack of the shared base plus one layer, in the persistent cache.
fn failing_stack(tmp: &Path, name: &str, recipe: &str, script: Option<&str>) -> Output {
    let layers = tmp.join("layers");
    base_layer(&layers);
    write(&layers.join(name).join("layer.yml"), recipe, 0o644);
    if let Some(s) = script {
        write(&layers.join(name).join("fail.sh"), s, 0o755);
    }
    let cache = persistent_cache();
    let (ls, cs, apt) = (
        layers.to_str().unwrap().to_string(),
        cache.to_str().unwrap().to_string(),
        apt_cache().to_str().unwrap().to_string(),
    );
    let o = imgbuild(&tree_args(&ls, &cs, &apt));
    assert_no_mounts_under(&cache);
    o
}

fn cache_has_layer(name: &str) -> bool {
    let cs = persistent_cache().to_str().unwrap().to_string();
    let o = imgbuild(&["cache", "--cache-dir", &cs, "ls"]);
    String::from_utf8_lossy(&o.stdout).contains(name)
}

#[test]
fn slow_unknown_package_shows_apts_message_and_caches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let o = failing_stack(
        tmp.path(),
        "10-badpkg",
        "packages: [no-such-package-imgbuild]\n",
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("layer 10-badpkg failed"), "{err}");
    assert!(
        err.contains("Unable to locate package no-such-package-imgbuild"),
        "{err}"
    );
    assert!(!cache_has_layer("10-badpkg"));
}

#[test]
fn slow_failing_script_shows_exit_code_and_last_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let o = failing_stack(
        tmp.path(),
        "10-badscript",
        "scripts: [fail.sh]\n",
        Some("#!/bin/sh\nfor i in $(seq 1 30); do echo line$i; done\nexit 3\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("layer 10-badscript failed"), "{err}");
    assert!(err.contains("script fail.sh"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("line30") && err.contains("line11\n"), "{err}");
    assert!(!err.contains("line10\n"), "only the last 20 lines: {err}");
    assert!(!cache_has_layer("10-badscript"));
}

#[test]
fn unreachable_mirror_fails_fast_naming_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    let cache = tmp.path().join("cache");
    for mirror in ["http://127.0.0.1:9/ubuntu", "http://192.0.2.1/ubuntu"] {
        let started = Instant::now();
        let o = imgbuild(&[
            "tree",
            "--layers-dir",
            layers.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--mirror",
            mirror,
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{mirror}/dists/noble/InRelease")),
            "{err}"
        );
    }
}

#[test]
fn bad_recipe_is_bad_input_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    write(&layers.join("10-x/layer.yml"), "packges: [hello]\n", 0o644);
    let o = imgbuild(&[
        "tree",
        "--layers-dir",
        layers.to_str().unwrap(),
        "--cache-dir",
        "/nonexistent",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("10-x/layer.yml") && err.contains("packges"),
        "{err}"
    );
}

#[test]
fn not_root_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_imgbuild"),
        ])
        .args([
            "tree",
            "--layers-dir",
            layers.to_str().unwrap(),
            "--cache-dir",
            "/nonexistent",
        ])
        .output()
        .expect("running setpriv (util-linux)");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root") && err.contains("mmdebstrap"),
        "{err}"
    );
}
