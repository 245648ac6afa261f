#!/usr/bin/env bash
# The benchmark: imgbuild beside mkosi 24.3 and a plain pipeline (mmdebstrap +
# mkfs.ext4 -d + sgdisk + dd + qemu-img, bench/plain-pipeline.sh), measured in
# one run on this machine, written to BENCHMARKS.md at the repository root.
#
#   sudo bench/run.sh                 # everything, medians of 3
#   sudo RUNS=5 bench/run.sh          # medians of 5
#
# Settings (environment):
#   RUNS        repetitions of every measurement (default 3)
#   COLD_RUNS   repetitions of the cold builds (default RUNS)
#   MKOSI_COLD_RUNS, PLAIN_COLD_RUNS  the same for mkosi and the plain
#               pipeline alone (default COLD_RUNS; their cold builds take
#               3-5 times imgbuild's)
#   BOOT_RUNS   repetitions of every boot (default RUNS)
#   FIRMWARE    firmware to boot with: "uefi", "bios" or "uefi bios" (default uefi)
#   BENCH_DIR   work directory (default /var/tmp/imgbuild-bench-run); the
#               package caches in it are kept between runs, everything else
#               is rebuilt
#   BENCH_OUT   the report (default BENCHMARKS.md at the repository root)
#   SKIP_INSTALL=1  do not install host packages
#   WARMUP      auto (default: an unmeasured build of each tool fills the
#               package caches when the package set changed since the last
#               run), yes, or no (the caches are known to be full; run.sh
#               still counts the packages downloaded during measured builds
#               and reports them)
#   REPORT_ONLY=1   rewrite BENCH_OUT from the last run's results (no builds)
#   BENCH_NOTES a Markdown file appended to the report as the runner's notes
#               (e.g. what else was running on the machine)
#
# Needs root and Debian 12 with network access to deb.debian.org. Installs
# what it needs (idempotently): scripts/install-host-deps.sh, mkosi 24.3
# with systemd-boot, kmod and cpio from bookworm-backports (as
# mkosi's own documentation asks), grub-common/grub-pc-bin (mkosi's
# BIOS boot uses the host's grub-mkimage), python3-yaml and time.
#
# Fairness: every tool gets a warm package cache (downloads are not
# measured: an unmeasured warm-up build of each fills them when the package
# set changed since the last run); the cold builds start from an empty layer
# cache (imgbuild) / wiped incremental cache and output (mkosi) / no tree
# (plain). All three build the same package set (the union of
# layers/*/layer.yml for Debian; mkosi swaps initramfs-tools for its own
# initrd and adds systemd-boot) with the same kernel arguments.
set -euo pipefail

RUNS=${RUNS:-3}
COLD_RUNS=${COLD_RUNS:-$RUNS}
MKOSI_COLD_RUNS=${MKOSI_COLD_RUNS:-$COLD_RUNS}
PLAIN_COLD_RUNS=${PLAIN_COLD_RUNS:-$COLD_RUNS}
BOOT_RUNS=${BOOT_RUNS:-$RUNS}
FIRMWARE=${FIRMWARE:-uefi}
BENCH_DIR=${BENCH_DIR:-/var/tmp/imgbuild-bench-run}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
CMDLINE="i8042.noaux i8042.nopnp"
BOOT_TIMEOUT=${BOOT_TIMEOUT:-900}
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin

repo=$(cd "$(dirname "$0")/.." && pwd)
BENCH_OUT=${BENCH_OUT:-$repo/BENCHMARKS.md}
log() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo bench/run.sh): building root trees and images needs it"

started=$(date -u +%s)
cd "$repo"

# ---------------------------------------------------------------- host setup
install_deps() {
  bash scripts/install-host-deps.sh >&2
  local want=() p
  for p in mkosi systemd-boot kmod cpio; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
  done
  if [ "${#want[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports mkosi systemd-boot kmod cpio >&2
  fi
  want=()
  for p in grub-common grub-pc-bin python3-yaml time mtools dosfstools gdisk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
  done
  if [ "${#want[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" >&2
  fi
  local v
  v=$(PATH=$SYS_PATH mkosi --version 2>/dev/null || true)
  case "$v" in "mkosi 24.3"*) ;; *) die "mkosi 24.3 expected, found '${v:-none}'" ;; esac
}
REPORT_ONLY=${REPORT_ONLY:-0}
if [ "${SKIP_INSTALL:-0}" != 1 ] && [ "$REPORT_ONLY" != 1 ]; then
  log "installing host packages (idempotent)"
  install_deps
fi

if [ "$REPORT_ONLY" != 1 ]; then
  log "building imgbuild and ecs-firstboot (release)"
  cargo build --release --locked -q -p imgbuild -p ecs-firstboot
fi
IMGBUILD=$repo/target/release/imgbuild
export PATH=$SYS_PATH

