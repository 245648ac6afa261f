//! What is on a device.
//!
//! - Signatures (filesystems, partition tables, LVM, LUKS, RAID, swap...):
//!   `wipefs --no-act --json`, i.e. libblkid in its "every signature" mode.
//!   The rule "never format anything that carries a signature" needs the
//!   complete list libblkid knows; `blkid -p` would report a device holding
//!   two signatures as "ambivalent" and print nothing, and wipefs has a JSON
//!   mode. One process probes all devices.
//! - The ext4 superblock fields the planner needs (size, label) are read in
//!   process: 1 KiB at a known offset, no tool, no parsing of text.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use seeds::cmd;

use crate::plan::Signature;

#[derive(serde::Deserialize)]
struct WipefsOut {
    #[serde(default)]
    signatures: Vec<WipefsSig>,
}

#[derive(serde::Deserialize)]
struct WipefsSig {
    device: String,
    #[serde(rename = "type")]
    kind: String,
    label: Option<String>,
}

/// The signatures on each device. A device that cannot be probed gets one
/// pseudo-signature saying so, so it is never taken for blank.
pub fn signatures(devices: &[PathBuf]) -> BTreeMap<PathBuf, Vec<Signature>> {
    let mut out: BTreeMap<PathBuf, Vec<Signature>> =
        devices.iter().map(|d| (d.clone(), Vec::new())).collect();
    if devices.is_empty() {
        return out;
    }
    match wipefs(devices) {
        Ok(sigs) => merge(&mut out, devices, sigs),
        Err(_) => {
            // One unreadable device fails the whole call: probe one by one.
            for d in devices {
                match wipefs(std::slice::from_ref(d)) {
                    Ok(sigs) => merge(&mut out, devices, sigs),
                    Err(e) => out.entry(d.clone()).or_default().push(Signature {
                        kind: format!("unknown content (probing failed: {})", first_line(&e)),
                        label: None,
                    }),
                }
            }
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or("").trim()
}

fn wipefs(devices: &[PathBuf]) -> Result<Vec<WipefsSig>, String> {
    let mut c = cmd::command("wipefs", ["--no-act", "--json"]);
    c.args(devices);
    let out = cmd::run(&mut c).map_err(|e| e.to_string())?;
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let parsed: WipefsOut = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("reading wipefs --json output: {e}"))?;
    Ok(parsed.signatures)
}

/// wipefs names devices by their base name.
fn merge(out: &mut BTreeMap<PathBuf, Vec<Signature>>, devices: &[PathBuf], sigs: Vec<WipefsSig>) {
    for s in sigs {
        let Some(dev) = devices.iter().find(|d| {
            d.file_name().is_some_and(|n| n == s.device.as_str()) || **d == Path::new(&s.device)
        }) else {
            continue;
        };
        let list = out.entry(dev.clone()).or_default();
        let sig = Signature {
            kind: s.kind,
            label: s.label.filter(|l| !l.is_empty()),
        };
        if !list.contains(&sig) {
            list.push(sig);
        }
    }
}

/// What libblkid finds in `size` bytes at `offset` of `disk` (free space a
/// new partition will cover): `None` when nothing, else a description.
pub fn region_signature(disk: &Path, offset: u64, size: u64) -> Result<Option<String>, String> {
    let mut c = cmd::command(
        "blkid",
        [
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            "-S",
            &size.to_string(),
        ],
    );
    c.arg(disk);
    match cmd::run(&mut c) {
        Ok(out) => {
            let text = out.text();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_string)
            };
            let kind = get("TYPE")
                .or_else(|| get("PTTYPE"))
                .unwrap_or_else(|| "something".into());
            Ok(Some(match get("LABEL") {
                Some(l) => format!("{kind} (label {l:?})"),
                None => kind,
            }))
        }
        // blkid exits 2 when it finds nothing.
        Err(cmd::CmdError::Failed { status, .. }) if status.code() == Some(2) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Kinds that are partition tables rather than content.
pub fn is_partition_table(kind: &str) -> bool {
    matches!(
        kind,
        "gpt" | "PMBR" | "dos" | "atari" | "bsd" | "mac" | "sgi" | "sun"
    )
}

/// The ext4 superblock fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Super {
    pub bytes: u64,
    pub label: String,
}

