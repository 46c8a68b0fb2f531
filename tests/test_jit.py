"""JIT-compiled code: unwinding through it by frame pointers, and naming it from the
process's perf map (/tmp/perf-PID.map, our GD_PERF_MAP stream).

Units walk stacks built here, word by word (as rust-minidump's amd64_unittest.rs does):
a module with Breakpad STACK CFI, code in an anonymous executable mapping, and the
frame-pointer plausibility rules Breakpad's ``GetCallerByFramePointerRecovery`` applies.
Then real runtimes: a JVM (compared with Breakpad's minidump_stackwalk given dump_syms
symbols), Node with ``--perf-basic-prof`` and CPython 3.12 with ``-X perf`` (compared
with py-spy).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generate_dump.minidump import read_minidump
from generate_dump.minidump.codeview import debug_id
from generate_dump.minidump.format import StreamType
from generate_dump.minidump.writer import minidump_bytes
from generate_dump.minidump.reader import parse
from generate_dump.perfmap import PerfMap, for_dump, select, thread_addresses
from generate_dump.snapshot import (
    Amd64Context, Arch, Arm64Context, CpuInfo, ElfBuildId, MemoryRange, MemoryRegion, Module,
    OS, Process, RegionKind, Snapshot, SystemInfo, Thread,
)
from generate_dump.unwind import ProcessView, SymbolOptions, walk_process
from generate_dump.unwind.modules import clear_caches

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux dumps")

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "programs"


# -- perf map format -------------------------------------------------------------------------

def test_perf_map_parse_and_lookup():
    pm = PerfMap.parse(
        b"0x00007f60d4ec71c0 0x0000000000000270 int java.lang.Object.hashCode()\n"  # HotSpot
        b"7f1274005b80 12c JS:^inner /tmp/a.js:3:15\n"  # V8
        b"not a line\n\n7f0000 zz bad size\n"
        b"7f1274005b00 400 JS:stale\n"  # freed and reused: the later line wins
        b"7f1274005b80 20 JS:*inner /tmp/a.js:3:15\n"
        b"7f0663eb5000 b py::f:<frozen importlib._bootstrap>\n")  # CPython -X perf
    assert len(pm) == 5
    assert pm.lookup(0x7F60D4EC71C0).name == "int java.lang.Object.hashCode()"
    assert pm.lookup(0x7F60D4EC71C0 + 0x26F) is not None
    assert pm.lookup(0x7F60D4EC71C0 + 0x270) is None
    assert pm.lookup(0x7F1274005B90).name == "JS:*inner /tmp/a.js:3:15"
    assert pm.lookup(0x7F1274005BB0).name == "JS:stale"  # past the newest line's 0x20 bytes
    assert pm.lookup(0x7F1274005B00).name == "JS:stale"
    assert pm.lookup(0x7F0663EB500A).name == "py::f:<frozen importlib._bootstrap>"


def test_select_keeps_lines_of_referenced_code():
    data = b"1000 10 a\n2000 10 b\n3000 10 c\n3000 10 c-again"
    assert select(data, [0x2008, 0x300F, 0x10]) == b"2000 10 b\n3000 10 c\n3000 10 c-again\n"
    assert select(data, []) == b""
    stack = (0x2008).to_bytes(8, "little") + bytes(8) + (0x100F).to_bytes(8, "little")
    t = Thread(1, Amd64Context(rip=0x3001), MemoryRange(0x7000, stack))
    assert thread_addresses([t]) >= {0x2008, 0x100F, 0x3001}
    kept, cut = for_dump(data, [t])
    assert (kept, cut) == (b"1000 10 a\n2000 10 b\n3000 10 c\n3000 10 c-again\n", False)
    kept, cut = for_dump(data, [t], limit=24)  # the last whole lines within the limit
    assert (kept, cut) == (b"3000 10 c-again\n", True)


# -- synthetic stacks --------------------------------------------------------------------------

BASE = 0x7F00_0000_0000  # libnative.so: Breakpad STACK CFI, no file
JIT = 0x7E00_0000_0000  # an anonymous executable mapping
HEAP = 0x5600_0000_0000
STACK = 0x7FFD_0000_0000  # lowest captured stack address
S0 = STACK + 0x40  # frame 0's stack pointer
BUILD_ID = bytes.fromhex("5a" * 20)
SYM = """MODULE Linux {arch} {id} libnative.so
FUNC 1000 100 0 native_wait
FUNC 2000 200 0 native_entry
FUNC 3000 100 0 thread_start
STACK CFI INIT 1000 100 .cfa: $rsp 16 + .ra: .cfa -8 + ^ $rbp: .cfa -16 + ^
STACK CFI INIT 2000 200 .cfa: $rsp 32 + .ra: .cfa -8 + ^
STACK CFI INIT 3000 100 .cfa: $rsp 16 + .ra: .cfa -8 + ^
"""
PERF_MAP = (b"7e0000001000 2000 JS:stale\n"
            b"7e0000001200 100 JS:*hot a.js:1\n"
            b"7e0000002300 80 JS:~outer a.js:5\n")


class Stack:
    """Stack memory built word by word."""

    def __init__(self, size: int = 0x400):
        self.words = [0] * (size // 8)

    def __setitem__(self, addr: int, value: int) -> None:
        self.words[(addr - STACK) // 8] = value

    def range(self) -> MemoryRange:
        return MemoryRange(STACK, b"".join(w.to_bytes(8, "little") for w in self.words))


def code_with_calls(call_ends: list[int], call: bytes) -> MemoryRange:
    """libnative's code: nops, with a call instruction ending at each return address."""
    code = bytearray(b"\x90" * 0x4000)
    for ret in call_ends:
        code[ret - BASE - len(call):ret - BASE] = call
    return MemoryRange(BASE, bytes(code))


