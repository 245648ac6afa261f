//! The assembled-image cache end to end: a build from layers stores its
//! image, an identical rebuild copies it (and writes the same bytes as the
//! build that assembled it, the SBOM included, valid by the SPDX
//! validator), anything that reaches the image misses, a
//! damaged entry is a miss, an output changed in place (the entry is its
//! hard link) is noticed and assembled again, and `--no-image-cache`
//! assembles; a new top layer is compressed into the cache while the disk
//! is assembled.
//!
//! The stack is the shared minbase of `tree_layers.rs` plus a kernel and
//! GRUB (the least a disk needs), built once per machine in the persistent
//! cache (see `common`). The images go to a private cache directory that
//! links those layer entries, so the test neither sees nor evicts anyone
//! else's images. Runs as root; fails, never skips, without the network or
//! a tool.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{apt_cache, base_layer, imgbuild, persistent_cache, stderr, tree_args, write};

const ENV: &str = "#cloud-config\n\
appliance:\n  domain: test.example.org\n  storage:\n    ignore: {data: true, volatile: true}\n\
ecs:\n  settings: s\n  vault_encrypt: SECRET-ENCRYPT-KEY-42\n  vault_sign: SECRET-SIGN-KEY-42\n";

const OUTPUTS: &[&str] = &[
    "ecs.raw",
    "ecs.seed.iso",
    "ecs.manifest.json",
    "ecs.spdx.json",
    "ecs.SHA256SUMS",
];

/// `scripts/check-sbom`: the SBOM is valid SPDX (pyspdxtools) and lists
/// the manifest's packages; returns its summary line.
fn check_sbom(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-sbom");
    let o = std::process::Command::new(&script)
        .arg(dir.join("ecs.spdx.json"))
        .arg(dir.join("ecs.manifest.json"))
        .output()
        .expect("running scripts/check-sbom");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "check-sbom failed:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn ok(o: &Output) -> String {
    let err = stderr(o);
    assert!(o.status.success(), "imgbuild failed ({}):\n{err}", o.status);
    err
}

/// The key after `image: miss ` or `image: hit ` in a build's log.
fn image_key(log: &str, what: &str) -> String {
    let tag = format!("image: {what} ");
    let at = log
        .find(&tag)
        .unwrap_or_else(|| panic!("no {tag:?} in:\n{log}"));
    log[at + tag.len()..at + tag.len() + 12].to_string()
}

fn outputs(dir: &Path) -> Vec<Vec<u8>> {
    OUTPUTS
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect()
}

fn assert_same_outputs(dir: &Path, want: &[Vec<u8>], what: &str) {
    for (name, bytes) in OUTPUTS.iter().zip(want) {
        assert!(
            fs::read(dir.join(name)).unwrap() == *bytes,
            "{what}: {name} differs from the first build's"
        );
    }
}

/// Hard-links (or copies) the layer entries `keys` of `from` into `to`.
fn link_layers(from: &Path, to: &Path, keys: &[String]) {
    fs::create_dir_all(to.join("layers")).unwrap();
    for key in keys {
        for ext in ["tar.zst", "json"] {
            let name = format!("{key}.{ext}");
            let src = from.join("layers").join(&name);
            if !src.exists() {
                continue;
            }
            let dst = to.join("layers").join(&name);
            if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst).unwrap();
            }
        }
    }
}

fn image_rows(cache: &str) -> Vec<String> {
    let o = imgbuild(&["cache", "--cache-dir", cache, "ls"]);
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("image"))
        .map(str::to_string)
        .collect()
}

