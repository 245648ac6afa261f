use super::*;

const MINIMAL: &str = "#cloud-config\nappliance:\n  domain: ecs.example.org\necs:\n  settings: S3CR3T-SETTINGS\n  vault_encrypt: S3CR3T-ENC\n  vault_sign: S3CR3T-SIGN\n";

fn problems(src: &str) -> Vec<String> {
    Env::parse(src.as_bytes(), "env.yml").unwrap_err().lines()
}

#[test]
fn minimal_env_defaults() {
    let env = Env::parse(MINIMAL.as_bytes(), "env.yml").unwrap();
    assert_eq!(env.appliance.domain, "ecs.example.org");
    assert!(!env.appliance.standby);
    assert!(env.appliance.ssl.letsencrypt_enabled);
    assert_eq!(
        env.appliance.ssl.letsencrypt_directory,
        LETSENCRYPT_DIRECTORY
    );
    assert!(env.appliance.ssl.letsencrypt_directory_ca.is_none());
    assert!(env.appliance.update.automatic);
    assert_eq!(env.appliance.update.oncalendar, DEFAULT_ONCALENDAR);
    assert_eq!(env.appliance.git.branch, "master");
    assert_eq!(env.appliance.git.source, APPLIANCE_GIT_SOURCE);
    assert_eq!(env.ecs.git.source, ECS_GIT_SOURCE);
    assert_eq!(env.ecs.database, "ecs");
    assert_eq!(env.appliance.storage, Storage::default());
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
}

#[test]
fn debug_output_has_no_secrets() {
    let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  dkim: {key: S3CR3T-DKIM}\n  backup: {url: 'ssh://u:S3CR3T-PW@h/x'}\n  extra: {files: [{path: /x, contents: S3CR3T-FILE}]}\n",
        );
    let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
    let dbg = format!("{env:?}");
    assert!(!dbg.contains("S3CR3T"), "{dbg}");
    assert!(dbg.contains("ecs.example.org"));
    assert_eq!(
        env.appliance.dkim_key.as_ref().unwrap().expose(),
        "S3CR3T-DKIM"
    );
}

#[test]
fn every_problem_is_reported_with_position() {
    let src = "#cloud-config\nappliance:\n  domain: ecs.example.org\n  standby: maybe\n  storage:\n    data: {size: 12Q}\n    root_size: lots\necs:\n  settings: x\n  vault_encrypt: x\n";
    assert_eq!(
            problems(src),
            vec![
                "env.yml:4:12: appliance.standby: \"maybe\" is not a boolean (use true or false)",
                "env.yml:6:18: appliance.storage.data.size: \"12Q\" is not a size (use 512M, 20G, 2T, or rest)",
                "env.yml:7:16: appliance.storage.root_size: \"lots\" is not a size (use 512M, 20G, 2T)",
                "env.yml:9:3: ecs.vault_sign: is required (an armored GPG private key)",
            ]
        );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        problems("#cloud-config\nfoo: 1\n"),
        vec![
            "env.yml:2:1: appliance: is required (a map: the host side)",
            "env.yml:2:1: ecs: is required (a map: the application side)",
        ]
    );
    let p = problems("appliance: {}\necs: {vault_encrypt: a, vault_sign: b}\n");
    assert!(
        p.iter()
            .any(|l| l.contains("appliance.domain: is required")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains("ecs.settings: is required")),
        "{p:?}"
    );
}

#[test]
fn secrets_never_in_errors() {
    let src = "appliance:\n  domain: d\n  dkim: {key: [S3CR3T]}\n  ssl: {key: S3CR3T}\necs:\n  settings: 12345\n  vault_encrypt: yes\n  vault_sign: b\n";
    let all = problems(src).join("\n");
    assert!(!all.contains("S3CR3T") && !all.contains("12345"), "{all}");
    assert!(
        all.contains("ecs.settings: must be a string, got an integer"),
        "{all}"
    );
    assert!(
        all.contains("appliance.ssl: `key` and `cert` go together"),
        "{all}"
    );
}

#[test]
fn acme_directory_and_its_ca() {
    let with = |le: &str| {
        MINIMAL.replace(
            "  domain: ecs.example.org\n",
            &format!("  domain: ecs.example.org\n  ssl:\n    letsencrypt: {le}\n"),
        )
    };
    let env = Env::parse(
            with("{directory: 'https://10.0.2.100:14000/dir', directory_ca: \"-----BEGIN CERTIFICATE-----\\nx\\n-----END CERTIFICATE-----\\n\"}").as_bytes(),
            "env.yml",
        )
        .unwrap();
    assert_eq!(
        env.appliance.ssl.letsencrypt_directory,
        "https://10.0.2.100:14000/dir"
    );
    assert!(env.appliance.ssl.letsencrypt_directory_ca.is_some());
    for (bad, why) in [
        ("http://acme.example/dir", "is not an https:// URL"),
        ("https:///dir", "names no host"),
        ("https://a.example/$(reboot)", "has characters"),
    ] {
        let p = problems(&with(&format!("{{directory: '{bad}'}}")));
        assert!(
            p.iter()
                .any(|l| l.contains("appliance.ssl.letsencrypt.directory:") && l.contains(why)),
            "{bad}: {p:?}"
        );
    }
    let p = problems(&with("{directory_ca: not a certificate}"));
    assert!(
            p.iter()
                .any(|l| l
                    .contains("appliance.ssl.letsencrypt.directory_ca: is not a PEM certificate")),
            "{p:?}"
        );
}

#[test]
fn empty_required_maps() {
    let p = problems("appliance:\necs:\n");
    assert_eq!(
        p,
        vec![
            "env.yml:1:10: appliance: is empty; it is required (a map: the host side)",
            "env.yml:2:4: ecs: is empty; it is required (a map: the application side)",
        ]
    );
}

