#!/usr/bin/env bash
# The first-boot agent's time, two ways, from QEMU boots of one image:
#
#  1. at boot, as the journal has it (the agent's own summary line): one
#     first boot of a new disk enlarged to 8 GiB (it grows the root), then
#     BOOTS-1 boots of the same disk with nothing to do;
#  2. with the boot settled: on every boot, the bench-only layer
#     bench/layers/80-agent-runs runs the agent again RUNS times with warm
#     caches and RUNS times right after dropping the page/dentry/inode caches
#     (each run a no-op), which is the agent's own cost without the boot's
#     other units on the same CPUs.
#
#   sudo bench/agent-runs.sh          (as root: the build runs apt in a chroot)
#
# Settings (environment): BOOTS (default 6), RUNS (per kind and boot,
# default 11), FIRMWARE (uefi or bios, default uefi), BENCH_DIR (default
# /var/tmp/imgbuild-bench-agent), IMGBUILD_CACHE_DIR (the layer cache, as
# everywhere). Writes its section of BENCHMARKS.md (between
# `<!-- bench/agent-runs.sh: begin/end -->`); the consoles stay in
# $BENCH_DIR/consoles/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
BOOTS=${BOOTS:-6}
RUNS=${RUNS:-11}
FIRMWARE=${FIRMWARE:-uefi}
BENCH_DIR=${BENCH_DIR:-/var/tmp/imgbuild-bench-agent}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-900}

if [ "$(id -u)" != 0 ]; then
  echo "bench/agent-runs.sh: run as root (the image build runs apt in a chroot)" >&2
  exit 1
fi
case "$FIRMWARE" in uefi | bios) ;; *)
  echo "bench/agent-runs.sh: FIRMWARE must be uefi or bios, not $FIRMWARE" >&2
  exit 2
  ;;
esac
bash "$repo/scripts/install-host-deps.sh" >/dev/null

log() { echo "agent-runs: $*" >&2; }
cd "$repo"
log "building imgbuild and ecs-firstboot (release)"
cargo build --release --locked -q -p imgbuild -p ecs-firstboot
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/consoles"
img=$BENCH_DIR/agent.qcow2
log "building the image (default layers + bench/layers/80-agent-runs)"
./target/release/imgbuild --env examples/env.yml -o "$img" --force \
  --distro debian --suite bookworm --mirror http://deb.debian.org/debian \
  --layer bench/layers/80-agent-runs \
  --cmdline "i8042.noaux i8042.nopnp ecs.bench.runs=$RUNS" >"$BENCH_DIR/build.log" 2>&1 ||
  { tail -n 30 "$BENCH_DIR/build.log" >&2; exit 1; }

ov=$BENCH_DIR/disk.qcow2
qemu-img create -q -f qcow2 -b "$img" -F qcow2 "$ov" 8G
start_load=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$BOOTS"); do
  log "boot $i of $BOOTS"
  # The boot tests' guest (qemu-tests/src/harness.rs): qemu64, 2 vCPUs.
  python3 bench/boot.py --timeout "$BOOT_TIMEOUT" --firmware "$FIRMWARE" --cpu qemu64 --smp 2 \
    --disk "$ov:qcow2" --cdrom "${img%.qcow2}.seed.iso" \
    --console "$BENCH_DIR/consoles/boot-$i.log" \
    --marker 'agent=ecs-firstboot: (ok|standby|failed) .*[0-9]+ms' \
    --marker 'done=AGENT-RUNS done' --until done >"$BENCH_DIR/boot-$i.json" ||
    { log "boot $i did not finish: $(cat "$BENCH_DIR/boot-$i.json")"; exit 1; }
done
end_load=$(cut -d' ' -f1-3 /proc/loadavg)

