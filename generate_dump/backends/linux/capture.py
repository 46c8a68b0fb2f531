"""Capture a live Linux process into a Snapshot with ptrace.

The target is frozen only for what must be consistent: every thread is seized
(PTRACE_SEIZE, which sends no signal) and interrupted, its registers are copied, all
stacks are read in a few batched process_vm_readv calls, and every thread is detached.
Everything else (module identity, /proc files, system information, conversions) happens
after the process runs again. If the dumper dies at any point the kernel detaches it and,
since no SIGSTOP was ever sent, the target simply runs on.
"""

from __future__ import annotations

import errno
import os
import platform
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, FrozenSet, Iterator, Optional

from ... import _testhooks
from ...errors import InvalidTarget, TargetGone, TargetNotFound, TargetPermissionError
from ...snapshot import (
    Amd64Context,
    Arch,
    Arm64Context,
    CpuContext,
    Snapshot,
    SoftError,
    Thread,
)
from ...platform.linux import procfs
from ...platform.linux.diagnose import explain_eperm, tracer_message, tracer_of
from ..options import CaptureOptions as BaseOptions, capture_now
from ..stacks import StackMap, thread_stack
from ...memory_presets import with_preset_memory
from ...platform.linux.loaded_modules import main_dso_debug, modules_from_maps
from .memory import MemoryReader
from ...platform.linux.procfs import Mapping
from ...platform.linux.procinfo import auxv_entries, linux_files, process_of, system_info, thread_name

STOP_TIMEOUT = 2.0
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@dataclass
class CaptureOptions(BaseOptions):
    stop_timeout: float = STOP_TIMEOUT
    # For a process we already trace (generate_dump run): makes the freezer that borrows
    # our own tracees instead of seizing them.
    freezer_factory: Optional[Callable[..., "Freezer"]] = None
    # Threads left running, never seized (the pytest plugin's helper freezes pytest except
    # the plugin's own threads). The dump has no record of them but a soft error.
    exclude_tids: FrozenSet[int] = frozenset()
    # Never collect the exit of the process itself (the thread-group leader), only stops:
    # for a process whose real parent is the caller's own process, where that exit status
    # belongs to the code that started the child (pytest dumping its test's children).
    keep_leader_exit: bool = False
    # Called with the tids held stopped once registers and stacks are copied, before any
    # thread runs again: the caller does what needs the process frozen, then returns.
    while_frozen: Optional[Callable[[list], None]] = None


@dataclass
class _RawThread:
    """What is copied from a stopped thread; converted to the snapshot after resume.

    While frozen only ``slot`` (where its registers sit in the freezer's RegisterBank),
    ``sp`` and ``tp`` are known; ``regs``/``fpregs``/``tls`` are filled after release."""

    tid: int
    slot: int
    sp: int
    tp: int
    regs: Any = None  # python-ptrace user_regs_struct
    fpregs: Optional[bytes] = None
    tls: int = 0
    stack_range: Optional[tuple[int, int]] = None
    stack: bytes = b""
    runtime_bounds: Optional[tuple[int, int]] = None  # Go's g.stack, when it holds SP


@dataclass
class _Frozen:
    threads: list[_RawThread] = field(default_factory=list)
    maps_text: bytes = b""
    maps: list[Mapping] = field(default_factory=list)
    soft_errors: list[SoftError] = field(default_factory=list)
    time: int = 0
    group_stopped: bool = False
    # Python threads' innermost frames as seen while frozen (see python.capture).
    python_marks: dict = field(default_factory=dict)


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


def _thread_count(pid: int) -> int:
    """num_threads from /proc/PID/stat (-1 if unreadable)."""
    raw = procfs.read_file(f"/proc/{pid}/stat")
    if not raw:
        return -1
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[17]) if len(fields) > 17 else -1


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


# --- the freeze ------------------------------------------------------------------------------


