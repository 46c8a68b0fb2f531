"""`generate_dump run` without the command-line machinery: parse, start, watch, report.

Kept free of heavy imports (no click): `python -m generate_dump run ...` calls fast_path
first, which starts the command about 30 ms after the interpreter does, instead of after
click and the CLI have loaded; anything it does not recognise falls back to the click
command (run_command.py), which reports errors and help. Both end in the same start()
and finish(), and share dump_file_name and the report format with the pytest plugin and
the ci/ hooks.
"""

from __future__ import annotations

import os
import sys
import time
TYPE_CHECKING = False  # typing costs run's start-up ~2 ms; annotations are not evaluated
if TYPE_CHECKING:
    from typing import Any, NoReturn, Optional, Union

from .errors import DumpError, bug_line

if TYPE_CHECKING:  # imported where used: `run` starts its command without them
    from .backends.linux.supervisor import Supervisor
    from .backends.linux.tracer import Runner

PROG = "generate_dump run"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
DEFAULTS = {"--output-dir": ".", "--max-dumps": "10", "--kill-after": "5s", "--core-limit": "2G"}


# duration() and size() read by hand what the regexes in their docstrings say (`re` costs
# run's start-up ~2 ms); tests/test_run.py holds them to the regexes.


def _digits(text: str, i: int) -> int:
    """The end of the ASCII digits of ``text`` from ``i``."""
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    return i


def duration(text: str) -> float:
    r"""Seconds in ``text`` (90, 30s, 500ms, 5m, 1h); ValueError if it is not a duration:
    ``\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|)\s*``, more than 0."""
    t = text.strip()
    end = _digits(t, 0)
    if end > 0 and end < len(t) and t[end] == ".":
        end = _digits(t, end + 1)
    number, unit = t[:end], t[end:].lstrip()
    if end == 0 or unit not in _UNITS or float(number) <= 0:
        raise ValueError(f"'{text}' is not a duration; use e.g. 90, 30s, 500ms, 5m, 1h")
    return float(number) * _UNITS[unit]


def size(text: str) -> int:
    r"""Bytes in ``text`` (0, 4096, 512M, 2G); ValueError if it is not a size:
    ``\s*([0-9]+)\s*([kKmMgG]?)(?:i?[bB])?\s*``."""
    t = text.strip()
    end = _digits(t, 0)
    number, rest = t[:end], t[end:].lstrip()
    unit = rest[:1] if rest[:1] in ("k", "K", "m", "M", "g", "G") else ""
    suffix = rest[len(unit):]
    if end == 0 or suffix not in ("", "b", "B", "ib", "iB"):
        raise ValueError(f"'{text}' is not a size; use e.g. 0, 512M, 2G")
    return int(number) * _SIZES[unit.lower()]


def dump_file_name(exe: str, pid: int, reason: str, when: Optional[float] = None) -> str:
    """`<exe>-<pid>-<reason>-<UTC time>.dmp`: sorts by program, safe as a CI artifact name."""
    import re

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when if when is not None else time.time()))
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", exe)[:64] or "process"
    return f"{safe}-{pid}-{reason}-{stamp}.dmp"


def _describe(event) -> str:
    from .inspect_dump import exception_names
    from .platform.linux.signals import FAULT_SIGNALS
    from .snapshot import OS

    e = event.exception
    if event.reason == "timeout":
        what = "was still running at the timeout"
    elif e is not None:
        _, code = exception_names(OS.LINUX, e.code, e.flags)
        what = f"got {event.reason}" + (f" ({code})" if code else "")
        if e.address or e.code in FAULT_SIGNALS:
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
    return read_core(path, this_machine=True)


