"""The event loop both of `generate_dump run`'s modes share: wait for news (children,
signals sent to run, their own file descriptors), dump the tree at --timeout, SIGKILL it
--kill-after later, give up on an unkillable tree 10 s after that, and never let a bug of
ours end the run. The default mode (supervisor.py) and `--trace` (tracer.py) fill in the
hooks: what news means, how the tree is ended, what is left to do at the end.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` imports enum for its enums, ~3 ms of run's start-up
    import _signal as signal
import time

from .run_events import RunResult, one_line
from .wakeup import FORWARDED_SIGNALS, RUN_SIGNALS, SignalWakeup

if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional

GIVE_UP_AFTER_KILL = 10.0  # seconds to wait for a tree that ignores SIGKILL (D state)
TREE_ENDING_POLL = 0.05  # after a timeout, how often to look whether the tree has ended


class RunLoop:
    """Base of run's two watchers. Subclasses set ``root``, ``timeout``, ``kill_after``,
    ``notice`` and implement the hooks below."""

    root: int
    timeout: Optional[float]
    kill_after: float
    notice: Callable[[str], None]

    def _init_loop(self) -> None:
        self.result = RunResult(status=0)
        self.received: list[int] = []  # signals sent to run, handled by the loop
        self.wakeup: Optional[SignalWakeup] = None  # set up by start(), before the command
        self.exiting = False  # the process exits when run() returns (run_session.finish)
        self.started = 0.0  # time.monotonic() when the command started (0: not yet)

    def _start_wakeup(self) -> SignalWakeup:
        """Call before the command exists: signals sent to run from then on are noted and
        handled by the loop (forwarded to the command) instead of ending run and
        orphaning the command."""
        self.wakeup = SignalWakeup(RUN_SIGNALS, self._note_signal,
                                   leave_ignored=FORWARDED_SIGNALS).start()
        return self.wakeup

    def _ignored_by_caller(self) -> tuple[int, ...]:
        """Signals the command must get ignored, as it would have inherited them, although
        run handles them (SIGCHLD, when whoever started run ignores it)."""
        if self.wakeup is None:
            return ()
        return tuple(sorted(self.wakeup.ignored - self.wakeup.leave_ignored))

    def _stop_wakeup(self) -> None:
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None

    def _note_signal(self, signum, frame) -> None:
        if signum != signal.SIGCHLD:  # that one only wakes the loop
            self.received.append(signum)

    # -- hooks ---------------------------------------------------------------------------------

    def start(self) -> int:
        raise NotImplementedError

    def _collect(self) -> bool:
        """Take in what happened (exits, stops, cores); True when the run is over."""
        raise NotImplementedError

    def _root_done(self) -> bool:
        raise NotImplementedError

    def _on_signal(self, sig: int) -> None:
        raise NotImplementedError

    def _on_timeout(self) -> None:
        raise NotImplementedError

    def _kill_tree(self) -> None:
        raise NotImplementedError

    def _tick(self, now: float) -> Optional[float]:
        """Periodic work; returns when it wants to run next (None: never)."""
        return None

    def _wait_fds(self) -> Iterable[int]:
        return ()

    def _after_loop(self) -> None:
        """Clean-up once the loop has ended (also after an exception)."""

    def _final_status(self) -> int:
        raise NotImplementedError

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> RunResult:
        if not self.root:
            self.start()
        # The deadline counts from the command's start (earlier than ours when adopted).
        deadline = (self.started or time.monotonic()) + self.timeout if self.timeout else None
        kill_at: Optional[float] = None
        give_up_at: Optional[float] = None
        wakeup = self.wakeup or self._start_wakeup()
        self.wakeup = None  # the loop owns it now, and closes it
        errors = 0
        try:
            while True:
                try:
                    if self._collect():
                        break
                    while self.received:
                        self._on_signal(self.received.pop(0))
                    now = time.monotonic()
                    if deadline is not None and now >= deadline and not self.result.timed_out:
                        self._on_timeout()
                        kill_at = time.monotonic() + self.kill_after
                        continue
                    if kill_at is not None and now >= kill_at:
                        self._kill_tree()
                        kill_at = None
                        give_up_at = time.monotonic() + GIVE_UP_AFTER_KILL
                    if give_up_at is not None and now >= give_up_at and self._root_done():
                        break  # unkillable (uninterruptible sleep): do not wait forever
                    wake = [t for t in (None if self.result.timed_out else deadline, kill_at,
                                        give_up_at, self._tick(now)) if t is not None]
                    if self.result.timed_out and self._root_done():
                        wake.append(time.monotonic() + TREE_ENDING_POLL)  # the rest ending
                    wait = max(0.0, min(wake) - time.monotonic()) if wake else None
                    wakeup.wait(self._wait_fds(), wait)
                except Exception as exc:  # noqa: BLE001 - a bug of ours must not end the run
                    errors += 1
                    if errors <= 3:
                        self.notice(f"internal error, continuing: {one_line(exc)}")
                    time.sleep(0.01)
        finally:
            wakeup.close()
            self._after_loop()
        self.result.status = self._final_status()
        return self.result
