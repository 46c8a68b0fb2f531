"""Command line: ``generate_dump [OPTION...] PID``.

Exit status 0 on success, 1 on any failure with exactly one ``generate_dump: error: ...``
line on stderr. All messages go to stderr; nothing is printed on stdout.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn, Optional

import click

from . import __version__
from .errors import (BadInput, DumpError, Interrupted, OutputError, RunError, TargetNotFound,
                     bug_line, run_exit_status)

PROG = "generate_dump"


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(status)


def _internal_error(exc: BaseException) -> NoReturn:
    """A bug of ours: one line naming it, never a traceback (the target is already
    resumed: every capture path releases it on the way out)."""
    _fail(bug_line(exc))


def _pid_max() -> int:
    if sys.platform == "win32":
        return 0xFFFFFFFF  # a DWORD; Windows has no pid_max
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22


def parse_pid(text: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", t):
        raise BadInput(f"'{text}' is not a process ID; give a positive whole number such as "
                        f"1234 (see 'pgrep NAME')")
    pid = int(t)
    if pid <= 0:
        raise BadInput(f"'{text}' is not a valid process ID; process IDs are positive numbers")
    limit = _pid_max()
    if pid > limit:
        raise TargetNotFound(f"no process with PID {pid} (PIDs on this system go up to {limit})")
    return pid



def _install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into an exception so every cleanup path runs."""

    def handler(signum, _frame):
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}; the process was "
                          "resumed and no dump was written")

    # SIGHUP does not exist on Windows, SIGBREAK (Ctrl+Break) only there.
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def _summarize_soft_errors(soft_errors) -> None:
    kinds: dict[str, list[str]] = {}
    for e in soft_errors:
        kinds.setdefault(e.kind, []).append(e.message)
    for kind, messages in kinds.items():
        extra = f" (and {len(messages) - 1} more like it)" if len(messages) > 1 else ""
        click.echo(f"{PROG}: warning: {messages[0]}{extra}", err=True)


@dataclass
class DumpRequest:
    pid: int
    output: Optional[str] = None  # None: minidump.PID; "-": standard output
    suspend: bool = True
    include_environment: bool = False
    backend: str = "auto"
    memory: str = "referenced"
    max_referenced: int = 8 * 1024 * 1024
    print_stacks: bool = False  # print every thread's top frames after writing
    redact: bool = False  # sanitize stacks and memory, mask secrets (generate_dump/redact.py)
    python: bool = True  # decode CPython stacks into the dump (GD_PYTHON stream)

    def capture_options(self, on_short_read=None):
        """The options every backend takes (session.py gives them to the chosen one)."""
        from .backends.options import CaptureOptions

        return CaptureOptions(suspend=self.suspend, include_environment=self.include_environment,
                              memory=self.memory, max_referenced=self.max_referenced,
                              on_short_read=on_short_read, python=self.python)


def capture_session(req: DumpRequest, on_short_read=None):
    """The chosen backend's capture session for ``req`` (see session.capture_session)."""
    from .session import capture_session as session

    return session(req.pid, req.capture_options(on_short_read), req.backend)


class _Progress:
    """A one-line progress display on stderr, for long dumps at a terminal."""

    def __init__(self) -> None:
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        pct = 100 * done // max(total, 1)
        sys.stderr.write(f"\r{PROG}: writing {done / 2**20:,.0f} of {total / 2**20:,.0f} MiB "
                         f"({pct}%)")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def dump(req: DumpRequest) -> str:
    """Capture and write one minidump; returns where it went."""
    from .output import check_output_path
    from .session import capture_and_write

    to_stdout = req.output == "-"
    if to_stdout:
        if sys.stdout.isatty():
            raise OutputError("refusing to write a minidump to a terminal; redirect standard "
                              "output to a file or a pipe (e.g. -o - | zstd > dump.zst)")
        out_path = "standard output"
    else:
        out_path = check_output_path(req.output or f"minidump.{req.pid}")
    short: list[tuple[int, int]] = []
    progress = _Progress() if sys.stderr.isatty() and req.memory == "full" else None
    try:
        done = capture_and_write(req.pid, sys.stdout.buffer if to_stdout else out_path,
                                 req.capture_options(lambda at, n: short.append((at, n))),
                                 backend=req.backend, redact=req.redact, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    snapshot = done.snapshot
    _summarize_soft_errors(snapshot.soft_errors)
    if short:
        total = sum(n for _, n in short)
        click.echo(f"{PROG}: warning: {total} bytes in {len(short)} place(s) could not be "
                   f"read and are zero in the dump (first at 0x{short[0][0]:x})", err=True)
    if done.redaction is not None:
        click.echo(f"{PROG}: {redaction_summary(done.redaction)}", err=True)
    click.echo(f"{PROG}: wrote {out_path} ({len(snapshot.threads)} threads, "
               f"{len(snapshot.modules)} modules, {done.size // 1024} KiB)", err=True)
    if req.print_stacks:
        from .inspect_dump import print_stacks

        click.echo(print_stacks(snapshot), err=True)
    return out_path


def redaction_summary(report) -> str:
    """One line saying what --redact changed (counts only)."""
    kinds: dict[str, int] = {}
    for per in report.found.values():
        for kind, n in per.items():
            kinds[kind] = kinds.get(kind, 0) + n
    found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no secrets found"
    return (f"redacted: {report.stack_words} stack words and {report.memory_words} memory "
            f"words replaced by 0x0defaced, {report.full_memory_bytes} bytes of full memory "
            f"overwritten; {found}")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise click.BadParameter(f"'{text}' is not a size; use e.g. 512K, 8M, 1G")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=CONTEXT_SETTINGS, name=PROG)