def snapshot(arch: Arch, ctx, stack: Stack, code: MemoryRange, perf_map=None) -> Snapshot:
    return Snapshot(
        process=Process(pid=42),
        system=SystemInfo(arch=arch, os=OS.LINUX, cpu=CpuInfo()),
        threads=(Thread(tid=42, context=ctx, stack=stack.range(), name="t"),),
        modules=(Module("/nonexistent/libnative.so", BASE, 0x10000, ElfBuildId(BUILD_ID),
                        is_main=True),),
        memory=(code,),
        regions=(MemoryRegion(BASE, 0x10000, True, False, True, RegionKind.PRIVATE,
                              "/nonexistent/libnative.so"),
                 MemoryRegion(JIT, 0x10000, True, True, True),  # rwx, anonymous
                 MemoryRegion(HEAP, 0x10000, True, True, False),
                 MemoryRegion(STACK, 0x1000, True, True, False)),
        perf_map=perf_map,
    )


@pytest.fixture
def sym_store(tmp_path):
    store = tmp_path / "symbols"
    did = debug_id(ElfBuildId(BUILD_ID))
    path = store / "libnative.so" / did / "libnative.so.sym"
    path.parent.mkdir(parents=True)
    path.write_text(SYM.format(arch="x86_64", id=did))
    clear_caches()
    yield SymbolOptions((str(store),), system_debug=False)
    clear_caches()


def walk(snap: Snapshot, options=None) -> list[tuple]:
    """(offset or 'J'+offset, function, trust) per frame; the whole walk, via a dump."""
    view = ProcessView.from_minidump(parse(minidump_bytes(snap)))
    [stack] = walk_process(view, options or SymbolOptions(system_debug=False))
    out = []
    for f in stack.frames:
        where = f"J{f.pc - JIT:x}" if JIT <= f.pc < JIT + 0x10000 else f"{f.pc - BASE:x}"
        out.append((where, f.function, f.trust))
    return out


def amd64_jit_stack() -> Stack:
    """native_wait (CFI) <- JIT code 1 <- JIT code 2 (frame records) <- native_entry <-
    thread_start, whose return address is 0 (the outermost frame)."""
    f1, f2, f3 = S0 + 0x40, S0 + 0x80, S0 + 0x100
    s = Stack()
    s[S0] = f1  # native_wait pushed rbp: JIT code 1's frame pointer
    s[S0 + 8] = JIT + 0x1234  # its return address, into JIT code 1
    s[f1] = f2  # JIT code 1's frame record: caller's rbp, return address into JIT code 2
    s[f1 + 8] = JIT + 0x2345
    s[f2] = f3  # JIT code 2's frame record: back into native_entry
    s[f2 + 8] = BASE + 0x2045
    s[f2 + 16 + 24] = BASE + 0x3010  # native_entry's return address (CFA = rsp + 32)
    s[S0 + 0xB8] = 0  # thread_start's: the end
    return s


AMD64_CALLS = [BASE + 0x2045, BASE + 0x3010]
E8 = b"\xe8\x00\x00\x00\x00"  # call rel32


def amd64_ctx() -> Amd64Context:
    return Amd64Context(rip=BASE + 0x1050, rsp=S0, rbp=0x1234)


def test_amd64_cfi_then_jit_frame_pointers_then_cfi(sym_store):
    snap = snapshot(Arch.AMD64, amd64_ctx(), amd64_jit_stack(), code_with_calls(AMD64_CALLS, E8))
    assert walk(snap, sym_store) == [
        ("1050", "native_wait", "context"),
        ("J1234", None, "cfi"),  # the CFI result lands in the executable anonymous mapping
        ("J2345", None, "fp"),  # a frame record whose return address is JIT code
        ("2045", "native_entry", "fp"),  # and one returning into a module after a call
        ("3010", "thread_start", "cfi"),
    ]


