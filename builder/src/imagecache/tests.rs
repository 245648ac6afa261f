use super::*;
use std::os::unix::fs::MetadataExt;

fn programs() -> Programs {
    let tools = DISK_TOOLS
        .iter()
        .map(|t| (t.to_string(), format!("hash-of-{t}")))
        .collect();
    Programs {
        imgbuild: "exe-hash".into(),
        tools,
    }
}

fn spec(output: &Path) -> ImageSpec<'_> {
    ImageSpec {
        top_layer: ParentRef {
            layer: "30-appliance".into(),
            key: "k30".into(),
        },
        source_date_epoch: 1_700_000_000,
        format: Format::Qcow2,
        compress: false,
        size: None,
        cmdline: "",
        baked_env: None,
        output,
    }
}

/// Every input of the key changes it; a new field of [`ImageInputs`]
/// fails to compile here until it is tested.
#[test]
fn every_input_changes_the_key() {
    let out = Path::new("/o/ecs.qcow2");
    let base = image_inputs(&spec(out), &programs());
    let ImageInputs {
        format: _,
        top_layer: _,
        source_date_epoch: _,
        image_format: _,
        compress: _,
        size: _,
        cmdline: _,
        baked_env: _,
        file_name: _,
        imgbuild: _,
        tools: _,
    } = &base;
    let k0 = base.key();
    assert_eq!(k0, image_inputs(&spec(out), &programs()).key(), "stable");
    assert_eq!(k0.len(), 64);
    let env = b"#cloud-config\n".to_vec();
    let env2 = b"#cloud-config\na: 1\n".to_vec();
    let vmdk = Path::new("/o/ecs.vmdk");
    let other_vmdk = Path::new("/o/other.vmdk");
    let variants: Vec<(&str, ImageInputs)> = vec![
        ("format version", {
            let mut i = base.clone();
            i.format += 1;
            i
        }),
        ("top layer key", {
            let mut s = spec(out);
            s.top_layer.key = "k30b".into();
            image_inputs(&s, &programs())
        }),
        ("top layer name", {
            let mut s = spec(out);
            s.top_layer.layer = "40-extra".into();
            image_inputs(&s, &programs())
        }),
        ("SOURCE_DATE_EPOCH", {
            let mut s = spec(out);
            s.source_date_epoch += 1;
            image_inputs(&s, &programs())
        }),
        ("format", {
            let mut s = spec(out);
            s.format = Format::Raw;
            image_inputs(&s, &programs())
        }),
        ("--compress", {
            let mut s = spec(out);
            s.compress = true;
            image_inputs(&s, &programs())
        }),
        ("--size", {
            let mut s = spec(out);
            s.size = Some(4 << 30);
            image_inputs(&s, &programs())
        }),
        ("--cmdline", {
            let mut s = spec(out);
            s.cmdline = "quiet";
            image_inputs(&s, &programs())
        }),
        ("--bake-env", {
            let mut s = spec(out);
            s.baked_env = Some(&env);
            image_inputs(&s, &programs())
        }),
        ("baked env bytes", {
            let mut s = spec(out);
            s.baked_env = Some(&env2);
            image_inputs(&s, &programs())
        }),
        ("vmdk file name", {
            let mut s = spec(other_vmdk);
            s.format = Format::Vmdk;
            image_inputs(&s, &programs())
        }),
        ("imgbuild", {
            let mut p = programs();
            p.imgbuild = "another-exe".into();
            image_inputs(&spec(out), &p)
        }),
        ("a host tool", {
            let mut p = programs();
            p.tools.insert("mkfs.ext4".into(), "missing".into());
            image_inputs(&spec(out), &p)
        }),
    ];
    let mut keys = vec![k0.clone()];
    for (what, inputs) in &variants {
        let k = inputs.key();
        assert!(!keys.contains(&k), "{what} did not change the key");
        keys.push(k);
        assert!(
            !diff(&base, inputs).is_empty() || *what == "vmdk file name",
            "{what}: no reason given"
        );
    }
    // The vmdk's name matters for vmdk only.
    let mut a = spec(vmdk);
    a.format = Format::Vmdk;
    let mut b = spec(other_vmdk);
    b.format = Format::Vmdk;
    assert_ne!(
        image_inputs(&a, &programs()).key(),
        image_inputs(&b, &programs()).key()
    );
    assert_eq!(
        image_inputs(&spec(Path::new("/elsewhere/x.qcow2")), &programs()).key(),
        k0,
        "a qcow2's name and directory do not matter"
    );
}

