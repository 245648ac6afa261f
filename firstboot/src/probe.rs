//! What is on a device.
//!
//! - Signatures (filesystems, partition tables, LVM, LUKS, RAID, swap...),
//!   in two tiers:
//!   1. [`quick`]: in process, a handful of reads per device, for the kinds
//!      an appliance meets (ext2/3/4, xfs, btrfs, vfat, iso9660, udf, swap, LUKS,
//!      LVM2, MD RAID, ntfs, f2fs, bcache, GPT, protective and DOS MBRs), with
//!      libblkid's names and labels. Written here rather than linked from
//!      libblkid because under emulation (the only accelerator in CI) a
//!      full probe costs about a second per boot, and on a boot with
//!      nothing to do no device needs one.
//!   2. `wipefs --no-act --json`, i.e. libblkid in its "every signature"
//!      mode, for every device on which the quick probe found nothing or
//!      only an interrupted volume of ours (`ecs-*.new`): exactly the
//!      devices the planner might format, so the rule "never format
//!      anything that carries a signature" rests on the complete list
//!      libblkid knows. (`blkid -p` would report a device holding two
//!      signatures as "ambivalent" and print nothing; wipefs has a JSON
//!      mode.) One process probes all such devices.
//!
//!   A device the quick probe recognises is not blank whatever else it
//!   holds; what the quick tier cannot see there is a second, stale
//!   signature of a kind it does not know, whose label then does not count
//!   towards "exactly one filesystem per label".
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

/// The signatures on each device (see the module doc for the two tiers).
/// A device that cannot be probed gets one pseudo-signature saying so, so
/// it is never taken for blank.
pub fn signatures(devices: &[PathBuf]) -> BTreeMap<PathBuf, Vec<Signature>> {
    let mut out: BTreeMap<PathBuf, Vec<Signature>> = BTreeMap::new();
    let mut full = Vec::new();
    for d in devices {
        match quick(d) {
            Ok(sigs) if !sigs.is_empty() && !sigs.iter().any(is_pending) => {
                out.insert(d.clone(), sigs);
            }
            _ => full.push(d.clone()),
        }
    }
    for (d, sigs) in libblkid_signatures(&full) {
        out.insert(d, sigs);
    }
    out
}

/// A volume of ours whose formatting was interrupted (`ecs-data.new`): the
/// planner formats it again, so libblkid must confirm it holds nothing else.
fn is_pending(s: &Signature) -> bool {
    s.label.as_deref().is_some_and(|l| l.ends_with(".new"))
}

