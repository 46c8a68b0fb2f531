"""Full-memory dumps: generate_dump --memory=full against gdb's gcore on the same process.

    python3 bench/full_memory.py [--heap-mb 1024] [--threads 10] [--rounds 3]

Builds bench/target.c, starts it with HEAP_MB of touched heap, and alternates the tools
on it. Prints a Markdown table of medians: wall time, throughput (file MiB per second of
wall time), file size, the dumper's peak RSS and the target's longest freeze (both tools
keep the process stopped while they copy its memory).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Target, build  # noqa: E402


def run_one(cmd: list[str], out: str, target: Target) -> dict:
    target.reset()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-500:]}")
    files = [os.path.join(out, f) for f in os.listdir(out)]
    size = sum(os.path.getsize(f) for f in files)
    for f in files:
        os.unlink(f)
    gap_us = int(target.command("gap").split()[0])
    return {"wall": wall, "size": size, "rss": rusage.ru_maxrss / 1024,
            "freeze": max(0.0, gap_us / 1000 - target.tick_ms)}



def run_rounds(tools: dict, rounds: int, work: str, target) -> dict[str, list[dict]]:
    """Each tool once a round, the order rotating; the target is killed at the end."""
    results: dict[str, list[dict]] = {name: [] for name in tools}
    try:
        for rnd in range(rounds):
            for name in (list(tools)[rnd % len(tools):] + list(tools)[: rnd % len(tools)]):
                out = os.path.join(work, "out")
                os.makedirs(out, exist_ok=True)
                results[name].append(run_one(tools[name](out), out, target))
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
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med[name] = m
        print(f"| {name} | {m['wall']:.2f} | {m['size'] / 2**20 / m['wall']:.0f} | "
              f"{m['size'] / 2**20:.0f} | {m['rss']:.0f} | {m['freeze'] / 1000:.2f} |")
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heap-mb", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import generate_dump

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(generate_dump.__file__)], check=False)
    work = tempfile.mkdtemp(prefix="gd-full-")
    target_exe, _ = build(work)
    target = Target(target_exe, args.threads, args.heap_mb)
    tools = {"generate_dump --memory=full": lambda out: [
        sys.executable, "-m", "generate_dump", "--memory", "full", str(target.pid), "-o",
        os.path.join(out, "dump.dmp")]}
    if shutil.which("gcore"):
        tools["gcore"] = lambda out: ["gcore", "-o", os.path.join(out, "core"), str(target.pid)]
    results = run_rounds(tools, args.rounds, work, target)
    print(f"### Full-memory dump, {args.heap_mb} MiB touched heap, {args.threads} threads "
          f"(medians of {args.rounds})\n")
    med = print_medians("tool", results)
    if "gcore" in med:
        ratio = med["generate_dump --memory=full"]["wall"] / med["gcore"]["wall"]
        print(f"\ngenerate_dump wall / gcore wall: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