def _read_maps(target: _Target) -> tuple[bytes, list[Mapping]]:
    text = procfs.read_file(f"/proc/{target.pid}/task/{target.mm_tid}/maps")
    if text is None:
        text = procfs.read_file(f"/proc/{target.pid}/maps") or b""
    return text, procfs.parse_maps(text)


class Freezer:
    """Seizes threads and always lets them go, whatever happens in between."""

    def __init__(self, target: _Target, options: CaptureOptions):
        from . import ptrace_ops

        self.pt = ptrace_ops
        self.target = target
        self.options = options
        self.seized: dict[int, int] = {}  # tid -> signal to re-deliver on detach
        self.skip: set[int] = set(options.exclude_tids)  # + zombies, vanished, unstoppable
        self.soft: list[SoftError] = [
            SoftError("thread-excluded", f"thread {tid} was left running (not in the dump)")
            for tid in sorted(options.exclude_tids)]
        # Whose exit is left to the real parent (see CaptureOptions.keep_leader_exit).
        self.keep_exit_of = target.pid if options.keep_leader_exit else None
        self.group_stopped = False
        self.bank = ptrace_ops.RegisterBank()
        self._early_status: Optional[tuple[int, int]] = None

    def seize(self, tid: int) -> bool:
        err = self.pt.call(self.pt.PTRACE_SEIZE, tid)
        if err:
            if err == errno.EPERM:
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
                                       f"{os.strerror(err)}"))
            return False
        self.seized[tid] = 0
        self.pt.call(self.pt.PTRACE_INTERRUPT, tid)  # if it exited, wait_stop will tell
        return True

    def wait(self, tid: int, deadline: float) -> bool:
        # Usually the thread has stopped already: one waitpid, no helper objects.
        reap = tid != self.keep_exit_of
        try:
            if reap:
                got, status = os.waitpid(tid, os.WNOHANG | self.pt.WALL)
            else:
                got, status = self.pt.poll_status(tid, reap=False)
        except ChildProcessError:
            got, status = 0, 0
        if got == tid and os.WIFSTOPPED(status) and status >> 16 == self.pt.PTRACE_EVENT_STOP:
            if os.WSTOPSIG(status) in self.pt.STOP_SIGNALS:
                self.group_stopped = True
            return True
        if got == tid:  # another kind of stop, or an exit: let the careful path decide
            self._early_status = (tid, status)
        try:
            res = self.pt.wait_stop(tid, deadline, self._take_early(tid), reap=reap)
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

    def _take_early(self, tid: int):
        early, self._early_status = self._early_status, None
        return early[1] if early and early[0] == tid else None

    def copy_registers(self, tid: int) -> Optional[_RawThread]:
        slot = self.bank.fill(tid)
        if slot < 0:
            self.soft.append(SoftError("thread-vanished", f"thread {tid} exited during the dump"))
            return None
        sp, tp = self.bank.sp_and_tp(slot)
        return _RawThread(tid, slot, sp, tp)

    def materialize(self, raws: list[_RawThread]) -> None:
        """Turn the copied register bytes into register structures (after release)."""
        for raw in raws:
            raw.regs = self.bank.regs(raw.slot)
            raw.fpregs = self.bank.fpregs(raw.slot)
            raw.tls = self.bank.tls(raw.slot)

    def release(self, tid: int) -> None:
        sig = self.seized.pop(tid, None)
        if sig is None:
            return
        # An error means the thread is gone; the kernel has cleaned up.
        self.pt.call(self.pt.PTRACE_DETACH, tid, 0, sig)

    def release_all(self) -> None:
        for tid in list(self.seized):
            self.release(tid)


def _runtime_bounds(raws: list[_RawThread], stack_map: StackMap, main_tid: int,
                    reader: MemoryReader, every: bool = False) -> dict[int, tuple[int, int]]:
    """Stack bounds a language runtime records for threads whose stacks share a mapping
    (Go's g.stack on amd64): two batched reads, only when such threads exist (``every``:
    for each thread, when the other threads' SPs are not known yet)."""
    shared = [r for r in raws if every or stack_map.shared(r.sp, r.tid == main_tid, r.tp)]
    if not shared or _host_arch() != Arch.AMD64:
        return {}
    from ..gostacks import go_stack_bounds

    found = go_stack_bounds(reader.read_many, [(r.sp, r.tp) for r in shared])
    return {r.tid: b for r, b in zip(shared, found) if b is not None}


