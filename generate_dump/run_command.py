"""`generate_dump run [OPTIONS] -- COMMAND [ARG...]`: crash and hang capture for CI.

Runs COMMAND, writes a minidump of any process of its tree that dies of a crash signal,
and on --timeout dumps every live process, then ends the tree and exits 124 like
timeout(1). Otherwise it exits with COMMAND's own status. By default nothing is traced
(crashes come from the kernel's core dumps; see backends/linux/supervisor.py); --trace
follows every process as its tracer (backends/linux/tracer.py). Both report through the
same naming (dump_file_name) and summary (inspect_dump.summarize_snapshot) as the pytest
plugin and the ci/ hooks.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Optional

import click

from .errors import DumpError

PROG = "generate_dump run"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"'{text}' is not a duration; use e.g. 90, 30s, 500ms, 5m, 1h")
    return float(m.group(1)) * _UNITS[m.group(2)]


_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise click.BadParameter(f"'{text}' is not a size; use e.g. 0, 512M, 2G")
    return int(m.group(1)) * _SIZES[m.group(2).lower()]


def dump_file_name(exe: str, pid: int, reason: str, when: Optional[float] = None) -> str:
    """`<exe>-<pid>-<reason>-<UTC time>.dmp`: sorts by program, safe as a CI artifact name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when if when is not None else time.time()))
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", exe)[:64] or "process"
    return f"{safe}-{pid}-{reason}-{stamp}.dmp"


def _describe(event) -> str:
    from .inspect_dump import exception_names
    from .snapshot import OS

    e = event.exception
    if event.reason == "timeout":
        what = "was still running at the timeout"
    elif e is not None:
        _, code = exception_names(OS.LINUX, e.code, e.flags)
        what = f"got {event.reason}" + (f" ({code})" if code else "")
        if e.address or e.code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
            what += f" at 0x{e.address:x}"
        what += f" in thread {e.thread_id}"
    else:
        what = f"got {event.reason}"
    return f"process {event.pid} ({event.exe}) {what}"


class _Reporter:
    """Prints one block per dump on stderr; inside GitHub Actions as a group with ::error::."""

    def __init__(self, github: bool):
        self.github = github

    def __call__(self, event) -> None:
        line = _describe(event)
        if event.path:
            detail = f"minidump: {event.path}"
        else:
            detail = f"no minidump: {event.error}"
        out = sys.stderr
        if self.github:
            out.write(f"::group::{PROG}: {line}\n")
            out.write(f"{detail}\n")
            summary = _stack_summary(event)
            if summary:
                out.write(summary + "\n")
            out.write("::endgroup::\n")
            out.write(f"::error::{line}; {detail}\n")
        else:
            out.write(f"{PROG}: {line}; {detail}\n")
            summary = _stack_summary(event)
            if summary:
                out.write(summary + "\n")
        out.flush()


def _stack_summary(event) -> str:
    """Top frames of each thread, crashing thread first (when the stack walker exists)."""
    if event.snapshot is None:
        return ""
    from .inspect_dump import summarize_snapshot

    try:
        return summarize_snapshot(event.snapshot)
    except Exception:  # noqa: BLE001 - a summary must never break the run
        return ""


def _read_core(path: str):
    """A core file as a Snapshot (the core reader lives in sources/core.py)."""
    try:
        from .sources.core import read_core
    except ImportError:
        raise DumpError("this build has no core file reader; use --trace") from None
    return read_core(path)


@click.command(name="run", context_settings={"help_option_names": ["-h", "--help"],
                                             "ignore_unknown_options": False})
@click.option("--timeout", "timeout", metavar="DURATION", callback=lambda c, p, v: (
    parse_duration(v) if v is not None else None),
              help="Dump every process of the tree after DURATION (90, 30s, 500ms, 5m, 1h), "
                   "then end the tree (SIGTERM, SIGKILL after --kill-after) and exit 124.")
@click.option("--output-dir", default=".", show_default=True, metavar="DIR",
              help="Where the minidumps go (created if missing).")
@click.option("--max-dumps", default=10, show_default=True, type=click.IntRange(0),
              help="Write at most this many minidumps.")
@click.option("--kill-after", default="5s", show_default=True, metavar="DURATION",
              callback=lambda c, p, v: parse_duration(v),
              help="After the timeout's SIGTERM, wait this long before SIGKILL.")
@click.option("--dump-on-signal", is_flag=True,
              help="When run itself gets SIGINT, SIGTERM or SIGHUP (a cancelled CI job), "
                   "dump every process of the tree before passing the signal on.")
@click.option("--trace", is_flag=True,
              help="Follow every process as its tracer (ptrace) instead of relying on core "
                   "dumps: also catches crashes the kernel writes no core for and faults "
                   "a handler re-raises, at a cost on every fork, exec and signal.")
@click.option("--core-limit", default="2G", show_default=True, metavar="SIZE",
              callback=lambda c, p, v: parse_size(v),
              help="Default mode: the RLIMIT_CORE soft limit given to the command so the "
                   "kernel writes the cores run converts (0: no crash capture).")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARG...]")
def run_command(timeout: Optional[float], output_dir: str, max_dumps: int, kill_after: float,
                dump_on_signal: bool, trace: bool, core_limit: int,
                command: tuple[str, ...]) -> None:
    """Run COMMAND; write a minidump of any of its processes that crashes, or of all of
    them when --timeout expires.

    A process that dies of SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS,
    SIGQUIT, SIGXCPU or SIGXFSZ is dumped with an Exception stream: by default from the
    core file the kernel writes (RLIMIT_CORE is raised for the command; a core that would
    not have been written without run is deleted once converted); with --trace just
    before it dies. Signals the program handles are never touched. Exit status: COMMAND's
    own (128+N if killed by signal N), 124 after a timeout. Dump files are named
    EXE-PID-REASON-UTCTIME.dmp.
    """
    if not sys.platform.startswith("linux"):
        raise DumpError("`generate_dump run` needs Linux (ptrace)")
    from .output import write_snapshot

    out_dir = os.path.abspath(output_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create output directory {out_dir}: {exc.strerror}") from None

    def write(snapshot, pid: int, exe: str, reason: str) -> str:
        path = os.path.join(out_dir, dump_file_name(exe, pid, reason, snapshot.time or None))
        write_snapshot(snapshot, path)
        return path

    def notice(text: str) -> None:
        sys.stderr.write(f"{PROG}: {text}\n")
        sys.stderr.flush()

    common = dict(timeout=timeout, max_dumps=max_dumps, kill_after=kill_after, write=write,
                  on_dump=_Reporter(os.environ.get("GITHUB_ACTIONS") == "true"),
                  dump_on_signal=dump_on_signal, notice=notice)
    if trace:
        from .backends.linux.tracer import Runner

        runner = Runner(list(command), **common)
    else:
        from .backends.linux.supervisor import Supervisor

        runner = Supervisor(list(command), core_limit=core_limit, convert_core=_read_core,
                            **common)
    runner.start()
    result = runner.run()
    if result.timed_out:
        sys.stderr.write(f"{PROG}: timed out after {timeout:g} s; "
                         f"{sum(1 for d in result.dumps if d.path)} minidump(s) written\n")
    # Exit at once: the interpreter's orderly shutdown (tearing down every module) costs
    # tens of milliseconds that the command's caller would wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result.status)
