#!/usr/bin/env bash
# The operator's tools and the SBOM, medians of RUNS measured in one run,
# written to BENCHMARKS.md between its "bench/tools.sh" markers:
#   - `imgbuild env new`, `env package`, `env unpack` (of the package's PDF);
#   - no-op rebuilds of the default image (image cache hit), the whole
#     build and its "SBOM: N packages in Xs" step, and their ratio.
#
#   sudo bash bench/tools.sh              # medians of 5
#   sudo RUNS=9 bash bench/tools.sh
#
# Settings (environment): RUNS (default 5), BENCH_DIR (default
# /var/tmp/imgbuild-bench-tools), IMGBUILD_CACHE_DIR (the layer cache, default
# ~/.cache/imgbuild), BENCH_OUT (default BENCHMARKS.md at the repository root).
set -euo pipefail
RUNS=${RUNS:-5}
W=${BENCH_DIR:-/var/tmp/imgbuild-bench-tools}
repo=$(cd "$(dirname "$0")/.." && pwd)
BENCH_OUT=${BENCH_OUT:-$repo/BENCHMARKS.md}
CACHE=${IMGBUILD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild}
. "$repo/bench/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root: building images needs it"
cd "$repo"
bash scripts/install-host-deps.sh >&2
cargo build --release --locked -q -p imgbuild -p ecs-firstboot
IMGBUILD=$repo/target/release/imgbuild
rm -rf "$W" && mkdir -p "$W/logs"
R=$W

# measure NAME CMD...: wall seconds into $R/NAME.t, output into logs/NAME.log.
measure() {
  local name=$1; shift
  log "run $name"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$R/logs/$name.log" 2>&1 || { tail -n 30 "$R/logs/$name.log" >&2; die "$name failed"; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$R/$name.t"
}
vals() { cat "$R"/"$1"-*.t; }
step() { grep -o "$2 in [0-9.]*s" "$1" | tail -n 1 | grep -o '[0-9.]*s$' | tr -d s; }

printf 'bench-passphrase\n' >"$R/pass"
for i in $(seq "$RUNS"); do
  measure "new-$i" "$IMGBUILD" env new ecs.example.org -o "$R/new-$i"
  measure "package-$i" "$IMGBUILD" env package "$R/new-1/env.yml" --passphrase-file "$R/pass" -o "$R/pkg-$i"
done
pdf=$(ls "$R"/pkg-1/*.env.pdf)
for i in $(seq "$RUNS"); do
  measure "unpack-$i" "$IMGBUILD" env unpack "$pdf" -o "$R/unpacked-$i.yml"
  cmp -s "$R/unpacked-$i.yml" "$R/new-1/env.yml" || die "unpack-$i: not the packaged env"
done

IMG=("$IMGBUILD" --env examples/env.yml --layers-dir layers --cache-dir "$CACHE" --force -o "$R/ecs.qcow2")
log "warm-up (unmeasured): the image into the image cache"
"${IMG[@]}" >"$R/logs/warm.log" 2>&1 || { tail -n 30 "$R/logs/warm.log" >&2; die "warm-up failed"; }
for i in $(seq "$RUNS"); do
  measure "noop-$i" "${IMG[@]}"
  l=$R/logs/noop-$i.log
  grep -q "image: hit" "$l" || die "noop-$i: no image cache hit ($l)"
  s=$(step "$l" "SBOM: [0-9]* packages")
  [ -n "$s" ] || die "noop-$i: no SBOM step in $l"
  echo "$s" >"$R/sbom-$i.t"
done
pkgs=$(grep -o 'SBOM: [0-9]* packages' "$R/logs/noop-1.log" | tail -n 1 | grep -o '[0-9]*')
noop=$(vals noop | median)
sbom=$(vals sbom | median)
ratio=$(awk -v a="$sbom" -v b="$noop" 'BEGIN { printf "%.1f%%", 100 * a / b }')
log "no-op $noop s, SBOM $sbom s: $ratio"
row() { echo "| $1 | $(vals "$2" | paste -sd' ' -) | $(vals "$2" | median) |"; }
rows=$(
  row '`imgbuild env new ecs.example.org` (3 OpenPGP keys by `gpg --batch`, RSA 2048 by `openssl genpkey`)' new
  row '`imgbuild env package env.yml --passphrase-file F` (PDF, tar + gpg archive, seed)' package
  row '`imgbuild env unpack DOMAIN.env.pdf` (pdftoppm + zbarimg)' unpack
  row 'no-op rebuild of the default image (image cache hit)' noop
  row "… of which the SBOM step ($pkgs packages; hashing the running imgbuild included)" sbom
)
block=$(cat <<EOF
<!-- bench/tools.sh: begin -->
## The operator's tools and the SBOM (\`bench/tools.sh\`)

\`RUNS=$RUNS bash bench/tools.sh\`, commit $(git rev-parse --short=12 HEAD), $(date -u '+%Y-%m-%d %H:%M') UTC, on this
machine ($(nproc) cores, load at the end $(cut -d' ' -f1-3 /proc/loadavg)), release build.

| command | runs (s) | median (s) |
| --- | --- | --- |
$rows

The SBOM's share of a no-op rebuild: **$ratio**.
<!-- bench/tools.sh: end -->
EOF
)
write_section tools.sh "$block"
