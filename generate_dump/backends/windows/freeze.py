"""Freezing the target on Windows: the debugger attach (the attach breakpoint holds every
thread), suspending thread by thread as the fallback, and -r's one-thread-at-a-time copy."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Optional

from ... import _testhooks
from ...snapshot import (
    SoftError,
)
from ..options import CaptureOptions
from . import convert as cv
from .process import _protection_level, _Target
from .threads import (
    _copy_thread,
    _is_attach_thread,
    _open_thread,
    _RawThread,
    _remote_breakin,
    _start_address,
    _suspend_count,
    _toolhelp_threads,
)

DEFAULT_ATTACH_TIMEOUT = 10.0

@dataclass
class WindowsOptions(CaptureOptions):
    # How long to wait for the attach breakpoint. A process whose loader lock is held can
    # keep the injected thread from running; then threads are suspended one by one.
    attach_timeout: float = DEFAULT_ATTACH_TIMEOUT


@dataclass
class _Frozen:
    threads: list[_RawThread] = field(default_factory=list)
    main_tid: int = 0
    injected_tid: int = 0
    soft_errors: list[SoftError] = field(default_factory=list)
    time: int = 0




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
