//! The build's outputs: the image in its format, `SHA256SUMS` and the manifest.
//!
//! The formats ([`Format`]) and the conversion of the raw disk into each
//! ([`write_image`]): qemu-img for the disk formats, with [`stamp`] making
//! their identifiers reproducible; the archives written in process, [`ova`]
//! (OVF descriptor, manifest and VMDK) and [`gcetar`] (GCE's `disk.raw` in
//! a sparse GNU tar, gzipped).

pub mod gcetar;
pub mod ova;
pub mod stamp;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::exit::bad_input;
pub use stamp::set_vmdk_cid;

/// An output format: a disk image format `qemu-img` writes, or one of the
/// archives written here (OVA, GCE tar).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    /// Stream-optimized, as ESXi and vSphere import it.
    Vmdk,
    /// Fixed, its virtual size a whole number of MiB (Azure).
    Vhd,
    /// Dynamic (Hyper-V).
    Vhdx,
    /// Dynamic (VirtualBox).
    Vdi,
    /// OVF descriptor, manifest and stream-optimized VMDK (VirtualBox, VMware).
    Ova,
    /// `disk.raw` in a GNU tar, gzipped (Google Compute Engine).
    Gce,
}

impl Format {
    /// Every format, in the order messages list them.
    pub const ALL: [Format; 8] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Vdi,
        Format::Ova,
        Format::Gce,
    ];

    /// The file name suffixes that ask for the format.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Format::Raw => &["raw", "img"],
            Format::Qcow2 => &["qcow2"],
            Format::Vmdk => &["vmdk"],
            Format::Vhd => &["vhd"],
            Format::Vhdx => &["vhdx"],
            Format::Vdi => &["vdi"],
            Format::Ova => &["ova"],
            Format::Gce => &["tar.gz"],
        }
    }

    /// The suffix of `path`'s name that names a format, and the format.
    fn suffix_of(path: &Path) -> Option<(Format, &'static str)> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        Format::ALL.into_iter().find_map(|f| {
            f.suffixes()
                .iter()
                .find(|s| {
                    name.len() > s.len() + 1
                        && name.ends_with(*s)
                        && name.as_bytes()[name.len() - s.len() - 1] == b'.'
                })
                .map(|s| (f, *s))
        })
    }

    /// The format a file name asks for, by its suffix.
    pub fn from_path(path: &Path) -> Option<Format> {
        Format::suffix_of(path).map(|(f, _)| f)
    }

    /// The image's name: the output's file name without the suffix that
    /// names its format (`ecs.tar.gz` → `ecs`), else without its last
    /// extension. The seed, sums and manifest are named after it.
    pub fn stem(path: &Path) -> String {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match Format::suffix_of(path) {
            Some((_, s)) => name[..name.len() - s.len() - 1].to_string(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into()),
        }
    }

    /// Parses `--format`: a format's name or one of its suffixes.
    pub fn parse(s: &str) -> Result<Format> {
        let l = s.to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == l || f.suffixes().contains(&l.as_str()))
            .ok_or_else(|| {
                bad_input(format!(
                    "unknown image format {s:?}: use one of {}",
                    Format::ALL.map(Format::as_str).join(", ")
                ))
            })
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
                let all: Vec<String> = Format::ALL
                    .iter()
                    .flat_map(|f| f.suffixes())
                    .map(|s| format!(".{s}"))
                    .collect();
                bad_input(format!(
                    "cannot tell the image format from {:?}: name it {}, or pass --format \
                     ({})",
                    output.display().to_string(),
                    all.join(", "),
                    Format::ALL.map(Format::as_str).join(", ")
                ))
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Ova => "ova",
            Format::Gce => "gce",
        }
    }

    /// The name `qemu-img` and QEMU give the format, for those it writes
    /// and reads as a disk (`vpc` for VHD); `None` for the archives.
    pub fn qemu_name(self) -> Option<&'static str> {
        match self {
            Format::Raw => Some("raw"),
            Format::Qcow2 => Some("qcow2"),
            Format::Vmdk => Some("vmdk"),
            Format::Vhd => Some("vpc"),
            Format::Vhdx => Some("vhdx"),
            Format::Vdi => Some("vdi"),
            Format::Ova | Format::Gce => None,
        }
    }

    /// What the disk's virtual size must be a multiple of: a GiB for GCE,
    /// else a MiB (every disk is; Azure requires it of a VHD).
    pub fn size_unit(self) -> u64 {
        match self {
            Format::Gce => gcetar::GIB,
            _ => 1 << 20,
        }
    }

    /// Whether the output's file name reaches its bytes (a VMDK's
    /// descriptor names its file; an OVA names its members after the image).
    pub fn name_in_bytes(self) -> bool {
        matches!(self, Format::Vmdk | Format::Ova)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Converts the raw image `raw` into `out` in a format qemu-img writes (a
/// raw output is a sparse copy). `compress` asks for compressed qcow2
/// clusters. The archives (OVA, GCE) are [`write_image`]'s.
///
/// qemu-img runs with one coroutine (`-m 1`) and in-order writes, so the
/// same input gives the same bytes, but for the identifiers and times of
/// VMDK, VHD, VDI and VHDX, which [`write_image`] sets ([`stamp`]).
pub fn convert(raw: &Path, out: &Path, format: Format, compress: bool) -> Result<()> {
    let Some(name) = format.qemu_name() else {
        bail!("{format} is not a format qemu-img writes");
    };
    let mut cmd = seeds::cmd::command("qemu-img", ["convert", "-q", "-f", "raw", "-O"]);
    cmd.arg(name).args(["-m", "1"]);
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
        Format::Vhd => {
            // Fixed, and the virtual size exactly the disk's (not rounded
            // to a CHS geometry): what Azure takes.
            cmd.args(["-o", "subformat=fixed,force_size=on"]);
        }
        Format::Raw => {
            cmd.args(["-S", "4k"]);
        }
        Format::Vhdx | Format::Vdi | Format::Ova | Format::Gce => {}
    }
    cmd.arg(raw).arg(out);
    seeds::cmd::run(&mut cmd).with_context(|| format!("converting the image to {format}"))?;
    Ok(())
}

/// What makes one build's outputs its own, for the formats that carry
/// identifiers and names.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The image's name (see [`Format::stem`]).
    pub name: String,
    /// The disk's GUID: VMDK CID, VHD and VDI UUIDs derive from it.
    pub disk_guid: [u8; 16],
    /// `SOURCE_DATE_EPOCH`: VHD's time stamp, the archives' mtimes.
    pub epoch: i64,
}

