"""`generate_dump run`'s default mode: watch the command without tracing it.

Nothing is traced until a dump is needed, so the command runs at full speed (every fork,
exec and signal of a traced process is a round trip through the tracer; see README):

- crashes: the command gets a raised RLIMIT_CORE soft limit (inherited by every
  descendant), the kernel writes a core file when one of them dies of a crash signal, and
  run turns that core into a minidump (``convert_core``). run learns that a core is
  complete from inotify (IN_CLOSE_WRITE) on the directories core_pattern sends cores to:
  for a relative pattern, the working directories of the tree, found when the command
  starts and by a scan of /proc every SCAN_INTERVAL seconds; a wait status with
  WCOREDUMP of a child (the command, or an orphan reparented to run) says one must exist.
  A core that would not exist without run (the command's own soft limit was 0) is deleted
  once converted;
- the deadline: every descendant (found through /proc ppid links; run is a child
  subreaper, so orphaned and daemonised descendants stay below it) is seized, copied and
  released, deepest first; then the tree gets SIGTERM and, after --kill-after, SIGKILL;
- signals sent to run are forwarded to the command's process group (optionally after
  dumping the tree).
"""

from __future__ import annotations

import os
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` imports enum for its enums, ~3 ms of run's start-up
    import _signal as signal
import time

from ...errors import DumpError
from . import coredumps
from ...platform.linux import proctree
from .spawn import spawn

if TYPE_CHECKING:
    from typing import Callable, Optional

    from ...snapshot import Snapshot
from .run_events import DumpEvent, exe_name, exit_status, one_line
from .run_loop import RunLoop
from .wakeup import FORWARDED_SIGNALS
from ...platform.linux.signals import CRASH_SIGNALS, signal_name

SCAN_INTERVAL = 1.0
# After a sign of a crash whose core was not seen (see _sweep): how deep below the working
# directories run knows, and how many directory entries at most, it looks for the core.
SWEEP_DEPTH = 4
SWEEP_ENTRIES = 20000
SWEEP_SECONDS = 0.5  # the most a sweep may take after a sign of a crash
SWEEP_SHARE = 0.01  # a run that ended well: a sweep of at most this share of its time


class Supervisor(RunLoop):
    """Run COMMAND untraced; see the module docstring."""

    def __init__(self, argv: list[str], *, timeout: Optional[float], max_dumps: int,
                 kill_after: float, write: Callable[["Snapshot", int, str, str], str],
                 on_dump: Callable[[DumpEvent], None] = lambda e: None,
                 dump_on_signal: bool = False, core_limit: int = 2 << 30,
                 convert_core: Optional[Callable[[str], "Snapshot"]] = None,
                 notice: Callable[[str], None] = lambda s: None):
        self.argv = argv
        self.timeout = timeout
        self.max_dumps = max_dumps
        self.kill_after = kill_after
        self.write = write
        self.on_dump = on_dump
        self.dump_on_signal = dump_on_signal
        self.dumped_on_signal = False
        self.core_limit = core_limit
        self.convert_core = convert_core
        self.notice = notice
        self._init_loop()
        self.next_scan = 0.0
        self.root = 0
        self.root_status: Optional[int] = None
        self.own_group = True
        self.pattern: Optional[coredumps.CorePattern] = None
        self.watch: Optional[coredumps.DirectoryWatch] = None
        self.delete_cores = False
        self.known: set[int] = set()  # pids seen in the tree
        self.handled_cores: set[tuple[int, int]] = set()  # (device, inode)
        self.expected: dict[int, tuple[int, bool]] = {}  # child -> (crash signal, WCOREDUMP)
        self.names: dict[int, str] = {}  # pid -> executable name, for children that die
        self.cored: set[int] = set()  # pids whose core was handled
        self.found_cores: list[str] = []  # found by looking, not by inotify (see _look_in)
        self.cwds: set[str] = set()  # working directories of the tree seen so far
        self.started_wall = 0.0  # time.time() when the command started
        self.handler = False  # kernel.core_pattern pipes cores to generate_dump core-handler
        self.sid = os.getsid(0)
        self.me = os.getpid()

    # -- start -------------------------------------------------------------------------------

    def _crash_setup(self) -> Optional[tuple[int, int]]:
        """Decide how crashes are caught; returns the RLIMIT_CORE to give the command."""
        if self.convert_core is None or self.core_limit <= 0:
            return None
        pattern = coredumps.system_core_pattern()
        if pattern.pipe and coredumps.is_our_handler(pattern):
            # The kernel pipes every crash to it whatever RLIMIT_CORE says: nothing to do.
            self.handler = True
            self.notice("crashes are dumped by generate_dump core-handler "
                        "(kernel.core_pattern), into its --dir")
            return None
        if pattern.pipe:
            self.notice(f"crash capture needs --trace here, or generate_dump core-handler as "
                        f"kernel.core_pattern: core dumps go to {pattern.text!r}")
            return None
        if pattern.name is None:
            self.notice(f"crash capture needs --trace here: cannot follow core files named "
                        f"by kernel.core_pattern = {pattern.text!r}")
            return None
        try:
            self.watch = coredumps.DirectoryWatch()
        except OSError as exc:
            self.notice(f"crash capture needs --trace here: inotify: {exc.strerror}")
            return None
        soft, hard = coredumps.core_soft_limit()
        if hard == 0:
            self.notice("crash capture needs --trace here: the hard RLIMIT_CORE is 0, so "
                        "no core file can be written (ulimit -H -c)")
            self.watch.close()
            self.watch = None
            return None
        self.pattern = pattern
        self.delete_cores = soft == 0
        if pattern.relative:
            self._watch_cwd(os.getcwd())
        else:
            self.watch.add(pattern.directory)
        return coredumps.raised_core_limit(self.core_limit)

    def _watch_cwd(self, cwd: Optional[str]) -> None:
        if cwd and self.watch is not None and self.pattern is not None:
            self.cwds.add(cwd)
            self.watch.add(self.pattern.directory_for(cwd))

    def start(self) -> int:
        # Like timeout(1), the command gets its own process group so that signals can be
        # forwarded to all of it; at an interactive terminal it stays in ours instead, so
        # that it can read the terminal (and Ctrl-C reaches it directly).
        self.own_group = not os.isatty(0)
        proctree.set_child_subreaper()
        limit = self._crash_setup()
        self._start_wakeup()
        try:
            self.root = spawn(self.argv, own_group=self.own_group, core_limit=limit,
                              ignored=self._ignored_by_caller())
        except BaseException:
            self._stop_wakeup()
            raise
        self._started(time.monotonic(), time.time())
        return self.root

    def adopt(self, pid: int, started: float, started_wall: float) -> int:
        """Take over COMMAND, already started as start() would have by the native launcher
        (launcher/generate_dump.c) at ``started`` (time.monotonic()) and ``started_wall``
        (time.time()), with the forwarded signals blocked until now; see start()."""
        self.own_group = not os.isatty(0)
        # Child subreaper: set by the launcher (a condition of its early start), and kept
        # across execve.
        self._crash_setup()  # the launcher gave the command the RLIMIT_CORE this decides
        self._start_wakeup()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # pending ones arrive
        self.root = pid
        self._started(started, started_wall)
        if self.watch is not None:  # cores the kernel wrote before the watches existed
            for directory in self.watch.watched:
                self._look_in(directory, started_wall - 1.0)  # file times are coarse
        return self.root

    def _started(self, when: float, wall: float) -> None:
        self.started = when
        self.started_wall = wall
        self.next_scan = time.monotonic() + SCAN_INTERVAL
        self.known.add(self.root)
        self.names[self.root] = os.path.basename(self.argv[0])

    # -- the loop's hooks (run_loop.RunLoop.run) -------------------------------------------------

    def _collect(self) -> bool:
        self._reap()
        self._take_cores()
        if self.root_status is None:
            return False
        return not self.result.timed_out or not proctree.descendants(self.me)

    def _root_done(self) -> bool:
        return self.root_status is not None

    def _tick(self, now: float) -> Optional[float]:
        """With a relative core_pattern, look for new working directories every
        SCAN_INTERVAL seconds."""
        if self.pattern is None or not self.pattern.relative:
            return None
        if now >= self.next_scan:
            self._scan()
            self.next_scan = time.monotonic() + SCAN_INTERVAL
        return self.next_scan

    def _wait_fds(self) -> list[int]:
        return [self.watch.fd] if self.watch else []

    def _kill_tree(self) -> None:
        proctree.signal_all(proctree.descendants(self.me), signal.SIGKILL)

    def _after_loop(self) -> None:
        if not self.result.timed_out:
            # If the command failed, a crash below it may have gone unseen: look. If it
            # ended well, a core run made the kernel write may still be left behind: look
            # for as long as costs little against the whole run (README, What it costs).
            took = time.monotonic() - self.started
            self._sweep(SWEEP_SECONDS if self.root_status else min(SWEEP_SECONDS,
                                                                   took * SWEEP_SHARE))
        if self.watch is not None:
            self.watch.close(exiting=self.exiting)

    def _final_status(self) -> int:
        return 124 if self.result.timed_out else (self.root_status or 0)

    def _reap(self) -> None:
        """Collect exits of our children: the command, and orphans reparented to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                if self.root_status is None:
                    self.root_status = 0  # reaped elsewhere (cannot happen); do not hang
                return
            if pid == 0:
                return
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS \
                    and pid not in self.cored:
                self.expected[pid] = (os.WTERMSIG(status), os.WCOREDUMP(status))
            if pid == self.root:
                self.root_status = exit_status(status)

    def _scan(self) -> None:
        for pid in proctree.descendants(self.me):
            if pid not in self.known:
                self.known.add(pid)
                self.names[pid] = exe_name(pid)
            self._watch_cwd(proctree.cwd_of(pid))

    # -- crashes -----------------------------------------------------------------------------

    def _ours(self, ids: coredumps.CoreIds) -> bool:
        """Did a process of our tree write this core? Known to us, or a child of one, or in
        the command's process group (in our session when the command shares our group, at
        a terminal). Another job's core is left alone: it is not ours to convert or delete."""
        if ids.pid in self.known or ids.ppid in self.known or ids.ppid == self.me \
                or ids.pid in self.expected:
            return True
        return ids.pgrp == self.root if self.own_group else ids.sid == self.sid

    def _look_in(self, directory: str, since: float,
                 entries: Optional[list[os.DirEntry]] = None) -> None:
        """Note in found_cores the files of ``directory`` (its ``entries``, when already
        read) that core_pattern names, changed since ``since``: cores inotify did not
        report (written before a watch existed, or where none is)."""
        for entry in _entries(directory) if entries is None else entries:
            try:
                if self.pattern is not None and self.pattern.name is not None \
                        and self.pattern.name.match(entry.name) \
                        and not entry.is_dir(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_mtime >= since \
                        and entry.path not in self.found_cores:
                    self.found_cores.append(entry.path)
            except OSError:
                pass

    def _found_cores_done(self) -> list[str]:
        """Those of found_cores whose writer has gone (or is a zombie): the kernel closes
        a core before the process exits, so these are complete; the others are still being
        written (inotify reports them when closed, where it watches)."""
        done = []
        for path in list(self.found_cores):
            ids = coredumps.core_ids(path)
            if ids is not None and proctree.is_running(ids.pid):
                continue
            self.found_cores.remove(path)
            if ids is not None:
                done.append(path)
        return done

    def _take_cores(self) -> None:
        """Convert the cores written since the last look. A core is closed before its
        process's exit is reported, so a child reaped just before has its core here."""
        if self.watch is not None and self.pattern is not None and self.pattern.name is not None:
            for path in self.watch.read():
                if self.pattern.name.match(os.path.basename(path)):
                    self._on_core(path)
        if any(dumped for _, dumped in self.expected.values()):
            self._sweep(SWEEP_SECONDS)  # a child dumped core where run was not looking
        for path in self._found_cores_done() if self.found_cores else ():
            self._on_core(path)
        for pid, (sig, dumped) in list(self.expected.items()):  # no core arrived: say so
            del self.expected[pid]
            if self.handler:
                why = "generate_dump core-handler writes it (see the note above)"
            elif self.watch is None:
                why = "crash capture is off (see the note above, or use --trace)"
            elif dumped:
                why = "its core file was written where run does not look (use --trace)"
            else:
                why = "the kernel wrote no core file for it (use --trace)"
            event = DumpEvent(pid=pid, reason=signal_name(sig), path=None,
                              exe=self.names.get(pid, "process"), error=why)
            self.result.dumps.append(event)
            self.on_dump(event)

    def _sweep(self, seconds: float) -> None:
        """Look for cores that the watches missed: with a relative core_pattern a core lands
        in the crashing process's working directory, which run learns only by its scan
        every SCAN_INTERVAL (`cd build && ./test` crashing at once is not seen). Called
        after a sign of such a crash (a child that dumped core with no core seen, or the
        command failing) and, for as long as costs little, at the end of a run that ended
        well (a core run caused must not be left behind). It walks the directories below
        those known, breadth first, at most SWEEP_DEPTH levels and SWEEP_ENTRIES entries
        (hidden directories left out),
        for files core_pattern names, changed since the command started (_look_in); those
        complete are converted (and, when run caused them, deleted) if they are our tree's,
        and left alone if not. It stops after ``seconds``."""
        pattern = self.pattern
        if self.watch is None or pattern is None or pattern.name is None \
                or not pattern.relative or not self.cwds or seconds < 0.002:
            return
        give_up = time.monotonic() + seconds
        since = self.started_wall - 1.0  # file times are coarse
        budget = SWEEP_ENTRIES
        queue = [(cwd, 0) for cwd in sorted(self.cwds)]
        visited: set[str] = set()
        while queue and budget > 0 and time.monotonic() < give_up:
            directory, depth = queue.pop(0)
            if directory in visited:
                continue
            visited.add(directory)
            entries = _entries(directory)
            budget -= len(entries)
            cores_in = pattern.directory_for(directory)
            self._look_in(cores_in, since, entries if cores_in == directory else None)
            for entry in entries if depth < SWEEP_DEPTH else ():
                try:
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        queue.append((entry.path, depth + 1))
                except OSError:
                    pass
        for path in self._found_cores_done():
            self._on_core(path)

    def _on_core(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self.handled_cores:
            return
        ids = coredumps.core_ids(path)
        if ids is None or not self._ours(ids):
            return
        self.handled_cores.add(key)
        self.cored.add(ids.pid)
        self.expected.pop(ids.pid, None)
        reason = signal_name(ids.signal, "crash")
        event = DumpEvent(pid=ids.pid, reason=reason, path=None, exe=ids.fname or "process")
        step = "cannot read core file " + path
        try:
            if len(self.result.dumps) >= self.max_dumps:
                event.error = f"not dumped: --max-dumps {self.max_dumps} reached"
            else:
                assert self.convert_core is not None  # cores are watched only with it
                snap = self.convert_core(path)
                event.snapshot = snap
                event.exception = snap.exception
                main = next((m for m in snap.modules if m.is_main), None)
                if main is not None:
                    event.exe = os.path.basename(main.path) or event.exe
                step = "cannot write the minidump"
                event.path = self.write(snap, ids.pid, event.exe, event.reason)
        except Exception as exc:  # noqa: BLE001 - a failed dump must not end the run
            detail = str(exc) if isinstance(exc, DumpError) else one_line(exc)
            event.error = f"{step}: {detail}"
        finally:
            if self.delete_cores:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        self.result.dumps.append(event)
        self.on_dump(event)

    # -- dumps of live processes ---------------------------------------------------------------

    def _record(self, pid: int, reason: str) -> None:
        from ...session import capture_process

        event = DumpEvent(pid=pid, reason=reason, path=None, exe=exe_name(pid))
        try:
            if len(self.result.dumps) >= self.max_dumps:
                event.error = f"not dumped: --max-dumps {self.max_dumps} reached"
            else:
                snap = capture_process(pid, backend="ptrace")
                event.snapshot = snap
                event.path = self.write(snap, pid, event.exe, reason)
        except Exception as exc:  # noqa: BLE001 - a failed dump must not end the run
            event.error = str(exc) if isinstance(exc, DumpError) else one_line(exc)
        self.result.dumps.append(event)
        self.on_dump(event)

    def _dump_all(self, reason: str) -> None:
        tree = proctree.descendants(self.me)
        for pid in proctree.deepest_first(tree):
            self._record(pid, reason)

    def _on_timeout(self) -> None:
        self.result.timed_out = True
        self._dump_all("timeout")
        tree = proctree.descendants(self.me)
        proctree.signal_all(proctree.deepest_first(tree), signal.SIGTERM)

    def _on_signal(self, sig: int) -> None:
        if self.dump_on_signal and not self.dumped_on_signal:
            self.dumped_on_signal = True
            self._dump_all(signal_name(sig).lower())
        self.forward(sig)

    def forward(self, sig: int) -> None:
        if not self.root or self.root_status is not None:
            return
        try:
            if self.own_group:
                os.killpg(self.root, sig)
            elif sig not in (signal.SIGINT, signal.SIGQUIT) or not os.isatty(0):
                os.kill(self.root, sig)
        except OSError:
            pass


def _entries(directory: str) -> list[os.DirEntry]:
    """The entries of ``directory``; [] if it cannot be read."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError:
        return []
