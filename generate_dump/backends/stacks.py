"""Which bytes of a thread's stack to copy, the same rule for every backend (Crashpad's)."""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

RED_ZONE = 128  # bytes below SP that x86-64 and arm64 leaf functions may use
MAX_STACK = 64 * 1024 * 1024 - 4096  # Breakpad's reader rejects larger regions


def stack_range(sp: int, maps: Sequence, starts: list[int], is_main: bool,
                thread_pointer: int) -> Optional[tuple[int, int]]:
    """The stack bytes to copy for a thread: SP-128 to the top of its stack mapping.

    ``maps`` is sorted by start (``starts`` are their starts) and each has ``start``,
    ``end``, ``readable`` and ``merge_key``. Adjacent readable mappings with the same
    merge key (permissions and file) count as one. A non-main thread
    stops at its thread pointer (glibc keeps TLS and the thread descriptor just below it).
    An SP in an unreadable guard page starts at the next readable mapping.
    """
    i = bisect.bisect_right(starts, sp) - 1
    if i < 0 or sp >= maps[i].end:
        # SP exactly at the end of a mapping (an empty stack) belongs to that mapping.
        i = bisect.bisect_right(starts, sp - 1) - 1
        if i < 0 or sp - 1 >= maps[i].end:
            return None
    m = maps[i]
    if not m.readable:
        if i + 1 < len(maps) and maps[i + 1].start == m.end and maps[i + 1].readable:
            i += 1
            m = maps[i]
            start = m.start
        else:
            return None
    else:
        start = max(m.start, sp - RED_ZONE)
    end = m.end
    j = i
    while j + 1 < len(maps) and maps[j + 1].start == end \
            and maps[j + 1].merge_key == m.merge_key:
        j += 1
        end = maps[j].end
    if not is_main and start < thread_pointer < end:
        end = thread_pointer
    if end - start > MAX_STACK:
        end = start + MAX_STACK
    return (start, end) if end > start else None


def blank(data: bytes, data_start: int, lo: int, hi: int) -> bytes:
    """Zero the bytes of ``data`` (which starts at ``data_start``) that fall in [lo, hi)."""
    a = max(lo, data_start) - data_start
    b = min(hi, data_start + len(data)) - data_start
    if b <= a:
        return data
    return data[:a] + bytes(b - a) + data[b:]
