"""Memory that registers and stack words point to (Crashpad's "indirectly referenced"
memory): small windows around pointers into readable, writable mappings, so a debugger
can show the objects a thread was working on. Platform neutral; backends read the bytes.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Sequence

from ..intervals import merge, subtract
from ..snapshot import MemoryRegion, Thread

WINDOW_BEFORE = 128
WINDOW_SIZE = 512
DEFAULT_BUDGET = 8 * 1024 * 1024

_SKIP_PATHS = ("[vvar]", "[vsyscall]", "[vvar_vclock]")


def _register_values(thread: Thread) -> list[int]:
    ctx = thread.context
    values = [v for k, v in vars(ctx).items() if isinstance(v, int)]
    for name in ("x",):
        values += list(getattr(ctx, name, ()) or ())
    return values


def _stack_words(thread: Thread) -> Iterable[int]:
    stack = thread.stack
    if stack is None or not stack.size:
        return ()
    data = stack.data
    # Start at the aligned SP: what lies below it is stale.
    sp = max(stack.start, thread.context.sp)
    offset = (sp - stack.start + 7) & ~7
    usable = (len(data) - offset) & ~7
    if usable <= 0:
        return ()
    return memoryview(data)[offset : offset + usable].cast("Q")


def _by_priority(ranges: list[tuple[int, int]],
                 chosen: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint, each made of windows from ``chosen``) in the order of
    the most important window in each: ``chosen`` is in priority order. The writer drops
    memory from the end when a dump would pass a reader's limit."""
    order = sorted(range(len(chosen)), key=lambda k: chosen[k][0])
    starts = [chosen[k][0] for k in order]
    ranked = []
    for a, b in ranges:
        best = len(chosen)
        k = bisect.bisect_left(starts, b) - 1
        while k >= 0 and starts[k] >= a - WINDOW_SIZE:
            idx = order[k]
            if chosen[idx][1] > a:
                best = min(best, idx)
            k -= 1
        ranked.append((best, a, b))
    ranked.sort()
    return [(a, b) for _, a, b in ranked]


def referenced_ranges(threads: Sequence[Thread], regions: Sequence[MemoryRegion],
                      budget: int = DEFAULT_BUDGET) -> list[tuple[int, int]]:
    """Disjoint [start, end) windows to copy, disjoint from every stack, whose total size
    stays within ``budget``, most important first. Registers come first, then stack words
    from the top of each stack (the innermost frames) outwards, thread by thread in turn."""
    targets = [r for r in regions if r.readable and r.writable and r.path not in _SKIP_PATHS]
    targets.sort(key=lambda r: r.start)
    starts = [r.start for r in targets]
    if not targets or budget <= 0:
        return []
    lo_all, hi_all = targets[0].start, max(r.end for r in targets)
    stacks = sorted((t.stack.start, t.stack.end) for t in threads if t.stack and t.stack.size)
    stack_starts = [s for s, _ in stacks]

    def in_stack(v: int) -> bool:
        i = bisect.bisect_right(stack_starts, v) - 1
        return i >= 0 and v < stacks[i][1]

    chosen: list[tuple[int, int]] = []
    seen: set[int] = set()
    total = 0

    def consider(values: Iterable[int]) -> bool:
        nonlocal total
        for v in values:
            if v < lo_all or v >= hi_all:
                continue
            page = v >> 9
            if page in seen:
                continue
            i = bisect.bisect_right(starts, v) - 1
            if i < 0 or v >= targets[i].end or in_stack(v):
                continue
            seen.add(page)
            r = targets[i]
            a = max(r.start, v - WINDOW_BEFORE)
            b = min(r.end, a + WINDOW_SIZE)
            chosen.append((a, b))
            total += b - a
            if total >= budget:
                return False
        return True

    if consider(v for t in threads for v in _register_values(t)):
        for t in threads:
            if not consider(_stack_words(t)):
                break
    merged = _by_priority(subtract(merge(chosen), stacks), chosen)
    # Merging can only shrink the total; trim the last window if the budget is exceeded.
    out, used = [], 0
    for a, b in merged:
        if used + (b - a) > budget:
            b = a + (budget - used)
        if b > a:
            out.append((a, b))
            used += b - a
        if used >= budget:
            break
    return out
