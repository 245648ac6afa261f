#!/usr/bin/python3
"""One timed boot under QEMU for bench/run.sh.

Starts QEMU the way qemu-tests/src/lib.rs does (q35, serial console on
stdio, TCG unless QEMU_ACCEL=kvm, OVMF with a private copy of the variable
store for UEFI), copies the console to --console, and records when each
--marker regular expression first matched a console line (seconds since
QEMU started). After the --until marker (default: the last one) it presses
the ACPI power button through QMP and waits for QEMU to exit (a guest that
powers off by itself is fine too); after --timeout it kills QEMU and says
which markers never came.

Prints one JSON object on stdout:
  {"ok": true, "markers": {"NAME": {"t": 51.2, "line": "..."}}, "exit": 0,
   "wall": 63.0, "accel": "tcg", "firmware": "uefi"}
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd"


def qmp_powerdown(path):
    """Sends system_powerdown over QMP; False when QEMU is already gone."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rw")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", "system_powerdown"):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            f.readline()
        s.close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disk", action="append", default=[], help="PATH[:FORMAT] (virtio)")
    ap.add_argument("--cdrom", action="append", default=[])
    ap.add_argument("--firmware", choices=["uefi", "bios"], default="uefi")
    ap.add_argument("--snapshot", action="store_true", help="discard disk writes")
    ap.add_argument("--marker", action="append", default=[], help="NAME=REGEX")
    ap.add_argument("--until", help="marker after which to power down (default: last)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--console", required=True)
    ap.add_argument("--memory", default="1024")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--cpu", default="max", help="QEMU -cpu model under TCG (qemu-tests: qemu64)")
    a = ap.parse_args()

    markers = []
    for m in a.marker:
        name, _, rx = m.partition("=")
        markers.append((name, re.compile(rx)))
    until = a.until or (markers[-1][0] if markers else None)
    accel = os.environ.get("QEMU_ACCEL", "tcg")

    tmp = tempfile.mkdtemp(prefix="bench-boot.")
    qmp = os.path.join(tmp, "qmp.sock")
    cmd = ["qemu-system-x86_64", "-accel", accel, "-machine", "q35",
           "-m", a.memory, "-smp", a.smp,
           "-display", "none", "-nodefaults", "-monitor", "none",
           "-serial", "stdio", "-no-reboot",
           "-qmp", f"unix:{qmp},server=on,wait=off"]
    if accel == "tcg":
        cmd += ["-cpu", a.cpu]
    if a.firmware == "uefi":
        vars_copy = os.path.join(tmp, "OVMF_VARS.fd")
        shutil.copy(OVMF_VARS, vars_copy)
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    for d in a.disk:
        path, _, fmt = d.partition(":")
        spec = f"file={path},format={fmt or 'qcow2'},if=virtio"
        if a.snapshot:
            spec += ",snapshot=on"
        cmd += ["-drive", spec]
    for c in a.cdrom:
        cmd += ["-drive", f"file={c},format=raw,media=cdrom,readonly=on"]

    seen = {}
    done = threading.Event()
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)

    def on_signal(signum, _frame):
        p.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def reader():
        with open(a.console, "wb") as log:
            buf = b""
            while True:
                chunk = p.stdout.read1(4096)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").replace("\r", "")
                    for name, rx in markers:
                        if name not in seen and rx.search(line):
                            seen[name] = {"t": round(time.monotonic() - start, 2),
                                          "line": line.strip()[-300:]}
                            if name == until:
                                done.set()
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    ok = done.wait(a.timeout)
    result = {"firmware": a.firmware, "accel": accel, "markers": seen}
    if ok and until in seen:
        qmp_powerdown(qmp)
        try:
            p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            result["note"] = "guest did not power off within 90 s after the marker; killed"
    else:
        if p.poll() is None:
            p.kill()
            result["note"] = f"timeout after {a.timeout:.0f} s; QEMU killed"
        p.wait()
    t.join(5)
    result["wall"] = round(time.monotonic() - start, 2)
    result["exit"] = p.returncode
    result["missing"] = [n for n, _ in markers if n not in seen]
    result["ok"] = until in seen
    if not result["ok"]:
        err = p.stderr.read().decode("utf-8", "replace")[-2000:]
        if err:
            result["qemu_stderr"] = err
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
