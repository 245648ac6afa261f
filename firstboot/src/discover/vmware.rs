//! VMware guestinfo: `guestinfo.userdata` and `guestinfo.userdata.encoding`
//! (as cloud-init's VMware source reads them), asked through
//! `vmware-rpctool 'info-get KEY'`, which open-vm-tools installs
//! (layer `60-guest-agents`). The tool talks to the hypervisor over the
//! VMware backdoor (an I/O port that only VMware answers) by itself: no
//! daemon (`vmtoolsd`) needs to run. It is run only when DMI says VMware
//! (elsewhere the backdoor does not exist), within the source's timeout,
//! its output bounded and never quoted in a message (through
//! [`seeds::cmd::run_quiet`]).
//!
//! Encodings: none (the value as is), `base64`/`b64`, `gzip+base64`/
//! `gz+b64` (gunzipped with `flate2`, at most [`seeds::yaml::MAX_BYTES`]
//! out: a small bomb cannot fill the memory).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::text;

/// Where open-vm-tools puts the tool.
pub const RPCTOOL: &str = "/usr/bin/vmware-rpctool";

/// One guestinfo key: `None` when the hypervisor has no value for it
/// (the tool exits 1 then).
fn info_get(tool: &Path, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("timed out");
    }
    let mut cmd = seeds::cmd::command(
        tool.to_str().context("the rpctool path is not UTF-8")?,
        [format!("info-get {key}")],
    );
    // base64 of the largest env, plus a line end.
    let limit = seeds::yaml::MAX_BYTES / 3 * 4 + 16;
    let (status, out) = seeds::cmd::run_quiet(&mut cmd, limit, left.max(Duration::from_millis(1)))?;
    match status.code() {
        Some(0) => {
            let v = out.strip_suffix(b"\n").unwrap_or(&out).to_vec();
            Ok(Some(v).filter(|v| !v.is_empty()))
        }
        Some(1) => Ok(None),
        _ => bail!("{} 'info-get {key}': {status}", tool.display()),
    }
}

/// Decompresses gzip data into at most `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .context("not gzip data")?;
    if out.len() > limit {
        bail!("decompressed larger than {} MiB", limit >> 20);
    }
    Ok(out)
}

/// The user-data from guestinfo, decoded.
pub fn fetch(tool: &Path, deadline: Instant) -> (String, Result<Option<Vec<u8>>>) {
    let origin = "guestinfo.userdata".to_string();
    let got = (|| {
        let Some(raw) = info_get(tool, "guestinfo.userdata", deadline)? else {
            return Ok(None);
        };
        let enc = info_get(tool, "guestinfo.userdata.encoding", deadline)?
            .map(|e| String::from_utf8_lossy(&e).trim().to_ascii_lowercase())
            .unwrap_or_default();
        let data = match enc.as_str() {
            "" => raw,
            "base64" | "b64" => {
                text::base64(&raw, seeds::yaml::MAX_BYTES).context("guestinfo.userdata")?
            }
            "gzip+base64" | "gz+b64" => gunzip(
                &text::base64(&raw, seeds::yaml::MAX_BYTES).context("guestinfo.userdata")?,
                seeds::yaml::MAX_BYTES,
            )
            .context("guestinfo.userdata (gzip+base64)")?,
            _ => bail!(
                "guestinfo.userdata.encoding is not one of base64, b64, gzip+base64, gz+b64 (nor empty)"
            ),
        };
        if data.len() > seeds::yaml::MAX_BYTES {
            bail!(
                "guestinfo.userdata is larger than {} MiB",
                seeds::yaml::MAX_BYTES >> 20
            );
        }
        Ok(Some(data).filter(|d| !d.iter().all(u8::is_ascii_whitespace)))
    })();
    (origin, got)
}
