"""A read-only view of a process for the walker: from a minidump file or from a Snapshot."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Callable, Optional

from ..perfmap import PerfMap
from ..snapshot import (
    Arch, CpuContext, ExceptionInfo, MemoryRange, MemoryRegion, Module, OS, Snapshot, SystemInfo,
    TriggerInfo,
)


@dataclass
class ThreadView:
    tid: int
    name: Optional[str]
    context: Optional[CpuContext]
    stack_start: int = 0
    stack: bytes = b""
    thread_pointer: int = 0  # fs base / TPIDR_EL0 / TEB (the dump's Teb field)


def _slicer(data: bytes):
    return lambda off, n: data[off:off + n]


class ProcessView:
    def __init__(self, system: Optional[SystemInfo], threads: list[ThreadView],
                 modules: list[Module], memory: list[tuple[int, int, Callable]],
                 regions: list[MemoryRegion], exception: Optional[ExceptionInfo],
                 pid: int = 0, command_line: tuple[str, ...] = (), path: Optional[str] = None,
                 soft_errors: tuple = (), time: int = 0, perf_map: Optional[bytes] = None,
                 python=None):
        self.system = system
        self.arch = system.arch if system else None
        self.os = system.os if system else None
        self.threads = threads
        self.modules = sorted(modules, key=lambda m: m.base)
        self._mod_bases = [m.base for m in self.modules]
        self.module_order = list(modules)  # as the dump lists them (main first)
        # memory: (start, size, read(offset, n)) per captured range, overlaps allowed.
        ranges = sorted((r for r in memory if r[1] > 0), key=lambda r: r[0])
        self._mem_starts = [r[0] for r in ranges]
        self._mem = ranges
        self._mem_max_end = []
        top = 0
        for start, size, _ in ranges:
            top = max(top, start + size)
            self._mem_max_end.append(top)
        self.regions = sorted(regions, key=lambda r: r.start)
        self._region_starts = [r.start for r in self.regions]
        self.exception = exception
        self.pid = pid
        self.command_line = command_line
        self.path = path
        self.soft_errors = soft_errors
        self.time = time
        self.trigger: Optional[TriggerInfo] = None  # TriggerInfo of a `watch` dump
        # The process's JIT symbol map, when the dump carries one: names code outside modules.
        self.perf_map = PerfMap.parse(perf_map) if perf_map else None
        self.python = python  # PythonState from the dump's GD_PYTHON stream / the snapshot

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_minidump(cls, md, path: Optional[str] = None) -> "ProcessView":
        stacks = []
        threads = []
        for t in md.threads:
            ctx = t.context
            if md.exception is not None and md.exception.thread_id == t.tid \
                    and md.exception_context is not None:
                ctx = md.exception_context
            start, data = 0, b""
            if t.stack is not None:
                start, data = t.stack.start, md.bytes_at(t.stack)
                stacks.append(t.stack.start)
            threads.append(ThreadView(t.tid, md.thread_names.get(t.tid), ctx, start, data,
                                      t.teb))
        data = md.data

        def reader(rva: int):
            return lambda off, n: bytes(data[rva + off:rva + off + n])

        # Read from the file (an mmap) on demand: a full dump's memory can be gigabytes.
        memory = [(d.start, d.size, reader(d.rva)) for d in md.all_memory()]
        misc = md.misc or {}
        cmdline: tuple[str, ...] = ()
        raw = md.linux.get("cmdline")
        if raw:
            cmdline = tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))
        view = cls(md.system, threads, list(md.modules), memory, list(md.regions),
                   md.exception, pid=misc.get("process_id", 0), command_line=cmdline,
                   path=os.fspath(path) if path is not None else None,
                   soft_errors=tuple(md.soft_errors), time=md.time, perf_map=md.perf_map,
                   python=md.python)
        view.trigger = md.trigger
        return view

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> "ProcessView":
        threads = []
        # LazyMemory (read from the live process while a full dump is written) is skipped:
        # the walk needs the stacks, and the process may be gone by now.
        memory = [(m.start, len(m.data), _slicer(m.data)) for m in snap.memory
                  if isinstance(m, MemoryRange)]
        for t in snap.threads:
            start, data = (t.stack.start, t.stack.data) if t.stack is not None else (0, b"")
            threads.append(ThreadView(t.tid, t.name, t.context, start, data,
                                      t.thread_pointer))
            if data:
                memory.append((start, len(data), _slicer(data)))
        cmdline = snap.process.command_line
        if not cmdline and snap.linux is not None and snap.linux.cmdline:
            cmdline = tuple(a.decode("utf-8", "replace")
                            for a in snap.linux.cmdline.rstrip(b"\0").split(b"\0"))
        view = cls(snap.system, threads, list(snap.modules), memory, list(snap.regions),
                   snap.exception, pid=snap.process.pid, command_line=cmdline,
                   soft_errors=snap.soft_errors, time=snap.time, perf_map=snap.perf_map,
                   python=snap.python)
        view.trigger = snap.trigger
        return view

    # -- queries ------------------------------------------------------------------------------

    def module_at(self, addr: int) -> Optional[Module]:
        i = bisect.bisect_right(self._mod_bases, addr) - 1
        while i >= 0:
            m = self.modules[i]
            if m.base <= addr < m.base + m.size:
                return m
            if m.base + max(m.size, 1 << 32) < addr:
                break
            i -= 1
        return None

    def region_at(self, addr: int) -> Optional[MemoryRegion]:
        i = bisect.bisect_right(self._region_starts, addr) - 1
        if i >= 0 and self.regions[i].start <= addr < self.regions[i].end:
            return self.regions[i]
        return None

    def read(self, addr: int, size: int) -> Optional[bytes]:
        """``size`` bytes at ``addr`` if one captured range holds them all."""
        j = bisect.bisect_right(self._mem_starts, addr) - 1
        # Ranges may overlap (a stack and the pointer windows inside it): walk back while
        # an earlier range can still reach past ``addr``.
        while j >= 0 and self._mem_max_end[j] > addr:
            start, length, read = self._mem[j]
            if start <= addr and addr + size <= start + length:
                return read(addr - start, size)
            j -= 1
        return None

    def read_partial(self, addr: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``addr``, across adjacent captured ranges; short where
        the dump holds no more (a MemorySource over the dump)."""
        out = bytearray()
        while size > 0:
            j = bisect.bisect_right(self._mem_starts, addr) - 1
            best = None
            while j >= 0 and self._mem_max_end[j] > addr:
                start, length, read = self._mem[j]
                if start <= addr < start + length and (
                        best is None or start + length > best[0] + best[1]):
                    best = (start, length, read)
                j -= 1
            if best is None:
                break
            start, length, read = best
            n = min(size, start + length - addr)
            out += read(addr - start, n)
            addr += n
            size -= n
        return bytes(out)

    @property
    def main_module(self) -> Optional[Module]:
        for m in self.module_order:
            if m.is_main:
                return m
        return self.module_order[0] if self.module_order else None

    @property
    def process_name(self) -> str:
        if self.command_line:
            return os.path.basename(self.command_line[0]) or self.command_line[0]
        m = self.main_module
        return os.path.basename(m.path) if m is not None else ""

    @property
    def is_linux_like(self) -> bool:
        return self.os in (OS.LINUX, OS.ANDROID, OS.MACOS, OS.IOS)

    @property
    def word_size(self) -> int:
        return 4 if self.arch == Arch.X86 else 8
