"""Capture a live Linux process into a Snapshot with ptrace.

The target is frozen only for what must be consistent: every thread is seized
(PTRACE_SEIZE, which sends no signal) and interrupted, its registers are copied, all
stacks are read in a few batched process_vm_readv calls, and every thread is detached.
Everything else (module identity, /proc files, system information, conversions) happens
after the process runs again. If the dumper dies at any point the kernel detaches it and,
since no SIGSTOP was ever sent, the target simply runs on.
"""

from __future__ import annotations

import bisect
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ... import _testhooks
from ...errors import InvalidTarget, TargetGone, TargetNotFound, TargetPermissionError
from ...snapshot import (
    Amd64Context,
    Arch,
    Arm64Context,
    CpuContext,
    CpuInfo,
    DsoDebug,
    ElfBuildId,
    LinkMapEntry,
    LinuxFiles,
    MemoryRange,
    Module,
    OS,
    Process,
    Snapshot,
    SoftError,
    SystemInfo,
    Thread,
)
from . import procfs
from .diagnose import explain_eperm, tracer_message, tracer_of
from .memory import MemoryReader
from .procfs import Mapping

RED_ZONE = 128
MAX_STACK = 64 * 1024 * 1024 - 4096  # Breakpad's reader rejects larger regions
STOP_TIMEOUT = 2.0
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass
class CaptureOptions:
    suspend: bool = True
    include_environment: bool = False
    stop_timeout: float = STOP_TIMEOUT


@dataclass
class _RawThread:
    """What is copied from a stopped thread; converted to the snapshot after resume."""

    tid: int
    regs: object  # python-ptrace user_regs_struct (a ctypes copy)
    fpregs: Optional[bytes]
    tls: int = 0
    stack_range: Optional[tuple[int, int]] = None
    stack: bytes = b""


@dataclass
class _Frozen:
    threads: list[_RawThread] = field(default_factory=list)
    maps_text: bytes = b""
    maps: list[Mapping] = field(default_factory=list)
    soft_errors: list[SoftError] = field(default_factory=list)
    time: int = 0
    group_stopped: bool = False


def _host_arch() -> Arch:
    m = platform.machine()
    if m == "x86_64":
        return Arch.AMD64
    if m in ("aarch64", "arm64"):
        return Arch.ARM64
    raise InvalidTarget(f"the Linux backend does not support {m} processes yet")


# --- before the freeze -----------------------------------------------------------------------


@dataclass
class _Target:
    pid: int
    stat: procfs.ProcStat
    mm_tid: int  # a live thread whose /proc files and memory we can use


def _stat(pid: int) -> procfs.ProcStat:
    raw = procfs.read_file(f"/proc/{pid}/stat")
    if raw is None:
        raise TargetNotFound(f"no process with PID {pid}")
    return procfs.parse_stat(raw)


def _open_target(pid: int) -> _Target:
    if pid == os.getpid():
        raise InvalidTarget(f"PID {pid} is generate_dump itself; give the PID of another process")
    stat = _stat(pid)
    # /proc/TID exists for every thread too: a thread id is not a process id.
    tgid = procfs.parse_status(procfs.read_file(f"/proc/{pid}/status") or b"").get("Tgid", "")
    if tgid.isdigit() and int(tgid) != pid:
        raise InvalidTarget(f"{pid} is a thread of process {tgid}, not a process; "
                            f"give the process ID {tgid}")
    if stat.flags & procfs.PF_KTHREAD:
        raise InvalidTarget(f"PID {pid} ({stat.comm}) is a kernel thread, which has no "
                            "user-space memory to dump")
    mm_tid = pid
    if stat.state in ("Z", "X"):
        live = _live_tids(pid)
        if not live:
            raise TargetGone(f"process {pid} ({stat.comm}) has exited (zombie); "
                             "there is nothing left to dump")
        mm_tid = live[0]
    _check_arch(pid)
    return _Target(pid, stat, mm_tid)


