use super::*;
use std::fs;

fn layer_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("files/etc")).unwrap();
    fs::write(d.path().join("files/etc/motd"), "hi\n").unwrap();
    fs::write(d.path().join("setup.sh"), "#!/bin/sh\ntrue\n").unwrap();
    fs::write(d.path().join("noshebang.sh"), "true\n").unwrap();
    d
}

fn parse(text: &str) -> anyhow::Result<Recipe> {
    let d = layer_dir();
    parse_recipe(text, &d.path().join("layer.yml"), d.path())
}

fn err(text: &str) -> String {
    let e = parse(text).unwrap_err();
    assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT, "{e:#}");
    format!("{e:#}")
}

#[test]
fn full_recipe_parses() {
    let r = parse(
            "description: x\nbase: {distro: debian, suite: bookworm, mirror: 'http://deb.debian.org/debian', components: [main], variant: minbase}\n\
             packages: [systemd, 'hello=2.10-3']\ndistro_packages: {ubuntu: [linux-image-generic], debian: [linux-image-amd64]}\n\
             files:\n  - {path: /etc/motd, mode: 0600, owner: root, group: '0'}\n\
             host_files:\n  - {from: '@ecs-firstboot', to: /usr/sbin/ecs-firstboot, mode: 0755}\n\
             scripts: [setup.sh]\nenable: [ecs-firstboot.service]\nmask: [apt-daily.timer]\n",
        )
        .unwrap();
    assert_eq!(r.files[0].mode, Some(Mode(0o600)));
    assert_eq!(r.host_files[0].mode, Mode(0o755));
    assert_eq!(r.base.as_ref().unwrap().variant, "minbase");
    assert_eq!(
        r.distro_packages[&Distro::Debian],
        vec!["linux-image-amd64"]
    );
}

#[test]
fn empty_recipe_is_allowed() {
    assert_eq!(parse("").unwrap(), Recipe::default());
    assert_eq!(parse("# only a comment\n").unwrap(), Recipe::default());
}

#[test]
fn string_modes_are_octal() {
    let r = parse("host_files: [{from: setup.sh, to: /x, mode: '0640'}]").unwrap();
    assert_eq!(r.host_files[0].mode, Mode(0o640));
}

#[test]
fn bad_recipes_name_file_and_field() {
    let cases: &[(&str, &[&str])] = &[
        ("pakages: [a]", &["layer.yml", "pakages"]),
        (
            "packages: [Bad_Name]",
            &["layer.yml", "packages[0]", "Bad_Name"],
        ),
        ("packages: notalist", &["layer.yml", "packages"]),
        ("base: {distro: arch}", &["layer.yml", "arch"]),
        (
            "base: {distro: debian, variant: tiny}",
            &["base.variant", "tiny"],
        ),
        (
            "base: {distro: debian, mirror: 'ftp://x'}",
            &["base.mirror", "ftp://x"],
        ),
        ("base: {distro: debian, colour: red}", &["colour"]),
        ("scripts: [missing.sh]", &["scripts[0]", "missing.sh"]),
        ("scripts: [noshebang.sh]", &["scripts[0]", "#!"]),
        ("scripts: ['../x.sh']", &["scripts[0]", ".."]),
        ("files: [{path: etc/motd}]", &["files[0].path", "absolute"]),
        (
            "files: [{path: /etc/nope}]",
            &["files[0].path", "/etc/nope"],
        ),
        (
            "files: [{path: /etc/motd, mode: '9'}]",
            &["layer.yml", "octal"],
        ),
        (
            "files: [{path: /etc/motd, mode: 077777}]",
            &["layer.yml", "07777"],
        ),
        (
            "host_files: [{from: '@', to: /x, mode: 0755}]",
            &["host_files[0].from"],
        ),
        (
            "host_files: [{from: '@a', to: x, mode: 0755}]",
            &["host_files[0].to"],
        ),
        (
            "host_files: [{from: nofile, to: /x, mode: 0755}]",
            &["host_files[0].from", "nofile"],
        ),
        ("host_files: [{from: '@a', to: /x}]", &["layer.yml", "mode"]),
        ("enable: [sshd]", &["enable[0]", "sshd"]),
        ("mask: ['a b.service']", &["mask[0]"]),
        ("distro_packages: {arch: [x]}", &["layer.yml", "arch"]),
        (
            "distro_packages: {debian: ['X Y']}",
            &["distro_packages.debian[0]"],
        ),
    ];
    for (text, needles) in cases {
        let msg = err(text);
        for n in *needles {
            assert!(
                msg.contains(n),
                "{text:?}: error {msg:?} should mention {n:?}"
            );
        }
    }
}

