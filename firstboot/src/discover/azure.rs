//! Azure: the env, the host name and the admin's SSH keys, and the
//! "ready" report without which Azure marks the VM as failed.
//!
//! - The provisioning ISO's `ovf-env.xml` ([`ovf_env`]): `CustomData`
//!   (base64, the env), `HostName` and the keys' `Value`s of the
//!   `LinuxProvisioningConfigurationSet`. Azure attaches it as a DVD,
//!   UDF or ISO9660, read without mounting by the seed reader of
//!   [`seeds::seed`] (its UDF part is [`seeds::udf`]). Without the DVD
//!   the IMDS below is the source, which has the user-data, host name and
//!   keys but not `CustomData`.
//! - IMDS ([`imds`], header `Metadata: true`; it refuses requests
//!   without): `/metadata/instance/compute/userData?api-version=2021-01-01&format=text`
//!   (base64; empty when none) and
//!   `/metadata/instance/compute?api-version=2021-01-01&format=json` for
//!   `osProfile.computerName` and `publicKeys[].keyData`.
//! - The wire server ([`report_ready`]; `168.63.129.16`, or DHCP option 245
//!   from systemd-networkd's lease, [`wire_server`]): `GET
//!   /machine/?comp=goalstate` (`x-ms-version: 2012-11-30`) gives the
//!   incarnation, container id and role instance id; `POST
//!   /machine?comp=health` with a `Health` document whose state is `Ready`.
//!
//! Every value taken from these is checked before use: host names and
//! keys by [`text`], the goal state's ids as short runs of letters, digits,
//! `-`, `_` and `.` (they are put into the XML we send).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::http::{self, Request};
use super::{text, Provisioned};

/// The wire server's fixed address (Azure's documented default).
pub const WIRE_SERVER: &str = "168.63.129.16";

/// The protocol version both wire server calls name.
const WIRE_VERSION: &str = "2012-11-30";

/// What `ovf-env.xml` or IMDS gave.
#[derive(Debug, Default)]
pub struct Provisioning {
    /// The env (decoded), if any.
    pub user_data: Option<Vec<u8>>,
    pub provisioned: Provisioned,
}

/// Reads `ovf-env.xml`: `CustomData` (base64), `HostName`, the public keys.
pub fn ovf_env(xml: &[u8]) -> Result<Provisioning> {
    let xml = std::str::from_utf8(xml).context("ovf-env.xml is not UTF-8")?;
    if !xml.contains("LinuxProvisioningConfigurationSet") {
        bail!("ovf-env.xml has no LinuxProvisioningConfigurationSet");
    }
    let user_data = match text::xml_element(xml, "CustomData")? {
        Some(b64) => {
            Some(text::base64(b64.as_bytes(), seeds::yaml::MAX_BYTES).context("CustomData")?)
                .filter(|d| !d.is_empty())
        }
        None => None,
    };
    let hostname = text::xml_element(xml, "HostName")?
        .map(|h| text::host_name(&h).context("HostName"))
        .transpose()?;
    let mut ssh_keys = Vec::new();
    // A PublicKey with only a Fingerprint names a certificate of the wire
    // server's; only keys given as a Value are taken.
    for v in text::xml_elements(xml, "Value")? {
        ssh_keys.push(text::ssh_key(&v).context("SSH PublicKey Value")?);
    }
    Ok(Provisioning {
        user_data,
        provisioned: Provisioned { hostname, ssh_keys },
    })
}

/// IMDS: the user-data, then the host name and keys. Returns the URL named
/// as the origin.
pub fn imds(base: &str, deadline: Instant) -> (String, Result<Provisioning>) {
    let base = base.trim_end_matches('/');
    let url =
        format!("{base}/metadata/instance/compute/userData?api-version=2021-01-01&format=text");
    let got = (|| {
        let r = http::get(&url, &[("Metadata", "true")], deadline)?;
        let user_data = match r.user_data()? {
            Some(b64) => Some(text::base64(&b64, seeds::yaml::MAX_BYTES).context("userData")?)
                .filter(|d| !d.is_empty()),
            None => None,
        };
        let compute =
            format!("{base}/metadata/instance/compute?api-version=2021-01-01&format=json");
        let provisioned = match http::get(&compute, &[("Metadata", "true")], deadline)
            .and_then(http::Response::json)
            .context("IMDS compute")?
        {
            Some(doc) => profile(&doc)?,
            None => Provisioned::default(),
        };
        Ok(Provisioning {
            user_data,
            provisioned,
        })
    })();
    (url, got)
}

