"""Dumps stay within what the three readers accept (docs/minidump-limits.md), and stacks
that share memory (Go, green threads, sigaltstack) are written so that every reader sees
each thread's own bytes."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from generate_dump.backends.stacks import RED_ZONE, SHARED_STACK_CAP, StackMap
from generate_dump.memsource import SnapshotMemory
from generate_dump.minidump import read_minidump, write_minidump
from generate_dump.minidump import format as fmt
from generate_dump.minidump.writer import plan_memory
from generate_dump.snapshot import Amd64Context, MemoryRange, Thread
from generate_dump.sources.minidump_file import read_minidump_snapshot
from live import Target, assert_running_untraced, run_dumper
from readers import breakpad_stackwalk, lldb_core, minidump_dump, rust_dump, rust_stackwalk_json
from synthetic import amd64_snapshot


def _write(snap, path: Path) -> Path:
    with open(path, "wb") as f:
        write_minidump(snap, f)
    return path


def _region_count(minidump_dump_text: str) -> int:
    return int(re.search(r"region_count\s*=\s*(\d+)", minidump_dump_text).group(1))


# -- MemoryList count --------------------------------------------------------------------------

def _many_windows(n: int, gap: int) -> tuple:
    """``n`` 512-byte windows ``gap`` bytes apart, each filled with its own index."""
    return tuple(MemoryRange(0x6000_0000 + i * (512 + gap), i.to_bytes(4, "little") * 128)
                 for i in range(n))


def test_too_many_ranges_drop_the_last_extra_memory(tmp_path):
    """9000 separate windows: Breakpad would reject the list (max_regions_ 4096). The stacks
    stay, the first windows given (the highest priority) stay, the rest go."""
    snap = dataclasses.replace(amd64_snapshot(), memory=_many_windows(9000, 64))
    path = _write(snap, tmp_path / "many.dmp")
    text = minidump_dump(path)  # exit 0: every stream parsed
    assert _region_count(text) == fmt.MAX_MEMORY_RANGES
    md = read_minidump(path)
    mem = SnapshotMemory(read_minidump_snapshot(path))
    for t in snap.threads:
        assert mem.read_exact(t.stack.start, t.stack.size) == t.stack.data
    kept = fmt.MAX_MEMORY_RANGES - len(snap.threads)
    for m in snap.memory[:kept]:
        assert mem.read_exact(m.start, m.size) == m.data
    assert mem.read(snap.memory[kept].start, 4) == b""
    # The dump says so (a soft error rust-minidump shows).
    dropped = [e for e in md.soft_errors if e.kind == "memory-dropped"]
    assert len(dropped) == 1 and dropped[0].message.startswith(f"{9000 - kept} ranges")
    # The other readers read it too.
    assert rust_stackwalk_json(path)["thread_count"] == len(snap.threads)
    assert "thread #3" in lldb_core(path, "thread list")


def test_touching_ranges_are_joined_before_anything_is_dropped(tmp_path):
    """Windows that touch each other (and a stack) become one descriptor when the count
    would pass the limit: nothing is lost."""
    base = amd64_snapshot()
    top = base.threads[0].stack.end
    windows = tuple(MemoryRange(top + i * 512, bytes([i % 251]) * 512) for i in range(6000))
    snap = dataclasses.replace(base, memory=windows)
    path = _write(snap, tmp_path / "touching.dmp")
    assert _region_count(minidump_dump(path)) == len(snap.threads)
    md = read_minidump(path)
    mem = SnapshotMemory(read_minidump_snapshot(path))
    for m in windows:
        assert mem.read_exact(m.start, m.size) == m.data
    s = snap.threads[0].stack
    assert mem.read_exact(s.start, s.size) == s.data
    # The thread's own descriptor still describes only its stack.
    rec = md.thread(snap.threads[0].tid)
    assert (rec.stack.start, rec.stack.size) == (s.start, s.size)


def test_plan_keeps_every_stack_even_past_the_limit():
    snap = amd64_snapshot()
    blocks, _ = plan_memory(dataclasses.replace(snap, memory=_many_windows(50, 64)),
                            max_ranges=2)
    assert sum(b.has_stack for b in blocks) == len(snap.threads)
    assert len(blocks) == len(snap.threads)


def test_long_module_path_keeps_its_end(tmp_path):
    """Breakpad rejects a string over 1024 UTF-16 units (Minidump::max_string_length_),
    and with a module name the whole module list: the writer keeps the path's end."""
    base = amd64_snapshot()
    long_path = "/opt/" + "deep/" * 400 + "libreally-long.so.1"
    mods = (base.modules[0], dataclasses.replace(base.modules[1], path=long_path))
    path = _write(dataclasses.replace(base, modules=mods), tmp_path / "long.dmp")
    text = minidump_dump(path)
    assert "libreally-long.so.1" in text
    md = read_minidump(path)
    name = md.modules[1].path
    assert len(name.encode("utf-16-le")) // 2 == fmt.BREAKPAD_MAX_STRING
    assert name.startswith("\u2026") and long_path.endswith(name[1:])
    doc = rust_stackwalk_json(path)
    assert any(m["filename"] == "libreally-long.so.1" for m in doc["modules"])


