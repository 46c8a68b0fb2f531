"""An ELF core file (kernel, gdb's gcore, systemd-coredump) as a Snapshot.

The same Snapshot a live capture gives: threads and registers from the notes, the
exception from NT_SIGINFO, the memory map from the PT_LOAD segments and NT_FILE, modules
identified from the ELF headers the core holds (else from the files), stacks by the same
rule as live dumps and the same ``--memory`` presets. Memory is read from the file on
demand (``CoreFile.read``), so the Snapshot stays small whatever the size of the core.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import BinaryIO, Optional, Union

from ..platform.linux.loaded_modules import main_dso_debug, modules_from_maps
from ..platform.linux.procfs import Mapping
from ..platform.linux.procinfo import auxv_entries
from ..backends.referenced import DEFAULT_BUDGET
from ..backends.stacks import StackMap, blank, thread_stack
from ..memory_presets import PRESETS, with_preset_memory
from ..binfmt import elfcore as ec
from ..snapshot import (
    Amd64Context,
    Arch,
    Arm64Context,
    CpuInfo,
    ExceptionInfo,
    LinuxFiles,
    MemoryRange,
    OS,
    Process,
    Snapshot,
    SoftError,
    SystemInfo,
    Thread,
)
from .corefile import CoreFile, CoreFileError, open_core

AT_EXECFN = 31
_ARCH = {ec.EM_X86_64: Arch.AMD64, ec.EM_AARCH64: Arch.ARM64}


@dataclasses.dataclass
class _CoreThread:
    status: ec.PrStatus
    fpregs: Optional[bytes] = None
    xstate: Optional[bytes] = None
    tls: Optional[int] = None
    siginfo: Optional[ec.SigInfo] = None


@dataclasses.dataclass
class CoreNotes:
    """What the notes of a core say, grouped: notes after an NT_PRSTATUS belong to its
    thread (the kernel's and gdb's order); NT_PRPSINFO/NT_AUXV/NT_FILE to the process."""

    threads: list[_CoreThread]
    psinfo: Optional[ec.PrPsInfo] = None
    auxv: Optional[bytes] = None
    files: tuple[ec.FileMapping, ...] = ()


def parse_notes(blobs: list[bytes], machine: int, name: str = "core") -> CoreNotes:
    threads: list[_CoreThread] = []
    notes = CoreNotes(threads=threads)
    try:
        for blob in blobs:
            for n in ec.iter_notes(blob):
                core = n.name == b"CORE"
                linux = n.name == b"LINUX"
                if core and n.type == ec.NT_PRSTATUS:
                    threads.append(_CoreThread(ec.parse_prstatus(n.desc, machine)))
                elif core and n.type == ec.NT_PRPSINFO and notes.psinfo is None:
                    notes.psinfo = ec.parse_prpsinfo(n.desc)
                elif core and n.type == ec.NT_AUXV and notes.auxv is None:
                    notes.auxv = n.desc
                elif core and n.type == ec.NT_FILE and not notes.files:
                    notes.files = tuple(ec.parse_nt_file(n.desc))
                elif not threads:
                    continue
                elif core and n.type == ec.NT_SIGINFO:
                    threads[-1].siginfo = ec.parse_siginfo(n.desc)
                elif core and n.type == ec.NT_PRFPREG:
                    threads[-1].fpregs = n.desc
                elif linux and n.type == ec.NT_X86_XSTATE:
                    threads[-1].xstate = n.desc
                elif linux and n.type == ec.NT_ARM_TLS and len(n.desc) >= 8:
                    threads[-1].tls = int.from_bytes(n.desc[:8], "little")
    except (ec.CoreFormatError, ValueError) as exc:
        raise CoreFileError(f"{name} has corrupt notes: {exc}") from None
    if not threads:
        raise CoreFileError(f"{name} has corrupt notes: no thread (NT_PRSTATUS) in them")
    return notes


def _amd64(t: _CoreThread) -> tuple[Amd64Context, int]:
    r = dict(t.status.regs)
    fx = t.fpregs if t.fpregs and len(t.fpregs) == ec.FXSAVE_SIZE else None
    if fx is None and t.xstate:
        fx = ec.amd64_fxsave_from_xstate(t.xstate)
    ctx = Amd64Context(
        rax=r["rax"], rcx=r["rcx"], rdx=r["rdx"], rbx=r["rbx"], rsp=r["rsp"], rbp=r["rbp"],
        rsi=r["rsi"], rdi=r["rdi"], r8=r["r8"], r9=r["r9"], r10=r["r10"], r11=r["r11"],
        r12=r["r12"], r13=r["r13"], r14=r["r14"], r15=r["r15"], rip=r["rip"],
        eflags=r["eflags"], cs=r["cs"], ds=r["ds"], es=r["es"], fs=r["fs"], gs=r["gs"],
        ss=r["ss"], fxsave=fx,
    )
    return ctx, r["fs_base"]


def _arm64(t: _CoreThread) -> tuple[Arm64Context, int]:
    r = dict(t.status.regs)
    x = tuple(r[f"x{i}"] for i in range(31))
    v = None
    fpsr = fpcr = 0
    fp = t.fpregs
    if fp and len(fp) >= 520:
        v = tuple(int.from_bytes(fp[i * 16:i * 16 + 16], "little") for i in range(32))
        fpsr = int.from_bytes(fp[512:516], "little")
        fpcr = int.from_bytes(fp[516:520], "little")
    ctx = Arm64Context(x=x[:29], fp=x[29], lr=x[30], sp=r["sp"], pc=r["pc"],
                       cpsr=r["pstate"] & 0xFFFFFFFF, v=v, fpsr=fpsr, fpcr=fpcr)
    return ctx, t.tls or 0


def core_maps(core: CoreFile, files: tuple[ec.FileMapping, ...]) -> list[Mapping]:
    """The memory map: one mapping per PT_LOAD (one per VMA), named from NT_FILE."""
    by_start = {f.start: f for f in files}
    out = []
    for s in core.segments:
        if s.memsz == 0:
            continue
        f = by_start.get(s.vaddr)
        perms = ("r" if s.flags & ec.PF_R else "-") + ("w" if s.flags & ec.PF_W else "-") \
            + ("x" if s.flags & ec.PF_X else "-") + "p"
        out.append(Mapping(start=s.vaddr, end=s.end, perms=perms,
                           offset=f.offset if f else 0, dev="00:00",
                           inode=1 if f else 0, path=f.path if f else ""))
    # Files the core has no PT_LOAD for (rare) still belong in the map.
    starts = {m.start for m in out}
    for f in files:
        if f.start not in starts:
            out.append(Mapping(f.start, f.end, "r--p", f.offset, "00:00", 1, f.path))
    out.sort(key=lambda m: m.start)
    return out


def maps_text(maps: list[Mapping]) -> bytes:
    """The map in /proc/PID/maps form (the LinuxMaps stream); inodes are not in cores."""
    lines = []
    for m in maps:
        line = f"{m.start:08x}-{m.end:08x} {m.perms} {m.offset:08x} {m.dev} {m.inode}"
        lines.append(f"{line:<73}{m.path}".rstrip() if m.path else line)
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _file_backed_read(core: CoreFile, maps: list[Mapping]):
    """A read function for module identification: the core's bytes, else (for file
    mappings the core left out) the mapped file's bytes, as gdb does."""
    import bisect

    files = [m for m in maps if m.inode and m.path.startswith("/")]
    starts = [m.start for m in files]

    def read(address: int, size: int) -> bytes:
        data = core.read(address, size)
        if len(data) == size:
            return data
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= files[i].end:
            return data
        m = files[i]
        try:
            with open(m.path, "rb") as f:
                f.seek(m.offset + address - m.start)
                return f.read(min(size, m.end - address))
        except OSError:
            return data

    return read


