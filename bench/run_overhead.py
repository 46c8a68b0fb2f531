"""What `generate_dump run` costs the command it watches: wall time bare vs under `run`.

Workloads (issue #14 part 2): a shell loop starting 300 /bin/true, Python starting and
joining 300 threads (and 3000: 300 take only ~0.05 s here), a C program raising and
handling 200,000 SIGUSR1, a JVM loop whose NullPointerExceptions HotSpot detects with
SIGSEGV, a small pytest suite that spawns processes (subprocess, shell pipelines, a
multiprocessing pool, os.system) and a real one (generate_dump's own CLI tests). Each is run
bare, under `generate_dump run` (the default mode) and, with --trace, under
`generate_dump run --trace`, in rotating order; the table shows the fastest and median
wall time of each, the least CPU time of the whole tree (run included: less sensitive to
other load on the machine than wall time) and both ratios to the bare runs. Every run must
exit as the bare run does and print the same result, else the bench fails.

    python3 bench/run_overhead.py [--rounds 5] [--trace] [--only NAME,...]
    scripts/bench run_overhead.py ...
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FILES = HERE / "run_overhead"
sys.path.insert(0, str(HERE))
from _common import cpu_busy, rotated  # noqa: E402


def wait_idle(budget: list[float], limit: float = 0.25) -> bool:
    """Wait (spending from ``budget``) until the CPUs are under ``limit`` busy."""
    while budget[0] > 0:
        start = time.monotonic()
        if cpu_busy() < limit:
            return True
        budget[0] -= time.monotonic() - start
    return False


def build(work: Path, npe_iterations: int) -> list[tuple[str, list[str], bool]]:
    """(name, argv, output is deterministic) for each workload that can run here."""
    out = []
    out.append(("300 /bin/true from a shell loop",
                ["sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; echo $i"],
                True))
    for n in (300, 3000):
        out.append((f"Python: start and join {n} threads",
                    [sys.executable, str(FILES / "threads.py"), str(n)], True))
    subprocess.run(["gcc", "-O2", "-o", str(work / "signals"), str(FILES / "signals.c")],
                   check=True)
    out.append(("C: raise and handle 200,000 SIGUSR1", [str(work / "signals"), "200000"], True))
    if shutil.which("javac") and shutil.which("java"):
        subprocess.run(["javac", "-d", str(work), str(FILES / "Npe.java")], check=True)
        out.append((f"JVM: {npe_iterations:,} iterations, half NullPointerExceptions (SIGSEGV)",
                    ["java", "-Xshare:auto", "-cp", str(work), "Npe", str(npe_iterations)],
                    True))
    else:
        print("note: no JDK (javac, java): the JVM workload is skipped", file=sys.stderr)
    suite = work / "suite"
    shutil.copytree(FILES / "suite", suite)
    out.append(("pytest: 45 tests spawning processes",
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-p", "no:generate_dump", str(suite)], False))
    # A real project's suite: generate_dump's own CLI tests start targets, dumpers (which
    # ptrace them) and readers: 47 tests, ~6 s.
    out.append(("pytest: generate_dump's tests/test_cli.py",
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-p", "no:generate_dump", str(ROOT / "tests" / "test_cli.py")], False))
    return out


def install_copy(work: Path) -> list[str]:
    """The checkout installed the way users install it (a regular, non-editable install in
    a fresh venv), so the bench measures the `generate_dump` console script they run
    rather than `python -m` or an editable install's import hook. The venv sees this
    interpreter's site-packages for the dependencies (a .pth line)."""
    import pip
    import sysconfig

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), os.path.dirname(pip.__file__), "install",
                    "--quiet", "--no-deps", str(ROOT)], check=True)
    return [str(venv / "bin" / "generate_dump")]


