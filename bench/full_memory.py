"""Full-memory dumps: generate_dump --memory=full against gdb's gcore on the same process.

    python3 bench/full_memory.py [--heap-mb 1024] [--threads 10] [--rounds 3]

Builds bench/target.c, starts it with HEAP_MB of touched heap, and alternates the tools
on it. Prints a Markdown table of medians: wall time, throughput (file MiB per second of
wall time), file size, the dumper's peak RSS and the target's longest freeze (both tools
keep the process stopped while they copy its memory).
"""

from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import heap_target, print_medians, run_rounds  # noqa: E402


def main(argv=None) -> int:
    args, work, target = heap_target(__doc__.splitlines()[0], argv, "gd-full-")
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
