//! The restart plan against the effects table; `env-update` on a temp root
//! with `/app/env.yml` and recorded systemd calls: what changed, refusals
//! and invalid envs that change nothing, apply and restarts.

use std::cell::RefCell;
use std::fs;

use seeds::env::effects::{Effect, EFFECTS};

use super::*;

#[test]
fn every_unit_a_key_drives_is_restarted_when_it_changes() {
    for (key, effect) in EFFECTS {
        let Effect::Applied(unit) = effect else {
            continue;
        };
        if !unit.ends_with(".service") || refused(&[key]).len() == 1 {
            continue;
        }
        // Restarted, or an entry of its own says what to do instead.
        let listed = RESTARTS.iter().find(|(p, _)| matches(key, p));
        assert!(
            restarts(&[key]).contains(unit) || listed.is_some(),
            "{key} drives {unit}, which env-update neither restarts nor has an entry for"
        );
    }
    for (_, units) in RESTARTS {
        for u in *units {
            assert!(ORDER.contains(u), "{u} is not in ORDER");
        }
    }
    assert_eq!(ORDER.last(), Some(&APPLIANCE));
}

#[test]
fn restarts_are_in_order_and_once() {
    assert_eq!(
        restarts(&[
            "ecs.settings",
            "appliance.ssl.cert",
            "appliance.update.oncalendar"
        ]),
        [
            "appliance-timers.service",
            "appliance-tls.service",
            "nginx.service",
            "appliance.service"
        ]
    );
    assert_eq!(
        restarts(&["appliance.ssl.letsencrypt.enabled", "appliance.ssl.key"]),
        [
            "appliance-tls.service",
            "nginx.service",
            "appliance-acme.service"
        ]
    );
    assert!(restarts(&[
        "ssh_authorized_keys",
        "appliance.extra.files",
        "appliance.sentry.dsn"
    ])
    .is_empty());
    // A prefix matches whole components only.
    assert!(restarts(&["ecsx.settings"]).is_empty());
    assert_eq!(
        refused(&[
            "appliance.domain",
            "appliance.storage.data",
            "appliance.standby"
        ]),
        ["appliance.storage.data", "appliance.standby"]
    );
}

#[test]
fn loaded_units_from_systemctl_show() {
    assert_eq!(
        loaded(
            &["a.service", "b.service", "c.service"],
            "loaded\n\nnot-found\n\nloaded\n"
        ),
        ["a.service", "c.service"]
    );
    assert_eq!(
        loaded(&["a.service", "b.service"], "loaded\n"),
        ["a.service"]
    );
}

/// Records the systemd calls; every unit but opendkim exists.
#[derive(Default)]
struct Fake {
    restarted: RefCell<Vec<String>>,
    fail: Option<&'static str>,
}

