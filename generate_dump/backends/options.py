"""What every backend is asked for: one set of options, the CLI's choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .referenced import DEFAULT_BUDGET


@dataclass
class CaptureOptions:
    """Options common to all backends; a backend adds its own in a subclass."""

    suspend: bool = True  # False: -r, never stop the whole process
    include_environment: bool = False
    memory: str = "referenced"  # stacks | referenced | full
    max_referenced: int = DEFAULT_BUDGET
    # Full dumps: told about bytes that could not be read while writing (zero-filled).
    on_short_read: Optional[Callable[[int, int], None]] = None
