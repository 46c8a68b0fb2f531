"""Write a Snapshot as a Linux ELF core file that gdb and LLDB open.

The notes follow the kernel's order (binfmt_elf.c): the first thread (the crashing one,
else the main thread) with NT_PRSTATUS, then the process notes NT_PRPSINFO, NT_SIGINFO
(if there was a signal), NT_AUXV, NT_FILE, then its NT_FPREGSET; every other thread's
NT_PRSTATUS and NT_FPREGSET after. Every memory range the snapshot holds becomes a
PT_LOAD, its bytes streamed from the snapshot (never all in memory), page aligned.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Callable, Optional

from ..errors import DumpError
from ..intervals import subtract
from ..binfmt import elfcore as ec
from ..snapshot import (
    Amd64Context, Arch, Arm64Context, Memory, MemoryRange, MemoryRegion, Snapshot, Thread,
)
from .placed import write_placed

PAGE = 4096
_MASK = (1 << 64) - 1


class CoreWriteError(DumpError):
    """The snapshot cannot become a core file (no memory, unsupported architecture)."""


def _amd64_regs(t: Thread) -> dict[str, int]:
    c = t.context
    assert isinstance(c, Amd64Context)
    regs = {n: getattr(c, n) for n in ec.AMD64_USER_REGS if hasattr(c, n)}
    regs.update(orig_rax=_MASK, fs_base=t.thread_pointer, gs_base=0)
    return regs


def _arm64_regs(t: Thread) -> dict[str, int]:
    c = t.context
    assert isinstance(c, Arm64Context)
    regs = {f"x{i}": v for i, v in enumerate(c.x)}
    regs.update(x29=c.fp, x30=c.lr, sp=c.sp, pc=c.pc, pstate=c.cpsr)
    return regs


def _fpregs(t: Thread) -> Optional[bytes]:
    c = t.context
    if isinstance(c, Amd64Context):
        return c.fxsave if c.fxsave and len(c.fxsave) == ec.FXSAVE_SIZE else None
    if isinstance(c, Arm64Context) and c.v is not None:
        v = b"".join((x & ((1 << 128) - 1)).to_bytes(16, "little") for x in c.v)
        return v + struct.pack("<II", c.fpsr, c.fpcr) + bytes(8)
    return None


def file_mappings(snapshot: Snapshot) -> list[ec.FileMapping]:
    """NT_FILE entries: the file mappings of the LinuxMaps text when the snapshot has one
    (as the kernel writes them), else one entry per module."""
    maps = snapshot.linux.maps if snapshot.linux else None
    out = []
    if maps:
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or not parts[5].startswith(b"/") or parts[4] == b"0":
                continue
            lo, _, hi = parts[0].partition(b"-")
            try:
                out.append(ec.FileMapping(int(lo, 16), int(hi, 16), int(parts[2], 16),
                                          parts[5].decode("utf-8", "surrogateescape")))
            except ValueError:
                continue
        if out:
            return out
    return [ec.FileMapping(m.base, m.end, 0, m.path) for m in snapshot.modules
            if m.path.startswith("/")]


def _command_line(snapshot: Snapshot) -> list[str]:
    if snapshot.process.command_line:
        return list(snapshot.process.command_line)
    raw = snapshot.linux.cmdline if snapshot.linux else None
    if raw:
        return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]
    main = next((m for m in snapshot.modules if m.is_main), None)
    return [main.path] if main else []


def _memory_pieces(snapshot: Snapshot) -> list[tuple[int, int, Memory]]:
    """(start, end, memory) pieces, sorted and disjoint: stacks win over other memory,
    and of overlapping other ranges the first (lowest) one wins."""
    import bisect

    stacks = sorted(((t.stack.start, t.stack.end, t.stack) for t in snapshot.threads
                     if t.stack is not None and t.stack.size), key=lambda p: p[0])
    taken = [(a, b) for a, b, _ in stacks]
    taken_starts = [a for a, _ in taken]
    pieces: list[tuple[int, int, Memory]] = list(stacks)
    last_end = 0
    for m in sorted((m for m in snapshot.memory if m.size), key=lambda m: m.start):
        lo = max(m.start, last_end)
        if lo >= m.end:
            continue
        last_end = m.end
        i = max(0, bisect.bisect_right(taken_starts, lo) - 1)
        j = bisect.bisect_left(taken_starts, m.end)
        for a, b in subtract([(lo, m.end)], taken[i:j]):
            pieces.append((a, b, m.slice(a, b)))
    pieces.sort(key=lambda p: p[0])
    return pieces


DT_DEBUG = 21


def _held(pieces, address: int, size: int) -> bool:
    return any(a <= address and address + size <= b for a, b, _ in pieces)


def link_map_memory(snapshot: Snapshot, pieces) -> list[MemoryRange]:
    """The dynamic linker's r_debug and link_map chain, rebuilt from the DsoDebug stream
    where the dump does not hold them (dumps without --memory=full), as Breakpad's
    minidump-2-core does: gdb finds the shared libraries through them. The executable's
    _DYNAMIC goes back at its address, r_debug at the address its DT_DEBUG names, and
    the link_map nodes (whose addresses the stream does not keep) on a page above every
    mapping."""
    dso = snapshot.linux.dso_debug if snapshot.linux else None
    if dso is None or not dso.dynamic or not dso.link_maps or not dso.dynamic_addr:
        return []
    debug_addr = 0
    for off in range(0, len(dso.dynamic) - 15, 16):
        tag, val = struct.unpack_from("<qQ", dso.dynamic, off)
        if tag == DT_DEBUG:
            debug_addr = val
    if not debug_addr or _held(pieces, debug_addr, 40):
        return []
    out = []
    if not _held(pieces, dso.dynamic_addr, len(dso.dynamic)):
        out.append(MemoryRange(dso.dynamic_addr, dso.dynamic))
    top = max([r.end for r in snapshot.regions] + [b for _, b, _ in pieces])
    base = (top + 2 * PAGE - 1) & ~(PAGE - 1)
    nodes = base
    names_at = nodes + 40 * len(dso.link_maps)
    blob = bytearray()
    names = bytearray()
    for i, lm in enumerate(dso.link_maps):
        prev = nodes + 40 * (i - 1) if i else 0
        nxt = nodes + 40 * (i + 1) if i + 1 < len(dso.link_maps) else 0
        blob += struct.pack("<QQQQQ", lm.addr, names_at + len(names), lm.ld, nxt, prev)
        names += lm.name.encode("utf-8", "surrogateescape") + b"\0"
    out.append(MemoryRange(base, bytes(blob + names)))
    r_debug = struct.pack("<iiQQiiQ", dso.version, 0, nodes, dso.brk, 0, 0, dso.ldbase)
    out.append(MemoryRange(debug_addr, r_debug))
    return out


def _flags(r: Optional[MemoryRegion]) -> int:
    if r is None:
        return ec.PF_R | ec.PF_W
    return (ec.PF_R if r.readable else 0) | (ec.PF_W if r.writable else 0) \
        | (ec.PF_X if r.executable else 0)


def segments(snapshot: Snapshot) -> list[tuple[int, int, int, Optional[Memory]]]:
    """(start, end, flags, memory or None) for every PT_LOAD, sorted: the memory the
    snapshot holds, cut at mapping boundaries, and (bytes-less) the rest of every
    mapping, so that the core's segments describe the whole map as the kernel's do."""
    from ..intervals import merge

    pieces = _memory_pieces(snapshot)
    extra = link_map_memory(snapshot, pieces)
    if extra:
        held_now = merge([(a, b) for a, b, _ in pieces])
        for m in extra:
            pieces += [(a, b, m.slice(a, b)) for a, b in subtract([(m.start, m.end)], held_now)]
        pieces.sort(key=lambda p: p[0])
    regions = sorted((r for r in snapshot.regions if r.size), key=lambda r: r.start)
    cuts = sorted({r.start for r in regions} | {r.end for r in regions})
    import bisect

    out: list[tuple[int, int, Optional[Memory]]] = []
    for a, b, mem in pieces:
        i = bisect.bisect_right(cuts, a)
        lo = a
        while lo < b:
            hi = min(b, cuts[i]) if i < len(cuts) else b
            out.append((lo, hi, mem.slice(lo, hi) if (lo, hi) != (a, b) else mem))
            lo = hi
            i += 1
    held = merge([(a, b) for a, b, _ in out])
    for r in regions:
        for a, b in subtract([(r.start, r.end)], held):
            out.append((a, b, None))
    starts = [r.start for r in regions]
    result: list[tuple[int, int, int, Optional[Memory]]] = []
    for a, b, piece in sorted(out, key=lambda p: p[0]):
        k = bisect.bisect_right(starts, a) - 1
        region = regions[k] if k >= 0 and a < regions[k].end else None
        result.append((a, b, _flags(region), piece))
    return result


def core_notes(snapshot: Snapshot, machine: int) -> bytes:
    if not snapshot.threads:
        raise CoreWriteError("the dump has no threads: a core file needs at least one")
    p = snapshot.process
    exc = snapshot.exception
    first_tid = exc.thread_id if exc else p.pid
    threads = sorted(snapshot.threads, key=lambda t: t.tid != first_tid)
    cursig = exc.code if exc and 0 < exc.code < 65 else 0
    argv = _command_line(snapshot)
    fname = os.path.basename(argv[0]) if argv else ""
    if threads and threads[0].name and threads[0].tid == p.pid:
        fname = threads[0].name
    psinfo = ec.PrPsInfo(pid=p.pid, ppid=p.parent_pid, fname=fname, psargs=" ".join(argv))
    to_regs: Callable[[Thread], dict[str, int]] = (
        _amd64_regs if machine == ec.EM_X86_64 else _arm64_regs)
    out = bytearray()
    for i, t in enumerate(threads):
        status = ec.PrStatus(pid=t.tid, ppid=p.parent_pid, pgrp=p.pid, sid=p.pid,
                             cursig=cursig,
                             utime=p.user_time if t.tid == p.pid else 0.0,
                             stime=p.kernel_time if t.tid == p.pid else 0.0,
                             regs=tuple(to_regs(t).items()))
        out += ec.encode_note(b"CORE", ec.NT_PRSTATUS, ec.encode_prstatus(status, machine))
        if i == 0:
            out += ec.encode_note(b"CORE", ec.NT_PRPSINFO, ec.encode_prpsinfo(psinfo))
            if exc is not None and cursig:
                sig = ec.SigInfo(signo=cursig, code=exc.flags if exc.flags < 1 << 31
                                 else exc.flags - (1 << 32), addr=exc.address)
                out += ec.encode_note(b"CORE", ec.NT_SIGINFO, ec.encode_siginfo(sig))
            auxv = snapshot.linux.auxv if snapshot.linux else None
            if auxv:
                out += ec.encode_note(b"CORE", ec.NT_AUXV, auxv)
            files = file_mappings(snapshot)
            if files:
                out += ec.encode_note(b"CORE", ec.NT_FILE, ec.encode_nt_file(files))
        fp = _fpregs(t)
        if fp is not None:
            out += ec.encode_note(b"CORE", ec.NT_PRFPREG, fp)
        if machine == ec.EM_AARCH64 and t.thread_pointer:
            out += ec.encode_note(b"LINUX", ec.NT_ARM_TLS, struct.pack("<Q", t.thread_pointer))
    return bytes(out)


def write_core(snapshot: Snapshot, out: BinaryIO,
               progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Write ``snapshot`` as an ELF core to ``out`` (sequentially; a pipe works).
    Returns the number of bytes written."""
    machine = {Arch.AMD64: ec.EM_X86_64, Arch.ARM64: ec.EM_AARCH64}.get(snapshot.system.arch)
    if machine is None:
        raise CoreWriteError(f"cannot write a core for {snapshot.system.arch.value} dumps; "
                             "only x86-64 and arm64")
    if not _memory_pieces(snapshot):
        raise CoreWriteError("the dump holds no memory at all, so a core made from it could "
                             "not show even a stack; dump with --memory=stacks or more")
    notes = core_notes(snapshot, machine)
    segs = segments(snapshot)
    phnum = 1 + len(segs)
    if phnum >= 0xFFFF:
        raise CoreWriteError(f"the dump has {len(segs)} memory ranges and mappings; ELF "
                             "cores hold at most 65534")
    phoff = ec.EHDR.size
    notes_off = phoff + phnum * ec.PHDR.size
    data_off = (notes_off + len(notes) + PAGE - 1) & ~(PAGE - 1)
    phdrs = [ec.PHDR.pack(ec.PT_NOTE, 0, notes_off, 0, 0, len(notes), 0, 1)]
    placed = []
    off = data_off
    for a, b, flags, mem in segs:
        filesz = b - a if mem is not None else 0
        phdrs.append(ec.PHDR.pack(ec.PT_LOAD, flags, off if filesz else 0, a, 0, filesz,
                                  b - a, PAGE))
        if mem is not None:
            placed.append((off, mem))
            off = (off + filesz + PAGE - 1) & ~(PAGE - 1)
    ident = b"\x7fELF" + bytes([ec.ELFCLASS64, ec.ELFDATA2LSB, 1, 0]) + bytes(8)
    header = ec.EHDR.pack(ident, ec.ET_CORE, machine, 1, 0, phoff, 0, 0, ec.EHDR.size,
                          ec.PHDR.size, phnum, 64, 0, 0)
    total = off
    out.write(header)
    out.write(b"".join(phdrs))
    out.write(notes)
    return write_placed(out, placed, notes_off + len(notes), total, progress)
