//! The build's outputs: the image in its format, `SHA256SUMS` and the manifest.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::exit::bad_input;

/// An image format `qemu-img` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
}

impl Format {
    /// The format a file name asks for, by its suffix.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "raw" | "img" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vmdk" => Some(Format::Vmdk),
            _ => None,
        }
    }

    /// Parses `--format`.
    pub fn parse(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            _ => Err(bad_input(format!(
                "unknown image format {s:?}: use raw, qcow2 or vmdk"
            ))),
        }
    }

    /// The format for `output`: `--format` if given, else the suffix; a
    /// `--format` that contradicts the suffix (`--format raw -o x.qcow2`)
    /// is refused.
    pub fn choose(output: &Path, flag: Option<&str>) -> Result<Format> {
        match flag {
            Some(f) => {
                let format = Format::parse(f)?;
                match Format::from_path(output) {
                    Some(by_name) if by_name != format => Err(bad_input(format!(
                        "--format {f} conflicts with the output's name {:?}, which says \
                         {by_name}: drop --format or rename the output",
                        output.display().to_string()
                    ))),
                    _ => Ok(format),
                }
            }
            None => Format::from_path(output).ok_or_else(|| {
                bad_input(format!(
                    "cannot tell the image format from {:?}: name it .raw, .img, .qcow2 or \
                     .vmdk, or pass --format",
                    output.display().to_string()
                ))
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Converts the raw image `raw` into `out` in `format` (a raw output is a
/// sparse copy). `compress` asks for compressed qcow2 clusters.
///
/// qemu-img runs with one coroutine (`-m 1`) and in-order writes, so the
/// same input gives the same bytes.
pub fn convert(raw: &Path, out: &Path, format: Format, compress: bool) -> Result<()> {
    let mut cmd = seeds::cmd::command("qemu-img", ["convert", "-q", "-f", "raw", "-O"]);
    cmd.arg(format.as_str()).args(["-m", "1"]);
    match format {
        Format::Qcow2 => {
            cmd.args(["-o", "compat=1.1,lazy_refcounts=off"]);
            if compress {
                cmd.arg("-c");
            }
        }
        Format::Vmdk => {
            // streamOptimized is what clouds and VMware import.
            cmd.args(["-o", "subformat=streamOptimized"]);
        }
        Format::Raw => {
            cmd.args(["-S", "4k"]);
        }
    }
    cmd.arg(raw).arg(out);
    seeds::cmd::run(&mut cmd).with_context(|| format!("converting the image to {format}"))?;
    Ok(())
}

/// Replaces the random content ID qemu-img writes into a VMDK's descriptor
/// (`CID=xxxxxxxx`) with `cid`, so the same input gives the same bytes.
pub fn set_vmdk_cid(path: &Path, cid: u32) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // The sparse extent's header names the descriptor's place: offset and
    // size in sectors, at bytes 28 and 36 (little-endian u64).
    let mut header = [0u8; 512];
    f.read_exact_at(&mut header, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    if &header[..4] != b"KDMV" {
        bail!("{} is not a sparse VMDK extent", path.display());
    }
    let sectors = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let (offset, size) = (sectors(28) * 512, sectors(36) * 512);
    if offset == 0 || size == 0 || size > 1 << 20 {
        bail!("the VMDK's header has no embedded descriptor");
    }
    let mut region = vec![0u8; size as usize];
    f.read_exact_at(&mut region, offset)?;
    let end = region.iter().position(|&b| b == 0).unwrap_or(region.len());
    let text = String::from_utf8_lossy(&region[..end]).into_owned();
    // qemu-img writes the CID without leading zeros (`CID=%x`).
    let mut found = false;
    let new: String = text
        .split_inclusive('\n')
        .map(|l| match l.strip_prefix("CID=") {
            Some(v) if !found && v.trim_end().chars().all(|c| c.is_ascii_hexdigit()) => {
                found = true;
                format!("CID={cid:08x}\n")
            }
            _ => l.to_string(),
        })
        .collect();
    if !found {
        bail!("the VMDK has no CID line in its descriptor");
    }
    if new.len() > region.len() {
        bail!("the VMDK's descriptor has no room for its CID");
    }
    let mut out = new.into_bytes();
    out.resize(region.len(), 0);
    f.write_all_at(&out, offset)?;
    f.sync_all()?;
    Ok(())
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `SHA256SUMS` in the format `sha256sum -c` reads: one `HASH  NAME` line
/// per file, names relative to the file's directory.
pub fn sha256sums(entries: &[(String, String)]) -> String {
    entries
        .iter()
        .map(|(hash, name)| format!("{hash}  {name}\n"))
        .collect()
}

/// Bytes actually allocated on disk for a file (sparse files count less).
pub fn allocated_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .blocks()
        * 512)
}

/// Formats bytes for messages: `812 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let m = bytes as f64 / MIB;
    if m >= 1024.0 {
        format!("{:.1} GiB", m / 1024.0)
    } else {
        format!("{} MiB", m.ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn vmdk_cid_is_set_whatever_its_width() {
        use std::fs;
        // A sparse extent header naming a one-sector descriptor at sector 1,
        // whose CID qemu-img wrote without leading zeros.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.vmdk");
        let mut img = vec![0u8; 1024];
        img[..4].copy_from_slice(b"KDMV");
        img[28..36].copy_from_slice(&1u64.to_le_bytes());
        img[36..44].copy_from_slice(&1u64.to_le_bytes());
        let desc = b"# Disk DescriptorFile\nversion=1\nCID=abc\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n";
        img[512..512 + desc.len()].copy_from_slice(desc);
        fs::write(&p, &img).unwrap();
        set_vmdk_cid(&p, 0x0123_4567).unwrap();
        let after = fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&after[512..]);
        assert!(
            text.starts_with("# Disk DescriptorFile\nversion=1\nCID=01234567\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\0"),
            "{text:?}"
        );
        assert_eq!(after.len(), 1024);
        set_vmdk_cid(&p, 0xdead_beef).unwrap();
        assert!(String::from_utf8_lossy(&fs::read(&p).unwrap())
            .contains("\nCID=deadbeef\nparentCID=ffffffff\n"));
        fs::write(&p, b"not a vmdk").unwrap();
        assert!(set_vmdk_cid(&p, 1).is_err());
    }

    #[test]
    fn format_by_suffix_or_flag() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(Format::choose(&p("a.qcow2"), None).unwrap(), Format::Qcow2);
        assert_eq!(Format::choose(&p("a.IMG"), None).unwrap(), Format::Raw);
        assert_eq!(Format::choose(&p("a.vmdk"), None).unwrap(), Format::Vmdk);
        assert_eq!(
            Format::choose(&p("a.bin"), Some("raw")).unwrap(),
            Format::Raw
        );
        let e = Format::choose(&p("a.vdi"), None).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        let e = Format::choose(&p("a.raw"), Some("vhdx")).unwrap_err();
        assert!(e.to_string().contains("unknown image format"), "{e}");
        assert_eq!(
            Format::choose(&p("a.IMG"), Some("raw")).unwrap(),
            Format::Raw
        );
        let e = Format::choose(&p("x.qcow2"), Some("raw")).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("conflicts"), "{e}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(812 << 20), "812 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn sums_are_in_sha256sum_format() {
        let s = sha256sums(&[("ab".into(), "x.qcow2".into())]);
        assert_eq!(s, "ab  x.qcow2\n");
    }
}