def _notice(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


def start(command: list[str], *, timeout: Optional[float], output_dir: str, max_dumps: int,
          kill_after: float, dump_on_signal: bool, trace: bool, core_limit: int,
          redact: bool = True, adopted: Optional[tuple[int, float, float]] = None):
    """Create the output directory and start COMMAND; DumpError if either fails.
    ``redact``: write the dumps with --redact (the default here: CI uploads them).
    ``adopted``: (pid, monotonic start, wall start) of COMMAND, started by the native
    launcher (see adopted_command); it is watched instead of started."""
    if not sys.platform.startswith("linux"):
        raise DumpError("`generate_dump run` needs Linux (ptrace)")
    out_dir = os.path.abspath(output_dir)
    try:
        if adopted is None:  # else the launcher made it, and the command may have changed it
            os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create output directory {out_dir}: {exc.strerror}") from None

    def write(snapshot, pid: int, exe: str, reason: str) -> str:
        from .session import write_dump

        path = os.path.join(out_dir, dump_file_name(exe, pid, reason, snapshot.time or None))
        write_dump(snapshot, path, redact=redact)
        return path

    common: dict[str, Any]
    common = dict(timeout=timeout, max_dumps=max_dumps, kill_after=kill_after, write=write,
                  on_dump=_Reporter(os.environ.get("GITHUB_ACTIONS") == "true"),
                  dump_on_signal=dump_on_signal, notice=_notice)
    runner: Union[Runner, Supervisor]
    if trace:
        from .backends.linux.tracer import Runner

        runner = Runner(list(command), **common)
    else:
        from .backends.linux.supervisor import Supervisor

        runner = Supervisor(list(command), core_limit=core_limit, convert_core=_read_core,
                            **common)
    from . import _testhooks

    _testhooks.fail("run-start")
    if adopted is not None:
        assert isinstance(runner, Supervisor)
        runner.adopt(*adopted)
    else:
        runner.start()
    return runner


ADOPT_VAR = "GENERATE_DUMP_RUN_ADOPT"


def adopted_command() -> Optional[tuple[int, float, float]]:
    """The command the native launcher (launcher/generate_dump.c) started before becoming
    this interpreter: (pid, time.monotonic(), time.time() at its start), from ADOPT_VAR,
    which is removed (nothing we start sees it). None when there is none: not set, or not
    a child of ours (set by someone else)."""
    value = os.environ.pop(ADOPT_VAR, None)
    if not value:
        return None
    try:
        pid_text, mono, wall = value.split()
        pid = int(pid_text)
        if pid <= 0:
            return None
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # a child of ours?
        return pid, float(mono), float(wall)
    except (ValueError, ChildProcessError):
        return None


def pass_through(pid: int, why: str) -> NoReturn:
    """A bug of ours after the launcher started the command: say ``why`` in one line, stay
    the command's transparent parent (signals forwarded) and exit as it does: the command
    and whoever waits for it see what they would have seen without us."""
    import signal

    from .backends.linux.run_events import exit_status
    from .backends.linux.wakeup import FORWARDED_SIGNALS

    sys.stderr.write(f"{PROG}: error: {why}; the command runs on, unwatched\n")
    sys.stderr.flush()
    for sig in FORWARDED_SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, lambda s, _f: os.kill(pid, s))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    _, status = os.waitpid(pid, 0)
    os._exit(exit_status(status))


def internal_error(exc: BaseException) -> NoReturn:
    """A bug of ours in run: one line, exit 125 (run's own failure), never a traceback."""
    sys.stderr.write(f"{PROG}: error: {bug_line(exc)}\n")
    sys.stderr.flush()
    os._exit(125)


def finish(runner) -> NoReturn:
    """Watch until the command ends, report, and exit with its status (124 on timeout)."""
    runner.exiting = True
    try:
        result = runner.run()
    except Exception as exc:  # noqa: BLE001 - the loop catches its own; this is the rest
        internal_error(exc)
    if result.timed_out:
        sys.stderr.write(f"{PROG}: timed out after {runner.timeout:g} s; "
                         f"{sum(1 for d in result.dumps if d.path)} minidump(s) written\n")
    # Exit at once: the interpreter's orderly shutdown (tearing down every module) costs
    # tens of milliseconds that the command's caller would wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result.status)


_VALUED = ("--timeout", "--output-dir", "--max-dumps", "--kill-after", "--core-limit")


def fast_path(argv: list[str], adopted: Optional[tuple[int, float, float]] = None) -> None:
    """Run at once when ``argv`` (after "run") is plain (see plain_run). Returns (to the
    click command) for anything else: help, --trace, errors, unusual spellings.
    ``adopted``: the command the native launcher already started (adopted_command)."""
    options = plain_run(argv)
    if options is None:
        if adopted is not None:
            pass_through(adopted[0], "internal error: the launcher started a command that "
                                     "run does not take")
        return
    try:
        runner = start(**options, adopted=adopted)
    except Exception as exc:  # noqa: BLE001
        if adopted is not None:
            pass_through(adopted[0], str(exc) if isinstance(exc, DumpError) else bug_line(exc))
        if isinstance(exc, DumpError):
            return  # nothing started: the click command says what is wrong, with its status
        internal_error(exc)  # not retried: the command may have started
    finish(runner)


def plain_run(argv: list[str]) -> Optional[dict[str, Any]]:
    """start()'s arguments when ``argv`` (after "run") is plain: known options with valid
    values, then "--" and a command (or a command with no option-like words); else None.
    launcher/generate_dump.c accepts the same lines or fewer (tests/test_launcher.py)."""
    opts = dict(DEFAULTS)
    flags = set()
    i = 0
    while True:
        if i >= len(argv):
            return None
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1:]
            break
        if not arg.startswith("-"):
            # `run CMD ARG...`: click takes the same command when no later word looks
            # like an option (it would reject or reinterpret those).
            command = argv[i:]
            if any(a.startswith("-") and a != "-" for a in command):
                return None
            break
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            opts[name] = value
        elif arg in ("--dump-on-signal", "--redact", "--no-redact"):
            flags.add(arg)
        else:
            return None
        i += 1
    max_dumps = opts["--max-dumps"]
    if not command or not max_dumps or _digits(max_dumps, 0) != len(max_dumps) \
            or opts["--output-dir"] == "":
        return None
    try:
        timeout = duration(opts["--timeout"]) if "--timeout" in opts else None
        kill_after = duration(opts["--kill-after"])
        core_limit = size(opts["--core-limit"])
    except ValueError:
        return None
    return dict(command=command, timeout=timeout, output_dir=opts["--output-dir"],
                max_dumps=int(opts["--max-dumps"]), kill_after=kill_after,
                dump_on_signal="--dump-on-signal" in flags, trace=False,
                core_limit=core_limit, redact="--no-redact" not in flags)
