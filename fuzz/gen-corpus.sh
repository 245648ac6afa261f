#!/bin/sh
# Makes the starting corpus of the `seed_reader` fuzz target: small seed
# images of every kind the reader knows (ISO9660 with Rock Ridge, Joliet or
# plain names; FAT12/16/32 with long names; nested config-2 trees; UDF).
# Needs genisoimage, xorriso, dosfstools, mtools and udftools
# (scripts/install-host-deps.sh). Usage: fuzz/gen-corpus.sh [OUTDIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/seed_reader}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/seed" "$work/config2/openstack/latest"
printf '#cloud-config\nappliance:\n  domain: ecs.example.org\n' >"$work/seed/user-data"
printf 'instance-id: iid-1\nlocal-hostname: ecs\n' >"$work/seed/meta-data"
printf '#cloud-config\n' >"$work/config2/openstack/latest/user_data"
printf '{"uuid": "1"}' >"$work/config2/openstack/latest/meta_data.json"

genisoimage -quiet -no-pad -o "$out/genisoimage-rr-joliet.iso" -V cidata -J -R "$work/seed"
genisoimage -quiet -no-pad -o "$out/genisoimage-joliet.iso" -V cidata -J "$work/seed"
genisoimage -quiet -no-pad -o "$out/genisoimage-plain.iso" -V cidata "$work/seed"
genisoimage -quiet -no-pad -o "$out/config2.iso" -V config-2 -J -R "$work/config2"
xorriso -as mkisofs -quiet -no-pad -o "$out/xorriso.iso" -V cidata -J -R "$work/seed" 2>/dev/null
# UDF: mkudffs' empty 2.01 volume, and genisoimage's UDF 1.02 with the
# ISO9660 descriptors removed (its recognition sequence moved to sector 16).
rm -f "$out/mkudffs.udf"
mkudffs --media-type=hd --blocksize=2048 --label=prov "$out/mkudffs.udf" 300 >/dev/null
genisoimage -quiet -no-pad -udf -o "$work/hybrid.iso" -V rd_rom "$work/seed"
python3 - "$work/hybrid.iso" "$out/udf-only.udf" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read()); S = 2048
vrs = [bytes(d[s*S:(s+1)*S]) for s in range(16, 32) if d[s*S+1:s*S+6] in (b"BEA01", b"NSR02", b"TEA01")]
d[16*S:32*S] = bytes(16*S)
for i, v in enumerate(vrs): d[(16+i)*S:(17+i)*S] = v
open(sys.argv[2], "wb").write(d)
PY

fat() { # name size_kib mkfs-args... : an image holding the seed files
    img="$out/$1"; size=$2; shift 2
    rm -f "$img"
    mkfs.vfat -C "$img" "$@" "$size" >/dev/null 2>&1
    mcopy -i "$img" "$work/seed/user-data" "$work/seed/meta-data" ::
    mmd -i "$img" ::openstack ::openstack/latest
    mcopy -i "$img" "$work/config2/openstack/latest/user_data" ::openstack/latest/
}
fat fat12.img 64 -n cidata
fat fat16.img 2100 -F 16 -s 1 -n CIDATA
fat fat32.img 33300 -F 32 -s 1 -n CIDATA
# The reader needs only the metadata and the first clusters: cut the large
# images so that the fuzzer's inputs stay small.
truncate -s 64K "$out/fat16.img"
truncate -s 600K "$out/fat32.img"
ls -l "$out"