@click.argument("pids", metavar="PID...", nargs=-1)
@click.option("-o", "--output", metavar="FILE",
              help="Write the minidump to FILE (default: minidump.PID in the current "
                   "directory); - writes it to standard output. With several processes "
                   "(several PIDs, --tree, --cgroup): a directory (default: the current one).")
@click.option("--tree", "trees", multiple=True, metavar="PID",
              help="Dump this process and all its descendants (deepest first), one file "
                   "each, named EXE-PID-live-UTCTIME.dmp as `run` names its dumps.")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="Dump every process of this cgroup v2 group (and its child groups).")
@click.option("-r", "--no-suspend", is_flag=True,
              help="Do not freeze the whole process: pause one thread at a time, only while "
                   "its own registers and stack are copied. The process stays available, but "
                   "threads are captured at slightly different moments.")
@click.option("--include-environment", is_flag=True,
              help="Also store the process environment (the LinuxEnviron stream and the "
                   "strings at the top of the main stack). Off by default: environments "
                   "often hold secrets.")
@click.option("--memory", type=click.Choice(["stacks", "referenced", "full"]),
              default="referenced", show_default=True,
              help="How much memory to store: stacks only; stacks plus small windows around "
                   "pointers found in registers and on stacks; or every readable mapping "
                   "(except MADV_DONTDUMP and what coredump_filter excludes; the process "
                   "stays frozen while it is written, unless -r).")
@click.option("--max-referenced", default="8M", show_default=True, metavar="SIZE",
              callback=lambda c, p, v: parse_size(v),
              help="Budget for --memory=referenced (e.g. 512K, 8M, 1G).")
@click.option("--backend", type=click.Choice(["auto", "ptrace", "lldb", "windows"]),
              default="auto", show_default=True,
              help="How to read the process: ptrace (Linux), lldb (LLDB's SB API; macOS, "
                   "also works on Linux), windows (Win32 debug API). auto picks ptrace on "
                   "Linux, lldb on macOS and windows on Windows.")
@click.option("--print-stacks", is_flag=True,
              help="After writing the dump, print the top frames of every thread (crashing "
                   "thread first), symbolized from the module files, on standard error.")
@click.option("--redact/--no-redact", default=False, show_default=True,
              help="Make the dump safe to upload: stack and captured memory words that do "
                   "not point into mapped memory become 0x0defaced (unwinding still works), "
                   "full memory is searched for secrets (tokens, keys, passwords) that are "
                   "overwritten, and the command line and thread names are masked. See "
                   "`generate_dump scan FILE` to check a dump.")
@click.option("--no-python", is_flag=True,
              help="Do not look for CPython: no Python stacks (GD_PYTHON stream) and none of "
                   "the interpreter memory they are rebuilt from.")
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def command(pids: tuple[str, ...], output: Optional[str], trees: tuple[str, ...],
            cgroups: tuple[str, ...], no_suspend: bool, include_environment: bool,
            memory: str, max_referenced: int, backend: str, print_stacks: bool,
            redact: bool, no_python: bool) -> None:
    """Write a minidump of the running process PID, then let it run on.

    The process is suspended while its threads' registers and stacks are copied
    (unless -r), then resumed; modules, memory map and system information are
    gathered after it runs again. Exit status: 0 on success, 1 on failure.

    Other commands: `generate_dump run -- COMMAND` (crash and hang capture, see
    `generate_dump run --help`), `generate_dump inspect FILE` (threads and
    stacks of a minidump), `generate_dump watch` (dump when a trigger fires),
    `generate_dump convert IN -o OUT` (core file <-> minidump),
    `generate_dump core-handler` (kernel core_pattern pipe handler) and
    `generate_dump scan FILE` (secret-looking values in a minidump; exit status 3 when
    there are some).
    """
    if not pids and not trees and not cgroups:
        raise click.UsageError("missing PID: give the process ID of the process to dump")
    common: dict[str, Any] = dict(
        suspend=not no_suspend, include_environment=include_environment, backend=backend,
        memory=memory, max_referenced=max_referenced, print_stacks=print_stacks,
        redact=redact, python=not no_python)
    if len(pids) == 1 and not trees and not cgroups:
        dump(DumpRequest(pid=parse_pid(pids[0]), output=output, **common))
        return
    from .processes import processes_of

    targets = processes_of([parse_pid(p) for p in pids], [parse_pid(p) for p in trees],
                           list(cgroups))
    _dump_many(targets, output or ".", common)


