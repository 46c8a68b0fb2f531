"""The ptrace calls the Linux backend needs, on top of python-ptrace.

python-ptrace supplies the ptrace() binding and the register structures; what it lacks
(PTRACE_SEIZE, PTRACE_INTERRUPT, NT_PRFPREG / NT_ARM_TLS through GETREGSET) is added here
with the same binding and ctypes: ``call`` for the calls, ``RegisterBank`` for the
register sets, ``wait_stop`` for the stops.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from dataclasses import dataclass
from typing import Optional

from ptrace.binding import func as _pt
from ptrace.binding.linux_struct import iovec_struct, user_regs_struct
from ptrace.cpu_info import CPU_AARCH64, CPU_X86_64

# ptrace(2) requests, options and events (linux/ptrace.h), for every tracer of ours: the
# freezer, `run --trace` (tracer.py) and `watch --on-signal/--on-exit` (watch/traced.py).
PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_GETREGSET = 0x4204
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEEXIT = 0x40
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128
NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_ARM_TLS = 0x401
WALL = 0x40000000  # __WALL: wait for threads and traced processes too
# SIGSTOP SIGTSTP SIGTTIN SIGTTOU: a PTRACE_EVENT_STOP with one of these is a group-stop
# (job control), with any other an interrupt or a new tracee's first stop.
STOP_SIGNALS = frozenset({19, 20, 21, 22})


class ThreadGone(Exception):
    """The thread exited (or is exiting) while we were looking at it."""


def interrupt(tid: int) -> None:
    """PTRACE_INTERRUPT, raising PtraceError on failure (the tracer's slow path)."""
    _pt.ptrace(PTRACE_INTERRUPT, tid, 0, 0)


@dataclass
class StopResult:
    stopped: bool
    signal: int = 0  # a signal that the stop intercepted and that must be re-delivered
    group_stop: bool = False  # stopped by job control (SIGSTOP and friends)


def poll_status(tid: int, reap: bool = True) -> tuple[int, int]:
    """One non-blocking wait for ``tid``: ``(tid, waitpid status)`` or ``(0, 0)``.

    ``reap=False`` never collects an exit (waitid without WEXITED): for a process whose
    real parent is our own process, whose exit status belongs to the code that started it.
    Its exit then shows as ChildProcessError, like a thread that is gone."""
    if reap:
        return os.waitpid(tid, os.WNOHANG | WALL)
    info = os.waitid(os.P_PID, tid, os.WSTOPPED | os.WNOHANG | WALL)
    if info is None:
        return 0, 0
    # waitid's si_status is the stop's whole exit_code (signal | event << 8): the
    # waitpid status is that shifted by 8 with the "stopped" marker 0x7f.
    return tid, (info.si_status << 8) | 0x7F


def wait_status(tid: int, deadline: float, reap: bool = True) -> Optional[int]:
    """The next wait status of ``tid``, polling (50 µs, doubling up to 2 ms) until
    ``deadline``; None if none came by then. Raises ChildProcessError when ``tid`` is no
    tracee or child of ours (any more). ``reap``: see :func:`poll_status`."""
    delay = 0.00005
    while True:
        got, status = poll_status(tid, reap)
        if got == tid:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.002)


def is_interrupt_stop(status: int) -> bool:
    """Is this wait status the stop our PTRACE_INTERRUPT asked for (and not a group-stop,
    a signal or another event)?"""
    return (os.WIFSTOPPED(status) and status >> 16 == PTRACE_EVENT_STOP
            and os.WSTOPSIG(status) not in STOP_SIGNALS)


def wait_stop(tid: int, deadline: float, status: Optional[int] = None,
              reap: bool = True) -> StopResult:
    """Wait until the seized and interrupted thread is in a ptrace-stop.

    ``status``: a wait status already collected for it. Returns ``stopped=False`` if it
    did not stop before ``deadline`` (for example a thread in uninterruptible sleep).
    Raises ThreadGone if it exited. ``reap``: see :func:`poll_status`.
    """
    while True:
        if status is None:
            try:
                status = wait_status(tid, deadline, reap)
            except ChildProcessError:
                raise ThreadGone(tid) from None
            if status is None:
                return StopResult(False)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            raise ThreadGone(tid)
        if os.WIFSTOPPED(status):
            sig = os.WSTOPSIG(status)
            event = status >> 16
            if event == PTRACE_EVENT_STOP:
                # Interrupt stop, or group-stop when sig is a stop signal.
                return StopResult(True, 0, group_stop=sig in STOP_SIGNALS)
            if event:
                return StopResult(True, 0)
            # Signal-delivery-stop: we intercepted a signal; hand it back on detach.
            return StopResult(True, sig)
        status = None


