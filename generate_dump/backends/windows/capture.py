"""Capture a live 64-bit Windows process into a Snapshot: kernel32 and ntdll through ctypes.

Default (suspend): attach as a debugger (DebugActiveProcess), tell Windows not to kill the
target if we die (DebugSetProcessKillOnExit(FALSE)), and drain the debug events up to the
attach breakpoint. While that breakpoint event is pending every thread of the target is
frozen by the kernel, and nothing of it survives us: if the dumper dies, the kernel detaches
the debugger and the target runs on. No SuspendThread is used in this mode for exactly that
reason (a suspend count we leave behind would hang the target forever). The breakpoint is
raised by a thread that Windows injects for the attach (DbgUiRemoteBreakin); it is not one
of the program's threads, exists only while we are attached, and is left out of the dump.

Frozen, each thread's CONTEXT (CONTEXT_ALL: integer, control, segment, debug and the
512-byte FXSAVE area) is read with GetThreadContext, its TEB address with
NtQueryInformationThread, its stack bounds from the TEB (NT_TIB StackBase and StackLimit)
and the stack bytes from RSP to StackBase with ReadProcessMemory (Windows x64 has no red
zone: below RSP is garbage). Then the breakpoint event is continued and the debugger
detached (DebugActiveProcessStop). Modules, memory map, system facts and process times are
gathered after the target runs again, except for full dumps (``memory="full"``), which
keep it frozen until the file is written.

Fallbacks: a process that another debugger holds, or whose attach breakpoint does not come
in time (a held loader lock keeps the injected thread from running), is frozen by
suspending its threads one by one instead (SuspendThread, re-listing until no new thread
appears); the attach thread is recognized by its start address (ntdll!DbgUiRemoteBreakin)
and left out there too.

-r (no suspend): no debugger; one thread at a time is suspended (SuspendThread), copied
and resumed, over a Toolhelp32 thread list that is re-read until no new thread appears.

32-bit (WOW64) targets are refused with an explanation: their 32-bit contexts, TEBs and
module lists would need a second code path that nothing here can test.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import struct
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ... import _testhooks
from ...errors import DumpError, InvalidTarget, TargetGone
from ...intervals import merge, subtract
from ...snapshot import (
    LazyMemory,
    MemoryRange,
    MemoryRegion,
    Module,
    PdbIdentity,
    Process,
    Snapshot,
    SoftError,
    Thread,
)
from ..options import CaptureOptions, capture_now
from ..referenced import referenced_ranges
from . import convert as cv

DEFAULT_ATTACH_TIMEOUT = 10.0
_RSP_OFFSET = 0x98  # CONTEXT.Rsp
_PAGE = 4096


@dataclass
class WindowsOptions(CaptureOptions):
    # How long to wait for the attach breakpoint. A process whose loader lock is held can
    # keep the injected thread from running; then threads are suspended one by one.
    attach_timeout: float = DEFAULT_ATTACH_TIMEOUT


@dataclass
class _RawThread:
    tid: int
    context: bytes  # the raw 1232-byte CONTEXT
    teb: int = 0
    teb_bytes: bytes = b""
    stack_range: Optional[tuple[int, int]] = None
    stack: bytes = b""
    suspend_count: int = 0
    priority: int = 0
    name: Optional[str] = None
    created: int = 0  # FILETIME, to find the main thread in -r mode

    @property
    def rsp(self) -> int:
        return struct.unpack_from("<Q", self.context, _RSP_OFFSET)[0]


@dataclass
class _Frozen:
    threads: list[_RawThread] = field(default_factory=list)
    main_tid: int = 0
    injected_tid: int = 0
    soft_errors: list[SoftError] = field(default_factory=list)
    time: int = 0


def _filetime(ft) -> int:
    return (ft.dwHighDateTime << 32) | ft.dwLowDateTime


# --- the target process -------------------------------------------------------------------


class _Target:
    """An open handle to the process (which also pins its PID against reuse)."""

    def __init__(self, w, pid: int, handle, name: str, debug_privilege: bool):
        self.w = w
        self.pid = pid
        self.handle = handle
        self.name = name
        self.debug_privilege = debug_privilege
        self._regions: Optional[list[MemoryRegion]] = None

    def close(self) -> None:
        if self.handle:
            try:
                self.w.CloseHandle(self.handle)
            except self.w.Win32Error:
                pass
            self.handle = None

    def alive(self) -> bool:
        code = self.w.wt.DWORD()
        try:
            self.w.GetExitCodeProcess(self.handle, ctypes.byref(code))
        except self.w.Win32Error:
            return False
        return code.value == self.w.STILL_ACTIVE

    def _read_once(self, address: int, size: int) -> Optional[bytes]:
        buf = ctypes.create_string_buffer(size)
        done = self.w.SIZE_T(0)
        if self.w.ReadProcessMemory(self.handle, ctypes.c_void_p(address), buf, size,
                                    ctypes.byref(done)):
            return buf.raw[: done.value]
        return None

    def read(self, address: int, size: int) -> bytes:
        """Bytes at ``address``; on a fault, the readable prefix (page by page)."""
        if size <= 0 or address <= 0:
            return b""
        data = self._read_once(address, size)
        if data is not None and len(data) == size:
            return data
        out = bytearray()
        pos, end = address, address + size
        while pos < end:
            chunk = min(end, (pos // _PAGE + 1) * _PAGE) - pos
            part = self._read_once(pos, chunk)
            if not part:
                break
            out += part
            pos += len(part)
        return bytes(out)

    def u64(self, address: int) -> int:
        data = self.read(address, 8)
        return struct.unpack("<Q", data)[0] if len(data) == 8 else 0

    def regions(self, refresh: bool = False) -> list[MemoryRegion]:
        """Committed memory, by VirtualQueryEx over the whole user address space."""
        if self._regions is not None and not refresh:
            return self._regions
        w = self.w
        mbi = w.MEMORY_BASIC_INFORMATION()
        out: list[MemoryRegion] = []
        address = 0
        limit = 1 << 47
        while address < limit:
            if not w.VirtualQueryEx(self.handle, ctypes.c_void_p(address), ctypes.byref(mbi),
                                    ctypes.sizeof(mbi)):
                break
            base = mbi.BaseAddress or 0
            size = mbi.RegionSize
            if size <= 0 or base + size <= address:
                break
            region = cv.memory_region(base, size, mbi.State, mbi.Protect, mbi.Type)
            if region is not None:
                out.append(region)
            address = base + size
        self._regions = out
        return out


def _enable_debug_privilege(w) -> bool:
    """Enable SeDebugPrivilege if our token holds it (an elevated administrator's does)."""
    token = w.wt.HANDLE()
    try:
        w.OpenProcessToken(w.GetCurrentProcess(), w.TOKEN_ADJUST_PRIVILEGES | w.TOKEN_QUERY,
                           ctypes.byref(token))
    except w.Win32Error:
        return False
    try:
        tp = w.TOKEN_PRIVILEGES()
        tp.PrivilegeCount = 1
        w.LookupPrivilegeValueW(None, "SeDebugPrivilege", ctypes.byref(tp.Privileges[0].Luid))
        tp.Privileges[0].Attributes = w.SE_PRIVILEGE_ENABLED
        w.AdjustTokenPrivileges(token, False, ctypes.byref(tp), 0, None, None)
        return ctypes.get_last_error() != w.ERROR_NOT_ALL_ASSIGNED
    except w.Win32Error:
        return False
    finally:
        w.CloseHandle(token)


def _image_name(w, handle) -> str:
    size = w.wt.DWORD(1024)
    buf = ctypes.create_unicode_buffer(size.value)
    try:
        w.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size))
    except w.Win32Error:
        return ""
    return buf.value.rsplit("\\", 1)[-1]


