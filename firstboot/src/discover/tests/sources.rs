//! The metadata sources beside EC2 and GCE, each against a loopback server
//! that answers like the real one (paths, required headers, content types,
//! encodings) and fails like it (404, silence past the timeout, the wrong
//! content type, bad base64, a body beyond the limit); the platform comes
//! from a fake `/sys/class/dmi/id`.

use super::*;
use crate::discover::platform::AZURE_ASSET_TAG;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAzure azureuser@vm";

fn b64(data: &[u8]) -> String {
    seeds::base64::encode(data)
}

/// Writes the DMI strings of a platform under the fake root.
fn dmi(root: &Root, vendor: &str, product: &str, tag: &str) {
    let id = root.path().join("sys/class/dmi/id");
    fs::create_dir_all(&id).unwrap();
    fs::write(id.join("sys_vendor"), format!("{vendor}\n")).unwrap();
    fs::write(id.join("product_name"), format!("{product}\n")).unwrap();
    fs::write(id.join("chassis_asset_tag"), format!("{tag}\n")).unwrap();
}

fn azure_dmi(root: &Root) {
    dmi(
        root,
        "Microsoft Corporation",
        "Virtual Machine",
        AZURE_ASSET_TAG,
    );
}

const GOAL_STATE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<GoalState \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><Version>2012-11-30</Version>\
<Incarnation>3</Incarnation><Machine><ExpectedState>Started</ExpectedState></Machine>\
<Container><ContainerId>c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2</ContainerId><RoleInstanceList>\
<RoleInstance><InstanceId>d0fc9d4d-6ba8-4fe0-9c8e-7b9bfcd4e4a8.vm</InstanceId><State>Started</State>\
</RoleInstance></RoleInstanceList></Container></GoalState>\n";

/// Azure's IMDS and wire server on one port, as the real ones answer.
fn azure_server(user_data: &'static str) -> Server {
    Server::with(move |req| {
        let line = req.lines().next().unwrap_or_default();
        if line.starts_with("GET /metadata/") && !req.contains("\r\nMetadata: true\r\n") {
            return Reply::Answer(
                400,
                Some("application/json"),
                b"{\"error\":\"Bad request\"}".to_vec(),
            );
        }
        if line.starts_with(
            "GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text ",
        ) {
            Reply::Answer(
                200,
                Some("text/plain; charset=utf-8"),
                user_data.as_bytes().to_vec(),
            )
        } else if line
            .starts_with("GET /metadata/instance/compute?api-version=2021-01-01&format=json ")
        {
            let doc = serde_json::json!({
                "osProfile": {"adminUsername": "azureuser", "computerName": "ecs-vm-1"},
                "publicKeys": [{"keyData": KEY, "path": "/home/azureuser/.ssh/authorized_keys"}],
            });
            Reply::Answer(
                200,
                Some("application/json; charset=utf-8"),
                doc.to_string().into_bytes(),
            )
        } else if line.starts_with("GET /machine/?comp=goalstate ") {
            if !req.contains("\r\nx-ms-version: 2012-11-30\r\n") {
                return Reply::Answer(400, None, Vec::new());
            }
            Reply::Answer(
                200,
                Some("text/xml; charset=utf-8"),
                GOAL_STATE.as_bytes().to_vec(),
            )
        } else if line.starts_with("POST /machine?comp=health ") {
            if !req.contains("\r\nx-ms-version: 2012-11-30\r\n")
                || !req.contains("Content-Type: text/xml")
            {
                return Reply::Answer(400, None, Vec::new());
            }
            Reply::Answer(200, None, Vec::new())
        } else {
            Reply::Answer(404, Some("text/html"), b"<html>not found</html>".to_vec())
        }
    })
}

fn yml(root: &Root) -> String {
    fs::read_to_string(root.path().join("run/active-env.yml")).unwrap()
}

