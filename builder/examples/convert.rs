//! `convert RAW OUT FORMAT`: one conversion of a raw disk as a build makes
//! it ([`imgbuild::output::write_image`]), for `bench/formats.sh`, which
//! times it beside `qemu-img convert` by hand. The image's name is OUT's
//! (see [`imgbuild::output::Format::stem`]), the disk GUID fixed, the epoch
//! `SOURCE_DATE_EPOCH` (else 0).

use std::path::PathBuf;

use imgbuild::output::{self, Format, Identity};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [raw, out, format] = args.as_slice() else {
        anyhow::bail!("usage: convert RAW OUT FORMAT");
    };
    let (raw, out) = (PathBuf::from(raw), PathBuf::from(out));
    let format = Format::parse(format)?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let id = Identity {
        name: Format::stem(&out),
        disk_guid: [0x42; 16],
        epoch,
    };
    output::write_image(&raw, &out, format, false, &id)
}
