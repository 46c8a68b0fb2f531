"""A minidump file as a Snapshot whose memory stays in the (mapped) file until a sink
streams it: converting a multi-GiB full dump copies nothing up front.

This is the one way to read the process a minidump describes (``inspect``, the summaries,
``convert`` and the tests all use it); :mod:`generate_dump.minidump.reader` gives the
file's layout (streams, descriptors and their offsets) for the tools that patch or search
the file itself.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from typing import Union

from ..errors import DumpError
from ..minidump.reader import (
    Minidump, MinidumpFormatError, MemoryDescriptor, parse, read_minidump,
)
from ..snapshot import (
    LazyMemory, LinuxFiles, MemoryRange, Process, Snapshot, Thread,
)


class MinidumpFileError(DumpError):
    """The input minidump cannot be read. ``reason`` says why, without the file name."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _reader(md: Minidump, d: MemoryDescriptor):
    start, rva, size = d.start, d.rva, d.size

    def read(address: int, n: int) -> bytes:
        off = address - start
        if off < 0 or off >= size:
            return b""
        return bytes(md.data[rva + off: rva + min(size, off + n)])

    return read


def read_minidump_snapshot(source: Union[str, os.PathLike, bytes, memoryview, mmap.mmap]
                           ) -> Snapshot:
    """The Snapshot in a minidump (a path, or the file's bytes), memory read lazily from
    the mapped file. The crashing thread's registers are those of the Exception stream
    (where the fault happened; a dumper's own thread list may hold the handler's)."""
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "minidump"
    try:
        if isinstance(source, (str, os.PathLike)):
            return _snapshot(read_minidump(source))
        return _snapshot(parse(source))
    except MinidumpFormatError as exc:
        raise MinidumpFileError(f"{name}: {exc}", str(exc)) from None


def _snapshot(md: Minidump) -> Snapshot:
    if md.system is None:
        raise MinidumpFormatError("no SystemInfo stream: cannot tell the architecture")
    misc = md.misc or {}
    crashed = md.exception.thread_id if md.exception is not None else None
    stacks = set()
    threads = []
    for t in md.threads:
        context = t.context
        if t.tid == crashed and md.exception_context is not None:
            context = md.exception_context
        stack = None
        if t.stack is not None:
            stacks.add((t.stack.start, t.stack.size))
            stack = MemoryRange(t.stack.start, md.bytes_at(t.stack))
        threads.append(Thread(
            tid=t.tid, context=context, stack=stack,  # type: ignore[arg-type]
            name=md.thread_names.get(t.tid), thread_pointer=t.teb,
            suspend_count=t.suspend_count, priority_class=t.priority_class,
            priority=t.priority,
        ))
    # The stacks' own descriptors are left out: a thread's stack is its MemoryList entry.
    memory = tuple(LazyMemory(d.start, d.size, _reader(md, d)) for d in md.all_memory()
                   if (d.start, d.size) not in stacks and d.size)
    linux = None
    if md.linux or md.dso_debug is not None:
        linux = LinuxFiles(**md.linux, dso_debug=md.dso_debug)
    process = Process(
        pid=misc.get("process_id", 0),
        create_time=misc.get("process_create_time", 0),
        user_time=float(misc.get("process_user_time", 0)),
        kernel_time=float(misc.get("process_kernel_time", 0)),
    )
    if linux is not None and linux.cmdline:
        args = tuple(a.decode("utf-8", "surrogateescape") for a in linux.cmdline.split(b"\0")
                     if a)
        process = dataclasses.replace(process, command_line=args)
    if linux is not None and linux.status:
        for line in linux.status.splitlines():
            if line.startswith(b"PPid:") and line.split()[1:2] and line.split()[1].isdigit():
                process = dataclasses.replace(process, parent_pid=int(line.split()[1]))
    return Snapshot(
        process=process,
        system=md.system,
        threads=tuple(threads),
        modules=tuple(md.modules),
        memory=memory,
        regions=tuple(md.regions),
        exception=md.exception,
        linux=linux,
        soft_errors=tuple(md.soft_errors),
        time=md.time,
        trigger=md.trigger,
        perf_map=md.perf_map,
        python=md.python,
    )
