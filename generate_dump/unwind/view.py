"""Address lookups over a Snapshot for the walker and ``inspect``: the module, the memory
region and the bytes at an address. Built from a Snapshot (a live capture's, or a
minidump's from :func:`generate_dump.sources.minidump_file.read_minidump_snapshot`); it
holds no facts of its own, so every source is walked by the same code."""

from __future__ import annotations

import bisect
from typing import Optional

from ..memsource import SnapshotMemory
from ..perfmap import PerfMap
from ..snapshot import Arch, MemoryRegion, Module, OS, Snapshot


class SnapshotIndex:
    """``snapshot`` indexed by address. ``memory`` is the MemorySource over it (default:
    everything the snapshot holds, lazy ranges read on demand)."""

    def __init__(self, snapshot: Snapshot, memory: Optional[SnapshotMemory] = None):
        self.snapshot = snapshot
        self.memory = memory if memory is not None else SnapshotMemory(snapshot)
        self.modules = sorted(snapshot.modules, key=lambda m: m.base)
        self._mod_bases = [m.base for m in self.modules]
        self.regions = sorted(snapshot.regions, key=lambda r: r.start)
        self._region_starts = [r.start for r in self.regions]
        # The process's JIT symbol map, when the dump carries one: names code outside modules.
        self.perf_map = PerfMap.parse(snapshot.perf_map) if snapshot.perf_map else None

    @property
    def arch(self) -> Arch:
        return self.snapshot.system.arch

    @property
    def os(self) -> OS:
        return self.snapshot.system.os

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
        return self.memory.read_exact(addr, size)