# ---------------------------------------------------------------- work area
mkdir -p "$BENCH_DIR"
W=$BENCH_DIR
APT=$W/apt-archives            # shared warm package cache (kept)
MKOSI_PKG=$W/mkosi-pkgcache    # mkosi's package cache (kept)
mkdir -p "$APT/partial" "$MKOSI_PKG"
R=$W/run
RES=$R/results.tsv             # name <TAB> wall s <TAB> max RSS KiB <TAB> 1-min load at the start
VARS=$R/vars.sh                # the other figures, for REPORT_ONLY
# setv NAME VALUE: sets a figure and keeps it for REPORT_ONLY.
setv() { printf -v "$1" '%s' "$2"; declare -p "$1" >>"$VARS"; }
# ---------------------------------------------------------------- helpers
# measure NAME CMD...: runs CMD with /usr/bin/time, logs to logs/NAME.log,
# appends "NAME wall maxrss" to the results; a failure stops the benchmark.
measure() {
  local name=$1; shift
  log "run $name"
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  if ! /usr/bin/time -f '%e %M' -o "$R/logs/$name.time" "$@" >"$R/logs/$name.log" 2>&1; then
    tail -n 30 "$R/logs/$name.log" >&2
    die "$name failed (log: $R/logs/$name.log)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" $(tail -n 1 "$R/logs/$name.time") "$load" >>"$RES"
}
# vals PREFIX [col]: the values of runs named PREFIX-1..N (col 2: wall, 3: RSS).
vals() { awk -F'\t' -v p="$1" -v c="${2:-2}" '$1 ~ "^" p "-[0-9]+$" { print $c }' "$RES"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "n/a"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { vals "$1" "${2:-2}" | median; }
maxv() { vals "$1" "${2:-2}" | sort -g | tail -n 1; }
runs_of() { vals "$1" | paste -sd' ' -; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "n/a" || v == "") print "n/a"; else printf "%.1f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.0f%%", 100 * a / b }'; }
mib() { awk -v b="$1" 'BEGIN { if (b !~ /^[0-9]+$/) print "n/a"; else printf "%.0f MiB", b / 1048576 }'; }
alloc() { du -B1 "$1" | cut -f1; }
size() { stat -c %s "$1"; }
# imgbuild's own log: the time the tree stage took and the whole build took.
tree_secs() { { grep -o 'root tree ready in [0-9.]*s' "$1" | tail -n 1 | grep -o '[0-9.]*' | head -n 1; } 2>/dev/null || true; }
total_secs() { { grep -o 'wrote .* in [0-9.]*s' "$1" | tail -n 1 | grep -o 'in [0-9.]*s' | grep -o '[0-9.]*'; } 2>/dev/null || true; }

sync_debs() { # sync_debs FROM TO: hard-link .debs missing in TO
  find "$1" -maxdepth 1 -name '*.deb' -exec cp -l -n -t "$2" {} + 2>/dev/null ||
    find "$1" -maxdepth 1 -name '*.deb' -exec cp -n -t "$2" {} +
}

MK=$R/mkosi
mkosi_setup() {
  rm -rf "$MK"
  cp -a "$repo/bench/mkosi" "$MK"
  # Its package list follows the layers (fair by construction): the
  # Packages= block of the copy is the layers' union ($expect_mkosi).
  python3 - "$MK/mkosi.conf" "$expect_mkosi" <<'EOF'
import sys
path, pkgs = sys.argv[1], sys.argv[2].split(",")
out, skip = [], False
for line in open(path):
    if line.startswith("Packages="):
        out.append("Packages=" + pkgs[0] + "\n")
        out.extend(" " * 9 + p + "\n" for p in pkgs[1:])
        skip = True
        continue
    if skip and line[:1].isspace() and line.strip():
        continue
    skip = False
    out.append(line)
open(path, "w").write("".join(out))
EOF
  mkdir -p "$MKOSI_PKG/cache/apt/archives"
  sync_debs "$APT" "$MKOSI_PKG/cache/apt/archives"
}
MKOSI=(env -C "$MK" mkosi --package-cache-dir="$MKOSI_PKG")

jget() { # jget FILE MARKER: seconds to the marker, or "fail"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); m=d["markers"].get(sys.argv[2]); print(m["t"] if m else "fail")' "$1" "$2" 2>/dev/null || echo fail
}
jline() {
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); m=d["markers"].get(sys.argv[2]); print(m["line"] if m else "")' "$1" "$2" 2>/dev/null || true
}
# layer_sums CACHE: "LAYER SHA256" for every layer entry in CACHE, the sha256
# of its uncompressed archive (the tree), sorted by layer name.
layer_sums() {
  local j
  for j in "$1"/layers/*.json; do
    printf '%s %s\n' \
      "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layer"])' "$j")" \
      "$(zstd -dc "${j%.json}.tar.zst" | sha256sum | cut -d' ' -f1)"
  done | sort
}
agent_ms() { jline "$1" agent | grep -o '[0-9]*ms$' | grep -o '[0-9]*'; }
agent_cpu_ms() { jline "$1" agent | grep -o 'cpu=[0-9]*ms' | grep -o '[0-9]*'; }
if [ "$REPORT_ONLY" = 1 ]; then
  [ -f "$VARS" ] || die "no results in $R to report"
else
rm -rf "$R" && mkdir -p "$R/logs" "$R/out"
: >"$RES"
: >"$VARS"
setv started "$started"
setv load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
setv others_start "$(pgrep -c -f '^qemu-system' || true)"
for v in RUNS COLD_RUNS MKOSI_COLD_RUNS PLAIN_COLD_RUNS BOOT_RUNS FIRMWARE; do setv "$v" "${!v}"; done
setv WARMUP "${WARMUP:-auto}"

# The package set: the union of the default stack's recipes for Debian.
PACKAGES=$(python3 - "$repo/layers" <<'EOF'
import glob, sys, yaml
pk = set()
for f in sorted(glob.glob(sys.argv[1] + "/*/layer.yml")):
    d = yaml.safe_load(open(f)) or {}
    pk |= set(d.get("packages") or [])
    pk |= set((d.get("distro_packages") or {}).get("debian") or [])
print(",".join(sorted(pk)))
EOF
)
mkosi_pkgs=$(awk '/^Packages=/{p=1; sub(/^Packages=/,"")} p&&/^[A-Za-z]+=/&&!/^Packages=/{p=0} p{for(i=1;i<=NF;i++) print $i}' bench/mkosi/mkosi.conf | sort | paste -sd, -)
expect_mkosi=$(tr ',' '\n' <<<"$PACKAGES" | grep -vx initramfs-tools | { cat; echo systemd-boot; } | sort | paste -sd, -)
if [ "$mkosi_pkgs" = "$expect_mkosi" ]; then
  setv pkg_note "the same"