# --- the fast path used while a process is frozen ---------------------------------------------
#
# python-ptrace's ptrace() wrapper formats an error message for every call and allocates a
# structure per register read. While every thread of the target is stopped, each
# microsecond per thread counts, so the freezer calls python-ptrace's own ctypes binding of
# ptrace(2) directly, and register sets go into one preallocated buffer; they become
# python-ptrace user_regs_struct objects after the process runs again.

_raw_ptrace = _pt._ptrace
_U64 = struct.Struct("<Q")
_FAILED = ctypes.c_ulong(-1).value


def call(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    """ptrace(2) without exceptions: returns 0 or the errno."""
    if _raw_ptrace(request, tid, addr, data) == _FAILED:
        return ctypes.get_errno()
    return 0


GPR_SIZE = ctypes.sizeof(user_regs_struct)
FPR_SIZE = 512 if CPU_X86_64 else 528
TLS_SIZE = 8 if CPU_AARCH64 else 0
SLOT = GPR_SIZE + FPR_SIZE + TLS_SIZE
_SP_OFFSET = (user_regs_struct.rsp if CPU_X86_64 else user_regs_struct.sp).offset
_TP_OFFSET = user_regs_struct.fs_base.offset if CPU_X86_64 else GPR_SIZE + FPR_SIZE


class RegisterBank:
    """Register sets of many threads in one buffer: GPRs, the FP set, (arm64) TPIDR_EL0."""

    def __init__(self, capacity: int = 64):
        self.buf = ctypes.create_string_buffer(SLOT * capacity)
        self.capacity = capacity
        self.used = 0
        self.fp_ok: list[bool] = []
        self.iov = iovec_struct()
        self.iov_addr = ctypes.addressof(self.iov)

    def _grow(self) -> None:
        bigger = ctypes.create_string_buffer(SLOT * self.capacity * 2)
        ctypes.memmove(bigger, self.buf, SLOT * self.used)
        self.buf = bigger
        self.capacity *= 2

    def _regset(self, tid: int, note: int, addr: int, size: int) -> int:
        iov = self.iov
        iov.buf = addr
        iov.len = size
        err = call(PTRACE_GETREGSET, tid, note, self.iov_addr)
        return err if err or iov.len == size else errno.EIO

    def fill(self, tid: int) -> int:
        """Copy ``tid``'s registers into the next slot: its index, or -1 if it is gone."""
        if self.used == self.capacity:
            self._grow()
        slot = self.used
        base = ctypes.addressof(self.buf) + slot * SLOT
        if self._regset(tid, NT_PRSTATUS, base, GPR_SIZE):
            return -1
        fp_ok = self._regset(tid, NT_PRFPREG, base + GPR_SIZE, FPR_SIZE) == 0
        if TLS_SIZE:
            self._regset(tid, NT_ARM_TLS, base + GPR_SIZE + FPR_SIZE, TLS_SIZE)
        self.fp_ok.append(fp_ok)
        self.used += 1
        return slot

    def sp_and_tp(self, slot: int) -> tuple[int, int]:
        off = slot * SLOT
        return (_U64.unpack_from(self.buf, off + _SP_OFFSET)[0],
                _U64.unpack_from(self.buf, off + _TP_OFFSET)[0])

    def regs(self, slot: int) -> user_regs_struct:
        return user_regs_struct.from_buffer_copy(self.buf, slot * SLOT)

    def fpregs(self, slot: int) -> Optional[bytes]:
        if not self.fp_ok[slot]:
            return None
        off = slot * SLOT + GPR_SIZE
        return bytes(memoryview(self.buf)[off : off + FPR_SIZE])

    def tls(self, slot: int) -> int:
        if not TLS_SIZE:
            return 0
        off = slot * SLOT + GPR_SIZE + FPR_SIZE
        return int.from_bytes(memoryview(self.buf)[off : off + 8], "little")
