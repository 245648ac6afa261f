#!/usr/bin/env bash
# Benchmarks the disk stage: a ready root tree → bootable qcow2, and
# prints a Markdown section for BENCHMARKS.md on stdout (progress on stderr).
#
#   bench/disk.sh [--tree DIR] [--runs N]
#
# The tree defaults to $IMGBUILD_TEST_TREE, else the tests' cached bookworm
# tree (/var/cache/imgbuild-dev/bookworm-boot, made with mmdebstrap when
# missing: kernel, initramfs, systemd, udev, GRUB BIOS+UEFI, e2fsprogs).
#
# Measures, in one run on this machine:
#   1. `imgbuild --tree DIR -o ecs.qcow2` (median of N): wall time, the work
#      tree it prepares (hard links; `--tree` never modifies DIR's files), the
#      assembly after it, and the peak RSS of imgbuild and its children;
#   2. the same steps by hand: mkfs.ext4 -d, sgdisk, dd, qemu-img convert (no
#      GRUB, no ESP contents, no checksums: a lower bound);
#   3. sizes: raw (allocated), qcow2, compressed qcow2 (and its time).
# Needs root, like imgbuild.
set -euo pipefail

tree=${IMGBUILD_TEST_TREE:-/var/cache/imgbuild-dev/bookworm-boot}
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--tree DIR] [--runs N]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
log() { echo "bench: $*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%d", b / 1048576 }'; }

if [ ! -e "$tree/vmlinuz" ]; then
  log "no tree at $tree: making it with mmdebstrap"
  mkdir -p "$(dirname "$tree")"
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --variant=minbase \
    --include=linux-image-amd64,systemd-sysv,udev,grub-pc-bin,grub-efi-amd64-bin,e2fsprogs,initramfs-tools \
    bookworm "$tree.tmp" http://deb.debian.org/debian >&2
  mv "$tree.tmp" "$tree"
fi

cargo build --release -q -p imgbuild
imgbuild=$here/target/release/imgbuild
work=$(mktemp -d /var/tmp/imgbuild-bench-disk.XXXXXX)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=1700000000
env_yml=$here/examples/env.yml

# 1. imgbuild, N times.
walls=() copies=() rss=()
for i in $(seq "$runs"); do
  log "imgbuild run $i/$runs"
  rm -rf "$work/out" && mkdir "$work/out"
  sync
  /usr/bin/time -f '%e %M' -o "$work/time" \
    "$imgbuild" --env "$env_yml" --tree "$tree" -o "$work/out/ecs.qcow2" 2>"$work/log"
  read -r wall kb <"$work/time"
  copy=$(sed -n 's/.*root tree ready in \([0-9.]*\)s.*/\1/p' "$work/log")
  walls+=("$wall") copies+=("$copy") rss+=("$kb")
done
cat "$work/log" >&2
wall=$(printf '%s\n' "${walls[@]}" | median)
copy=$(printf '%s\n' "${copies[@]}" | median)
peak=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
assembly=$(awk -v a="$wall" -v b="$copy" 'BEGIN { printf "%.1f", a - b }')
qcow2_size=$(stat -c %s "$work/out/ecs.qcow2")
virtual=$(sed -n 's/.*"virtual_size": \([0-9]*\).*/\1/p' "$work/out/ecs.manifest.json" | head -1)

# 2. By hand, same sizes as imgbuild's disk.
log "by hand"
rm -rf "$work/hand" && mkdir "$work/hand"
t0=$(now)
cp -a "$tree" "$work/hand/tree"
t1=$(now)
root_size=$((virtual - 67 * 1048576))
truncate -s "$root_size" "$work/hand/root.img"
mkfs.ext4 -q -L root -d "$work/hand/tree" "$work/hand/root.img"
truncate -s "$virtual" "$work/hand/disk.raw"
sgdisk -q -n 1:2048:+1M -t 1:EF02 -n 2:0:+64M -t 2:EF00 -n "3:0:+$((root_size / 1048576))M" -t 3:8304 "$work/hand/disk.raw"
truncate -s 64M "$work/hand/esp.img"
mkfs.fat -F 32 "$work/hand/esp.img" >/dev/null
dd if="$work/hand/esp.img" of="$work/hand/disk.raw" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$work/hand/root.img" of="$work/hand/disk.raw" bs=1M seek=66 conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$work/hand/disk.raw" "$work/hand/disk.qcow2"
t2=$(now)
hand_copy=$(secs "$t0" "$t1")
hand=$(secs "$t1" "$t2")
rm -rf "$work/hand"

# 3. Sizes: raw allocated; compressed qcow2.
log "raw and compressed qcow2"
rm -rf "$work/raw" && mkdir "$work/raw"
"$imgbuild" -q --env "$env_yml" --tree "$tree" -o "$work/raw/ecs.raw"
raw_alloc=$(($(stat -c %b "$work/raw/ecs.raw") * 512))
rm -rf "$work/raw"
rm -rf "$work/cz" && mkdir "$work/cz"
t0=$(now)
"$imgbuild" -q --env "$env_yml" --tree "$tree" --compress -o "$work/cz/ecs.qcow2"
t1=$(now)
cz_time=$(secs "$t0" "$t1")
cz_size=$(stat -c %s "$work/cz/ecs.qcow2")

tree_size=$(du -sm "$tree" | cut -f1)
cat <<EOF
## Disk stage: root tree → qcow2

Measured $(date -u +%Y-%m-%d) on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)),
with \`bench/disk.sh --runs $runs\` (tree: $tree, ${tree_size} MiB, $(find "$tree" | wc -l) entries).

| step | time |
| --- | --- |
| \`imgbuild --tree DIR -o ecs.qcow2\`, whole command (median of $runs) | ${wall} s |
| … of which preparing the work tree (a hard-link farm: \`--tree\` never modifies DIR's files) | ${copy} s |
| … assembly: GRUB images, ESP, mkfs.ext4 -d, GPT, boot code, qcow2, SHA256SUMS, seed, manifest | ${assembly} s |
| by hand: \`cp -a\` of the tree | ${hand_copy} s |
| by hand: mkfs.ext4 -d, sgdisk, mkfs.fat, dd ×2, qemu-img convert (no GRUB) | ${hand} s |
| \`--compress\` qcow2, whole command | ${cz_time} s |

| size | MiB |
| --- | --- |
| virtual disk | $(mib "$virtual") |
| raw image, allocated | $(mib "$raw_alloc") |
| qcow2 | $(mib "$qcow2_size") |
| compressed qcow2 | $(mib "$cz_size") |

Peak RSS of imgbuild (and of any one of the tools it runs): $((peak / 1024)) MiB.
The machine is shared: with a load average above 2 on 2 cores, every time above is inflated.
EOF