#[test]
fn azure_imds_user_data_host_name_keys_and_the_ready_report() {
    let root = Root::new();
    azure_dmi(&root);
    let env = env_for("azure.example.org");
    let srv = azure_server(Box::leak(b64(env.as_bytes()).into_boxed_str()));
    let mut s = root.sources();
    s.urls = Urls::all(&srv.base);
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::Azure, "azure.example.org")
    );
    assert!(
        d.origin
            .ends_with("/metadata/instance/compute/userData?api-version=2021-01-01&format=text"),
        "{}",
        d.origin
    );
    // The admin's key is merged beside the env's own.
    assert_eq!(
        d.env.ssh_authorized_keys.len(),
        2,
        "{:?}",
        d.env.ssh_authorized_keys
    );
    assert_eq!(d.env.ssh_authorized_keys[1], KEY);
    assert!(
        yml(&root).ends_with("USERDATA_TYPE: azure\nPLATFORM_HOSTNAME: ecs-vm-1\n"),
        "{}",
        yml(&root)
    );

    let inc = azure_ready(&s).unwrap().unwrap();
    assert_eq!(inc, "3");
    let reqs = srv.requests();
    let health = reqs
        .iter()
        .find(|r| r.starts_with("POST /machine?comp=health "))
        .expect("no health report");
    for want in [
        "<GoalStateIncarnation>3</GoalStateIncarnation>",
        "<ContainerId>c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2</ContainerId>",
        "<InstanceId>d0fc9d4d-6ba8-4fe0-9c8e-7b9bfcd4e4a8.vm</InstanceId>",
        "<State>Ready</State>",
    ] {
        assert!(health.contains(want), "{want} missing in {health}");
    }

    // A local seed: IMDS is not asked, but the machine is still reported ready.
    let before = srv.requests().len();
    let img = cidata(&root, "seed", ENV, Maker::Genisoimage, "cidata");
    root.attach("vda", &img);
    assert_eq!(run(&s).unwrap().kind, Kind::Cidata);
    assert_eq!(
        srv.requests().len(),
        before,
        "IMDS asked though a seed exists"
    );
    assert!(azure_ready(&s).unwrap().is_ok());

    // Not on Azure: no ready report.
    dmi(&root, "QEMU", "Standard PC", "");
    assert!(azure_ready(&s).is_none());
}

