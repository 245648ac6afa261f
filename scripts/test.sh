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

echo "== cargo test (workspace)"
cargo test --workspace --release --locked

echo "== fuzz (bounded)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
