"""What the bench scripts share: timing a command, rotating the tools from round to round,
medians, a quiet-machine check, and the heap target that full_memory.py and redact.py dump.

Imported by the scripts in this directory (each puts it on sys.path: run as a script, the
directory already is).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def compile_package() -> None:
    """Measure generate_dump as installed: pip compiles the package to bytecode, so do that
    here too (PYTHONDONTWRITEBYTECODE only stops Python from writing .pyc files, not from
    reading them)."""
    import generate_dump

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(generate_dump.__file__)], check=False)


def rotated(items: Sequence[T], rnd: int) -> list[T]:
    """``items`` starting at round ``rnd``'s turn, so no tool always runs first."""
    k = rnd % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def run_timed(cmd: list[str]) -> tuple[float, "os.struct_rusage"]:
    """Run ``cmd`` (stdout dropped); its wall time and resource usage. A failure raises
    RuntimeError with the end of its stderr."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {err[-500:]}")
    return wall, rusage


def medians(runs: list[dict]) -> dict:
    """The median of each measure over ``runs`` (dicts with the same keys)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]), idle


def cpu_busy(interval: float = 0.2) -> float:
    """Fraction of all CPUs' time spent busy over ``interval`` (the bench itself sleeps)."""
    t0, i0 = _cpu_times()
    time.sleep(interval)
    t1, i1 = _cpu_times()
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


# --- full dumps of bench/target.c with touched heap (full_memory.py, redact.py) -----------


def heap_target(description: str, argv, prefix: str):
    """Parse --heap-mb/--threads/--rounds, build bench/target.c and start it with that much
    touched heap. Returns (args, work directory, Target)."""
    from run import Target, build

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--heap-mb", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    compile_package()
    work = tempfile.mkdtemp(prefix=prefix)
    target_exe, _ = build(work)
    return args, work, Target(target_exe, args.threads, args.heap_mb)


def dump_once(cmd: list[str], out: str, target) -> dict:
    """One dump of ``target`` into the empty directory ``out``: wall time, file size, the
    dumper's peak RSS and the target's longest freeze; the files are removed after."""
    target.reset()
    wall, rusage = run_timed(cmd)
    files = [os.path.join(out, f) for f in os.listdir(out)]
    size = sum(os.path.getsize(f) for f in files)
    for f in files:
        os.unlink(f)
    gap_us = int(target.command("gap").split()[0])
    return {"wall": wall, "size": size, "rss": rusage.ru_maxrss / 1024,
            "freeze": max(0.0, gap_us / 1000 - target.tick_ms)}


def run_rounds(tools: dict[str, Callable[[str], list[str]]], rounds: int, work: str,
               target) -> dict[str, list[dict]]:
    """Each tool once a round, the order rotating; the target is killed at the end."""
    results: dict[str, list[dict]] = {name: [] for name in tools}
    try:
        for rnd in range(rounds):
            for name in rotated(list(tools), rnd):
                out = os.path.join(work, "out")
                os.makedirs(out, exist_ok=True)
                results[name].append(dump_once(tools[name](out), out, target))
                print(f"round {rnd + 1} {name}: {results[name][-1]}", file=sys.stderr)
    finally:
        target.kill()
        shutil.rmtree(work, ignore_errors=True)
    return results


def print_medians(first: str, results: dict[str, list[dict]]) -> dict[str, dict]:
    """The table of medians per tool (``first`` heads its column); returns the medians."""
    print(f"| {first} | wall s | throughput MiB/s | file MiB | peak RSS MiB | freeze s |")
    print("|---|---:|---:|---:|---:|---:|")
    med = {}
    for name, runs in results.items():
        m = med[name] = medians(runs)
        print(f"| {name} | {m['wall']:.2f} | {m['size'] / 2**20 / m['wall']:.0f} | "
              f"{m['size'] / 2**20:.0f} | {m['rss']:.0f} | {m['freeze'] / 1000:.2f} |")
    return med
