"""`generate_dump run --trace`: run a command as its tracer and dump its processes when
they crash or hang (the default mode, which traces nothing, is supervisor.py).

The command is forked, seized (PTRACE_SEIZE, so job control and signals behave as usual)
before it execs, and followed into every fork, vfork, clone and exec. Being the parent,
this works under Yama ptrace_scope=1. Events:

- a signal-delivery-stop for a crash signal whose disposition is the default (so the
  process is about to die) -> dump that process, with an Exception stream from the
  siginfo, then deliver the signal: the process dies as it would have;
- a crash signal the program handles (a handler is installed) -> passed through, no dump;
  a handler that re-raises after restoring SIG_DFL is seen again, and then dumped;
- group-stops -> PTRACE_LISTEN, so SIGSTOP/SIGCONT keep working;
- the deadline -> every live process is dumped (deepest first), then the tree gets
  SIGTERM and, after a grace period, SIGKILL.

Dumps reuse the ptrace backend's capture with a freezer that borrows our own tracees
(interrupt, copy, continue) instead of seizing them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import time
from typing import Callable, Optional

from ...errors import DumpError, RunError
from ...snapshot import ExceptionInfo, Snapshot
from ...platform.linux import procfs
from .run_events import DumpEvent, exe_name, exit_status, one_line
from ...platform.linux.signals import CRASH_SIGNALS, FAULT_SIGNALS, signal_name
from .run_loop import RunLoop
from .capture import CaptureOptions, Freezer
from . import ptrace_ops as pt
from .ptrace_ops import (
    PTRACE_CONT,
    PTRACE_DETACH,
    PTRACE_EVENT_CLONE,
    PTRACE_EVENT_EXEC,
    PTRACE_EVENT_FORK,
    PTRACE_EVENT_STOP,
    PTRACE_EVENT_VFORK,
    PTRACE_INTERRUPT,
    PTRACE_LISTEN,
    PTRACE_O_TRACECLONE,
    PTRACE_O_TRACEEXEC,
    PTRACE_O_TRACEFORK,
    PTRACE_O_TRACEVFORK,
    PTRACE_SEIZE,
    STOP_SIGNALS,
    WALL,
)


def _ptrace(request: int, tid: int, addr: int = 0, data: int = 0) -> None:
    from ptrace.binding import func

    func.ptrace(request, tid, addr, data)


def _geteventmsg(tid: int) -> int:
    from ptrace.binding import func

    return func.ptrace_geteventmsg(tid)


def eventmsg(tid: int) -> int:
    """PTRACE_GETEVENTMSG (a new tracee's id, an exit status); 0 if the tracee is gone."""
    try:
        return _geteventmsg(tid)
    except Exception:  # noqa: BLE001 - gone
        return 0


def _siginfo(tid: int):
    from ptrace.binding import func

    return func.ptrace_getsiginfo(tid)


def _tgid(tid: int) -> Optional[int]:
    status = procfs.parse_status(procfs.read_file(f"/proc/{tid}/status") or b"")
    value = status.get("Tgid", "")
    return int(value) if value.isdigit() else None


def _signal_mask(status: dict[str, str], key: str) -> int:
    try:
        return int(status.get(key, "0"), 16)
    except ValueError:
        return 0


def is_fatal(tid: int, sig: int) -> bool:
    """Will delivering ``sig`` kill the process? True unless it is caught or ignored.

    For a synchronous fault that is blocked or ignored, the kernel has already reset the
    disposition to SIG_DFL by the time the tracer sees the signal, so this holds too.
    """
    status = procfs.parse_status(procfs.read_file(f"/proc/{tid}/status") or b"")
    bit = 1 << (sig - 1)
    return not (_signal_mask(status, "SigCgt") & bit or _signal_mask(status, "SigIgn") & bit)


class _Session:
    """Bookkeeping of our tracees, shared by the event loop and the borrowing freezer."""

    def __init__(self) -> None:
        self.tgid_of: dict[int, int] = {}  # traced thread -> its process
        self.parent_of: dict[int, int] = {}  # process -> the process that forked it
        self.stopped: set[int] = set()  # threads held in a stop by the loop right now
        self.pending: collections.deque[tuple[int, int]] = collections.deque()

    def processes(self) -> set[int]:
        return set(self.tgid_of.values())

    def depth(self, pid: int) -> int:
        d = 0
        while pid in self.parent_of and d < 10000:
            pid = self.parent_of[pid]
            d += 1
        return d

    def let_go(self, tids: set[int], timeout: float) -> None:
        """Detach ``tids``, each with the signal its stop holds (a tracer that just exits
        would make the kernel drop it): interrupt, then detach at the stop. Threads and
        processes born to them meanwhile (born traced) are let go as well; events of other
        tracees that arrive meanwhile are kept in ``pending`` for the loop."""
        left = set()
        for tid in tids:
            if pt.call(PTRACE_INTERRUPT, tid) == 0:
                left.add(tid)
            else:
                self.tgid_of.pop(tid, None)  # gone
        queued = [(t, st) for t, st in self.pending if t in left]
        self.pending = collections.deque((t, st) for t, st in self.pending if t not in left)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            if queued:
                tid, status = queued.pop(0)
            else:
                try:
                    tid, status = os.waitpid(-1, os.WNOHANG | WALL)
                except ChildProcessError:
                    break
                if tid == 0:
                    time.sleep(0.0005)
                    continue
                if tid not in left:
                    self.pending.append((tid, status))
                    continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                left.discard(tid)
                self.tgid_of.pop(tid, None)
                continue
            sig, event = os.WSTOPSIG(status), status >> 16
            if event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
                new = eventmsg(tid)
                if new and new not in self.tgid_of:
                    self.tgid_of[new] = (self.tgid_of.get(tid, tid) if event == PTRACE_EVENT_CLONE
                                         else new)
                    # Its first stop may have come before this event (then it was kept).
                    early = [(t, st) for t, st in self.pending if t == new]
                    if early:
                        self.pending = collections.deque(
                            (t, st) for t, st in self.pending if t != new)
                        queued += early
                        left.add(new)
                    elif pt.call(PTRACE_INTERRUPT, new) == 0:
                        left.add(new)
            pt.call(PTRACE_DETACH, tid, 0, sig if event == 0 else 0)
            left.discard(tid)
            self.tgid_of.pop(tid, None)


class _BorrowingFreezer(Freezer):
    """Freeze threads we already trace: interrupt, wait, copy, continue."""

    session: _Session  # set by the factory

    def __init__(self, target, options):
        super().__init__(target, options)
        self.handed_back: set[int] = set()

    def seize(self, tid: int) -> bool:
        s = self.session
        if tid in s.stopped:
            self.seized[tid] = 0
            return True
        if tid not in s.tgid_of:
            return super().seize(tid)  # not one of ours (should not happen): seize it
        try:
            self.pt.interrupt(tid)
        except Exception:  # noqa: BLE001 - it is exiting; the loop will see it
            self.skip.add(tid)
            return False
        self.seized[tid] = 0
        return True

    def wait(self, tid: int, deadline: float) -> bool:
        s = self.session
        if tid in s.stopped:
            return True
        if tid not in s.tgid_of:
            return super().wait(tid, deadline)
        try:
            status = self.pt.wait_status(tid, deadline)
        except ChildProcessError:
            self.seized.pop(tid, None)
            self.skip.add(tid)
            return False
        if status is None:
            self.skip.add(tid)
            return False
        if self.pt.is_interrupt_stop(status):
            return True  # our interrupt
        # Another event came first: the thread is stopped all the same; the loop handles
        # the event once the dump is done.
        s.pending.append((tid, status))
        if os.WIFSTOPPED(status):
            self.handed_back.add(tid)
            return True
        self.seized.pop(tid, None)
        self.skip.add(tid)
        return False

    def release(self, tid: int) -> None:
        if self.seized.pop(tid, None) is None:
            return
        if tid in self.session.tgid_of and tid not in self.session.stopped \
                and tid not in self.handed_back:
            try:
                _ptrace(PTRACE_CONT, tid)
            except Exception:  # noqa: BLE001
                pass
        elif tid not in self.session.tgid_of:
            super().release(tid)


class Runner(RunLoop):
    """Trace COMMAND and react to crashes and the deadline; see the module docstring."""

    def __init__(self, argv: list[str], *, timeout: Optional[float], max_dumps: int,
                 kill_after: float, write: Callable[[Snapshot, int, str, str], str],
                 on_dump: Callable[[DumpEvent], None] = lambda e: None,
                 dump_on_signal: bool = False,
                 notice: Callable[[str], None] = lambda s: None):
        self.argv = argv
        self.timeout = timeout
        self.max_dumps = max_dumps
        self.kill_after = kill_after
        self.write = write  # (snapshot, pid, exe, reason) -> path
        self.on_dump = on_dump
        self.dump_on_signal = dump_on_signal
        self.dumped_on_signal = False
        self.notice = notice
        self.root_done = False
        self.session = _Session()
        self.root = 0
        self.own_group = True
        self._init_loop()
        self.last_fault: dict[int, tuple[int, int, int]] = {}  # tid -> (signal, code, address)

    # -- start -------------------------------------------------------------------------------

    def start(self) -> int:
        # Like timeout(1), the command gets its own process group so that signals can be
        # forwarded to all of it; at an interactive terminal it stays in ours instead, so
        # that it can read the terminal (and Ctrl-C reaches it directly).
        from ...platform.linux.proctree import set_child_subreaper
        from .spawn import spawn

        self.own_group = not os.isatty(0)
        set_child_subreaper()
        opts = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC

        def seize(pid: int) -> None:  # before it execs, so that nothing escapes us
            try:
                _ptrace(PTRACE_SEIZE, pid, 0, opts)
            except Exception as exc:  # noqa: BLE001
                raise RunError(f"cannot trace the command: {exc}") from None

        self._start_wakeup()
        try:
            pid = spawn(self.argv, own_group=self.own_group, before_exec=seize,
                        ignored=self._ignored_by_caller())
        except BaseException:
            self._stop_wakeup()
            raise
        self.root = pid
        self.session.tgid_of[pid] = pid
        return pid

    # -- the loop's hooks (run_loop.RunLoop.run) -------------------------------------------------
    # Signal handlers only note what arrived and wake the loop through a self-pipe
    # (signal.set_wakeup_fd): no exception is ever raised in the middle of handling a
    # tracee's stop, so no stop can be lost and leave a process stopped. An error of ours is
    # reported and the loop goes on: the command's status is kept, and at the end every
    # tracee is let go with the signal it was stopped with (a tracer that just exits would
    # make the kernel drop that signal).

    def _collect(self) -> bool:
        self._drain_events()
        return self.root_done and (not self.result.timed_out or not self._live_processes())

    def _root_done(self) -> bool:
        return self.root_done

    def _kill_tree(self) -> None:
        self._signal_tree(signal.SIGKILL)

    def _after_loop(self) -> None:
        self._let_go()

    def _final_status(self) -> int:
        return 124 if self.result.timed_out else self.result.status

    def _live_processes(self) -> list[int]:
        out = []
        for pid in self.session.processes():
            stat = procfs.read_file(f"/proc/{pid}/stat")
            if stat and procfs.parse_stat(stat).state not in ("Z", "X"):
                out.append(pid)
        return out

    def _drain_events(self) -> None:
        """Handle every event that is ready."""
        while True:
            if self.session.pending:
                tid, status = self.session.pending.popleft()
            else:
                try:
                    tid, status = os.waitpid(-1, os.WNOHANG | WALL)
                except ChildProcessError:
                    self.root_done = True  # nothing left to wait for
                    return
                if tid == 0:
                    return
            try:
                self._handle(tid, status)
            except Exception:
                # Never leave a tracee in its stop: resume it as the loop would have.
                if os.WIFSTOPPED(status):
                    self._cont(tid, os.WSTOPSIG(status) if status >> 16 == 0 else 0)
                raise

    def _let_go(self, timeout: float = 2.0) -> None:
        """Detach every tracee still alive, each with the signal it is stopped with."""
        self.session.let_go(set(self.session.tgid_of), timeout)

    def _on_signal(self, sig: int) -> None:
        """A signal sent to `run`: optionally dump everything first, then pass it on."""
        if self.dump_on_signal and not self.dumped_on_signal:
            self.dumped_on_signal = True
            self._dump_all(signal_name(sig).lower())
        self.forward(sig)

    def _cont(self, tid: int, sig: int = 0) -> None:
        try:
            _ptrace(PTRACE_CONT, tid, 0, sig)
        except Exception:  # noqa: BLE001 - gone (e.g. killed meanwhile)
            pass

    def _handle(self, tid: int, status: int) -> None:
        """Handle one wait status."""
        s = self.session
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            s.tgid_of.pop(tid, None)
            if tid == self.root:
                self.result.status = exit_status(status)
                self.root_done = True
            return
        if not os.WIFSTOPPED(status):
            return
        sig, event = os.WSTOPSIG(status), status >> 16
        if tid not in s.tgid_of:
            s.tgid_of[tid] = _tgid(tid) or tid
        if event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            new = eventmsg(tid)
            if new:
                parent = s.tgid_of[tid]
                if event == PTRACE_EVENT_CLONE and _tgid(new) in (None, parent):
                    s.tgid_of[new] = parent
                else:
                    s.tgid_of[new] = new
                    s.parent_of[new] = parent
            self._cont(tid)
        elif event == PTRACE_EVENT_EXEC:
            # After exec the thread group's leader may have a new tid: refresh.
            s.tgid_of[tid] = _tgid(tid) or tid
            self._cont(tid)
        elif event == PTRACE_EVENT_STOP:
            if sig in STOP_SIGNALS:
                try:
                    _ptrace(PTRACE_LISTEN, tid)  # a group-stop: stay stopped, job control
                except Exception:  # noqa: BLE001
                    pass
            else:
                self._cont(tid)  # an interrupt or a new tracee's first stop
        elif event == 0:
            if sig in CRASH_SIGNALS:
                if is_fatal(tid, sig):
                    self._dump_crash(tid, sig)
                else:
                    self._remember_fault(tid, sig)
            self._cont(tid, sig)
        else:
            self._cont(tid)

    # -- dumps -------------------------------------------------------------------------------

    def _capture(self, pid: int, exception: Optional[ExceptionInfo]) -> Snapshot:
        from ...session import capture_process

        session = self.session

        class Factory(_BorrowingFreezer):
            pass

        Factory.session = session
        snap = capture_process(pid, CaptureOptions(freezer_factory=Factory), "ptrace")
        if exception is not None:
            snap = dataclasses.replace(snap, exception=exception)
        return snap

    def _record(self, pid: int, reason: str, exception: Optional[ExceptionInfo]) -> None:
        exe = exe_name(pid)
        event = DumpEvent(pid=pid, reason=reason, path=None, exe=exe, exception=exception)
        if len(self.result.dumps) >= self.max_dumps:
            event.error = f"not dumped: --max-dumps {self.max_dumps} reached"
        else:
            try:
                snap = self._capture(pid, exception)
                event.snapshot = snap
                event.path = self.write(snap, pid, exe, reason)
            except DumpError as exc:
                event.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed dump must not end the run
                event.error = one_line(exc)
        self.result.dumps.append(event)
        self.on_dump(event)

    @staticmethod
    def _fault_of(tid: int, sig: int) -> tuple[int, int]:
        """(si_code, fault address) of the signal ``tid`` is stopped with."""
        try:
            info = _siginfo(tid)
            code, addr = info.si_code, info._sigfault._addr or 0
        except Exception:  # noqa: BLE001
            return 0, 0
        # si_addr means something only for faults the kernel raised (si_code > 0); for
        # kill/raise the same bytes hold the sender's pid.
        if code <= 0 or sig not in FAULT_SIGNALS:
            addr = 0
        return code, addr

    def _remember_fault(self, tid: int, sig: int) -> None:
        """A handled fault: if the handler later re-raises it, report this original fault."""
        code, addr = self._fault_of(tid, sig)
        if code > 0:
            self.last_fault[tid] = (sig, code, addr)

    def _dump_crash(self, tid: int, sig: int) -> None:
        pid = self.session.tgid_of.get(tid, tid)
        code, addr = self._fault_of(tid, sig)
        earlier = self.last_fault.pop(tid, None)
        if code <= 0 and earlier is not None and earlier[0] == sig:
            _, code, addr = earlier  # re-raised by the program's own handler
        exc = ExceptionInfo(thread_id=tid, code=sig, flags=code & 0xFFFFFFFF, address=addr)
        self.session.stopped.add(tid)
        try:
            self._record(pid, signal_name(sig), exc)
        finally:
            self.session.stopped.discard(tid)

    def _on_timeout(self) -> None:
        self.result.timed_out = True
        self._dump_all("timeout")
        self._signal_tree(signal.SIGTERM)

    def _dump_all(self, reason: str) -> None:
        """Dump every live process of the tree, deepest first."""
        s = self.session
        live = [p for p in s.processes() if os.path.exists(f"/proc/{p}")]
        for pid in sorted(live, key=lambda p: (-s.depth(p), p)):
            self._record(pid, reason, None)

    def _signal_tree(self, sig: int) -> None:
        for pid in sorted(self.session.processes(), key=lambda p: -self.session.depth(p)):
            try:
                os.kill(pid, sig)
            except OSError:
                pass  # gone

    def forward(self, sig: int) -> None:
        """Send a signal that `run` received on to the command's process group."""
        if not self.root:
            return
        try:
            if self.own_group:
                os.killpg(self.root, sig)
            elif sig not in (signal.SIGINT, signal.SIGQUIT) or not os.isatty(0):
                os.kill(self.root, sig)  # the terminal already sent Ctrl-C/Ctrl-\ to it
        except OSError:
            pass
