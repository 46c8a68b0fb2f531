"""What `generate_dump run` reports, in either mode: one DumpEvent per dump made or tried,
and the RunResult. Kept free of heavy imports: the default mode must start the command
fast."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    from typing import Optional

    from ...snapshot import ExceptionInfo, Snapshot


class DumpEvent:
    """One dump the run made (or tried to make). (Plain classes, not dataclasses: importing
    dataclasses costs the command's start several milliseconds.)"""

    def __init__(self, pid: int, reason: str, path: Optional[str], exe: str,
                 exception: Optional["ExceptionInfo"] = None, error: Optional[str] = None,
                 snapshot: Optional["Snapshot"] = None):
        self.pid = pid
        self.reason = reason  # "SIGSEGV", "timeout", ...
        self.path = path
        self.exe = exe
        self.exception = exception
        self.error = error
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"DumpEvent(pid={self.pid}, reason={self.reason!r}, path={self.path!r})"


class RunResult:
    def __init__(self, status: int, timed_out: bool = False):
        self.status = status  # what `run` should exit with
        self.timed_out = timed_out
        self.dumps: list[DumpEvent] = []


def one_line(exc: BaseException) -> str:
    """An unexpected error as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).replace(" (deleted)", "")
    except OSError:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                return f.read().decode(errors="replace").strip() or "process"
        except OSError:
            return "process"


def exit_status(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the killing signal
    (what `run` exits with for its command)."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