else
  # mkosi_setup writes the layers' list into its copy of mkosi.conf.
  setv pkg_note "the same (written from the layers into the run's copy of bench/mkosi/mkosi.conf)"
fi
pkg_hash=$( (echo "$PACKAGES"; cat bench/mkosi/mkosi.conf) | sha256sum | cut -c1-16)

export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 1700000000)
setv commit "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
setv dirty "$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)"
setv PACKAGES "$PACKAGES"
setv SOURCE_DATE_EPOCH "$SOURCE_DATE_EPOCH"

# Layers and env: private copies, so the top-layer edits never touch the repo.
cp -a layers "$R/layers"
ENV=$R/env.yml
cp examples/env.yml "$ENV"
TOP=$(ls -d "$R"/layers/[0-9][0-9]-*/ | sort | tail -1)
setv TOP_NAME "$(basename "$TOP")"
VICTIM=$(find "$TOP/files" -type f | sort | tail -1)
[ -n "$VICTIM" ] || die "the top layer $TOP_NAME has no files/ to change"
setv VICTIM_REL "files${VICTIM#"$TOP/files"}"

IMG=("$IMGBUILD" --env "$ENV" --distro debian --suite "$SUITE" --mirror "$MIRROR"
  --layers-dir "$R/layers" --apt-cache "$APT" --cmdline "$CMDLINE" --force)

# ---------------------------------------------------------------- warm-up
stamp=$W/warm.$pkg_hash
if [ "$WARMUP" = yes ] || { [ "$WARMUP" = auto ] && [ ! -e "$stamp" ]; }; then
  setv warm_note "an unmeasured warm-up build of each tool filled them in this run"
  log "warm-up (unmeasured): filling the package caches for this package set"
  rm -rf "$W/warm" && mkdir -p "$W/warm"
  APT_ARCHIVES=$APT PACKAGES=$PACKAGES SUITE=$SUITE MIRROR=$MIRROR \
    bash bench/plain-pipeline.sh tree "$W/warm/tree" >"$W/warm/plain.log" 2>&1 ||
    { tail -n 30 "$W/warm/plain.log" >&2; die "warm-up: plain pipeline failed"; }
  "${IMG[@]}" --cache-dir "$W/warm/cache" -o "$W/warm/ecs.qcow2" >"$W/warm/imgbuild.log" 2>&1 ||
    { tail -n 30 "$W/warm/imgbuild.log" >&2; die "warm-up: imgbuild failed"; }
  mkosi_setup
  "${MKOSI[@]}" -i -f build >"$W/warm/mkosi.log" 2>&1 ||
    { tail -n 30 "$W/warm/mkosi.log" >&2; die "warm-up: mkosi failed"; }
  sync_debs "$MKOSI_PKG/cache/apt/archives" "$APT"
  rm -rf "$W/warm"
  touch "$stamp"
elif [ "$WARMUP" = auto ]; then
  setv warm_note "filled by the warm-up of an earlier run with the same package set"
else
  setv warm_note "filled beforehand (WARMUP=no)"
fi
ndebs() { find "$@" -maxdepth 1 -name '*.deb' | wc -l; }
mkdir -p "$MKOSI_PKG/cache/apt/archives"
sync_debs "$APT" "$MKOSI_PKG/cache/apt/archives"
setv debs_before "$(ndebs "$APT") $(ndebs "$MKOSI_PKG/cache/apt/archives")"

# ---------------------------------------------------------------- imgbuild
CACHE=$R/cache
for i in $(seq "$COLD_RUNS"); do
  rm -rf "$CACHE" "$R/out/cold"
  mkdir -p "$R/out/cold"
  measure "imgbuild-cold-$i" "${IMG[@]}" --cache-dir "$CACHE" -o "$R/out/cold/ecs.qcow2"
  cp "$R/out/cold/ecs.SHA256SUMS" "$R/logs/imgbuild-cold-$i.SHA256SUMS"
  layer_sums "$CACHE" >"$R/logs/imgbuild-cold-$i.layers"
done
rm -rf "$R/out/cold"

mkdir -p "$R/out/top"
for i in $(seq "$RUNS"); do
  echo "<!-- bench: change $i -->" >>"$VICTIM"
  measure "imgbuild-top-$i" "${IMG[@]}" --cache-dir "$CACHE" -o "$R/out/top/ecs.qcow2"
  grep -q "$TOP_NAME: miss" "$R/logs/imgbuild-top-$i.log" ||
    log "warning: imgbuild-top-$i: no '$TOP_NAME: miss' in the log"
done

mkdir -p "$R/out/noop"
for i in $(seq "$RUNS"); do
  measure "imgbuild-noop-$i" "${IMG[@]}" --cache-dir "$CACHE" -o "$R/out/noop/ecs.qcow2"
  grep -q "image: hit" "$R/logs/imgbuild-noop-$i.log" ||
    log "warning: imgbuild-noop-$i: no 'image: hit' in the log"
  measure "imgbuild-tree-noop-$i" "$IMGBUILD" tree --distro debian --suite "$SUITE" --mirror "$MIRROR" \
    --layers-dir "$R/layers" --apt-cache "$APT" --cache-dir "$CACHE"
  # The same no-op with the assembled-image cache off: the assembly's cost.
  measure "imgbuild-reassemble-$i" "${IMG[@]}" --cache-dir "$CACHE" --no-image-cache -o "$R/out/noop/ecs.qcow2"
done
for i in $(seq "$RUNS"); do
  printf 'imgbuild-assembly-%s\t%s\t0\n' "$i" \
    "$(awk -v a="$(total_secs "$R/logs/imgbuild-reassemble-$i.log")" -v b="$(tree_secs "$R/logs/imgbuild-reassemble-$i.log")" 'BEGIN { print a - b }')" >>"$RES"
  printf 'imgbuild-noop-treestage-%s\t%s\t0\n' "$i" "$(tree_secs "$R/logs/imgbuild-reassemble-$i.log")" >>"$RES"
  printf 'imgbuild-top-treestage-%s\t%s\t0\n' "$i" "$(tree_secs "$R/logs/imgbuild-top-$i.log")" >>"$RES"
