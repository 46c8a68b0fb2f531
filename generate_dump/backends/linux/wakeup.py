"""Signals that wake an event loop instead of interrupting it.

The handlers only note what arrived; the kernel-level wakeup goes through a self-pipe
(signal.set_wakeup_fd), so no exception is ever raised in the middle of handling a
tracee's stop. Used by `run` (both modes) and `watch`'s tracer.
"""

from __future__ import annotations

import os
import select
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` imports enum for its enums, ~3 ms of run's start-up
    import _signal as signal
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional


# What `run` handles: children's news, and the signals it passes on to the command.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
RUN_SIGNALS = (signal.SIGCHLD, *FORWARDED_SIGNALS)


class SignalWakeup:
    """``w = SignalWakeup(signals, handler).start()``, ``w.wait(fds, timeout)`` in the loop,
    ``w.close()`` at the end (or ``with``): close restores the previous handlers and
    wakeup fd."""

    def __init__(self, signals: Iterable[int], handler: Callable,
                 leave_ignored: Iterable[int] = ()):
        """``leave_ignored``: those of ``signals`` that stay ignored when they are ignored
        at start (`nohup generate_dump run ...`: then the command, which inherits the
        disposition, ignores them too)."""
        self.signals = tuple(signals)
        self.handler = handler
        self.leave_ignored = frozenset(leave_ignored)

    def start(self) -> "SignalWakeup":
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Which signals were ignored before we touched them (a child started later would
        # have inherited that).
        self.ignored = frozenset(s for s in self.signals if signal.getsignal(s) == signal.SIG_IGN)
        self.old_handlers = {s: signal.signal(s, self.handler) for s in self.signals
                             if s not in self.ignored & self.leave_ignored}
        self.old_wakeup = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        return self

    def wait(self, fds: Iterable[int] = (), timeout: Optional[float] = None) -> None:
        """Sleep until a signal, one of ``fds`` is readable, or ``timeout`` passes."""
        select.select([self.rfd, *fds], [], [], timeout)
        try:
            while os.read(self.rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_wakeup)
        for s, h in self.old_handlers.items():
            signal.signal(s, h)
        os.close(self.rfd)
        os.close(self.wfd)

    def __enter__(self) -> "SignalWakeup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
