//! Rebuilds while a pocket moves: the recipe layers come from the cache, the
//! `updates` step alone runs again and says which pocket moved, and the tree
//! has the same packages (names and versions) as a cold build at the same
//! archive state.
//!
//! The moving pocket is a local one, made by `scripts/local-pocket.sh` and
//! signed by its own test key, standing in for `noble-security`
//! (`--security-mirror file://DIR --keyring DIR/pocket.gpg`); release and
//! updates come from the real archive. Runs as root; fails, never skips,
//! without the network or a tool.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{apt_cache, base_layer, imgbuild, stderr, write};

fn local_pocket(dir: &Path, versions: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-pocket.sh");
    let o = Command::new("bash")
        .arg(script)
        .arg(dir)
        .arg("noble-security")
        .args(versions)
        .output()
        .expect("running scripts/local-pocket.sh");
    assert!(
        o.status.success(),
        "local-pocket.sh failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `name version arch` of every installed package of a tree.
fn packages(tree: &Path) -> String {
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${Architecture}\\n"])
        .output()
        .expect("running dpkg-query");
    assert!(o.status.success(), "dpkg-query failed");
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join("\n")
}

fn ok(o: &Output) -> String {
    let err = stderr(o);
    assert!(o.status.success(), "imgbuild failed ({}):\n{err}", o.status);
    err
}

#[test]
fn slow_moved_pocket_reruns_only_the_updates_step_with_a_cold_builds_packages() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "building trees needs root");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pocket = tmp.path().join("pocket");
    local_pocket(&pocket, &["1"]);
    let layers = tmp.path().join("layers");
    base_layer(&layers);
    write(
        &layers.join("10-pocket/layer.yml"),
        "packages: [imgbuild-pocket-test]\n",
        0o644,
    );
    let (ls, apt) = (
        layers.to_str().unwrap().to_string(),
        apt_cache().to_str().unwrap().to_string(),
    );
    let security = format!("file://{}", pocket.display());
    let keyring = pocket.join("pocket.gpg").to_str().unwrap().to_string();
    let tree = |cache: &Path, out: Option<&Path>| {
        let mut a = vec![
            "tree".to_string(),
            "--layers-dir".into(),
            ls.clone(),
            "--cache-dir".into(),
            cache.to_str().unwrap().into(),
            "--apt-cache".into(),
            apt.clone(),
            "--security-mirror".into(),
            security.clone(),
            "--keyring".into(),
            keyring.clone(),
        ];
        if let Some(o) = out {
            a.extend(["-o".into(), o.to_str().unwrap().into()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        imgbuild(&a)
    };

    // 1: every layer built against the pocket's first state.
    let cache = tmp.path().join("cache");
    let err = ok(&tree(&cache, None));
    assert!(err.contains("updates: miss"), "{err}");

    // 2: the pocket moves (version 2): the recipe layers are hits, the
    // updates step alone runs, names the pocket and its Date, and upgrades.
    local_pocket(&pocket, &["1", "2"]);
    let incremental = tmp.path().join("incremental");
    let o = tree(&cache, Some(&incremental));
    let err = ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("10-pocket\t") && l.ends_with("\thit")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("updates\t") && l.ends_with("\tbuilt")),
        "{out}"
    );
    assert!(!err.contains("10-pocket: miss"), "{err}");
    assert!(
        err.contains("updates: miss") && err.contains("noble-security moved (Date: "),
        "{err}"
    );
    assert!(err.contains("1 upgraded, 0 newly installed"), "{err}");

    // 3: a cold build at the same state has the same packages.
    let cold = tmp.path().join("cold");
    ok(&tree(&tmp.path().join("cold-cache"), Some(&cold)));
    let (a, b) = (packages(&incremental), packages(&cold));
    assert!(
        a.contains("imgbuild-pocket-test 2 all"),
        "the moved package was not upgraded:\n{a}"
    );
    assert_eq!(a, b, "incremental and cold package sets differ");
    // The image's sources name the local pocket, verified by its own key.
    let sources =
        std::fs::read_to_string(incremental.join("etc/apt/sources.list.d/ubuntu.sources")).unwrap();
    assert!(
        sources.contains(&format!("URIs: {security}\nSuites: noble-security\n"))
            && sources.contains("Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg, /etc/apt/keyrings/pocket.gpg"),
        "{sources}"
    );
    assert!(incremental.join("etc/apt/keyrings/pocket.gpg").is_file());
    // No directory of the local mirror is left in the tree.
    assert!(
        !incremental.join(pocket.strip_prefix("/").unwrap()).exists(),
        "the local mirror's mount point stayed in the tree"
    );
}