def _check_arch(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            ident = f.read(20)
    except OSError:
        return
    if len(ident) < 20 or ident[:4] != b"\x7fELF":
        return
    machine = int.from_bytes(ident[18:20], "little")
    host = _host_arch()
    expected = {Arch.AMD64: 62, Arch.ARM64: 183}[host]
    if machine != expected or ident[4] != 2:
        raise InvalidTarget(f"process {pid} is not a 64-bit {host.value} process (ELF machine "
                            f"{machine}, class {ident[4]}); 32-bit processes are not supported")


def _live_tids(pid: int) -> list[int]:
    """Threads of ``pid`` that are neither zombies nor dead."""
    live = []
    try:
        tids = procfs.list_tids(pid)
    except OSError:
        return []
    for tid in tids:
        st = procfs.read_file(f"/proc/{pid}/task/{tid}/stat")
        if st and procfs.parse_stat(st).state not in ("Z", "X"):
            live.append(tid)
    return live


def _still_same(target: _Target) -> bool:
    """False if the process exited (even if not yet reaped) or its PID was reused."""
    try:
        stat = _stat(target.pid)
    except TargetNotFound:
        return False
    if stat.start_time != target.stat.start_time:
        return False
    return stat.state not in ("Z", "X") or bool(_live_tids(target.pid))


# --- stacks ----------------------------------------------------------------------------------


def stack_range(sp: int, maps: list[Mapping], starts: list[int], is_main: bool,
                thread_pointer: int) -> Optional[tuple[int, int]]:
    """The stack bytes to copy for a thread: SP-128 to the top of its stack mapping.

    Adjacent readable mappings with the same permissions count as one. A non-main thread
    stops at its thread pointer (glibc keeps TLS and the thread descriptor just below it).
    An SP in an unreadable guard page starts at the next readable mapping.
    """
    i = bisect.bisect_right(starts, sp) - 1
    if i < 0 or sp >= maps[i].end:
        # SP exactly at the end of a mapping (an empty stack) belongs to that mapping.
        i = bisect.bisect_right(starts, sp - 1) - 1
        if i < 0 or sp - 1 >= maps[i].end:
            return None
    m = maps[i]
    if not m.readable:
        if i + 1 < len(maps) and maps[i + 1].start == m.end and maps[i + 1].readable:
            i += 1
            m = maps[i]
            start = m.start
        else:
            return None
    else:
        start = max(m.start, sp - RED_ZONE)
    end = m.end
    j = i
    while j + 1 < len(maps) and maps[j + 1].start == end and maps[j + 1].perms == m.perms \
            and maps[j + 1].inode == m.inode:
        j += 1
        end = maps[j].end
    if not is_main and start < thread_pointer < end:
        end = thread_pointer
    if end - start > MAX_STACK:
        end = start + MAX_STACK
    return (start, end) if end > start else None


# --- the freeze ------------------------------------------------------------------------------


def _read_maps(target: _Target) -> tuple[bytes, list[Mapping]]:
    text = procfs.read_file(f"/proc/{target.pid}/task/{target.mm_tid}/maps")
    if text is None:
        text = procfs.read_file(f"/proc/{target.pid}/maps") or b""
    return text, procfs.parse_maps(text)


class _Freezer:
    """Seizes threads and always lets them go, whatever happens in between."""

    def __init__(self, target: _Target, options: CaptureOptions):
        from . import ptrace_ops

        self.pt = ptrace_ops
        self.target = target
        self.options = options
        self.seized: dict[int, int] = {}  # tid -> signal to re-deliver on detach
        self.skip: set[int] = set()  # zombies, vanished, unstoppable
        self.soft: list[SoftError] = []
        self.group_stopped = False

    def seize(self, tid: int) -> bool:
        from ptrace import PtraceError

        try:
            self.pt.seize(tid)
        except PtraceError as exc:
            import errno

            if exc.errno == errno.EPERM:
                if not self.seized:
                    tracer = tracer_of(self.target.pid)
                    if tracer:
                        raise TargetPermissionError(tracer_message(self.target.pid, tracer))
                    raise TargetPermissionError(explain_eperm(self.target.pid))
                tracer = tracer_of(tid)
                if tracer and tracer != os.getpid():
                    raise TargetPermissionError(tracer_message(self.target.pid, tracer))
            self.skip.add(tid)
            self.soft.append(SoftError("thread-vanished", f"thread {tid} could not be traced: "
                                       f"{os.strerror(exc.errno or 0)}"))
            return False
        self.seized[tid] = 0
        try:
            self.pt.interrupt(tid)
        except PtraceError:
            pass  # it exited; wait_stop will tell
        return True

    def wait(self, tid: int, deadline: float) -> bool:
        try:
            res = self.pt.wait_stop(tid, deadline)
        except self.pt.ThreadGone:
            self.seized.pop(tid, None)
            self.skip.add(tid)
            self.soft.append(SoftError("thread-vanished", f"thread {tid} exited during the dump"))
            return False
        if not res.stopped:
            self.skip.add(tid)
            self.soft.append(SoftError(
                "thread-not-stopped",
                f"thread {tid} did not stop within {self.options.stop_timeout:g} s "
                "(uninterruptible sleep?); it is left out"))
            return False
        self.seized[tid] = res.signal
        if res.group_stop:
            self.group_stopped = True
        return True

    def copy_registers(self, tid: int) -> Optional[_RawThread]:
        from ptrace import PtraceError

        try:
            regs = self.pt.get_regs(tid)
            fp = self.pt.get_fpregs_raw(tid)
            tls = self.pt.get_arm64_tls(tid) if self.pt.IS_AARCH64 else 0
        except (PtraceError, self.pt.ThreadGone):
            self.soft.append(SoftError("thread-vanished", f"thread {tid} exited during the dump"))
            return None
        return _RawThread(tid, regs, fp, tls)

    def release(self, tid: int) -> None:
        sig = self.seized.pop(tid, None)
        if sig is None:
            return
        try:
            self.pt.detach(tid, sig)
        except Exception:  # noqa: BLE001 - the thread may be gone; the kernel cleans up
            pass

    def release_all(self) -> None:
        for tid in list(self.seized):
            self.release(tid)


def _sp_and_tp(raw: _RawThread) -> tuple[int, int]:
    r = raw.regs
    if hasattr(r, "rsp"):
        return r.rsp, r.fs_base
    return r.sp, raw.tls


def _assign_stacks(raws: list[_RawThread], maps: list[Mapping], main_tid: int,
                   soft: list[SoftError]) -> None:
    starts = [m.start for m in maps]
    for raw in raws:
        sp, tp = _sp_and_tp(raw)
        raw.stack_range = stack_range(sp, maps, starts, raw.tid == main_tid, tp)


def _freeze_all(target: _Target, options: CaptureOptions, reader: MemoryReader) -> _Frozen:
    fz = _Freezer(target, options)
    frozen = _Frozen()
    maps_text, maps = _read_maps(target)
    try:
        raws: list[_RawThread] = []
        while True:
            try:
                tids = procfs.list_tids(target.pid)
            except OSError:
                raise TargetGone(f"process {target.pid} exited during the dump") from None
            new = [t for t in tids if t not in fz.seized and t not in fz.skip]
            if target.mm_tid != target.pid and target.pid in new:
                new.remove(target.pid)  # the zombie leader cannot stop
                fz.skip.add(target.pid)
            if not new:
                break
            new = [t for t in new if fz.seize(t)]
            deadline = time.monotonic() + options.stop_timeout
            for tid in new:
                if fz.wait(tid, deadline):
                    raw = fz.copy_registers(tid)
                    if raw is not None:
                        raws.append(raw)
        if not raws:
            raise TargetGone(f"process {target.pid} exited during the dump")
        frozen.time = int(time.time())
        # Stacks: the map read before the freeze serves unless a thread is new to it.
        _assign_stacks(raws, maps, target.pid, frozen.soft_errors)
        if any(r.stack_range is None for r in raws):
            maps_text, maps = _read_maps(target)
            _assign_stacks(raws, maps, target.pid, frozen.soft_errors)
        with_stack = [r for r in raws if r.stack_range]
        datas = reader.read_many([(a, b - a) for a, b in (r.stack_range for r in with_stack)])
        for r, data in zip(with_stack, datas):
            r.stack = data
        _testhooks.pause("frozen")
    finally:
        fz.release_all()
    frozen.threads = raws
    frozen.maps_text, frozen.maps = maps_text, maps
    frozen.soft_errors.extend(fz.soft)
    frozen.group_stopped = fz.group_stopped
    return frozen


def _capture_running(target: _Target, options: CaptureOptions, reader: MemoryReader) -> _Frozen:
    """--no-suspend: pause one thread at a time, only for its own registers and stack."""
    fz = _Freezer(target, options)
    frozen = _Frozen()
    maps_text, maps = _read_maps(target)
    starts = [m.start for m in maps]
    done: set[int] = set()
    try:
        while True:
            try:
                tids = procfs.list_tids(target.pid)
            except OSError:
                raise TargetGone(f"process {target.pid} exited during the dump") from None
            new = [t for t in tids if t not in done and t not in fz.skip]
            if target.mm_tid != target.pid and target.pid in new:
                new.remove(target.pid)
                fz.skip.add(target.pid)
            if not new:
                break
            for tid in new:
                done.add(tid)
                if not fz.seize(tid):
                    continue
                try:
                    if not fz.wait(tid, time.monotonic() + options.stop_timeout):
                        continue
                    raw = fz.copy_registers(tid)
                    if raw is None:
                        continue
                    sp, tp = _sp_and_tp(raw)
                    raw.stack_range = stack_range(sp, maps, starts, tid == target.pid, tp)
                    if raw.stack_range is None:
                        maps_text, maps = _read_maps(target)
                        starts = [m.start for m in maps]
                        raw.stack_range = stack_range(sp, maps, starts, tid == target.pid, tp)
                    if raw.stack_range:
                        a, b = raw.stack_range
                        raw.stack = reader.read(a, b - a)
                    frozen.threads.append(raw)
                finally:
                    fz.release(tid)
    finally:
        fz.release_all()
    if not frozen.threads:
        raise TargetGone(f"process {target.pid} exited during the dump")
    frozen.time = int(time.time())
    frozen.maps_text, frozen.maps = maps_text, maps
    frozen.soft_errors.extend(fz.soft)
    return frozen


# --- after the freeze: conversions and slow work ---------------------------------------------


def _amd64_context(raw: _RawThread) -> Amd64Context:
    r = raw.regs
    return Amd64Context(
        rax=r.rax, rcx=r.rcx, rdx=r.rdx, rbx=r.rbx, rsp=r.rsp, rbp=r.rbp, rsi=r.rsi,
        rdi=r.rdi, r8=r.r8, r9=r.r9, r10=r.r10, r11=r.r11, r12=r.r12, r13=r.r13, r14=r.r14,
        r15=r.r15, rip=r.rip, eflags=r.eflags, cs=r.cs, ds=r.ds, es=r.es, fs=r.fs, gs=r.gs,
        ss=r.ss, fxsave=raw.fpregs,
    )


def _arm64_context(raw: _RawThread) -> Arm64Context:
    r = raw.regs
    x = tuple(getattr(r, f"r{i}") for i in range(31)) if hasattr(r, "r0") else tuple(r.regs)
    v = fpsr = fpcr = None
    if raw.fpregs and len(raw.fpregs) >= 520:
        fp = raw.fpregs
        v = tuple(int.from_bytes(fp[i * 16 : i * 16 + 16], "little") for i in range(32))
        fpsr = int.from_bytes(fp[512:516], "little")
        fpcr = int.from_bytes(fp[516:520], "little")
    return Arm64Context(x=x[:29], fp=x[29], lr=x[30], sp=r.sp, pc=r.pc, cpsr=r.pstate & 0xFFFFFFFF,
                        v=v, fpsr=fpsr or 0, fpcr=fpcr or 0)


def _context(arch: Arch, raw: _RawThread) -> CpuContext:
    return _amd64_context(raw) if arch == Arch.AMD64 else _arm64_context(raw)


def _blank(data: bytes, data_start: int, lo: int, hi: int) -> bytes:
    """Zero the bytes of ``data`` (which starts at ``data_start``) that fall in [lo, hi)."""
    a = max(lo, data_start) - data_start
    b = min(hi, data_start + len(data)) - data_start
    if b <= a:
        return data
    return data[:a] + bytes(b - a) + data[b:]


def _thread_name(pid: int, tid: int) -> Optional[str]:
    raw = procfs.read_file(f"/proc/{pid}/task/{tid}/comm")
    return raw.decode("utf-8", "replace").rstrip("\n") if raw else None


def _system_info(pid: int, arch: Arch) -> tuple[SystemInfo, bytes]:
    u = os.uname()
    nums = [int("".join(ch for ch in part if ch.isdigit()) or 0)
            for part in u.release.split("-")[0].split(".")[:3]]
    nums += [0] * (3 - len(nums))
    cpuinfo = procfs.read_file("/proc/cpuinfo") or b""
    info = procfs.parse_cpuinfo(cpuinfo)
    count = os.cpu_count() or int(info.get("_count", "1") or 1)
    cpu = CpuInfo(count=count)
    if arch == Arch.AMD64:
        family = int(info.get("cpu family", "0") or 0)
        model = int(info.get("model", "0") or 0)
        stepping = int(info.get("stepping", "0") or 0)
        flags = set(info.get("flags", "").split())
        base_family = min(family, 15)
        version = (stepping & 0xF) | (model & 0xF) << 4 | base_family << 8 \
            | ((model >> 4) & 0xF) << 16 | (max(0, family - 15) & 0xFF) << 20
        features = sum(1 << b for f, b in procfs.X86_FEATURE_BITS.items() if f in flags)
        amd = sum(1 << b for f, b in procfs.X86_AMD_FEATURE_BITS.items() if f in flags)
        mhz = int(float(info.get("cpu MHz", "0") or 0))
        max_khz = procfs.read_file("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        max_mhz = int(max_khz) // 1000 if max_khz and max_khz.strip().isdigit() else mhz
        cpu = CpuInfo(count=count, vendor=info.get("vendor_id", ""), family=family, model=model,
                      stepping=stepping, version_information=version,
                      feature_information=features, amd_extended_features=amd,
                      max_mhz=max_mhz, current_mhz=mhz)
    system = SystemInfo(
        arch=arch, os=OS.LINUX, os_major=nums[0], os_minor=nums[1], os_build=nums[2],
        os_version=f"{u.sysname} {u.release} {u.version} {u.machine}", cpu=cpu,
    )
    return system, cpuinfo


def _os_release(pid: int) -> Optional[bytes]:
    for base in (f"/proc/{pid}/root", ""):
        for name in ("/etc/lsb-release", "/etc/os-release", "/usr/lib/os-release"):
            data = procfs.read_file(base + name)
            if data:
                return data
    return None


def _auxv_entries(auxv: bytes) -> dict[int, int]:
    out = {}
    for off in range(0, len(auxv) - 15, 16):
        key = int.from_bytes(auxv[off : off + 8], "little")
        val = int.from_bytes(auxv[off + 8 : off + 16], "little")
        if key == 0:
            break
        out.setdefault(key, val)
    return out


AT_ENTRY = 9
AT_SYSINFO_EHDR = 33


def _module_name(path: str, soname: Optional[str]) -> str:
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    if not soname:
        return path
    d = path.rpartition("/")[0]
    return f"{d}/{soname}" if d else soname


def _file_for(pid: int, m: Mapping) -> list[str]:
    paths = [f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}"]
    if m.path.startswith("/"):
        p = m.path[: -len(" (deleted)")] if m.path.endswith(" (deleted)") else m.path
        paths += [f"/proc/{pid}/root{p}", p]
    return paths


def _modules(pid: int, maps: list[Mapping], auxv: dict[int, int], read: Callable[[int, int], bytes],
             soft: list[SoftError]) -> tuple[list[Module], int]:
    """Modules from the mappings: every readable file mapping at offset 0 that holds an ELF
    image, plus the vDSO. Returns the modules (main first) and the main image's DT_DEBUG."""
    from ...modules.elf import ElfError, file_identity, read_loaded_image

    entry = auxv.get(AT_ENTRY, 0)
    vdso = auxv.get(AT_SYSINFO_EHDR, 0)
    found: list[tuple[Module, int]] = []
    taken: list[tuple[int, int]] = []
    main_debug = 0
    for m in maps:
        is_vdso = m.path == "[vdso]" or (vdso and m.start == vdso)
        if not m.readable or m.offset != 0 or not (m.inode or is_vdso):
            continue
        try:
            if read(m.start, 4) != b"\x7fELF":
                continue
            img = read_loaded_image(read, m.start, m.offset)
        except (ElfError, OSError, ValueError):
            continue
        if any(a < img.base + img.size and img.base < b for a, b in taken):
            continue  # an overlapping image (e.g. a file mapped twice): readers drop overlaps
        build_id, from_hash, soname = img.build_id, False, img.soname
        if build_id is None or soname is None and not is_vdso:
            for candidate in ([] if is_vdso else _file_for(pid, m)):
                try:
                    fid = file_identity(candidate)
                except ElfError:
                    continue
                soname = soname or fid.soname
                if build_id is None:
                    if fid.build_id:
                        build_id = fid.build_id
                    elif fid.text_hash:
                        build_id, from_hash = fid.text_hash, True
                break
        if build_id is None:
            soft.append(SoftError("module-identity",
                                  f"no build id for {m.path or '[vdso]'} (file unreadable)"))
        is_main = bool(entry) and img.base <= entry < img.base + img.size
        path = m.path if m.path and not m.path.startswith("[") else ""
        name = _module_name(path, soname) if path else (soname or "linux-vdso.so.1")
        module = Module(
            path=name, base=img.base, size=img.size,
            identity=ElfBuildId(build_id, from_hash) if build_id else None, is_main=is_main,
        )
        if is_main:
            main_debug = img.debug_addr
        found.append((module, img.dynamic_addr))
        taken.append((img.base, img.base + img.size))
    modules = [mod for mod, _ in found]
    modules.sort(key=lambda mod: (not mod.is_main, mod.base))
    return modules, main_debug


def _dso_debug(read: Callable[[int, int], bytes], debug_addr: int, main: Optional[Module],
               dynamic: bytes, dynamic_addr: int) -> Optional[DsoDebug]:
    """r_debug and the link_map chain (64-bit layouts); None when not available."""
    if not debug_addr:
        return None
    raw = read(debug_addr, 40)
    if len(raw) < 40:
        return None
    version = int.from_bytes(raw[0:4], "little")
    r_map = int.from_bytes(raw[8:16], "little")
    brk = int.from_bytes(raw[16:24], "little")
    ldbase = int.from_bytes(raw[32:40], "little")
    if version < 1:
        return None
    entries = []
    node, seen = r_map, set()
    while node and node not in seen and len(entries) < 4096:
        seen.add(node)
        lm = read(node, 40)
        if len(lm) < 40:
            break
        l_addr, l_name, l_ld, l_next = (int.from_bytes(lm[i : i + 8], "little") for i in (0, 8, 16, 24))
        name = read(l_name, 4096).split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if l_name else ""
        entries.append(LinkMapEntry(l_addr, name, l_ld))
        node = l_next
    return DsoDebug(version=version, brk=brk, ldbase=ldbase, dynamic_addr=dynamic_addr,
                    link_maps=tuple(entries), dynamic=dynamic)


def capture(pid: int, options: Optional[CaptureOptions] = None) -> Snapshot:
    """Snapshot the live process ``pid``. Raises a DumpError subclass with a user message."""
    options = options or CaptureOptions()
    arch = _host_arch()
    target = _open_target(pid)
    _testhooks.pause("opened")
    reader = MemoryReader(target.mm_tid)
    gone = TargetGone(f"process {pid} exited during the dump (its PID now names another "
                      "process, or none); no dump was written")
    try:
        # While threads are stopped, SIGINT/SIGTERM/SIGHUP wait: the release always
        # completes, then the signal is handled (and the dump abandoned).
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        try:
            if not _still_same(target):
                raise gone
            if options.suspend:
                frozen = _freeze_all(target, options, reader)
            else:
                frozen = _capture_running(target, options, reader)
        except ProcessLookupError:
            raise gone from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if not _still_same(target):
            raise gone
        try:
            snapshot = _assemble(target, arch, frozen, options, reader)
        except ProcessLookupError:
            raise gone from None
        if not _still_same(target):
            raise gone
        return snapshot
    finally:
        reader.close()


def _assemble(target: _Target, arch: Arch, frozen: _Frozen, options: CaptureOptions,
              reader: MemoryReader) -> Snapshot:
    pid = target.pid
    soft = list(frozen.soft_errors)
    try:
        stat = _stat(pid)
    except TargetNotFound:
        raise TargetGone(f"process {pid} exited during the dump; no dump was written") from None
    threads = []
    for raw in sorted(frozen.threads, key=lambda r: (r.tid != pid, r.tid)):
        stack = None
        if raw.stack_range and raw.stack:
            data = raw.stack
            if raw.tid == pid and not options.include_environment and stat.env_end > stat.env_start:
                data = _blank(data, raw.stack_range[0], stat.env_start, stat.env_end)
            stack = MemoryRange(raw.stack_range[0], data)
        elif raw.stack_range:
            soft.append(SoftError("stack-unreadable",
                                  f"stack of thread {raw.tid} at 0x{raw.stack_range[0]:x} "
                                  "could not be read"))
        else:
            soft.append(SoftError("stack-unreadable",
                                  f"thread {raw.tid}: stack pointer 0x{_sp_and_tp(raw)[0]:x} "
                                  "is in no mapping"))
        threads.append(Thread(
            tid=raw.tid, context=_context(arch, raw), stack=stack,
            name=_thread_name(pid, raw.tid), thread_pointer=_sp_and_tp(raw)[1],
        ))

    proc_dir = f"/proc/{pid}/task/{target.mm_tid}" if target.mm_tid != pid else f"/proc/{pid}"
    auxv = procfs.read_file(f"{proc_dir}/auxv") or procfs.read_file(f"/proc/{pid}/auxv")
    auxv_map = _auxv_entries(auxv or b"")

    def read(addr: int, size: int) -> bytes:
        return reader.read(addr, size)

    modules, debug_addr = _modules(pid, frozen.maps, auxv_map, read, soft)
    main = modules[0] if modules and modules[0].is_main else None
    dso = None
    if main is not None and debug_addr:
        from ...modules.elf import ElfError, read_loaded_image

        try:
            img = read_loaded_image(read, main.base)
            dynamic = read(img.dynamic_addr, 4096) if img.dynamic_addr else b""
            dynamic = _trim_dynamic(dynamic)
            dso = _dso_debug(read, debug_addr, main, dynamic, img.dynamic_addr)
        except (ElfError, OSError, ProcessLookupError):
            dso = None

    system, cpuinfo = _system_info(pid, arch)
    ticks = os.sysconf("SC_CLK_TCK")
    cmdline = procfs.read_file(f"/proc/{pid}/cmdline") or b""
    process = Process(
        pid=pid,
        create_time=procfs.boot_time() + stat.start_time // ticks,
        user_time=stat.utime / ticks,
        kernel_time=stat.stime / ticks,
        command_line=tuple(a.decode("utf-8", "surrogateescape") for a in cmdline.split(b"\0")[:-1]),
        parent_pid=stat.ppid,
    )
    linux = LinuxFiles(
        cpuinfo=cpuinfo,
        status=procfs.read_file(f"/proc/{pid}/status"),
        lsb_release=_os_release(pid),
        cmdline=cmdline,
        environ=procfs.read_file(f"/proc/{pid}/environ") if options.include_environment else None,
        auxv=auxv,
        maps=frozen.maps_text,
        dso_debug=dso,
    )
    return Snapshot(
        process=process, system=system, threads=tuple(threads), modules=tuple(modules),
        regions=tuple(m.region() for m in frozen.maps), linux=linux,
        soft_errors=tuple(soft), time=frozen.time,
    )


def _trim_dynamic(raw: bytes) -> bytes:
    """_DYNAMIC up to and including its DT_NULL entry."""
    for off in range(0, len(raw) - 15, 16):
        if int.from_bytes(raw[off : off + 8], "little") == 0:
            return raw[: off + 16]
    return raw
