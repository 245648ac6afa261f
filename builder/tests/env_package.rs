//! `imgbuild env package` and `env unpack` through the real binary, judged
//! by outside tools: the PDF rendered by `pdftoppm` and its QR codes read by
//! `zbarimg` reassemble to env.yml byte for byte (also shuffled, and from the
//! PDF itself); the archive decrypts with the stock `gpg` (passphrase, and a
//! recipient key) into the env's directory; the seed equals `imgbuild seed`'s.
//!
//! Needs gpg, tar, pdftoppm (poppler-utils) and zbarimg (zbar-tools):
//! `scripts/install-host-deps.sh` installs them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("running imgbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A private GnuPG home whose agent is stopped on drop.
struct Home(tempfile::TempDir);
impl Home {
    fn new() -> Home {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        Home(d)
    }
    fn gpg(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.0.path())
            .arg("--batch")
            .args(args);
        c
    }
}
impl Drop for Home {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.0.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A fresh env in `root/ecs.example.org/env.yml`.
fn new_env(root: &Path) -> PathBuf {
    let dir = root.join("ecs.example.org");
    ok(&imgbuild(&[
        "env",
        "new",
        "ecs.example.org",
        "-o",
        dir.to_str().unwrap(),
    ]));
    dir.join("env.yml")
}

/// The outputs of `env package` in `dir`: (pdf, archive, seed).
fn outputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut archive = None;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("ecs.example.org.env.") && name.ends_with(".tar.gz.gpg") {
            let date = &name["ecs.example.org.env.".len()..name.len() - ".tar.gz.gpg".len()];
            assert_eq!(date.len(), 10, "DATE is YYYY-MM-DD: {name}");
            archive = Some(p);
        }
    }
    let out = (
        dir.join("ecs.example.org.env.pdf"),
        archive.expect("the archive is written"),
        dir.join("ecs.example.org.seed.iso"),
    );
    for p in [&out.0, &out.1, &out.2] {
        let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    out
}

/// What `zbarimg --raw` reads from the PDF's pages rendered by `pdftoppm`.
fn scan(pdf: &Path, work: &Path) -> Vec<String> {
    let o = Command::new("pdftoppm")
        .args(["-r", "150", "-png"])
        .arg(pdf)
        .arg(work.join("page"))
        .output()
        .expect("pdftoppm (poppler-utils) is installed");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut pages: Vec<PathBuf> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pages.sort();
    let mut lines = Vec::new();
    for page in pages {
        let o = Command::new("zbarimg")
            .args(["--raw", "-q"])
            .arg(&page)
            .output()
            .expect("zbarimg (zbar-tools) is installed");
        // 4: no code on the page (the text pages).
        assert!(
            matches!(o.status.code(), Some(0 | 4)),
            "{}",
            text(&o.stderr)
        );
        lines.extend(text(&o.stdout).lines().map(str::to_string));
    }
    lines
}

fn untar_env(tar_gz: &[u8], work: &Path) -> Vec<u8> {
    let o = run_with_input(Command::new("tar").arg("-xz").arg("-C").arg(work), tar_gz);
    assert!(o.status.success(), "{}", text(&o.stderr));
    fs::read(work.join("ecs.example.org/env.yml")).unwrap()
}

