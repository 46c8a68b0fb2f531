"""What one run remembers about symbol servers: which are down, what was already said.

A server that refuses connections, times out or answers HTML is marked down at its first
failure and never asked again in this process, so an unreachable server costs at most one
timeout per run (the first requests to it run in parallel and time out together), and the
user reads one warning line per failing server. Other problems (a file with the wrong
build id, a truncated download, a file over the size cap, a cache that cannot be written)
are one warning each, never repeated word for word.

:func:`budget` bounds the downloads of a block of code (the summaries of ``run``, the
pytest plugin and ``--print-stacks``): requests started after the deadline fail at once,
requests in flight stop at it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

PROG = "generate_dump"

_lock = threading.Lock()
_down: dict[str, str] = {}  # server URL -> why
_said: set[str] = set()
_deadline: Optional[float] = None

# Where warnings go; tests and embedders may replace it (one line, no trailing newline).
warn_sink: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One warning line on stderr, at most once per run for the same text."""
    with _lock:
        if message in _said:
            return
        _said.add(message)
    _progress_clear()
    try:
        warn_sink(f"{PROG}: warning: {message}")
    except (OSError, ValueError):
        pass  # stderr closed: nowhere to say it


def is_down(server: str) -> bool:
    with _lock:
        return server in _down


def mark_down(server: str, why: str, what: str) -> None:
    """Skip ``server`` for the rest of the run; ``what`` names it for the user."""
    with _lock:
        first = server not in _down
        if first:
            _down[server] = why
    if first:
        warn(f"{what} {server}: {why}; not asked again in this run")


def fetch_failed(exc, server: str, url: str, *, kind: str, what: str, limits: str) -> None:
    """Say why a download failed, once: the run's time limit (``limits`` names which),
    a server that is down (``what`` names it; skipped from now on), or this one file
    (``kind`` names the store)."""
    if exc.budget:
        warn(f"symbol downloads stopped at their time limit ({limits})")
    elif exc.server_down:
        mark_down(server, str(exc), what)
    else:
        warn(f"{kind} {url}: {exc}")


def deadline() -> Optional[float]:
    return _deadline


@contextlib.contextmanager
def budget(seconds: Optional[float]) -> Iterator[None]:
    """Downloads started inside end by ``seconds`` from now (None: no limit)."""
    global _deadline
    if seconds is None:
        yield
        return
    with _lock:
        saved = _deadline
        mine = time.monotonic() + seconds
        _deadline = mine if saved is None else min(saved, mine)
    try:
        yield
    finally:
        with _lock:
            _deadline = saved


def reset() -> None:
    """Forget down servers and warnings (a new run inside the same process: tests)."""
    global _deadline
    with _lock:
        _down.clear()
        _said.clear()
        _deadline = None


# -- parallel work with a progress line ----------------------------------------------------

_progress_shown = False


def _progress_clear() -> None:
    global _progress_shown
    if _progress_shown:
        _progress_shown = False
        try:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _progress(done: int, total: int, label: str) -> None:
    global _progress_shown
    try:
        sys.stderr.write(f"\r\033[K{label}: {done}/{total}")
        sys.stderr.flush()
        _progress_shown = True
    except (OSError, ValueError):
        pass


def _at_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_parallel(jobs: Sequence[Callable[[], object]], label: str, workers: int = 8,
                 wait: Optional[float] = None) -> None:
    """Run ``jobs`` on daemon threads (a run never waits at exit for a slow server); show
    ``label: done/total`` on stderr while they run if stderr is a terminal. Returns when
    all are done, or after ``wait`` seconds (the rest go on in the background)."""
    if not jobs:
        return
    pending = list(jobs)
    total = len(pending)
    done = [0]
    cond = threading.Condition()

    def worker() -> None:
        while True:
            with cond:
                if not pending:
                    return
                job = pending.pop(0)
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a failed lookup leaves a module unnamed
                warn(f"symbol lookup failed: {type(exc).__name__}: {exc}")
            with cond:
                done[0] += 1
                cond.notify_all()

    for _ in range(min(workers, total)):
        threading.Thread(target=worker, name="gd-symbols", daemon=True).start()
    show = _at_terminal()
    end = None if wait is None else time.monotonic() + wait
    with cond:
        while done[0] < total:
            if show:
                _progress(done[0], total, label)
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            cond.wait(0.2 if left is None else min(0.2, left))
    if show:
        _progress_clear()
