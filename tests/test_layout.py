"""Pin record sizes and offsets to the reference (docs/minidump-reference.md), and check the
written file's global layout rules: contexts 16-aligned, no duplicate streams, structure
first and bulk memory last."""

from __future__ import annotations

import struct

import pytest

from generate_dump.minidump import format as fmt
from generate_dump.minidump import minidump_bytes, parse
from generate_dump.minidump.context import context_size, decode_context, encode_context
from generate_dump.memsource import SnapshotMemory
from generate_dump.snapshot import Amd64Context, Arch, Arm64Context, X86Context
from generate_dump.sources.minidump_file import read_minidump_snapshot

from synthetic import BUILD_ID, TEXT_BASE, amd64_snapshot, arm64_snapshot


# -- record sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize("record, size", [
    (fmt.HEADER, 32),
    (fmt.DIRECTORY, 12),
    (fmt.LOCATION, 8),
    (fmt.MEMORY_DESCRIPTOR, 16),
    (fmt.MEMORY64_HEADER, 16),
    (fmt.MEMORY64_DESCRIPTOR, 16),
    (fmt.THREAD, 48),
    (fmt.MODULE, 108),
    (fmt.FIXED_FILE_INFO, 52),
    (fmt.SYSTEM_INFO, 56),
    (fmt.CPU_X86, 24),
    (fmt.CPU_OTHER, 24),
    (fmt.MISC_INFO_4, 832),
    (fmt.MEMORY_INFO_HEADER, 16),
    (fmt.MEMORY_INFO, 48),
    (fmt.THREAD_NAME, 12),
    (fmt.EXCEPTION_STREAM, 168),
    (fmt.DSO_DEBUG, 40),
    (fmt.LINK_MAP, 24),
    (fmt.CONTEXT_AMD64_RECORD, 1232),
    (fmt.CONTEXT_ARM64_RECORD, 912),
    (fmt.CONTEXT_X86_RECORD, 716),
], ids=lambda v: getattr(v, "name", str(v)))
def test_record_size(record, size):
    assert record.size == size


def test_misc_info_v4_is_a_known_size():
    assert fmt.MISC_INFO_4.size in fmt.MISC_INFO_SIZES
    assert fmt.MISC_INFO_SIZES == (24, 44, 232, 832, 1364)


def test_context_size_per_arch():
    assert context_size(Arch.AMD64) == 1232
    assert context_size(Arch.ARM64) == 912
    assert context_size(Arch.X86) == 716


# -- record offsets ----------------------------------------------------------------------------

