"""Signals that wake an event loop instead of interrupting it.

The handlers only note what arrived; the kernel-level wakeup goes through a self-pipe
(signal.set_wakeup_fd), so no exception is ever raised in the middle of handling a
tracee's stop. Used by `run` (both modes) and `watch`'s tracer.
"""

from __future__ import annotations

import os
import select
import signal
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional


# What `run` handles: children's news, and the signals it passes on to the command.
RUN_SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class SignalWakeup:
    """``w = SignalWakeup(signals, handler).start()``, ``w.wait(fds, timeout)`` in the loop,
    ``w.close()`` at the end (or ``with``): close restores the previous handlers and
    wakeup fd."""

    def __init__(self, signals: Iterable[int], handler: Callable):
        self.signals = tuple(signals)
        self.handler = handler

    def start(self) -> "SignalWakeup":
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.old_handlers = {s: signal.signal(s, self.handler) for s in self.signals}
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
