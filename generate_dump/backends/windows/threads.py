"""Threads of the target on Windows: handles, CONTEXT, TEB, names, Toolhelp listing, and
copying one thread's registers and stack."""

from __future__ import annotations

import ctypes
import signal
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from . import convert as cv
from .process import _PAGE, _Target

_RSP_OFFSET = 0x98  # CONTEXT.Rsp

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



def _filetime(ft) -> int:
    return (ft.dwHighDateTime << 32) | ft.dwLowDateTime




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
