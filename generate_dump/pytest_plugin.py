"""pytest plugin: minidumps of a test that hangs, then a clear failure.

Off unless ``--dump-on-timeout=SECONDS`` is given. When one test's call phase runs longer
than that, a watchdog thread has the whole process tree of pytest dumped without changing
what the test sees of its children (see :mod:`generate_dump.pytest_helper`):

1. the session's helper process dumps every descendant of pytest it may trace, then
   pytest itself;
2. children it may not trace (Yama ``ptrace_scope=1``: only an ancestor may) are dumped by
   the watchdog, pytest being their ancestor, while the helper holds every other thread of
   pytest stopped, so that no ``waitpid`` of the test can take their ptrace stops; it
   never collects the exit of a child whose parent is pytest: that belongs to the test;
3. the test's thread is interrupted with a signal, so the test fails with the dump paths in
   its message; the report has a "minidumps" section with every dump's stacks, and the
   paths are in ``user_properties``.

Dumps are named like `generate_dump run`'s (``EXE-PID-timeout-UTCTIME.dmp``). A dump that
fails is reported in the same message and changes nothing else. With pytest-timeout, give
this plugin the shorter time (``--dump-on-timeout=50 --timeout=60``).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pytest

if TYPE_CHECKING:
    from .snapshot import Snapshot

# A signal nobody else uses, to interrupt the hanging test's thread (Linux only: the
# plugin stays inactive elsewhere).
_INTERRUPT = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None
_HELPER = "generate_dump_helper"
FREEZE_ATTEMPTS = 10


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


def _parent(pid: int) -> int:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        return int(raw[raw.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _others_stopped(exclude: set[int]) -> bool:
    """True while every thread of ours but ``exclude`` is in a ptrace stop ('t')."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return False
    for tid in tids:
        if tid in exclude:
            continue
        try:
            raw = Path(f"/proc/self/task/{tid}/stat").read_bytes()
        except OSError:
            continue  # gone
        state = raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3]
        if state not in (b"t", b"Z", b"X"):
            return False
    return True


def _preload() -> None:
    """Import now what dumping a child needs: a frozen thread may hold an import lock."""
    from . import session  # noqa: F401
    from .backends.linux import capture, ptrace_ops  # noqa: F401
    from .binfmt import elf

    elf.ElfError  # noqa: B018
    from elftools.common import exceptions  # noqa: F401
    from elftools.elf import dynamic, elffile, sections  # noqa: F401


@dataclass
class _Dump:
    role: str  # "pytest" or "child"
    pid: int
    exe: str
    path: str = ""
    error: str = ""
    summary: str = ""
    snapshot: Optional[Snapshot] = None

    def line(self) -> str:
        what = f"{self.role} {self.pid} ({self.exe})"
        return f"  {what}: {self.path}" if self.path else f"  failed: {what}: {self.error}"


class _TestHung(Exception):
    pass