impl Units for Fake {
    fn present(&self, units: &[&'static str]) -> Result<Vec<&'static str>> {
        Ok(units
            .iter()
            .copied()
            .filter(|u| *u != "opendkim.service")
            .collect())
    }
    fn restart(&self, unit: &str, reload: bool) -> Result<()> {
        if self.fail == Some(unit) {
            bail!("Job for {unit} failed");
        }
        let what = if reload {
            format!("reload {unit}")
        } else {
            unit.to_string()
        };
        self.restarted.borrow_mut().push(what);
        Ok(())
    }
}

const ENV: &str = "#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAONE one@example\"]\n\
appliance:\n  domain: one.example.org\n  storage: {ignore: {data: true, volatile: true}}\n\
ecs:\n  settings: \"S3CR3T-SETTINGS\"\n  vault_encrypt: e\n  vault_sign: s\n";

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for dir in [
        "run",
        "app/etc/flags",
        "etc",
        "root/.ssh",
        "sys/class/block",
        "dev",
    ] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    // SAFETY: geteuid/getegid cannot fail.
    let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
    fs::write(
        r.join("etc/passwd"),
        format!("root:x:{u}:{g}:root:/root:/bin/bash\napp:x:{u}:{g}:ECS:/app:/bin/bash\n"),
    )
    .unwrap();
    fs::write(r.join("etc/group"), format!("root:x:{g}:\napp:x:{g}:\n")).unwrap();
    d
}

fn req(r: &Path, apply: bool) -> Request {
    Request {
        sources: Sources::under(r),
        apply,
        defer_appliance: false,
    }
}

fn write_env(r: &Path, text: &str) {
    fs::write(r.join("app/env.yml"), text).unwrap();
}

#[test]
fn publishes_what_changed_and_refuses_what_it_cannot_take() {
    let d = root();
    let r = d.path();
    write_env(r, ENV);
    let fake = Fake::default();
    let first = run(&req(r, false), &fake).unwrap();
    assert!(first.changed.contains(&"appliance.domain"), "{first:?}");
    assert_eq!(
        first.written,
        ["/run/active-env.yml", "/run/active-env.env"]
    );
    assert!(run(&req(r, false), &fake).unwrap().changed.is_empty());

    let active = || fs::read(r.join("run/active-env.yml")).unwrap();
    let before = active();
    // Invalid: nothing changes, and the message quotes no value.
    write_env(
        r,
        &ENV.replace("vault_sign: s", "vault_sign: {S3CR3T-SIGN: 1}"),
    );
    let e = format!("{:#}", run(&req(r, true), &fake).unwrap_err());
    assert!(e.contains("the env is invalid; nothing changed"), "{e}");
    assert!(!e.contains("S3CR3T"), "{e}");
    assert_eq!(active(), before);
    // Storage: refused, nothing changes.
    write_env(r, &ENV.replace("data: true, ", ""));
    let e = format!("{:#}", run(&req(r, true), &fake).unwrap_err());
    assert!(e.contains("appliance.storage.ignore.data changed"), "{e}");
    assert_eq!(active(), before);
    assert!(fake.restarted.borrow().is_empty());

    // Domain, key and settings: applied, restarted in order, the
    // application last; a unit the system lacks is left out.
    write_env(
        r,
        &ENV.replace("one.example.org", "two.example.org")
            .replace("S3CR3T-SETTINGS", "S3CR3T-OTHER")
            .replace("AAAAONE one@example", "AAAATWO two@example"),
    );
    let rep = run(&req(r, true), &fake).unwrap();
    assert_eq!(
        rep.changed,
        ["ssh_authorized_keys", "appliance.domain", "ecs.settings"]
    );
    assert_eq!(
        fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "two.example.org\n"
    );
    assert!(fs::read_to_string(r.join("root/.ssh/authorized_keys"))
        .unwrap()
        .contains("AAAATWO"));
    assert!(rep.applied.iter().all(|a| !a.contains("S3CR3T")), "{rep:?}");
    assert_eq!(
        *fake.restarted.borrow(),
        [
            "appliance-tls.service",
            "reload nginx.service",
            "appliance-acme.service",
            "appliance-mail.service",
            "reload postfix@-.service",
            "appliance.service"
        ]
    );
    // appliance-update restarts the application itself, after the
    // packages: everything else is restarted.
    write_env(
        r,
        &ENV.replace("S3CR3T-SETTINGS", "S3CR3T-OTHER")
            .replace("one.example.org", "three.example.org"),
    );
    let fake = Fake::default();
    let mut deferred = req(r, true);
    deferred.defer_appliance = true;
    let rep = run(&deferred, &fake).unwrap();
    assert_eq!(
        rep.changed,
        ["ssh_authorized_keys", "appliance.domain"],
        "{rep:?}"
    );
    assert!(!fake.restarted.borrow().contains(&APPLIANCE.to_string()));
    assert!(fake
        .restarted
        .borrow()
        .contains(&"reload nginx.service".to_string()));
    // The manual's order: env-update, then appliance-update (--apply):
    // the second run changes no key of the active env, but restarts what
    // changed since the env last applied.
    write_env(r, &ENV.replace("S3CR3T-SETTINGS", "S3CR3T-FOURTH"));
    assert!(run(&req(r, false), &Fake::default())
        .unwrap()
        .changed
        .contains(&"ecs.settings"));
    let fake = Fake::default();
    let rep = run(&req(r, true), &fake).unwrap();
    assert!(rep.changed.is_empty(), "{rep:?}");
    assert!(rep.applying.contains(&"ecs.settings"), "{rep:?}");
    assert!(fake.restarted.borrow().contains(&APPLIANCE.to_string()));
    // And once applied, nothing is left to restart.
    let fake = Fake::default();
    assert!(run(&req(r, true), &fake).unwrap().applying.is_empty());
    assert!(fake.restarted.borrow().is_empty());
    // A restart that fails is the error, naming the unit.
    write_env(r, &ENV.replace("S3CR3T-SETTINGS", "S3CR3T-THIRD"));
    let fake = Fake {
        fail: Some("appliance.service"),
        ..Fake::default()
    };
    let e = format!("{:#}", run(&req(r, true), &fake).unwrap_err());
    assert!(e.contains("restarting appliance.service"), "{e}");
}