def initial_stack_strings(read, stack: MemoryRange, auxv: bytes):
    """argv and the environment span from the process's initial stack (argc, argv[],
    NULL, envp[], NULL, auxv[] just below the strings): ([argv...], (env_lo, env_hi)).
    Empty results where the layout is not found."""
    if not auxv or len(auxv) < 32 or stack is None:
        return [], None
    data = stack.data
    at = bytes(data).find(auxv[:32])
    if at < 16 or at % 8:
        return [], None

    def word(off: int) -> int:
        return int.from_bytes(data[off:off + 8], "little")

    pos = at - 8
    if word(pos) != 0:
        return [], None
    envp: list[int] = []
    pos -= 8
    while pos >= 0 and word(pos) != 0 and len(envp) < 1 << 16:
        envp.append(word(pos))
        pos -= 8
    argv: list[int] = []
    pos -= 8
    while pos >= 0 and word(pos) != len(argv) and len(argv) < 1 << 16:
        argv.append(word(pos))
        pos -= 8
    if pos < 0:
        return [], None
    argv.reverse()

    def string(addr: int) -> bytes:
        off = addr - stack.start
        if not 0 <= off < len(data):
            return read(addr, 4096).split(b"\0", 1)[0]
        end = bytes(data[off:off + 131072]).find(b"\0")
        return bytes(data[off:off + end if end >= 0 else off + 4096])

    args = [string(a).decode("utf-8", "surrogateescape") for a in argv]
    span = None
    if envp:
        lo = min(envp)
        hi = max(e + len(string(e)) + 1 for e in envp)
        span = (lo, hi)
    return args, span