def test_jit_frames_named_from_the_perf_map(sym_store):
    snap = snapshot(Arch.AMD64, amd64_ctx(), amd64_jit_stack(), code_with_calls(AMD64_CALLS, E8),
                    perf_map=PERF_MAP)
    view = ProcessView.from_minidump(parse(minidump_bytes(snap)))
    [stack] = walk_process(view, sym_store)
    jit = stack.frames[1:3]
    assert [(f.function, f.module_name, f.function_offset, f.trust) for f in jit] == [
        ("JS:*hot a.js:1", "perf-map", 0x34, "cfi"), ("JS:~outer a.js:5", "perf-map", 0x45, "fp")]
    from generate_dump.inspect_dump import format_frame, frame_json

    assert format_frame(jit[0]) == \
        f"#1 0x{JIT + 0x1234:016x} perf-map!JS:*hot a.js:1+0x34 [cfi]"
    doc = frame_json(jit[1])
    assert (doc["module"], doc["module_offset"], doc["function"], doc["function_offset"]) == \
        ("perf-map", None, "JS:~outer a.js:5", "0x45")
    # Module code keeps its module's names even where a perf map line covers it too.
    assert stack.frames[3].function == "native_entry"


@pytest.mark.parametrize("case", ["caller-fp-below", "caller-fp-unreadable",
                                  "return-into-data"])
def test_frame_pointer_plausibility(sym_store, case):
    """Breakpad's rules for a frame record returning into JIT code: the caller's frame
    pointer above the caller's stack pointer and readable, the return address in
    executable memory. A record that breaks one is refused, and the stack scan (which,
    as Breakpad's, accepts only module code after a call) finds native_entry."""
    s = amd64_jit_stack()
    f1 = S0 + 0x40
    if case == "caller-fp-below":
        s[f1] = f1 + 8
    elif case == "caller-fp-unreadable":
        s[f1] = STACK + 0x10_0000
    else:
        s[f1 + 8] = HEAP + 0x100
    s[S0 + 0x18] = BASE + 0x2100  # module code, not after a call: the scan skips it
    s[S0 + 0x20] = JIT + 0x2345  # JIT code: the scan skips it too
    snap = snapshot(Arch.AMD64, amd64_ctx(), s, code_with_calls(AMD64_CALLS, E8))
    assert walk(snap, sym_store) == [
        ("1050", "native_wait", "context"),
        ("J1234", None, "cfi"),
        ("2045", "native_entry", "scan"),
        ("3010", "thread_start", "cfi"),
    ]


def test_jit_code_known_without_a_memory_map(sym_store):
    """A dump without MemoryInfoList (other writers): nothing says the return addresses are
    executable, so no frame is believed there, unless the perf map names the code."""
    import dataclasses

    snap = snapshot(Arch.AMD64, amd64_ctx(), amd64_jit_stack(), code_with_calls(AMD64_CALLS, E8))
    got = walk(dataclasses.replace(snap, regions=()), sym_store)
    assert [w for w, _, _ in got] == ["1050", "2045", "3010"], got
    got = walk(dataclasses.replace(snap, regions=(), perf_map=PERF_MAP), sym_store)
    assert got[:3] == [("1050", "native_wait", "context"), ("J1234", "JS:*hot a.js:1", "cfi"),
                       ("J2345", "JS:~outer a.js:5", "fp")]
    # With a memory map that leaves the addresses unmapped, the perf map is not believed.
    regions = tuple(r for r in snap.regions if r.start != JIT)
    got = walk(dataclasses.replace(snap, regions=regions, perf_map=PERF_MAP), sym_store)
    assert [w for w, _, _ in got] == ["1050", "2045", "3010"], got


def test_arm64_frame_zero_in_jit_code():
    """ARM64, frame 0 in JIT code, no CFI anywhere: frame records (x29) through JIT code
    into module code after a BL."""
    f1, f2, f3 = S0 + 0x40, S0 + 0x80, S0 + 0x100
    s = Stack()
    s[f1] = f2
    s[f1 + 8] = JIT + 0x2344
    s[f2] = f3
    s[f2 + 8] = BASE + 0x2044
    s[f3] = 0
    s[f3 + 8] = BASE + 0x3010
    bl = (0x94000000 | 0x10).to_bytes(4, "little")
    ctx = Arm64Context(x=(0,) * 29, fp=f1, lr=0, sp=S0, pc=JIT + 0x1234)
    snap = snapshot(Arch.ARM64, ctx, s, code_with_calls([BASE + 0x2044, BASE + 0x3010], bl),
                    perf_map=PERF_MAP)
    clear_caches()
    assert walk(snap) == [
        ("J1234", "JS:*hot a.js:1", "context"),
        ("J2344", "JS:~outer a.js:5", "fp"),
        ("2044", None, "fp"),
        ("3010", None, "fp"),
    ]


def test_perf_map_stream_round_trip():
    snap = snapshot(Arch.AMD64, amd64_ctx(), amd64_jit_stack(), code_with_calls(AMD64_CALLS, E8),
                    perf_map=PERF_MAP)
    md = parse(minidump_bytes(snap))
    assert StreamType.GD_PERF_MAP in md.streams
    assert md.perf_map == PERF_MAP and md.to_snapshot().perf_map == PERF_MAP
    import dataclasses

    md = parse(minidump_bytes(dataclasses.replace(snap, perf_map=None)))
    assert StreamType.GD_PERF_MAP not in md.streams and md.perf_map is None