OFFSETS = [
    (fmt.HEADER, {"signature": 0, "version": 4, "stream_count": 8, "directory_rva": 12,
                  "checksum": 16, "time_date_stamp": 20, "flags": 24}),
    (fmt.DIRECTORY, {"stream_type": 0, "data_size": 4, "rva": 8}),
    (fmt.MEMORY_DESCRIPTOR, {"start": 0, "data_size": 8, "rva": 12}),
    (fmt.THREAD, {"thread_id": 0, "suspend_count": 4, "priority_class": 8, "priority": 12,
                  "teb": 16, "stack_start": 24, "stack_size": 32, "stack_rva": 36,
                  "context_size": 40, "context_rva": 44}),
    (fmt.MODULE, {"base": 0, "size": 8, "checksum": 12, "time_date_stamp": 16, "name_rva": 20,
                  "version_info": 24, "cv_size": 76, "cv_rva": 80, "misc_size": 84,
                  "misc_rva": 88, "reserved0": 92, "reserved1": 100}),
    (fmt.SYSTEM_INFO, {"processor_architecture": 0, "processor_level": 2,
                       "processor_revision": 4, "number_of_processors": 6, "product_type": 7,
                       "major_version": 8, "minor_version": 12, "build_number": 16,
                       "platform_id": 20, "csd_version_rva": 24, "suite_mask": 28, "cpu": 32}),
    (fmt.CPU_X86, {"vendor_id": 0, "version_information": 12, "feature_information": 16,
                   "amd_extended_cpu_features": 20}),
    (fmt.MISC_INFO_4, {"size_of_info": 0, "flags1": 4, "process_id": 8,
                       "process_create_time": 12, "process_user_time": 16,
                       "process_kernel_time": 20, "processor_max_mhz": 24,
                       "processor_current_mhz": 28, "time_zone_id": 56, "time_zone": 60,
                       "build_string": 232, "dbg_bld_str": 752}),
    (fmt.MEMORY_INFO_HEADER, {"size_of_header": 0, "size_of_entry": 4, "number_of_entries": 8}),
    (fmt.MEMORY_INFO, {"base_address": 0, "allocation_base": 8, "allocation_protect": 16,
                       "region_size": 24, "state": 32, "protect": 36, "type": 40}),
    (fmt.THREAD_NAME, {"thread_id": 0, "name_rva": 4}),
    (fmt.EXCEPTION_STREAM, {"thread_id": 0, "exception_code": 8, "exception_flags": 12,
                            "exception_record": 16, "exception_address": 24,
                            "number_parameters": 32, "exception_information": 40,
                            "context_size": 160, "context_rva": 164}),
    (fmt.DSO_DEBUG, {"version": 0, "map_rva": 4, "dso_count": 8, "brk": 16, "ldbase": 24,
                     "dynamic": 32}),
    (fmt.LINK_MAP, {"addr": 0, "name_rva": 8, "ld": 16}),
    (fmt.MEMORY64_HEADER, {"count": 0, "base_rva": 8}),
    (fmt.CONTEXT_AMD64_RECORD, {
        "home": 0x00, "context_flags": 0x30, "mx_csr": 0x34, "cs": 0x38, "ds": 0x3A,
        "es": 0x3C, "fs": 0x3E, "gs": 0x40, "ss": 0x42, "eflags": 0x44, "dr0": 0x48,
        "dr7": 0x70, "rax": 0x78, "rcx": 0x80, "rdx": 0x88, "rbx": 0x90, "rsp": 0x98,
        "rbp": 0xA0, "rsi": 0xA8, "rdi": 0xB0, "r8": 0xB8, "r15": 0xF0, "rip": 0xF8,
        "fxsave": 0x100, "vector_register": 0x300, "vector_control": 0x4A0,
        "debug_control": 0x4A8, "last_exception_from_rip": 0x4C8}),
    (fmt.CONTEXT_ARM64_RECORD, {
        "context_flags": 0, "cpsr": 4, "x": 8, "fp": 0xF0, "lr": 0xF8, "sp": 0x100,
        "pc": 0x108, "v": 0x110, "fpcr": 0x310, "fpsr": 0x314, "bcr": 0x318, "bvr": 0x338,
        "wcr": 0x378, "wvr": 0x380}),
    (fmt.CONTEXT_X86_RECORD, {
        "context_flags": 0, "dr0": 4, "float_save": 28, "gs": 140, "edi": 156, "eax": 176,
        "ebp": 180, "eip": 184, "cs": 188, "eflags": 192, "esp": 196, "ss": 200,
        "extended_registers": 204}),
]


@pytest.mark.parametrize("record, offsets", OFFSETS, ids=[r.name for r, _ in OFFSETS])
def test_record_offsets(record, offsets):
    assert {name: record.offset(name) for name in offsets} == offsets


def test_fixed_file_info_size_matches_module_slot():
    assert fmt.MODULE.offset("cv_size") - fmt.MODULE.offset("version_info") == fmt.FIXED_FILE_INFO.size


# -- encode_context ----------------------------------------------------------------------------

def _u(fmt_char: str, data: bytes, off: int) -> int:
    return struct.unpack_from("<" + fmt_char, data, off)[0]


