"""`watch --on-signal` / `--on-exit`: triggers only a tracer can see.

The watched processes are seized (PTRACE_SEIZE, no stop) with their threads, and new
threads are followed (PTRACE_O_TRACECLONE); --on-exit adds PTRACE_O_TRACEEXIT, whose
stop comes before the exiting process loses its memory. Every stop is answered at once:
a signal is handed back unchanged (after the dump, for the watched one), a group-stop
is kept with PTRACE_LISTEN. When the watch ends, every thread is detached with the
signal it was stopped with, so nothing is lost or left stopped.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

from ..backends.linux import ptrace_ops as pt
from ..backends.linux.tracer import _BorrowingFreezer, _Session, eventmsg
from ..backends.linux.wakeup import SignalWakeup
from ..snapshot import ExceptionInfo
from . import procstat
from .command import DumpSettings, Watched, Watcher, dump_process
from .triggers import Firing, TriggerState


def _siginfo_code(tid: int) -> int:
    from ptrace.binding import func

    try:
        return func.ptrace_getsiginfo(tid).si_code
    except Exception:  # noqa: BLE001
        return 0


class TracedWatcher(Watcher):
    """A Watcher that also traces its targets for the signal and exit triggers."""

    def __init__(self, *args, signal_number: Optional[int], on_exit: bool, **kw):
        super().__init__(*args, **kw)
        self.signal_number = signal_number
        self.on_exit = on_exit
        self.options = pt.PTRACE_O_TRACECLONE | (pt.PTRACE_O_TRACEEXIT if on_exit else 0)
        self.session = _Session()
        self.refused: set[int] = set()
        self.exit_seen: set[int] = set()
        # A tracee's stop sends us SIGCHLD: it wakes the sleep between rounds.
        self.wakeup = SignalWakeup((signal.SIGCHLD,), lambda s, f: None).start()

    # -- attaching -------------------------------------------------------------------------

    def _seize_process(self, pid: int) -> None:
        s = self.session
        for _ in range(100):  # until no thread appears that we have not seized
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                return
            new = [t for t in tids if t not in s.tgid_of]
            if not new:
                return
            for tid in new:
                err = pt.call(pt.PTRACE_SEIZE, tid, 0, self.options)
                if err and tid == pid:
                    self.refused.add(pid)
                    from . import command

                    command._say(f"cannot trace process {pid}: {os.strerror(err)}; its "
                                 "signal and exit triggers are off")
                    return
                if not err:
                    s.tgid_of[tid] = pid

    def round(self) -> bool:
        self._drain()
        more = super().round()
        traced = set(self.session.tgid_of.values())
        for key, w in list(self.watched.items()):
            if w.pid not in traced and w.pid not in self.refused and not w.done:
                self._seize_process(w.pid)
        self._drain()
        self._release_done()
        return more

    # -- events ----------------------------------------------------------------------------

    def sleep(self, delay: float) -> None:
        end = time.monotonic() + delay
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self.wakeup.wait((), left)
            self._drain()
            self._release_done()

    def _drain(self) -> None:
        s = self.session
        while True:
            if s.pending:
                tid, status = s.pending.popleft()
            else:
                try:
                    tid, status = os.waitpid(-1, os.WNOHANG | pt.WALL)
                except ChildProcessError:
                    return
                if tid == 0:
                    return
            self._handle(tid, status)

    def _cont(self, tid: int, sig: int = 0) -> None:
        pt.call(pt.PTRACE_CONT, tid, 0, sig)

    def _handle(self, tid: int, status: int) -> None:
        s = self.session
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            s.tgid_of.pop(tid, None)
            return
        if not os.WIFSTOPPED(status):
            return
        if tid not in s.tgid_of:
            # A thread of ours we have not recorded yet (its clone event is still queued).
            s.tgid_of[tid] = _tgid(tid)
        sig, event = os.WSTOPSIG(status), status >> 16
        pid = s.tgid_of[tid]
        if event == pt.PTRACE_EVENT_CLONE:
            new = eventmsg(tid)
            if new:
                s.tgid_of[new] = pid
            self._cont(tid)
        elif event == pt.PTRACE_EVENT_EXIT:
            code = eventmsg(tid)
            if self.on_exit and pid not in self.exit_seen:
                self.exit_seen.add(pid)
                failed = os.WIFSIGNALED(code) or (os.WIFEXITED(code) and os.WEXITSTATUS(code))
                if failed:
                    what = (f"killed by {signal.Signals(os.WTERMSIG(code)).name}"
                            if os.WIFSIGNALED(code) else f"exit status {os.WEXITSTATUS(code)}")
                    label = ("exit-" + signal.Signals(os.WTERMSIG(code)).name
                             if os.WIFSIGNALED(code) else f"exit-{os.WEXITSTATUS(code)}")
                    self._event_dump(tid, pid, Firing("exit", "non-zero", what, label))
            self._cont(tid)
        elif event == pt.PTRACE_EVENT_STOP:
            if sig in pt.STOP_SIGNALS:
                pt.call(pt.PTRACE_LISTEN, tid)
            else:
                self._cont(tid)
        elif event == 0:
            if sig == self.signal_number:
                code = _siginfo_code(tid)
                name = signal.Signals(sig).name
                exc = ExceptionInfo(thread_id=tid, code=sig, flags=code & 0xFFFFFFFF)
                self._event_dump(tid, pid, Firing("signal", name, f"{name} to thread {tid}",
                                                  f"signal-{name}"), exc)
            self._cont(tid, sig)
        else:
            self._cont(tid)

    def _event_dump(self, tid: int, pid: int, firing: Firing,
                    exception: Optional[ExceptionInfo] = None) -> None:
        w = next((w for w in self.watched.values() if w.pid == pid), None)
        if w is None:
            w = Watched(pid, procstat.exe_name(pid), TriggerState([], None, time.monotonic()))
        if w.done or time.monotonic() < w.cooldown_until:
            return
        self.session.stopped.add(tid)
        self._exception = exception
        try:
            self._fire(w, firing)
        finally:
            self._exception = None
            self.session.stopped.discard(tid)

    def _dump(self, w: Watched, firing: Firing) -> str:
        if w.pid not in set(self.session.tgid_of.values()):
            return super()._dump(w, firing)
        session = self.session

        class Borrow(_BorrowingFreezer):
            pass

        Borrow.session = session
        return dump_process(w.pid, w.exe, firing, self.settings, freezer_factory=Borrow,
                            exception=getattr(self, "_exception", None))

    # -- leaving ---------------------------------------------------------------------------

    def _detach(self, tids: set[int], timeout: float = 5.0) -> None:
        """Let ``tids`` go, each with the signal its stop holds (tracer.py's let_go);
        events of other threads that arrive meanwhile are kept for the loop."""
        self.session.let_go(tids, timeout)

    def _release_done(self) -> None:
        """Stop tracing processes that need no more dumps."""
        done = {w.pid for w in self.watched.values() if w.done}
        tids = {t for t, p in self.session.tgid_of.items() if p in done}
        if tids:
            self._detach(tids)

    def finish(self) -> None:
        """Detach every thread, handing back any signal a stop held."""
        self._detach(set(self.session.tgid_of))
        self.wakeup.close()


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid


__all__ = ["TracedWatcher", "DumpSettings"]