def _assign_stacks(raws: list[_RawThread], stack_map: StackMap, main_tid: int,
                   reader: MemoryReader) -> None:
    stack_map.note_stack_pointers(r.sp for r in raws)
    bounds = _runtime_bounds(raws, stack_map, main_tid, reader)
    for raw in raws:
        raw.stack_range = stack_map.range(raw.sp, raw.tid == main_tid, raw.tp,
                                          bounds.get(raw.tid))


def _freeze_all(target: _Target, options: CaptureOptions, reader: MemoryReader,
                fz: "Freezer", python_states=None) -> _Frozen:
    """Stop every thread and copy registers and stacks. The threads stay stopped: the
    caller releases them (at once, or after writing a full dump); on failure they are
    released here."""
    frozen = _Frozen()
    maps_text, maps = _read_maps(target)
    stack_map = StackMap(maps)
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
            # Listing a thousand tasks costs a millisecond: when the kernel's thread count
            # equals the threads we hold stopped (and they can no longer start any), no new
            # thread can exist. Otherwise list again.
            if _thread_count(target.pid) == len(fz.seized):
                break
        if not raws:
            raise TargetGone(f"process {target.pid} exited during the dump")
        frozen.time = int(time.time())
        # Stacks: the map read before the freeze serves unless a thread is new to it.
        _assign_stacks(raws, stack_map, target.pid, reader)
        if any(r.stack_range is None for r in raws):
            maps_text, maps = _read_maps(target)
            _assign_stacks(raws, StackMap(maps), target.pid, reader)
        with_stack = [r for r in raws if r.stack_range]
        _testhooks.fail("stacks")
        datas = reader.read_many([(a, b - a) for a, b in (r.stack_range for r in with_stack
                                                          if r.stack_range)],
                                 views=True)
        for r, data in zip(with_stack, datas):
            r.stack = data
        if python_states is not None:
            from ...python.capture import frozen_marks

            frozen.python_marks = frozen_marks(python_states, reader.read_many)
        _testhooks.pause("frozen")
        _testhooks.fail("frozen")
    except BaseException:
        fz.release_all()
        raise
    frozen.threads = raws
    frozen.maps_text, frozen.maps = maps_text, maps
    frozen.soft_errors.extend(fz.soft)
    frozen.group_stopped = fz.group_stopped
    return frozen


def _capture_running(target: _Target, options: CaptureOptions, reader: MemoryReader) -> _Frozen:
    """--no-suspend: pause one thread at a time, only for its own registers and stack."""
    fz = Freezer(target, options)
    frozen = _Frozen()
    maps_text, maps = _read_maps(target)
    stack_map = StackMap(maps)
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
                    sp, tp = raw.sp, raw.tp
                    raw.runtime_bounds = _runtime_bounds([raw], stack_map, target.pid,
                                                         reader, every=True).get(tid)
                    raw.stack_range = stack_map.range(sp, tid == target.pid, tp,
                                                      raw.runtime_bounds)
                    if raw.stack_range is None:
                        maps_text, maps = _read_maps(target)
                        stack_map = StackMap(maps)
                        raw.stack_range = stack_map.range(sp, tid == target.pid, tp)
                    if raw.stack_range:
                        a, b = raw.stack_range
                        _testhooks.fail("stacks")
                        raw.stack = reader.read(a, b - a)
                    frozen.threads.append(raw)
                finally:
                    fz.release(tid)
    finally:
        fz.release_all()
    if not frozen.threads:
        raise TargetGone(f"process {target.pid} exited during the dump")
    _trim_shared_stacks(frozen.threads, stack_map, target.pid)
    fz.materialize(frozen.threads)
    frozen.time = int(time.time())
    frozen.maps_text, frozen.maps = maps_text, maps
    frozen.soft_errors.extend(fz.soft)
    return frozen


