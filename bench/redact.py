"""--redact on a full dump: throughput with and without it, on the same process.

    python3 bench/redact.py [--heap-mb 1024] [--threads 10] [--rounds 3]

Builds bench/target.c, starts it with HEAP_MB of touched heap, and alternates
`generate_dump --memory=full` with and without --redact on it. Prints medians of wall
time, throughput (file MiB per second of wall time) and the target's longest freeze, and
the ratio redact/plain throughput (the goal: at least 0.5).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import heap_target, print_medians, run_rounds  # noqa: E402


def main(argv=None) -> int:
    args, work, target = heap_target(__doc__.splitlines()[0], argv, "gd-redact-")

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
