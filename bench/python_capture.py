#!/usr/bin/env python3
"""What Python capture costs, measured on the work itself (robust on a busy machine).

    python3 bench/python_capture.py [--threads 10,100] [--pythons EXE,...] [--repeat 30]

For each CPython and thread count, bench/python_target.py runs N threads parked a few
Python frames deep. Measured, medians of --repeat runs:

- *in freeze*: what generate_dump adds while the threads are stopped: the batched reads
  that note each thread's innermost frame (ThreadStates.marks), next to what the freeze
  does anyway, copying every thread's stack (one read_many), as the yardstick;
- *after release*: the full decode (interpreters, thread states, frames, code objects,
  strings, line tables) with the recorder that keeps the bytes for the dump, next to
  ``py-spy dump --nonblocking`` (a peer reading the same, wall time incl. its start-up).

The freeze benchmark (bench/run.py --python EXE --tools generate_dump,generate_dump-nopy)
measures the whole freeze from the target's side, but its ticker needs a quiet machine.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

from generate_dump.backends.linux import procfs  # noqa: E402
from generate_dump.backends.linux.memory import MemoryReader  # noqa: E402
from generate_dump.python.decode import Recorder, decode, thread_states  # noqa: E402
from generate_dump.python.locate import find_runtime  # noqa: E402
from generate_dump.snapshot import Module  # noqa: E402


def modules(pid: int) -> list[Module]:
    maps = procfs.parse_maps(procfs.read_file(f"/proc/{pid}/maps") or b"")
    exe = os.readlink(f"/proc/{pid}/exe")
    out, seen = [], set()
    for m in maps:
        if m.path.startswith("/") and m.offset == 0 and m.path not in seen:
            seen.add(m.path)
            out.append(Module(m.path, m.start, m.end - m.start, is_main=m.path == exe))
    return out


def stack_ranges(pid: int) -> list[tuple[int, int]]:
    """Roughly what the freeze copies: 64 KiB below each thread's stack pointer."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[0] not in ("running", "-1"):
            sp = int(fields[-2], 16)
            out.append((sp - 256, 64 << 10))
    return out


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def measure(exe: str, n: int, repeat: int) -> dict:
    proc = subprocess.Popen([exe, os.path.join(BENCH, "python_target.py"), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        time.sleep(0.3)
        reader = MemoryReader(proc.pid)
        rt = find_runtime(modules(proc.pid), reader)
        assert rt is not None, "no CPython found"
        states = thread_states(reader, rt)
        stacks = stack_ranges(proc.pid)
        marks = median_time(lambda: states.marks(reader.read_many), repeat)
        copy = median_time(lambda: reader.read_many(stacks, views=True), repeat)
        result = {}

        def full():
            rec = Recorder(reader)
            result["state"] = decode(rec, rt)
            result["bytes"] = sum(len(d) for _, d in rec.ranges())

        dec = median_time(full, repeat)
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        peer = None
        if os.path.exists(pyspy):
            peer = median_time(lambda: subprocess.run(
                [pyspy, "dump", "--pid", str(proc.pid), "--nonblocking"],
                capture_output=True, check=True), max(3, repeat // 5))
        st = result["state"]
        return {"python": st.version, "threads": n, "marks_ms": marks, "stack_copy_ms": copy,
                "stack_ranges": len(stacks), "decode_ms": dec, "pyspy_ms": peer,
                "bytes": result["bytes"], "pythreads": len(st.threads),
                "frames": sum(len(t.frames) for t in st.threads)}
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="10,100")
    default = sorted(glob.glob("/root/.pyenv/versions/3.1[13].*/bin/python3.1[13]")) or \
        [sys.executable]
    p.add_argument("--pythons", default=",".join(default))
    p.add_argument("--repeat", type=int, default=30)
    a = p.parse_args()
    print("| CPython | threads | in freeze: marks ms | freeze's stack copy ms (yardstick) |"
          " after release: decode ms | py-spy dump ms (peer) | decode / py-spy |"
          " bytes kept | frames |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for exe in a.pythons.split(","):
        for n in (int(x) for x in a.threads.split(",")):
            r = measure(exe, n, a.repeat)
            ratio = f"{r['decode_ms'] / r['pyspy_ms']:.2f}x" if r["pyspy_ms"] else "n/a"
            peer = f"{r['pyspy_ms']:.1f}" if r["pyspy_ms"] else "n/a"
            print(f"| {r['python']} | {n} | {r['marks_ms']:.3f} | {r['stack_copy_ms']:.3f} "
                  f"({r['stack_ranges']} stacks) | {r['decode_ms']:.1f} | {peer} | {ratio} | "
                  f"{r['bytes']} | {r['frames']} |", flush=True)
    print(f"\nLoad average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