def _dump_many(pids: list[int], directory: str, common: dict[str, Any]) -> None:
    """One dump per process into ``directory``, named as `run` names its dumps; a process
    that cannot be dumped is one line and exit status 1, the others are still dumped."""
    import os

    from .run_command import dump_file_name
    from .watch.procstat import exe_name

    if directory == "-":
        raise BadInput("several processes cannot all go to standard output; give a "
                       "directory with -o")
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory} does not exist (with several "
                          "processes -o names a directory)")
    failed = 0
    for pid in pids:
        path = os.path.join(directory, dump_file_name(exe_name(pid), pid, "live"))
        try:
            dump(DumpRequest(pid=pid, output=path, **common))
        except DumpError as exc:
            failed += 1
            click.echo(f"{PROG}: error: process {pid}: {exc}", err=True)
    if failed:
        sys.exit(1)


def _run_subcommand(args: list[str]) -> None:
    """`generate_dump run ...`: its own exit codes, like timeout(1): the command's status,
    124 on timeout, 125 when run itself fails, 126/127 when the command cannot be run."""
    if not sys.platform.startswith("linux"):
        click.echo(f"{PROG} run: error: `{PROG} run` needs Linux (ptrace)", err=True)
        sys.exit(RunError.exit_status)
    from .run_command import run_command

    try:
        run_command.main(args=args, prog_name=f"{PROG} run", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"{PROG} run: error: {exc.format_message()} (see '{PROG} run --help')",
                   err=True)
        sys.exit(RunError.exit_status)
    except DumpError as exc:
        click.echo(f"{PROG} run: error: {exc}", err=True)
        sys.exit(run_exit_status(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, 125
        from .run_session import internal_error

        internal_error(exc)
    sys.exit(0)


def _click_subcommand(cmd: click.Command, name: str, args: list[str],
                      interrupted: Optional[str] = None) -> None:
    """Run a subcommand's click command with the house rules: one line on stderr and exit 1
    for usage errors, user errors and our own bugs; exit 0 otherwise. ``interrupted``: the
    line for Ctrl-C, for commands that catch it."""
    try:
        cmd.main(args=args, prog_name=f"{PROG} {name}", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        _fail(f"{exc.format_message()} (see '{PROG} {name} --help')")
    except DumpError as exc:
        _fail(str(exc), exc.exit_status)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        _fail(interrupted)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        _internal_error(exc)
    sys.exit(0)


def _inspect_subcommand(args: list[str]) -> None:
    """`generate_dump inspect FILE ...`: print a minidump's threads with walked stacks."""
    from .inspect_dump import inspect_command

    _click_subcommand(inspect_command, "inspect", args)


def _watch_subcommand(args: list[str]) -> None:
    """`generate_dump watch ...`: dump processes when a trigger fires."""
    if not sys.platform.startswith("linux"):
        _fail("`generate_dump watch` needs Linux (/proc and ptrace)")
    from .watch.command import watch_command

    _click_subcommand(watch_command, "watch", args)


def _convert_subcommand(args: list[str]) -> None:
    """`generate_dump convert IN -o OUT`: core -> minidump, minidump -> core."""
    from .convert_command import convert_command

    _click_subcommand(convert_command, "convert", args,
                      interrupted="interrupted; no output was written")


def _core_handler_subcommand(args: list[str]) -> None:
    """`generate_dump core-handler ...`: the kernel's core_pattern pipe -> a minidump."""
    from .core_handler import main as handler_main

    handler_main(args)


def _scan_subcommand(args: list[str]) -> None:
    """`generate_dump scan FILE`: its own exit codes (0 clean, 3 secrets found, 1 error)."""
    from .scan import scan_main

    scan_main(args)


SUBCOMMANDS = {
    "run": _run_subcommand,
    "inspect": _inspect_subcommand,
    "watch": _watch_subcommand,
    "convert": _convert_subcommand,
    "core-handler": _core_handler_subcommand,
    "scan": _scan_subcommand,
}


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        SUBCOMMANDS[args[0]](args[1:])
    _install_signal_handlers()
    try:
        command.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.exceptions.NoSuchOption as exc:
        if re.fullmatch(r"-[0-9]+", exc.option_name or ""):
            _fail(f"'{exc.option_name}' is not a valid process ID; process IDs are positive "
                  "numbers")
        _fail(f"{exc.format_message()} (see '{PROG} --help')")
    except click.exceptions.UsageError as exc:
        _fail(f"{exc.format_message()} (see '{PROG} --help')")
    except click.exceptions.Abort:
        _fail("aborted")
    except DumpError as exc:
        _fail(str(exc), exc.exit_status)
    except KeyboardInterrupt:
        _fail("interrupted")
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        _internal_error(exc)
    sys.exit(0)


if __name__ == "__main__":
    main()