def _system(arch: Arch, live_pid: Optional[int],
            this_machine: bool = False) -> tuple[SystemInfo, Optional[bytes]]:
    """This machine's system facts when the core was just made here (the core handler,
    `run`); otherwise only what the core says (its architecture)."""
    host = {"x86_64": Arch.AMD64, "aarch64": Arch.ARM64}.get(platform.machine())
    if (live_pid is not None or this_machine) and host == arch:
        from ..platform.linux.procinfo import system_info

        return system_info(arch)
    return SystemInfo(arch=arch, os=OS.LINUX, os_version="Linux", cpu=CpuInfo(count=1)), None


def snapshot_from_core(core: CoreFile, *, memory: str = "referenced",
                       max_referenced: int = DEFAULT_BUDGET, include_environment: bool = False,
                       live_pid: Optional[int] = None, this_machine: bool = False,
                       dump_time: Optional[int] = None,
                       on_short_read=None) -> Snapshot:
    """The Snapshot of an opened core (its memory reads from ``core`` while it is open)."""
    if memory not in PRESETS:
        raise ValueError(f"memory preset {memory!r}")
    notes = parse_notes(core.note_bytes(), core.machine, core.name)
    arch = _ARCH[core.machine]
    soft: list[SoftError] = []
    psinfo = notes.psinfo
    first = notes.threads[0]
    pid = psinfo.pid if psinfo else first.status.pid
    maps = core_maps(core, notes.files)
    stack_map = StackMap(maps)
    auxv = notes.auxv or b""
    ids = [t.status.pid for t in notes.threads]
    if len(set(ids)) != len(ids):
        raise CoreFileError(f"{core.name} has corrupt notes: thread ids repeat")

    threads = []
    argv: list[str] = []
    for t in notes.threads:
        ctx, tp = _amd64(t) if arch == Arch.AMD64 else _arm64(t)
        tid = t.status.pid
        is_main = tid == pid
        rng = stack_map.range(ctx.sp, is_main, tp)
        data = core.read(rng[0], rng[1] - rng[0]) if rng else None
        stack = thread_stack(tid, ctx.sp, rng, data, soft, nowhere="is in no mapping of the core",
                             unread="is not in the core")
        if is_main and stack is not None:
            argv, env = initial_stack_strings(core.read, stack, auxv)
            if env and not include_environment:
                stack = MemoryRange(stack.start, blank(stack.data, stack.start, *env))
        name = psinfo.fname if (psinfo and is_main and psinfo.fname) else None
        if live_pid is not None and live_pid == pid:  # same pid namespace: /proc knows
            from ..platform.linux.procinfo import thread_name

            name = thread_name(pid, tid) or name
        threads.append(Thread(tid=tid, context=ctx, stack=stack, name=name,
                              thread_pointer=tp))

    exception = None
    sig = first.siginfo
    signo = sig.signo if sig else first.status.cursig
    if signo in ec.CORE_SIGNALS:
        exception = ExceptionInfo(thread_id=first.status.pid, code=signo,
                                  flags=sig.code if sig else 0,
                                  address=sig.addr if sig else 0)

    ident_read = _file_backed_read(core, maps)
    modules = modules_from_maps(live_pid if live_pid is not None else 0, maps,
                                auxv_entries(auxv), ident_read, soft)
    main = modules[0] if modules and modules[0].is_main else None
    system, cpuinfo = _system(arch, live_pid, this_machine)

    command_line: tuple[str, ...] = tuple(argv)
    cmdline_raw: Optional[bytes] = None
    if live_pid is not None:
        from ..platform.linux.procfs import read_file

        cmdline_raw = read_file(f"/proc/{live_pid}/cmdline") or None
        if cmdline_raw:
            command_line = tuple(a.decode("utf-8", "surrogateescape")
                                 for a in cmdline_raw.split(b"\0")[:-1])
    if not command_line and psinfo and psinfo.psargs:
        command_line = tuple(psinfo.psargs.split(" "))
    if cmdline_raw is None and command_line:
        cmdline_raw = b"".join(a.encode("utf-8", "surrogateescape") + b"\0"
                               for a in command_line)
    leader = next((t for t in notes.threads if t.status.pid == pid), first)
    process = Process(pid=pid, command_line=command_line,
                      parent_pid=psinfo.ppid if psinfo else first.status.ppid,
                      user_time=leader.status.utime, kernel_time=leader.status.stime)
    status = lsb = None
    if live_pid is not None:
        from ..platform.linux.procfs import read_file
        from ..platform.linux.procinfo import os_release

        status = read_file(f"/proc/{live_pid}/status")
        lsb = os_release(live_pid)
    linux = LinuxFiles(cpuinfo=cpuinfo, status=status, lsb_release=lsb, cmdline=cmdline_raw,
                       auxv=notes.auxv, maps=maps_text(maps),
                       dso_debug=main_dso_debug(core.read, main))
    snapshot = Snapshot(
        process=process, system=system, threads=tuple(threads), modules=tuple(modules),
        regions=tuple(m.region() for m in maps), exception=exception, linux=linux,
        soft_errors=tuple(soft),
        time=dump_time if dump_time is not None else core.mtime,
    )
    # A full dump holds every range the core holds.
    return with_preset_memory(snapshot, memory, read=core.read, full_ranges=core.held_ranges,
                              max_referenced=max_referenced, readinto=core.readinto,
                              on_short_read=on_short_read)