/// The raw disk `raw` → `out` in `format`, reproducibly (see [`stamp`]);
/// `raw` is left in place. `compress`: compressed qcow2
/// clusters.
pub fn write_image(
    raw: &Path,
    out: &Path,
    format: Format,
    compress: bool,
    id: &Identity,
) -> Result<()> {
    let g = id.disk_guid;
    let cid = u32::from_be_bytes([g[0], g[1], g[2], g[3]]);
    match format {
        Format::Raw | Format::Qcow2 => convert(raw, out, format, compress)?,
        Format::Vhdx => {
            convert(raw, out, format, false)?;
            stamp::set_vhdx_identity(out, g)?;
        }
        Format::Vmdk => {
            convert(raw, out, format, false)?;
            set_vmdk_cid(out, cid)?;
        }
        Format::Vhd => {
            convert(raw, out, format, false)?;
            stamp::set_vhd_identity(out, g, id.epoch)?;
        }
        Format::Vdi => {
            convert(raw, out, format, false)?;
            stamp::set_vdi_identity(out, g)?;
        }
        Format::Ova => {
            let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
            let tmp = tempfile::Builder::new()
                .prefix(".ova-")
                .tempdir_in(dir.unwrap_or(Path::new(".")))
                .context("creating a work directory for the OVA's disk")?;
            let [_, _, disk] = ova::member_names(&id.name);
            let vmdk = tmp.path().join(disk);
            convert(raw, &vmdk, Format::Vmdk, false)?;
            set_vmdk_cid(&vmdk, cid)?;
            let sha = sha256_file(&vmdk)?;
            let capacity = fs::metadata(raw)
                .with_context(|| format!("reading {}", raw.display()))?
                .len();
            ova::write_ova(
                out,
                &ova::OvaParts {
                    name: &id.name,
                    vmdk: &vmdk,
                    vmdk_sha256: &sha,
                    capacity,
                    epoch: id.epoch,
                },
            )
            .context("writing the OVA")?;
        }
        Format::Gce => {
            gcetar::write_gce_tar(raw, out, id.epoch).context("writing the GCE image")?;
        }
    }
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
    fn format_by_suffix_or_flag() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(Format::choose(&p("a.qcow2"), None).unwrap(), Format::Qcow2);
        assert_eq!(Format::choose(&p("a.IMG"), None).unwrap(), Format::Raw);
        assert_eq!(Format::choose(&p("a.vmdk"), None).unwrap(), Format::Vmdk);
        assert_eq!(
            Format::choose(&p("a.bin"), Some("raw")).unwrap(),
            Format::Raw
        );
        for (name, f) in [
            ("a.vhd", Format::Vhd),
            ("a.VHDX", Format::Vhdx),
            ("a.vdi", Format::Vdi),
            ("a.ova", Format::Ova),
            ("a.tar.gz", Format::Gce),
        ] {
            assert_eq!(Format::choose(&p(name), None).unwrap(), f, "{name}");
        }
        assert_eq!(
            Format::choose(&p("a.bin"), Some("gce")).unwrap(),
            Format::Gce
        );
        assert_eq!(
            Format::choose(&p("a.bin"), Some("tar.gz")).unwrap(),
            Format::Gce
        );
        assert_eq!(
            Format::choose(&p("a.tar.gz"), Some("gce")).unwrap(),
            Format::Gce
        );
        // A name that is only a suffix, or a plain .gz, names no format.
        for name in ["a.gz", "tar.gz", ".vhd", "a.vpc"] {
            let e = Format::choose(&p(name), None).unwrap_err();
            assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
            assert!(
                e.to_string().contains(".vhd, .vhdx, .vdi, .ova, .tar.gz"),
                "{e}"
            );
        }
        let e = Format::choose(&p("a.raw"), Some("vpc")).unwrap_err();
        assert!(e.to_string().contains("unknown image format"), "{e}");
        assert!(
            e.to_string()
                .contains("raw, qcow2, vmdk, vhd, vhdx, vdi, ova, gce"),
            "{e}"
        );
        let e = Format::choose(&p("a.ova"), Some("vmdk")).unwrap_err();
        assert!(e.to_string().contains("conflicts"), "{e}");
        assert_eq!(
            Format::choose(&p("a.IMG"), Some("raw")).unwrap(),
            Format::Raw
        );
        let e = Format::choose(&p("x.qcow2"), Some("raw")).unwrap_err();
        assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
        assert!(e.to_string().contains("conflicts"), "{e}");
    }

    #[test]
    fn stems_drop_the_format_suffix() {
        let st = |s: &str| Format::stem(Path::new(s));
        assert_eq!(st("/x/ecs.tar.gz"), "ecs");
        assert_eq!(st("ecs.qcow2"), "ecs");
        assert_eq!(st("my.image.VHD"), "my.image");
        assert_eq!(st("ecs.bin"), "ecs");
        assert_eq!(st("x.gz"), "x");
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