def timed(argv: list[str], env: dict) -> tuple[float, float, int, str]:
    """Wall time, CPU time (user + system of the whole tree, run included), status, output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                       stdin=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.returncode, r.stdout + r.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trace", action="store_true",
                    help="also measure `run --trace` (slow: minutes for the signal workloads)")
    ap.add_argument("--only", default="", help="comma-separated substrings of workload names")
    ap.add_argument("--npe-iterations", type=int, default=2_000_000_000,
                    help="the JVM loop's iterations (issue #14 measured 2e9: ~9 s there)")
    ap.add_argument("--command", default="",
                    help="the generate_dump command to measure (default: this checkout "
                         "installed into a temporary venv, as users install it)")
    ap.add_argument("--wait-idle", type=float, default=60,
                    help="seconds to spend in all waiting for idle CPUs before runs")
    args = ap.parse_args()

    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="run_overhead-"))
    dumps = work / "dumps"
    if args.command:
        gd = args.command.split()
    else:
        try:
            gd = install_copy(work)
        except (subprocess.CalledProcessError, ImportError) as exc:
            print(f"note: cannot install a copy ({exc}); measuring `python -m generate_dump`",
                  file=sys.stderr)
            gd = [sys.executable, "-m", "generate_dump"]
            env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                             if env.get("PYTHONPATH") else "")
    kind = "python -m"
    if len(gd) == 1:  # the installed command: the launcher, or pip's Python script
        with open(shutil.which(gd[0]) or gd[0], "rb") as f:
            kind = "native launcher" if f.read(4) == b"\x7fELF" else "Python"
    print(f"generate_dump command: {' '.join(gd)} ({kind})", file=sys.stderr)
    modes = {"bare": []}
    modes["run"] = gd + ["run", "--output-dir", str(dumps), "--"]
    if args.trace:
        modes["run --trace"] = gd + ["run", "--trace", "--output-dir", str(dumps), "--"]
    budget = [args.wait_idle]
    busy_starts = 0
    failures = []
    rows = []
    fixed: dict[str, list[tuple[float, float]]] = {}
    try:
        workloads = build(work, args.npe_iterations)
        if args.only:
            keys = [k.strip().lower() for k in args.only.split(",")]
            workloads = [w for w in workloads if any(k in w[0].lower() for k in keys)]
        for name, argv, deterministic in workloads:
            times: dict[str, list[float]] = {m: [] for m in modes}
            cpus: dict[str, list[float]] = {m: [] for m in modes}
            reference = None
            for rnd in range(args.rounds):
                for mode in rotated(list(modes), rnd):
                    if not wait_idle(budget):
                        busy_starts += 1
                    t, cpu, status, output = timed(modes[mode] + argv, env)
                    print(f"{name} | {mode} | {t:.3f} s | cpu {cpu:.3f} s | exit {status}",
                          file=sys.stderr)
                    result = (status, output.strip() if deterministic else "")
                    if reference is None:
                        reference = result
                    elif result != reference:
                        failures.append(f"{name}: {mode} gave {result}, expected {reference}")
                    times[mode].append(t)
                    cpus[mode].append(cpu)
            base = min(times["bare"])
            rows.append((name, {m: (min(v), statistics.median(v), min(cpus[m]))
                                for m, v in times.items()}, base))
        # The fixed cost: starting the interpreter, and run's own start and exit.
        fixed = {m: [] for m in modes}
        for rnd in range(max(5, args.rounds)):
            for mode in modes:
                wait_idle(budget)
                fixed[mode].append(timed(modes[mode] + ["true"], env)[:2])
        if any(dumps.glob("*.dmp")) if dumps.exists() else False:
            failures.append(f"dumps were written in {dumps}: none expected")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    head = "| workload | bare: wall min / median, CPU |" + "".join(
        f" `{m}`: wall min / median, CPU | wall ratio | CPU ratio |" for m in modes if m != "bare")
    print(head)
    print("|---|---:|" + "---:|---:|---:|" * (len(modes) - 1))
    for name, stats, base in rows:
        cells = [f"{stats['bare'][0]:.2f} / {stats['bare'][1]:.2f} s, {stats['bare'][2]:.2f} s"]
        for m in modes:
            if m == "bare":
                continue
            cells.append(f"{stats[m][0]:.2f} / {stats[m][1]:.2f} s, {stats[m][2]:.2f} s")
            cells.append(f"{stats[m][0] / base:.2f}x")
            cells.append(f"{stats[m][2] / max(stats['bare'][2], 1e-3):.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nFixed cost (`true`, fastest of {}): ".format(max(5, args.rounds)) + ", ".join(
        f"{m} {min(w for w, _ in v) * 1000:.0f} ms wall, {min(c for _, c in v) * 1000:.0f} ms CPU"
        for m, v in fixed.items()))
    print(f"\n{args.rounds} rounds; wall ratio = fastest run in that mode / fastest bare run; "
          "CPU ratio = least CPU time (user + system of the tree, run included) / bare's; "
          f"{busy_starts} run(s) started while the CPUs were more than 25% busy.")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
