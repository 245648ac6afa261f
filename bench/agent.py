#!/usr/bin/env python3
"""The first-boot agent's times, from the serial consoles of QEMU boots.

    python3 bench/agent.py [CONSOLE.log ...]

Default: the consoles the boot tests keep (target/qemu-artifacts/consoles/).
For every boot whose console holds an `ecs-firstboot: ok|standby|failed ...`
summary, prints one Markdown row: the boot, what the agent did, its wall
time, its CPU time (`cpu=`), the time its `mkfs.ext4`/`tune2fs` steps took
(the "formatted ..." volume steps), the wall time without them, and each
step's `took=`. The summary line and the step lines are the agent's own
(journal → console), so nothing here is timed from outside the guest.
"""
import glob
import os
import re
import statistics
import sys

SUMMARY = re.compile(r"ecs-firstboot: (ok|standby|failed)\b(.*?)(?: cpu=(\d+)ms)? (\d+)ms\s*$")
STEP = re.compile(r'ecs-firstboot: step=(\S+) found=("(?:[^"\\]|\\.)*"|\S*) did=("(?:[^"\\]|\\.)*"|\S*) took=(\d+)ms')


def parse(path):
    steps = []
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    for line in text.splitlines():
        m = STEP.search(line)
        if m:
            steps.append((m.group(1), m.group(3).strip('"'), int(m.group(4))))
            continue
        m = SUMMARY.search(line)
        if m:
            yield {
                "status": m.group(1),
                "fields": m.group(2).strip(),
                "cpu": int(m.group(3)) if m.group(3) else None,
                "wall": int(m.group(4)),
                "steps": steps,
            }
            steps = []


def main(argv):
    paths = argv or sorted(glob.glob(os.path.join("target", "qemu-artifacts", "consoles", "*.log")))
    if not paths:
        sys.exit("agent.py: no console logs (run the boot tests first, or name the files)")
    rows = []
    print("| boot | summary | wall | CPU | mkfs steps | wall without mkfs | steps (took) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in paths:
        for r in parse(p):
            mkfs = sum(t for (name, did, t) in r["steps"] if name == "volume" and did.startswith("formatted"))
            steps = ", ".join(f"{n} {t}" for (n, _, t) in r["steps"])
            cpu = f"{r['cpu']} ms" if r["cpu"] is not None else "n/a"
            rows.append((r, mkfs))
            print(
                f"| {os.path.basename(p)} | {r['status']} {r['fields']} | {r['wall']} ms | {cpu} "
                f"| {mkfs} ms | {r['wall'] - mkfs} ms | {steps} |"
            )
    noop = [r["wall"] for (r, _) in rows if r["status"] == "ok" and "grow=no" in r["fields"]
            and not any(n in ("table", "grow-fs", "volume") for (n, _, _) in r["steps"])]
    first = [r["wall"] - m for (r, m) in rows if "grow=+" in r["fields"]]
    print()
    if first:
        print(f"First boots (grew the disk): median {statistics.median(first):.0f} ms without mkfs, N={len(first)}.")
    if noop:
        print(f"Boots with nothing to do (no table, grow or volume step): median {statistics.median(noop):.0f} ms, N={len(noop)}.")


if __name__ == "__main__":
    main(sys.argv[1:])
