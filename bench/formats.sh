#!/usr/bin/env bash
# Conversion time and size of every output format from one build, beside
# the same conversion by hand, medians of RUNS in one run, written to
# BENCHMARKS.md between its "bench/formats.sh" markers.
#
#   sudo bash bench/formats.sh            # medians of 3
#   sudo RUNS=5 bash bench/formats.sh
#
# One build of the default image as raw (`--size SIZE`, whole GiB so the
# GCE tar converts the same disk), then for each format:
#   - imgbuild's conversion, exactly as the build does it
#     (`output::write_image`, run by the bench-only example
#     `builder/examples/convert.rs`): qemu-img with one coroutine and the
#     identifiers made reproducible; the OVA and the GCE tar written in
#     process;
#   - by hand: plain `qemu-img convert` with qemu-img's defaults (8
#     coroutines), the OVA as qemu-img + sha256sum + `tar -cf`, the GCE tar
#     as Google's guide makes it (`tar --format=oldgnu -Sczf`).
# Sizes are file sizes and allocated bytes (`du`), of the first run.
#
# Settings (environment): RUNS (3), SIZE (2G), BENCH_DIR
# (/var/tmp/imgbuild-bench-formats), IMGBUILD_CACHE_DIR (the layer cache,
# default ~/.cache/imgbuild), BENCH_OUT (BENCHMARKS.md at the repository
# root), CARGO_TARGET_DIR (target/).
set -euo pipefail
RUNS=${RUNS:-3}
SIZE=${SIZE:-2G}
W=${BENCH_DIR:-/var/tmp/imgbuild-bench-formats}
repo=$(cd "$(dirname "$0")/.." && pwd)
BENCH_OUT=${BENCH_OUT:-$repo/BENCHMARKS.md}
CACHE=${IMGBUILD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild}
TARGET=${CARGO_TARGET_DIR:-$repo/target}
. "$repo/bench/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root: building images needs it"
cd "$repo"
bash scripts/install-host-deps.sh >&2
cargo build --release --locked -q -j 2 -p imgbuild -p ecs-firstboot
cargo build --release --locked -q -j 2 -p imgbuild --example convert
IMGBUILD=$TARGET/release/imgbuild
CONVERT=$TARGET/release/examples/convert
rm -rf "$W" && mkdir -p "$W/logs" "$W/out" "$W/hand"
R=$W
export SOURCE_DATE_EPOCH=1700000000

