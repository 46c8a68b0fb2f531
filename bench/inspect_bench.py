#!/usr/bin/env python3
"""How long does summarizing (and fully inspecting) a 1000-thread minidump take?

    python3 bench/inspect_bench.py [--threads 1000] [--rounds 3] [--dump FILE] [--keep]

Builds tests/programs/threads.c (gcc -O2 -g -pthread), starts it with THREADS-3 extra
threads (``threads 997`` makes 1000 threads), dumps it with ``python3 -m generate_dump PID
-o FILE``, then times, in this process:

- ``summarize_file`` cold: the first call, which locates every module's files by build id
  and parses their CFI, symbols and line tables;
- ``summarize_file`` warm: later calls (the per-module caches are reused, as by
  ``generate_dump run`` writing several dumps, or the pytest plugin);
- ``inspect --json`` cold, in a fresh interpreter (what a user waits for), full walks of
  every thread.

``--dump FILE`` times an existing dump instead. Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_and_dump(work: Path, threads: int) -> Path:
    exe = work / "threads"
    subprocess.run(["gcc", "-O2", "-g", "-pthread", "-o", str(exe),
                    str(ROOT / "tests" / "programs" / "threads.c")], check=True)
    proc = subprocess.Popen([str(exe), str(max(0, threads - 4))], stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"threads did not start: {line!r}")
        time.sleep(0.3)
        out = work / "threads.dmp"
        subprocess.run([sys.executable, "-m", "generate_dump", str(proc.pid), "-o", str(out)],
                       check=True, cwd=ROOT, capture_output=True, timeout=600)
        return out
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1000, help="threads in the target")
    ap.add_argument("--rounds", type=int, default=3, help="warm summaries to time")
    ap.add_argument("--dump", help="time this dump instead of making one")
    ap.add_argument("--keep", action="store_true", help="keep the dump and the binary")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="inspect-bench-"))
    try:
        if args.dump:
            dump = Path(args.dump)
        else:
            t0 = time.perf_counter()
            dump = build_and_dump(work, args.threads)
            print(f"made {dump} ({dump.stat().st_size // 1024} KiB) in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

        from generate_dump.inspect_dump import summarize_file
        from generate_dump.sources.minidump_file import read_minidump_snapshot

        n_threads = len(read_minidump_snapshot(dump).threads)
        t0 = time.perf_counter()
        summary = summarize_file(dump)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            summarize_file(dump)
            warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "generate_dump.inspect_dump", "--json",
                            str(dump)], cwd=ROOT, capture_output=True, timeout=600)
        full = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"inspect failed: {r.stderr.decode()[-2000:]}")

        print(f"| dump | threads | summarize cold | summarize warm (best of {args.rounds}) "
              f"| inspect --json (new process) |")
        print("|---|---|---|---|---|")
        print(f"| {dump.name} | {n_threads} | {cold:.2f} s | {min(warm):.2f} s | {full:.2f} s |")
        print("\nsummary head:\n" + "\n".join(summary.splitlines()[:12]), file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