class _Watchdog:
    def __init__(self, item, seconds: float, dump_dir: Path, helper):
        self.item = item
        self.seconds = seconds
        self.dump_dir = dump_dir
        self.helper = helper  # pytest_helper.Helper, or an error message
        self.main_thread = threading.get_ident()
        self.dumps: list[_Dump] = []
        self.notes: list[str] = []
        self.fired = threading.Event()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name="generate_dump-watchdog",
                                       daemon=True)

    @property
    def paths(self) -> list[str]:
        return [d.path for d in self.dumps if d.path]

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.cancelled.set()
        self.thread.join()

    def _run(self) -> None:
        if self.cancelled.wait(self.seconds):
            return
        self.fired.set()
        try:
            self._dump_tree()
        except Exception as exc:  # noqa: BLE001 - a dump failure must not change the run
            self.notes.append(f"internal error: {type(exc).__name__}: {exc}")
        if not self.cancelled.is_set() and _INTERRUPT is not None:  # set: see pytest_runtest_call
            signal.pthread_kill(self.main_thread, _INTERRUPT)

    def _dump_tree(self) -> None:
        from .pytest_helper import HelperError, set_ptracer

        self.dump_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(self.helper, str):
            self.notes.append(f"nothing dumped: {self.helper}")
            return
        try:
            helper_pid = self.helper.ready()
        except HelperError as exc:
            self.notes.append(f"nothing dumped: {exc}")
            return
        set_ptracer(helper_pid)  # Yama: the helper may trace pytest, for this moment only
        try:
            denied = self._helper_dumps()
            if denied:
                self._dump_denied(denied)
        finally:
            set_ptracer(0)

    def _helper_dumps(self) -> list[_Dump]:
        """The helper dumps the children it may trace, then pytest; returns the others."""
        from .pytest_helper import HelperError

        denied: list[_Dump] = []
        try:
            redact = "1" if self.item.config.getoption("dump_redact") else "0"
            self.helper.send(f"dump {os.getpid()} {redact} {self.dump_dir}")
            while True:
                line = self.helper.readline(600.0)
                if line == "end":
                    break
                kind, _, rest = line.partition(" ")
                if kind == "denied":
                    pid, exe, why = (rest.split(" ", 2) + ["", ""])[:3]
                    denied.append(_Dump("child", int(pid), exe, error=why))
                elif kind == "dump":
                    role, pid, exe, status, detail = (rest.split(" ", 4) + [""] * 5)[:5]
                    d = _Dump(role, int(pid), exe)
                    if status == "written":
                        d.path = detail
                    else:
                        d.error = detail
                    self.dumps.append(d)
        except (HelperError, OSError) as exc:
            self.notes.append(f"the helper failed: {exc}")
        return denied

    def _dump_denied(self, denied: list[_Dump]) -> None:
        """Children only pytest may trace (Yama ptrace_scope=1): pytest's other threads
        are frozen by the helper meanwhile, so that none of them can take a stop."""
        from .pytest_helper import HelperError

        if getattr(sys, "_is_gil_enabled", lambda: True)() is False:
            self._give_up(denied, "free-threaded Python is not supported")
            return
        _preload()
        try:
            if self.helper.gil is None:  # once per session
                self.helper.gil = self.helper.gil_futex()
        except (HelperError, OSError) as exc:
            self._give_up(denied, f"the helper failed: {exc}")
            return
        if not self.helper.gil:
            self._give_up(denied, "the GIL's futex could not be located")
            return
        me = os.getpid()
        exclude = {threading.get_native_id()}
        why = ""
        for attempt in range(FREEZE_ATTEMPTS):
            gc_was_on = gc.isenabled()
            gc.disable()  # no finalizer of the test's objects may run here (Popen.__del__)
            try:
                try:
                    answer = self.helper.freeze(sorted(exclude), self.helper.gil)
                except (HelperError, OSError) as exc:
                    # It may still freeze pytest later: closing lets it go (and end).
                    self.helper.close()
                    answer = f"failed {exc}"
                if answer == "frozen ok":
                    try:
                        for d in denied:
                            if not _others_stopped(exclude):
                                d.error = "pytest ran again too soon"
                                continue
                            self._capture_child(d, _parent(d.pid) == me)
                    finally:
                        self.helper.send("done")
                        self.helper.readline(60.0)  # "released"
                    self.dumps.extend(denied)
                    for d in denied:
                        self._write_child(d)
                    return
            finally:
                if gc_was_on:
                    gc.enable()
            kind, _, why = answer.partition(" ")
            if kind != "unsafe":
                break
            time.sleep(0.05 + 0.05 * attempt)  # let the busy threads move on, then again
        self._give_up(denied, f"pytest could not be frozen safely ({why})")

    def _give_up(self, denied: list[_Dump], why: str) -> None:
        for d in denied:
            d.error = f"{d.error}; not dumped by pytest either: {why}"
        self.dumps.extend(denied)

    def _capture_child(self, d: _Dump, ours: bool) -> None:
        from .backends.linux.capture import CaptureOptions
        from .errors import DumpError
        from .session import capture_process

        d.error = ""
        try:
            d.snapshot = capture_process(d.pid, CaptureOptions(keep_leader_exit=ours), "ptrace")
        except DumpError as exc:
            d.error = str(exc)
        except Exception as exc:  # noqa: BLE001
            d.error = f"internal error: {type(exc).__name__}: {exc}"

    def _write_child(self, d: _Dump) -> None:
        from .inspect_dump import summarize_snapshot
        from .pytest_helper import dump_path
        from .session import write_dump

        if d.snapshot is None:
            return
        try:
            path = dump_path(str(self.dump_dir), d.exe, d.pid, d.snapshot.time)
            write_dump(d.snapshot, path, redact=self.item.config.getoption("dump_redact"))
            d.path = path
        except Exception as exc:  # noqa: BLE001
            d.error = f"could not write the dump: {exc}"
            return
        try:
            d.summary = summarize_snapshot(d.snapshot)
        except Exception as exc:  # noqa: BLE001 - a summary must not break the report
            d.summary = f"(no summary: {exc})"
        d.snapshot = None

    def message(self) -> str:
        lines = [f"test ran longer than {self.seconds:g} s (--dump-on-timeout); minidumps:"]
        lines += [d.line() for d in self.dumps] or ["  (none written)"]
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)

    def stacks(self) -> str:
        """Where every thread was, per dump (for the report section)."""
        from .inspect_dump import summarize_file

        out = []
        for d in self.dumps:
            if not d.path:
                continue
            if not d.summary:
                try:
                    d.summary = summarize_file(d.path)
                except Exception as exc:  # noqa: BLE001 - a summary must not break the report
                    d.summary = f"(no summary: {exc})"
            out.append(f"{d.role} {d.pid} ({d.exe}) {d.path}:\n{d.summary}")
        return "\n\n".join(out)


def _helper(config):
    """The session's helper process, started before the first test runs (see
    pytest_helper); an error message if it cannot be started."""
    helper = getattr(config, _HELPER, None)
    if helper is None:
        from .pytest_helper import Helper

        try:
            helper = Helper()
        except Exception as exc:  # noqa: BLE001 - the plugin must not break the run
            helper = f"the helper process could not be started: {exc}"
        setattr(config, _HELPER, helper)
    return helper


def pytest_unconfigure(config) -> None:
    helper = getattr(config, _HELPER, None)
    if helper is not None and not isinstance(helper, str):
        helper.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    seconds = item.config.getoption("dump_on_timeout")
    if not seconds or not sys.platform.startswith("linux") or _INTERRUPT is None:
        yield
        return
    dump_dir = Path(item.config.getoption("dump_dir")).absolute()
    dog = _Watchdog(item, seconds, dump_dir, _helper(item.config))

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
