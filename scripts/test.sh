#!/usr/bin/env bash
# Runs every test of the project: unit and integration tests, the boot tests in
# QEMU, and a short bounded fuzz run. Installs the host packages first
# (idempotent). Needs root: building root trees and images does.
#
#   bash scripts/test.sh     (as root)
#
# The layer cache lives outside the checkout (IMGBUILD_CACHE_DIR, default
# $XDG_CACHE_HOME/imgbuild or ~/.cache/imgbuild), so only the first run on a
# machine builds the base layers.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (e.g. sudo scripts/test.sh): the tests build root trees and disk images" >&2
  exit 1
fi

bash scripts/install-host-deps.sh
bash scripts/install-rust-tools.sh

export IMGBUILD_CACHE_DIR="${IMGBUILD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild}"
mkdir -p "$IMGBUILD_CACHE_DIR"

# Which distributions' archives answer: the build and boot tests of one
# whose archive does not are not run, said here and in the summary.
probe() { # NAME URL
  if curl -fsS --max-time 15 -o /dev/null "$2"; then
    echo "$1"
  else
    echo "== $1: not run, the archive does not answer ($2)" >&2
  fi
}
IMGBUILD_TEST_DISTROS="$(probe ubuntu http://archive.ubuntu.com/ubuntu/dists/noble-security/InRelease) \
$(probe debian http://deb.debian.org/debian-security/dists/bookworm-security/InRelease)"
export IMGBUILD_TEST_DISTROS
summary() {
  for d in ubuntu debian; do
    case " $IMGBUILD_TEST_DISTROS " in
      *" $d "*) echo "== $d: the archive answers; its build and boot tests run" ;;
      *) echo "== $d: not run, the archive does not answer" ;;
    esac
  done
}
trap summary EXIT
summary

echo "== cargo test (workspace)"
cargo test --workspace --release --locked

echo "== the Debian package: built, installed in a scratch root, used from another directory"
case " $IMGBUILD_TEST_DISTROS " in
  *" ubuntu "*)
    bash scripts/package-deb.sh
    bash scripts/test-deb.sh
    ;;
  *) echo "== the Debian package: not run (its build test needs the Ubuntu archive)" ;;
esac

echo "== fuzz (bounded)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
