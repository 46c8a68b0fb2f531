"""pytest plugin: minidumps of a test that hangs, then a clear failure.

Off unless ``--dump-on-timeout=SECONDS`` is given. When one test's call phase runs longer
than that, a watchdog thread

1. dumps every descendant process of pytest (pytest is their ancestor, so this works
   under Yama ptrace_scope=1),
2. dumps the pytest process itself through a helper process, which pytest allows to trace
   it with prctl(PR_SET_PTRACER, helper) for that moment only,
3. interrupts the test's thread with a signal, so the test fails with the dump paths in its
   message; the paths are also in the report (a "minidumps" section and user_properties).

With pytest-timeout, give this plugin the shorter time (``--dump-on-timeout=50
--timeout=60``): the dumps are taken while the test still hangs, and the test fails here
before pytest-timeout would kill it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PR_SET_PTRACER = 0x59616D61
# A signal nobody else uses, to interrupt the hanging test's thread (Linux only: the
# plugin stays inactive elsewhere).
_INTERRUPT = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None


def pytest_addoption(parser) -> None:
    group = parser.getgroup("generate_dump", "minidumps of hanging tests (generate_dump)")
    group.addoption("--dump-on-timeout", type=float, default=None, metavar="SECONDS",
                    help="when a test runs longer than SECONDS, write minidumps of pytest and "
                         "its child processes, then fail the test")
    group.addoption("--dump-dir", default="minidumps", metavar="DIR",
                    help="directory for those minidumps (default: minidumps)")
    # --redact (issue 19): on by default, as CI uploads these dumps; README "Redaction".
    group.addoption("--dump-no-redact", dest="dump_redact", action="store_false", default=True,
                    help="write the minidumps without --redact (by default they are "
                         "sanitized for upload)")


def _descendants(pid: int) -> list[int]:
    """Processes below ``pid``, deepest first."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
            ppid = int(raw[raw.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out: list[tuple[int, int]] = []

    def walk(p: int, depth: int) -> None:
        for c in children.get(p, []):
            out.append((depth, c))
            walk(c, depth + 1)

    walk(pid, 1)
    return [p for _, p in sorted(out, key=lambda x: -x[0])]


class _TestHung(Exception):
    pass


class _Watchdog:
    def __init__(self, item, seconds: float, dump_dir: Path):
        self.item = item
        self.seconds = seconds
        self.dump_dir = dump_dir
        self.main_thread = threading.get_ident()
        self.paths: list[str] = []
        self.errors: list[str] = []
        self.fired = threading.Event()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name="generate_dump-watchdog",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.cancelled.set()
        self.thread.join()

    def _name(self, pid: int, what: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        test = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.item.name)[:80]
        return self.dump_dir / f"{test}-{what}-{pid}-timeout-{stamp}.dmp"

    def _run(self) -> None:
        if self.cancelled.wait(self.seconds):
            return
        self.fired.set()
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        for pid in _descendants(os.getpid()):
            self._dump_child(pid)
        self._dump_self()
        if not self.cancelled.is_set():
            signal.pthread_kill(self.main_thread, _INTERRUPT)

    def _dump_child(self, pid: int) -> None:
        from .errors import DumpError
        from .backends.linux import capture
        from .output import write_snapshot

        path = self._name(pid, "child")
        try:
            write_snapshot(capture(pid), str(path),
                           redact=self.item.config.getoption("dump_redact"))
            self.paths.append(str(path))
        except DumpError as exc:
            self.errors.append(f"child {pid}: {exc}")

    def _dump_self(self) -> None:
        """A helper process dumps pytest; it may trace us only while we say so."""
        path = self._name(os.getpid(), "pytest")
        helper = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; sys.stdin.readline(); from generate_dump.cli import main; "
             "main(sys.argv[1:])", str(os.getpid()), "-o", str(path),
             *(["--redact"] if self.item.config.getoption("dump_redact") else [])],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PTRACER, helper.pid, 0, 0, 0)
        try:
            _, err = helper.communicate("go\n", timeout=300)
        except subprocess.TimeoutExpired:
            helper.kill()
            _, err = helper.communicate()
        finally:
            libc.prctl(PR_SET_PTRACER, 0, 0, 0, 0)
        if helper.returncode == 0:
            self.paths.append(str(path))
        else:
            self.errors.append(f"pytest {os.getpid()}: {err.strip()}")

    def message(self) -> str:
        lines = [f"test ran longer than {self.seconds:g} s (--dump-on-timeout); minidumps:"]
        lines += [f"  {p}" for p in self.paths] or ["  (none written)"]
        lines += [f"  failed: {e}" for e in self.errors]
        return "\n".join(lines)

    def stacks(self) -> str:
        """Where every thread was, per dump (for the report section)."""
        from .inspect_dump import summarize_file

        out = []
        for path in self.paths:
            try:
                out.append(f"{path}:\n{summarize_file(path)}")
            except Exception as exc:  # noqa: BLE001 - a summary must not break the report
                out.append(f"{path}: no summary ({exc})")
        return "\n\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    seconds = item.config.getoption("dump_on_timeout")
    if not seconds or not sys.platform.startswith("linux") or _INTERRUPT is None:
        yield
        return
    dump_dir = Path(item.config.getoption("dump_dir")).absolute()
    dog = _Watchdog(item, seconds, dump_dir)

    def interrupt(signum, frame):
        raise _TestHung()

    old = signal.signal(_INTERRUPT, interrupt)
    dog.start()
    try:
        outcome = yield
    finally:
        dog.cancel()
        signal.signal(_INTERRUPT, old)
    if dog.fired.is_set():
        item.user_properties.append(("minidumps", dog.paths))
        item.add_report_section("call", "minidumps", dog.message() + "\n\n" + dog.stacks())
        exc = outcome.excinfo[1] if outcome.excinfo else None
        if exc is None or isinstance(exc, _TestHung):
            outcome.force_exception(pytest.fail.Exception(dog.message(), pytrace=False))