def test_encode_amd64_bytes_at_reference_offsets():
    fx = bytearray(range(256)) * 2
    fx[24:28] = (0x1F80).to_bytes(4, "little")  # MXCSR inside the FXSAVE image
    ctx = Amd64Context(
        rax=0x1000000000000001, rcx=0x1000000000000002, rdx=0x1000000000000003,
        rbx=0x1000000000000004, rsp=0x00007FFFFFFFE000, rbp=0x1000000000000006,
        rsi=0x1000000000000007, rdi=0x1000000000000008, r8=0x1000000000000009,
        r15=0xFFFFFFFFFFFFFFFF, rip=0x0000555555555234, eflags=0x246,
        cs=0x33, ds=0x11, es=0x22, fs=0x44, gs=0x55, ss=0x2B, fxsave=bytes(fx),
        debug=(0xD0, 0xD1, 0xD2, 0xD3, 0xD6, 0xD7),
    )
    raw = encode_context(ctx)
    assert len(raw) == 1232
    assert _u("I", raw, 0x30) == 0x0010001F
    assert _u("I", raw, 0x34) == 0x1F80
    assert [_u("H", raw, 0x38 + 2 * i) for i in range(6)] == [0x33, 0x11, 0x22, 0x44, 0x55, 0x2B]
    assert _u("I", raw, 0x44) == 0x246
    assert [_u("Q", raw, 0x48 + 8 * i) for i in range(6)] == [0xD0, 0xD1, 0xD2, 0xD3, 0xD6, 0xD7]
    assert _u("Q", raw, 0x78) == 0x1000000000000001  # rax
    assert _u("Q", raw, 0x80) == 0x1000000000000002  # rcx
    assert _u("Q", raw, 0x90) == 0x1000000000000004  # rbx
    assert _u("Q", raw, 0x98) == 0x00007FFFFFFFE000  # rsp
    assert _u("Q", raw, 0xB8) == 0x1000000000000009  # r8
    assert _u("Q", raw, 0xF0) == 0xFFFFFFFFFFFFFFFF  # r15
    assert _u("Q", raw, 0xF8) == 0x0000555555555234  # rip
    assert raw[0x100:0x300] == bytes(fx)
    assert raw[0x300:] == bytes(1232 - 0x300)  # vector registers and controls unused
    assert raw[:0x30] == bytes(0x30)  # home slots
    assert decode_context(Arch.AMD64, raw) == ctx


def test_encode_amd64_without_fxsave_drops_floating_point_flag():
    raw = encode_context(Amd64Context(rip=1))
    assert len(raw) == 1232
    assert _u("I", raw, 0x30) == 0x00100017
    assert raw[0x100:0x300] == bytes(512)
    assert decode_context(Arch.AMD64, raw).fxsave is None


def test_encode_arm64_bytes_at_reference_offsets():
    ctx = Arm64Context(
        x=tuple(0xA000_0000_0000_0000 + n for n in range(29)), fp=0xF0F0, lr=0x1234_5678,
        sp=0x7FFF_0000_1000, pc=0x5555_0000_2000, cpsr=0x6000_0000,
        v=tuple((n << 64) | (0xFF - n) for n in range(32)), fpsr=0x10, fpcr=0x0300_0000,
    )
    raw = encode_context(ctx)
    assert len(raw) == 912
    assert _u("I", raw, 0) == 0x00400007
    assert _u("I", raw, 4) == 0x6000_0000
    assert [_u("Q", raw, 8 + 8 * n) for n in range(29)] == list(ctx.x)
    assert _u("Q", raw, 0xF0) == 0xF0F0
    assert _u("Q", raw, 0xF8) == 0x1234_5678
    assert _u("Q", raw, 0x100) == 0x7FFF_0000_1000
    assert _u("Q", raw, 0x108) == 0x5555_0000_2000
    for n in range(32):
        assert int.from_bytes(raw[0x110 + 16 * n: 0x120 + 16 * n], "little") == ctx.v[n]
    assert _u("I", raw, 0x310) == 0x0300_0000  # fpcr
    assert _u("I", raw, 0x314) == 0x10  # fpsr
    assert raw[0x318:] == bytes(912 - 0x318)  # debug registers unused
    assert decode_context(Arch.ARM64, raw) == ctx


def test_encode_arm64_without_v_registers():
    raw = encode_context(Arm64Context(pc=4))
    assert len(raw) == 912
    assert _u("I", raw, 0) == 0x00400003
    assert decode_context(Arch.ARM64, raw).v is None


def test_encode_x86_size_and_flags():
    ctx = X86Context(eax=1, ebx=2, ecx=3, edx=4, esi=5, edi=6, ebp=7, esp=8, eip=9,
                     eflags=0x202, cs=0x23, ss=0x2B, fsave=bytes(range(112)),
                     fxsave=bytes(512))
    raw = encode_context(ctx)
    assert len(raw) == 716
    assert _u("I", raw, 0) == 0x0001003F
    assert _u("I", raw, 176) == 1  # eax
    assert _u("I", raw, 184) == 9  # eip
    assert _u("I", raw, 196) == 8  # esp
    assert raw[28:140] == bytes(range(112))
    assert decode_context(Arch.X86, raw) == ctx
    assert _u("I", encode_context(X86Context()), 0) == 0x00010017