def read_core(path_or_fileobj: Union[str, os.PathLike, BinaryIO], *, memory: str = "referenced",
              max_referenced: int = DEFAULT_BUDGET, include_environment: bool = False,
              live_pid: Optional[int] = None, temp_dir: Optional[str] = None,
              this_machine: bool = False) -> Snapshot:
    """The Snapshot of a core file (a path or an open file; pipes and zstd/lz4/xz
    compressed cores are accepted). Raises CoreFileError (a DumpError) for bad input.

    The returned snapshot's memory (``full``) reads the core lazily: the file stays open
    as long as the snapshot lives (closed when it is garbage collected). ``live_pid``:
    the crashed process still exists (core handler), so /proc/PID may add what cores lack.
    ``this_machine``: the core was just written here (`run`): system facts are this host's.
    """
    core = open_core(path_or_fileobj, temp_dir)
    try:
        snap = snapshot_from_core(core, memory=memory, max_referenced=max_referenced,
                                  include_environment=include_environment, live_pid=live_pid,
                                  this_machine=this_machine)
    except BaseException:
        core.close()
        raise
    if memory != "full":
        core.close()
    else:
        # LazyMemory holds core.read; close the descriptor when the core object dies.
        import weakref

        weakref.finalize(core, os.close, core.fd)
        core._owns = False
    return snap