# measure NAME CMD...: wall seconds into $R/NAME.t, output into logs/NAME.log.
measure() {
  local name=$1; shift
  log "run $name"
  local t0 t1
  sync
  t0=$(date +%s.%N)
  "$@" >"$R/logs/$name.log" 2>&1 || { tail -n 30 "$R/logs/$name.log" >&2; die "$name failed"; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$R/$name.t"
}
vals() { cat "$R"/"$1"-*.t; }
mib() { awk -v b="$1" 'BEGIN { printf "%d", b / 1048576 }'; }
sizes() { echo "$(mib "$(stat -c %s "$1")") / $(mib "$(( $(stat -c %b "$1") * 512 ))")"; }

measure build-1 "$IMGBUILD" --env examples/env.yml --layers-dir layers --cache-dir "$CACHE" \
  --size "$SIZE" --force -o "$R/ecs.raw"
RAW=$R/ecs.raw
virtual=$(stat -c %s "$RAW")

# The OVA by hand: the same descriptor as imgbuild's, with the hand VMDK's size.
hand_ova() {
  local d=$R/hand/ova
  rm -rf "$d" && mkdir -p "$d"
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$RAW" "$d/ecs-disk1.vmdk"
  tar -xf "$R/out/ecs.ova" -C "$d" ecs.ovf
  sed -i "s/ovf:size=\"[0-9]*\"/ovf:size=\"$(stat -c %s "$d/ecs-disk1.vmdk")\"/" "$d/ecs.ovf"
  (cd "$d" && for f in ecs.ovf ecs-disk1.vmdk; do echo "SHA256($f)= $(sha256sum "$f" | cut -d' ' -f1)"; done >ecs.mf)
  tar -C "$d" -cf "$1" ecs.ovf ecs.mf ecs-disk1.vmdk
}
# GCE's member must be named disk.raw: a sparse copy, made once, unmeasured.
mkdir -p "$R/hand/gce"
cp --sparse=always "$RAW" "$R/hand/gce/disk.raw"
hand_gce() {
  tar -C "$R/hand/gce" --format=oldgnu -Sczf "$1" disk.raw
}

rows=""
for fmt in qcow2 vmdk vhd vhdx vdi ova gce; do
  case $fmt in
    gce) ext=tar.gz ;;
    *) ext=$fmt ;;
  esac
  out=$R/out/ecs.$ext
  hand=$R/hand/ecs.$ext
  case $fmt in
    qcow2) by_hand=(qemu-img convert -f raw -O qcow2 "$RAW" "$hand"); how='`qemu-img convert -O qcow2`' ;;
    vmdk) by_hand=(qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$RAW" "$hand"); how='`qemu-img convert -O vmdk -o subformat=streamOptimized`' ;;
    vhd) by_hand=(qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$RAW" "$hand"); how='`qemu-img convert -O vpc -o subformat=fixed,force_size=on`' ;;
    vhdx) by_hand=(qemu-img convert -f raw -O vhdx "$RAW" "$hand"); how='`qemu-img convert -O vhdx`' ;;
    vdi) by_hand=(qemu-img convert -f raw -O vdi "$RAW" "$hand"); how='`qemu-img convert -O vdi`' ;;
    ova) by_hand=(hand_ova "$hand"); how='`qemu-img convert` (streamOptimized) + `sha256sum` + `tar -cf`' ;;
    gce) by_hand=(hand_gce "$hand"); how='`tar --format=oldgnu -Sczf` (Google'"'"'s guide)' ;;
  esac
  for i in $(seq "$RUNS"); do
    rm -f "$out" "$hand"
    measure "img-$fmt-$i" "$CONVERT" "$RAW" "$out" "$fmt"
    [ "$i" = 1 ] && cp --sparse=always "$out" "$R/first.$ext" && sha1=$(sha256sum "$out" | cut -d' ' -f1)
    measure "hand-$fmt-$i" "${by_hand[@]}"
  done
  same=$([ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha1" ] && echo yes || echo no)
  ours=$(vals "img-$fmt" | median)
  theirs=$(vals "hand-$fmt" | median)
  ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
  rows+="| $fmt | $(vals "img-$fmt" | paste -sd' ' -) | **$ours** | $(sizes "$R/first.$ext") | $same | $how | $(vals "hand-$fmt" | paste -sd' ' -) | **$theirs** | $(sizes "$hand") | $ratio |"$'\n'
  # Only the figures are kept: the disk is shared, and every format is an
  # image's size again.
  rm -f "$R/first.$ext" "$hand"
  [ "$fmt" = ova ] || rm -f "$out"
  rm -rf "$R/hand/ova"
done
rows=${rows%$'\n'}
rm -rf "$R/out" "$R/hand"

block=$(cat <<EOF2
<!-- bench/formats.sh: begin -->
## Output formats: conversion time and size (\`bench/formats.sh\`)

\`RUNS=$RUNS SIZE=$SIZE bash bench/formats.sh\`, commit $(git rev-parse --short=12 HEAD), $(date -u '+%Y-%m-%d %H:%M') UTC, on this
machine ($(nproc) cores, shared with other work; load at the end $(cut -d' ' -f1-3 /proc/loadavg)), release build.
One build of the default image as raw: virtual $(mib "$virtual") MiB, $(mib "$(( $(stat -c %b "$RAW") * 512 ))") MiB allocated
(the build: $(vals build) s, layers and image from the cache where they were).
Each format converted from that raw disk $RUNS times by imgbuild (\`output::write_image\`, as the build runs it) and
$RUNS times by hand; sizes are MiB, file size / allocated. "Same bytes": run $RUNS gave run 1's bytes.

| format | imgbuild runs (s) | median (s) | size | same bytes | by hand | runs (s) | median (s) | size | imgbuild ÷ by hand |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
$rows

These machines are noisy: read the medians and the ratios, not single runs.
qemu-img by hand runs 8 coroutines and may write out of order; imgbuild asks
for one and in-order writes, and sets the identifiers qemu-img draws at
random, so the same disk gives the same bytes.
<!-- bench/formats.sh: end -->
EOF2
)
write_section formats.sh "$block"
