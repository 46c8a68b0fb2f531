"""What every backend is asked for: one set of options, the CLI's choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, Optional, TypeVar

from .referenced import DEFAULT_BUDGET

if TYPE_CHECKING:
    from ..snapshot import Snapshot


@dataclass
class CaptureOptions:
    """Options common to all backends; a backend adds its own in a subclass."""

    suspend: bool = True  # False: -r, never stop the whole process
    include_environment: bool = False
    memory: str = "referenced"  # stacks | referenced | full
    max_referenced: int = DEFAULT_BUDGET
    python: bool = True  # decode CPython stacks (and keep their memory) when found
    # Full dumps: told about bytes that could not be read while writing (zero-filled).
    on_short_read: Optional[Callable[[int, int], None]] = None


_Options = TypeVar("_Options", bound=CaptureOptions)


def capture_now(session: Callable[[int, _Options], ContextManager[Snapshot]], pid: int,
                options: _Options) -> Snapshot:
    """Run a backend's capture session to the end: a snapshot whose memory is all copied.
    Not for full dumps, whose memory is read while the session still holds the process."""
    if options.memory == "full" and options.suspend:
        raise ValueError("full dumps need capture_session (memory is read while writing)")
    with session(pid, options) as snapshot:
        return snapshot