def _trim_shared_stacks(raws: list[_RawThread], stack_map: StackMap, main_tid: int) -> None:
    """-r copies each thread before the next one's stack pointer is known: now that all
    are, cut stacks that share a mapping to their runtime's bounds or where the next
    thread's stack begins (the range StackMap gives with every SP known lies within the
    one copied)."""
    stack_map.note_stack_pointers(r.sp for r in raws)
    for raw in raws:
        if not raw.stack_range:
            continue
        rng = stack_map.range(raw.sp, raw.tid == main_tid, raw.tp, raw.runtime_bounds)
        a, b = raw.stack_range
        if rng is not None and a <= rng[0] < rng[1] <= b and rng != (a, b):
            raw.stack_range = rng
            raw.stack = raw.stack[rng[0] - a: rng[1] - a]


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


@contextmanager
def capture_session(pid: int, options: Optional[CaptureOptions] = None) -> Iterator[Snapshot]:
    """Snapshot the live process ``pid``; raises a DumpError subclass with a user message.

    The process is frozen only while registers and stacks are copied, except for
    ``memory="full"`` without ``-r``: then it stays frozen until the ``with`` block ends,
    because the snapshot's memory is read while the dump is written (a consistent copy,
    like a core file)."""
    options = options or CaptureOptions()
    arch = _host_arch()
    target = _open_target(pid)
    _testhooks.pause("opened")
    reader = MemoryReader(target.mm_tid)
    gone = TargetGone(f"process {pid} exited during the dump (its PID now names another "
                      "process, or none); no dump was written")
    fz = (options.freezer_factory or Freezer)(target, options)
    hold = options.memory == "full" and options.suspend
    python_runtime = _python_runtime(target, reader) if options.python else None
    python_states = None
    if python_runtime is not None and options.suspend:
        from ...python.capture import states_before_freeze

        python_states = states_before_freeze(reader, python_runtime)
    try:
        # While threads are stopped, SIGINT/SIGTERM/SIGHUP wait: the release always
        # completes, then the signal is handled (and the dump abandoned).
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        try:
            if not _still_same(target):
                raise gone
            if options.suspend:
                frozen = _freeze_all(target, options, reader, fz, python_states)
                if options.while_frozen is not None:
                    options.while_frozen([r.tid for r in frozen.threads])
                if not hold:
                    fz.release_all()
                fz.materialize(frozen.threads)
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
            snapshot = _add_memory(snapshot, target, frozen, options, reader)
            if options.python:
                ran = not (hold or (options.suspend and frozen.group_stopped))
                snapshot = _add_python(snapshot, reader, python_runtime, python_states,
                                       frozen, ran, keep_memory=options.memory != "full")
        except ProcessLookupError:
            raise gone from None
        if not hold and not _still_same(target):
            raise gone
        yield snapshot
    finally:
        fz.release_all()
        reader.close()


def capture(pid: int, options: Optional[CaptureOptions] = None) -> Snapshot:
    """Snapshot ``pid`` (everything copied before it returns; not for full dumps)."""
    return capture_now(capture_session, pid, options or CaptureOptions())