def _protection_level(w, handle) -> int:
    level = ctypes.c_ubyte(0)
    status = w.NtQueryInformationProcess(handle, w.ProcessProtectionInformation,
                                         ctypes.byref(level), 1, None)
    return level.value if status >= 0 else 0


def _describe_denied(w, pid: int) -> tuple[str, int]:
    """(image name, protection level) through a limited handle, which is granted more often."""
    try:
        h = w.OpenProcess(w.PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    except w.Win32Error:
        return "", 0
    try:
        return _image_name(w, h), _protection_level(w, h)
    finally:
        w.CloseHandle(h)


def _open_target(w, pid: int) -> _Target:
    special = cv.special_pid(pid)
    if special is not None:
        raise special
    if pid == os.getpid():
        raise InvalidTarget(f"PID {pid} is generate_dump itself; give the PID of another process")
    privileged = _enable_debug_privilege(w)
    access = (w.PROCESS_QUERY_INFORMATION | w.PROCESS_QUERY_LIMITED_INFORMATION
              | w.PROCESS_VM_READ | w.SYNCHRONIZE)
    try:
        handle = w.OpenProcess(access, False, pid)
    except w.Win32Error as exc:
        if exc.code == w.ERROR_INVALID_PARAMETER:
            owner = _thread_owner(w, pid)
            if owner:
                raise InvalidTarget(f"{pid} is a thread of process {owner}, not a process; "
                                    f"give the process ID {owner}") from None
        name, level = _describe_denied(w, pid) if exc.code == w.ERROR_ACCESS_DENIED else ("", 0)
        raise cv.open_error(pid, exc.code, name, level, privileged) from None
    target = _Target(w, pid, handle, _image_name(w, handle), privileged)
    try:
        if not target.alive():
            raise TargetGone(f"process {pid} ({target.name}) has already exited; "
                             "there is nothing left to dump")
        _check_architecture(w, target)
    except BaseException:
        target.close()
        raise
    return target


def _check_architecture(w, target: _Target) -> None:
    from .system import native_machine

    if native_machine() != w.PROCESSOR_ARCHITECTURE_AMD64:
        raise InvalidTarget("generate_dump supports x64 Windows only; this machine's "
                            "processor architecture is not x64")
    if w.IsWow64Process2 is not None:
        process_machine, native = w.wt.USHORT(), w.wt.USHORT()
        try:
            w.IsWow64Process2(target.handle, ctypes.byref(process_machine), ctypes.byref(native))
        except w.Win32Error:
            process_machine.value = 0
        if process_machine.value != w.IMAGE_FILE_MACHINE_UNKNOWN:
            raise cv.wow64_error(target.pid, target.name)
        return
    wow = w.wt.BOOL()
    try:
        w.IsWow64Process(target.handle, ctypes.byref(wow))
    except w.Win32Error:
        return
    if wow.value:
        raise cv.wow64_error(target.pid, target.name)


# --- threads ------------------------------------------------------------------------------


_THREAD_ACCESS = 0x0002 | 0x0008 | 0x0040  # SUSPEND_RESUME | GET_CONTEXT | QUERY_INFORMATION


def _open_thread(w, tid: int):
    try:
        return w.OpenThread(_THREAD_ACCESS, False, tid)
    except w.Win32Error:
        return None


def _get_context(w, handle) -> bytes:
    """GetThreadContext(CONTEXT_ALL) into a 16-byte aligned buffer (x64 requires it)."""
    buf = ctypes.create_string_buffer(w.CONTEXT_SIZE + w.CONTEXT_ALIGN)
    address = (ctypes.addressof(buf) + w.CONTEXT_ALIGN - 1) & ~(w.CONTEXT_ALIGN - 1)
    ctypes.memset(address, 0, w.CONTEXT_SIZE)
    ctypes.c_uint32.from_address(address + 0x30).value = w.CONTEXT_ALL
    w.GetThreadContext(handle, ctypes.c_void_p(address))
    return ctypes.string_at(address, w.CONTEXT_SIZE)


def _teb_address(w, handle) -> int:
    info = w.THREAD_BASIC_INFORMATION()
    status = w.NtQueryInformationThread(handle, w.ThreadBasicInformation, ctypes.byref(info),
                                        ctypes.sizeof(info), None)
    return (info.TebBaseAddress or 0) if status >= 0 else 0


def _suspend_count(w, handle) -> int:
    count = w.wt.ULONG(0)
    status = w.NtQueryInformationThread(handle, w.ThreadSuspendCount, ctypes.byref(count),
                                        ctypes.sizeof(count), None)
    return count.value if status >= 0 else 0


def _start_address(w, handle) -> int:
    address = ctypes.c_void_p()
    status = w.NtQueryInformationThread(handle, w.ThreadQuerySetWin32StartAddress,
                                        ctypes.byref(address), ctypes.sizeof(address), None)
    return (address.value or 0) if status >= 0 else 0


_breakin: list[int] = []


def _remote_breakin(w) -> int:
    """Address of ntdll!DbgUiRemoteBreakin, where the thread that Windows injects into a
    process for a debugger attach starts. ntdll is mapped at the same address in every
    process (of a boot, and in Wine), so the address is the same in the target."""
    if not _breakin:
        try:
            _breakin.append(w.GetProcAddress(w.GetModuleHandleW("ntdll.dll"),
                                             b"DbgUiRemoteBreakin") or 0)
        except w.Win32Error:
            _breakin.append(0)
    return _breakin[0]


def _is_attach_thread(w, handle) -> bool:
    breakin = _remote_breakin(w)
    return bool(breakin) and _start_address(w, handle) == breakin


def _thread_name(w, handle) -> Optional[str]:
    if w.GetThreadDescription is None:
        return None
    text = w.wt.LPWSTR()
    if w.GetThreadDescription(handle, ctypes.byref(text)) < 0:
        return None
    try:
        return text.value or None
    finally:
        w.LocalFree(ctypes.cast(text, ctypes.c_void_p))


def _created(w, handle) -> int:
    times = [w.wt.FILETIME() for _ in range(4)]
    try:
        w.GetThreadTimes(handle, *(ctypes.byref(t) for t in times))
    except w.Win32Error:
        return 0
    return _filetime(times[0])


def _copy_thread(target: _Target, tid: int, handle) -> _RawThread:
    """Registers, TEB and stack of a stopped thread (raises Win32Error if it is gone)."""
    w = target.w
    raw = _RawThread(tid=tid, context=_get_context(w, handle))
    raw.teb = _teb_address(w, handle)
    if raw.teb:
        raw.teb_bytes = target.read(raw.teb, cv.TEB_SIZE)
    raw.stack_range = cv.stack_bounds(raw.rsp, raw.teb_bytes)
    if raw.stack_range is None:
        raw.stack_range = cv.stack_bounds(raw.rsp, b"", target.regions())
    if raw.stack_range:
        start, end = raw.stack_range
        raw.stack = target.read(start, end - start)
        if not raw.stack and start % _PAGE:
            # RSP in a guard page that the stack has not grown into yet: start above it.
            nxt = (start // _PAGE + 1) * _PAGE
            if nxt < end:
                raw.stack_range = (nxt, end)
                raw.stack = target.read(nxt, end - nxt)
    raw.priority = w.GetThreadPriority(handle)
    raw.name = _thread_name(w, handle)
    raw.created = _created(w, handle)
    return raw


def _toolhelp_entries(w) -> list[tuple[int, int]]:
    """(thread id, process id) of every thread of the system (Toolhelp32)."""
    snap = w.CreateToolhelp32Snapshot(w.TH32CS_SNAPTHREAD, 0)
    if not snap or snap == w.INVALID_HANDLE_VALUE:
        raise w.Win32Error("CreateToolhelp32Snapshot", w.last_error())
    try:
        entry = w.THREADENTRY32()
        entry.dwSize = ctypes.sizeof(entry)
        out = []
        ok = w.Thread32First(snap, ctypes.byref(entry))
        while ok:
            out.append((entry.th32ThreadID, entry.th32OwnerProcessID))
            entry.dwSize = ctypes.sizeof(entry)
            ok = w.Thread32Next(snap, ctypes.byref(entry))
        return out
    finally:
        w.CloseHandle(snap)


def _toolhelp_threads(w, pid: int) -> list[int]:
    return [tid for tid, owner in _toolhelp_entries(w) if owner == pid]


def _thread_owner(w, tid: int) -> int:
    """The process a thread id belongs to (thread and process ids share one namespace)."""
    try:
        return next((owner for t, owner in _toolhelp_entries(w) if t == tid), 0)
    except w.Win32Error:
        return 0


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """While threads are stopped, Ctrl+C / Ctrl+Break wait until everything is released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    names = ("SIGINT", "SIGTERM", "SIGBREAK", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    old = {}
    for s in sigs:
        try:
            old[s] = signal.signal(s, lambda signum, frame: caught.append(signum))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            handler = old.get(caught[0])
            if callable(handler):
                handler(caught[0], None)  # the CLI's handler raises Interrupted
            elif handler != signal.SIG_IGN:
                raise KeyboardInterrupt


# --- the debugger freeze ------------------------------------------------------------------


class _DebugSession:
    def __init__(self, target: _Target):
        self.target = target
        self.w = target.w
        self.attached = False
        self.pending: Optional[tuple[int, int]] = None  # (pid, tid) of the held event
        self.threads: dict[int, object] = {}  # tid -> handle from the event, in order
        self.main_tid = 0
        self.injected_tid = 0
        self.exited = False

    def attach(self) -> None:
        w = self.w
        w.DebugActiveProcess(self.target.pid)
        self.attached = True
        # Whatever happens to us from here on, the target must survive.
        w.DebugSetProcessKillOnExit(False)

    def _is_attach_thread(self, tid: int) -> bool:
        """Whether a breakpoint comes from the attach thread, not from the program's own
        DebugBreak (when in doubt, it is ours)."""
        handle = _open_thread(self.w, tid)
        if handle is None or not _remote_breakin(self.w):
            return True
        try:
            return _start_address(self.w, handle) in (0, _remote_breakin(self.w))
        finally:
            self.w.CloseHandle(handle)

    def _close_file(self, handle) -> None:
        if handle:
            try:
                self.w.CloseHandle(handle)
            except self.w.Win32Error:
                pass

    def wait_for_breakpoint(self, timeout: float) -> bool:
        """Drain debug events up to the attach breakpoint, which is kept pending (frozen)."""
        w = self.w
        event = w.DEBUG_EVENT()
        deadline = time.monotonic() + timeout
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                return False
            try:
                w.WaitForDebugEvent(ctypes.byref(event), remaining)
            except w.Win32Error as exc:
                if exc.code in (w.ERROR_SEM_TIMEOUT, w.WAIT_TIMEOUT):
                    return False
                raise
            code, tid = event.dwDebugEventCode, event.dwThreadId
            status = w.DBG_CONTINUE
            if code == w.CREATE_PROCESS_DEBUG_EVENT:
                info = event.u.CreateProcessInfo
                self._close_file(info.hFile)
                self.main_tid = tid
                self.threads[tid] = info.hThread
            elif code == w.CREATE_THREAD_DEBUG_EVENT:
                self.threads[tid] = event.u.CreateThread.hThread
            elif code == w.EXIT_THREAD_DEBUG_EVENT:
                self.threads.pop(tid, None)
            elif code == w.LOAD_DLL_DEBUG_EVENT:
                self._close_file(event.u.LoadDll.hFile)
            elif code == w.EXIT_PROCESS_DEBUG_EVENT:
                self.exited = True
                w.ContinueDebugEvent(event.dwProcessId, tid, w.DBG_CONTINUE)
                raise cv.gone_error(self.target.pid, self.target.name)
            elif code == w.EXCEPTION_DEBUG_EVENT:
                exc_code = event.u.Exception.ExceptionRecord.ExceptionCode
                if exc_code in (w.EXCEPTION_BREAKPOINT, w.STATUS_WX86_BREAKPOINT) \
                        and self._is_attach_thread(tid):
                    self.pending = (event.dwProcessId, tid)
                    self.injected_tid = tid
                    return True
                # The program's own exception: let it handle it as if we were not here.
                status = w.DBG_EXCEPTION_NOT_HANDLED
            w.ContinueDebugEvent(event.dwProcessId, tid, status)

    def release(self) -> list[SoftError]:
        soft = []
        w = self.w
        if self.pending is not None:
            try:
                w.ContinueDebugEvent(self.pending[0], self.pending[1], w.DBG_CONTINUE)
            except w.Win32Error as exc:
                soft.append(SoftError("detach", f"ContinueDebugEvent: {exc}"))
            self.pending = None
        if self.attached and not self.exited:
            try:
                w.DebugActiveProcessStop(self.target.pid)
            except w.Win32Error as exc:
                soft.append(SoftError("detach", f"could not detach the debugger: {exc}"))
            self.attached = False
        return soft


def _copy_all(target: _Target, tids: list[int], handles: dict, frozen: _Frozen,
              suspend_counts: Optional[dict[int, int]] = None) -> None:
    w = target.w
    for tid in tids:
        handle = _open_thread(w, tid)
        own = handle is not None
        if handle is None:
            handle = handles.get(tid)
        if handle is None:
            frozen.soft_errors.append(SoftError("thread-vanished",
                                                f"thread {tid} could not be opened"))
            continue
        try:
            if _is_attach_thread(w, handle):
                frozen.injected_tid = frozen.injected_tid or tid
                continue
            raw = _copy_thread(target, tid, handle)
            raw.suspend_count = (suspend_counts[tid] if suspend_counts and tid in suspend_counts
                                 else _suspend_count(w, handle))
            frozen.threads.append(raw)
        except w.Win32Error as exc:
            frozen.soft_errors.append(SoftError("thread-vanished",
                                                f"thread {tid} could not be read: {exc}"))
        finally:
            if own:
                w.CloseHandle(handle)


class _Hold:
    """What keeps the target frozen: a debug session, or threads we suspended."""

    def __init__(self, w):
        self.w = w
        self.session: Optional[_DebugSession] = None
        self.suspended: dict[int, object] = {}  # tid -> handle

    def release(self) -> list[SoftError]:
        soft: list[SoftError] = []
        for handle in self.suspended.values():
            self.w.ResumeThread(handle)
            self.w.CloseHandle(handle)
        self.suspended = {}
        if self.session is not None:
            soft = self.session.release()
            self.session = None
        return soft


def _freeze_with_debugger(target: _Target, options: WindowsOptions, hold: _Hold) -> _Frozen:
    """Freeze as a debugger and copy the threads. The target stays frozen (``hold``): the
    caller releases it, at once or after writing a full dump."""
    w = target.w
    frozen = _Frozen()
    present = w.wt.BOOL(0)
    try:
        w.CheckRemoteDebuggerPresent(target.handle, ctypes.byref(present))
    except w.Win32Error:
        pass
    if present.value:
        frozen.soft_errors.append(SoftError(
            "debugger-present", f"process {target.pid} is being debugged by another "
            "debugger; its threads were suspended one by one instead"))
        return _freeze_by_suspending(target, frozen, hold)
    session = _DebugSession(target)
    hold.session = session  # from here on, release() detaches whatever happens
    try:
        session.attach()
    except w.Win32Error as exc:
        if not target.alive():
            raise cv.gone_error(target.pid, target.name) from None
        level = _protection_level(w, target.handle) if exc.code == w.ERROR_ACCESS_DENIED else 0
        raise cv.debug_attach_error(target.pid, exc.code, target.name, level,
                                    target.debug_privilege) from None
    if not session.wait_for_breakpoint(options.attach_timeout):
        frozen.soft_errors.append(SoftError(
            "attach-timeout", f"the attach breakpoint did not arrive within "
            f"{options.attach_timeout:g} s (is the loader lock held?); threads were "
            "suspended one by one instead"))
        frozen.main_tid = session.main_tid
        return _freeze_by_suspending(target, frozen, hold, list(session.threads))
    frozen.main_tid = session.main_tid
    frozen.injected_tid = session.injected_tid
    tids = [t for t in session.threads if t != session.injected_tid]
    _copy_all(target, tids, session.threads, frozen)
    frozen.time = int(time.time())
    _testhooks.pause("frozen")
    return frozen


def _freeze_by_suspending(target: _Target, frozen: _Frozen, hold: _Hold,
                          known: Optional[list[int]] = None) -> _Frozen:
    """Suspend every thread (re-listing until no new one appears) and copy them; they stay
    suspended in ``hold``."""
    w = target.w
    counts: dict[int, int] = {}
    seen: set[int] = set()
    pending = list(known or [])
    while True:
        new = list(dict.fromkeys(t for t in pending + _toolhelp_threads(w, target.pid)
                                 if t not in seen))
        if not new:
            break
        pending = []
        for tid in new:
            seen.add(tid)
            handle = _open_thread(w, tid)
            if handle is None:
                continue
            if _is_attach_thread(w, handle):  # a debugger's, being attached (ours or not)
                frozen.injected_tid = frozen.injected_tid or tid
                w.CloseHandle(handle)
                continue
            previous = w.SuspendThread(handle)
            if previous == 0xFFFFFFFF:
                w.CloseHandle(handle)
                continue
            hold.suspended[tid] = handle
            counts[tid] = previous
    _copy_all(target, list(hold.suspended), {}, frozen, counts)
    frozen.time = int(time.time())
    _testhooks.pause("frozen")
    return frozen


def _capture_running(target: _Target) -> _Frozen:
    """-r: pause one thread at a time, only for its own registers and stack."""
    w = target.w
    frozen = _Frozen()
    done: set[int] = set()
    while True:
        new = [t for t in _toolhelp_threads(w, target.pid) if t not in done]
        if not new:
            break
        for tid in new:
            done.add(tid)
            handle = _open_thread(w, tid)
            if handle is None:
                frozen.soft_errors.append(SoftError("thread-vanished",
                                                    f"thread {tid} could not be opened"))
                continue
            try:
                if _is_attach_thread(w, handle):  # some debugger is attaching right now
                    continue
                previous = w.SuspendThread(handle)
                if previous == 0xFFFFFFFF:
                    frozen.soft_errors.append(SoftError(
                        "thread-vanished", f"thread {tid} could not be suspended"))
                    continue
                try:
                    raw = _copy_thread(target, tid, handle)
                    raw.suspend_count = previous
                    frozen.threads.append(raw)
                except w.Win32Error as exc:
                    frozen.soft_errors.append(SoftError(
                        "thread-vanished", f"thread {tid} could not be read: {exc}"))
                finally:
                    w.ResumeThread(handle)
            finally:
                w.CloseHandle(handle)
    frozen.time = int(time.time())
    return frozen


# --- after the freeze ---------------------------------------------------------------------


def _peb_address(target: _Target) -> int:
    w = target.w
    info = w.PROCESS_BASIC_INFORMATION()
    status = w.NtQueryInformationProcess(target.handle, w.ProcessBasicInformation,
                                         ctypes.byref(info), ctypes.sizeof(info), None)
    return (info.PebBaseAddress or 0) if status >= 0 else 0


def _unicode_string(target: _Target, address: int) -> str:
    head = target.read(address, 16)
    if len(head) < 16:
        return ""
    length, _maximum, _pad, buffer = struct.unpack("<HHIQ", head)
    if not buffer or not length:
        return ""
    return target.read(buffer, length).decode("utf-16-le", "replace")


@dataclass
class _Facts:
    process: Process
    memory: list[MemoryRange]  # the PEB
    image_base: int
    environment: tuple[int, int]  # [start, end) of the environment block, (0, 0) if unknown


def _environment_extent(target: _Target, params: int) -> tuple[int, int]:
    env = target.u64(params + cv.PARAMS_ENVIRONMENT)
    if not env:
        return 0, 0
    size = target.u64(params + cv.PARAMS_ENVIRONMENT_SIZE)
    if not 0 < size <= cv.MAX_ENVIRONMENT:  # older layouts: find the terminating empty string
        size = len(cv.environment_block(target.read(env, cv.MAX_ENVIRONMENT)))
    return env, env + size


def _process_facts(target: _Target, soft: list[SoftError]) -> _Facts:
    w = target.w
    times = [w.wt.FILETIME() for _ in range(4)]
    try:
        w.GetProcessTimes(target.handle, *(ctypes.byref(t) for t in times))
    except w.Win32Error:
        pass
    peb = _peb_address(target)
    memory: list[MemoryRange] = []
    command_line = ""
    image_base = 0
    environment = (0, 0)
    if peb:
        peb_bytes = target.read(peb, cv.PEB_SIZE)
        if peb_bytes:
            memory.append(MemoryRange(peb, peb_bytes))
        image_base = target.u64(peb + cv.PEB_IMAGE_BASE)
        params = target.u64(peb + cv.PEB_PROCESS_PARAMETERS)
        if params:
            command_line = _unicode_string(target, params + cv.PARAMS_COMMAND_LINE)
            environment = _environment_extent(target, params)
    if environment == (0, 0):
        soft.append(SoftError("memory-unreadable", "the environment block was not found"))
    process = Process(pid=target.pid, create_time=cv.filetime_to_unix(_filetime(times[0])),
                      kernel_time=cv.filetime_seconds(_filetime(times[2])),
                      user_time=cv.filetime_seconds(_filetime(times[3])),
                      command_line=(command_line,) if command_line else ())
    return _Facts(process, memory, image_base, environment)


def _module_list(target: _Target, image_base: int, soft: list[SoftError]) -> list[Module]:
    from ...modules.pe import PeError, module_info

    w = target.w
    handles: list[int] = []
    for _attempt in range(5):  # the loader list may change under us: ERROR_PARTIAL_COPY
        count = 1024
        array = (ctypes.c_void_p * count)()
        needed = w.wt.DWORD()
        try:
            w.EnumProcessModulesEx(target.handle, array, ctypes.sizeof(array),
                                   ctypes.byref(needed), w.LIST_MODULES_ALL)
        except w.Win32Error as exc:
            if exc.code == w.ERROR_PARTIAL_COPY:
                time.sleep(0.01)
                continue
            soft.append(SoftError("modules-unreadable", f"the module list is unreadable: {exc}"))
            return []
        n = needed.value // ctypes.sizeof(ctypes.c_void_p)
        if n > count:
            continue
        handles = [array[i] for i in range(n) if array[i]]
        break
    modules: list[Module] = []
    taken: list[tuple[int, int]] = []
    for base in handles:
        info = w.MODULEINFO()
        try:
            w.GetModuleInformation(target.handle, ctypes.c_void_p(base), ctypes.byref(info),
                                   ctypes.sizeof(info))
        except w.Win32Error:
            continue  # unloaded meanwhile
        buf = ctypes.create_unicode_buffer(32768)
        path = buf.value if w.GetModuleFileNameExW(target.handle, ctypes.c_void_p(base), buf,
                                                   32768) else ""
        path = path or f"module@0x{base:x}"
        size = info.SizeOfImage
        identity: Optional[PdbIdentity] = None
        timestamp = checksum = 0
        version = None
        try:
            pe, _source = module_info(target.read, base, path)
            identity, timestamp, checksum, version = pe.pdb, pe.timestamp, pe.checksum, pe.version
            size = size or pe.size_of_image
        except (PeError, OSError) as exc:
            soft.append(SoftError("module-unreadable", f"{path}: PE headers unreadable ({exc})"))
        if identity is None:
            soft.append(SoftError("module-identity", f"no CodeView (RSDS) record for {path}"))
        if size <= 0 or any(a < base + size and base < b for a, b in taken):
            continue
        taken.append((base, base + size))
        modules.append(Module(path=path, base=base, size=size, identity=identity,
                              timestamp=timestamp, checksum=checksum, version=version,
                              is_main=False))
    main_index = next((i for i, m in enumerate(modules) if m.base == image_base), 0)
    if modules:
        main = modules.pop(main_index)
        modules.insert(0, Module(**{**main.__dict__, "is_main": True}))
    return modules


def _regions_with_paths(target: _Target, modules: list[Module]) -> list[MemoryRegion]:
    out = []
    spans = sorted((m.base, m.end, m.path) for m in modules)
    for r in target.regions(refresh=True):
        path = ""
        if r.kind.value == "image":
            for start, end, p in spans:
                if start <= r.start < end:
                    path = p
                    break
        out.append(MemoryRegion(**{**r.__dict__, "path": path}) if path else r)
    return out


def _assemble(target: _Target, frozen: _Frozen) -> tuple[Snapshot, tuple[int, int]]:
    """The snapshot without extra memory, and the environment block's [start, end)."""
    from .system import system_info

    soft = list(frozen.soft_errors)
    main_tid = frozen.main_tid
    if not main_tid and frozen.threads:
        main_tid = min(frozen.threads, key=lambda r: (r.created or 1 << 64, r.tid)).tid
    order = {r.tid: i for i, r in enumerate(frozen.threads)}
    priority_class = target.w.GetPriorityClass(target.handle)
    threads = []
    for raw in sorted(frozen.threads, key=lambda r: (r.tid != main_tid, order[r.tid])):
        stack = None
        if raw.stack_range and raw.stack:
            stack = MemoryRange(raw.stack_range[0], raw.stack)
        elif raw.stack_range:
            soft.append(SoftError("stack-unreadable", f"stack of thread {raw.tid} at "
                                  f"0x{raw.stack_range[0]:x} could not be read"))
        else:
            soft.append(SoftError("stack-unreadable", f"thread {raw.tid}: stack pointer "
                                  f"0x{raw.rsp:x} is in no stack"))
        threads.append(Thread(tid=raw.tid, context=cv.amd64_context(raw.context), stack=stack,
                              name=raw.name, thread_pointer=raw.teb,
                              suspend_count=raw.suspend_count, priority_class=priority_class,
                              priority=raw.priority))
    facts = _process_facts(target, soft)
    modules = _module_list(target, facts.image_base, soft)
    regions = _regions_with_paths(target, modules)
    # Small structures debuggers look for: every TEB and the PEB (kept with "referenced").
    structures = [MemoryRange(r.teb, r.teb_bytes) for r in frozen.threads if r.teb_bytes]
    structures += facts.memory
    snapshot = Snapshot(process=facts.process, system=system_info(), threads=tuple(threads),
                        modules=tuple(modules), memory=tuple(structures),
                        regions=tuple(regions), soft_errors=tuple(soft), time=frozen.time)
    return snapshot, facts.environment


def _add_memory(snapshot: Snapshot, target: _Target, options: WindowsOptions,
                environment: tuple[int, int]) -> Snapshot:
    """Extra memory by the chosen preset. The environment block is left out of every
    preset unless --include-environment asked for it (then it is added whole)."""
    env_block: list[MemoryRange] = []
    secret: list[tuple[int, int]] = []
    if environment[1] > environment[0]:
        if options.include_environment:
            data = target.read(environment[0], environment[1] - environment[0])
            if data:
                env_block.append(MemoryRange(environment[0], data))
        else:
            secret.append(environment)
    if options.memory == "stacks":
        return dataclasses.replace(snapshot, memory=tuple(env_block))
    if options.memory == "full":
        ranges = [(r.start, r.end) for r in snapshot.regions if r.readable]
        ranges = subtract(merge(ranges), secret)
        memory = tuple(LazyMemory(a, b - a, target.read, options.on_short_read)
                       for a, b in ranges)
        return dataclasses.replace(snapshot, memory=tuple(env_block) + memory)
    ranges = referenced_ranges(snapshot.threads, snapshot.regions, options.max_referenced)
    ranges = subtract(ranges, secret)
    extra = tuple(MemoryRange(a, d) for a, b in ranges if (d := target.read(a, b - a)))
    return dataclasses.replace(snapshot, memory=tuple(env_block) + snapshot.memory + extra)


def _bindings():
    if sys.platform != "win32":
        raise DumpError("the windows backend works on Windows only")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise DumpError("generate_dump needs a 64-bit Python on Windows (this one is 32-bit)")
    from . import win32

    return win32


@contextmanager
def capture_session(pid: int, options: Optional[WindowsOptions] = None) -> Iterator[Snapshot]:
    """Snapshot the live process ``pid``; raises a DumpError subclass with a user message.

    The process is frozen only while registers and stacks are copied, except for
    ``memory="full"`` without ``-r``: then it stays frozen (the debugger stays attached)
    until the ``with`` block ends, because the snapshot's memory is read while the dump is
    written."""
    options = options or WindowsOptions()
    w = _bindings()
    target = _open_target(w, pid)
    hold = _Hold(w)
    keep_frozen = options.memory == "full" and options.suspend
    try:
        try:
            _testhooks.pause("opened")
            with _signals_deferred():
                try:
                    if options.suspend:
                        frozen = _freeze_with_debugger(target, options, hold)
                    else:
                        frozen = _capture_running(target)
                finally:
                    if not keep_frozen:
                        released = hold.release()
            if not keep_frozen:
                frozen.soft_errors.extend(released)
            if not frozen.threads or not target.alive():
                raise cv.gone_error(pid, target.name)
            snapshot, environment = _assemble(target, frozen)
            snapshot = _add_memory(snapshot, target, options, environment)
            if not target.alive():
                raise cv.gone_error(pid, target.name)
        except w.Win32Error as exc:
            if not target.alive():
                raise cv.gone_error(pid, target.name) from None
            raise DumpError(f"cannot dump process {pid} ({target.name}): {exc}") from None
        yield snapshot
    finally:
        with _signals_deferred():
            hold.release()
        target.close()


def capture(pid: int, options: Optional[WindowsOptions] = None) -> Snapshot:
    """Snapshot ``pid`` (everything copied before it returns; not for full dumps)."""
    return capture_now(capture_session, pid, options or WindowsOptions())