fn ovf_env(custom: Option<&str>, key: &str) -> String {
    let custom = custom
        .map(|c| format!("<ns1:CustomData>{c}</ns1:CustomData>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ns0:Environment xmlns:ns0=\"http://schemas.dmtf.org/ovf/environment/1\" \
         xmlns:ns1=\"http://schemas.microsoft.com/windowsazure\"><ns1:ProvisioningSection><ns1:Version>1.0</ns1:Version>\
         <ns1:LinuxProvisioningConfigurationSet><ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>\
         <ns1:HostName>ecs-vm-2</ns1:HostName><ns1:UserName>azureuser</ns1:UserName>\
         <ns1:DisableSshPasswordAuthentication>true</ns1:DisableSshPasswordAuthentication>{custom}\
         <ns1:SSH><ns1:PublicKeys><ns1:PublicKey><ns1:Fingerprint>ABC</ns1:Fingerprint>\
         <ns1:Path>/home/azureuser/.ssh/authorized_keys</ns1:Path><ns1:Value>{key}</ns1:Value>\
         </ns1:PublicKey></ns1:PublicKeys></ns1:SSH></ns1:LinuxProvisioningConfigurationSet>\
         </ns1:ProvisioningSection></ns0:Environment>\n"
    )
}

#[test]
fn azure_ovf_env_on_the_provisioning_iso() {
    let root = Root::new();
    azure_dmi(&root);
    let env = env_for("ovf.example.org");
    let xml = ovf_env(Some(&b64(env.as_bytes())), KEY);
    let img = seed_image(
        &root.work(),
        "ovf",
        "rd_rom",
        &[("ovf-env.xml", &xml)],
        Maker::Genisoimage,
    );
    root.attach("sr0", &img);
    let srv = azure_server("");
    let mut s = root.sources();
    s.urls = Urls::all(&srv.base);
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.origin.as_str()),
        (Kind::Azure, "/dev/sr0:ovf-env.xml")
    );
    assert_eq!(d.env.appliance.domain, "ovf.example.org");
    assert!(d.env.ssh_authorized_keys.contains(&KEY.to_string()));
    assert!(
        yml(&root).ends_with("USERDATA_TYPE: azure\nPLATFORM_HOSTNAME: ecs-vm-2\n"),
        "{}",
        yml(&root)
    );
    assert!(
        srv.requests().is_empty(),
        "IMDS asked though ovf-env.xml had everything: {:?}",
        srv.requests()
    );

    // Without CustomData the env comes from IMDS, the host name and key
    // still from the ISO.
    let xml = ovf_env(None, KEY);
    let img = seed_image(
        &root.work(),
        "ovf2",
        "rd_rom",
        &[("ovf-env.xml", &xml)],
        Maker::Xorriso,
    );
    root.attach("sr0", &img);
    let srv = azure_server(Box::leak(
        b64(env_for("imds.example.org").as_bytes()).into_boxed_str(),
    ));
    s.urls = Urls::all(&srv.base);
    let f = find(&s).unwrap();
    assert_eq!(f.kind, Kind::Azure);
    assert_eq!(f.provisioned.hostname.as_deref(), Some("ecs-vm-2"));
    assert_eq!(f.validate().unwrap().appliance.domain, "imds.example.org");

    // A DVD with UDF alone (no ISO9660), as Azure may attach it.
    let img = seed_image(
        &root.work(),
        "ovf-udf",
        "rd_rom",
        &[("ovf-env.xml", &ovf_env(Some(&b64(env.as_bytes())), KEY))],
        Maker::UdfOnly,
    );
    root.attach("sr0", &img);
    let f = find(&s).unwrap();
    assert_eq!(
        (f.kind, f.origin.as_str()),
        (Kind::Azure, "/dev/sr0:ovf-env.xml")
    );
    assert_eq!(f.provisioned.hostname.as_deref(), Some("ecs-vm-2"));
    assert_eq!(f.validate().unwrap().appliance.domain, "ovf.example.org");

    // A hostile key line in ovf-env.xml is refused, naming the field only.
    let xml = ovf_env(
        Some(&b64(env.as_bytes())),
        "ssh-rsa AAAA&#10;command=\"TOP-SECRET-42\"",
    );
    let img = seed_image(
        &root.work(),
        "ovf3",
        "rd_rom",
        &[("ovf-env.xml", &xml)],
        Maker::Genisoimage,
    );
    root.attach("sr0", &img);
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("SSH PublicKey Value: not an OpenSSH public key line"),
        "{msg}"
    );
    assert!(!msg.contains("TOP-SECRET"), "{msg}");
}