# -- stacks that overlap -----------------------------------------------------------------------

def _overlapping_snapshot():
    """Three threads whose stacks overlap in one mapping, as goroutine stacks can when a
    dump is taken with -r; each range holds its thread's tid as a byte pattern."""
    base = amd64_snapshot()
    lo = 0xC000_0000
    specs = [(2001, lo, 0x3000), (2002, lo + 0x2000, 0x3000), (2003, lo + 0x2800, 0x800)]
    threads = []
    for tid, start, size in specs:
        data = bytes([tid & 0xFF]) * size
        threads.append(Thread(tid=tid, context=Amd64Context(rsp=start + RED_ZONE, rip=0x1000),
                              stack=MemoryRange(start, data)))
    return dataclasses.replace(base, threads=tuple(threads), memory=(), exception=None)


def test_overlapping_stacks_are_merged_and_each_descriptor_points_at_its_own_bytes(tmp_path):
    snap = _overlapping_snapshot()
    path = _write(snap, tmp_path / "overlap.dmp")
    text = minidump_dump(path)
    assert _region_count(text) == 1  # one merged block
    md = read_minidump(path)
    for t in snap.threads:
        rec = md.thread(t.tid)
        assert (rec.stack.start, rec.stack.size) == (t.stack.start, t.stack.size)
        got = md.bytes_at(rec.stack)
        # The bytes at and just above its own SP are its own copy.
        own = got[: 0x800]
        assert own == bytes([t.tid & 0xFF]) * 0x800, hex(t.tid)
    # Breakpad reads each thread's stack through its descriptor: the Thread's memory is
    # dumped at the descriptor's address.
    for t in snap.threads:
        assert f"stack.start_of_memory_range = 0x{t.stack.start:x}" in text
    # rust-minidump: --dump prints each thread's stack memory, read through its descriptor;
    # the first word of each is the thread's own pattern.
    chunks = rust_dump(path).split("MINIDUMP_THREAD\n")[1:]
    firsts = [re.search(r"^\s+0x00000000: 0x([0-9a-f]{16})", c, re.M).group(1) for c in chunks]
    assert firsts == [f"{t.tid & 0xFF:02x}" * 8 for t in snap.threads]
    assert rust_stackwalk_json(path)["thread_count"] == 3
    # LLDB reads memory through the MemoryList by address: the same bytes.
    out = lldb_core(path, f"memory read --force -s1 -c4 0x{snap.threads[2].stack.start:x}")
    assert "d3 d3 d3 d3" in out.lower()


# -- the stack rule for shared mappings --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Map:
    start: int
    end: int
    perms: str = "rw-p"
    path: str = ""

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def merge_key(self):
        return (self.perms, self.path)


def test_goroutine_stacks_in_one_arena_are_bounded_by_each_other():
    """Go's goroutine stacks and (without cgo) its g0 stacks all lie in one heap arena
    (c000000000-c000400000); the thread pointer (m.tls) is in the arena too."""
    arena = _Map(0xC0_0000_0000, 0xC0_0040_0000)
    maps = [_Map(0x400000, 0x500000, "r-xp", "/bin/go"), arena,
            _Map(0xC0_0040_0000, 0xC0_0400_0000, "---p")]
    sps = [0xC0_0003_7DF0, 0xC0_0003_9DF0, 0xC0_0030_0000]
    sm = StackMap(maps, sps)
    tp = 0xC0_0001_0000
    r0 = sm.range(sps[0], False, tp)
    r1 = sm.range(sps[1], False, tp)
    r2 = sm.range(sps[2], True, tp)
    assert r0 == (sps[0] - RED_ZONE, sps[1] - RED_ZONE)  # stops at the next thread's
    assert r1 == (sps[1] - RED_ZONE, sps[1] - RED_ZONE + SHARED_STACK_CAP)  # capped
    assert r2 == (sps[2] - RED_ZONE, sps[2] - RED_ZONE + SHARED_STACK_CAP)


def test_thread_stacks_of_their_own_keep_the_old_rule():
    """glibc thread stacks (guard page below, TLS at the top) and [stack] run to the top."""
    maps = [_Map(0x7F00_0000_0000, 0x7F00_0000_1000, "---p"),
            _Map(0x7F00_0000_1000, 0x7F00_0080_1000),
            _Map(0x7FFF_0000_0000, 0x7FFF_0002_1000, path="[stack]")]
    tp = 0x7F00_0080_0000
    sps = [0x7F00_007F_0000, 0x7F00_007F_8000, 0x7FFF_0001_0000]  # two in one (sigaltstack)
    sm = StackMap(maps, sps)
    assert sm.range(sps[0], False, tp) == (sps[0] - RED_ZONE, tp)
    assert sm.range(sps[2], True, 0) == (sps[2] - RED_ZONE, 0x7FFF_0002_1000)


