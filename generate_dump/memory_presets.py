"""What each ``--memory`` preset holds besides the thread stacks: one rule for every source
(the Linux, LLDB and Windows backends and core files), each of which only says how it
reads memory and which ranges a full dump of it holds.

- ``stacks``: nothing more;
- ``referenced``: the small structures the source has already put in the snapshot
  (Windows' TEBs and PEB) and small windows around the pointers in registers and on the
  stacks (backends/referenced.py), read at once;
- ``full``: every range the source names for a full dump, read lazily while the dump is
  written (so the source must still hold the process, or the file, then).

Ranges the source must keep out (an environment block the user did not ask for) are cut
from both; memory it must keep whatever the preset (that block when it was asked for) is
put first.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Sequence

from .backends.referenced import DEFAULT_BUDGET, referenced_ranges
from .intervals import Interval, subtract
from .snapshot import LazyMemory, Memory, MemoryRange, Snapshot

PRESETS = ("stacks", "referenced", "full")


def with_preset_memory(
    snapshot: Snapshot, preset: str, *,
    read: Callable[[int, int], bytes],
    full_ranges: Callable[[], Iterable[Interval]],
    max_referenced: int = DEFAULT_BUDGET,
    read_many: Optional[Callable[[list[tuple[int, int]]], Sequence[bytes]]] = None,
    readinto: Optional[Callable[[int, object], int]] = None,
    on_short_read: Optional[Callable[[int, int], None]] = None,
    keep_out: Sequence[Interval] = (),
    always: Sequence[MemoryRange] = (),
) -> Snapshot:
    """``snapshot`` with the memory of ``preset``.

    ``read(address, size)``: bytes, short or empty where unreadable; ``read_many``: a
    batched read of (address, size) pairs, used for the referenced windows when given;
    ``full_ranges()``: the sorted, disjoint ranges of a full dump (asked only for one);
    ``readinto``: LazyMemory's fast path; ``keep_out``: sorted, disjoint ranges never
    copied; ``always``: memory kept with every preset."""
    memory: tuple[Memory, ...]
    if preset == "stacks":
        memory = ()
    elif preset == "referenced":
        ranges = referenced_ranges(snapshot.threads, snapshot.regions, max_referenced)
        if keep_out:
            ranges = subtract(ranges, list(keep_out))
        wanted = [(a, b - a) for a, b in ranges]
        datas = read_many(wanted) if read_many else [read(a, n) for a, n in wanted]
        memory = snapshot.memory + tuple(MemoryRange(a, d)
                                         for (a, _), d in zip(wanted, datas) if d)
    elif preset == "full":
        spans = list(full_ranges())
        if keep_out:
            spans = subtract(spans, list(keep_out))
        memory = tuple(LazyMemory(a, b - a, read, on_short_read, readinto) for a, b in spans)
    else:
        raise ValueError(f"memory preset {preset!r}")
    return dataclasses.replace(snapshot, memory=tuple(always) + memory)
