"""One way to read a process's memory, whatever holds it: a live process, a minidump, a core.

Sinks that need more than the snapshot's ranges (Python stacks, symbol lookups, redaction,
unwinding) read through this, so the same code runs on a live target and on a file.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class MemorySource(Protocol):
    """Reads bytes at an address of the process's address space.

    ``read`` returns at most ``size`` bytes starting at ``address``: fewer (possibly none)
    where the memory is unmapped, unreadable or not held by the source. It never raises
    for missing memory, so callers bound their reads and check lengths.
    """

    def read(self, address: int, size: int) -> bytes: ...


class EmptyMemory:
    """A source that holds nothing (a process with no readable memory)."""

    def read(self, address: int, size: int) -> bytes:
        return b""


class RangesMemory:
    """Memory held as sorted, disjoint (start, bytes) ranges, e.g. a snapshot's copies."""

    def __init__(self, ranges):
        import bisect

        self._bisect = bisect
        items = sorted(((int(s), d) for s, d in ranges), key=lambda r: r[0])
        self._starts = [s for s, _ in items]
        self._data = [d for _, d in items]

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        addr, want = address, size
        i = self._bisect.bisect_right(self._starts, addr) - 1
        while want > 0 and 0 <= i < len(self._starts):
            start, data = self._starts[i], self._data[i]
            if not start <= addr < start + len(data):
                break
            piece = bytes(data[addr - start:addr - start + want])
            out += piece
            addr += len(piece)
            want -= len(piece)
            i += 1
        return bytes(out)
