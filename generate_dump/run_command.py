"""`generate_dump run [OPTIONS] -- COMMAND [ARG...]`: crash and hang capture for CI.

Runs COMMAND, writes a minidump of any process of its tree that dies of a crash signal,
and on --timeout dumps every live process, then ends the tree and exits 124 like
timeout(1). Otherwise it exits with COMMAND's own status. By default nothing is traced
(crashes come from the kernel's core dumps; see backends/linux/supervisor.py); --trace
follows every process as its tracer (backends/linux/tracer.py). This module is the click
command; the work is in run_session.py, whose dump_file_name and report format the pytest
plugin and the ci/ hooks share (importable from here too).
"""

from __future__ import annotations

from typing import Optional

import click

from .run_session import PROG, dump_file_name, duration, finish, size, start  # noqa: F401


def parse_duration(text: str) -> float:
    try:
        return duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_size(text: str) -> int:
    try:
        return size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
# --redact (issue 19): on by default here, as CI uploads these dumps; see README "Redaction".
@click.option("--redact/--no-redact", default=True, show_default=True,
              help="Sanitize the dumps for upload (see generate_dump --help).")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARG...]")
def run_command(timeout: Optional[float], output_dir: str, max_dumps: int, kill_after: float,
                dump_on_signal: bool, trace: bool, core_limit: int, redact: bool,
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
    finish(start(list(command), timeout=timeout, output_dir=output_dir, max_dumps=max_dumps,
                  kill_after=kill_after, dump_on_signal=dump_on_signal, trace=trace,
                  core_limit=core_limit, redact=redact))