const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// Reads the ext2/3/4 superblock of the filesystem starting `offset` bytes
/// into `path`; `None` when there is none.
pub fn read_ext4(path: &Path, offset: u64) -> io::Result<Option<Ext4Super>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset + 1024))?;
    let mut sb = [0u8; 1024];
    if let Err(e) = f.read_exact(&mut sb) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(parse_ext4(&sb))
}

fn parse_ext4(sb: &[u8; 1024]) -> Option<Ext4Super> {
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    if u16::from_le_bytes([sb[56], sb[57]]) != EXT4_MAGIC {
        return None;
    }
    let log = u32_at(24);
    if log > 6 {
        return None;
    }
    let block = 1024u64 << log;
    let mut blocks = u64::from(u32_at(4));
    if u32_at(96) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Some(Ext4Super {
        bytes: blocks * block,
        label: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need;

    #[test]
    fn ext4_superblock_in_process() {
        need("mkfs.ext4");
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("fs.img");
        File::create(&img).unwrap().set_len(48 << 20).unwrap();
        cmd::run(&mut cmd::command(
            "mkfs.ext4",
            [
                "-q",
                "-L",
                "ecs-volatile.new",
                "-b",
                "4096",
                img.to_str().unwrap(),
                "40M",
            ],
        ))
        .unwrap();
        let sb = read_ext4(&img, 0).unwrap().unwrap();
        assert_eq!(sb.bytes, 40 << 20);
        assert_eq!(sb.label, "ecs-volatile.new");
        let blank = d.path().join("blank.img");
        File::create(&blank).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(read_ext4(&blank, 0).unwrap(), None);
        let short = d.path().join("short.img");
        File::create(&short).unwrap().set_len(100).unwrap();
        assert_eq!(read_ext4(&short, 0).unwrap(), None);
    }

    #[test]
    fn free_space_probe() {
        need("blkid");
        need("mkfs.ext4");
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        File::create(&img).unwrap().set_len(64 << 20).unwrap();
        cmd::run(&mut cmd::command(
            "mkfs.ext4",
            [
                "-q",
                "-L",
                "old",
                "-E",
                "offset=33554432",
                img.to_str().unwrap(),
                "16M",
            ],
        ))
        .unwrap();
        assert_eq!(
            region_signature(&img, 32 << 20, 16 << 20)
                .unwrap()
                .as_deref(),
            Some("ext4 (label \"old\")")
        );
        assert_eq!(region_signature(&img, 8 << 20, 16 << 20).unwrap(), None);
    }

    #[test]
    fn every_signature_is_seen() {
        need("wipefs");
        need("sgdisk");
        need("mkswap");
        let d = tempfile::tempdir().unwrap();
        let blank = d.path().join("blank");
        let gpt = d.path().join("gpt");
        let swap = d.path().join("swap");
        for p in [&blank, &gpt, &swap] {
            File::create(p).unwrap().set_len(16 << 20).unwrap();
        }
        cmd::run(&mut cmd::command("sgdisk", ["-o", gpt.to_str().unwrap()])).unwrap();
        cmd::run(&mut cmd::command(
            "mkswap",
            ["-L", "sw", swap.to_str().unwrap()],
        ))
        .unwrap();
        let got = signatures(&[
            blank.clone(),
            gpt.clone(),
            swap.clone(),
            d.path().join("missing"),
        ]);
        assert_eq!(got[&blank], vec![]);
        let kinds: Vec<&str> = got[&gpt].iter().map(|s| s.kind.as_str()).collect();
        assert!(
            kinds.contains(&"gpt") && kinds.contains(&"PMBR"),
            "{kinds:?}"
        );
        assert_eq!(got[&swap][0].kind, "swap");
        assert_eq!(got[&swap][0].label.as_deref(), Some("sw"));
        let missing = &got[&d.path().join("missing")];
        assert!(
            missing[0].kind.starts_with("unknown content"),
            "{missing:?}"
        );
    }
}
