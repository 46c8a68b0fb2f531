"""One way to read a process's memory, whatever holds it: a live process, a minidump, a core.

Sinks that need more than the snapshot's ranges (Python stacks, symbol lookups, redaction,
unwinding) read through this, so the same code runs on a live target and on a file.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable


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


class SnapshotMemory:
    """The memory a :class:`~generate_dump.snapshot.Snapshot` holds: its threads' stacks and
    its memory ranges, copied (``MemoryRange``) or read on demand (``LazyMemory``: the
    mapped file of a minidump or a core). Ranges may overlap (a stack and a range around
    it). ``lazy=False`` leaves out ``LazyMemory``: a live snapshot's reads the process,
    which may have moved on or be gone once the snapshot is written."""

    def __init__(self, snapshot, lazy: bool = True):
        import bisect

        from .snapshot import MemoryRange

        self._bisect = bisect
        ranges = []  # (start, size, read(address, n) -> bytes)
        for t in snapshot.threads:
            if t.stack is not None and t.stack.data:
                ranges.append((t.stack.start, len(t.stack.data), _copied(t.stack)))
        for m in snapshot.memory:
            if isinstance(m, MemoryRange):
                if m.data:
                    ranges.append((m.start, len(m.data), _copied(m)))
            elif lazy and m.size > 0:
                ranges.append((m.start, m.size, m.read))
        ranges.sort(key=lambda r: r[0])
        self._ranges = ranges
        self._starts = [r[0] for r in ranges]
        # The highest end of the ranges up to each index: how far back a lookup must look.
        self._max_end = []
        top = 0
        for start, size, _ in ranges:
            top = max(top, start + size)
            self._max_end.append(top)

    def read_exact(self, address: int, size: int) -> Optional[bytes]:
        """``size`` bytes at ``address`` if one range holds them all, else None."""
        j = self._bisect.bisect_right(self._starts, address) - 1
        while j >= 0 and self._max_end[j] > address:
            start, length, read = self._ranges[j]
            if start <= address and address + size <= start + length:
                return read(address, size)
            j -= 1
        return None

    def read(self, address: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``address``, across adjacent ranges; short where the
        snapshot holds no more."""
        out = bytearray()
        while size > 0:
            j = self._bisect.bisect_right(self._starts, address) - 1
            best = None
            while j >= 0 and self._max_end[j] > address:
                start, length, read = self._ranges[j]
                if start <= address < start + length and (
                        best is None or start + length > best[0] + best[1]):
                    best = (start, length, read)
                j -= 1
            if best is None:
                break
            start, length, read = best
            n = min(size, start + length - address)
            piece = read(address, n)
            out += piece
            if len(piece) < n:
                break
            address += n
            size -= n
        return bytes(out)


def _copied(r):
    data, start = r.data, r.start
    return lambda address, n: data[address - start:address - start + n]