# -- the written file --------------------------------------------------------------------------

def _directory(data: bytes) -> list[dict]:
    h = fmt.HEADER.unpack(data)
    return [fmt.DIRECTORY.unpack(data, h["directory_rva"] + i * fmt.DIRECTORY.size)
            for i in range(h["stream_count"])]


SNAPSHOTS = {
    "amd64": lambda: amd64_snapshot(),
    "amd64-exception": lambda: amd64_snapshot(with_exception=True),
    "arm64": arm64_snapshot,
}


@pytest.fixture(params=sorted(SNAPSHOTS))
def written(request):
    snap = SNAPSHOTS[request.param]()
    return snap, minidump_bytes(snap)


def test_header(written):
    snap, data = written
    h = fmt.HEADER.unpack(data)
    assert data[:4] == b"MDMP"
    assert h["version"] & 0xFFFF == 0xA793
    assert h["directory_rva"] == 32
    assert h["checksum"] == 0 and h["flags"] == 0
    assert h["time_date_stamp"] == snap.time
    assert h["stream_count"] == len(_directory(data))


def test_no_duplicate_stream_types(written):
    _, data = written
    types = [e["stream_type"] for e in _directory(data)]
    assert len(types) == len(set(types)), types


def test_every_context_is_16_aligned(written):
    snap, data = written
    md = parse(data)
    thread_list_rva, _ = md.streams[fmt.StreamType.THREAD_LIST]
    (count,) = struct.unpack_from("<I", data, thread_list_rva)
    assert count == len(snap.threads)
    rvas = []
    for i in range(count):
        t = fmt.THREAD.unpack(data, thread_list_rva + 4 + i * fmt.THREAD.size)
        assert t["context_size"] == context_size(snap.system.arch)
        rvas.append(t["context_rva"])
    if fmt.StreamType.EXCEPTION in md.streams:
        e = fmt.EXCEPTION_STREAM.unpack(data, md.streams[fmt.StreamType.EXCEPTION][0])
        assert e["context_size"] == context_size(snap.system.arch)
        rvas.append(e["context_rva"])
    assert rvas and all(r % 16 == 0 for r in rvas), [hex(r) for r in rvas]


def test_streams_are_4_aligned_and_inside_the_file(written):
    _, data = written
    for e in _directory(data):
        assert e["rva"] % 4 == 0, e
        assert e["rva"] + e["data_size"] <= len(data), e


def _structure_extents(data: bytes, md) -> list[tuple[int, int]]:
    """Every (rva, size) the file references other than bulk memory bytes."""
    ext = [(0, fmt.HEADER.size),
           (32, fmt.DIRECTORY.size * fmt.HEADER.unpack(data)["stream_count"])]
    ext += [(e["rva"], e["data_size"]) for e in _directory(data)]

    def string(rva):
        (n,) = struct.unpack_from("<I", data, rva)
        ext.append((rva, 4 + n + 2))

    si = fmt.SYSTEM_INFO.unpack(data, md.streams[fmt.StreamType.SYSTEM_INFO][0])
    if si["csd_version_rva"]:
        string(si["csd_version_rva"])
    tl = md.streams[fmt.StreamType.THREAD_LIST][0]
    for i in range(struct.unpack_from("<I", data, tl)[0]):
        t = fmt.THREAD.unpack(data, tl + 4 + i * fmt.THREAD.size)
        ext.append((t["context_rva"], t["context_size"]))
    ml = md.streams[fmt.StreamType.MODULE_LIST][0]
    for i in range(struct.unpack_from("<I", data, ml)[0]):
        m = fmt.MODULE.unpack(data, ml + 4 + i * fmt.MODULE.size)
        string(m["name_rva"])
        if m["cv_size"]:
            ext.append((m["cv_rva"], m["cv_size"]))
    if fmt.StreamType.THREAD_NAME_LIST in md.streams:
        tn = md.streams[fmt.StreamType.THREAD_NAME_LIST][0]
        for i in range(struct.unpack_from("<I", data, tn)[0]):
            string(fmt.THREAD_NAME.unpack(data, tn + 4 + i * fmt.THREAD_NAME.size)["name_rva"])
    if fmt.StreamType.LINUX_DSO_DEBUG in md.streams:
        d = fmt.DSO_DEBUG.unpack(data, md.streams[fmt.StreamType.LINUX_DSO_DEBUG][0])
        for i in range(d["dso_count"]):
            lm = fmt.LINK_MAP.unpack(data, d["map_rva"] + i * fmt.LINK_MAP.size)
            ext.append((d["map_rva"] + i * fmt.LINK_MAP.size, fmt.LINK_MAP.size))
            string(lm["name_rva"])
    return ext


