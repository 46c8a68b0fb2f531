"""The ``generate_dump`` command inside an lldb session.

Load it with ``command script import generate_dump.lldb_command`` (or put that line in
~/.lldbinit; generate_dump must be importable by LLDB's Python). Then, with a stopped
process selected::

    (lldb) generate_dump [-o FILE] [--include-environment] [--redact]

It dumps the process as it is: no extra suspend, no detach. When the process is stopped
by a signal or an exception, the dump gets an Exception stream that says which.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

HELP = "Write a minidump of the process being debugged (as it is, without resuming it)."
LONG_HELP = """Syntax: generate_dump [-o FILE] [--include-environment] [--redact]

Writes a minidump of the selected process, which must be stopped, to FILE (default
minidump.PID in the current directory). Threads, registers, stacks, modules with build
ids or UUIDs, and the memory map are recorded; when the process is stopped by a signal
or an exception, an Exception stream names it (signal, code, fault address, thread).
The environment is left out unless --include-environment is given. --redact makes
the dump safe to upload (stack words that are not pointers become 0x0defaced, secrets
in the command line and thread names are masked; see `generate_dump scan`)."""


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # never sys.exit inside lldb
        raise _ArgError(message)


def run(debugger: Any, command: str, result: Any) -> None:
    """Execute ``generate_dump ARGS`` for the debugger's selected process."""
    import lldb  # type: ignore[import-not-found]

    from .errors import DumpError
    from .backends.lldb import snapshot_from_process
    from .output import check_output_path
    from .session import write_dump

    parser = _Parser(prog="generate_dump", add_help=False)
    parser.add_argument("-o", "--output")
    parser.add_argument("--include-environment", action="store_true")
    parser.add_argument("--redact", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        args = parser.parse_args(shlex.split(command))
    except (_ArgError, ValueError) as exc:
        result.SetError(f"generate_dump: {exc}\n{LONG_HELP}")
        return
    if args.help:
        result.AppendMessage(LONG_HELP)
        return
    target = debugger.GetSelectedTarget()
    process = target.GetProcess() if target.IsValid() else None
    if process is None or not process.IsValid():
        result.SetError("generate_dump: no process; launch or attach to one first")
        return
    if process.GetState() != lldb.eStateStopped:
        result.SetError("generate_dump: the process is running; stop it first "
                        "(process interrupt)")
        return
    try:
        out = check_output_path(args.output or f"minidump.{process.GetProcessID()}")
        snapshot = snapshot_from_process(lldb, process,
                                         include_environment=args.include_environment,
                                         with_exception=True)
        size = write_dump(snapshot, out, redact=args.redact)
    except DumpError as exc:
        result.SetError(f"generate_dump: {exc}")
        return
    why = ""
    e = snapshot.exception
    if e is not None:
        what = f"exception {e.code:#x}"
        if snapshot.system.os.value in ("linux", "android"):
            import signal

            try:
                what = signal.Signals(e.code).name
            except ValueError:
                what = f"signal {e.code}"
        why = f", {what} in thread {e.thread_id}"
    result.AppendMessage(f"generate_dump: wrote {out} ({len(snapshot.threads)} threads, "
                         f"{len(snapshot.modules)} modules, {size // 1024} KiB{why})")


class GenerateDumpCommand:
    """lldb's class-based command protocol."""

    def __init__(self, debugger: Any, internal_dict: dict):
        self.debugger = debugger

    def __call__(self, debugger: Any, command: str, exe_ctx: Any, result: Any) -> None:
        run(debugger, command, result)

    def get_short_help(self) -> str:
        return HELP

    def get_long_help(self) -> str:
        return LONG_HELP


def __lldb_init_module(debugger: Any, internal_dict: dict) -> None:
    debugger.HandleCommand(
        f"command script add -o -c {__name__}.GenerateDumpCommand generate_dump")
