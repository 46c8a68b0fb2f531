"""JIT symbol maps in Linux perf's ``/tmp/perf-PID.map`` format: parse, look up, select.

Runtimes that compile code at run time can name it for profilers in a text file, one line
per piece of code: ``START SIZE NAME`` (START and SIZE in hex, with or without ``0x``),
for example ``node --perf-basic-prof``, ``jcmd PID Compiler.perfmap`` on HotSpot, and
CPython 3.12+ run with ``-X perf``. A later line for the same addresses wins: the code
there was freed and the memory reused.

The capture keeps only the lines whose code a thread's stack or registers point into
(:func:`select`): those are the ones that can name a frame, and they keep the dump small
where a whole map can be megabytes. The dump stores them verbatim (our stream
``GD_PERF_MAP``), and :class:`PerfMap` names JIT frames for ``inspect``.
"""

from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass
from typing import Iterable, Optional

from .snapshot import Thread

MODULE_NAME = "perf-map"  # how inspect shows code named from the map: perf-map!NAME+0xOFF
STORE_LIMIT = 1 << 20  # bytes of selected lines a dump holds at most


@dataclass(frozen=True)
class PerfMapEntry:
    start: int
    size: int
    name: str

    @property
    def end(self) -> int:
        return self.start + self.size


def parse_line(line: bytes) -> Optional[PerfMapEntry]:
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        return None
    try:
        start, size = int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None
    if size <= 0 or start <= 0 or start + size > 1 << 64:
        return None
    name = parts[2].decode("utf-8", "replace") if len(parts) > 2 else ""
    return PerfMapEntry(start, size, name)


class PerfMap:
    """The entries of one map; :meth:`lookup` answers with the latest line covering an
    address."""

    def __init__(self, entries: Iterable[PerfMapEntry]):
        # (start, line order, entry), by start; _max_end[i]: the furthest end up to i.
        items = sorted((e.start, i, e) for i, e in enumerate(entries))
        self._items = items
        self._starts = [s for s, _, _ in items]
        self._max_end = []
        top = 0
        for _, _, e in items:
            top = max(top, e.end)
            self._max_end.append(top)

    @classmethod
    def parse(cls, data: bytes) -> "PerfMap":
        return cls(e for e in map(parse_line, data.splitlines()) if e is not None)

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, addr: int) -> Optional[PerfMapEntry]:
        j = bisect.bisect_right(self._starts, addr) - 1
        best = None
        while j >= 0 and self._max_end[j] > addr:
            _, order, e = self._items[j]
            if e.start <= addr < e.end and (best is None or order > best[0]):
                best = (order, e)
            j -= 1
        return best[1] if best is not None else None


def select(data: bytes, addresses: Iterable[int]) -> bytes:
    """The lines of ``data`` whose code holds one of ``addresses``, in their order."""
    wanted = sorted(set(addresses))
    if not wanted:
        return b""
    out = []
    for line in data.splitlines(keepends=True):
        e = parse_line(line)
        if e is None:
            continue
        i = bisect.bisect_left(wanted, e.start)
        if i < len(wanted) and wanted[i] < e.end:
            out.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(out)


def stack_words(start: int, data: bytes) -> Iterable[int]:
    """Every aligned 8-byte little-endian word of ``data`` (memory at ``start``)."""
    skip = -start % 8
    body = memoryview(data)[skip:]
    body = body[: len(body) - len(body) % 8]
    if not len(body):
        return ()
    if sys.byteorder == "little":
        return body.cast("Q")
    return (int.from_bytes(body[i:i + 8], "little") for i in range(0, len(body), 8))


def thread_addresses(threads: Iterable[Thread]) -> set[int]:
    """What a stack walk can meet: every thread's pc (and link register) and every word
    of its stack."""
    out: set[int] = set()
    for t in threads:
        ctx = t.context
        for reg in ("pc", "lr"):
            v = getattr(ctx, reg, None)
            if v:
                out.add(v)
        if t.stack is not None:
            out.update(stack_words(t.stack.start, t.stack.data))
    return out


def for_dump(data: bytes, threads: Iterable[Thread],
             limit: int = STORE_LIMIT) -> tuple[bytes, bool]:
    """(the lines to store, whether ``limit`` cut some off): those :func:`select` keeps for
    the threads' stacks and registers, at most ``limit`` bytes of them (the last ones)."""
    kept = select(data, thread_addresses(threads))
    if len(kept) <= limit:
        return kept, False
    tail = kept[len(kept) - limit:]
    return tail[tail.find(b"\n") + 1:], True