done

# Sizes and reproducibility: the same inputs and SOURCE_DATE_EPOCH, twice,
# into two directories (every layer from the cache).
for d in a b; do
  mkdir -p "$R/out/repro-$d"
  measure "imgbuild-raw-$d-1" "${IMG[@]}" --cache-dir "$CACHE" -o "$R/out/repro-$d/ecs.raw"
  mv "$R/out/repro-$d/ecs.seed.iso" "$R/out/repro-$d/ecs.raw.seed.iso"
  measure "imgbuild-qcow2-$d-1" "${IMG[@]}" --cache-dir "$CACHE" -o "$R/out/repro-$d/ecs.qcow2"
done
mkdir -p "$R/out/compressed"
measure "imgbuild-compressed-1" "${IMG[@]}" --cache-dir "$CACHE" --compress -o "$R/out/compressed/ecs.qcow2"
setv OURS_RAW_ALLOC "$(alloc "$R/out/repro-a/ecs.raw")"
setv OURS_RAW_APPARENT "$(size "$R/out/repro-a/ecs.raw")"
setv OURS_QCOW2 "$(size "$R/out/repro-a/ecs.qcow2")"
setv OURS_QCOW2C "$(size "$R/out/compressed/ecs.qcow2")"
repro_rows=""
repro_all=yes
for f in ecs.raw ecs.qcow2 ecs.seed.iso ecs.raw.seed.iso; do
  a=$(sha256sum "$R/out/repro-a/$f" | cut -d' ' -f1)
  b=$(sha256sum "$R/out/repro-b/$f" | cut -d' ' -f1)
  same=identical
  [ "$a" = "$b" ] || { same="DIFFERENT"; repro_all=no; }
  repro_rows+="| \`$f\` | \`${a:0:16}…\` | \`${b:0:16}…\` | $same |"$'\n'
done
setv repro_rows "$repro_rows"
setv repro_all "$repro_all"
# Across the cold builds (each from an empty layer cache).
cold_repro="only one cold build"
if [ "$COLD_RUNS" -gt 1 ]; then
  if [ "$(cat "$R"/logs/imgbuild-cold-*.SHA256SUMS | sort | uniq | wc -l)" = \
       "$(wc -l <"$R/logs/imgbuild-cold-1.SHA256SUMS")" ]; then
    cold_repro="identical in all $COLD_RUNS cold builds"
  else
    cold_repro="DIFFERENT between the cold builds"
  fi
fi
setv cold_repro "$cold_repro"
setv cold_sums "$(awk '{ printf "%s `%s…`; ", $2, substr($1, 1, 16) }' "$R"/logs/imgbuild-cold-*.SHA256SUMS | sed 's/; $//')"
rm -rf "$R/out/repro-b" "$R/out/compressed" "$R/out/top"

# ---------------------------------------------------------------- plain pipeline
PLAIN=(env APT_ARCHIVES="$APT" PACKAGES="$PACKAGES" SUITE="$SUITE" MIRROR="$MIRROR"
  CMDLINE="$CMDLINE" bash "$repo/bench/plain-pipeline.sh")
mkdir -p "$R/out/plain"
for i in $(seq "$PLAIN_COLD_RUNS"); do
  rm -rf "$R/plain-tree"
  measure "plain-tree-$i" "${PLAIN[@]}" tree "$R/plain-tree"
  measure "plain-disk-$i" "${PLAIN[@]}" disk "$R/plain-tree" "$R/out/plain/disk.qcow2"
  printf 'plain-cold-%s\t%s\t%s\n' "$i" \
    "$(awk -F'\t' -v t="plain-tree-$i" -v d="plain-disk-$i" '$1 == t || $1 == d { s += $2 } END { print s }' "$RES")" \
    "$(awk -F'\t' -v t="plain-tree-$i" -v d="plain-disk-$i" '($1 == t || $1 == d) && $3 > m { m = $3 } END { print m }' "$RES")" >>"$RES"
done
PLAIN_VICTIM=$R/plain-tree/etc/bench-stamp
for i in $(seq "$RUNS"); do
  echo "change $i" >>"$PLAIN_VICTIM"
  measure "plain-redisk-$i" "${PLAIN[@]}" disk "$R/plain-tree" "$R/out/plain/disk.qcow2"
done
setv PLAIN_RAW_ALLOC "$(alloc "$R/out/plain/disk.raw")"
setv PLAIN_QCOW2 "$(size "$R/out/plain/disk.qcow2")"
qemu-img convert -f raw -O qcow2 -c "$R/out/plain/disk.raw" "$R/out/plain/disk-c.qcow2"
setv PLAIN_QCOW2C "$(size "$R/out/plain/disk-c.qcow2")"
rm -f "$R/out/plain/disk-c.qcow2" "$R/out/plain/disk.raw"
rm -rf "$R/plain-tree"

# ---------------------------------------------------------------- mkosi
for i in $(seq "$MKOSI_COLD_RUNS"); do
  mkosi_setup
  measure "mkosi-cold-$i" "${MKOSI[@]}" -i -f build
done
for i in $(seq "$RUNS"); do
  echo "bench change $i" >>"$MK/mkosi.extra/etc/bench-stamp"
  measure "mkosi-top-$i" "${MKOSI[@]}" -i -f build
done
for i in $(seq "$RUNS"); do
  measure "mkosi-noop-$i" "${MKOSI[@]}" -i -f build
done
# Without --force mkosi does not rebuild at all: it refuses (the output exists).
if "${MKOSI[@]}" -i build >"$R/logs/mkosi-noforce.log" 2>&1; then
  setv mkosi_noforce "exits 0 without building: \"$(grep -m1 -o 'Output path.*' "$R/logs/mkosi-noforce.log" | sed 's/[[:space:]]*$//' || true)\""