def _add_memory(snapshot: Snapshot, target: _Target, frozen: _Frozen, options: CaptureOptions,
                reader: MemoryReader) -> Snapshot:
    """Extra memory by the chosen preset (memory_presets.py); a full dump holds what the
    kernel would put in a core file (fullmem.py)."""

    def full() -> list[tuple[int, int]]:
        from ...platform.linux.fullmem import full_ranges

        return full_ranges(target.pid, frozen.maps, lambda addr: reader.read(addr, 4))

    return with_preset_memory(snapshot, options.memory, read=reader.read, full_ranges=full,
                              max_referenced=options.max_referenced,
                              read_many=reader.read_many, readinto=reader.readinto,
                              on_short_read=options.on_short_read)


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
        hide = None
        if raw.tid == pid and not options.include_environment:
            hide = (stat.env_start, stat.env_end)
        # bytes(): the stack is a view into the freeze's read buffer until now.
        stack = thread_stack(raw.tid, raw.sp, raw.stack_range,
                             bytes(raw.stack) if raw.stack else None, soft, hide=hide)
        threads.append(Thread(
            tid=raw.tid, context=_context(arch, raw), stack=stack,
            name=thread_name(pid, raw.tid), thread_pointer=raw.tp,
        ))

    proc_dir = f"/proc/{pid}/task/{target.mm_tid}" if target.mm_tid != pid else f"/proc/{pid}"
    auxv = procfs.read_file(f"{proc_dir}/auxv") or procfs.read_file(f"/proc/{pid}/auxv")

    def read(addr: int, size: int) -> bytes:
        return reader.read(addr, size)

    _testhooks.fail("modules")
    modules = modules_from_maps(pid, frozen.maps, auxv_entries(auxv or b""), read, soft)
    main = modules[0] if modules and modules[0].is_main else None
    system, cpuinfo = system_info(arch)
    process = process_of(pid, stat)
    linux = linux_files(pid, cpuinfo=cpuinfo, auxv=auxv, maps=frozen.maps_text,
                        include_environment=options.include_environment,
                        dso=main_dso_debug(read, main))
    perf_map = _perf_map(pid, threads, soft)
    return Snapshot(
        process=process, system=system, threads=tuple(threads), modules=tuple(modules),
        regions=tuple(m.region() for m in frozen.maps), linux=linux,
        soft_errors=tuple(soft), time=frozen.time, perf_map=perf_map,
    )


def _perf_map(pid: int, threads: list[Thread], soft: list[SoftError]) -> Optional[bytes]:
    """The lines of the process's JIT symbol map that its stacks point into. Read once the
    process runs again (a held full dump reads it with everything else, still frozen: the
    runtime cannot be half-way through a line then)."""
    from ... import perfmap
    from ...platform.linux.perfmap_file import read_perf_map

    found = read_perf_map(pid)
    if found is None:
        return None
    if found.problem:
        soft.append(SoftError("perf-map-ignored", f"{found.path}: {found.problem}; "
                                                  "JIT frames stay unnamed"))
        return None
    if found.skipped:
        soft.append(SoftError("perf-map-cut", f"{found.path} has {found.size} bytes; only "
                                              f"its last {found.size - found.skipped} were read"))
    kept, cut = perfmap.for_dump(found.data, threads)
    if cut:
        soft.append(SoftError("perf-map-cut", f"{found.path}: the lines naming code on the "
                                              f"stacks pass {perfmap.STORE_LIMIT} bytes; "
                                              "only the last ones are kept"))
    return kept or None


# --- Python --------------------------------------------------------------------------------


def _python_runtime(target: _Target, reader: MemoryReader):
    """Before the freeze: where CPython's _PyRuntime is, from the maps and the module files
    (None for a process that runs no CPython, or one without symbols)."""
    from ...python.capture import runtime_before_freeze
    from ...snapshot import Module

    _, maps = _read_maps(target)
    try:
        exe = os.readlink(f"/proc/{target.pid}/exe")
    except OSError:
        exe = ""
    modules, seen = [], set()
    for m in maps:
        if m.path.startswith("/") and m.offset == 0 and m.path not in seen:
            seen.add(m.path)
            modules.append(Module(path=m.path, base=m.start, size=m.end - m.start,
                                  is_main=m.path == exe))
    return runtime_before_freeze(modules, reader)


def _add_python(snapshot: Snapshot, reader: MemoryReader, runtime, states, frozen: _Frozen,
                ran: bool, keep_memory: bool = True) -> Snapshot:
    """The decoded Python stacks and the memory they came from (python.capture)."""
    from ...python.capture import capture_python, with_python

    return with_python(snapshot, lambda: capture_python(snapshot, reader, runtime,
                                                        frozen.python_marks, ran, states),
                       keep_memory=keep_memory)
