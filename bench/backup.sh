#!/usr/bin/env bash
# Backup and restore (layer 70-backup) of a database of a stated size, in
# one QEMU guest (TCG, the boot tests' q35, qemu64, 2 vCPUs, 1 GiB): the
# default image plus the bench-only layer bench/layers/80-backup-runs, which
# fills the env's database with `pgbench -i -s SCALE`, then RUNS times
#   full     systemctl start appliance-backup to an empty target (pg_dump -Fc,
#            duply/duplicity full, gpg),
#   incr     the same after `pgbench -t 200` (an incremental backup),
#   restore  recover-from-backup --yes-i-am-sure (restore into the staging
#            directory, swap, pg_restore --create, the appliance started),
# and prints their seconds and sizes (the database, the dump, the target).
# The medians go to BENCHMARKS.md between its "bench/backup.sh" markers.
#
#   sudo bash bench/backup.sh                    # SCALE=14 (about 200 MB), RUNS=3
#   sudo SCALE=2 RUNS=1 bash bench/backup.sh     # a quick look
#
# Settings (environment): SCALE (pgbench scale, default 14: about 210 MB of
# database), RUNS (default 3), BENCH_DIR (default
# /var/tmp/imgbuild-bench-backup), BOOT_TIMEOUT (seconds, default 7200),
# IMGBUILD_CACHE_DIR (the layer cache, as everywhere), BENCH_OUT (default
# BENCHMARKS.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
SCALE=${SCALE:-14}
RUNS=${RUNS:-3}
W=${BENCH_DIR:-/var/tmp/imgbuild-bench-backup}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-7200}
BENCH_OUT=${BENCH_OUT:-$repo/BENCHMARKS.md}
log() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: building images needs it"
[[ $SCALE =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || die "SCALE and RUNS are positive numbers"
cd "$repo"
bash scripts/install-host-deps.sh >&2
cargo build --release --locked -q -p imgbuild -p ecs-firstboot
IMGBUILD=$repo/target/release/imgbuild
rm -rf "$W" && mkdir -p "$W/logs"

# The env: the example's (volumes as directories) with a backup target on
# the root filesystem and a fresh key without a passphrase.
install -d -m 0700 "$W/gnupg"
gpg --homedir "$W/gnupg" --batch --passphrase '' --quick-gen-key \
  'ECS bench backups <backup@ecs.example.org>' future-default default never 2>"$W/logs/gpg.log"
key=$(gpg --homedir "$W/gnupg" --batch --armor --export-secret-keys)
gpgconf --homedir "$W/gnupg" --kill gpg-agent || true
grep -q '^  backup:$' examples/env.yml || die "examples/env.yml has no appliance.backup block to replace"
python3 - examples/env.yml "$W/env.yml" "$key" <<'PY'
import re, sys
src, dst, key = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(src).read()
block = "  backup:\n    url: file:///var/tmp/ecs-bench-backup\n    encrypt: |\n" + "".join(
    f"      {l}\n" for l in key.strip().splitlines())
text, n = re.subn(r"^  backup:\n(    .*\n)+", block, text, flags=re.M)
assert n == 1, "one backup block"
open(dst, "w").write(text)
PY
chmod 0600 "$W/env.yml"
log "build (default layers + bench/layers/80-backup-runs)"
"$IMGBUILD" --env "$W/env.yml" -o "$W/backup.qcow2" --force --layer bench/layers/80-backup-runs \
  --cmdline "i8042.noaux i8042.nopnp ecs.bench.scale=$SCALE ecs.bench.runs=$RUNS" >"$W/logs/build.log" 2>&1 ||
  { tail -n 30 "$W/logs/build.log" >&2; die "the build failed"; }
ov=$W/disk.qcow2
qemu-img create -q -f qcow2 -b "$W/backup.qcow2" -F qcow2 "$ov" 16G
start_load=$(cut -d' ' -f1-3 /proc/loadavg)
log "boot: pgbench -i -s $SCALE, then $RUNS x (full, incremental, restore)"
python3 bench/boot.py --timeout "$BOOT_TIMEOUT" --firmware uefi --cpu qemu64 --smp 2 \
  --disk "$ov:qcow2" --cdrom "$W/backup.seed.iso" --console "$W/logs/console.log" \
  --marker 'failed=BACKUP-RUNS failed' --marker 'done=BACKUP-RUNS (done|failed)' --until done \
  >"$W/logs/boot.json" || die "the boot did not finish: $(cat "$W/logs/boot.json") (console: $W/logs/console.log)"
grep -q 'BACKUP-RUNS done' "$W/logs/console.log" ||
  die "$(grep -a -o 'BACKUP-RUNS failed.*' "$W/logs/console.log" | head -n 1) (console: $W/logs/console.log)"
end_load=$(cut -d' ' -f1-3 /proc/loadavg)

section=$W/section.md
python3 - "$W/logs/console.log" "$SCALE" "$RUNS" "$start_load" "$end_load" >"$section" <<'PY'
import datetime, os, re, statistics, subprocess, sys
console, scale, runs, l0, l1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(console, "rb").read().decode("utf-8", "replace")
rows = {}
for m in re.finditer(r"^BACKUP-RUN kind=(\S+) run=(\d+) s=([0-9.]+)(.*)$", text, re.M):
    kv = dict(p.split("=", 1) for p in m.group(4).split())
    rows.setdefault(m.group(1), []).append((float(m.group(3)), kv))
def mib(b): return f"{int(b) / 1048576:.1f}"
def med(xs): return statistics.median(xs)
commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
print("<!-- bench/backup.sh: begin -->")
print("## Backup and restore (`bench/backup.sh`)")
print()
print(f"`sudo SCALE={scale} RUNS={runs} bash bench/backup.sh`, commit `{commit}`, "
      f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores ({cpu}), {qemu}, **TCG**,")
print("guest q35, `-cpu qemu64 -smp 2`, 1 GiB (as the boot tests), Ubuntu noble, the default image plus")
print("`bench/layers/80-backup-runs`; the target a `file://` directory on the guest's root filesystem.")
print(f"Load average {l0} at the start, {l1} at the end.")
init = rows.get("pgbench-init", [(float('nan'), {})])[0][0]
print(f"The database: `pgbench -i -s {scale}` ({init:.0f} s in the guest).")
print()
print("| step | runs (s) | median (s) | database (MiB) | dump (MiB) | on the target (MiB) |")
print("| --- | --- | --- | --- | --- | --- |")
names = {"full": "full backup (pg_dump -Fc + duplicity full, empty target)",
         "incr": "incremental backup (after `pgbench -t 200`)",
         "restore": "`recover-from-backup --yes-i-am-sure`"}
for k in ("full", "incr", "restore"):
    xs = rows.get(k, [])
    if not xs:
        sys.exit(f"no {k} runs on the console")
    kv = xs[-1][1]
    target = mib(kv["target_bytes"]) + (" (this increment)" if k == "incr" else "")
    print(f"| {names[k]} | {' '.join(f'{s:.1f}' for s, _ in xs)} | {med([s for s, _ in xs]):.1f} | "
          f"{mib(kv['db_bytes'])} | {mib(kv['dump_bytes'])} | {target} |")
print()
print("Sizes are from the last run. The restore row includes stopping and starting the appliance")
print("(no application in this env). The original's sizing guide names 475 MB compressed dumps for")
print("its production data: scale the rows by the dump size to estimate such a machine's times.")
print("<!-- bench/backup.sh: end -->")
PY
python3 - "$BENCH_OUT" "$section" <<'PY'
import sys
out, sec = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(out).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
b, e = "<!-- bench/backup.sh: begin -->", "<!-- bench/backup.sh: end -->"
if b in text and e in text:
    text = text[: text.index(b)] + sec.rstrip("\n") + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + sec
open(out, "w").write(text)
PY
log "wrote $BENCH_OUT"
