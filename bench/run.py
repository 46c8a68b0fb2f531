#!/usr/bin/env python3
"""Freeze-time benchmark: generate_dump against a minimal C ptrace probe, gdb's gcore and LLDB.

    python3 bench/run.py [--threads 1,10,100,1000] [--rounds 5] [--heap-mb 0]
                         [--tools generate_dump,generate_dump-r,probe,gcore,lldb]
                         [--timeout 60] [--skip gcore@1000] [--json FILE]

For each thread count a target (bench/target.c) is started once; every round runs each
tool once against it, in an order rotated from round to round. Around each run the
target's ticker is reset and read: the longest gap between its 1 ms wakeups, minus the
1 ms tick, is the freeze. Medians are printed as Markdown tables. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import compile_package, cpu_busy, rotated  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
ALL_TOOLS = ["generate_dump", "generate_dump-r", "generate_dump-nopy", "probe", "gcore", "lldb"]
DEFAULT_TOOLS = ["generate_dump", "generate_dump-r", "probe", "gcore", "lldb"]
LLDB = "lldb-22"
LLDB_SERVER = "/usr/lib/llvm-22/bin/lldb-server"

# Numbers quoted in the project issue (2-core machines, medians), in ms, by thread count.
CRASHPAD_FREEZE = {100: 12.0, 1000: 177.0}
C_MINIMAL_FREEZE = {100: 4.0, 1000: 32.0}
QUOTED_PEERS = {"Breakpad": {100: 292.0, 1000: 2958.0},
                "gcore": {100: 442.0, 1000: 15000.0},
                "LLDB": {100: 349.0, 1000: 3100.0}}
PROBE_FACTOR = 2.5  # goal: generate_dump freeze within 2.5x of the minimal C program


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- building -------------------------------------------------------------------------------


def build(workdir: str) -> tuple[str, str]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        sys.exit("run.py: gcc is needed to build bench/target.c and bench/probe.c "
                 "(apt-get install gcc)")
    target = os.path.join(workdir, "target")
    probe = os.path.join(workdir, "probe")
    for src, out, extra in (("target.c", target, ["-pthread"]), ("probe.c", probe, [])):
        cmd = [cc, "-O2", "-Wall", "-o", out, os.path.join(BENCH, src)] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"run.py: building {src} failed:\n{r.stderr}")
    return target, probe


# --- the target -----------------------------------------------------------------------------


class Target:
    """A running bench/target with its control pipe."""

    def __init__(self, exe: str, nthreads: int, heap_mb: int = 0, stack_kb: int = 0,
                 tick_us: int = 1000):
        self.exe, self.nthreads, self.heap_mb = exe, nthreads, heap_mb
        self.tick_ms = tick_us / 1000.0
        argv = list(exe) if isinstance(exe, (list, tuple)) else [exe]
        self.proc = subprocess.Popen(argv + [str(nthreads), str(heap_mb), str(stack_kb),
                                             str(tick_us)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self._readline(120.0)
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"target did not start: {line!r}")
        self.pid = int(line.split()[1])

    def _readline(self, timeout: float) -> str:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError("target did not answer")
        return self.proc.stdout.readline().strip()

    def command(self, cmd: str, timeout: float = 10.0) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._readline(timeout)

    def reset(self) -> None:
        answer = self.command("reset")
        if answer != "ok":
            raise RuntimeError(f"target answered {answer!r} to reset")

    def gap(self) -> tuple[float, int, float]:
        """(longest gap between ticks in ms, ticks so far, CLOCK_MONOTONIC s when it began)."""
        parts = self.command("gap").split()
        return int(parts[0]) / 1000.0, int(parts[1]), int(parts[3]) / 1e6

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def tracers_of(pid: int) -> dict[int, int]:
    """tid -> TracerPid for every traced thread of ``pid``."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("TracerPid:"):
                        tracer = int(line.split()[1])
                        if tracer:
                            out[int(tid)] = tracer
                        break
        except OSError:
            pass
    return out


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def main_thread_free(pid: int) -> bool:
    """The main thread (the ticker) is neither traced nor stopped: one cheap /proc read."""
    try:
        with open(f"/proc/{pid}/task/{pid}/status") as f:
            text = f.read()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return (fields.get("TracerPid", "0").strip() == "0"
            and not fields.get("State", "").strip().startswith(("T", "t")))


