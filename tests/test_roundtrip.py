"""Property tests: random snapshots survive Snapshot -> minidump bytes -> parse -> Snapshot.

Generated values stay inside what the format can carry, so equality must hold exactly:
  * extra memory is disjoint from stacks and from itself, under 64 MiB, sorted by address
    (the writer clips overlaps and splits big ranges; the reader returns ranges sorted);
  * only module 0 is the main module (the reader marks module 0 as main);
  * Process.command_line / parent_pid are not stored; times are whole seconds in 32 bits;
  * MemoryRegion.path / offset are not stored (MINIDUMP_MEMORY_INFO has no such fields) and
    write-only protection does not exist in Windows protections, so writable implies readable;
  * a LinuxFiles with every field None writes no stream and reads back as None;
  * ElfBuildId.from_text_hash is not stored; Mach-O UUIDs read back as RSDS PdbIdentity.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generate_dump.minidump import WriteOptions, minidump_bytes, parse
from generate_dump.snapshot import (
    AMD64_GPR_NAMES,
    Amd64Context,
    Arch,
    Arm64Context,
    CpuInfo,
    DsoDebug,
    ElfBuildId,
    ExceptionInfo,
    FileVersion,
    LinkMapEntry,
    LinuxFiles,
    MemoryRange,
    MemoryRegion,
    Module,
    OS,
    PdbIdentity,
    Process,
    RegionKind,
    Snapshot,
    SoftError,
    SystemInfo,
    Thread,
    X86Context,
)

from generate_dump.memsource import SnapshotMemory
from generate_dump.sources.minidump_file import read_minidump_snapshot

from synthetic import amd64_snapshot, arm64_snapshot, as_read, read_back

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
u128 = st.integers(0, (1 << 128) - 1)

NON_ASCII_NAMES = ["wörker-1", "线程-2", "🧵 thread", "Ω", "naïve\u200bname", "\u00e9\u0301"]
names = st.one_of(st.text(min_size=1, max_size=24), st.sampled_from(NON_ASCII_NAMES))
no_nul_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                      max_size=40)


def _ctx_amd64():
    return st.builds(
        Amd64Context,
        **{r: u64 for r in AMD64_GPR_NAMES}, rip=u64, eflags=u32,
        cs=u16, ds=u16, es=u16, fs=u16, gs=u16, ss=u16,
        fxsave=st.none() | st.binary(min_size=512, max_size=512),
        debug=st.tuples(u64, u64, u64, u64, u64, u64),
    )


def _ctx_arm64():
    return st.builds(
        Arm64Context,
        x=st.lists(u64, min_size=29, max_size=29).map(tuple), fp=u64, lr=u64, sp=u64, pc=u64,
        cpsr=u32, v=st.none() | st.lists(u128, min_size=32, max_size=32).map(tuple),
        fpsr=u32, fpcr=u32,
    )


def _ctx_x86():
    return st.builds(
        X86Context,
        **{r: u32 for r in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip",
                            "eflags")},
        cs=u16, ds=u16, es=u16, fs=u16, gs=u16, ss=u16,
        fsave=st.none() | st.binary(min_size=112, max_size=112),
        fxsave=st.none() | st.binary(min_size=512, max_size=512),
        debug=st.tuples(u32, u32, u32, u32, u32, u32),
    )


CONTEXTS = {Arch.AMD64: _ctx_amd64(), Arch.ARM64: _ctx_arm64(), Arch.X86: _ctx_x86()}


@st.composite
def disjoint_ranges(draw, count: int) -> list[MemoryRange]:
    """``count`` non-empty, pairwise disjoint ranges (possibly adjacent), in random order."""
    addr = draw(st.integers(0, 1 << 63))
    out = []
    for _ in range(count):
        addr += draw(st.one_of(st.just(0), st.integers(1, 1 << 40)))
        data = draw(st.binary(min_size=1, max_size=300))
        out.append(MemoryRange(addr, data))
        addr += len(data)
    return draw(st.permutations(out)) if out else out


def _identity():
    return st.one_of(
        st.none(),
        st.builds(ElfBuildId, st.binary(min_size=1, max_size=40)),
        st.builds(PdbIdentity, st.binary(min_size=16, max_size=16), u32, no_nul_text),
    )


def _version():
    v4 = st.tuples(u16, u16, u16, u16)
    return st.none() | st.builds(FileVersion, v4, v4, u32, u32, u32, u32)


@st.composite
def modules(draw):
    n = draw(st.integers(0, 6))
    return tuple(
        Module(path=draw(st.text(max_size=40)), base=draw(u64), size=draw(u32),
               identity=draw(_identity()), timestamp=draw(u32), checksum=draw(u32),
               version=draw(_version()), is_main=(i == 0))
        for i in range(n)
    )


def _region():
    @st.composite
    def region(draw):
        w = draw(st.booleans())
        r = w or draw(st.booleans())
        return MemoryRegion(start=draw(u64), size=draw(u64), readable=r, writable=w,
                            executable=draw(st.booleans()), kind=draw(st.sampled_from(RegionKind)))
    return region()


def _linux():
    opt = st.none() | st.binary(max_size=64)
    dso = st.builds(
        DsoDebug, version=u32, brk=u64, ldbase=u64, dynamic_addr=u64,
        link_maps=st.lists(st.builds(LinkMapEntry, u64, st.text(max_size=30), u64),
                           max_size=4).map(tuple),
        dynamic=st.binary(max_size=64),
    )
    files = st.builds(LinuxFiles, cpuinfo=opt, status=opt, lsb_release=opt, cmdline=opt,
                      environ=opt, auxv=opt, maps=opt, dso_debug=st.none() | dso)
    return files.filter(lambda lf: any(getattr(lf, f.name) is not None
                                       for f in dataclasses.fields(lf)))


@st.composite
def cpu_infos(draw, arch: Arch):
    x86 = arch in (Arch.X86, Arch.AMD64)
    max_mhz = draw(st.one_of(st.just(0), st.integers(1, 0xFFFF_FFFF)))
    # The reader only takes the MHz values when max_mhz is set (see
    # test_current_mhz_without_max_mhz_round_trips), so current_mhz needs max_mhz here.
    current = draw(u32) if max_mhz else 0
    return CpuInfo(
        count=draw(st.integers(1, 255)),
        vendor=draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12))
        if x86 else "",
        family=draw(u16), model=draw(u8), stepping=draw(u8),
        version_information=draw(u32) if x86 else 0,
        feature_information=draw(u32) if x86 else 0,
        amd_extended_features=draw(u32) if x86 else 0,
        max_mhz=max_mhz, current_mhz=current,
    )


@st.composite
def snapshots(draw, arches=(Arch.AMD64, Arch.ARM64)):
    arch = draw(st.sampled_from(arches))
    tids = draw(st.lists(u32, unique=True, max_size=8))
    has_stack = [draw(st.booleans()) for _ in tids]
    n_extra = draw(st.integers(0, 6))
    ranges = draw(disjoint_ranges(sum(has_stack) + n_extra))
    stacks, extra = iter(ranges[: sum(has_stack)]), ranges[sum(has_stack):]
    threads = tuple(
        Thread(tid=tid, context=draw(CONTEXTS[arch]), stack=next(stacks) if s else None,
               name=draw(st.none() | names), thread_pointer=draw(u64),
               suspend_count=draw(u32), priority_class=draw(u32), priority=draw(u32))
        for tid, s in zip(tids, has_stack)
    )
    exc_tid = st.sampled_from(tids) if tids else u32
    exception = draw(st.none() | st.builds(
        ExceptionInfo, thread_id=exc_tid | u32, code=u32, flags=u32, address=u64,
        parameters=st.lists(u64, max_size=15).map(tuple)))
    return Snapshot(
        process=Process(pid=draw(u32), create_time=draw(u32),
                        user_time=float(draw(u32)), kernel_time=float(draw(u32))),
        system=SystemInfo(arch=arch, os=draw(st.sampled_from(OS)), os_major=draw(u32),
                          os_minor=draw(u32), os_build=draw(u32),
                          os_version=draw(st.text(max_size=60)), cpu=draw(cpu_infos(arch))),
        threads=threads,
        modules=draw(modules()),
        memory=tuple(sorted(extra, key=lambda m: m.start)),
        regions=tuple(draw(st.lists(_region(), max_size=6))),
        exception=exception,
        linux=draw(st.none() | _linux()),
        soft_errors=tuple(draw(st.lists(st.builds(SoftError, st.text(max_size=20),
                                                  st.text(max_size=60)), max_size=4))),
        time=draw(u32),
    )


def _assert_same(got: Snapshot, want: Snapshot) -> None:
    # Field by field first so a failure names the field, then the whole thing.
    for f in dataclasses.fields(Snapshot):
        assert getattr(got, f.name) == getattr(want, f.name), f.name
    assert got == want


@SETTINGS
@given(snap=snapshots(), memory64=st.booleans())
def test_roundtrip(snap, memory64):
    data = minidump_bytes(snap, WriteOptions(memory64=memory64))
    got = read_back(data)
    _assert_same(got, as_read(snap))
    # The file's structure and the memory interface agree with the snapshot too.
    md = parse(data)
    assert [t.tid for t in md.threads] == [t.tid for t in snap.threads]
    mem = SnapshotMemory(got)
    for t in snap.threads:
        if t.stack is not None:
            assert mem.read_exact(t.stack.start, len(t.stack.data)) == t.stack.data
    for m in snap.memory:
        assert mem.read_exact(m.start, len(m.data)) == m.data
    if memory64:
        assert len(md.memory64) == len(snap.memory)
        assert len(md.memory) == sum(t.stack is not None for t in snap.threads)


@SETTINGS
@given(snap=snapshots(arches=(Arch.X86,)))
def test_roundtrip_x86(snap):
    _assert_same(read_back(minidump_bytes(snap)), as_read(snap))


@SETTINGS
@given(snap=snapshots())
def test_writing_is_deterministic_and_parse_is_stable(snap):
    data = minidump_bytes(snap)
    assert minidump_bytes(snap) == data
    again = minidump_bytes(read_back(data))
    assert again == data


# -- targeted, non-property round-trip facts ----------------------------------------------------

@pytest.mark.parametrize("make", [amd64_snapshot, lambda: amd64_snapshot(True), arm64_snapshot])
def test_synthetic_snapshots_round_trip_except_region_paths(make):
    snap = make()
    got = read_back(minidump_bytes(snap))
    want = dataclasses.replace(as_read(snap), regions=tuple(
        dataclasses.replace(r, path="", offset=0) for r in snap.regions))
    _assert_same(got, want)


def test_extra_memory_overlapping_a_stack_is_clipped():
    stack = MemoryRange(0x1000, b"S" * 0x100)
    snap = Snapshot(
        process=Process(pid=1), system=SystemInfo(Arch.AMD64, OS.LINUX),
        threads=(Thread(tid=1, context=Amd64Context(rsp=0x1010), stack=stack),),
        memory=(MemoryRange(0xF00, b"A" * 0x300),  # covers the whole stack and more
                MemoryRange(0x1180, b"B" * 0x100)),  # overlaps the first extra range
    )
    back = read_back(minidump_bytes(snap))
    assert SnapshotMemory(back).read(0x1000, 0x100) == b"S" * 0x100  # the stack wins
    got = [(m.start, m.data) for m in back.memory]
    assert got == [(0xF00, b"A" * 0x100), (0x1100, b"A" * 0x100), (0x1200, b"B" * 0x80)]


def test_extra_memory_over_64mib_is_split(tmp_path):
    from generate_dump.minidump import read_minidump, write_minidump
    from generate_dump.sources.minidump_file import read_minidump_snapshot

    big = 64 * 1024 * 1024
    blob = bytes(range(256)) * (big // 256) + b"tail-bytes"
    snap = Snapshot(process=Process(pid=1), system=SystemInfo(Arch.AMD64, OS.LINUX),
                    memory=(MemoryRange(0x10_0000_0000, blob),))
    path = tmp_path / "big.dmp"
    with open(path, "wb") as f:
        write_minidump(snap, f)
    md = read_minidump(path)
    assert [(d.start, d.size) for d in md.memory] == [(0x10_0000_0000, big),
                                                      (0x10_0000_0000 + big, 10)]
    mem = SnapshotMemory(read_minidump_snapshot(path))  # read from the mapped file
    assert mem.read_exact(0x10_0000_0000 + big, 10) == b"tail-bytes"
    assert mem.read_exact(0x10_0000_0000 + big - 4, 4) == blob[big - 4:big]
    assert mem.read(0x10_0000_0000 + big - 4, 14) == blob[big - 4:big] + b"tail-bytes"


def test_current_mhz_without_max_mhz_round_trips():
    """A CPU whose max frequency is unknown (no cpufreq, e.g. many VMs) but whose current
    frequency is known: the writer stores current_mhz and sets PROCESSOR_POWER_INFO; the
    reader must not drop it just because max_mhz is 0."""
    snap = Snapshot(process=Process(pid=1),
                    system=SystemInfo(Arch.AMD64, OS.LINUX, cpu=CpuInfo(current_mhz=2400)))
    md = parse(minidump_bytes(snap))
    assert md.misc["processor_current_mhz"] == 2400  # written
    assert md.system.cpu.current_mhz == 2400  # and read back


def test_empty_linux_files_read_back_as_none():
    snap = Snapshot(process=Process(pid=1), system=SystemInfo(Arch.ARM64, OS.LINUX),
                    linux=LinuxFiles())
    assert read_back(minidump_bytes(snap)).linux is None


def test_empty_but_present_linux_file_round_trips():
    snap = Snapshot(process=Process(pid=1), system=SystemInfo(Arch.ARM64, OS.LINUX),
                    linux=LinuxFiles(environ=b""))
    assert read_back(minidump_bytes(snap)).linux == LinuxFiles(environ=b"")


# Linux backends decode /proc/PID/maps paths and link_map names with "surrogateescape", so a
# library under a non-UTF-8 directory yields a str with lone surrogates (b"\xe9" -> "\udce9").
UNDECODABLE = b"/opt/caf\xe9/libx.so".decode("utf-8", "surrogateescape")


def test_module_path_with_undecodable_bytes_can_be_written():
    snap = Snapshot(process=Process(pid=1), system=SystemInfo(Arch.AMD64, OS.LINUX),
                    modules=(Module(UNDECODABLE, 0x1000, 0x2000, is_main=True),))
    md = parse(minidump_bytes(snap))
    (m,) = md.modules
    assert (m.base, m.size) == (0x1000, 0x2000)
    assert m.path.startswith("/opt/caf") and m.path.endswith("/libx.so")


def test_link_map_name_with_undecodable_bytes_can_be_written():
    dso = DsoDebug(version=1, brk=0, ldbase=0, dynamic_addr=0,
                   link_maps=(LinkMapEntry(0x1000, UNDECODABLE, 0x2000),))
    snap = Snapshot(process=Process(pid=1), system=SystemInfo(Arch.AMD64, OS.LINUX),
                    linux=LinuxFiles(dso_debug=dso))
    md = parse(minidump_bytes(snap))
    assert md.dso_debug.link_maps[0].name.endswith("/libx.so")


def test_snapshot_memory_is_one_interface_over_stacks_copies_and_lazy_ranges():
    """SnapshotMemory reads a snapshot's stacks, copied ranges and lazy ranges alike
    (across adjacent ones, short at a gap); lazy=False leaves the lazy ones out (a live
    process's, read after the fact). A dump read back keeps its memory in the file."""
    from generate_dump.snapshot import LazyMemory

    reads = []

    def lazy_read(address: int, size: int) -> bytes:
        reads.append((address, size))
        return b"L" * max(0, min(size, 0x3000 - address))

    snap = Snapshot(
        process=Process(pid=1), system=SystemInfo(Arch.AMD64, OS.LINUX),
        threads=(Thread(tid=1, context=Amd64Context(rsp=0x1010),
                        stack=MemoryRange(0x1000, b"S" * 0x100)),),
        memory=(MemoryRange(0x1100, b"C" * 0x100), LazyMemory(0x2000, 0x1000, lazy_read)),
    )
    mem = SnapshotMemory(snap)
    assert mem.read(0x10F0, 0x20) == b"S" * 0x10 + b"C" * 0x10  # across adjacent ranges
    assert mem.read_exact(0x10F0, 0x20) is None  # no one range holds it all
    assert mem.read(0x11F0, 0x20) == b"C" * 0x10  # short: nothing at 0x1200
    assert mem.read(0x2FF0, 0x10) == b"L" * 0x10 and reads == [(0x2FF0, 0x10)]
    assert mem.read(0x5000, 4) == b""
    copied_only = SnapshotMemory(snap, lazy=False)
    assert copied_only.read(0x2FF0, 0x10) == b"" and len(reads) == 1
    back = read_minidump_snapshot(minidump_bytes(snap))
    assert back.memory and all(isinstance(m, LazyMemory) for m in back.memory)
    assert SnapshotMemory(back).read(0x10F0, 0x20) == b"S" * 0x10 + b"C" * 0x10
