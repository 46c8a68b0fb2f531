"""pytest plugin: minidumps of a test that hangs, then a clear failure.

Off unless ``--dump-on-timeout=SECONDS`` is given. When one test's call phase runs longer
than that, a watchdog thread dumps the whole process tree of pytest without changing
what the test sees of its children (see :mod:`generate_dump.pytest_helper` for why it
takes two processes):

1. the helper process freezes every thread of pytest except the watchdog's;
2. the watchdog, alone, dumps each descendant process of pytest (deepest first; pytest is
   their ancestor, so this works under Yama ``ptrace_scope=1``), never collecting the exit
   of a child whose parent is pytest: that belongs to the test;
3. the helper lets pytest run again and writes its dump; the watchdog writes the children's;
4. the test's thread is interrupted with a signal, so the test fails with the dump paths in
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
from typing import Optional

import pytest

# A signal nobody else uses, to interrupt the hanging test's thread (Linux only: the
# plugin stays inactive elsewhere).
_INTERRUPT = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None
_HELPER = "generate_dump_helper"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("generate_dump", "minidumps of hanging tests (generate_dump)")
    group.addoption("--dump-on-timeout", type=float, default=None, metavar="SECONDS",
                    help="when a test runs longer than SECONDS, write minidumps of pytest and "
                         "its child processes, then fail the test")
    group.addoption("--dump-dir", default="minidumps", metavar="DIR",
                    help="directory for those minidumps (default: minidumps)")


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of every process below ``pid``, deepest first."""
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
    out: list[tuple[int, int, int]] = []

    def walk(p: int, depth: int) -> None:
        for c in children.get(p, []):
            out.append((depth, c, p))
            walk(c, depth + 1)

    walk(pid, 1)
    return [(c, p) for _, c, p in sorted(out, key=lambda x: -x[0])]


def _exe(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).replace(" (deleted)", "")
    except OSError:
        return "process"


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
    from .backends.linux import capture, ptrace_ops  # noqa: F401
    from .modules import elf

    elf.ElfError  # noqa: B018
    from elftools.common import exceptions  # noqa: F401
    from elftools.elf import dynamic, elffile, sections  # noqa: F401


class _GilPartner(threading.Thread):
    """A thread left running beside the watchdog while pytest is frozen.

    A frozen thread may have asked for the GIL just before it was stopped; CPython then
    makes the GIL's holder, on its next release, wait until another thread has taken it.
    This thread takes it, so the watchdog never waits for a frozen one."""

    def __init__(self) -> None:
        super().__init__(name="generate_dump-gil-partner", daemon=True)
        self.tid = 0
        self.started_ok = threading.Event()
        self.stop = False

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.started_ok.set()
        while not self.stop:
            time.sleep(0.001)


@dataclass
class _Dump:
    role: str  # "pytest" or "child"
    pid: int
    exe: str
    path: str = ""
    error: str = ""
    summary: str = ""
    snapshot: object = None

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
        if not self.cancelled.is_set():
            signal.pthread_kill(self.main_thread, _INTERRUPT)

    def _dump_tree(self) -> None:
        from .pytest_helper import HelperError, set_ptracer

        me = os.getpid()
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(self.helper, str):
            self.notes.append(f"pytest and its children not dumped: {self.helper}")
            return
        try:
            helper_pid = self.helper.ready()
        except HelperError as exc:
            self.notes.append(f"pytest and its children not dumped: {exc}")
            return
        pytest_dump = _Dump("pytest", me, _exe(me))
        self.dumps.append(pytest_dump)
        _preload()
        set_ptracer(helper_pid)
        try:
            children = self._freeze_and_capture_children(helper_pid, pytest_dump)
            for d in children:  # pytest runs again: the slow part
                self._write_child(d)
            if not pytest_dump.error:
                try:
                    answer = self.helper.readline(300.0)
                except HelperError as exc:
                    answer = f"failed {exc}"
                kind, _, rest = answer.partition(" ")
                if kind == "written":
                    pytest_dump.path = rest
                else:
                    pytest_dump.error = rest or answer
        finally:
            set_ptracer(0)
        self.dumps.extend(children)

    def _freeze_and_capture_children(self, helper_pid: int, pytest_dump: _Dump) -> list[_Dump]:
        from .pytest_helper import HelperError

        partner = _GilPartner()
        partner.start()
        partner.started_ok.wait()
        exclude = {threading.get_native_id(), partner.tid}
        gc_was_on = gc.isenabled()
        gc.disable()  # no finalizer of the test's objects may run here (Popen.__del__ waits)
        children: list[_Dump] = []
        frozen = False
        try:
            try:
                answer = self.helper.freeze(sorted(exclude), str(self.dump_dir))
            except HelperError as exc:
                answer = f"failed {exc}"
            kind, _, rest = answer.partition(" ")
            if kind != "frozen":
                pytest_dump.error = rest or answer
                self.notes.append("children not dumped: pytest could not be frozen")
                return []
            frozen = True
            if rest != "ok":
                self.notes.append(f"children not dumped: some threads of pytest could not be "
                                  f"stopped ({rest.split(' ', 1)[-1]})")
                return []
            if getattr(sys, "_is_gil_enabled", lambda: True)() is False:
                self.notes.append("children not dumped: free-threaded Python is not supported")
                return []
            me = os.getpid()
            for pid, ppid in _descendants(me):
                if pid == helper_pid:
                    continue
                if not _others_stopped(exclude):
                    self.notes.append("children not dumped: pytest ran again too soon")
                    break
                children.append(self._capture_child(pid, ppid == me))
            return children
        finally:
            if frozen:
                try:
                    self.helper.send("done")
                except OSError:
                    pass
            partner.stop = True
            partner.join()
            if gc_was_on:
                gc.enable()

    def _capture_child(self, pid: int, ours: bool) -> _Dump:
        from .backends.linux import capture
        from .backends.linux.capture import CaptureOptions
        from .errors import DumpError

        d = _Dump("child", pid, _exe(pid))
        try:
            d.snapshot = capture(pid, CaptureOptions(keep_leader_exit=ours))
        except DumpError as exc:
            d.error = str(exc)
        except Exception as exc:  # noqa: BLE001
            d.error = f"internal error: {type(exc).__name__}: {exc}"
        return d

    def _write_child(self, d: _Dump) -> None:
        from .inspect_dump import summarize_snapshot
        from .output import write_snapshot
        from .pytest_helper import dump_path

        if d.snapshot is None:
            return
        try:
            path = dump_path(str(self.dump_dir), d.exe, d.pid, d.snapshot.time)
            write_snapshot(d.snapshot, path)
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
