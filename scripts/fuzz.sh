#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds per target, default 30).
# A crash fails the run and leaves the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
for target in $(cargo +nightly fuzz list); do
  echo "-- fuzz $target for ${secs}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 5
  test "${PIPESTATUS[0]}" = 0
done