else
  setv mkosi_noforce "refuses: \"$(grep -m1 -o 'Output path.*' "$R/logs/mkosi-noforce.log" | sed 's/[[:space:]]*$//' || echo "see the log")\""
fi
MK_RAW=$MK/mkosi.output/image.raw
[ -f "$MK_RAW" ] || MK_RAW=$(ls "$MK"/mkosi.output/image*.raw | head -n 1)
setv MKOSI_RAW_ALLOC "$(alloc "$MK_RAW")"
setv MKOSI_RAW_APPARENT "$(size "$MK_RAW")"
qemu-img convert -f raw -O qcow2 "$MK_RAW" "$R/out/mkosi.qcow2"
qemu-img convert -f raw -O qcow2 -c "$MK_RAW" "$R/out/mkosi-c.qcow2"
setv MKOSI_QCOW2 "$(size "$R/out/mkosi.qcow2")"
setv MKOSI_QCOW2C "$(size "$R/out/mkosi-c.qcow2")"
rm -f "$R/out/mkosi-c.qcow2"

# ---------------------------------------------------------------- boots
# Boots use qcow2 overlays or QEMU snapshots, never the images themselves.
boot() { # boot NAME ARGS... → logs/NAME.json
  log "boot $1"
  local name=$1; shift
  cut -d' ' -f1 /proc/loadavg >"$R/logs/$name.load"
  python3 "$repo/bench/boot.py" --timeout "$BOOT_TIMEOUT" --console "$R/logs/$name.console" "$@" \
    >"$R/logs/$name.json" 2>"$R/logs/$name.err" || log "warning: boot $name: $(cat "$R/logs/$name.json")"
}
OURS_MARKERS=(--marker 'agent=ecs-firstboot: (ok|standby|failed) .*[0-9]+ms'
  --marker 'failed=ecs-firstboot: failed|appliance: failed|Failed to start'
  --marker 'ready=appliance: ready' --until ready)
for fw in $FIRMWARE; do
  for i in $(seq "$BOOT_RUNS"); do
    ov=$R/out/ours-$fw-$i.qcow2
    qemu-img create -q -f qcow2 -b "$R/out/repro-a/ecs.qcow2" -F qcow2 "$ov" 8G
    boot "ours-first-$fw-$i" --firmware "$fw" --disk "$ov:qcow2" --cdrom "$R/out/repro-a/ecs.seed.iso" "${OURS_MARKERS[@]}"
    boot "ours-noop-$fw-$i" --firmware "$fw" --disk "$ov:qcow2" --cdrom "$R/out/repro-a/ecs.seed.iso" "${OURS_MARKERS[@]}"
    rm -f "$ov"
    boot "mkosi-$fw-$i" --firmware "$fw" --disk "$MK_RAW:raw" --snapshot --marker 'marker=MKOSI-BOOTED [0-9.]+'
    boot "plain-$fw-$i" --firmware "$fw" --disk "$R/out/plain/disk.qcow2:qcow2" --snapshot --marker 'marker=PLAIN-BOOTED [0-9.]+'
    for k in first noop; do
      l=$(cat "$R/logs/ours-$k-$fw-$i.load")
      printf 'boot-ours-%s-agent-%s-%s\t%s\t0\t%s\n' "$k" "$fw" "$i" "$(jget "$R/logs/ours-$k-$fw-$i.json" agent)" "$l" >>"$RES"
      printf 'boot-ours-%s-ready-%s-%s\t%s\t0\t%s\n' "$k" "$fw" "$i" "$(jget "$R/logs/ours-$k-$fw-$i.json" ready)" "$l" >>"$RES"
      printf 'agent-ours-%s-%s-%s\t%s\t0\t%s\n' "$k" "$fw" "$i" "$(agent_ms "$R/logs/ours-$k-$fw-$i.json" || echo fail)" "$l" >>"$RES"
      printf 'agentcpu-ours-%s-%s-%s\t%s\t0\t%s\n' "$k" "$fw" "$i" "$(agent_cpu_ms "$R/logs/ours-$k-$fw-$i.json" || echo fail)" "$l" >>"$RES"
    done
    printf 'boot-mkosi-%s-%s\t%s\t0\t%s\n' "$fw" "$i" "$(jget "$R/logs/mkosi-$fw-$i.json" marker)" "$(cat "$R/logs/mkosi-$fw-$i.load")" >>"$RES"
    printf 'boot-plain-%s-%s\t%s\t0\t%s\n' "$fw" "$i" "$(jget "$R/logs/plain-$fw-$i.json" marker)" "$(cat "$R/logs/plain-$fw-$i.load")" >>"$RES"
  done
done

setv debs_after "$(ndebs "$APT") $(ndebs "$MKOSI_PKG/cache/apt/archives")"
setv finished "$(date -u +%s)"
setv load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
fi # REPORT_ONLY

# ---------------------------------------------------------------- report
# shellcheck disable=SC1090
. "$VARS"
# A run that was cut short still gets a report, marked as such.
for v in OURS_RAW_ALLOC OURS_RAW_APPARENT OURS_QCOW2 OURS_QCOW2C PLAIN_RAW_ALLOC PLAIN_QCOW2 \
  PLAIN_QCOW2C MKOSI_RAW_ALLOC MKOSI_RAW_APPARENT MKOSI_QCOW2 MKOSI_QCOW2C repro_rows repro_all \
  cold_repro cold_sums mkosi_noforce debs_after load_end load_start others_start warm_note debs_before; do
  [ -n "${!v:-}" ] || printf -v "$v" '%s' "n/a"
