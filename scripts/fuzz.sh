#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds per target, default 30).
# A crash fails the run and leaves the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"

# Starting corpora (not committed: they are made from the sources).
sh gen-corpus.sh corpus/seed_reader
mkdir -p corpus/env_parse
cp ../seeds/tests/vectors/flatten/*.yml ../examples/env.yml corpus/env_parse/

for target in $(cargo +nightly fuzz list); do
  echo "-- fuzz $target for ${secs}s"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target failed (crash input under fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^(Done|#[0-9]+ +DONE)' "$log" | tail -n 1 || tail -n 2 "$log"
  rm -f "$log"
done
