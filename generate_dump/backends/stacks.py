"""Which bytes of a thread's stack to copy, the same rule for every backend (Crashpad's)."""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

RED_ZONE = 128  # bytes below SP that x86-64 and arm64 leaf functions may use
MAX_STACK = 64 * 1024 * 1024 - 4096  # Breakpad's reader rejects larger regions


class StackMap:
    """The address space, prepared once so that each thread's stack range is a bisect and a
    few comparisons (the Linux backend computes them while the process is frozen).

    ``maps`` is sorted by start; each has ``start``, ``end``, ``readable`` and
    ``merge_key``. Adjacent readable mappings with the same merge key (permissions and
    file) count as one.
    """

    def __init__(self, maps: Sequence):
        self.starts = [m.start for m in maps]
        self.ends = [m.end for m in maps]
        self.readable = [m.readable for m in maps]
        # merged_end[i]: where the run of same-key mappings that starts at i ends.
        merged = self.ends[:]
        for i in range(len(maps) - 2, -1, -1):
            if maps[i + 1].start == maps[i].end and maps[i + 1].merge_key == maps[i].merge_key:
                merged[i] = merged[i + 1]
        self.merged_end = merged

    def range(self, sp: int, is_main: bool, thread_pointer: int) -> Optional[tuple[int, int]]:
        """The stack bytes to copy for a thread: SP-128 to the top of its stack mapping.

        A non-main thread stops at its thread pointer (glibc keeps TLS and the thread
        descriptor just below it). An SP in an unreadable guard page starts at the next
        readable mapping."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, sp) - 1
        if i < 0 or sp >= ends[i]:
            # SP exactly at the end of a mapping (an empty stack) belongs to that mapping.
            i = bisect.bisect_right(starts, sp - 1) - 1
            if i < 0 or sp - 1 >= ends[i]:
                return None
        if not self.readable[i]:
            if i + 1 < len(starts) and starts[i + 1] == ends[i] and self.readable[i + 1]:
                i += 1
                start = starts[i]
            else:
                return None
        else:
            start = max(starts[i], sp - RED_ZONE)
        end = self.merged_end[i]
        if not is_main and start < thread_pointer < end:
            end = thread_pointer
        if end - start > MAX_STACK:
            end = start + MAX_STACK
        return (start, end) if end > start else None


def stack_range(sp: int, maps: Sequence, starts: list[int], is_main: bool,
                thread_pointer: int) -> Optional[tuple[int, int]]:
    """One thread's stack range (see StackMap; build a StackMap for many threads)."""
    return StackMap(maps).range(sp, is_main, thread_pointer)


def blank(data: bytes, data_start: int, lo: int, hi: int) -> bytes:
    """Zero the bytes of ``data`` (which starts at ``data_start``) that fall in [lo, hi)."""
    a = max(lo, data_start) - data_start
    b = min(hi, data_start + len(data)) - data_start
    if b <= a:
        return data
    return data[:a] + bytes(b - a) + data[b:]