done
# Which layer trees differed between the cold builds (logs/imgbuild-cold-N.layers).
cold_layers="which layer trees differed was not recorded in this run"
nl=$(find "$R/logs" -name 'imgbuild-cold-*.layers' | wc -l)
if [ "$nl" -gt 1 ]; then
  cmp_layers=$(awk -v files="$nl" '{ n[$1]++; h[$1 " " $2] = 1 }
    END { for (k in h) { split(k, a, " "); d[a[1]]++ }
          for (x in n) print x, ((d[x] == 1 && n[x] == files) ? "same" : "diff") }' \
    "$R"/logs/imgbuild-cold-*.layers | sort)
  same=$(awk '$2 == "same" { printf "%s`%s`", s, $1; s = ", " }' <<<"$cmp_layers")
  differ=$(awk '$2 == "diff" { printf "%s`%s`", s, $1; s = ", " }' <<<"$cmp_layers")
  cold_layers="layer trees (the uncompressed cache entries) the same in all $nl cold builds: ${same:-none}; different: ${differ:-none}"
fi
incomplete=""
regen=""
if [ "$REPORT_ONLY" = 1 ]; then
  regen="(Report rewritten on $(date -u '+%Y-%m-%d %H:%M UTC') with \`REPORT_ONLY=1\` from the results of the run below; no figure changed.) "
fi
if [ -z "${finished:-}" ]; then
  finished=$(stat -c %Y "$RES")
  incomplete="**This run was cut short**: figures marked n/a were not measured. "
fi
# Failed boots count as "fail" and are left out of the medians (and said so).
bmed() { vals "$1" | grep -v fail | median; }
bfails() { local n; n=$(vals "$1" | grep -c fail || true); [ "$n" = 0 ] && echo "" || echo " ($n of $BOOT_RUNS failed or timed out)"; }

ic=$(med imgbuild-cold); it=$(med imgbuild-top); in=$(med imgbuild-noop)
itt=$(med imgbuild-top-treestage); int=$(med imgbuild-noop-treestage)
# The cold build's tree stage, from its log (imgbuild prints "root tree ready in Xs").
ict=$(for f in "$R"/logs/imgbuild-cold-[0-9]*.log; do tree_secs "$f"; done | median)
itn=$(med imgbuild-tree-noop); ia=$(med imgbuild-assembly); ir=$(med imgbuild-reassemble)
pc=$(med plain-cold); ptr=$(med plain-tree); pd=$(med plain-disk); prd=$(med plain-redisk)
mc=$(med mkosi-cold); mt=$(med mkosi-top); mn=$(med mkosi-noop)
irss=$(maxv imgbuild-cold 3); irss_noop=$(maxv imgbuild-noop 3); prss=$(maxv plain-cold 3); mrss=$(maxv mkosi-cold 3)
# yn EXPR: "met" when the awk expression holds; "not measured" when a figure is missing (-1).
yn() {
  case "$1" in *-1*|*n/a*) echo "**not measured**"; return ;; esac
  if awk "BEGIN { exit !($1) }"; then echo "**met**"; else echo "**MISSED**"; fi
}
num() { [ "$1" != n/a ] && [ -n "$1" ] && echo "$1" || echo -1; }