#[test]
fn slow_identical_rebuild_copies_the_cached_image() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "building trees needs root");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    write(
        &layers.join("10-kernel/layer.yml"),
        "packages: [grub-pc-bin, grub-efi-amd64-bin, initramfs-tools]\n\
         distro_packages: {ubuntu: [linux-image-virtual], debian: [linux-image-amd64]}\n",
        0o644,
    );
    let shared = persistent_cache();
    let (ls, ss, apt) = (
        layers.to_str().unwrap().to_string(),
        shared.to_str().unwrap().to_string(),
        apt_cache().to_str().unwrap().to_string(),
    );

    // The layers, in the shared cache; their entries, in a private one.
    let o = imgbuild(&tree_args(&ls, &ss, &apt));
    ok(&o);
    let keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 3, "two layers and the updates step");
    let cache = tmp.path().join("cache");
    link_layers(&shared, &cache, &keys);
    let cs = cache.to_str().unwrap().to_string();

    let env = tmp.path().join("env.yml");
    fs::write(&env, ENV).unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let image = out.join("ecs.raw");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "--env",
            env.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
            "--force",
            "--layers-dir",
            &ls,
            "--cache-dir",
            &cs,
            "--apt-cache",
            &apt,
        ];
        args.extend(extra);
        imgbuild(&args)
    };
    let assembled = "root filesystem and disk in";

    // 1: a miss: assembled and stored.
    let err = ok(&build(&[]));
    let key = image_key(&err, "miss");
    assert!(err.contains("no image in the cache"), "{err}");
    assert!(err.contains(assembled), "{err}");
    assert!(err.contains(&format!("image: stored {key}")), "{err}");
    let first = outputs(&out);
    let summary = check_sbom(&out);
    assert!(summary.starts_with("sbom: "), "{summary}");
    let allocated = fs::metadata(&image).unwrap().blocks();
    assert_eq!(image_rows(&cs).len(), 1, "cache ls shows the image");

    // 2: nothing changed: a hit, nothing extracted or assembled, the same bytes.
    let err = ok(&build(&[]));
    assert_eq!(image_key(&err, "hit"), key);
    assert!(err.contains("updates: hit"), "{err}");
    assert!(!err.contains("extracting"), "{err}");
    assert!(!err.contains(assembled), "{err}");
    assert!(!err.contains("image: stored"), "{err}");
    assert_same_outputs(&out, &first, "a hit");
    assert!(
        fs::metadata(&image).unwrap().blocks() <= allocated + 8,
        "the copied raw image keeps its holes"
    );

    // 3: another --cmdline: a miss that says why, another image.
    let err = ok(&build(&["--cmdline", "quiet"]));
    let other = image_key(&err, "miss");
    assert_ne!(other, key);
    assert!(err.contains("--cmdline changed"), "{err}");
    assert!(err.contains(assembled), "{err}");
    assert_ne!(fs::read(&image).unwrap(), first[0]);
    assert_eq!(image_rows(&cs).len(), 2);

    // 4: a damaged entry (its manifest part gone): a miss, not an error; the
    // build assembles the same bytes and stores the entry again.
    let entry = fs::read_dir(cache.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&key))
        .expect("the first image's entry");
    fs::remove_file(entry.join("manifest.json")).unwrap();
    let err = ok(&build(&[]));
    assert_eq!(image_key(&err, "miss"), key);
    assert!(err.contains("incomplete"), "{err}");
    assert!(err.contains(assembled), "{err}");
    assert_same_outputs(&out, &first, "a rebuild after a damaged entry");
    assert!(
        entry.join("manifest.json").is_file(),
        "the entry is whole again"
    );

    // 4b: the entry is the output's own file (one filesystem): an output
    // changed in place (as by booting it without an overlay) is noticed by
    // the hit's sha256 check, which says why; the build assembles again.
    let cached = fs::metadata(entry.join("image")).unwrap();
    let output = fs::metadata(&image).unwrap();
    assert_eq!(
        (cached.dev(), cached.ino()),
        (output.dev(), output.ino()),
        "the entry is a hard link of the output"
    );
    std::os::unix::fs::FileExt::write_all_at(
        &fs::File::options().write(true).open(&image).unwrap(),
        b"booted",
        0,
    )
    .unwrap();
    let err = ok(&build(&[]));
    assert_eq!(image_key(&err, "hit"), key);
    assert!(err.contains("changed in place"), "{err}");
    assert!(err.contains(assembled), "{err}");
    assert_same_outputs(&out, &first, "a rebuild after the output was changed");

    // 5: --no-image-cache assembles, and neither looks up nor stores.
    let err = ok(&build(&["--no-image-cache"]));
    assert!(err.contains(assembled), "{err}");
    assert!(
        !err.contains("image: hit") && !err.contains("image: miss"),
        "{err}"
    );
    assert!(!err.contains("image: stored"), "{err}");
    assert_same_outputs(&out, &first, "--no-image-cache");

    // Nothing half-written is left; gc and rm handle images.
    let left: Vec<PathBuf> = fs::read_dir(cache.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary entries left: {left:?}");
    let left: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "work directories left: {left:?}");
    let o = imgbuild(&["cache", "--cache-dir", &cs, "gc", "--keep", "1"]);
    assert!(o.status.success());
    let rows = image_rows(&cs);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].starts_with(&key),
        "the most recently used stays: {rows:?}"
    );
    let o = imgbuild(&["cache", "--cache-dir", &cs, "rm", &key]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(image_rows(&cs).is_empty());
    assert!(!entry.exists());

    // 6: a new top layer is built and stored; the updates step above it,
    // now the top of the tree, is read into a plain tar and compressed while
    // the disk is assembled; its entry is in the cache when the build ends
    // (the next build hits it, and the image).
    write(&layers.join("20-top/layer.yml"), "{}\n", 0o644);
    write(&layers.join("20-top/files/etc/imgbuild-test"), "6\n", 0o644);
    let err = ok(&build(&[]));
    assert!(err.contains("20-top: archiving: stored"), "{err}");
    assert!(
        err.contains("updates: archiving: tree read; compressing it beside the disk"),
        "{err}"
    );
    assert!(err.contains("updates: archiving: stored"), "{err}");
    assert!(err.contains(assembled), "{err}");
    let err = ok(&build(&[]));
    assert!(err.contains("updates: hit"), "{err}");
    assert!(err.contains("image: hit"), "{err}");
    let left: Vec<PathBuf> = fs::read_dir(cache.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary layer files left: {left:?}");
}