def make_untraced(target: Target, tool_sid: Optional[int]) -> list[str]:
    """Make sure no tracer is left on the target and that it runs; returns what was done."""
    notes = []
    deadline = time.monotonic() + 3.0
    while tracers_of(target.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = set(tracers_of(target.pid).values())
    for tracer in left:
        # Only a process that the tool we started left behind (same session) is ours to end.
        try:
            sid = os.getsid(tracer)
        except OSError:
            continue
        if tool_sid is not None and sid == tool_sid:
            notes.append(f"tracer {tracer} was still attached after the tool exited; killed it")
            try:
                os.kill(tracer, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            notes.append(f"tracer {tracer} (not started by the bench) is attached to the target")
    if left:
        deadline = time.monotonic() + 3.0
        while tracers_of(target.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    if proc_state(target.pid) in ("T", "t"):
        notes.append("target was left stopped; sent SIGCONT")
        os.kill(target.pid, signal.SIGCONT)
    return notes


# --- a quiet machine ------------------------------------------------------------------------


class IdleWaiter:
    """Waits, before each run, until no other work keeps the CPUs busy; a total budget."""

    THRESHOLD = 0.10

    def __init__(self, budget: float):
        self.budget = budget
        self.waited = 0.0
        self.busy_runs = 0  # runs started while the machine was still busy

    def wait(self) -> None:
        if self.budget <= 0:
            return
        start = time.monotonic()
        while True:
            busy = cpu_busy()
            if busy < self.THRESHOLD:
                break
            if self.waited + (time.monotonic() - start) >= self.budget:
                self.busy_runs += 1
                break
        self.waited += time.monotonic() - start


# --- running a tool -------------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    threads: int
    round: int
    status: str = "ok"  # ok, error, timeout, skipped
    freeze_ms: Optional[float] = None
    wall_ms: Optional[float] = None
    rss_mib: Optional[float] = None
    file_kib: Optional[float] = None
    ticks: Optional[int] = None
    gap_offset_ms: Optional[float] = None  # when the longest gap began, from the tool's spawn
    self_window_ms: Optional[float] = None  # the probe's own first-SEIZE-to-last-DETACH
    exit_code: Optional[int] = None
    message: str = ""
    notes: list = field(default_factory=list)


_running_pgid: Optional[int] = None


def tool_command(tool: str, pid: int, outdir: str, probe: str) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if tool == "generate_dump":
        return [sys.executable, "-m", "generate_dump", str(pid), "-o",
                os.path.join(outdir, "out.dmp")], env
    if tool == "generate_dump-nopy":  # the same without looking for CPython
        return [sys.executable, "-m", "generate_dump", "--no-python", str(pid), "-o",
                os.path.join(outdir, "out.dmp")], env
    if tool == "generate_dump-r":
        return [sys.executable, "-m", "generate_dump", "-r", str(pid), "-o",
                os.path.join(outdir, "out.dmp")], env
    if tool == "probe":
        return [probe, str(pid), "-o", os.path.join(outdir, "probe.txt")], env
    if tool == "gcore":
        return ["gcore", "-o", os.path.join(outdir, "core"), str(pid)], env
    if tool == "lldb":
        env["LLDB_DEBUGSERVER_PATH"] = LLDB_SERVER
        return [LLDB, "-b", "-p", str(pid), "-o",
                f"process save-core --plugin-name=minidump --style=stack "
                f"{os.path.join(outdir, 'out.dmp')}", "-o", "process detach"], env
    raise ValueError(tool)


def run_tool(tool: str, target: Target, rnd: int, workdir: str, probe: str,
             timeout: float) -> Run:
    global _running_pgid
    run = Run(tool, target.nthreads, rnd)
    outdir = tempfile.mkdtemp(prefix=f"{tool}-", dir=workdir)
    logpath = os.path.join(workdir, "tool.log")
    cmd, env = tool_command(tool, target.pid, outdir, probe)
    target.reset()
    with open(logpath, "wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        _running_pgid = proc.pid
        pidfd = os.pidfd_open(proc.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            done = bool(poller.poll(timeout * 1000))
            if not done:
                run.status = "timeout"
                os.killpg(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            t1 = time.monotonic()
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the tool and whatever it started go first.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.wait4(proc.pid, 0)
            raise
        finally:
            os.close(pidfd)
            proc.returncode = 0  # reaped above; keep Popen from trying again
            _running_pgid = None
    # Whatever the tool left in its session (lldb-server, gdb) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # Read the ticker first when its thread is free, so that the bench's own checks (reading
    # the status of every thread) are not part of the gap; then make sure no tracer is left.
    if target.alive() and main_thread_free(target.pid):
        gap_ms, ticks, gap_at = target.gap()
        run.notes.extend(make_untraced(target, proc.pid))
    else:
        run.notes.extend(make_untraced(target, proc.pid))
        if not target.alive():
            run.status = "error"
            run.message = "the target died"
            shutil.rmtree(outdir, ignore_errors=True)
            return run
        gap_ms, ticks, gap_at = target.gap()
    run.ticks = ticks
    run.gap_offset_ms = (gap_at - t0) * 1000.0
    run.wall_ms = (t1 - t0) * 1000.0
    run.rss_mib = rusage.ru_maxrss / 1024.0
    run.exit_code = os.waitstatus_to_exitcode(status)
    with open(logpath, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if run.status == "timeout":
        run.message = f"no exit within {timeout:g} s; killed"
    else:
        run.freeze_ms = max(0.0, gap_ms - target.tick_ms)
        if run.exit_code != 0:
            run.status = "error"
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            run.message = f"exit {run.exit_code}: " + " | ".join(tail)
        elif tool == "probe":
            m = re.search(r"frozen (\d+) us", text)
            if m:
                run.self_window_ms = int(m.group(1)) / 1000.0
        elif tool.startswith("generate_dump"):
            warnings = [ln for ln in text.splitlines() if "warning:" in ln]
            if warnings:
                run.notes.append("; ".join(warnings))
    size = 0
    for name in os.listdir(outdir):
        try:
            size += os.stat(os.path.join(outdir, name)).st_size
        except OSError:
            pass
    run.file_kib = size / 1024.0
    shutil.rmtree(outdir, ignore_errors=True)
    return run


BUSY_SECONDS = 0.3


def idle_floor(target: Target) -> float:
    """The ticker's longest gap with no tool running, minus the tick: the noise floor."""
    target.reset()
    time.sleep(BUSY_SECONDS)
    gap_ms, _, _ = target.gap()
    return max(0.0, gap_ms - target.tick_ms)


def busy_floor(target: Target) -> float:
    """The same while an unrelated Python process keeps one CPU busy for BUSY_SECONDS.

    Any tool that runs for a while costs the ticker this much without stopping anything
    (on these VMs a busy CPU delays the other CPU's timer wakeups by a millisecond or more
    now and then), so at small thread counts freezes below this are noise."""
    target.reset()
    subprocess.run([sys.executable, "-c", "import time\nt = time.monotonic()\n"
                    f"while time.monotonic() - t < {BUSY_SECONDS}: pass"], check=False)
    gap_ms, _, _ = target.gap()
    return max(0.0, gap_ms - target.tick_ms)


# --- reporting ------------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def interp(table: dict[int, float], n: int) -> tuple[Optional[float], bool]:
    """Linear interpolation between the quoted sizes; (value, interpolated) or (None, False)."""
    if n in table:
        return table[n], False
    sizes = sorted(table)
    for a, b in zip(sizes, sizes[1:]):
        if a < n < b:
            return table[a] + (table[b] - table[a]) * (n - a) / (b - a), True
    return None, False


def fmt(v: Optional[float], digits: int = 1) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


@dataclass
class Summary:
    tool: str
    status: str
    freeze: Optional[float] = None
    freeze_min: Optional[float] = None
    freeze_max: Optional[float] = None
    wall: Optional[float] = None
    rss: Optional[float] = None
    file_kib: Optional[float] = None
    ok: int = 0
    total: int = 0


def summarize(tool: str, runs: list[Run]) -> Summary:
    s = Summary(tool, "ok", total=len(runs))
    ok = [r for r in runs if r.status == "ok"]
    s.ok = len(ok)
    if not runs:
        s.status = "skipped"
        return s
    if not ok:
        statuses = {r.status for r in runs}
        s.status = "timeout" if "timeout" in statuses else sorted(statuses)[0]
        return s
    freezes = [r.freeze_ms for r in ok]
    s.freeze, s.freeze_min, s.freeze_max = median(freezes), min(freezes), max(freezes)
    s.wall = median([r.wall_ms for r in ok])
    s.rss = median([r.rss_mib for r in ok])
    s.file_kib = median([r.file_kib for r in ok])
    return s


def table_for(n: int, summaries: dict[str, Summary], floor: Optional[float],
              busy: Optional[float], skipped_notes: list[str],
              probe_window: Optional[float] = None) -> list[str]:
    probe = summaries.get("probe")
    probe_f = probe.freeze if probe and probe.status == "ok" else None
    crash, crash_interp = interp(CRASHPAD_FREEZE, n)
    crash_label = (f"{crash:.0f} ms{' interp.' if crash_interp else ''}" if crash is not None
                   else "n/a")
    lines = [f"### {n} parked threads ({n + 2} threads with the ticker and the control thread)",
             "",
             f"| tool | freeze ms | freeze min–max | wall ms | peak RSS MiB | file KiB "
             f"| freeze / probe | freeze / Crashpad ({crash_label}) | runs ok |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tool, s in summaries.items():
        if s.status != "ok":
            lines.append(f"| {tool} | {s.status} | | | | | | | {s.ok}/{s.total} |")
            continue
        label = tool + (" (longest pause)" if tool == "generate_dump-r" else "")
        vs_probe = (f"{s.freeze / probe_f:.2f}x" if probe_f and tool != "probe" else
                    ("1.00x" if tool == "probe" and probe_f else "n/a"))
        vs_crash = f"{s.freeze / crash:.2f}x" if crash else "n/a"
        lines.append(f"| {label} | {fmt(s.freeze)} | {fmt(s.freeze_min)}–{fmt(s.freeze_max)} "
                     f"| {fmt(s.wall, 0)} | {fmt(s.rss)} | {fmt(s.file_kib, 0)} | {vs_probe} "
                     f"| {vs_crash} | {s.ok}/{s.total} |")
    lines.append("")
    if floor is not None:
        lines.append(f"Ticker noise floor (median of the rounds): {floor:.2f} ms idle, "
                     f"{fmt(busy, 2)} ms while another process keeps one CPU busy for "
                     f"{BUSY_SECONDS:g} s.")
    if probe_window is not None:
        lines.append(f"The probe's own window, first SEIZE to last DETACH: {probe_window:.1f} ms "
                     "(the ticker sees less: not the other threads' detach, and up to one tick "
                     "of its sleep had already passed when it was stopped).")
    lines.extend(skipped_notes)
    lines.extend(goal_lines(n, summaries, probe_f, crash, crash_interp, busy))
    lines.append("")
    return lines


def goal_lines(n: int, summaries: dict[str, Summary], probe_f: Optional[float],
               crash: Optional[float], crash_interp: bool, busy: Optional[float]) -> list[str]:
    gd = summaries.get("generate_dump")
    if not gd or gd.status != "ok":
        return []
    out = []

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**NO**"

    if crash is not None:
        out.append(f"- generate_dump freeze {gd.freeze:.1f} ms <= Crashpad's "
                   f"{crash:.0f} ms{' (interpolated)' if crash_interp else ''}: "
                   f"{verdict(gd.freeze <= crash)}")
    if probe_f:
        goal = "(goal at 100 and 1000)" if n in (100, 1000) else "(informative at this size)"
        if busy is not None and gd.freeze <= busy:
            goal += " (generate_dump's freeze is within the busy-CPU noise floor here)"
        out.append(f"- generate_dump freeze within {PROBE_FACTOR}x of the probe "
                   f"({PROBE_FACTOR * probe_f:.1f} ms) {goal}: "
                   f"{verdict(gd.freeze <= PROBE_FACTOR * probe_f)} ({gd.freeze / probe_f:.2f}x)")
    c_min = C_MINIMAL_FREEZE.get(n)
    if c_min is not None:
        out.append(f"- vs the issue's minimal C program ({c_min:.0f} ms quoted): "
                   f"{gd.freeze / c_min:.2f}x")
    for peer in ("gcore", "lldb"):
        s = summaries.get(peer)
        if s and s.status == "ok":
            out.append(f"- generate_dump wall {gd.wall:.0f} ms < {peer} wall {s.wall:.0f} ms "
                       f"(measured): {verdict(gd.wall < s.wall)}")
        elif s and s.status == "timeout":
            out.append(f"- generate_dump wall {gd.wall:.0f} ms < {peer} (timed out): yes")
    bp, bp_interp = interp(QUOTED_PEERS["Breakpad"], n)
    if bp is not None:
        out.append(f"- generate_dump wall {gd.wall:.0f} ms < Breakpad's quoted {bp:.0f} ms"
                   f"{' (interpolated)' if bp_interp else ''}: {verdict(gd.wall < bp)}")
    return out


def slope_lines(sizes: list[int], by_size: dict[int, dict[str, Summary]]) -> list[str]:
    if len(sizes) < 2:
        return []
    a, b = sizes[-2], sizes[-1]
    lines = [f"### Per-thread cost (slope between {a} and {b} threads)", "",
             "| tool | freeze µs/thread | wall µs/thread |", "|---|---:|---:|"]
    tools = list(by_size[b])
    for tool in tools:
        sa, sb = by_size[a].get(tool), by_size[b].get(tool)
        if not (sa and sb and sa.status == "ok" and sb.status == "ok"):
            lines.append(f"| {tool} | n/a | n/a |")
            continue
        fs = (sb.freeze - sa.freeze) * 1000.0 / (b - a)
        ws = (sb.wall - sa.wall) * 1000.0 / (b - a)
        lines.append(f"| {tool} | {fs:.1f} | {ws:.1f} |")
    lines.append("")
    lines.append("Quoted for reference (100 to 1000 threads): Crashpad "
                 f"{(CRASHPAD_FREEZE[1000] - CRASHPAD_FREEZE[100]) * 1000 / 900:.0f} µs/thread, "
                 "the issue's minimal C program "
                 f"{(C_MINIMAL_FREEZE[1000] - C_MINIMAL_FREEZE[100]) * 1000 / 900:.0f} µs/thread.")
    lines.append("")
    return lines


# --- main -----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,10,100,1000",
                   help="comma-separated parked-thread counts (default 1,10,100,1000)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each tool per size (default 5)")
    p.add_argument("--heap-mb", type=int, default=0, help="touched heap in the target, MiB")
    p.add_argument("--stack-kb", type=int, default=0,
                   help="extra KiB of live, written stack in every parked thread (default 0: "
                        "about 6 KiB each)")
    p.add_argument("--tick-us", type=int, default=1000,
                   help="the ticker's sleep in microseconds (default 1000); freeze = longest "
                        "gap minus one tick, so a shorter tick resolves short freezes better")
    p.add_argument("--python", metavar="EXE",
                   help="target: bench/python_target.py run by this CPython instead of "
                        "bench/target.c (with --tools generate_dump,generate_dump-nopy: the "
                        "cost of Python capture)")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                   help=f"comma-separated, from {','.join(ALL_TOOLS)}")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds before a tool run is killed and reported as timeout "
                        "(default 60); a tool that timed out is not run again at that size")
    p.add_argument("--skip", action="append", default=[], metavar="TOOL@N",
                   help="do not run TOOL at N threads (repeatable), e.g. --skip gcore@1000")
    p.add_argument("--wait-idle", type=float, default=120.0, metavar="SECONDS",
                   help="before each run wait until the CPUs are idle (under 10%% busy), "
                        "spending at most SECONDS in all (default 120; 0 turns it off)")
    p.add_argument("--json", metavar="FILE", help="also write every run as JSON to FILE")
    p.add_argument("--keep-build", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(x) for x in args.threads.split(",") if x.strip()})
    except ValueError:
        p.error("--threads takes comma-separated whole numbers")
    if not args.sizes or min(args.sizes) < 0:
        p.error("--threads needs at least one count >= 0")
    args.tool_list = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in args.tool_list:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r}; known: {', '.join(ALL_TOOLS)}")
    args.skips = set()
    for s in args.skip:
        tool, _, n = s.partition("@")
        if tool not in ALL_TOOLS or not n.isdigit():
            p.error(f"--skip takes TOOL@N, e.g. gcore@1000 (got {s!r})")
        args.skips.add((tool, int(n)))
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def available(tools: list[str]) -> tuple[list[str], list[str]]:
    keep, notes = [], []
    for t in tools:
        if t == "gcore" and not (shutil.which("gcore") and shutil.which("gdb")):
            notes.append("gcore skipped: gdb is not installed (apt-get install gdb)")
            continue
        if t == "lldb" and not shutil.which(LLDB):
            notes.append(f"lldb skipped: {LLDB} is not installed (scripts/install-test-deps "
                         "installs LLDB 22)")
            continue
        if t == "lldb" and not os.path.exists(LLDB_SERVER):
            notes.append(f"lldb skipped: {LLDB_SERVER} is missing")
            continue
        keep.append(t)
    return keep, notes


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    tools, notes = available(args.tool_list)
    idle = IdleWaiter(args.wait_idle)
    workdir = tempfile.mkdtemp(prefix="gd-bench-")
    targets: list[Target] = []
    all_runs: list[Run] = []
    by_size: dict[int, dict[str, Summary]] = {}
    output: list[str] = []
    problems: list[str] = []
    floors_all: dict[int, Optional[float]] = {}
    busy_all: dict[int, Optional[float]] = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        target_exe, probe_exe = build(workdir)
        if args.python:
            target_exe = [args.python, os.path.join(BENCH, "python_target.py")]
        compile_package()  # measure generate_dump as installed: compiled to bytecode
        for n in args.sizes:
            log(f"== {n} threads: starting target")
            target = Target(target_exe, n, args.heap_mb, args.stack_kb, args.tick_us)
            targets.append(target)
            runs: dict[str, list[Run]] = {t: [] for t in tools}
            gave_up: set[str] = set()
            floors = []
            busy_floors = []
            skipped_notes = []
            for t in tools:
                if (t, n) in args.skips:
                    skipped_notes.append(f"{t} skipped at {n} threads (--skip).")
            for rnd in range(args.rounds):
                idle.wait()
                floors.append(idle_floor(target))
                idle.wait()
                busy_floors.append(busy_floor(target))
                for tool in rotated(tools, rnd):
                    if (tool, n) in args.skips or tool in gave_up:
                        continue
                    if not target.alive():
                        log("   target died; restarting it")
                        problems.append(f"{n} threads: the target died before {tool}, "
                                        f"round {rnd + 1}")
                        target.kill()
                        target = Target(target_exe, n, args.heap_mb, args.stack_kb, args.tick_us)
                        targets.append(target)
                    idle.wait()
                    run = run_tool(tool, target, rnd, workdir, probe_exe, args.timeout)
                    runs[tool].append(run)
                    all_runs.append(run)
                    if run.status == "timeout":
                        gave_up.add(tool)
                    log(f"   round {rnd + 1} {tool:16s} {run.status:7s} "
                        f"freeze {fmt(run.freeze_ms)} ms  wall {fmt(run.wall_ms, 0)} ms  "
                        f"rss {fmt(run.rss_mib)} MiB  file {fmt(run.file_kib, 0)} KiB"
                        + (f"  {run.message}" if run.message else ""))
                    for note in run.notes:
                        log(f"      note: {note}")
                    # Let the machine settle (a deleted core file, exiting helpers).
                    time.sleep(0.1)
            left = make_untraced(target, None)
            for note in left:
                problems.append(f"{n} threads, at the end: {note}")
            target.command("quit") if target.alive() else None
            target.kill()
            for t in tools:
                if t in gave_up:
                    skipped_notes.append(f"{t} timed out at {n} threads (limit {args.timeout:g} s"
                                         "); not run again at this size.")
            summaries = {t: summarize(t, runs[t]) for t in tools}
            by_size[n] = summaries
            floors_all[n] = median(floors)
            busy_all[n] = median(busy_floors)
            for t in tools:
                for r in runs[t]:
                    if r.status == "error":
                        problems.append(f"{t} at {n} threads, round {r.round + 1}: {r.message}")
                    for note in r.notes:
                        problems.append(f"{t} at {n} threads, round {r.round + 1}: {note}")
            probe_window = median([r.self_window_ms for r in runs.get("probe", [])
                                   if r.status == "ok"])
            table = table_for(n, summaries, floors_all[n], busy_all[n], skipped_notes,
                              probe_window)
            output.extend(table)
            log("\n".join(table))
    except KeyboardInterrupt:
        log("run.py: interrupted")
        return 130
    finally:
        if _running_pgid is not None:
            try:
                os.killpg(_running_pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in targets:
            t.kill()
        if not args.keep_build:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    load_end = os.getloadavg()[0]
    print(f"## generate_dump freeze benchmark ({os.cpu_count()} CPUs, "
          f"{os.uname().release}, Python {sys.version.split()[0]})")
    print()
    print(f"Sizes {','.join(map(str, args.sizes))} parked threads; {args.rounds} rounds; "
          f"heap {args.heap_mb} MiB; extra stack {args.stack_kb} KiB per thread; "
          f"tick {args.tick_us} µs; tools {', '.join(tools)}; per-run timeout "
          f"{args.timeout:g} s. Medians. freeze = longest gap between the target's ticks minus "
          "one tick (for generate_dump-r: the longest single pause).")
    print()
    print(f"Load average (1 min): {load_start:.2f} at the start, {load_end:.2f} at the end. "
          f"Waited {idle.waited:.0f} s in all for idle CPUs before runs"
          + (f"; {idle.busy_runs} runs started on a busy machine (--wait-idle budget spent)."
             if idle.busy_runs else "."))
    busy = [n for n, f in floors_all.items() if f is not None and f > 2.0]
    if busy:
        notes.append(f"the ticker's idle noise floor was above 2 ms at "
                     f"{', '.join(map(str, busy))} threads: something else was using the CPUs, "
                     "so freezes and wall times there are inflated; rerun on a quiet machine")
    for note in notes:
        print(f"Note: {note}")
    if notes:
        print()
    print("\n".join(output))
    print("\n".join(slope_lines(args.sizes, by_size)))
    if problems:
        print("### Problems seen")
        print()
        seen = set()
        for p in problems:
            if p not in seen:
                seen.add(p)
                print(f"- {p}")
        print()
    print(f"Total bench time: {elapsed:.0f} s.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": args.sizes, "rounds": args.rounds, "heap_mb": args.heap_mb,
                       "stack_kb": args.stack_kb, "tick_us": args.tick_us,
                       "noise_floor_ms": floors_all, "busy_floor_ms": busy_all,
                       "runs": [asdict(r) for r in all_runs],
                       "summaries": {n: {t: asdict(s) for t, s in sm.items()}
                                     for n, sm in by_size.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