# -- a real process with 3000 threads ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")
def test_3000_threads_pass_every_reader(threads_bin, tmp_path):
    """3000 threads: 3004 stacks plus referenced windows were 9003 MemoryList ranges,
    which Breakpad's minidump_dump refused ("count 9003 exceeds maximum 4096")."""
    with Target([threads_bin, "3000"], ready_timeout=120, wait_parked=False) as target:
        out = tmp_path / "3000.dmp"
        run_dumper(target.pid, "-o", out)
        assert_running_untraced(target.pid)
        text = minidump_dump(out)
        assert int(re.search(r"thread_count\s*=\s*(\d+)", text).group(1)) == 3004
        assert _region_count(text) <= fmt.MAX_MEMORY_RANGES
        md = read_minidump(out)
        assert all(t.stack is not None and t.stack.start <= t.context.rsp < t.stack.end
                   for t in md.threads)
        # Breakpad walks every thread (no symbols needed to count the threads).
        walked = breakpad_stackwalk(out)
        frames: dict[int, int] = {}
        for line in walked.splitlines():
            m = re.match(r"(\d+)\|(\d+)\|", line)
            if m:
                frames[int(m.group(1))] = frames.get(int(m.group(1)), 0) + 1
        assert len(frames) == 3004 and min(frames.values()) >= 3
        assert rust_stackwalk_json(out)["thread_count"] == 3004
        listing = lldb_core(out, "thread list")
        assert len(re.findall(r"thread #\d+: tid = \d+", listing)) == 3004


def test_referenced_windows_come_most_important_first():
    """The writer drops extra memory from the end when over a limit: the windows come in
    priority order (registers, then the innermost stack words), not by address."""
    from generate_dump.backends.referenced import referenced_ranges
    from generate_dump.snapshot import MemoryRegion

    heap = MemoryRegion(0x1000_0000, 0x100_0000, True, True, False)
    stack_start = 0x7000_0000
    words = [0x1000_1000 + 0x10_0000 * i for i in range(5)]  # low addresses, on the stack
    data = b"".join(w.to_bytes(8, "little") for w in words)
    reg_target = 0x10F0_0000  # the highest address, held in a register
    t = Thread(tid=1, context=Amd64Context(rsp=stack_start, rbx=reg_target),
               stack=MemoryRange(stack_start, data))
    ranges = referenced_ranges([t], [heap, MemoryRegion(stack_start, 0x1000, True, True, False)])
    assert ranges[0][0] <= reg_target < ranges[0][1]
    assert [a + 128 for a, _ in ranges[1:]] == words


def test_a_runtimes_own_stack_bounds_win_over_the_cap():
    """Go records each goroutine's stack (g.stack lo, hi): when they hold SP, the copy ends
    at hi, however deep the stack (backends/gostacks.py reads them)."""
    arena = _Map(0xC0_0000_0000, 0xC0_0040_0000)
    sps = [0xC0_0001_0000, 0xC0_0002_0000]
    sm = StackMap([arena], sps)
    assert sm.shared(sps[0], False, 0xC0_0000_1000)
    hi = 0xC0_0008_0000  # a 512 KiB-deep goroutine, past the next SP... as Go says
    assert sm.range(sps[0], False, 0, (0xC0_0000_8000, hi)) == (sps[0] - RED_ZONE, hi)
    # Bounds that do not hold SP are not believed.
    assert sm.range(sps[0], False, 0, (0xC0_0003_0000, hi)) == (sps[0] - RED_ZONE,
                                                                 sps[1] - RED_ZONE)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")
@pytest.mark.parametrize("mode", [[], ["-r"]], ids=["frozen", "r"])
def test_coroutine_stacks_in_one_mapping(tmp_path, symbols, mode):
    """Four threads each run a coroutine (makecontext) on a stack in one anonymous mapping,
    which the kernel puts right above a thread's own stack: each copy stays on its own
    coroutine stack, and every reader walks every coroutine to its entry."""
    from checks import breakpad_frames, lldb_frames, rust_frames
    from live import compile_program

    binary = compile_program("coroutines", tmp_path)
    with Target([binary]) as target:
        lo, hi = target.ready_values
        out = tmp_path / "co.dmp"
        run_dumper(target.pid, *mode, "-o", out)
        assert_running_untraced(target.pid)
        md = read_minidump(out)
        spans = sorted((t.stack.start, t.stack.end) for t in md.threads)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
        coros = [t for t in md.threads if lo <= t.context.rsp < hi]
        assert len(coros) == 4
        assert all(t.stack.size <= SHARED_STACK_CAP for t in coros)
        minidump_dump(out)
        tids = [t.tid for t in md.threads]
        store = symbols.add_modules_of(md)
        bp = breakpad_frames(breakpad_stackwalk(out, store), tids)
        rs = rust_frames(rust_stackwalk_json(out, "--symbols-path", str(store)))
        ll = lldb_frames(lldb_core(out, "thread list", "bt all"))
        for t in coros:
            for reader, frames in (("Breakpad", bp[t.tid]), ("rust-minidump", rs[t.tid]),
                                   ("LLDB", [f.split("`")[-1] for f in ll[t.tid]])):
                assert frames[frames.index("coro_park") + 1] == "coro_main", (reader, frames)
