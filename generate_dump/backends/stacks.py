"""Which bytes of a thread's stack to copy, the same rule for every backend (Crashpad's)."""

from __future__ import annotations

import bisect
from typing import Iterable, Optional, Sequence

from ..snapshot import MemoryRange, SoftError

RED_ZONE = 128  # bytes below SP that x86-64 and arm64 leaf functions may use
MAX_STACK = 64 * 1024 * 1024 - 4096  # Breakpad's reader rejects larger regions


SHARED_STACK_CAP = 128 * 1024  # a stack in a mapping that is not a thread's own stack
MAX_GUARD = 1024 * 1024  # an unreadable mapping at most this big just below is a guard


class StackMap:
    """The address space, prepared once so that each thread's stack range is a bisect and a
    few comparisons (the Linux backend computes them while the process is frozen).

    ``maps`` is sorted by start; each has ``start``, ``end``, ``readable`` and
    ``merge_key`` (and may have ``path``). Adjacent readable mappings with the same merge
    key (permissions and file) count as one run. ``stack_pointers``: every thread's SP, so
    that a stack in a shared mapping stops before the next thread's (see ``range``).
    """

    def __init__(self, maps: Sequence, stack_pointers: Iterable[int] = ()):
        self.starts = [m.start for m in maps]
        self.ends = [m.end for m in maps]
        self.readable = [m.readable for m in maps]
        self.paths = [getattr(m, "path", "") or "" for m in maps]
        # merged_first[i] / merged_end[i]: the run of same-key mappings holding i.
        merged = self.ends[:]
        for i in range(len(maps) - 2, -1, -1):
            if maps[i + 1].start == maps[i].end and maps[i + 1].merge_key == maps[i].merge_key:
                merged[i] = merged[i + 1]
        self.merged_end = merged
        first = list(range(len(maps)))
        for i in range(1, len(maps)):
            if maps[i].start == maps[i - 1].end and maps[i].merge_key == maps[i - 1].merge_key:
                first[i] = first[i - 1]
        self.merged_first = first
        self.note_stack_pointers(stack_pointers)

    def note_stack_pointers(self, stack_pointers: Iterable[int]) -> None:
        """Tell the map where every thread's stack pointer is."""
        self.sps = sorted(set(stack_pointers))

    def _own_stack(self, i: int, sp: int, is_main: bool, thread_pointer: int) -> bool:
        """Whether the run holding mapping ``i`` is this thread's own stack, which it
        copies to the top: the main thread's [stack]; a mapping with a guard just below
        that holds the thread's TLS above its SP (glibc, musl and macOS keep the thread
        descriptor at the top of the stacks they allocate); or a mapping with no other
        thread's stack pointer in it that the main thread is on or that holds the thread
        pointer above SP.
        Otherwise the stack shares its mapping with other things (Go's goroutine and g0
        stacks in a heap arena, green threads, coroutines, sigaltstack) and is bounded."""
        if self.paths[i].startswith("[stack"):
            return True
        first = self.merged_first[i]
        lo, hi = self.starts[first], self.merged_end[i]
        # glibc's and musl's stacks grow down from just below the thread descriptor: an SP
        # above the thread pointer is on some other stack that shares the run.
        holds_tp = lo < thread_pointer < hi and (is_main or sp < thread_pointer)
        if not (is_main or holds_tp):
            return False
        g = first - 1
        if (holds_tp and g >= 0 and self.ends[g] == lo and not self.readable[g]
                and self.ends[g] - self.starts[g] <= MAX_GUARD):
            return True
        k = bisect.bisect_left(self.sps, lo)
        return not any(s != sp for s in self.sps[k:k + 2] if s < hi)

    def _index(self, sp: int) -> int:
        """The mapping holding ``sp`` (an SP at a mapping's end belongs to it), or -1."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, sp) - 1
        if i < 0 or sp >= ends[i]:
            # SP exactly at the end of a mapping (an empty stack) belongs to that mapping.
            i = bisect.bisect_right(starts, sp - 1) - 1
            if i < 0 or sp - 1 >= ends[i]:
                return -1
        return i

    def shared(self, sp: int, is_main: bool, thread_pointer: int) -> bool:
        """Whether this thread's stack is in a mapping that is not its own stack (where
        ``range`` bounds it, and where a runtime's own record of it is worth reading)."""
        i = self._index(sp)
        return i >= 0 and self.readable[i] and not self._own_stack(i, sp, is_main,
                                                                     thread_pointer)

    def range(self, sp: int, is_main: bool, thread_pointer: int,
              bounds: Optional[tuple[int, int]] = None) -> Optional[tuple[int, int]]:
        """The stack bytes to copy for a thread: SP-128 to the top of its stack mapping.

        A non-main thread stops at its thread pointer (glibc keeps TLS and the thread
        descriptor just below it). An SP in an unreadable guard page starts at the next
        readable mapping. A stack that is not in a stack mapping of its own (see
        ``_own_stack``) runs to the end its runtime records (``bounds``: Go's g.stack
        lo and hi, when they hold SP), else it gets at most SHARED_STACK_CAP bytes and
        stops where the next thread's stack (by stack pointer) begins, so stacks sharing
        a mapping stay apart."""
        starts, ends = self.starts, self.ends
        i = self._index(sp)
        if i < 0:
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
        if self._own_stack(i, sp, is_main, thread_pointer):
            if not is_main and start < thread_pointer < end:
                end = thread_pointer
        elif bounds is not None and bounds[0] <= sp < bounds[1]:
            start = max(start, min(bounds[0], sp))
            end = min(end, bounds[1])
        else:
            end = min(end, start + SHARED_STACK_CAP)
            k = bisect.bisect_right(self.sps, sp)
            if k < len(self.sps) and start < self.sps[k] - RED_ZONE < end:
                end = self.sps[k] - RED_ZONE
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


def thread_stack(tid: int, sp: int, span: Optional[tuple[int, int]], data: Optional[bytes],
                 soft: list[SoftError], *, hide: Optional[tuple[int, int]] = None,
                 nowhere: str = "is in no mapping",
                 unread: str = "could not be read") -> Optional[MemoryRange]:
    """A thread's copied stack for the snapshot, every source alike: ``span`` is the range
    chosen for it (None: its SP is in no stack), ``data`` the bytes read there (empty:
    unreadable). Without a stack, a ``stack-unreadable`` soft error in ``soft`` says why
    (``nowhere`` and ``unread`` word it for the source). ``hide``: a [lo, hi) range to
    zero, such as the environment block at the top of the main thread's stack."""
    if span is None:
        soft.append(SoftError("stack-unreadable", f"thread {tid}: stack pointer 0x{sp:x} "
                              f"{nowhere}"))
        return None
    if not data:
        soft.append(SoftError("stack-unreadable", f"stack of thread {tid} at 0x{span[0]:x} "
                              f"{unread}"))
        return None
    if hide is not None and hide[1] > hide[0]:
        data = blank(data, span[0], *hide)
    return MemoryRange(span[0], data)