#[test]
fn top_level_must_be_a_map() {
    assert_eq!(
        problems("- a\n- b\n"),
        vec!["env.yml:1:1: the top level must be a map with `appliance` and `ecs`, got a list"]
    );
}

#[test]
fn empty_and_binary_files() {
    assert_eq!(
        problems(""),
        vec!["env.yml:empty: an env needs at least the maps `appliance` and `ecs`"]
    );
    let e = Env::parse(b"\xff\xfe", "env.yml").unwrap_err().to_string();
    assert!(e.starts_with("env.yml:not UTF-8 text"), "{e}");
}

#[test]
fn storage_plans() {
    let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  storage:\n    root_size: 20G\n    data: {device: /dev/vdb}\n    volatile: {size: rest}\n",
        );
    let st = Env::parse(src.as_bytes(), "env.yml")
        .unwrap()
        .appliance
        .storage;
    assert_eq!(st.root_size, Some(20 << 30));
    assert_eq!(st.data, Some(VolumePlan::Device("/dev/vdb".into())));
    assert_eq!(st.volatile, Some(VolumePlan::Rest));
    let bad = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  storage:\n    data: {size: rest, device: /dev/vdb}\n    volatile: {device: vdc}\n",
        );
    let p = problems(&bad).join("\n");
    assert!(
        p.contains("appliance.storage.data: needs exactly one of"),
        "{p}"
    );
    assert!(p.contains("\"vdc\" is not a device path"), "{p}");
}

#[test]
fn sizes() {
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("2T"), Some(2 << 40));
    assert_eq!(parse_size("20GiB"), Some(20 << 30));
    assert_eq!(parse_size("12Q"), None);
    assert_eq!(parse_size("G"), None);
    assert_eq!(parse_size("1024"), None);
    assert_eq!(parse_size("99999999999T"), None);
}

#[test]
fn extra_files_modes_and_owner() {
    let src = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  extra:\n    files:\n      - {path: /etc/motd, contents: hi, owner: 'root:root', permissions: 0644}\n      - {path: /x, permissions: \"0600\"}\n",
        );
    let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
    let f = &env.appliance.extra.files;
    assert_eq!(f[0].permissions, Some(0o644));
    assert_eq!(f[1].permissions, Some(0o600));
    assert_eq!(f[0].owner.as_deref(), Some("root:root"));
    let bad = MINIMAL.replace(
            "  domain: ecs.example.org\n",
            "  domain: ecs.example.org\n  extra:\n    files:\n      - {path: etc/motd, owner: 'a b', permissions: 99999}\n    packages: [Bad_Name]\n",
        );
    let p = problems(&bad).join("\n");
    assert!(
        p.contains("files[0].path: \"etc/motd\" must be an absolute"),
        "{p}"
    );
    assert!(p.contains("files[0].owner"), "{p}");
    assert!(
        p.contains("files[0].permissions: is not a file mode"),
        "{p}"
    );
    assert!(
        p.contains("packages[0]: \"Bad_Name\" is not a Debian/Ubuntu package name"),
        "{p}"
    );
}

#[test]
fn unknown_keys_kept_and_warned() {
    let src = MINIMAL.replace(
        "  domain: ecs.example.org\n",
        "  domain: ecs.example.org\n  domian: typo\n",
    ) + "runcmd: [echo hi]\n";
    let env = Env::parse(src.as_bytes(), "env.yml").unwrap();
    assert_eq!(env.warnings.len(), 1);
    assert_eq!(env.warnings[0].path, "appliance.domian");
    assert!(env.doc.0.get("runcmd").is_some());
    assert!(env.doc.0.get("appliance").unwrap().get("domian").is_some());
}

#[test]
fn unsourceable_keys_refused() {
    let src = MINIMAL.replace(
        "  domain: ecs.example.org\n",
        "  domain: ecs.example.org\n  x-y: 1\n",
    );
    let p = problems(&src).join("\n");
    assert!(
        p.contains("appliance.x-y: makes the variable name `APPLIANCE_X-Y`"),
        "{p}"
    );
}

#[test]
fn bad_domain() {
    let src = MINIMAL.replace("ecs.example.org", "bad_domain!");
    let p = problems(&src).join("\n");
    assert!(
        p.contains("appliance.domain: \"bad_domain!\" is not a host name"),
        "{p}"
    );
}

#[test]
fn sentry_dsn_shape_is_checked_without_repeating_it() {
    let with = |dsn: &str| {
        MINIMAL.replace(
            "  domain: ecs.example.org\n",
            &format!("  domain: ecs.example.org\n  sentry:\n    dsn: \"{dsn}\"\n"),
        )
    };
    for good in [
        "https://K3Y@sentry.example.org/42",
        "http://K3Y:S3C@10.0.2.102:8080/sub/path/7",
    ] {
        let env = Env::parse(with(good).as_bytes(), "env.yml").unwrap();
        assert_eq!(env.appliance.sentry_dsn.unwrap().expose(), good);
    }
    for (bad, says) in [
        ("ftp://K3Y@sentry.example.org/42", "https://"),
        ("https://sentry.example.org/42", "no key"),
        ("https://K3Y@sentry.example.org/", "numeric project"),
        ("https://K3Y@sentry.example.org/abc", "numeric project"),
        ("https://K3Y@-bad-/42", "host"),
        ("https://K3Y@sentry.example.org/4 2", "numeric project"),
        ("https://K3Y?x@sentry.example.org/42", "key"),
    ] {
        let p = problems(&with(bad)).join("\n");
        assert!(
            p.contains("appliance.sentry.dsn") && p.contains(says),
            "{bad}: {p}"
        );
        assert!(!p.contains("K3Y"), "the error repeats the DSN's key: {p}");
    }
}
