"""`generate_dump watch`: what watching costs, and how fast it reacts, against peers.

1. Watcher CPU with N idle watched processes (default 1000), as a percentage of one core,
   against the floor: a bare Python loop that reads /proc/PID/stat of the same processes
   at the same interval (what any /proc poller must do). The targets are never traced.
2. Reaction time: a memory ramp crosses a threshold; the delay until the dump is taken,
   for `watch` and Debian's `procdump` (both polling every second), over several rounds,
   each on its own copy of the ramp started at the same moment.

    scripts/bench watch.py [--processes 1000] [--seconds 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    f = raw[raw.rindex(b")") + 2:].split()
    return (int(f[11]) + int(f[12])) / TICK


def spawn_idle(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["sleep", "3600"]) for _ in range(n)]


FLOOR = """
import sys, time
pids = [int(p) for p in sys.argv[2:]]
interval = float(sys.argv[1])
nxt = time.monotonic()
while True:
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb", buffering=0) as f:
                f.read(4096)
        except OSError:
            pass
    nxt += interval
    time.sleep(max(0, nxt - time.monotonic()))
"""


def measure(argv: list[str], seconds: float, out_dir: str) -> float:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=out_dir)
    time.sleep(1.5)  # start-up is not watching
    start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(proc.pid) - start_cpu
    wall = time.monotonic() - start
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return 100.0 * used / wall


def bench_cpu(n: int, seconds: float) -> None:
    procs = spawn_idle(n)
    try:
        pids = [str(p.pid) for p in procs]
        with tempfile.TemporaryDirectory() as d:
            watch = measure([sys.executable, "-m", "generate_dump", "watch", *pids,
                             "--cpu-above", "90", "--memory-above", "1G", "--threads-above",
                             "1000", "--interval", "1s"], seconds, d)
            floor = measure([sys.executable, "-c", FLOOR, "1", *pids], seconds, d)
            targets_cpu = sum(cpu_seconds(p.pid) for p in procs)
        print(f"\nWatcher CPU, {n} idle processes, 1 s interval, {seconds:g} s:")
        print("| watcher | CPU (% of one core) | ratio to floor |")
        print("|---|---:|---:|")
        print(f"| generate_dump watch (cpu, memory, threads triggers) | {watch:.2f}% | "
              f"{watch / max(floor, 1e-9):.2f}x |")
        print(f"| floor: read /proc/PID/stat of each, in a Python loop | {floor:.2f}% | 1.00x |")
        print(f"(the {n} watched processes used {targets_cpu:.2f} CPU-seconds in all: "
              "they are never traced or stopped)")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _attach_time(pid: int, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        m = re.search(r"TracerPid:\s+(\d+)", text)
        if m and m.group(1) != "0":
            out.append(time.monotonic())
            return
        time.sleep(0.002)


def _ramp(binary: Path):
    p = subprocess.Popen([str(binary), "mem", "10", "150"], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    lines: list[tuple[float, int]] = []

    def read():
        for line in p.stdout:
            parts = line.split()
            if parts and parts[0] == "STEP":
                lines.append((float(parts[2]), int(parts[1])))

    threading.Thread(target=read, daemon=True).start()
    return p, lines


def bench_reaction(rounds: int) -> None:
    if not shutil.which("procdump"):
        print("\nprocdump not installed (apt-get install procdump gdb): reaction time skipped")
        return
    with tempfile.TemporaryDirectory() as d:
        binary = Path(d) / "ramp"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary),
                        str(ROOT / "tests/programs/ramp.c")], check=True)
        threshold = 120
        ours, theirs = [], []
        for r in range(rounds):
            (a, la), (b, lb) = _ramp(binary), _ramp(binary)
            stop = threading.Event()
            ta: list = []
            threading.Thread(target=_attach_time, args=(a.pid, stop, ta), daemon=True).start()
            tb: list = []
            pd = subprocess.Popen(["procdump", "-M", str(threshold), "-I", "1000", "-n", "1",
                                   "-o", f"{d}/", "-p", str(a.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            w = subprocess.Popen([sys.executable, "-m", "generate_dump", "watch", str(b.pid),
                                  "--memory-above", f"{threshold}M", "--interval", "1s",
                                  "-o", d], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
            for line in w.stderr:
                if " -> " in line:
                    tb.append(time.monotonic())
            w.wait()
            pd.wait(120)
            stop.set()

            def crossed(lines):
                return next(t for t, mb in lines if mb >= threshold - 2)

            if ta and tb:
                theirs.append(ta[0] - crossed(la))
                ours.append(tb[0] - crossed(lb))
            for p in (a, b):
                p.kill()
                p.wait()
            for f in Path(d).iterdir():
                if f.name != "ramp":
                    f.unlink()
        print(f"\nReaction to a memory threshold (ramp 10 MiB / 150 ms, both poll every 1 s, "
              f"{len(ours)} rounds):")
        print("| tool | mean delay | max delay | measured at |")
        print("|---|---:|---:|---|")
        print(f"| generate_dump watch | {statistics.mean(ours):.2f} s | {max(ours):.2f} s | "
              "dump written (upper bound) |")
        print(f"| procdump -M | {statistics.mean(theirs):.2f} s | {max(theirs):.2f} s | "
              "gdb attached (lower bound) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bench_cpu(args.processes, args.seconds)
    bench_reaction(args.rounds)


if __name__ == "__main__":
    main()
