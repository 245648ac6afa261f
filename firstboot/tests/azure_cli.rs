//! `ecs-firstboot --root DIR --metadata-url URL` on a prepared root that
//! says Azure in its DMI strings, with no local env: the agent reads the
//! env from a loopback IMDS (base64 user-data, `Metadata: true`), merges
//! the admin's key into root's and app's `authorized_keys`, records the
//! platform's host name, reports ready to the (same) wire server, hands
//! off, and prints no secret.
//!
//! Run as root: the agent writes files owned by the fake `app` user.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

const ENV: &str = "#cloud-config\n\
ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENV env@example\"]\n\
appliance:\n  domain: ecs.example.org\n\
ecs:\n  settings: \"SECRET_KEY = 'TOP-SECRET-42'\"\n  vault_encrypt: enc\n  vault_sign: sign\n";

const ADMIN: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIADMIN azureuser@vm";

fn b64(data: &[u8]) -> String {
    seeds::base64::encode(data)
}

/// IMDS and the wire server on one loopback port; records request lines.
fn server(user_data: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).into_owned();
            let line = text.lines().next().unwrap_or_default().to_string();
            // The body (the health report) follows the head.
            let head_end = text.find("\r\n\r\n").map_or(req.len(), |i| i + 4);
            let declared = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while req.len() < head_end + declared {
                match conn.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            rec.lock().unwrap().push(line.clone());
            let meta = text.contains("\r\nMetadata: true\r\n");
            let (status, ctype, body) = if line
                .starts_with("GET /metadata/instance/compute/userData?")
                && meta
                && user_data
            {
                (200, "text/plain", b64(ENV.as_bytes()))
            } else if line.starts_with("GET /metadata/instance/compute?") && meta {
                (
                    200,
                    "application/json",
                    format!(
                        "{{\"osProfile\":{{\"computerName\":\"ecs-vm-7\"}},\"publicKeys\":[{{\"keyData\":\"{ADMIN}\"}}]}}"
                    ),
                )
            } else if line.starts_with("GET /machine/?comp=goalstate ") {
                (
                    200,
                    "text/xml",
                    "<GoalState><Incarnation>2</Incarnation><Container><ContainerId>c-1</ContainerId>\
                     <RoleInstanceList><RoleInstance><InstanceId>i-1</InstanceId></RoleInstance>\
                     </RoleInstanceList></Container></GoalState>"
                        .to_string(),
                )
            } else if line.starts_with("POST /machine?comp=health ") {
                (200, "text/plain", String::new())
            } else {
                (404, "text/plain", String::new())
            };
            let _ = write!(
                conn,
                "HTTP/1.0 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn azure_env_keys_host_name_and_ready_through_metadata_url() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in [
        "etc",
        "run",
        "root/.ssh",
        "app/etc/flags",
        "data",
        "volatile",
        "sys/class/dmi/id",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("root/.ssh"), fs::Permissions::from_mode(0o700)).unwrap();
    for d in ["app", "app/etc", "app/etc/flags"] {
        std::os::unix::fs::lchown(root.join(d), Some(999), Some(998)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\napp:x:999:998:ECS:/app:/bin/bash\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:998:\n").unwrap();
    let id = root.join("sys/class/dmi/id");
    fs::write(id.join("sys_vendor"), "Microsoft Corporation\n").unwrap();
    fs::write(id.join("product_name"), "Virtual Machine\n").unwrap();
    fs::write(
        id.join("chassis_asset_tag"),
        "7783-7084-3265-9085-8269-3286-77\n",
    )
    .unwrap();

    let (base, seen) = server(true);
    let out = agent(root, &base);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.starts_with("ecs-firstboot: ok ") && stdout.contains("env=azure"),
        "{stdout}"
    );
    assert!(
        stderr.contains("azure: reported ready to the wire server (incarnation 2)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("azure: 1 ssh key(s) added; platform host name ecs-vm-7"),
        "{stderr}"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("TOP-SECRET") && !text.contains("AAAAIADMIN"),
            "{text}"
        );
    }
    let yml = fs::read_to_string(root.join("run/active-env.yml")).unwrap();
    assert!(
        yml.ends_with("USERDATA_TYPE: azure\nPLATFORM_HOSTNAME: ecs-vm-7\n"),
        "{yml}"
    );
    for keys in ["root/.ssh/authorized_keys", "app/.ssh/authorized_keys"] {
        let k = fs::read_to_string(root.join(keys)).unwrap();
        assert!(
            k.contains(ADMIN) && k.contains("AAAAIENV env@example"),
            "{keys}: {k}"
        );
    }
    // The host name is the env's domain.
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "ecs.example.org\n"
    );
    let lines = seen.lock().unwrap().clone();
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    assert!(
        pos("GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text ")
            .is_some(),
        "{lines:?}"
    );
    let (g, h) = (
        pos("GET /machine/?comp=goalstate "),
        pos("POST /machine?comp=health "),
    );
    assert!(g.is_some() && h.is_some() && g < h, "{lines:?}");

    // No user-data anywhere: the boot fails, and Azure still hears that
    // the machine is up (else it marks the VM failed and nobody can log in
    // to see why).
    fs::remove_file(root.join("run/ecs-firstboot.ready")).unwrap();
    let (base, seen) = server(false);
    let out = agent(root, &base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no env found") && stderr.contains("azure metadata"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reported ready to the wire server"),
        "{stderr}"
    );
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("POST /machine?comp=health ")),
        "{lines:?}"
    );
    assert!(fs::read_to_string(root.join("run/appliance-failed"))
        .unwrap()
        .contains("no env found"));
}

fn agent(root: &std::path::Path, base: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecs-firstboot"))
        .arg("--root")
        .arg(root)
        .arg("--metadata-url")
        .arg(base)
        .env_remove("ENV_YML")
        .output()
        .unwrap()
}