{
cat <<EOF
## imgbuild beside mkosi 24.3 and the plain pipeline (\`bench/run.sh\`)

${incomplete}${regen}Written by \`bench/run.sh\` — one run, on one machine; every figure below
comes from that run. Medians of N runs (N per row); all runs are listed at
the end. The machine is shared and noisy: compare ratios within this file,
not absolute times across machines.

| | |
| --- | --- |
| date | $(date -u -d "@$started" '+%Y-%m-%d %H:%M UTC') (the run took $(( (finished - started) / 60 )) min) |
| load | load average $load_start at the start, $load_end at the end; $others_start QEMU processes of other work running at the start |
| commit | \`$commit\`$dirty |
| machine | $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME") |
| tools | imgbuild $("$IMGBUILD" --version | awk '{ print $2 }') (release build), $(mkosi --version), mmdebstrap $(mmdebstrap --version | awk '{ print $2 }'), $(mkfs.ext4 -V 2>&1 | head -n 1 | awk '{ print "e2fsprogs", $2 }'), $(qemu-system-x86_64 --version | head -n 1 | sed 's/ (.*//') |
| command | \`sudo RUNS=$RUNS COLD_RUNS=$COLD_RUNS MKOSI_COLD_RUNS=$MKOSI_COLD_RUNS PLAIN_COLD_RUNS=$PLAIN_COLD_RUNS BOOT_RUNS=$BOOT_RUNS FIRMWARE="$FIRMWARE" WARMUP=$WARMUP bench/run.sh\` |
| image | Debian $SUITE from $MIRROR; packages: $(tr ',' ' ' <<<"$PACKAGES") (the union of \`layers/*/layer.yml\`); mkosi's list: $pkg_note (minus initramfs-tools, plus systemd-boot) |
| SOURCE_DATE_EPOCH | $SOURCE_DATE_EPOCH (the commit's time), for every build |
| kernel arguments | \`$CMDLINE\` added for all three (the i8042 probe hangs under TCG: docs/testing.md) |

### Build

Cold: imgbuild with an empty \`--cache-dir\` but a warm apt package cache
(\`--apt-cache\`; $warm_note); mkosi with its
incremental cache and output wiped but a warm package cache; the plain
pipeline from nothing but the same warm package cache. Package downloads
are measured for no one (package index files are fetched by the imgbuild and
plain cold builds; mkosi keeps its indexes in its package cache): .deb files in the shared cache and in mkosi's before
the measured builds: $debs_before; after: $debs_after (equal: nothing was
downloaded while measuring). imgbuild and mkosi commands are full builds to the
final image; times are wall clock from \`/usr/bin/time\`.

| | imgbuild | mkosi 24.3 | plain pipeline |
| --- | --- | --- | --- |
| cold build (N=$COLD_RUNS / $MKOSI_COLD_RUNS / $PLAIN_COLD_RUNS) | $(fmt1 "$ic") s (tree stage $(fmt1 "$ict") s) | $(fmt1 "$mc") s | $(fmt1 "$pc") s (mmdebstrap $(fmt1 "$ptr") s + disk $(fmt1 "$pd") s) |
| rebuild after one file changed in the top layer (N=$RUNS) | $(fmt1 "$it") s ($(pct "$it" "$ic") of cold; tree stage $(fmt1 "$itt") s) | $(fmt1 "$mt") s ($(pct "$mt" "$mc") of cold; \`mkosi -i -f build\`) | $(fmt1 "$prd") s (disk steps only, on a kept tree; without one, a full cold build) |
| rebuild with nothing changed (N=$RUNS) | $(fmt1 "$in") s (the assembled-image cache's hit; with \`--no-image-cache\` $(fmt1 "$ir") s, tree stage $(fmt1 "$int") s) | $(fmt1 "$mn") s (forced; without \`-f\` mkosi $mkosi_noforce) | $(fmt1 "$prd") s (it cannot tell that nothing changed: same as above) |
| tree stage alone, nothing changed (\`imgbuild tree\`, N=$RUNS) | $(fmt1 "$itn") s | | |
| assembly from a cached tree to qcow2 (N=$RUNS) | $(fmt1 "$ia") s (a no-op build with \`--no-image-cache\` minus its tree stage, from imgbuild's log) | | $(fmt1 "$pd") s (\`mkfs.ext4 -d\` + \`sgdisk\` + \`dd\` + \`qemu-img\`, GRUB images) |
| peak RSS of the builder, cold (largest process, max over runs) | $(( irss / 1024 )) MiB (no-op: $(( irss_noop / 1024 )) MiB) | $(( mrss / 1024 )) MiB | $(( prss / 1024 )) MiB |

Ratios: imgbuild cold / mkosi cold = $(ratio "$ic" "$mc"); imgbuild cold / plain
cold = $(ratio "$ic" "$pc"); imgbuild top-layer rebuild / mkosi incremental rebuild = $(ratio "$it" "$mt");
imgbuild no-op / mkosi forced no-op = $(ratio "$in" "$mn"); imgbuild assembly / plain disk
steps = $(ratio "$ia" "$pd").

The top layer is \`$TOP_NAME\`; the changed file is \`$VICTIM_REL\` (a
comment appended per run). mkosi's changed file is \`mkosi.extra/etc/bench-stamp\`,
the plain pipeline's \`/etc/bench-stamp\` in its kept tree.

### Image size

| | imgbuild | mkosi 24.3 | plain pipeline |
| --- | --- | --- | --- |
| raw, allocated (\`du\`) | $(mib "$OURS_RAW_ALLOC") (apparent $(mib "$OURS_RAW_APPARENT")) | $(mib "$MKOSI_RAW_ALLOC") (apparent $(mib "$MKOSI_RAW_APPARENT")) | $(mib "$PLAIN_RAW_ALLOC") |
| qcow2 | $(mib "$OURS_QCOW2") | $(mib "$MKOSI_QCOW2") | $(mib "$PLAIN_QCOW2") |
| compressed qcow2 (zlib, \`qemu-img convert -c\` / \`imgbuild --compress\`) | $(mib "$OURS_QCOW2C") | $(mib "$MKOSI_QCOW2C") | $(mib "$PLAIN_QCOW2C") |

mkosi writes raw only; its qcow2 files are \`qemu-img convert\` of its
\`image.raw\`, with the same options for the compressed one.

### Boot under QEMU (TCG, 1 vCPU, 1 GiB, q35)

Wall time from QEMU's start to a line on the serial console (N=$BOOT_RUNS per
row). imgbuild's image boots with its seed ISO and \`examples/env.yml\`
(storage.ignore: no mkfs), on a qcow2 overlay enlarged to 8 GiB so the first
boot grows the root; the second boot is the same disk again. Its hand-off is
the agent's \`ecs-firstboot: ok ...\` summary; "ready" is
\`appliance: ready\`, after PostgreSQL (its cluster, made at build time, moved to \`/data\` on first boot) and
nginx. mkosi's and the plain image's marker prints once nginx and PostgreSQL
are up (their cluster was made at build time).

EOF
for fw in $FIRMWARE; do
cat <<EOF
| $fw | to hand-off (agent done) | to ready / marker |
| --- | --- | --- |
| imgbuild, first boot | $(fmt1 "$(bmed boot-ours-first-agent-$fw)") s$(bfails boot-ours-first-agent-$fw) | $(fmt1 "$(bmed boot-ours-first-ready-$fw)") s$(bfails boot-ours-first-ready-$fw) |
| imgbuild, second boot (no-op) | $(fmt1 "$(bmed boot-ours-noop-agent-$fw)") s$(bfails boot-ours-noop-agent-$fw) | $(fmt1 "$(bmed boot-ours-noop-ready-$fw)") s$(bfails boot-ours-noop-ready-$fw) |
| mkosi 24.3 (\`MKOSI-BOOTED\`) | | $(fmt1 "$(bmed boot-mkosi-$fw)") s$(bfails boot-mkosi-$fw) |
| plain pipeline (\`PLAIN-BOOTED\`) | | $(fmt1 "$(bmed boot-plain-$fw)") s$(bfails boot-plain-$fw) |

EOF
done
cat <<EOF
### The first-boot agent

As the agent logs it in the QEMU journal (the summary line ends with
\`cpu=\` — the CPU time of the agent and the tools it ran — and its own wall
time), under TCG emulation here: every instruction is translated, and the
agent shares the guest's CPUs with the rest of the boot. Beside it, the
~4.7 s for cloud-init that the project's issues cite (cloud-init's own
published figure, on real or KVM-accelerated machines; not measured here,
so the comparison favours cloud-init).

| | ecs-firstboot wall | ecs-firstboot CPU | cloud-init (published) |
| --- | --- | --- | --- |
EOF
for fw in $FIRMWARE; do
cat <<EOF
| first boot ($fw, N=$BOOT_RUNS) | $(bmed agent-ours-first-$fw) ms$(bfails agent-ours-first-$fw) | $(bmed agentcpu-ours-first-$fw) ms | ~4.7 s |
| no-op boot ($fw, N=$BOOT_RUNS) | $(bmed agent-ours-noop-$fw) ms$(bfails agent-ours-noop-$fw) | $(bmed agentcpu-ours-noop-$fw) ms | |
EOF
done
cat <<EOF

Summary lines: $(for f in "$R"/logs/ours-*.json; do l=$(jline "$f" agent); [ -n "$l" ] && printf '`%s` (%s); ' "$l" "$(basename "$f" .json)"; done)

### Reproducibility

Two builds with the same inputs and SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
into two directories (\`-o A/ecs.raw\`, \`-o A/ecs.qcow2\`, then the same
into B; every layer from the cache). \`ecs.raw.seed.iso\` is the seed of the
raw build.

| file | A | B | |
| --- | --- | --- | --- |
$repro_rows
All identical: **$repro_all**. Cold builds (each from an empty layer
cache) compared with each other: $cold_repro ($cold_sums); $cold_layers.

### Targets

| target | figure | |
| --- | --- | --- |
| top-layer rebuild ≤ 15% of cold: whole build (tree + assembly) | $(pct "$it" "$ic") ($(fmt1 "$it") s of $(fmt1 "$ic") s) | $(yn "$(num "$it") >= 0 && $(num "$it") <= 0.15 * $(num "$ic")") |
| top-layer rebuild ≤ 15% of cold: tree stage only | $(pct "$itt" "$ict") ($(fmt1 "$itt") s of $(fmt1 "$ict") s) | $(yn "$(num "$itt") >= 0 && $(num "$itt") <= 0.15 * $(num "$ict")") |
| top-layer rebuild faster than mkosi's incremental rebuild | $(fmt1 "$it") s vs $(fmt1 "$mt") s | $(yn "$(num "$it") >= 0 && $(num "$it") < $(num "$mt")") |
| no-op rebuild < 10 s (whole build) | $(fmt1 "$in") s the whole build; $(fmt1 "$itn") s \`imgbuild tree\`; $(fmt1 "$ir") s with \`--no-image-cache\` | $(yn "$(num "$in") >= 0 && $(num "$in") < 10") |
| assembly from a cached tree < 30 s | $(fmt1 "$ia") s | $(yn "$(num "$ia") >= 0 && $(num "$ia") < 30") |
| qcow2 no bigger than mkosi's | $(mib "$OURS_QCOW2") vs $(mib "$MKOSI_QCOW2") | $(yn "$OURS_QCOW2 <= $MKOSI_QCOW2") |
| bit-identical outputs | $repro_all | $(yn "\"$repro_all\" == \"yes\"") |
EOF
for fw in $FIRMWARE; do
cat <<EOF
| agent first boot < 1 s ($fw) | $(bmed agent-ours-first-$fw) ms | $(yn "$(num "$(bmed agent-ours-first-$fw)") >= 0 && $(num "$(bmed agent-ours-first-$fw)") < 1000") |
| agent no-op boot < 100 ms ($fw) | $(bmed agent-ours-noop-$fw) ms | $(yn "$(num "$(bmed agent-ours-noop-$fw)") >= 0 && $(num "$(bmed agent-ours-noop-$fw)") < 100") |
EOF
done
cat <<EOF

### What the plain pipeline lacks

\`bench/plain-pipeline.sh\` makes the same disk shape (GPT: BIOS boot
partition with GRUB's core.img, FAT32 ESP with GRUB's BOOTX64.EFI, ext4 root
last; GRUB from the tree's own grub-mkimage, boot.img patched with \`dd\`),
but has no cache (any change means a new mmdebstrap unless one keeps and
edits the tree by hand), no first-boot agent, no appliance units, no seed,
fixed rather than input-derived UUIDs, and no manifest or checksums.

### All runs

| measurement | runs (s) | 1-min load average when each run started |
| --- | --- | --- |
EOF
awk -F'\t' '{ n = $1; sub(/-[0-9]+$/, "", n); if (!(n in v)) o[++k] = n; v[n] = v[n] " " $2; l[n] = l[n] " " ($4 == "" ? "–" : $4) } END { for (i = 1; i <= k; i++) printf "| %s |%s |%s |\n", o[i], v[o[i]], l[o[i]] }' "$RES"
cat <<EOF

Peak RSS (KiB) per run: $(awk -F'\t' '$3 > 0 { printf "%s %s; ", $1, $3 }' "$RES")
EOF
if [ -n "${BENCH_NOTES:-}" ]; then
  printf '\n### Notes by whoever ran it\n\n'
  cat "$BENCH_NOTES"
fi
} >"$R/report.md"

# BENCH_OUT holds other scripts' sections too (bench/tree.sh, bench/disk.sh):
# replace only this script's section, between its markers, or append it.
python3 - "$BENCH_OUT" "$R/report.md" <<'PYEOF2'
import os, sys
out, new = sys.argv[1], open(sys.argv[2]).read()
begin, end = "<!-- bench/run.sh: begin -->\n", "<!-- bench/run.sh: end -->\n"
block = begin + new + end
old = open(out).read() if os.path.exists(out) else "# Benchmarks\n\nEach section is printed by the script it names; rerun the script to refresh it.\n"
if begin in old and end in old:
    a = old.index(begin)
    b = old.index(end) + len(end)
    text = old[:a] + block + old[b:]
else:
    text = old.rstrip("\n") + "\n\n" + block
open(out + ".tmp", "w").write(text)
os.replace(out + ".tmp", out)
PYEOF2

log "wrote $BENCH_OUT (work files in $R)"
