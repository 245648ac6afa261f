#!/usr/bin/env bash
# Benchmarks the root tree stage and prints a Markdown section for
# BENCHMARKS.md on stdout (progress on stderr).
#
#   bench/tree.sh [--distro debian] [--runs N] [--skip-warm]
#
# --skip-warm: trust that the apt package cache ($IMGBUILD_BENCH_APT_CACHE,
# default /var/tmp/imgbuild-bench-apt) already holds every package of the
# stack, instead of running a full build first to fill it.
#
# Measures, on this machine, in one run:
#   1. a cold build of the default stack (layers/) into an empty layer cache;
#   2. plain mmdebstrap installing the same package set (every package the
#      cold build's tree ends up with) in one go;
#   3. the rebuild after changing one file in the top layer's files/ (median);
#   4. the rebuild with nothing changed (median): `imgbuild tree` (checks the
#      cache, extracts nothing) and `imgbuild tree --extract` (extracts the
#      final tree in memory and lists its packages, as the main build does).
# Both 1 and 2 take packages from the same warm apt package cache, so neither
# pays for downloads. Needs root, like imgbuild.
set -euo pipefail

distro=debian
runs=3
warm=1
while [ $# -gt 0 ]; do
  case "$1" in
    --distro) distro=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --skip-warm) warm=0; shift ;;
    *) echo "usage: $0 [--distro debian|ubuntu] [--runs N]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p imgbuild -p ecs-firstboot
imgbuild=$here/target/release/imgbuild

work=$(mktemp -d /var/tmp/imgbuild-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
apt_cache=${IMGBUILD_BENCH_APT_CACHE:-/var/tmp/imgbuild-bench-apt}
mkdir -p "$apt_cache/partial"
cp -a layers "$work/layers"
stack=(--layers-dir "$work/layers" --apt-cache "$apt_cache" --distro "$distro")
common=("${stack[@]}" --cache-dir "$work/cache")

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
log() { echo "bench: $*" >&2; }

# Warm the apt package cache (not measured), so downloads count for no one.
if [ "$warm" = 1 ]; then
  log "warming the apt package cache"
  "$imgbuild" tree "${stack[@]}" --cache-dir "$work/warm" -q >/dev/null
  rm -rf "$work/warm"
fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "cold build"
t0=$(now)
"$imgbuild" tree "${common[@]}" --extract >"$work/keys" 2>"$work/cold.log"
cold=$(secs "$t0" "$(now)")
log "cold build: $cold s"
# The final tree, in memory, for its size and package list.
mkdir -p "$work/mem"
mount -t tmpfs -o mode=0755 tmpfs "$work/mem"
trap 'umount "$work/mem" "$work/plain" 2>/dev/null; rm -rf "$work"' EXIT
"$imgbuild" tree "${common[@]}" -q -o "$work/mem/tree" >/dev/null
tree_size=$(du -sh "$work/mem/tree" | cut -f1)
pkgs=$(dpkg-query --admindir="$work/mem/tree/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | paste -sd, -)
npkgs=$(tr ',' '\n' <<<"$pkgs" | wc -l)
suite=$(grep -o 'mmdebstrap [a-z]* [a-z]*' "$work/cold.log" | head -1 | awk '{ print $3 }')
umount "$work/mem"

top=$(ls -d "$work"/layers/[0-9][0-9]-*/ | sort | tail -1)
top_name=$(basename "$top")
victim=$(find "$top/files" -type f 2>/dev/null | sort | head -1 || true)
if [ -z "$victim" ]; then
  mkdir -p "$top/files/etc"
  victim=$top/files/etc/imgbuild-bench
  echo start >"$victim"
  "$imgbuild" tree "${common[@]}" -q >/dev/null
fi
log "top layer ($top_name) rebuilds after changing ${victim#"$top"}"
: >"$work/top"
for i in $(seq "$runs"); do
  echo "# bench change $i $$" >>"$victim"
  t0=$(now)
  "$imgbuild" tree "${common[@]}" -q >/dev/null
  secs "$t0" "$(now)" >>"$work/top"
done
top_median=$(median <"$work/top")
log "top layer: $(paste -sd' ' "$work/top")"

log "no-op rebuilds"
: >"$work/noop"
: >"$work/noop-extract"
for i in $(seq $((runs + 2))); do
  t0=$(now)
  "$imgbuild" tree "${common[@]}" -q >/dev/null
  secs "$t0" "$(now)" >>"$work/noop"
  t0=$(now)
  "$imgbuild" tree "${common[@]}" -q --extract >/dev/null
  secs "$t0" "$(now)" >>"$work/noop-extract"
done
noop_median=$(median <"$work/noop")
noop_extract_median=$(median <"$work/noop-extract")
log "no-op: $(paste -sd' ' "$work/noop"); with extraction: $(paste -sd' ' "$work/noop-extract")"

log "plain mmdebstrap with the same $npkgs packages"
case "$distro" in
  debian) mirror=http://deb.debian.org/debian; keyring=() ;;
  ubuntu) mirror=http://archive.ubuntu.com/ubuntu; keyring=(--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg) ;;
esac
export IMGBUILD_APT_ARCHIVES=$apt_cache
# In memory, as imgbuild builds its trees.
mkdir -p "$work/plain"
mount -t tmpfs -o mode=0755 tmpfs "$work/plain"
t0=$(now)
mmdebstrap --mode=root --format=directory --variant=minbase "${keyring[@]}" \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives/partial"; find "$IMGBUILD_APT_ARCHIVES" -maxdepth 1 -name "*.deb" -exec cp -t "$1/var/cache/apt/archives" {} +' \
  --include="$pkgs" "$suite" "$work/plain" "$mirror" 2>"$work/plain.log" \
  || { tail -30 "$work/plain.log" >&2; exit 1; }
plain=$(secs "$t0" "$(now)")
log "plain mmdebstrap: $plain s"
umount "$work/plain"
pct=$(awk -v a="$top_median" -v b="$cold" 'BEGIN { printf "%.0f", 100 * a / b }')

cat <<EOF
## Root tree stage

\`bench/tree.sh --distro $distro --runs $runs\` on $(nproc) cores, $(date -u +%Y-%m-%d), imgbuild $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown) (release build).
Default stack (\`layers/\`: $(ls -d layers/[0-9][0-9]-*/ | xargs -n1 basename | paste -sd' ' -)) for $distro $suite; final tree $tree_size, $npkgs packages.
Packages come from a warm apt cache in both cold runs (downloads not counted).
Load average at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: compare figures of one run only).

| what | time |
| --- | --- |
| cold build, all layers, empty layer cache (\`imgbuild tree --extract\`) | ${cold} s |
| plain \`mmdebstrap --variant=minbase --include=<the same $npkgs packages>\` (into a tmpfs, as imgbuild builds) | ${plain} s |
| rebuild after changing one file in the top layer ($top_name), median of $runs | ${top_median} s (${pct}% of cold) |
| no-op rebuild, layers checked, nothing extracted (\`imgbuild tree\`), median of $((runs + 2)) | ${noop_median} s |
| no-op rebuild, final tree extracted in memory and packages listed, as the main build does (\`imgbuild tree --extract\`), median of $((runs + 2)) | ${noop_extract_median} s |

Top-layer runs: $(paste -sd' ' "$work/top"); no-op runs: $(paste -sd' ' "$work/noop"); no-op with extraction: $(paste -sd' ' "$work/noop-extract").
EOF