/// libblkid's complete list for each device, through one `wipefs`.
fn libblkid_signatures(devices: &[PathBuf]) -> BTreeMap<PathBuf, Vec<Signature>> {
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

/// The signatures the quick tier knows on `path` (see the module doc), in
/// the order libblkid's wipefs lists them: content first, then partition
/// tables. An empty list means "nothing known here", not "blank".
pub fn quick(path: &Path) -> io::Result<Vec<Signature>> {
    let f = File::open(path)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let len = if len > 0 {
        len
    } else {
        // Block devices report size 0 in metadata.
        (&f).seek(SeekFrom::End(0))?
    };
    let head = read_at(&f, 0, 8192)?;
    let mut out = Vec::new();
    let mut add = |kind: &str, label: Option<String>| {
        out.push(Signature {
            kind: kind.into(),
            label: label.filter(|l| !l.is_empty()),
        })
    };
    let at = |buf: &[u8], off: usize, magic: &[u8]| buf.get(off..off + magic.len()) == Some(magic);

    if let Some(sb) = head.get(1024..2048) {
        if let Some((kind, label)) = ext_kind(sb.try_into().expect("1 KiB")) {
            add(kind, Some(label));
        }
    }
    if at(&head, 0, b"XFSB") {
        add("xfs", Some(c_string(&head[108..120])));
    }
    if at(&head, 0, b"LUKS\xba\xbe") {
        // LUKS2 keeps a label in its binary header; LUKS1 has none.
        let v2 = head.get(6..8) == Some(&[0, 2]);
        add("crypto_LUKS", v2.then(|| c_string(&head[24..72])));
    }
    if (0..4).any(|s| at(&head, s * 512, b"LABELONE") && at(&head, s * 512 + 24, b"LVM2 001")) {
        add("LVM2_member", None);
    }
    const MD_MAGIC: [u8; 4] = 0xa92b_4efcu32.to_le_bytes();
    let md_end = |off: u64| -> io::Result<bool> { Ok(read_at(&f, off, 4)? == MD_MAGIC) };
    if at(&head, 0, &MD_MAGIC)
        || at(&head, 4096, &MD_MAGIC)
        || (len >= 0x20000 && md_end((len & !0xffff) - 0x10000)?)
        || (len >= 0x3000 && md_end((len - 8192) & !4095)?)
    {
        add("linux_raid_member", None);
    }
    for page in [4096usize, 8192, 16384, 65536] {
        let magic = if page <= head.len() {
            head.get(page - 10..page).map(<[u8]>::to_vec)
        } else {
            Some(read_at(&f, page as u64 - 10, 10)?)
        };
        let magic = magic.unwrap_or_default();
        if magic == b"SWAPSPACE2" || magic == b"SWAP-SPACE" {
            let label = (magic == b"SWAPSPACE2").then(|| c_string(&head[1024 + 28..1024 + 44]));
            add("swap", label);
            break;
        }
    }
    if at(&head, 1024, &0xF2F5_2010u32.to_le_bytes()) {
        add("f2fs", None);
    }
    if at(&head, 4096 + 24, &BCACHE_MAGIC) {
        add("bcache", None);
    }
    if len > 65536 + 0x12b + 256 {
        let sb = read_at(&f, 65536, 0x12b + 256)?;
        if at(&sb, 64, b"_BHRfS_M") {
            add("btrfs", Some(c_string(&sb[0x12b..0x12b + 256])));
        }
    }
    let ntfs = at(&head, 3, b"NTFS    ");
    if ntfs {
        add("ntfs", None);
    }
    let fat_or_iso = seeds::seed::probe(&f);
    match &fat_or_iso {
        Some((seeds::seed::FsKind::Iso9660, label)) => add("iso9660", Some(label.trim().into())),
        Some((seeds::seed::FsKind::Udf, label)) => add("udf", Some(label.trim().into())),
        Some((_, label)) => add("vfat", Some(label.trim().into())),
        None => {}
    }
    if head.get(510..512) == Some(&[0x55, 0xAA]) {
        let entries: Vec<&[u8]> = (0..4).map(|i| &head[446 + 16 * i..462 + 16 * i]).collect();
        if entries.iter().any(|e| e[4] == 0xEE) {
            add("PMBR", None);
        } else if !ntfs
            && !matches!(fat_or_iso, Some((k, _)) if k.blkid_type() == "vfat")
            && entries.iter().all(|e| e[0] == 0 || e[0] == 0x80)
            && entries.iter().any(|e| e[4] != 0)
        {
            add("dos", None);
        }
    }
    for sector in [512usize, 4096] {
        if at(&head, sector, b"EFI PART") {
            add("gpt", None);
            break;
        }
    }
    Ok(out)
}

const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// Up to `len` bytes at `offset` (fewer at the end of the device).
fn read_at(f: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// A NUL-padded string field.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
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

/// libblkid's name for the ext2/3/4 superblock `sb` (which of the three
/// its feature flags make it), and its label.
fn ext_kind(sb: &[u8; 1024]) -> Option<(&'static str, String)> {
    let parsed = parse_ext4(sb)?;
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    let (compat, incompat, ro_compat) = (u32_at(92), u32_at(96), u32_at(100));
    const HAS_JOURNAL: u32 = 0x4;
    const JOURNAL_DEV: u32 = 0x8;
    // Features ext3 knows: filetype, recover, meta_bg / sparse_super,
    // large_file, btree_dir. Anything else makes it ext4.
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    let kind = if incompat & JOURNAL_DEV != 0 {
        "jbd"
    } else if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some((kind, parsed.label))
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

    /// A sparse image file of `mib` MiB made by `tool args... <file>`.
    fn made_by(d: &Path, name: &str, mib: u64, tool: &str, args: &[&str]) -> PathBuf {
        let img = d.join(name);
        File::create(&img).unwrap().set_len(mib << 20).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.push(img.to_str().unwrap());
        crate::testutil::sh(tool, &all);
        img
    }

    /// On images made by the real tools, the quick probe finds something,
    /// and everything it finds libblkid finds too, with the same name and
    /// label: the quick tier never invents a signature or a label.
    #[test]
    fn quick_probe_agrees_with_libblkid() {
        need("wipefs");
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let dos = p.join("dos");
        File::create(&dos).unwrap().set_len(16 << 20).unwrap();
        seeds::cmd::run_with_input(
            &mut cmd::command("sfdisk", ["-q", dos.to_str().unwrap()]),
            Some(b"label: dos\nstart=2048, size=8192, type=83\n"),
        )
        .unwrap();
        let iso_dir = p.join("iso");
        std::fs::create_dir(&iso_dir).unwrap();
        std::fs::write(iso_dir.join("user-data"), "#cloud-config\n").unwrap();
        let iso = p.join("seed.iso");
        crate::testutil::sh(
            "genisoimage",
            &[
                "-quiet",
                "-V",
                "cidata",
                "-J",
                "-r",
                "-o",
                iso.to_str().unwrap(),
                iso_dir.to_str().unwrap(),
            ],
        );
        let luks = p.join("luks");
        File::create(&luks).unwrap().set_len(32 << 20).unwrap();
        seeds::cmd::run_with_input(
            &mut cmd::command(
                "cryptsetup",
                [
                    "luksFormat",
                    "--batch-mode",
                    "--type",
                    "luks2",
                    "--label",
                    "vault",
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--key-file",
                    "-",
                    luks.to_str().unwrap(),
                ],
            ),
            Some(b"not-a-secret"),
        )
        .unwrap();
        let cases = [
            made_by(p, "ext4", 64, "mkfs.ext4", &["-q", "-L", "ecs-data"]),
            made_by(p, "ext3", 64, "mkfs.ext3", &["-q", "-L", "old3"]),
            made_by(p, "ext2", 64, "mkfs.ext2", &["-q"]),
            made_by(p, "xfs", 320, "mkfs.xfs", &["-q", "-L", "xlabel"]),
            made_by(p, "btrfs", 320, "mkfs.btrfs", &["-q", "-L", "blabel"]),
            made_by(p, "swap", 16, "mkswap", &["-L", "sw"]),
            made_by(p, "vfat", 64, "mkfs.vfat", &["-n", "ESPLABEL"]),
            made_by(
                p,
                "udf",
                8,
                "mkudffs",
                &["--media-type=hd", "--blocksize=2048", "--label=prov"],
            ),
            made_by(p, "gpt", 16, "sgdisk", &["-o"]),
            dos,
            iso,
            luks,
        ];
        let full = libblkid_signatures(&cases);
        for img in &cases {
            let q = quick(img).unwrap();
            assert!(
                !q.is_empty(),
                "{}: the quick probe found nothing",
                img.display()
            );
            for s in &q {
                assert!(
                    full[img].contains(s),
                    "{}: quick found {s}, libblkid found {:?}",
                    img.display(),
                    full[img]
                );
            }
        }
        let kinds = |name: &str| -> Vec<String> {
            quick(&p.join(name))
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(kinds("ext4"), ["ext4 (label \"ecs-data\")"]);
        assert_eq!(kinds("ext3"), ["ext3 (label \"old3\")"]);
        assert_eq!(kinds("ext2"), ["ext2"]);
        assert_eq!(kinds("gpt"), ["PMBR", "gpt"]);
        assert_eq!(kinds("dos"), ["dos"]);
        assert_eq!(kinds("seed.iso"), ["iso9660 (label \"cidata\")"]);
        assert_eq!(kinds("udf"), ["udf (label \"prov\")"]);
        assert_eq!(kinds("luks"), ["crypto_LUKS (label \"vault\")"]);
    }

    /// Kinds libblkid only accepts with valid checksums (LVM, MD RAID) are
    /// recognised by their magic alone: a device carrying one is not blank.
    #[test]
    fn quick_probe_sees_lvm_and_raid_magic_and_nothing_on_zeroes() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, writes: &[(u64, &[u8])]| {
            let img = d.path().join(name);
            let f = File::create(&img).unwrap();
            f.set_len(8 << 20).unwrap();
            for (off, b) in writes {
                f.write_all_at(b, *off).unwrap();
            }
            img
        };
        let magic = 0xa92b_4efcu32.to_le_bytes();
        let lvm = mk("lvm", &[(512, b"LABELONE"), (512 + 24, b"LVM2 001")]);
        let md12 = mk("md12", &[(4096, &magic)]);
        let md10 = mk("md10", &[(((8 << 20) - 8192) & !4095, &magic)]);
        let md090 = mk("md090", &[((8 << 20) - 0x10000, &magic)]);
        let blank = mk("blank", &[]);
        let kind =
            |p: &Path| -> Vec<String> { quick(p).unwrap().into_iter().map(|s| s.kind).collect() };
        assert_eq!(kind(&lvm), ["LVM2_member"]);
        for md in [&md12, &md10, &md090] {
            assert_eq!(kind(md), ["linux_raid_member"], "{}", md.display());
        }
        assert!(kind(&blank).is_empty());
        // Shorter than any superblock: nothing, and no error.
        let tiny = d.path().join("tiny");
        std::fs::write(&tiny, b"x").unwrap();
        assert!(kind(&tiny).is_empty());
    }

    /// Only devices the quick tier cannot settle go to libblkid: a blank
    /// one and an interrupted volume of ours.
    #[test]
    fn signatures_ask_libblkid_only_where_it_matters() {
        need("wipefs");
        let d = tempfile::tempdir().unwrap();
        let ours = made_by(d.path(), "ours", 64, "mkfs.ext4", &["-q", "-L", "ecs-data"]);
        let pending = made_by(
            d.path(),
            "pending",
            64,
            "mkfs.ext4",
            &["-q", "-L", "ecs-data.new"],
        );
        let blank = d.path().join("blank");
        File::create(&blank).unwrap().set_len(16 << 20).unwrap();
        let got = signatures(&[ours.clone(), pending.clone(), blank.clone()]);
        assert_eq!(got[&ours][0].label.as_deref(), Some("ecs-data"));
        assert_eq!(got[&pending][0].label.as_deref(), Some("ecs-data.new"));
        assert_eq!(got[&blank], vec![]);
    }
}
