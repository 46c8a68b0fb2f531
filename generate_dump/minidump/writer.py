"""Write a Snapshot as a minidump.

Layout: header, stream directory, every stream's structure (records, strings, contexts,
CodeView records, raw Linux files), then bulk memory last, so a truncated file loses
memory before it loses structure. The layout is computed in two passes over the same
code: the first measures the structure, the second places bulk memory after it. Bulk
bytes are never concatenated in memory: they are streamed from the snapshot to the file.
"""

from __future__ import annotations

import bisect
import json
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

from ..snapshot import (
    Arch,
    Memory,
    Module,
    OS,
    RegionKind,
    Snapshot,
    Thread,
)
from .. import _testhooks
from ..errors import DumpError
from ..intervals import merge, subtract
from ..sinks.placed import write_placed
from . import format as fmt
from .codeview import encode_codeview
from .context import encode_context

_ARCH_CODES = {
    Arch.X86: fmt.ProcessorArchitecture.X86,
    Arch.AMD64: fmt.ProcessorArchitecture.AMD64,
    Arch.ARM64: fmt.ProcessorArchitecture.ARM64,
}
_PLATFORM_IDS = {
    OS.WINDOWS: fmt.PlatformId.WIN32_NT,
    OS.MACOS: fmt.PlatformId.MACOS,
    OS.IOS: fmt.PlatformId.IOS,
    OS.LINUX: fmt.PlatformId.LINUX,
    OS.ANDROID: fmt.PlatformId.ANDROID,
}
_MAX_RVA = 0xFFFFFFFF


class MinidumpWriteError(DumpError, ValueError):
    """The snapshot cannot be written as a minidump (the message says why)."""


@dataclass(frozen=True)
class WriteOptions:
    """``memory64``: put memory other than stacks in a Memory64List (for dumps over 4 GiB)."""

    memory64: bool = False


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


class _Layout:
    """Places structure bytes in order and bulk blobs after them (at ``bulk_base``)."""

    def __init__(self, structure_start: int, bulk_base: int):
        self.buf = bytearray()
        self.start = structure_start
        self.bulk: list[tuple[int, Memory]] = []
        self.bulk_cursor = bulk_base

    def place(self, data: bytes, align: int = 8) -> tuple[int, int]:
        """Add structure bytes; returns (rva, size)."""
        pos = _align(self.start + len(self.buf), align)
        self.buf.extend(bytes(pos - self.start - len(self.buf)))
        self.buf.extend(data)
        return pos, len(data)

    def place_bulk(self, memory: Memory, align: int = 16) -> int:
        """Add bulk memory (streamed later); returns its rva."""
        self.bulk_cursor = _align(self.bulk_cursor, align)
        rva = self.bulk_cursor
        self.bulk.append((rva, memory))
        self.bulk_cursor += memory.size
        return rva

    def place_string(self, text: str) -> int:
        # surrogatepass keeps undecodable path bytes (surrogateescape'd) writable.
        raw = text.encode("utf-16-le", "surrogatepass")
        if len(raw) > 2 * fmt.BREAKPAD_MAX_STRING:
            # Breakpad rejects longer strings (and with a module name, the module list):
            # keep the end, where a path's file name is, after an ellipsis.
            tail = raw[len(raw) - 2 * (fmt.BREAKPAD_MAX_STRING - 1):]
            if 0xDC00 <= int.from_bytes(tail[:2], "little") <= 0xDFFF:
                tail = tail[2:]  # half of a surrogate pair
            raw = "\u2026".encode("utf-16-le") + tail
        return self.place(struct.pack("<I", len(raw)) + raw + b"\0\0", 4)[0]

    @property
    def end(self) -> int:
        return self.start + len(self.buf)


