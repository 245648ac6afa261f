#!/usr/bin/env bash
# Tests the Debian package scripts/package-deb.sh made: installed in a
# scratch root (dpkg-deb -x, the files as dpkg would place them), run from
# an unrelated directory, imgbuild must find its installed layers and agent:
# `imgbuild tree` and a whole build of the default recipe (with the layer
# cache), whose SBOM then passes scripts/check-sbom. Also the package's
# metadata (dpkg-deb --info), man pages and completions.
#
#   bash scripts/test-deb.sh [DEB]     (as root; default: the newest in target/debian)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
deb=${1:-$(ls -t "$root"/target/debian/imgbuild_*.deb 2>/dev/null | head -n 1)}
[ -f "$deb" ] || { echo "test-deb: no package: run scripts/package-deb.sh first" >&2; exit 1; }
cache=${IMGBUILD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild}

fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
work=$(mktemp -d /var/tmp/imgbuild-test-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
scratch=$work/root
elsewhere=$work/elsewhere
mkdir -p "$scratch" "$elsewhere"

info=$(dpkg-deb --info "$deb")
for f in "Package: imgbuild" "Depends: mmdebstrap"; do
  grep -q "$f" <<<"$info" || fail "the package's control lacks \"$f\""
done
dpkg-deb -x "$deb" "$scratch"
for f in usr/bin/imgbuild usr/lib/imgbuild/ecs-firstboot usr/share/imgbuild/layers/00-base/layer.yml \
  usr/share/man/man1/imgbuild.1.gz usr/share/bash-completion/completions/imgbuild \
  usr/share/doc/imgbuild/README.md; do
  [ -e "$scratch/$f" ] || fail "the package lacks /$f"
done
zcat "$scratch/usr/share/man/man1/imgbuild.1.gz" | grep -q '^\.TH' || fail "imgbuild.1 is not a man page"

imgbuild=$scratch/usr/bin/imgbuild
cd "$elsewhere"
"$imgbuild" --version | grep -q '(git ' || fail "--version does not name the commit"

echo "== test-deb: imgbuild tree from $elsewhere"
log=$work/tree.log
"$imgbuild" tree --cache-dir "$cache" > "$work/tree.out" 2> "$log" || { cat "$log" >&2; fail "imgbuild tree"; }
grep -q "layers: $scratch/usr/share/imgbuild/layers (the installed layers)" "$log" ||
  { cat "$log" >&2; fail "imgbuild tree did not say it uses the installed layers"; }
[ "$(wc -l < "$work/tree.out")" -ge 5 ] || fail "imgbuild tree printed too few layer keys: $(cat "$work/tree.out")"

echo "== test-deb: a whole build from $elsewhere"
log=$work/build.log
"$imgbuild" --env "$root/examples/env.yml" -o "$elsewhere/ecs.qcow2" --cache-dir "$cache" 2> "$log" ||
  { tail -n 40 "$log" >&2; fail "the build"; }
grep -q "(the installed layers)" "$log" || fail "the build did not use the installed layers"
for f in ecs.qcow2 ecs.seed.iso ecs.SHA256SUMS ecs.manifest.json ecs.spdx.json; do
  [ -s "$elsewhere/$f" ] || fail "the build wrote no $f"
done
(cd "$elsewhere" && sha256sum -c --quiet ecs.SHA256SUMS) || fail "SHA256SUMS does not match"
"$root/scripts/check-sbom" "$elsewhere/ecs.spdx.json" "$elsewhere/ecs.manifest.json" || fail "the SBOM"
agent_sha=$(sha256sum "$scratch/usr/lib/imgbuild/ecs-firstboot" | cut -d' ' -f1)
grep -q "$agent_sha" "$elsewhere/ecs.spdx.json" || fail "the SBOM does not carry the installed agent's sha256"
echo "test-deb: ok ($(basename "$deb"))"
