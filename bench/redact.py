"""--redact on a full dump: throughput with and without it, on the same process.

    python3 bench/redact.py [--heap-mb 1024] [--threads 10] [--rounds 3]

Builds bench/target.c, starts it with HEAP_MB of touched heap, and alternates
`generate_dump --memory=full` with and without --redact on it. Prints medians of wall
time, throughput (file MiB per second of wall time) and the target's longest freeze, and
the ratio redact/plain throughput (the goal: at least 0.5).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from full_memory import print_medians, run_rounds  # noqa: E402
from run import Target, build  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heap-mb", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import generate_dump

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(generate_dump.__file__)], check=False)
    work = tempfile.mkdtemp(prefix="gd-redact-")
    target_exe, _ = build(work)
    target = Target(target_exe, args.threads, args.heap_mb)

    def cmd(extra):
        return lambda out: [sys.executable, "-m", "generate_dump", "--memory", "full",
                            str(target.pid), "-o", os.path.join(out, "dump.dmp"), *extra]

    tools = {"full": cmd([]), "full --redact": cmd(["--redact"])}
    results = run_rounds(tools, args.rounds, work, target)
    print(f"### --redact on a full dump, {args.heap_mb} MiB touched heap, {args.threads} "
          f"threads (medians of {args.rounds})\n")
    med = print_medians("dump", results)
    ratio = ((med["full --redact"]["size"] / med["full --redact"]["wall"])
             / (med["full"]["size"] / med["full"]["wall"]))
    print(f"\nthroughput with --redact / without: {ratio:.2f} (goal: >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
