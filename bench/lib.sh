# Sourced by the bench scripts (tools.sh, pockets.sh, formats.sh,
# services.sh): the log lines, the median, and the writer of a script's own
# section of BENCHMARKS.md, so each script only measures.

log() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# median: of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# write_section NAME TEXT [FILE]: TEXT (which starts with the line
# `<!-- bench/NAME: begin -->` and ends with `<!-- bench/NAME: end -->`)
# replaces that section of FILE (default $BENCH_OUT), or is appended to it;
# the other scripts' sections stay as they are.
write_section() {
  python3 - "${3:-$BENCH_OUT}" "$1" "$2" <<'PY'
import sys
path, name, block = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("\n")
b, e = f"<!-- bench/{name}: begin -->", f"<!-- bench/{name}: end -->"
if not (block.startswith(b) and block.endswith(e)):
    sys.exit(f"bench: error: the section of {name} must start with {b} and end with {e}")
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if b in text and e in text:
    text = text[: text.index(b)] + block + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
  log "wrote ${3:-$BENCH_OUT}"
}
