#!/usr/bin/env bash
# Rebuilds while the archive moves: cold builds of the default image beside
# rebuilds after only the security pocket moved, medians of RUNS measured in
# one run, written to BENCHMARKS.md between its "bench/pockets.sh" markers.
#
#   sudo bash bench/pockets.sh            # medians of 3
#   sudo RUNS=5 bash bench/pockets.sh
#
# The moving pocket is a local one (scripts/local-pocket.sh, signed by its own
# test key) standing in for SUITE-security: `--security-mirror file://DIR
# --keyring DIR/pocket.gpg`. Release and -updates come from the real archive
# (on Ubuntu, -updates carries the security fixes too). An extra layer
# installs the pocket's package, so each move upgrades one installed package,
# as a typical security upload does. Every build is the whole default
# recipe plus that layer, to a qcow2, with a warm package cache.
#
# Settings (environment): RUNS (default 3), DISTRO (ubuntu or debian; default
# ubuntu), BENCH_DIR (default /var/tmp/imgbuild-bench-pockets), BENCH_OUT
# (default BENCHMARKS.md at the repository root).
set -euo pipefail
RUNS=${RUNS:-3}
DISTRO=${DISTRO:-ubuntu}
case "$DISTRO" in
  ubuntu) SUITE=noble ;;
  debian) SUITE=bookworm ;;
  *) echo "bench/pockets.sh: DISTRO must be ubuntu or debian" >&2; exit 2 ;;
esac
W=${BENCH_DIR:-/var/tmp/imgbuild-bench-pockets}
repo=$(cd "$(dirname "$0")/.." && pwd)
BENCH_OUT=${BENCH_OUT:-$repo/BENCHMARKS.md}
. "$repo/bench/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root: building root trees and images needs it"
cd "$repo"
bash scripts/install-host-deps.sh >&2
cargo build --release --locked -q -p imgbuild -p ecs-firstboot
IMGBUILD=$repo/target/release/imgbuild

rm -rf "$W/run" && mkdir -p "$W/run/logs" "$W/run/out" "$W/apt-archives/partial"
R=$W/run
POCKET=$R/pocket
bash scripts/local-pocket.sh "$POCKET" "$SUITE-security" 1 >&2
mkdir -p "$R/85-pocket"
echo "packages: [imgbuild-pocket-test]" >"$R/85-pocket/layer.yml"
IMG=("$IMGBUILD" --env examples/env.yml --distro "$DISTRO" --layers-dir layers --layer "$R/85-pocket"
  --apt-cache "$W/apt-archives" --security-mirror "file://$POCKET" --keyring "$POCKET/pocket.gpg"
  --cmdline "i8042.noaux i8042.nopnp" --force -o "$R/out/ecs.qcow2")
export SOURCE_DATE_EPOCH=1700000000

# measure NAME CMD...: wall seconds into $R/NAME.t, output into logs/NAME.log.
measure() {
  local name=$1; shift
  log "run $name"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$R/logs/$name.log" 2>&1 || { tail -n 30 "$R/logs/$name.log" >&2; die "$name failed"; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' >"$R/$name.t"
}
vals() { cat "$R"/"$1"-*.t; }

log "warm-up (unmeasured): fills the package cache"
"${IMG[@]}" --cache-dir "$R/warm-cache" >"$R/logs/warm.log" 2>&1 || { tail -n 30 "$R/logs/warm.log" >&2; die "warm-up failed"; }
rm -rf "$R/warm-cache"

for i in $(seq "$RUNS"); do
  rm -rf "$R/cache"
  measure "cold-$i" "${IMG[@]}" --cache-dir "$R/cache"
done
versions=(1)
for i in $(seq "$RUNS"); do
  versions+=("$((i + 1))")
  bash scripts/local-pocket.sh "$POCKET" "$SUITE-security" "${versions[@]}" >&2
  measure "moved-$i" "${IMG[@]}" --cache-dir "$R/cache"
  l=$R/logs/moved-$i.log
  grep -q "updates: miss .*$SUITE-security moved (Date: " "$l" || die "moved-$i: no 'updates: miss ... moved' in $l"
  misses=$(grep '^ *INFO [0-9a-z+-]*: miss ' "$l" | grep -vc ' image: miss ' || true)
  [ "$misses" = 1 ] || die "moved-$i: $misses layers missed, want the updates step alone ($l)"
  grep -q "1 upgraded" "$l" || die "moved-$i: the move upgraded nothing ($l)"
done

cold=$(vals cold | median)
moved=$(vals moved | median)
ratio=$(awk -v a="$moved" -v b="$cold" 'BEGIN { printf "%.0f%%", 100 * a / b }')
log "cold $cold s, after a pocket moved $moved s: $ratio"
block=$(cat <<EOF
<!-- bench/pockets.sh: begin -->
## Rebuilds while the pockets move (\`bench/pockets.sh\`)

\`RUNS=$RUNS DISTRO=$DISTRO bash bench/pockets.sh\`, commit $(git rev-parse --short=12 HEAD), $(date -u '+%Y-%m-%d %H:%M') UTC, on this
machine ($(nproc) cores, load at the end $(cut -d' ' -f1-3 /proc/loadavg)). The whole default image plus one
layer that installs the test pocket's package, to qcow2, warm package cache.
A "move" adds a newer version of that package to the local
\`$SUITE-security\` pocket (\`scripts/local-pocket.sh\`); the rebuild takes every
recipe layer from the cache, reruns the \`updates\` step alone (checked in
each log: one miss, "\`$SUITE-security moved (Date: …)\`", one package upgraded),
and assembles the disk.

| build | runs (s) | median (s) |
| --- | --- | --- |
| cold (empty layer cache) | $(vals cold | paste -sd' ' -) | $cold |
| after only the security pocket moved | $(vals moved | paste -sd' ' -) | $moved |

Rebuild after a pocket moved / cold build: **$ratio** (target: at most 25 %).
<!-- bench/pockets.sh: end -->
EOF
)
write_section pockets.sh "$block"