def test_structure_first_memory_last(written):
    snap, data = written
    md = parse(data)
    structure_end = max(rva + size for rva, size in _structure_extents(data, md))
    memory = md.all_memory()
    assert memory, "the synthetic snapshots all have stacks"
    assert min(d.rva for d in memory) >= structure_end
    # Memory ranges are disjoint in the file, and the file ends with the last one.
    spans = sorted((d.rva, d.rva + d.size) for d in memory)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] == len(data)
    # Every stack and extra range is captured whole.
    mem = SnapshotMemory(read_minidump_snapshot(data))
    for t in snap.threads:
        assert mem.read_exact(t.stack.start, len(t.stack.data)) == t.stack.data
    for m in snap.memory:
        assert mem.read_exact(m.start, len(m.data)) == m.data


def test_module_record_in_file():
    snap = amd64_snapshot()
    data = minidump_bytes(snap)
    ml = parse(data).streams[fmt.StreamType.MODULE_LIST][0]
    assert struct.unpack_from("<I", data, ml)[0] == 3
    rec = ml + 4  # first MINIDUMP_MODULE, packed right after the count
    assert struct.unpack_from("<Q", data, rec)[0] == TEXT_BASE
    assert struct.unpack_from("<I", data, rec + 8)[0] == 0x5000
    cv_size, cv_rva = struct.unpack_from("<II", data, rec + 76)
    assert data[cv_rva:cv_rva + cv_size] == b"LEpB" + BUILD_ID  # 'BpEL' as a LE u32
    assert struct.unpack_from("<II", data, rec + 84) == (0, 0)  # no misc record
    assert data[rec + 24:rec + 76] == bytes(52)  # ELF: no VS_FIXEDFILEINFO
    # The records are packed: the second module starts 108 bytes later.
    assert struct.unpack_from("<Q", data, rec + 108)[0] == snap.modules[1].base


def test_system_and_misc_info_in_file():
    snap = amd64_snapshot()
    data = minidump_bytes(snap)
    md = parse(data)
    si_rva, si_size = md.streams[fmt.StreamType.SYSTEM_INFO]
    assert si_size == 56
    assert struct.unpack_from("<H", data, si_rva)[0] == 9  # AMD64
    assert struct.unpack_from("<I", data, si_rva + 20)[0] == 0x8201  # Linux
    assert data[si_rva + 32:si_rva + 44] == b"GenuineIntel"
    assert struct.unpack_from("<I", data, si_rva + 44)[0] == 0x50657
    mi_rva, mi_size = md.streams[fmt.StreamType.MISC_INFO]
    assert mi_size == 832
    assert struct.unpack_from("<I", data, mi_rva)[0] == 832
    assert struct.unpack_from("<I", data, mi_rva + 8)[0] == snap.process.pid
    build = snap.system.os_version.encode("utf-16-le")
    assert data[mi_rva + 232:mi_rva + 232 + len(build)] == build
    assert data[mi_rva + 232 + len(build):mi_rva + 752] == bytes(752 - 232 - len(build))
    assert data[mi_rva + 752:mi_rva + 832] == bytes(80)  # dbg_bld_str empty
    assert data[mi_rva + 60:mi_rva + 232] == bytes(172)  # no time zone written


def test_arm64_system_info_in_file():
    data = minidump_bytes(arm64_snapshot())
    si_rva, _ = parse(data).streams[fmt.StreamType.SYSTEM_INFO]
    assert struct.unpack_from("<H", data, si_rva)[0] == 12  # ARM64, not ARM64_OLD
    assert struct.unpack_from("<B", data, si_rva + 6)[0] == 8
