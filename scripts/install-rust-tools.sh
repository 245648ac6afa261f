#!/usr/bin/env bash
# Installs the Rust-side tools the tests need (idempotent): cargo-fuzz for the
# bounded fuzz run, on the nightly toolchain that is already installed.
set -euo pipefail
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "install-rust-tools: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
