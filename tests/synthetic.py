"""Synthetic snapshots with known values, for writer/reader tests that need no live process."""

from __future__ import annotations

import dataclasses

from generate_dump.snapshot import (
    Amd64Context, Arch, Arm64Context, CpuInfo, DsoDebug, ElfBuildId, ExceptionInfo,
    LinkMapEntry, LinuxFiles, MemoryRange, MemoryRegion, Module, OS, PdbIdentity, Process,
    RegionKind, Snapshot, SoftError, SystemInfo, Thread,
)

BUILD_ID = bytes(range(24))  # 00 01 02 ... 17
BUILD_ID_DEBUG_ID = "030201000504070608090A0B0C0D0E0F0"
BUILD_ID_CODE_ID = BUILD_ID.hex()

TEXT_BASE = 0x5555_5555_4000
LIB_BASE = 0x7F00_0000_0000
STACK_TOPS = (0x7FFF_F000_0000, 0x7F10_0000_0000, 0x7F20_0000_0000)


def _stack(top: int, size: int, seed: int) -> MemoryRange:
    data = bytes((seed + i * 7) & 0xFF for i in range(size))
    return MemoryRange(top - size, data)


def amd64_snapshot(with_exception: bool = False) -> Snapshot:
    threads = []
    for i, top in enumerate(STACK_TOPS):
        stack = _stack(top, 0x1000 * (i + 1), i)
        ctx = Amd64Context(
            **{r: 0x1111_0000_0000_0000 + n * 0x101 + i for n, r in enumerate(
                ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
                 "r12", "r13", "r14", "r15"))},
            rsp=stack.start + 0x40, rip=TEXT_BASE + 0x1234 + i, eflags=0x246,
            cs=0x33, ss=0x2B, fxsave=bytes((i + j) & 0xFF for j in range(512)),
        )
        threads.append(Thread(tid=1000 + i, context=ctx, stack=stack,
                              name=("main", "worker-1", None)[i], thread_pointer=top + 0x700))
    return Snapshot(
        process=Process(pid=1000, create_time=1_700_000_000, user_time=3.0, kernel_time=1.0),
        system=SystemInfo(arch=Arch.AMD64, os=OS.LINUX, os_major=6, os_minor=1, os_build=0,
                          os_version="Linux 6.1.0 #1 SMP x86_64",
                          cpu=CpuInfo(count=2, vendor="GenuineIntel", family=6, model=85,
                                      stepping=7, version_information=0x50657,
                                      feature_information=0xBFEBFBFF)),
        threads=tuple(threads),
        modules=(
            Module("/usr/bin/synthetic", TEXT_BASE, 0x5000, ElfBuildId(BUILD_ID), is_main=True),
            Module("/usr/lib/libsynth.so.1", LIB_BASE, 0x20000,
                   ElfBuildId(bytes.fromhex("deadbeef" * 5))),
            Module("C:\\Windows\\system32\\fake.dll", LIB_BASE + 0x100000, 0x3000,
                   PdbIdentity(bytes(range(16, 32)), 3, "fake.pdb")),
        ),
        memory=(MemoryRange(0x6000_0000, b"HEAPMARKER" * 10),),
        regions=(
            MemoryRegion(TEXT_BASE, 0x5000, True, False, True, RegionKind.PRIVATE, "/usr/bin/synthetic"),
            MemoryRegion(0x6000_0000, 0x1000, True, True, False),
        ),
        exception=ExceptionInfo(thread_id=1001, code=11, flags=1, address=0xDEAD) if with_exception else None,
        linux=LinuxFiles(
            cpuinfo=b"processor\t: 0\nvendor_id\t: GenuineIntel\n\n",
            status=b"Name:\tsynthetic\nPid:\t1000\n",
            lsb_release=b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
            cmdline=b"/usr/bin/synthetic\0--flag\0",
            auxv=bytes(32),
            maps=b"555555554000-555555559000 r-xp 00000000 08:01 42 /usr/bin/synthetic\n",
            dso_debug=DsoDebug(version=1, brk=0x7F00_0000_1000, ldbase=0x7F00_0010_0000,
                               dynamic_addr=TEXT_BASE + 0x3000,
                               link_maps=(LinkMapEntry(0, "", TEXT_BASE + 0x3000),
                                          LinkMapEntry(LIB_BASE, "/usr/lib/libsynth.so.1", LIB_BASE + 0x1000)),
                               dynamic=bytes(64)),
        ),
        soft_errors=(SoftError("memory-unreadable", "region 0x1000 could not be read"),),
        time=1_700_000_100,
    )


def arm64_snapshot() -> Snapshot:
    threads = []
    for i, top in enumerate(STACK_TOPS[:2]):
        stack = _stack(top, 0x2000, i + 5)
        ctx = Arm64Context(x=tuple(0x2222_0000_0000 + n + i for n in range(29)),
                           fp=stack.start + 0x100, lr=TEXT_BASE + 0x100 + i,
                           sp=stack.start + 0x80, pc=TEXT_BASE + 0x200 + i, cpsr=0x6000_0000,
                           v=tuple((n << 64) | (n + i) for n in range(32)), fpsr=0x10, fpcr=0x0)
        threads.append(Thread(tid=2000 + i, context=ctx, stack=stack, name=f"arm-{i}",
                              thread_pointer=top + 0x10))
    return Snapshot(
        process=Process(pid=2000, create_time=1_700_000_000),
        system=SystemInfo(arch=Arch.ARM64, os=OS.LINUX, os_major=6, os_minor=6,
                          os_version="Linux 6.6.0 aarch64", cpu=CpuInfo(count=8)),
        threads=tuple(threads),
        modules=(Module("/usr/bin/armprog", TEXT_BASE, 0x8000, ElfBuildId(BUILD_ID), is_main=True),),
        time=1_700_000_200,
    )


# -- reading back ------------------------------------------------------------------------------


def read_back(data) -> Snapshot:
    """The Snapshot in a minidump (bytes or a path) as production reads it
    (``read_minidump_snapshot``), its file-backed memory copied so that it compares equal
    to a snapshot that was written."""
    from generate_dump.sources.minidump_file import read_minidump_snapshot

    return copied(read_minidump_snapshot(data))


def copied(snap: Snapshot) -> Snapshot:
    """``snap`` with every lazy memory range read into a MemoryRange."""
    memory = tuple(m if isinstance(m, MemoryRange)
                   else MemoryRange(m.start, b"".join(bytes(c) for c in m.chunks()))
                   for m in snap.memory)
    return dataclasses.replace(snap, memory=memory)


def as_read(snap: Snapshot) -> Snapshot:
    """What reading a written ``snap`` gives back: the minidump keeps the process's
    arguments and parent only in the Linux files, from which the reader takes them."""
    process = snap.process
    linux = snap.linux
    if linux is not None and linux.cmdline:
        process = dataclasses.replace(process, command_line=tuple(
            a.decode("utf-8", "surrogateescape") for a in linux.cmdline.split(b"\0") if a))
    if linux is not None and linux.status:
        for line in linux.status.splitlines():
            fields = line.split()
            if line.startswith(b"PPid:") and len(fields) > 1 and fields[1].isdigit():
                process = dataclasses.replace(process, parent_pid=int(fields[1]))
    return dataclasses.replace(snap, process=process)