#[test]
fn diffs_name_what_changed() {
    let out = Path::new("/o/ecs.qcow2");
    let a = image_inputs(&spec(out), &programs());
    let mut s = spec(out);
    s.cmdline = "quiet";
    s.size = Some(2 << 30);
    s.top_layer.key = "other".into();
    let b = image_inputs(&s, &programs());
    assert_eq!(
        diff(&a, &b),
        vec![
            "layer 30-appliance changed",
            "--size changed (default → 2.0 GiB)",
            "--cmdline changed"
        ]
    );
}

#[test]
fn a_field_without_a_phrase_is_named() {
    let a = image_inputs(&spec(Path::new("/o/ecs.qcow2")), &programs());
    assert_eq!(
        describe_field("new_option", &a, &a, &1.into(), &2.into()),
        vec!["new_option changed (1 → 2)"]
    );
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn programs_of_this_process_are_hashed() {
    let p = Programs::of_this_process().unwrap();
    assert_eq!(p.imgbuild.len(), 64);
    assert_eq!(p.tools.len(), DISK_TOOLS.len());
}

fn parts() -> ManifestParts {
    let layout = crate::disk::Layout::plan(b"id", crate::disk::ESP_SIZE, 64 << 20);
    ManifestParts {
        disk: Assembled {
            raw: PathBuf::new(),
            root_uuid: layout.root.unique_guid,
            layout,
            esp_volume_id: "1234-ABCD".into(),
            kernel_cmdline: "root=UUID=x ro".into(),
            source_date_epoch: 1,
            tree: crate::ext4::TreeUsage::default(),
            min_disk_size: 1 << 20,
        },
        packages: vec![Package {
            name: "a".into(),
            version: "1".into(),
            arch: "amd64".into(),
            source: "a".into(),
            source_version: "1".into(),
            license: Some("MIT".into()),
            download: None,
            sha256: None,
        }],
        os: crate::imagecache::OsInfo {
            id: "ubuntu".into(),
            codename: "noble".into(),
        },
    }
}

fn stored(images: &Images, lock: &CacheLock, n: u64, d: &Path) -> (ImageInputs, String) {
    let mut s = spec(Path::new("x.raw"));
    s.format = Format::Raw;
    s.size = Some(n);
    let inputs = image_inputs(&s, &programs());
    let img = d.join(format!("img{n}"));
    let f = File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, format!("image {n}").as_bytes(), 1 << 20).unwrap();
    drop(f);
    let sha = output::sha256_file(&img).unwrap();
    images.store(lock, &inputs, &img, &sha, &parts()).unwrap();
    (inputs, sha)
}

#[test]
fn a_busy_cache_is_not_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(&d.path().join("cache")).unwrap();
    let images = Images::new(&cache);
    let img = d.path().join("img");
    fs::write(&img, "image").unwrap();
    let inputs = image_inputs(&spec(Path::new("x.qcow2")), &programs());
    let held = cache.lock().unwrap();
    store_after_build(&images, &inputs, &img, "sha", &parts());
    assert!(
        images.list().is_empty(),
        "stored while another held the lock"
    );
    drop(held);
    store_after_build(&images, &inputs, &img, "sha", &parts());
    assert_eq!(images.list().len(), 1);
}

