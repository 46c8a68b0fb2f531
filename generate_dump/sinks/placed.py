"""Streaming a file's bulk memory: what both writers (minidump, ELF core) do last.

A writer lays its file out first (structure, then each memory piece at its file offset),
writes the structure, and hands the pieces here, so that memory goes out chunk by chunk
(never all in memory) with zeros filling the alignment gaps between pieces.
"""

from __future__ import annotations

from typing import BinaryIO, Callable, Iterable, Optional, Protocol, Union


class Chunked(Protocol):
    """Memory that yields its bytes piece by piece (MemoryRange, LazyMemory)."""

    def chunks(self) -> Iterable[Union[bytes, memoryview]]: ...


def write_placed(out: BinaryIO, placed: Iterable[tuple[int, Chunked]], pos: int, total: int,
                 progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Write each (file offset, memory), in ascending order, after ``pos`` (where ``out``
    stands); ``progress(pos, total)`` after every chunk. Returns the end position."""
    for at, memory in placed:
        if at > pos:
            out.write(bytes(at - pos))
        pos = at
        for chunk in memory.chunks():
            out.write(chunk)
            pos += len(chunk)
            if progress is not None:
                progress(pos, total)
    return pos
