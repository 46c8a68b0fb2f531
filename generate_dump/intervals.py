"""Half-open address intervals [start, end): merge and subtract, for memory bookkeeping."""

from __future__ import annotations

Interval = tuple[int, int]


def merge(ranges: list[Interval]) -> list[Interval]:
    """Sorted, coalesced union of ``ranges`` (touching intervals join)."""
    out: list[Interval] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(ranges: list[Interval], taken: list[Interval]) -> list[Interval]:
    """Parts of ``ranges`` not covered by ``taken`` (``taken`` sorted and disjoint)."""
    out = []
    for start, end in ranges:
        cur = start
        for ts, te in taken:
            if te <= cur or ts >= end:
                continue
            if ts > cur:
                out.append((cur, ts))
            cur = max(cur, te)
            if cur >= end:
                break
        if cur < end:
            out.append((cur, end))
    return out