@dataclass
class _Block:
    """Memory written as one contiguous blob: touching pieces, sorted by address. The
    MemoryList describes it in pieces of at most BREAKPAD_MAX_REGION bytes; thread stack
    descriptors may point anywhere inside it."""

    pieces: list[Memory]
    has_stack: bool = False

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def end(self) -> int:
        return self.pieces[-1].end

    def descriptor_count(self) -> int:
        return -(-(self.end - self.start) // fmt.BREAKPAD_MAX_REGION)


def _stack_blocks(snapshot: Snapshot) -> list[_Block]:
    """Thread stacks as disjoint blocks. Stacks that overlap (threads whose stacks share a
    mapping: Go goroutine stacks, green threads, sigaltstack) become one block: where two
    overlap, the one that starts higher (whose stack pointer is nearer) supplies the bytes,
    so every thread's own innermost frames are its own copy."""
    stacks: list[Memory] = sorted((t.stack for t in snapshot.threads
                                   if t.stack is not None and t.stack.size),
                    key=lambda m: (m.start, m.end))
    groups: list[list[Memory]] = []
    group_end = -1
    for m in stacks:
        if groups and m.start < group_end:
            groups[-1].append(m)
            group_end = max(group_end, m.end)
        else:
            groups.append([m])
            group_end = m.end
    blocks = []
    for group in groups:
        if len(group) == 1:
            blocks.append(_Block([group[0]], True))
            continue
        pieces: list[Memory] = []
        taken: list[tuple[int, int]] = []
        for m in sorted(group, key=lambda m: m.start, reverse=True):
            own = subtract([(m.start, m.end)], taken)
            pieces += [m.slice(a, b) for a, b in own]
            taken = merge(taken + own)
        pieces.sort(key=lambda m: m.start)
        blocks.append(_Block(pieces, True))
    return blocks


def _extra_pieces(snapshot: Snapshot, stack_blocks: list[_Block]) -> list[Memory]:
    """The extra memory clipped so that no two ranges overlap, in the snapshot's order
    (its priority: a stack always wins over extra memory, and among extra ranges the
    first one given wins), split into pieces Breakpad accepts. O(n log n)."""
    starts = [b.start for b in stack_blocks]  # taken intervals, sorted and disjoint
    ends = [b.end for b in stack_blocks]
    extra: list[Memory] = []
    for m in snapshot.memory:
        if not m.size:
            continue
        # Taken intervals that can overlap [m.start, m.end): from the one before m.start.
        i = max(0, bisect.bisect_right(starts, m.start) - 1)
        j = bisect.bisect_left(starts, m.end)
        pieces = subtract([(m.start, m.end)], list(zip(starts[i:j], ends[i:j])))
        for a, b in pieces:
            for lo in range(a, b, fmt.BREAKPAD_MAX_REGION):
                extra.append(m.slice(lo, min(b, lo + fmt.BREAKPAD_MAX_REGION)))
            k = bisect.bisect_left(starts, a)
            starts.insert(k, a)
            ends.insert(k, b)
    return extra


def _coalesce(blocks: list[_Block]) -> list[_Block]:
    """Join blocks that touch (one ends where the next starts) into one."""
    out: list[_Block] = []
    for b in sorted(blocks, key=lambda b: b.start):
        if out and out[-1].end == b.start:
            out[-1] = _Block(out[-1].pieces + b.pieces, out[-1].has_stack or b.has_stack)
        else:
            out.append(b)
    return out


def _count(blocks: list[_Block]) -> int:
    return sum(b.descriptor_count() for b in blocks)


def plan_memory(snapshot: Snapshot, memory64: bool = False,
                max_ranges: int = fmt.MAX_MEMORY_RANGES) -> tuple[list[_Block], list[Memory]]:
    """The MemoryList blocks, and the Memory64List ranges for ``snapshot`` (with
    ``memory64``; without, the extra memory left out to stay within the limit).

    Within the readers' limits (docs/minidump-limits.md): at most ``max_ranges`` MemoryList
    descriptors. When there would be more, touching ranges are joined; if that is not
    enough, extra memory is dropped from the end of ``snapshot.memory`` (lowest priority
    first). Stacks are always kept (more than ``max_ranges`` stacks means more threads
    than Breakpad reads anyway)."""
    stacks = _stack_blocks(snapshot)
    extra = _extra_pieces(snapshot, stacks)
    if memory64:
        if _count(stacks) > max_ranges:
            stacks = _coalesce(stacks)
        return stacks, extra

    def blocks_with(n: int) -> list[_Block]:
        return stacks + [_Block([m]) for m in extra[:n]]

    blocks = blocks_with(len(extra))
    if _count(blocks) <= max_ranges:
        return blocks, []
    blocks = _coalesce(blocks)
    if _count(blocks) <= max_ranges:
        return blocks, []
    # Keep the longest prefix of the extra memory that fits (binary search).
    lo, hi = 0, len(extra)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _count(_coalesce(blocks_with(mid))) <= max_ranges:
            lo = mid
        else:
            hi = mid - 1
    return _coalesce(blocks_with(lo)), extra[lo:]


class _Writer:
    def __init__(self, snapshot: Snapshot, options: WriteOptions):
        self.s = snapshot
        self.options = options
        self.blocks, rest = plan_memory(snapshot, options.memory64)
        self.extra = rest if options.memory64 else []
        self.notes: list[dict] = []
        if rest and not options.memory64:
            self.notes.append({"kind": "memory-dropped", "message": (
                f"{len(rest)} ranges of extra memory ({sum(m.size for m in rest)} bytes) "
                f"were left out: Breakpad reads at most {fmt.MAX_MEMORY_RANGES} memory ranges")})
        self._block_order = sorted(range(len(self.blocks)), key=lambda i: self.blocks[i].start)
        self._block_starts = [self.blocks[i].start for i in self._block_order]
        self._context_bytes: dict[int, bytes] = {}
        self._extra_rvas: dict[int, int] = {}  # extra stream type -> rva

    def stream_builders(self) -> list[tuple[int, Callable[[_Layout], tuple[int, int]]]]:
        s = self.s
        b: list[tuple[int, Callable[[_Layout], tuple[int, int]]]] = [
            (fmt.StreamType.SYSTEM_INFO, self.system_info),
            (fmt.StreamType.MISC_INFO, self.misc_info),
            (fmt.StreamType.THREAD_LIST, self.thread_list),
        ]
        if any(t.name for t in s.threads):
            b.append((fmt.StreamType.THREAD_NAME_LIST, self.thread_names))
        if s.exception is not None:
            b.append((fmt.StreamType.EXCEPTION, self.exception))
        b.append((fmt.StreamType.MODULE_LIST, self.module_list))
        # Always present: Breakpad's minidump_dump counts a missing MemoryInfoList as an error.
        b.append((fmt.StreamType.MEMORY_INFO_LIST, self.memory_info_list))
        if s.linux is not None:
            lf = s.linux
            for st, data in (
                (fmt.StreamType.LINUX_CPU_INFO, lf.cpuinfo),
                (fmt.StreamType.LINUX_PROC_STATUS, lf.status),
                (fmt.StreamType.LINUX_LSB_RELEASE, lf.lsb_release),
                (fmt.StreamType.LINUX_CMD_LINE, lf.cmdline),
                (fmt.StreamType.LINUX_ENVIRON, lf.environ),
                (fmt.StreamType.LINUX_AUXV, lf.auxv),
                (fmt.StreamType.LINUX_MAPS, lf.maps),
            ):
                if data is not None:
                    b.append((st, self._raw(data)))
            if lf.dso_debug is not None:
                b.append((fmt.StreamType.LINUX_DSO_DEBUG, self.dso_debug))
        if s.soft_errors or self.notes:
            b.append((fmt.StreamType.MOZ_SOFT_ERRORS, self.soft_errors))
        if s.trigger is not None:
            b.append((fmt.StreamType.GD_TRIGGER, self.trigger))
        if s.perf_map:
            # Ours: JIT symbol map lines, verbatim "START SIZE NAME\n" (generate_dump.perfmap).
            b.append((fmt.StreamType.GD_PERF_MAP, self._raw(s.perf_map)))
        for extra in s.extra_streams:
            b.append((extra.stream_type, self._extra(extra)))
        if s.python is not None:
            b.append((fmt.StreamType.GD_PYTHON, self.python))
        b.append((fmt.StreamType.MEMORY_LIST, self.memory_list))
        if self.options.memory64:
            b.append((fmt.StreamType.MEMORY64_LIST, self.memory64_list))
        return b

    # -- the layout passes -----------------------------------------------------------------

    def layout(self, bulk_base: int) -> tuple[bytes, _Layout]:
        builders = self.stream_builders()
        directory_rva = fmt.HEADER.size
        lay = _Layout(directory_rva + fmt.DIRECTORY.size * len(builders), bulk_base)
        self._context_rvas: dict[int, tuple[int, int]] = {}
        # Bulk order: MemoryList blocks (stacks first), then Memory64 data (contiguous, last).
        self._block_rvas = []
        for block in self.blocks:
            self._block_rvas.append(lay.place_bulk(block.pieces[0]))
            for piece in block.pieces[1:]:
                lay.place_bulk(piece, align=1)  # a block is contiguous in the file
        self._memory64_base = _align(lay.bulk_cursor, 16)
        if self.options.memory64:
            lay.bulk_cursor = self._memory64_base
            for m in self.extra:
                lay.bulk.append((lay.bulk_cursor, m))
                lay.bulk_cursor += m.size
        entries = []
        for stream_type, build in builders:
            rva, size = build(lay)
            entries.append(fmt.DIRECTORY.pack(stream_type=stream_type, data_size=size, rva=rva))
        header = fmt.HEADER.pack(
            signature=fmt.SIGNATURE, version=fmt.VERSION, stream_count=len(builders),
            directory_rva=directory_rva, time_date_stamp=self.s.time & 0xFFFFFFFF,
        )
        return header + b"".join(entries), lay

    def write(self, out: BinaryIO, progress: Optional[Callable[[int, int], None]] = None) -> int:
        _, measure = self.layout(bulk_base=0)
        bulk_base = _align(measure.end, 16)
        head, lay = self.layout(bulk_base)
        rva_end = self._memory64_base if self.options.memory64 else lay.bulk_cursor
        if rva_end > _MAX_RVA + 1:
            raise MinidumpWriteError(
                "memory referenced by 32-bit offsets passes 4 GiB; use Memory64List (full dumps)")
        total = lay.bulk_cursor
        base = out.tell() if self.s.extra_streams and out.seekable() else None
        out.write(head)
        out.write(lay.buf)
        _testhooks.fail("writer")
        pos = write_placed(out, lay.bulk, lay.end, total, progress)
        if base is not None:
            # Extra streams rendered again now that the memory went by (see ExtraStream).
            for extra in self.s.extra_streams:
                out.seek(base + self._extra_rvas[extra.stream_type])
                out.write(self._extra_bytes(extra, final=True))
            out.seek(base + pos)
        return pos

    # -- streams ---------------------------------------------------------------------------

    @staticmethod
    def _extra_bytes(extra, final: bool) -> bytes:
        data = extra.render(final)
        if len(data) > extra.size:
            raise MinidumpWriteError(f"stream 0x{extra.stream_type:x} is larger than the "
                                     f"{extra.size} bytes it reserved")
        return data.ljust(extra.size, b" ")

    def _extra(self, extra) -> Callable[[_Layout], tuple[int, int]]:
        def build(lay: _Layout) -> tuple[int, int]:
            rva, size = lay.place(self._extra_bytes(extra, final=False), 8)
            self._extra_rvas[extra.stream_type] = rva
            return rva, size
        return build

    @staticmethod
    def _raw(data: bytes) -> Callable[[_Layout], tuple[int, int]]:
        return lambda lay: lay.place(data, 4)

    def system_info(self, lay: _Layout) -> tuple[int, int]:
        si = self.s.system
        cpu = si.cpu
        if si.arch in (Arch.X86, Arch.AMD64):
            cpu_union = fmt.CPU_X86.pack(
                vendor_id=cpu.vendor.encode("ascii", "replace")[:12].ljust(12, b"\0"),
                version_information=cpu.version_information,
                feature_information=cpu.feature_information,
                amd_extended_cpu_features=cpu.amd_extended_features,
            )
        else:
            cpu_union = fmt.CPU_OTHER.pack()
        csd = lay.place_string(si.os_version)
        return lay.place(fmt.SYSTEM_INFO.pack(
            processor_architecture=_ARCH_CODES[si.arch],
            processor_level=cpu.family & 0xFFFF,
            processor_revision=((cpu.model & 0xFF) << 8 | (cpu.stepping & 0xFF)),
            number_of_processors=max(1, min(cpu.count, 255)),
            product_type=1 if si.os == OS.WINDOWS else 0,
            major_version=si.os_major, minor_version=si.os_minor, build_number=si.os_build,
            platform_id=_PLATFORM_IDS[si.os], csd_version_rva=csd, cpu=cpu_union,
        ))

    def misc_info(self, lay: _Layout) -> tuple[int, int]:
        p, si = self.s.process, self.s.system
        flags = fmt.MISC1_PROCESS_ID | fmt.MISC1_PROCESS_TIMES | fmt.MISC4_BUILDSTRING
        if si.cpu.max_mhz or si.cpu.current_mhz:
            flags |= fmt.MISC1_PROCESSOR_POWER_INFO
        build = si.os_version.encode("utf-16-le", "surrogatepass")[: 259 * 2]
        return lay.place(fmt.MISC_INFO_4.pack(
            size_of_info=fmt.MISC_INFO_4.size, flags1=flags, process_id=p.pid,
            process_create_time=p.create_time & 0xFFFFFFFF,
            process_user_time=int(p.user_time) & 0xFFFFFFFF,
            process_kernel_time=int(p.kernel_time) & 0xFFFFFFFF,
            processor_max_mhz=si.cpu.max_mhz, processor_current_mhz=si.cpu.current_mhz,
            processor_mhz_limit=si.cpu.max_mhz,
            build_string=build,
        ))

    def _thread_context(self, lay: _Layout, t: Thread) -> tuple[int, int]:
        if t.tid not in self._context_rvas:
            # Encoded once for both layout passes.
            data = self._context_bytes.get(t.tid)
            if data is None:
                data = self._context_bytes[t.tid] = encode_context(t.context)
            self._context_rvas[t.tid] = lay.place(data, 16)
        return self._context_rvas[t.tid]

    def thread_list(self, lay: _Layout) -> tuple[int, int]:
        records = []
        for t in self.s.threads:
            ctx_rva, ctx_size = self._thread_context(lay, t)
            stack_start = stack_size = stack_rva = 0
            if t.stack is not None and t.stack.data:
                stack_start, stack_size = t.stack.start, len(t.stack.data)
                stack_rva = self._rva_of(stack_start)
            records.append(fmt.THREAD.pack(
                thread_id=t.tid, suspend_count=t.suspend_count,
                priority_class=t.priority_class, priority=t.priority, teb=t.thread_pointer,
                stack_start=stack_start, stack_size=stack_size, stack_rva=stack_rva,
                context_size=ctx_size, context_rva=ctx_rva,
            ))
        return lay.place(struct.pack("<I", len(records)) + b"".join(records), 8)

    def thread_names(self, lay: _Layout) -> tuple[int, int]:
        records = [fmt.THREAD_NAME.pack(thread_id=t.tid, name_rva=lay.place_string(t.name))
                   for t in self.s.threads if t.name]
        return lay.place(struct.pack("<I", len(records)) + b"".join(records), 4)

    def exception(self, lay: _Layout) -> tuple[int, int]:
        e = self.s.exception
        assert e is not None
        thread = next((t for t in self.s.threads if t.tid == e.thread_id), None)
        ctx_rva, ctx_size = self._thread_context(lay, thread) if thread else (0, 0)
        params = list(e.parameters)[: fmt.EXCEPTION_MAXIMUM_PARAMETERS]
        return lay.place(fmt.EXCEPTION_STREAM.pack(
            thread_id=e.thread_id, exception_code=e.code & 0xFFFFFFFF,
            exception_flags=e.flags & 0xFFFFFFFF, exception_address=e.address,
            number_parameters=len(params), exception_information=params,
            context_size=ctx_size, context_rva=ctx_rva,
        ))

    def _module_record(self, lay: _Layout, m: Module) -> bytes:
        name_rva = lay.place_string(m.path)
        cv_rva = cv_size = 0
        if m.identity is not None:
            cv_rva, cv_size = lay.place(encode_codeview(m.identity, m.path), 8)
        v = m.version
        if v is not None:
            ffi = fmt.FIXED_FILE_INFO.pack(
                signature=fmt.VS_FFI_SIGNATURE, struct_version=fmt.VS_FFI_STRUCVERSION,
                file_version_ms=v.file_version[0] << 16 | v.file_version[1],
                file_version_ls=v.file_version[2] << 16 | v.file_version[3],
                product_version_ms=v.product_version[0] << 16 | v.product_version[1],
                product_version_ls=v.product_version[2] << 16 | v.product_version[3],
                file_flags_mask=0x3F, file_flags=v.flags, file_os=v.os,
                file_type=v.file_type, file_subtype=v.file_subtype,
            )
        else:
            ffi = bytes(fmt.FIXED_FILE_INFO.size)  # no version resource (ELF, Mach-O)
        if m.size > 0xFFFFFFFF:
            raise MinidumpWriteError(f"module {m.path} is larger than 4 GiB")
        return fmt.MODULE.pack(
            base=m.base, size=m.size, checksum=m.checksum, time_date_stamp=m.timestamp,
            name_rva=name_rva, version_info=ffi, cv_size=cv_size, cv_rva=cv_rva,
        )

    def module_list(self, lay: _Layout) -> tuple[int, int]:
        records = [self._module_record(lay, m) for m in self.s.modules]
        return lay.place(struct.pack("<I", len(records)) + b"".join(records), 8)

    def _rva_of(self, address: int) -> int:
        """Where the byte at ``address`` of a MemoryList block lies in the file. A thread's
        stack descriptor points into its block, which it may share with other threads
        (Breakpad and rust-minidump read a stack through its descriptor's RVA, LLDB through
        the MemoryList by address: both see the same bytes)."""
        k = self._block_order[bisect.bisect_right(self._block_starts, address) - 1]
        return self._block_rvas[k] + address - self.blocks[k].start

    def memory_list(self, lay: _Layout) -> tuple[int, int]:
        records = []
        for block, rva in zip(self.blocks, self._block_rvas):
            for lo in range(block.start, block.end, fmt.BREAKPAD_MAX_REGION):
                size = min(block.end - lo, fmt.BREAKPAD_MAX_REGION)
                records.append(fmt.MEMORY_DESCRIPTOR.pack(
                    start=lo, data_size=size, rva=rva + lo - block.start))
        return lay.place(struct.pack("<I", len(records)) + b"".join(records), 8)

    def memory64_list(self, lay: _Layout) -> tuple[int, int]:
        records = [fmt.MEMORY64_DESCRIPTOR.pack(start=m.start, data_size=m.size)
                   for m in self.extra]
        head = fmt.MEMORY64_HEADER.pack(count=len(records), base_rva=self._memory64_base)
        return lay.place(head + b"".join(records), 8)

    def memory_info_list(self, lay: _Layout) -> tuple[int, int]:
        entries = []
        for r in self.s.regions:
            protect = fmt.protection(r.readable, r.writable, r.executable)
            mem_type = {RegionKind.PRIVATE: fmt.MEM_PRIVATE, RegionKind.MAPPED: fmt.MEM_MAPPED,
                        RegionKind.IMAGE: fmt.MEM_IMAGE}[r.kind]
            entries.append(fmt.MEMORY_INFO.pack(
                base_address=r.start, allocation_base=r.start, allocation_protect=protect,
                region_size=r.size, state=fmt.MEM_COMMIT, protect=protect, type=mem_type,
            ))
        head = fmt.MEMORY_INFO_HEADER.pack(
            size_of_header=fmt.MEMORY_INFO_HEADER.size, size_of_entry=fmt.MEMORY_INFO.size,
            number_of_entries=len(entries))
        return lay.place(head + b"".join(entries), 8)

    def dso_debug(self, lay: _Layout) -> tuple[int, int]:
        # Called only when the snapshot has it (see the stream list above).
        assert self.s.linux is not None and self.s.linux.dso_debug is not None
        d = self.s.linux.dso_debug
        maps = [fmt.LINK_MAP.pack(addr=e.addr, name_rva=lay.place_string(e.name), ld=e.ld)
                for e in d.link_maps]
        map_rva = lay.place(b"".join(maps), 8)[0] if maps else 0
        head = fmt.DSO_DEBUG.pack(
            version=d.version, map_rva=map_rva, dso_count=len(maps), brk=d.brk,
            ldbase=d.ldbase, dynamic=d.dynamic_addr)
        return lay.place(head + d.dynamic, 8)

    def trigger(self, lay: _Layout) -> tuple[int, int]:
        """GD_TRIGGER: UTF-8 JSON {"version": 1, "trigger", "threshold", "value", "time"}."""
        t = self.s.trigger
        doc = {"version": 1, "trigger": t.trigger, "threshold": t.threshold,  # type: ignore[union-attr]
               "value": t.value, "time": t.time}  # type: ignore[union-attr]
        return lay.place(json.dumps(doc).encode(), 4)

    def soft_errors(self, lay: _Layout) -> tuple[int, int]:
        doc = [{"kind": e.kind, "message": e.message} for e in self.s.soft_errors] + self.notes
        return lay.place(json.dumps(doc).encode(), 4)


    def python(self, lay: _Layout) -> tuple[int, int]:
        from ..python.stream import encode

        return lay.place(encode(self.s.python), 4)  # type: ignore[arg-type]


def write_minidump(snapshot: Snapshot, out: BinaryIO, options: Optional[WriteOptions] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Write ``snapshot`` to the binary stream ``out``; returns the number of bytes written.

    Memory is streamed range by range (chunk by chunk for lazily read memory), so the
    writer holds no more than the structure and one chunk. ``progress(done, total)`` is
    called as bulk memory goes out."""
    return _Writer(snapshot, options or WriteOptions()).write(out, progress)


def minidump_bytes(snapshot: Snapshot, options: Optional[WriteOptions] = None) -> bytes:
    import io

    buf = io.BytesIO()
    write_minidump(snapshot, buf, options)
    return buf.getvalue()