#[test]
fn package_restores_from_qr_codes_and_the_archive() {
    let d = tempfile::tempdir().unwrap();
    let env = new_env(d.path());
    let env_bytes = fs::read(&env).unwrap();
    let pass = d.path().join("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let o = imgbuild(&[
        "env",
        "package",
        env.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(!text(&o.stdout).contains("correct horse"));
    assert!(!text(&o.stderr).contains("correct horse"));
    let (pdf, archive, seed) = outputs(env.parent().unwrap());

    // The QR codes, as a scanner reads them: labelled n/N, all there.
    let work = tempfile::tempdir().unwrap();
    let lines = scan(&pdf, work.path());
    let n = lines.len();
    assert!(n >= 2, "an env new env takes several codes: {n}");
    for i in 1..=n {
        assert!(
            lines.iter().any(|l| l.contains(&format!(" {i}/{n} "))),
            "code {i}/{n}"
        );
    }
    // Reassembled in any order, byte for byte.
    let mut shuffled = lines.clone();
    shuffled.reverse();
    shuffled.swap(0, n / 2);
    let codes = d.path().join("codes.txt");
    fs::write(&codes, shuffled.join("\n") + "\n").unwrap();
    let restored = d.path().join("restored.yml");
    ok(&imgbuild(&[
        "env",
        "unpack",
        codes.to_str().unwrap(),
        "-o",
        restored.to_str().unwrap(),
    ]));
    assert_eq!(fs::read(&restored).unwrap(), env_bytes);
    let mode = fs::metadata(&restored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Never over an existing file.
    let o = imgbuild(&[
        "env",
        "unpack",
        codes.to_str().unwrap(),
        "-o",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // A missing code is named.
    fs::write(&codes, shuffled[1..].join("\n")).unwrap();
    let o = imgbuild(&[
        "env",
        "unpack",
        codes.to_str().unwrap(),
        "-o",
        d.path().join("partial.yml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("missing code"),
        "{}",
        text(&o.stderr)
    );
    assert!(!d.path().join("partial.yml").exists());

    // From the PDF itself.
    let from_pdf = d.path().join("from-pdf.yml");
    ok(&imgbuild(&[
        "env",
        "unpack",
        pdf.to_str().unwrap(),
        "-o",
        from_pdf.to_str().unwrap(),
    ]));
    assert_eq!(fs::read(&from_pdf).unwrap(), env_bytes);

    // The archive: the stock gpg with the passphrase on a pipe.
    let home = Home::new();
    let o = run_with_input(
        home.gpg(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--decrypt",
        ])
        .arg(&archive),
        b"correct horse battery staple\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = tempfile::tempdir().unwrap();
    assert_eq!(untar_env(&o.stdout, out.path()), env_bytes);
    assert!(
        fs::read_dir(out.path().join("ecs.example.org"))
            .unwrap()
            .all(|e| e.unwrap().file_name() == "env.yml"),
        "earlier packages are not in the archive"
    );

    // The seed is the one `imgbuild seed` makes.
    let iso = d.path().join("seed.iso");
    ok(&imgbuild(&[
        "seed",
        "--env",
        env.to_str().unwrap(),
        "-o",
        iso.to_str().unwrap(),
    ]));
    assert_eq!(fs::read(&seed).unwrap(), fs::read(&iso).unwrap());

    // Outputs are not replaced without --force.
    let o = imgbuild(&[
        "env",
        "package",
        env.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));
}

#[test]
fn archive_to_a_recipient_key() {
    let d = tempfile::tempdir().unwrap();
    let env = new_env(d.path());
    let home = Home::new();
    let o = home
        .gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "operator <op@example.org>",
            "default",
            "default",
            "never",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = home
        .gpg(&["--armor", "--export", "op@example.org"])
        .output()
        .unwrap();
    let public = d.path().join("op.asc");
    fs::write(&public, &o.stdout).unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    ok(&imgbuild(&[
        "env",
        "package",
        env.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--recipient-key",
        public.to_str().unwrap(),
    ]));
    let (_, archive, _) = outputs(&out);
    let o = home.gpg(&["--decrypt"]).arg(&archive).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let x = tempfile::tempdir().unwrap();
    assert_eq!(untar_env(&o.stdout, x.path()), fs::read(&env).unwrap());

    // No key, or a file that is not a key: bad input, nothing written.
    let o = imgbuild(&[
        "env",
        "package",
        env.to_str().unwrap(),
        "-o",
        x.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = imgbuild(&[
        "env",
        "package",
        env.to_str().unwrap(),
        "-o",
        x.path().to_str().unwrap(),
        "--recipient-key",
        env.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!x.path().join("ecs.example.org.env.pdf").exists());
}
