"""LLDB backend: a Snapshot from a process that LLDB's SB API has stopped.

``snapshot_from_process`` works on any stopped SBProcess: one we attached to (``capture``)
and the one a user is debugging (the in-lldb command). Module identity comes from the
image headers in process memory, parsed by the same code as the ptrace backend, so both
backends name and identify modules alike; LLDB's own UUID is the fallback.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from ...errors import (BadInput, DumpError, InvalidTarget, TargetGone, TargetNotFound,
                       TargetPermissionError)
from ...snapshot import (
    Amd64Context,
    Arch,
    Arm64Context,
    CpuContext,
    CpuInfo,
    ElfBuildId,
    ExceptionInfo,
    MachOUuid,
    MemoryRegion,
    Module,
    ModuleIdentity,
    OS,
    Process,
    Snapshot,
    SoftError,
    SystemInfo,
    Thread,
)
from ..options import CaptureOptions, capture_now
from ..referenced import DEFAULT_BUDGET
from ..stacks import StackMap, thread_stack
from ...memory_presets import with_preset_memory
from .loader import ensure_debugserver, import_lldb
from ...platform.linux import procfs
from ...platform.linux.diagnose import explain_eperm
from ...platform.linux.loaded_modules import main_dso_debug, module_name
from ...platform.linux.fullmem import full_ranges
from ...platform.linux.procfs import parse_maps, read_file
from ...platform.linux.procinfo import linux_files, process_of, system_info

_INVALID_ADDRESS = 0xFFFFFFFFFFFFFFFF
_AMD64_GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10",
               "r11", "r12", "r13", "r14", "r15", "rip", "cs", "ds", "es", "fs", "gs", "ss")


@dataclass
class LldbOptions(CaptureOptions):
    pass


def _arch_and_os(triple: str) -> tuple[Arch, OS]:
    cpu = triple.split("-", 1)[0]
    if cpu in ("x86_64", "x86_64h"):
        arch = Arch.AMD64
    elif cpu in ("aarch64", "arm64", "arm64e"):
        arch = Arch.ARM64
    else:
        raise InvalidTarget(f"the LLDB backend does not support {cpu} processes")
    if "linux" in triple:
        system = OS.ANDROID if "android" in triple else OS.LINUX
    elif "apple" in triple or "macos" in triple or "darwin" in triple:
        system = OS.IOS if "ios" in triple else OS.MACOS
    else:
        raise InvalidTarget(f"the LLDB backend does not support {triple} processes")
    return arch, system


class _Process:
    """Thin helpers over an SBProcess."""

    def __init__(self, lldb: Any, process: Any):
        self.lldb = lldb
        self.process = process
        self.target = process.GetTarget()

    def read(self, address: int, size: int) -> bytes:
        """Bytes at ``address``; on a fault, the readable prefix (page by page)."""
        if size <= 0:
            return b""
        err = self.lldb.SBError()
        data = self.process.ReadMemory(address, size, err)
        if err.Success() and data is not None and len(data) == size:
            return bytes(data)
        out = bytearray()
        pos, end = address, address + size
        while pos < end:
            chunk = min(end, (pos // 4096 + 1) * 4096) - pos
            err = self.lldb.SBError()
            data = self.process.ReadMemory(pos, chunk, err)
            if not err.Success() or not data:
                break
            out += data
            pos += len(data)
        return bytes(out)

    def regions(self) -> list[MemoryRegion]:
        out = []
        infos = self.process.GetMemoryRegions()
        info = self.lldb.SBMemoryRegionInfo()
        for i in range(infos.GetSize()):
            if not infos.GetMemoryRegionAtIndex(i, info):
                continue
            start, end = info.GetRegionBase(), info.GetRegionEnd()
            if end <= start or not info.IsMapped():
                continue
            out.append(MemoryRegion(start=start, size=end - start, readable=info.IsReadable(),
                                    writable=info.IsWritable(), executable=info.IsExecutable(),
                                    path=info.GetName() or ""))
        out.sort(key=lambda r: r.start)
        return out


def _registers(frame: Any) -> dict[str, Any]:
    regs: dict[str, Any] = {}
    for reg_set in frame.GetRegisters():
        for reg in reg_set:
            regs.setdefault(reg.GetName(), reg)
    return regs


def _u(regs: dict[str, Any], name: str) -> int:
    v = regs.get(name)
    return v.GetValueAsUnsigned() if v is not None else 0


def _raw(lldb: Any, regs: dict[str, Any], name: str, size: int) -> bytes:
    v = regs.get(name)
    if v is None:
        return bytes(size)
    data = v.GetData()
    err = lldb.SBError()
    raw = data.ReadRawData(err, 0, data.GetByteSize()) if data.GetByteSize() else b""
    return (bytes(raw or b"") + bytes(size))[:size]


def _abridged_tag(ftag: int) -> int:
    """FXSAVE keeps an 8-bit 'valid' mask; LLDB may show the full 16-bit x87 tag word."""
    if ftag <= 0xFF:
        return ftag
    return sum(1 << i for i in range(8) if (ftag >> (2 * i)) & 3 != 3)


def _fxsave(lldb: Any, regs: dict[str, Any]) -> Optional[bytes]:
    if "fctrl" not in regs or "xmm0" not in regs:
        return None
    img = bytearray(512)
    img[0:2] = _u(regs, "fctrl").to_bytes(2, "little")
    img[2:4] = _u(regs, "fstat").to_bytes(2, "little")
    img[4] = _abridged_tag(_u(regs, "ftag"))
    img[6:8] = _u(regs, "fop").to_bytes(2, "little")
    fip = _u(regs, "fip") if "fip" in regs else _u(regs, "fioff") | _u(regs, "fiseg") << 32
    fdp = _u(regs, "fdp") if "fdp" in regs else _u(regs, "fooff") | _u(regs, "foseg") << 32
    img[8:16] = fip.to_bytes(8, "little")
    img[16:24] = fdp.to_bytes(8, "little")
    img[24:28] = _u(regs, "mxcsr").to_bytes(4, "little")
    img[28:32] = _u(regs, "mxcsrmask").to_bytes(4, "little")
    for i in range(8):
        img[32 + 16 * i : 32 + 16 * i + 10] = _raw(lldb, regs, f"st{i}", 10)
    for i in range(16):
        img[160 + 16 * i : 176 + 16 * i] = _raw(lldb, regs, f"xmm{i}", 16)
    return bytes(img)


def _amd64_context(lldb: Any, regs: dict[str, Any]) -> Amd64Context:
    values: dict[str, Any] = {n: _u(regs, n) for n in _AMD64_GPRS}
    return Amd64Context(**values, eflags=_u(regs, "rflags"), fxsave=_fxsave(lldb, regs))


def _arm64_context(lldb: Any, regs: dict[str, Any]) -> Arm64Context:
    v = None
    if "v0" in regs:
        v = tuple(int.from_bytes(_raw(lldb, regs, f"v{i}", 16), "little") for i in range(32))
    return Arm64Context(
        x=tuple(_u(regs, f"x{i}") for i in range(29)), fp=_u(regs, "fp") or _u(regs, "x29"),
        lr=_u(regs, "lr") or _u(regs, "x30"), sp=_u(regs, "sp"), pc=_u(regs, "pc"),
        cpsr=_u(regs, "cpsr"), v=v, fpsr=_u(regs, "fpsr"), fpcr=_u(regs, "fpcr"),
    )


def _thread_pointer(arch: Arch, regs: dict[str, Any]) -> int:
    if arch == Arch.AMD64:
        return _u(regs, "fs_base") or _u(regs, "gs_base")
    return _u(regs, "tpidr") or _u(regs, "tpidr_el0")


def _modules(proc: _Process, arch_os: tuple[Arch, OS], soft: list[SoftError]) -> list[Module]:
    from ...binfmt.elf import ElfError, read_loaded_image

    target = proc.target
    out: list[Module] = []
    # On Linux, name modules by their mapping (as the ptrace backend does): LLDB reports
    # the loader's name, which may run through symlinks (/lib -> /usr/lib).
    mapped_paths = {r.start: r.path for r in proc.regions() if r.path.startswith("/")}
    taken: list[tuple[int, int]] = []
    for index in range(target.GetNumModules()):
        m = target.GetModuleAtIndex(index)
        header = m.GetObjectFileHeaderAddress().GetLoadAddress(target)
        if header in (_INVALID_ADDRESS, 0):
            continue
        path = m.GetFileSpec().fullpath or m.GetFileSpec().GetFilename() or ""
        if arch_os[1] in (OS.LINUX, OS.ANDROID) and header in mapped_paths:
            path = mapped_paths[header]
        lldb_uuid = bytes.fromhex(m.GetUUIDString().replace("-", "")) if m.GetUUIDString() else b""
        identity: Optional[ModuleIdentity] = None
        base, size = header, 0
        if arch_os[1] in (OS.LINUX, OS.ANDROID):
            try:
                img = read_loaded_image(proc.read, header)
                base, size = img.base, img.size
                soname = img.soname
                build_id = img.build_id or None
                identity = ElfBuildId(build_id) if build_id else None
                if identity is None:
                    identity = _text_hash_identity(path, lldb_uuid)
            except ElfError:
                soname = None
            name = (module_name(path, soname) if path and not path.startswith("[")
                    else (soname or "linux-vdso.so.1"))
        else:
            from ...binfmt.macho import MachOError, image_info

            try:
                info = image_info(proc.read, header)
                size = info.size
                uuid = info.uuid or lldb_uuid
            except MachOError:
                uuid = lldb_uuid
            identity = MachOUuid(uuid) if len(uuid) == 16 else None
            name = path
        if not size:
            size = _section_span(m, target, header)
        if identity is None:
            soft.append(SoftError("module-identity", f"no build id or UUID for {name}"))
        if size <= 0 or any(a < base + size and base < b for a, b in taken):
            continue
        taken.append((base, base + size))
        out.append(Module(path=name, base=base, size=size, identity=identity, is_main=not out))
    # Main executable first, then by address (the ptrace backend's order).
    out.sort(key=lambda mod: (not mod.is_main, mod.base))
    return out


def _text_hash_identity(path: str, lldb_uuid: bytes) -> Optional[ElfBuildId]:
    """The identity of an ELF image without a GNU build id (Go's static binaries have
    none): Breakpad's hash of the file's .text, as the ptrace backend and dump_syms use.
    LLDB's own UUID for such a file is a 4-byte CRC that no symbol store knows; it is the
    last resort."""
    from ...binfmt.elf import ElfError, file_identity

    if path.startswith("/"):
        try:
            fid = file_identity(path)
        except ElfError:
            fid = None
        if fid is not None and fid.build_id:
            return ElfBuildId(fid.build_id)
        if fid is not None and fid.text_hash:
            return ElfBuildId(fid.text_hash, from_text_hash=True)
    return ElfBuildId(lldb_uuid) if lldb_uuid else None


def _section_span(m: Any, target: Any, header: int) -> int:
    hi = header
    for i in range(m.GetNumSections()):
        sec = m.GetSectionAtIndex(i)
        addr = sec.GetLoadAddress(target)
        if addr != _INVALID_ADDRESS and addr >= header:
            hi = max(hi, addr + sec.GetByteSize())
    return (hi - header + 4095) & ~4095


def _system_info(arch: Arch, os_: OS) -> tuple[SystemInfo, Optional[bytes]]:
    if os_ in (OS.LINUX, OS.ANDROID) and sys.platform.startswith("linux"):

        return system_info(arch)
    if os_ == OS.MACOS and sys.platform == "darwin":
        release = platform.mac_ver()[0] or "0.0.0"
        nums = [int(x) for x in (release.split(".") + ["0", "0"])[:3]]
        build = os.popen("sysctl -n kern.osversion 2>/dev/null").read().strip()
        return SystemInfo(arch=arch, os=os_, os_major=nums[0], os_minor=nums[1],
                          os_build=nums[2], os_version=f"macOS {release} {build}".strip(),
                          cpu=CpuInfo(count=os.cpu_count() or 1)), None
    return SystemInfo(arch=arch, os=os_, cpu=CpuInfo(count=os.cpu_count() or 1)), None


_SIGNAL_STOP = 5  # lldb.eStopReasonSignal
_EXCEPTION_STOP = 6  # lldb.eStopReasonException
# SIGSTOP SIGTSTP SIGTTIN SIGTTOU: how LLDB attaches and interrupts, not a crash.
_STOP_SIGNALS = {OS.LINUX: {19, 20, 21, 22}, OS.ANDROID: {19, 20, 21, 22},
                 OS.MACOS: {17, 18, 21, 22}, OS.IOS: {17, 18, 21, 22}}


def exception_of(lldb: Any, process: Any, os_: OS) -> Optional[ExceptionInfo]:
    """The signal or exception a stopped thread is sitting on, if any."""
    candidates = [process.GetSelectedThread()] + list(process)
    for th in candidates:
        if not th.IsValid():
            continue
        reason = th.GetStopReason()
        if reason == _SIGNAL_STOP:
            signo = th.GetStopReasonDataAtIndex(0)
            if signo in _STOP_SIGNALS.get(os_, set()):
                continue
            code = address = 0
            try:
                si = th.GetSiginfo()
                if si.IsValid():
                    code = si.GetChildMemberWithName("si_code").GetValueAsSigned() & 0xFFFFFFFF
                    fault = si.GetValueForExpressionPath("._sifields._sigfault.si_addr")
                    if fault.IsValid() and signo in (4, 7, 8, 11):  # SIGILL SIGBUS SIGFPE SIGSEGV
                        address = fault.GetValueAsUnsigned()
            except AttributeError:  # older LLDB without SBThread.GetSiginfo
                pass
            return ExceptionInfo(thread_id=th.GetThreadID(), code=signo, flags=code,
                                 address=address)
        if reason == _EXCEPTION_STOP:
            data = [th.GetStopReasonDataAtIndex(i) for i in range(th.GetStopReasonDataCount())]
            return ExceptionInfo(thread_id=th.GetThreadID(), code=data[0] if data else 0,
                                 flags=data[1] if len(data) > 1 else 0,
                                 address=data[2] if len(data) > 2 else 0)
    return None


_NEVER_DUMPED = ("[vvar]", "[vsyscall]", "[vvar_vclock]")


def _with_memory(snapshot: Snapshot, proc: "_Process", memory: str, max_referenced: int,
                 on_short_read: Optional[Callable[[int, int], None]]) -> Snapshot:
    """Extra memory by the chosen preset (memory_presets.py)."""

    def full() -> list[tuple[int, int]]:
        pid = snapshot.process.pid
        if snapshot.linux is not None and os.path.exists(f"/proc/{pid}/smaps"):
            # On Linux, the same selection as the ptrace backend (and the kernel).
            maps = parse_maps(read_file(f"/proc/{pid}/maps") or b"")
            return full_ranges(pid, maps, lambda addr: proc.read(addr, 4))
        return [(r.start, r.end) for r in snapshot.regions
                if r.readable and r.path not in _NEVER_DUMPED]

    return with_preset_memory(snapshot, memory, read=proc.read, full_ranges=full,
                              max_referenced=max_referenced, on_short_read=on_short_read)


def snapshot_from_process(lldb: Any, process: Any, *, include_environment: bool = False,
                          with_exception: bool = False, memory: str = "referenced",
                          max_referenced: int = DEFAULT_BUDGET,
                          on_short_read: Optional[Callable[[int, int], None]] = None,
                          python: bool = True) -> Snapshot:
    """Snapshot a process that LLDB holds stopped. Nothing here resumes it. With
    ``memory="full"`` the memory is read while the snapshot is written, so the process
    must stay stopped until then."""
    proc = _Process(lldb, process)
    pid = process.GetProcessID()
    arch, os_ = _arch_and_os(proc.target.GetTriple() or "")
    soft: list[SoftError] = []
    regions = proc.regions()
    stack_map = StackMap(regions)
    on_linux = os_ in (OS.LINUX, OS.ANDROID) and os.path.exists(f"/proc/{pid}")
    env_range = (0, 0)
    stat = None
    if on_linux:

        raw = procfs.read_file(f"/proc/{pid}/stat")
        if raw:
            stat = procfs.parse_stat(raw)
            env_range = (stat.env_start, stat.env_end)
    threads = []
    # Registers first: every thread's SP bounds the stacks that share a mapping (Go).
    seen = []
    for index, th in enumerate(process):
        regs = _registers(th.GetFrameAtIndex(0))
        context: CpuContext = (_amd64_context(lldb, regs) if arch == Arch.AMD64
                               else _arm64_context(lldb, regs))
        seen.append((index, th, context, _thread_pointer(arch, regs)))
    stack_map.note_stack_pointers(context.sp for _, _, context, _ in seen)
    go_bounds = {}
    if on_linux and arch == Arch.AMD64:
        # Go keeps each goroutine's stack bounds in its g (gostacks.py).
        from ..gostacks import go_stack_bounds

        shared = [(i, c.sp, tp) for i, th, c, tp in seen
                  if stack_map.shared(c.sp, th.GetThreadID() == pid, tp)]
        found = go_stack_bounds(lambda ranges: [proc.read(a, n) if n else b"" for a, n in ranges],
                                [(sp, tp) for _, sp, tp in shared])
        go_bounds = {i: b for (i, _, _), b in zip(shared, found) if b is not None}
    for index, th, context, tp in seen:
        tid = th.GetThreadID()
        is_main = tid == pid if on_linux else index == 0
        rng = stack_map.range(context.sp, is_main, tp, go_bounds.get(index))
        data = proc.read(rng[0], rng[1] - rng[0]) if rng else None
        stack = thread_stack(tid, context.sp, rng, data, soft,
                             hide=env_range if is_main and not include_environment else None)
        threads.append(Thread(tid=tid, context=context, stack=stack, name=th.GetName() or None,
                              thread_pointer=tp))
    threads.sort(key=lambda t: (t.tid != pid if on_linux else False))
    modules = _modules(proc, (arch, os_), soft)
    system, cpuinfo = _system_info(arch, os_)
    process_info = Process(pid=pid)
    linux = None
    if on_linux and stat is not None:

        process_info = process_of(pid, stat)
        main = modules[0] if modules else None
        linux = linux_files(pid, cpuinfo=cpuinfo or b"",
                            auxv=procfs.read_file(f"/proc/{pid}/auxv"),
                            maps=procfs.read_file(f"/proc/{pid}/maps") or b"",
                            include_environment=include_environment,
                            dso=main_dso_debug(proc.read, main))
    snapshot = Snapshot(
        process=process_info, system=system, threads=tuple(threads), modules=tuple(modules),
        regions=tuple(regions), exception=exception_of(lldb, process, os_) if with_exception else None,
        linux=linux, soft_errors=tuple(soft), time=int(time.time()),
    )
    snapshot = _with_memory(snapshot, proc, memory, max_referenced, on_short_read)
    return _with_python(snapshot, proc, keep_memory=memory != "full") if python else snapshot


def _with_python(snapshot: Snapshot, proc: "_Process", keep_memory: bool) -> Snapshot:
    """CPython stacks, read while LLDB holds the process stopped (so they are exact)."""
    from ...python.capture import capture_python, with_python

    return with_python(snapshot, lambda: capture_python(snapshot, proc, ran=False),
                       keep_memory=keep_memory, say_missing=False)


@contextmanager
def capture_session(pid: int, options: Optional[LldbOptions] = None) -> Iterator[Snapshot]:
    """Attach with LLDB and yield the snapshot; detach (the process runs on) when the
    ``with`` block ends, so that a full dump's memory is read while still attached."""
    options = options or LldbOptions()
    if not options.suspend:
        raise BadInput("the LLDB backend cannot capture a process without stopping it "
                       "(LLDB stops every thread to attach); drop -r"
                       + (", or use --backend ptrace" if sys.platform.startswith("linux") else ""))
    if pid == os.getpid():
        raise InvalidTarget(f"PID {pid} is generate_dump itself; give the PID of another process")
    if sys.platform.startswith("linux") and not os.path.exists(f"/proc/{pid}"):
        raise TargetNotFound(f"no process with PID {pid}")
    lldb = import_lldb()
    ensure_debugserver()
    debugger = lldb.SBDebugger.Create(False)
    debugger.SetAsync(False)
    try:
        target = debugger.CreateTarget("")
        err = lldb.SBError()
        process = target.AttachToProcessWithID(debugger.GetListener(), pid, err)
        if not err.Success() or not process.IsValid():
            raise _attach_error(pid, err.GetCString() or "unknown error")
        try:
            yield snapshot_from_process(
                lldb, process, include_environment=options.include_environment,
                memory=options.memory, max_referenced=options.max_referenced,
                on_short_read=options.on_short_read, python=options.python)
        finally:
            process.Detach()
    finally:
        lldb.SBDebugger.Destroy(debugger)


def capture(pid: int, options: Optional[LldbOptions] = None) -> Snapshot:
    """Attach, snapshot, detach (not for full dumps: their memory is read while writing)."""
    return capture_now(capture_session, pid, options or LldbOptions())


def _attach_error(pid: int, message: str) -> DumpError:
    lowered = message.lower()
    if sys.platform.startswith("linux"):
        if not os.path.exists(f"/proc/{pid}"):
            return TargetGone(f"process {pid} exited before LLDB could attach")
        if "permission" in lowered or "not permitted" in lowered or "eperm" in lowered \
                or "operation not permitted" in lowered:

            return TargetPermissionError(explain_eperm(pid))
    elif "no such process" in lowered:
        return TargetNotFound(f"no process with PID {pid}")
    return DumpError(f"LLDB could not attach to process {pid}: {message}")
