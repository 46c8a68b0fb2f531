"""A minidump file as a Snapshot whose memory stays in the (mapped) file until a sink
streams it: converting a multi-GiB full dump copies nothing up front."""

from __future__ import annotations

import dataclasses
import os
from typing import Union

from ..errors import DumpError
from ..minidump.reader import Minidump, MinidumpFormatError, read_minidump
from ..snapshot import LazyMemory, Snapshot


class MinidumpFileError(DumpError):
    """The input minidump cannot be read."""


def _reader(md: Minidump, start: int, rva: int, size: int):
    def read(address: int, n: int) -> bytes:
        off = address - start
        if off < 0 or off >= size:
            return b""
        return bytes(md.data[rva + off: rva + min(size, off + n)])

    return read


def read_minidump_snapshot(path: Union[str, os.PathLike]) -> Snapshot:
    """The Snapshot in a minidump, memory read lazily from the mapped file."""
    try:
        md = read_minidump(path)
        stacks = {t.stack.start for t in md.threads if t.stack}
        bare = dataclasses.replace(md, memory=[], memory64=[])
        snap = bare.to_snapshot()
    except MinidumpFormatError as exc:
        raise MinidumpFileError(f"{os.fspath(path)}: {exc}") from None
    memory = tuple(LazyMemory(d.start, d.size, _reader(md, d.start, d.rva, d.size))
                   for d in md.all_memory() if d.start not in stacks and d.size)
    process = snap.process
    linux = snap.linux
    if linux is not None and linux.cmdline and not process.command_line:
        args = tuple(a.decode("utf-8", "surrogateescape") for a in linux.cmdline.split(b"\0")
                     if a)
        process = dataclasses.replace(process, command_line=args)
    if linux is not None and linux.status:
        for line in linux.status.splitlines():
            if line.startswith(b"PPid:") and line.split()[1:2] and line.split()[1].isdigit():
                process = dataclasses.replace(process, parent_pid=int(line.split()[1]))
    return dataclasses.replace(snap, memory=memory, process=process)