section=$(python3 - "$BENCH_DIR" "$BOOTS" "$RUNS" "$FIRMWARE" "$start_load" "$end_load" <<'EOF'
import glob, os, re, statistics, subprocess, sys, datetime
d, boots, runs, fw, l0, l1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
SUM = re.compile(r"ecs-firstboot: (ok|standby|failed)\b(.*?) cpu=(\d+)ms (\d+)ms\s*$")
RUN = re.compile(r"AGENT-RUN (warm|cold) (\d+) (.*)$")
boot = {"first": [], "noop": []}
settled = {"warm": [], "cold": []}
bad = []
for i in range(1, boots + 1):
    text = open(f"{d}/consoles/boot-{i}.log", "rb").read().decode("utf-8", "replace")
    at_boot = None
    for line in text.splitlines():
        r = RUN.search(line)
        if r:
            m = SUM.search(r.group(3))
            if not m or m.group(1) != "ok":
                bad.append(line.strip())
                continue
            settled[r.group(1)].append((int(m.group(4)), int(m.group(3))))
            continue
        m = SUM.search(line)
        if m and at_boot is None:
            at_boot = m
    if at_boot is None or at_boot.group(1) != "ok":
        sys.exit(f"boot {i}: no successful agent summary on the console")
    kind = "first" if i == 1 else "noop"
    if kind == "noop" and "grow=no" not in at_boot.group(2):
        sys.exit(f"boot {i}: not a boot with nothing to do: {at_boot.group(0)}")
    boot[kind].append((int(at_boot.group(4)), int(at_boot.group(3))))
if bad:
    sys.exit("runs that did not end ok:\n" + "\n".join(bad))
def med(xs, k):
    v = [x[k] for x in xs]
    return statistics.median(v) if v else float("nan")
def row(name, xs):
    walls = " ".join(str(x[0]) for x in xs)
    return f"| {name} | {len(xs)} | {med(xs,0):.0f} ms | {med(xs,1):.0f} ms | {walls} |"
commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
nb = med(boot["noop"], 0)
print(f"""## The first-boot agent in QEMU (`bench/agent-runs.sh`)

Written by `bench/agent-runs.sh` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC:
`sudo BOOTS={boots} RUNS={runs} FIRMWARE={fw} bench/agent-runs.sh`, commit
`{commit}`{" (with uncommitted changes)" if dirty else ""}, {os.cpu_count()} cores ({cpu}),
{qemu}, **TCG** (no usable KVM here), guest q35, `-cpu qemu64 -smp 2`, 1 GiB (as the boot tests).
Load average {l0} at the start, {l1} at the end. Every figure is the
agent's own summary line (`cpu=` is the CPU time of the agent and the tools
it ran, then its wall time).

| | N | median wall | median CPU | every wall (ms) |
| --- | --- | --- | --- | --- |
{row("at boot: first boot (grows the root; no mkfs: storage.ignore)", boot["first"])}
{row("at boot: boots with nothing to do", boot["noop"])}
{row("boot settled, warm caches (a no-op run)", settled["warm"])}
{row("boot settled, caches dropped first (a no-op run)", settled["cold"])}

Targets: first boot without mkfs under 1 s; a boot with nothing
to do under 100 ms. At boot the agent starts with `basic.target`, beside
dbus, logind and the other early units, on two emulated CPUs, with cold
caches: its no-op median here is {nb:.0f} ms. With the boot settled the same
no-op run takes {med(settled["warm"],0):.0f} ms warm and {med(settled["cold"],0):.0f} ms after the caches
are dropped, so most of the boot-time figure is the boot around the agent
and the cost of cold reads under emulation, not the agent's work.""")
EOF
)
python3 - "$repo/BENCHMARKS.md" "$section" <<'EOF'
import sys
path, section = sys.argv[1], sys.argv[2]
begin, end = "<!-- bench/agent-runs.sh: begin -->", "<!-- bench/agent-runs.sh: end -->"
text = open(path).read() if __import__("os").path.exists(path) else "# Benchmarks\n"
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    a, b = text.index(begin), text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path + ".tmp", "w").write(text)
__import__("os").replace(path + ".tmp", path)
EOF
echo "$section"