#[test]
fn store_hit_damage_and_eviction() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(&d.path().join("cache")).unwrap();
    let images = Images::new(&cache);
    let lock = cache.lock().unwrap();
    let (in1, sha1) = stored(&images, &lock, 1, d.path());
    let Lookup::Hit(e) = images.lookup(&in1) else {
        panic!("a stored image is a hit")
    };
    let out = d.path().join("out.raw");
    assert_eq!(images.restore(&e, &out).unwrap(), sha1);
    assert_eq!(output::sha256_file(&out).unwrap(), sha1);
    assert!(
        output::allocated_bytes(&out).unwrap() < 1 << 20,
        "the restored raw image keeps its holes"
    );
    assert_eq!(
        serde_json::to_string(&e.parts).unwrap(),
        serde_json::to_string(&parts()).unwrap(),
        "the manifest parts come back as they were"
    );

    // A missing manifest part: a miss that says so, and gc removes it.
    let dir = images.entry_dir(&in1.key());
    fs::remove_file(dir.join(MANIFEST)).unwrap();
    match images.lookup(&in1) {
        Lookup::Miss(why) => assert!(why.contains("incomplete"), "{why}"),
        Lookup::Hit(_) => panic!("an entry without its manifest is a hit"),
    }
    // Storing again replaces the incomplete entry.
    stored(&images, &lock, 1, d.path());
    let Lookup::Hit(e) = images.lookup(&in1) else {
        panic!("the re-stored entry is a hit")
    };
    // A damaged image (same size, other bytes) fails the restore.
    std::os::unix::fs::FileExt::write_all_at(
        &File::options().write(true).open(dir.join(IMAGE)).unwrap(),
        b"X",
        0,
    )
    .unwrap();
    let out2 = d.path().join("out2.raw");
    let err = format!("{:#}", images.restore(&e, &out2).unwrap_err());
    assert!(err.contains("sha256"), "{err}");
    // A truncated image is not even a hit.
    File::options()
        .write(true)
        .open(dir.join(IMAGE))
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(matches!(images.lookup(&in1), Lookup::Miss(_)));

    // A half-written entry of a killed build is never looked at, and the
    // next store removes it.
    let (in2, _) = stored(&images, &lock, 2, d.path());
    let half = images.dir.join(format!(".tmp-1-{}", in2.key()));
    fs::create_dir(&half).unwrap();
    fs::write(half.join(IMAGE), "partial").unwrap();
    // Only KEEP entries are kept: 1 (damaged), 2, 3 → the newest two.
    let (in3, _) = stored(&images, &lock, 3, d.path());
    assert!(!half.exists(), "leftover removed");
    let keys: Vec<String> = images.list().into_iter().map(|e| e.key).collect();
    assert_eq!(keys.len(), KEEP);
    assert!(keys.contains(&in2.key()) && keys.contains(&in3.key()));
    match images.lookup(&in1) {
        Lookup::Miss(why) => assert!(why.contains("--size changed"), "{why}"),
        Lookup::Hit(_) => panic!("evicted"),
    }
    assert_eq!(images.matching(&in3.key()[..10]).len(), 1);
    fs::write(images.dir.join("stray"), "x").unwrap();
    let removed = images.gc(&lock, 1).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(images.list().len(), 1);
    assert_eq!(
        fs::read_dir(&images.dir).unwrap().count(),
        1,
        "stray file removed"
    );
}

/// On one filesystem the entry is the output's own file (no copy); an
/// output changed in place is then found by the sha256 check, which
/// says why. Across filesystems it is a copy the output cannot change.
#[test]
fn entries_link_the_output_and_notice_when_it_changed() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(&d.path().join("cache")).unwrap();
    let images = Images::new(&cache);
    let lock = cache.lock().unwrap();
    let (in1, _) = stored(&images, &lock, 1, d.path());
    let Lookup::Hit(e) = images.lookup(&in1) else {
        panic!("a stored image is a hit")
    };
    assert!(e.meta.linked, "same filesystem: linked");
    let src = fs::metadata(d.path().join("img1")).unwrap();
    let cached = fs::metadata(e.dir.join(IMAGE)).unwrap();
    assert_eq!((src.dev(), src.ino()), (cached.dev(), cached.ino()));
    // The output booted without an overlay: one sector changed.
    std::os::unix::fs::FileExt::write_all_at(
        &File::options()
            .write(true)
            .open(d.path().join("img1"))
            .unwrap(),
        b"booted",
        0,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        images.restore(&e, &d.path().join("out.raw")).unwrap_err()
    );
    assert!(err.contains("changed in place"), "{err}");

    // From another filesystem (tmpfs, when there is one): a copy.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let other = tempfile::tempdir_in(shm).unwrap();
        let same_fs =
            fs::metadata(other.path()).unwrap().dev() == fs::metadata(&images.dir).unwrap().dev();
        let (in2, _) = stored(&images, &lock, 2, other.path());
        let Lookup::Hit(e2) = images.lookup(&in2) else {
            panic!("a stored image is a hit")
        };
        assert_eq!(e2.meta.linked, same_fs);
        fs::write(other.path().join("img2"), "changed").unwrap();
        if !same_fs {
            let out = d.path().join("out2.raw");
            images.restore(&e2, &out).unwrap();
        }
    }
}
