"""What `generate_dump run` reports, in either mode: one DumpEvent per dump made or tried,
and the RunResult. Kept free of heavy imports: the default mode must start the command
fast."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ...snapshot import ExceptionInfo, Snapshot


@dataclass
class DumpEvent:
    """One dump the run made (or tried to make)."""

    pid: int
    reason: str  # "SIGSEGV", "timeout", ...
    path: Optional[str]
    exe: str
    exception: Optional["ExceptionInfo"] = None
    error: Optional[str] = None
    snapshot: Optional["Snapshot"] = None


@dataclass
class RunResult:
    status: int  # what `run` should exit with
    timed_out: bool = False
    dumps: list[DumpEvent] = field(default_factory=list)


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