#[test]
fn stack_rules() {
    let root = tempfile::tempdir().unwrap();
    let mk = |name: &str, text: &str| {
        let d = root.path().join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("layer.yml"), text).unwrap();
        d
    };
    mk("10-boot", "packages: [systemd]\n");
    fs::write(root.path().join("README.md"), "ignored").unwrap();
    let e = format!("{:#}", load_stack(root.path(), &[]).unwrap_err());
    assert!(e.contains("10-boot/layer.yml: base"), "{e}");
    mk("00-base", "base: {distro: debian}\n");
    let extra = tempfile::tempdir().unwrap();
    let x = extra.path().join("99-extra");
    fs::create_dir_all(&x).unwrap();
    fs::write(x.join("layer.yml"), "packages: [hello]\n").unwrap();
    let stack = load_stack(root.path(), std::slice::from_ref(&x)).unwrap();
    let names: Vec<_> = stack.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["00-base", "10-boot", "99-extra"]);
    mk("20-late", "base: {distro: debian}\n");
    let e = format!("{:#}", load_stack(root.path(), &[]).unwrap_err());
    assert!(
        e.contains("20-late/layer.yml: base: only the first layer"),
        "{e}"
    );
    fs::remove_dir_all(root.path().join("20-late")).unwrap();
    fs::create_dir_all(root.path().join("30-empty")).unwrap();
    let e = format!("{:#}", load_stack(root.path(), &[]).unwrap_err());
    assert!(e.contains("30-empty/layer.yml: cannot read"), "{e}");
}

#[test]
fn base_resolution() {
    let rec = BaseRecipe {
        distro: Distro::Ubuntu,
        suite: Some("noble".into()),
        mirror: Some("http://archive.ubuntu.com/ubuntu/".into()),
        components: Some(vec!["main".into(), "universe".into()]),
        variant: "minbase".into(),
        security_mirror: None,
    };
    let b = BaseSettings::resolve(&rec, &BaseOverrides::default());
    assert_eq!(
        (b.distro, b.suite.as_str(), b.mirror.as_str()),
        (Distro::Ubuntu, "noble", "http://archive.ubuntu.com/ubuntu")
    );
    // Ubuntu: every pocket from the mirror, in one deb822 stanza.
    assert_eq!(b.security_mirror, b.mirror);
    let suites: Vec<String> = b.pockets().into_iter().map(|p| p.suite).collect();
    assert_eq!(suites, ["noble", "noble-updates", "noble-security"]);
    let src = b.sources_deb822(&b.mirror, &b.security_mirror);
    assert!(
        src.contains(
            "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\n\
                 Suites: noble noble-updates noble-security\nComponents: main universe\n\
                 Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n"
        ),
        "{src}"
    );
    // An image mirror for the image's own sources.
    let src = b.sources_deb822("http://img/ubuntu", "http://img/ubuntu");
    assert!(src.contains("URIs: http://img/ubuntu\n") && !src.contains("archive.ubuntu.com"));
    let release_only = BaseSettings::resolve(
        &rec,
        &BaseOverrides {
            release_only: true,
            ..Default::default()
        },
    );
    assert_eq!(release_only.pockets().len(), 1);
    assert!(release_only
        .sources_deb822(&b.mirror, &b.mirror)
        .contains("Suites: noble\n"));
    let over = BaseOverrides {
        distro: Some(Distro::Debian),
        ..Default::default()
    };
    let b = BaseSettings::resolve(&rec, &over);
    assert_eq!(b.suite, "bookworm");
    assert_eq!(b.mirror, "http://deb.debian.org/debian");
    assert_eq!(b.components, vec!["main"]);
    // Debian: security from its security archive, a stanza of its own.
    assert_eq!(b.security_mirror, "http://deb.debian.org/debian-security");
    let src = b.sources_deb822(&b.mirror, &b.security_mirror);
    assert!(src.contains("URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"));
    assert!(
        src.contains("URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n")
    );
    let over = BaseOverrides {
        distro: Some(Distro::Debian),
        suite: Some("trixie".into()),
        mirror: Some("http://m/debian".into()),
        security_mirror: Some("http://s/debian-security/".into()),
        release_only: false,
        keyrings: Vec::new(),
    };
    let b = BaseSettings::resolve(&rec, &over);
    assert_eq!(
        (b.suite.as_str(), b.mirror.as_str()),
        ("trixie", "http://m/debian")
    );
    assert_eq!(b.security_mirror, "http://s/debian-security");
}
