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
from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.unwind import SymbolOptions, walk_process
from generate_dump.unwind.debug_info import clear_caches

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
    [stack] = walk_process(read_minidump_snapshot(minidump_bytes(snap)),
                           options or SymbolOptions(system_debug=False))
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
    [stack] = walk_process(read_minidump_snapshot(minidump_bytes(snap)), sym_store)
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
    assert md.perf_map == PERF_MAP
    assert read_minidump_snapshot(minidump_bytes(snap)).perf_map == PERF_MAP
    import dataclasses

    md = parse(minidump_bytes(dataclasses.replace(snap, perf_map=None)))
    assert StreamType.GD_PERF_MAP not in md.streams and md.perf_map is None


# -- real runtimes -----------------------------------------------------------------------------

IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found: run scripts/install-test-deps"
        if IN_CI:
            pytest.fail(message + " (CI must run the runtime tests)")
        pytest.skip(message)
    return path


def inspect_json(dump: Path, *args) -> dict:
    r = subprocess.run([sys.executable, "-m", "generate_dump", "inspect", "--json", *args,
                        str(dump)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def frames_by_tid(doc: dict) -> dict[int, list[dict]]:
    return {t["tid"]: t["frames"] for t in doc["threads"]}


def thread_names(pid: int) -> dict[int, str]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            pass
    return out


def dump_live(target, out: Path) -> Snapshot:
    """Dump ``target``; check it runs on untraced; return the dump's snapshot."""
    from live import assert_running_untraced, run_dumper

    run_dumper(target.pid, "-o", out)
    assert target.proc.poll() is None
    assert_running_untraced(target.pid)
    return read_minidump_snapshot(out)


def check_perf_map_stream(snap: Snapshot, path: Path) -> PerfMap:
    """The stream holds only lines of the process's map, each naming code that a thread's
    registers or stack point into, and is smaller than the map."""
    assert snap.perf_map, "the dump carries no perf map stream"
    whole = path.read_bytes()
    lines = snap.perf_map.splitlines(keepends=True)
    assert all(line in whole for line in lines)
    assert len(snap.perf_map) < len(whole)
    words = thread_addresses(snap.threads)
    pm = PerfMap.parse(snap.perf_map)
    for line in lines:
        e = PerfMap.parse(line)._items[0][2]
        assert any(e.start <= w < e.end for w in words), line
    return pm


def breakpad_functions(dump: Path, store: Path) -> dict[int, list[str]]:
    from checks import breakpad_frames
    from readers import breakpad_stackwalk

    tids = [t.tid for t in read_minidump(dump).threads]
    return breakpad_frames(breakpad_stackwalk(dump, store), tids)


def base_name(function: str) -> str:
    return (function or "").split("(")[0]


@pytest.fixture(scope="module")
def jit_spin_classes(tmp_path_factory) -> Path:
    javac = need("javac")
    out = tmp_path_factory.mktemp("java")
    r = subprocess.run([javac, "-d", str(out), str(PROGRAMS / "JitSpin.java")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_jvm(jit_spin_classes, symbols, tmp_path):
    """A JVM with compiled Java loops, its perf map written by `jcmd PID Compiler.perfmap`:
    inspect reaches thread_native_entry on at least as many threads as Breakpad's
    minidump_stackwalk (dump_syms symbols for every module), names at least as many
    frames, and names the JIT frames from the perf map."""
    from live import Target

    java, jcmd = need("java"), need("jcmd")
    with Target([java, "-cp", jit_spin_classes, "JitSpin", "2"], wait_parked=False,
                cwd=tmp_path) as target:
        perf_map = Path(f"/tmp/perf-{target.pid}.map")
        try:
            r = subprocess.run([jcmd, str(target.pid), "Compiler.perfmap"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and perf_map.exists(), r.stdout + r.stderr
            dump = tmp_path / "jvm.dmp"
            md = dump_live(target, dump)
            names = thread_names(target.pid)
            check_perf_map_stream(md, perf_map)
        finally:
            perf_map.unlink(missing_ok=True)
    store = symbols.add_modules_of(md)
    bp = breakpad_functions(dump, store)
    doc = frames_by_tid(inspect_json(dump, "--no-system-debug"))
    ours = {tid: [base_name(f["function"]) for f in frames] for tid, frames in doc.items()}
    theirs = {tid: [base_name(f) for f in frames] for tid, frames in bp.items()}
    entry = "thread_native_entry"
    ours_entry = {tid for tid, f in ours.items() if entry in f}
    theirs_entry = {tid for tid, f in theirs.items() if entry in f}
    assert len(ours_entry) >= len(theirs_entry), (sorted(ours_entry), sorted(theirs_entry))
    named = lambda d: sum(1 for f in d.values() for n in f if n)  # noqa: E731
    assert named(ours) >= named(theirs), (named(ours), named(theirs))
    # Threads parked under compiled Java code: through the native wrapper and the compiled
    # loop, named from the perf map, down to the thread's start.
    by_name = {names[tid]: frames for tid, frames in doc.items() if tid in names}
    for who, wrapper in (("sleeper-0", "java.lang.Thread.sleep"),
                         ("sleeper-1", "java.lang.Thread.sleep"),
                         ("parker-0", "jdk.internal.misc.Unsafe.park"),
                         ("parker-1", "jdk.internal.misc.Unsafe.park")):
        frames = by_name[who]
        jit = [f["function"] for f in frames if f["module"] == "perf-map"]
        assert any(wrapper in n for n in jit), (who, jit)
        fns = [base_name(f["function"]) for f in frames]
        assert "JavaCalls::call_helper" in fns and entry in fns, (who, fns)
        assert fns.index(entry) > fns.index("JavaCalls::call_helper")
    assert any("JitSpin." in (f["function"] or "") for frames in by_name.values()
               for f in frames if f["module"] == "perf-map")
    # Without the perf map the walk is the same (the memory map tells JIT code): names aside.
    import dataclasses

    without = dataclasses.replace(read_minidump_snapshot(dump), perf_map=None)
    bare = {t.tid: [f"0x{f.pc:x}" for f in t.frames]
            for t in walk_process(without, SymbolOptions(system_debug=False))}
    assert bare == {tid: [f["pc"] for f in frames] for tid, frames in doc.items()}


@pytest.mark.slow
def test_node_perf_basic_prof(tmp_path):
    """Node 20 with --perf-basic-prof: the JavaScript frames of the main thread and of both
    workers are named from the perf map (``JS:*jsLoop FILE:LINE:COL``), and their walks go
    on through the JIT code into the native code that called it (frame pointers: V8 keeps
    rbp chains). The readers accept the dump with our stream in it."""
    from live import Target
    from readers import minidump_dump, rust_stackwalk_json

    node = need("node")
    # Interpreted functions get code of their own too (and a perf map line), as perf users
    # run it: then every JavaScript frame is named, whatever tier runs it.
    # cwd: V8 also writes isolate-*-v8.log files there.
    with Target([node, "--perf-basic-prof", "--interpreted-frames-native-stack",
                 PROGRAMS / "jit_spin.js"], wait_parked=False, cwd=tmp_path) as target:
        perf_map = Path(f"/tmp/perf-{target.pid}.map")
        try:
            dump = tmp_path / "node.dmp"
            md = dump_live(target, dump)
            check_perf_map_stream(md, perf_map)
        finally:
            perf_map.unlink(missing_ok=True)
    minidump_dump(dump)
    assert len(rust_stackwalk_json(dump)["threads"]) == len(md.threads)
    doc = inspect_json(dump, "--no-system-debug")
    text = subprocess.run([sys.executable, "-m", "generate_dump", "inspect", str(dump)],
                          capture_output=True, text=True, timeout=300).stdout
    assert f"Perf map: {len(md.perf_map.splitlines())} lines naming JIT code" in text
    assert re.search(r"^  #\d+ 0x[0-9a-f]{16} perf-map!JS:\S+jsLoop .*\+0x[0-9a-f]+ \[(cfi|fp)\]$",
                     text, re.M), text
    js_threads = 0
    for t in doc["threads"]:
        fns = [f["function"] or "" for f in t["frames"]]
        js = [i for i, f in enumerate(t["frames"]) if f["module"] == "perf-map"]
        if not js:
            continue
        js_threads += 1
        assert all(fns[i].startswith("JS:") for i in js), fns
        # jsLoop (interpreted, or optimized with waitALittle inlined) in the test's script
        assert any(re.match(r"JS:[~^+*]jsLoop .*jit_spin\.js:\d+:\d+$", fns[i]) for i in js), fns
        # Past the JIT frames: V8's entry, then the embedder (main thread or worker).
        after = fns[js[-1] + 1:]
        assert any(f.startswith("Builtins_JSEntry") for f in after), fns
        assert any(f.startswith(("node::Start", "node::worker::Worker::Run")) for f in after), fns
    assert js_threads == 3, doc["threads"]


def python_with_perf() -> str:
    """A CPython 3.12+ binary (perf trampolines, -X perf): pyenv's, else on PATH (not
    through a pyenv shim, a script whose process is not the interpreter's)."""
    import glob

    candidates = []
    for root in ("/root/.pyenv", os.path.expanduser("~/.pyenv")):
        candidates += sorted(glob.glob(f"{root}/versions/3.1[2-9]*/bin/python3.1[2-9]"))
    candidates += [shutil.which(n) or "" for n in ("python3.12", "python3.13", "python3.14")]
    for c in candidates:
        if c and "/shims/" not in c and os.access(c, os.X_OK):
            return os.path.realpath(c)
    pytest.skip("no CPython 3.12 or newer here (Debian 12 packages only 3.11): -X perf "
                "needs one")


@pytest.mark.slow
def test_cpython_perf_trampolines(tmp_path):
    """CPython 3.12 with -X perf: every thread's Python functions are named from the perf
    map (py::FUNCTION:FILE), in the order py-spy sees them."""
    from live import Target

    python = python_with_perf()
    with Target([python, "-X", "perf", PROGRAMS / "jit_spin.py"], wait_parked=False,
                cwd=tmp_path) as target:
        perf_map = Path(f"/tmp/perf-{target.pid}.map")
        try:
            dump = tmp_path / "py.dmp"
            md = dump_live(target, dump)
            check_perf_map_stream(md, perf_map)
            py_spy = Path(sys.executable).parent / "py-spy"
            spy = subprocess.run([str(py_spy) if py_spy.exists() else need("py-spy"), "dump",
                                  "--pid", str(target.pid), "--json"],
                                 capture_output=True, text=True, timeout=60)
        finally:
            perf_map.unlink(missing_ok=True)
    doc = inspect_json(dump, "--no-system-debug")
    ours = {}
    for t in doc["threads"]:
        names = [f["function"] for f in t["frames"] if f["module"] == "perf-map"]
        assert all(n.startswith("py::") for n in names), names
        ours[t["tid"]] = [n[4:].rsplit(":", 1)[0] for n in names]  # py::QUALNAME:FILE
    assert len(ours) == 3 and all("worker_loop" in n for n in ours.values()), ours
    assert all(n[0] in ("leaf_sleep", "busy", "worker_loop") for n in ours.values()), ours
    assert spy.returncode == 0, spy.stderr
    theirs = {t["os_thread_id"]: [f["name"] for f in t["frames"]] for t in json.loads(spy.stdout)}
    assert set(theirs) == set(ours)
    for tid, names in ours.items():
        # The two looked at different moments: compare from worker_loop outwards.
        cut = lambda n: n[n.index("worker_loop"):]  # noqa: E731
        assert cut(names) == cut(theirs[tid]), (tid, names, theirs[tid])


# -- which perf map is read, and which is not --------------------------------------------------

def _dump_with_map(tmp_path: Path, target_pid: int, name: str = "t.dmp"):
    from live import run_dumper

    out = tmp_path / name
    r = run_dumper(target_pid, "-o", out)
    return read_minidump(out), r.stderr


def test_perf_map_file_rules(tmp_path):
    """A map owned by another user is refused (anyone can write /tmp) with a soft error, and
    so is one last written before the process started (an earlier process's, same PID); a
    symlink is not followed; the process's own file is read, and only its referenced lines
    kept."""
    from live import python_target, syscall_sp_pc

    with python_target(1) as target:
        sp_pc = syscall_sp_pc(target.pid, target.pid)
        assert sp_pc is not None
        pc = sp_pc[1]
        path = Path(f"/tmp/perf-{target.pid}.map")
        lines = f"{pc - 0x10:x} 20 native-covered\n5a5a5a5a5a00 10 unreferenced\n"
        try:
            path.write_text(lines)
            md, _ = _dump_with_map(tmp_path, target.pid, "own.dmp")
            assert md.perf_map == f"{pc - 0x10:x} 20 native-covered\n".encode()
            assert not [e for e in md.soft_errors if e.kind.startswith("perf-map")]

            os.chown(path, 54321, 54321)
            md, stderr = _dump_with_map(tmp_path, target.pid, "foreign.dmp")
            assert md.perf_map is None
            [err] = [e for e in md.soft_errors if e.kind == "perf-map-ignored"]
            assert "owned by uid 54321" in err.message and str(path) in err.message
            assert "perf-map-ignored" in stderr or "owned by uid 54321" in stderr

            os.chown(path, 0, 0)
            old = time.time() - 3600  # before the process started: another process's map
            os.utime(path, (old, old))
            md, _ = _dump_with_map(tmp_path, target.pid, "stale.dmp")
            assert md.perf_map is None
            [err] = [e for e in md.soft_errors if e.kind == "perf-map-ignored"]
            assert "before the process started" in err.message

            path.unlink()
            real = tmp_path / "elsewhere.map"
            real.write_text(lines)
            path.symlink_to(real)
            md, _ = _dump_with_map(tmp_path, target.pid, "link.dmp")
            assert md.perf_map is None
            assert not [e for e in md.soft_errors if e.kind.startswith("perf-map")]
        finally:
            path.unlink(missing_ok=True)


def test_perf_map_read_limit(tmp_path):
    """A map larger than the limit: its last lines (the newest code), cut at line ends."""
    from live import python_target
    from generate_dump.platform.linux.perfmap_file import read_perf_map

    with python_target(1) as target:
        path = Path(f"/tmp/perf-{target.pid}.map")
        try:
            path.write_text("".join(f"{0x1000 + i * 0x10:x} 10 f{i}\n" for i in range(1000)))
            whole = read_perf_map(target.pid)
            assert whole.data == path.read_bytes() and whole.skipped == 0
            cut = read_perf_map(target.pid, limit=1000)
            assert cut.skipped == whole.size - 1000 and cut.size == whole.size
            assert cut.data.endswith(b" f999\n") and len(cut.data) <= 1000
            assert whole.data.endswith(cut.data)
            first = cut.data.split(b"\n", 1)[0] + b"\n"  # a whole line, not a line's tail
            assert first in whole.data.splitlines(keepends=True)
        finally:
            path.unlink(missing_ok=True)


NAMESPACED = r"""
import os, re, subprocess, time
# A private /tmp, mounted once the interpreter runs (the checkout may itself be in /tmp).
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/tmp"], check=True)
host = int(re.search(r"NSpid:\s+(\d+)", open("/proc/self/status").read()).group(1))
with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
    f.write("1000 7ffffffff000 everything\n")
print("READY", host, os.getpid(), flush=True)
while True:
    time.sleep(3600)
"""


def test_perf_map_of_a_namespaced_process(tmp_path):
    """A process in its own PID and mount namespaces (a container) names its map with its
    own PID, in its own /tmp: found through NSpid and /proc/PID/root."""
    from live import assert_running_untraced, read_line

    unshare = need("unshare")
    if os.geteuid() != 0:
        pytest.skip("needs root: creates PID and mount namespaces")
    proc = subprocess.Popen(
        [unshare, "--pid", "--fork", "--mount", "--propagation", "private",
         sys.executable, "-c", NAMESPACED],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        words = read_line(proc, 30).split()
        assert words[:1] == ["READY"], (words, proc.poll())
        host, inner = int(words[1]), int(words[2])
        assert host != inner
        assert not Path(f"/tmp/perf-{inner}.map").exists() or inner == host
        md, _ = _dump_with_map(tmp_path, host)
        assert md.perf_map == b"1000 7ffffffff000 everything\n"
        assert_running_untraced(host)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for f in (proc.stdout, proc.stderr):
            f.close()