#[test]
fn azure_failures_name_the_problem_not_the_data() {
    let root = Root::new();
    azure_dmi(&root);
    let mut s = root.sources();
    // Bad base64: the position, never the text.
    let srv = azure_server("c2VjcmV0*TOP-SECRET-42");
    s.urls = Urls::all(&srv.base);
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("azure metadata") && msg.contains("userData: not base64"),
        "{msg}"
    );
    assert!(!msg.contains("TOP-SECRET"), "{msg}");
    // No user-data (an empty answer): none, after the platform line.
    let srv = azure_server("");
    s.urls = Urls::all(&srv.base);
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("platform azure (DMI)") && msg.contains("(no user-data)"),
        "{msg}"
    );
    // Without the Metadata header IMDS answers 400: we always send it, so
    // a service that refuses shows the status.
    let refusing = Server::with(|_| Reply::Answer(400, Some("application/json"), b"{}".to_vec()));
    s.urls = Urls::all(&refusing.base);
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(msg.contains("HTTP status 400"), "{msg}");
    // IMDS failing like any service: 404, silence, an HTML page, a body
    // beyond the limit, JSON under another content type.
    s.timeout = Duration::from_millis(600);
    type ImdsFail = (fn(&str) -> Reply, &'static str);
    let fails: [ImdsFail; 5] = [
        (
            |_| Reply::Answer(404, Some("text/plain"), Vec::new()),
            "(no user-data)",
        ),
        (|_| Reply::Silence, "timed out"),
        (
            |_| Reply::Answer(200, Some("text/html"), b"<p>TOP-SECRET-42</p>".to_vec()),
            "text/html",
        ),
        (|_| Reply::Endless(200, usize::MAX), "larger than"),
        (
            |req| {
                if req.contains("/userData?") {
                    Reply::Answer(200, Some("text/plain"), b"eA==".to_vec())
                } else {
                    Reply::Answer(200, Some("text/plain"), b"{\"osProfile\":{}}".to_vec())
                }
            },
            "IMDS compute: answer has Content-Type \"text/plain\", not application/json",
        ),
    ];
    for (reply, want) in fails {
        let srv = Server::with(reply);
        s.urls = Urls::all(&srv.base);
        let t = Instant::now();
        let msg = format!("{:#}", find(&s).unwrap_err());
        assert!(
            msg.contains(want) && !msg.contains("TOP-SECRET"),
            "{want:?}: {msg}"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    s.timeout = METADATA_TIMEOUT;
    // A goal state whose ids are not ids is refused before any POST.
    let evil = Server::with(|req| {
        if req.starts_with("GET /machine/") {
            Reply::Answer(
                200,
                Some("text/xml"),
                GOAL_STATE
                    .replace("<Incarnation>3", "<Incarnation>3&lt;/x&gt;")
                    .into_bytes(),
            )
        } else {
            Reply::Answer(200, None, Vec::new())
        }
    });
    s.urls = Urls::all(&evil.base);
    let msg = format!("{:#}", azure_ready(&s).unwrap().unwrap_err());
    assert!(msg.contains("Incarnation is not an id"), "{msg}");
    assert!(!evil.requests().iter().any(|r| r.starts_with("POST")));
}

#[test]
fn wire_server_from_dhcp_option_245() {
    let root = Root::new();
    assert_eq!(azure::wire_server(root.path()), "http://168.63.129.16");
    let leases = root.path().join("run/systemd/netif/leases");
    fs::create_dir_all(&leases).unwrap();
    fs::write(
        leases.join("2"),
        "# This is private data. Do not parse.\nADDRESS=10.0.0.4\nOPTION_245=A83F8111\n",
    )
    .unwrap();
    assert_eq!(azure::wire_server(root.path()), "http://168.63.129.17");
    fs::write(leases.join("2"), "OPTION_245=zz\n").unwrap();
    assert_eq!(azure::wire_server(root.path()), "http://168.63.129.16");
}

/// A platform's DMI and the one request its source makes.
struct Case {
    kind: Kind,
    dmi: (&'static str, &'static str, &'static str),
    /// The request line's start.
    path: &'static str,
    /// A header the real service insists on.
    header: Option<&'static str>,
    /// How the env is wrapped: plain, or base64 in Oracle's JSON.
    oracle_json: bool,
}

const CASES: &[Case] = &[
    Case {
        kind: Kind::OpenStack,
        dmi: ("OpenStack Foundation", "OpenStack Nova", ""),
        path: "GET /openstack/latest/user_data ",
        header: None,
        oracle_json: false,
    },
    Case {
        kind: Kind::Hetzner,
        dmi: ("Hetzner", "vServer", ""),
        path: "GET /hetzner/v1/userdata ",
        header: None,
        oracle_json: false,
    },
    Case {
        kind: Kind::DigitalOcean,
        dmi: ("DigitalOcean", "Droplet", ""),
        path: "GET /metadata/v1/user-data ",
        header: None,
        oracle_json: false,
    },
    Case {
        kind: Kind::Oracle,
        dmi: (
            "QEMU",
            "Standard PC (i440FX + PIIX, 1996)",
            "OracleCloud.com",
        ),
        path: "GET /opc/v2/instance/ ",
        header: Some("Authorization: Bearer Oracle"),
        oracle_json: true,
    },
    Case {
        kind: Kind::Ec2,
        dmi: ("Amazon EC2", "t3.micro", "Amazon EC2"),
        path: "GET /latest/user-data ",
        header: None,
        oracle_json: false,
    },
    Case {
        kind: Kind::Gce,
        dmi: ("Google", "Google Compute Engine", ""),
        path: "GET /computeMetadata/v1/instance/attributes/user-data ",
        header: Some("Metadata-Flavor: Google"),
        oracle_json: false,
    },
];

/// The case's service: `ok` answers as the real one does when the
/// request is right, `fail` otherwise.
fn serve(c: &'static Case, ok: fn(&Case) -> Reply) -> Server {
    Server::with(move |req| {
        if c.header
            .is_some_and(|h| !req.contains(&format!("\r\n{h}\r\n")))
        {
            return Reply::Answer(401, None, Vec::new());
        }
        if req.starts_with(c.path) {
            ok(c)
        } else {
            Reply::Answer(404, Some("text/plain"), Vec::new())
        }
    })
}

fn good(c: &Case) -> Reply {
    let env = env_for(&format!("{}.example.org", c.kind));
    if c.oracle_json {
        let doc = serde_json::json!({"id": "ocid1.instance", "metadata": {"user_data": b64(env.as_bytes())}});
        Reply::Answer(200, Some("application/json"), doc.to_string().into_bytes())
    } else {
        Reply::Answer(200, Some("application/octet-stream"), env.into_bytes())
    }
}

#[test]
fn each_platform_asks_its_own_source_at_one_metadata_url() {
    for c in CASES {
        let root = Root::new();
        dmi(&root, c.dmi.0, c.dmi.1, c.dmi.2);
        let srv = serve(c, good);
        let mut s = root.sources();
        s.urls = Urls::all(&srv.base);
        let d = run(&s).unwrap_or_else(|e| panic!("{}: {e:#}", c.kind));
        assert_eq!(d.kind, c.kind);
        assert_eq!(d.env.appliance.domain, format!("{}.example.org", c.kind));
        assert!(
            yml(&root).ends_with(&format!("USERDATA_TYPE: {}\n", c.kind.userdata_type())),
            "{}",
            yml(&root)
        );
        // Only the platform's own source was asked (EC2: the token first).
        for r in srv.requests() {
            let line = r.lines().next().unwrap();
            assert!(
                line.starts_with(c.path) || line.starts_with("PUT /latest/api/token "),
                "{}: asked {line}",
                c.kind
            );
        }
    }
}

#[test]
fn unknown_platform_asks_ec2_then_openstack_then_gce() {
    let root = Root::new();
    let srv = Server::with(|req| {
        if req.starts_with("GET /openstack/latest/user_data ") {
            Reply::Answer(
                200,
                Some("application/octet-stream"),
                env_for("os.example.org").into_bytes(),
            )
        } else {
            Reply::Answer(404, Some("text/plain"), Vec::new())
        }
    });
    let mut s = root.sources();
    s.urls = Urls::all(&srv.base);
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::OpenStack, "os.example.org")
    );
    let lines: Vec<String> = srv
        .requests()
        .iter()
        .map(|r| r.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("PUT /latest/api/token ")
            && lines[1].starts_with("GET /latest/user-data "),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("GET /openstack/latest/user_data "),
        "{lines:?}"
    );
}

#[test]
fn each_source_fails_like_its_service() {
    let small = Duration::from_millis(600);
    type Fail = (&'static str, fn(&Case) -> Reply, &'static str);
    let fails: &[Fail] = &[
        (
            "404",
            |_| Reply::Answer(404, Some("text/plain"), b"Not Found".to_vec()),
            "(no user-data)",
        ),
        ("silent", |_| Reply::Silence, "timed out"),
        ("stalled body", |_| Reply::Stall, "timed out"),
        (
            "html",
            |_| {
                Reply::Answer(
                    200,
                    Some("text/html"),
                    b"<html>TOP-SECRET-42</html>".to_vec(),
                )
            },
            "text/html",
        ),
        (
            "oversized",
            |_| Reply::Endless(200, 64 << 20),
            "larger than",
        ),
        ("endless", |_| Reply::Endless(200, 1 << 40), "larger than"),
        (
            "endless without length",
            |_| Reply::Endless(200, usize::MAX),
            "larger than",
        ),
        (
            "server error",
            |_| Reply::Answer(500, Some("text/plain"), b"TOP-SECRET-42".to_vec()),
            "HTTP status 500",
        ),
    ];
    for c in CASES {
        for (what, reply, want) in fails {
            let root = Root::new();
            dmi(&root, c.dmi.0, c.dmi.1, c.dmi.2);
            let srv = serve(c, *reply);
            let mut s = root.sources();
            s.urls = Urls::all(&srv.base);
            s.timeout = small;
            let t = Instant::now();
            let msg = format!("{:#}", find(&s).unwrap_err());
            let took = t.elapsed();
            let want = if c.oracle_json && *what == "html" {
                "not application/json"
            } else {
                want
            };
            assert!(
                msg.contains(want),
                "{} {what}: {want:?} missing in {msg}",
                c.kind
            );
            assert!(!msg.contains("TOP-SECRET"), "{} {what}: {msg}", c.kind);
            assert!(
                took < Duration::from_secs(5),
                "{} {what}: took {took:?}",
                c.kind
            );
        }
    }
    // Oracle: user_data that is not base64, or JSON that is not JSON.
    let c = &CASES[3];
    for (reply, want) in [
        (
            (|_| {
                Reply::Answer(
                    200,
                    Some("application/json"),
                    br#"{"metadata":{"user_data":"TOP*SECRET"}}"#.to_vec(),
                )
            }) as fn(&Case) -> Reply,
            "metadata.user_data: not base64",
        ),
        (
            |_| Reply::Answer(200, Some("application/json"), b"{TOP-SECRET-42".to_vec()),
            "not valid JSON",
        ),
        (
            |_| {
                Reply::Answer(
                    200,
                    Some("application/json"),
                    br#"{"metadata":{}}"#.to_vec(),
                )
            },
            "(no user-data)",
        ),
    ] {
        let root = Root::new();
        dmi(&root, c.dmi.0, c.dmi.1, c.dmi.2);
        let srv = serve(c, reply);
        let mut s = root.sources();
        s.urls = Urls::all(&srv.base);
        let msg = format!("{:#}", find(&s).unwrap_err());
        assert!(
            msg.contains(want) && !msg.contains("TOP"),
            "{want:?}: {msg}"
        );
    }
}

#[test]
fn no_source_at_all_stays_under_10s() {
    // The worst case: every source a different host that accepts the
    // connection and never answers, with the real timeouts.
    let root = Root::new();
    let silent: Vec<Server> = (0..8).map(|_| Server::with(|_| Reply::Silence)).collect();
    let mut s = root.sources();
    s.urls = Urls {
        ec2: Some(silent[0].base.clone()),
        gce: Some(silent[1].base.clone()),
        openstack: Some(silent[2].base.clone()),
        azure: Some(silent[3].base.clone()),
        hetzner: Some(silent[4].base.clone()),
        digitalocean: Some(silent[5].base.clone()),
        oracle: Some(silent[6].base.clone()),
        wire: Some(silent[7].base.clone()),
    };
    assert_eq!((s.timeout, s.total), (METADATA_TIMEOUT, METADATA_TOTAL));
    let t = Instant::now();
    let msg = format!("{:#}", find(&s).unwrap_err());
    let took = t.elapsed();
    eprintln!("no source, three silent hosts: {:.2} s", took.as_secs_f64());
    assert!(
        took >= Duration::from_millis(7900) && took < Duration::from_secs(10),
        "took {took:?}: {msg}"
    );
    assert!(
        msg.contains("gce metadata") && msg.contains("timed out"),
        "{msg}"
    );

    // The usual case: one link-local host that does not answer: EC2 waits
    // its 3 s, OpenStack on the same host is not asked.
    s.urls.openstack = s.urls.ec2.clone();
    let t = Instant::now();
    let msg = format!("{:#}", find(&s).unwrap_err());
    let took = t.elapsed();
    eprintln!(
        "no source, link-local host and GCE silent: {:.2} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert!(
        msg.contains("openstack metadata (not asked:") && msg.contains("did not answer"),
        "{msg}"
    );

    // And on a machine without a route (connections refused): at once.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    s.urls = Urls::all(&base);
    let t = Instant::now();
    assert!(find(&s).is_err());
    let took = t.elapsed();
    eprintln!(
        "no source, connections refused: {:.3} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A stand-in for `vmware-rpctool` (the hypervisor's side of the backdoor
/// cannot exist off VMware): a script answering `info-get KEY` from files
/// in `dir` the way the tool does (the value and exit 0, or "No value
/// found" and exit 1).
fn rpctool(dir: &Path) -> PathBuf {
    let tool = dir.join("vmware-rpctool");
    fs::write(
        &tool,
        format!(
            "#!/bin/sh\nkey=${{1#info-get }}\nf={}/\"$key\"\n\
             [ -f \"$f.sleep\" ] && sleep 30\n\
             if [ -f \"$f\" ]; then cat \"$f\"; echo; exit 0; fi\n\
             echo 'No value found' >&2; exit 1\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    tool
}

#[test]
fn vmware_guestinfo_through_rpctool() {
    let root = Root::new();
    dmi(&root, "VMware, Inc.", "VMware7,1", "No Asset Tag");
    let info = root.work().join("guestinfo");
    fs::create_dir_all(&info).unwrap();
    let mut s = root.sources();
    s.rpctool = Some(rpctool(&info));
    // Nothing set: no user-data.
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("platform vmware (DMI)")
            && msg.contains("vmware metadata guestinfo.userdata (no user-data)"),
        "{msg}"
    );
    // Plain.
    fs::write(info.join("guestinfo.userdata"), env_for("vm.example.org")).unwrap();
    let d = run(&s).unwrap();
    assert_eq!(
        (d.kind, d.env.appliance.domain.as_str()),
        (Kind::Vmware, "vm.example.org")
    );
    assert!(yml(&root).ends_with("USERDATA_TYPE: vmware\n"));
    // base64.
    fs::write(
        info.join("guestinfo.userdata"),
        b64(env_for("b64.example.org").as_bytes()),
    )
    .unwrap();
    fs::write(info.join("guestinfo.userdata.encoding"), "base64").unwrap();
    assert_eq!(run(&s).unwrap().env.appliance.domain, "b64.example.org");
    // Bad base64, and gzip (not supported), are said without the data.
    fs::write(info.join("guestinfo.userdata"), "TOP-SECRET-42*").unwrap();
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("guestinfo.userdata: not base64") && !msg.contains("TOP-SECRET"),
        "{msg}"
    );
    // gzip+base64, as cloud-init's VMware source takes it; a stream that
    // is no gzip, or inflates past the env's limit, is refused.
    fs::write(info.join("guestinfo.userdata.encoding"), "gzip+base64").unwrap();
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(msg.contains("not base64"), "{msg}");
    let gz = |data: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        b64(&e.finish().unwrap())
    };
    fs::write(
        info.join("guestinfo.userdata"),
        gz(env_for("gz.example.org").as_bytes()),
    )
    .unwrap();
    assert_eq!(run(&s).unwrap().env.appliance.domain, "gz.example.org");
    fs::write(
        info.join("guestinfo.userdata"),
        b64(b"TOP-SECRET-42 not gzip"),
    )
    .unwrap();
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(
        msg.contains("not gzip data") && !msg.contains("TOP-SECRET"),
        "{msg}"
    );
    let bomb = vec![b'#'; seeds::yaml::MAX_BYTES + 1];
    fs::write(info.join("guestinfo.userdata"), gz(&bomb)).unwrap();
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(msg.contains("decompressed larger than"), "{msg}");
    // A tool that hangs is killed at the timeout.
    fs::write(info.join("guestinfo.userdata.sleep"), "").unwrap();
    s.timeout = Duration::from_millis(500);
    let t = Instant::now();
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(msg.contains("no answer within 0.5 s; killed"), "{msg}");
    // Elsewhere the tool is never run.
    dmi(&root, "QEMU", "Standard PC", "");
    let msg = format!("{:#}", find(&s).unwrap_err());
    assert!(!msg.contains("vmware"), "{msg}");
}