/// `osProfile.computerName` and `publicKeys[].keyData` of IMDS' compute
/// document.
fn profile(doc: &serde_json::Value) -> Result<Provisioned> {
    let hostname = match doc.pointer("/osProfile/computerName") {
        Some(serde_json::Value::String(h)) if !h.is_empty() => {
            Some(text::host_name(h).context("osProfile.computerName")?)
        }
        _ => None,
    };
    let mut ssh_keys = Vec::new();
    if let Some(serde_json::Value::Array(keys)) = doc.get("publicKeys") {
        for k in keys.iter().take(64) {
            if let Some(serde_json::Value::String(d)) = k.get("keyData") {
                ssh_keys.push(text::ssh_key(d).context("publicKeys[].keyData")?);
            }
        }
    }
    Ok(Provisioned { hostname, ssh_keys })
}

/// The wire server's base URL: DHCP option 245 from a systemd-networkd
/// lease under `root` (`OPTION_245=A83F8110`), else [`WIRE_SERVER`].
pub fn wire_server(root: &Path) -> String {
    let dir = root.join("run/systemd/netif/leases");
    let mut found = None;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if !m.file_type().is_file() || m.len() > 65536 {
                continue;
            }
            let Ok(t) = std::fs::read_to_string(&p) else {
                continue;
            };
            if let Some(ip) = t
                .lines()
                .find_map(|l| l.strip_prefix("OPTION_245="))
                .and_then(option_245)
            {
                found = Some(ip);
                break;
            }
        }
    }
    format!(
        "http://{}",
        found.unwrap_or_else(|| WIRE_SERVER.to_string())
    )
}

/// Option 245's value as networkd writes it (8 hex digits) as an address.
fn option_245(hex: &str) -> Option<String> {
    let hex = hex.trim();
    if hex.len() != 8 {
        return None;
    }
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(std::net::Ipv4Addr::from(n).to_string())
}

/// What the goal state names.
#[derive(Debug, PartialEq, Eq)]
pub struct GoalState {
    pub incarnation: String,
    pub container_id: String,
    pub instance_id: String,
}

/// Reads the goal state's ids.
pub fn goal_state(xml: &[u8]) -> Result<GoalState> {
    let xml = std::str::from_utf8(xml).context("the goal state is not UTF-8")?;
    let id = |name: &str| -> Result<String> {
        let v = text::xml_element(xml, name)?
            .with_context(|| format!("the goal state has no {name}"))?;
        if v.len() > 128
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!("the goal state's {name} is not an id");
        }
        Ok(v)
    };
    Ok(GoalState {
        incarnation: id("Incarnation")?,
        container_id: id("ContainerId")?,
        instance_id: id("InstanceId")?,
    })
}

/// The `Health` document that reports the role instance ready.
pub fn health_ready(g: &GoalState) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n\
         \x20 <GoalStateIncarnation>{}</GoalStateIncarnation>\n\
         \x20 <Container>\n\
         \x20   <ContainerId>{}</ContainerId>\n\
         \x20   <RoleInstanceList>\n\
         \x20     <Role>\n\
         \x20       <InstanceId>{}</InstanceId>\n\
         \x20       <Health>\n\
         \x20         <State>Ready</State>\n\
         \x20       </Health>\n\
         \x20     </Role>\n\
         \x20   </RoleInstanceList>\n\
         \x20 </Container>\n\
         </Health>\n",
        g.incarnation, g.container_id, g.instance_id
    )
}

/// Tells the wire server at `base` that this machine is ready; returns
/// the incarnation reported.
pub fn report_ready(base: &str, deadline: Instant) -> Result<String> {
    let base = base.trim_end_matches('/');
    let headers = [
        ("x-ms-version", WIRE_VERSION),
        ("x-ms-agent-name", "ecs-firstboot"),
    ];
    let url = format!("{base}/machine/?comp=goalstate");
    let r = http::get(&url, &headers, deadline).with_context(|| format!("GET {url}"))?;
    if r.status != 200 {
        bail!("GET {url}: HTTP status {}", r.status);
    }
    let g = goal_state(&r.body).with_context(|| format!("GET {url}"))?;
    let doc = health_ready(&g);
    let url = format!("{base}/machine?comp=health");
    let r = http::send(
        &Request {
            method: "POST",
            url: &url,
            headers: &headers,
            body: Some(("text/xml; charset=utf-8", doc.as_bytes())),
        },
        deadline,
    )
    .with_context(|| format!("POST {url}"))?;
    if !(200..300).contains(&r.status) {
        bail!("POST {url}: HTTP status {}", r.status);
    }
    Ok(g.incarnation)
}
