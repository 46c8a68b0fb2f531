"""`generate_dump watch TARGET... [TRIGGERS]`: the click command and the watching loop.

Nothing is traced while watching: each round reads /proc for every target, asks each
trigger, and only a firing trigger attaches (the ptrace backend) for the dump. The loop
sleeps between rounds; SIGINT/SIGTERM/SIGHUP end it between two rounds, so no target is
ever left stopped or traced.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import click

from ..errors import DumpError, NoSpaceLeft, OutputError, TargetNotFound
from . import procstat
from .targets import Discovery, TargetSpec, resolve_cgroup
from .triggers import Every, Firing, Trigger, TriggerState

PROG = "generate_dump watch"


def _say(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


@dataclass
class Watched:
    """One process (pid + start time) being watched."""

    pid: int
    exe: str
    state: TriggerState
    prev: Optional[procstat.ProcSample] = None
    dumps: int = 0
    cooldown_until: float = 0.0
    done: bool = False


@dataclass
class WatchResult:
    paths: list[str] = field(default_factory=list)
    failures: int = 0


@dataclass
class DumpSettings:
    out_dir: str
    memory: str = "referenced"
    max_referenced: int = 8 << 20
    redact: bool = False


def dump_process(pid: int, exe: str, firing: Firing, settings: DumpSettings,
                 freezer_factory=None, exception=None) -> str:
    """Capture ``pid`` now and write it with the trigger recorded; returns the path.
    ``freezer_factory``: how to stop threads we already trace (see traced.py)."""
    from ..backends.linux.capture import CaptureOptions
    from ..run_command import dump_file_name
    from ..session import capture_and_write
    from ..snapshot import TriggerInfo

    when = time.time()
    path = os.path.join(settings.out_dir, dump_file_name(exe, pid, firing.label, when))
    stem, n = path[:-len(".dmp")], 2
    while os.path.lexists(path):  # two dumps of one process within a second
        path, n = f"{stem}-{n}.dmp", n + 1
    info = TriggerInfo(trigger=firing.trigger, threshold=firing.threshold, value=firing.value,
                       time=int(when))
    options = CaptureOptions(memory=settings.memory, max_referenced=settings.max_referenced,
                             freezer_factory=freezer_factory)
    extra = {"exception": exception} if exception is not None else {}
    capture_and_write(pid, path, options, backend="ptrace", redact=settings.redact,
                      adjust=lambda snapshot: dataclasses.replace(snapshot, trigger=info, **extra))
    return path


class Watcher:
    """The loop: discover, sample, judge, dump; see the module docstring."""

    def __init__(self, spec: TargetSpec, triggers: list[Trigger], every: Optional[Every],
                 count: int, interval: float, cooldown: float, settings: DumpSettings):
        self.discovery = Discovery(spec)
        self.spec = spec
        self.triggers = triggers
        self.every = every
        self.count = count
        self.interval = interval
        self.cooldown = cooldown
        self.settings = settings
        self.want_fds = any(t.kind == "fds" for t in triggers)
        self.watched: dict[tuple[int, int], Watched] = {}
        self.announced_gone: set[int] = set()
        self.stop = threading.Event()
        self.disk_full = False
        self.result = WatchResult()

    def request_stop(self, signum=None, frame=None) -> None:
        self.stop.set()

    def round(self) -> bool:
        """One pass over every target; False once there is nothing left to watch."""
        now = time.monotonic()
        samples, notes = self.discovery.find(now, self.want_fds)
        for note in notes:
            _say(note)
        seen: set[tuple[int, int]] = set()
        for pid, s in sorted(samples.items()):
            if s.state == "Z":
                continue
            key = (pid, s.start_ticks)
            seen.add(key)
            w = self.watched.get(key)
            if w is None:
                w = Watched(pid, procstat.exe_name(pid, s.comm),
                            TriggerState(self.triggers, self.every, now))
                self.watched[key] = w
            firing = w.state.check(w.prev, s)
            w.prev = s
            if firing is None or w.done or now < w.cooldown_until:
                continue
            self._fire(w, firing)
            if self.stop.is_set():
                break
        for key in [k for k in self.watched if k not in seen]:
            w = self.watched.pop(key)
            if w.pid in self.spec.pids and w.pid not in self.announced_gone:
                self.announced_gone.add(w.pid)
                _say(f"process {w.pid} ({w.exe}) exited; no longer watching it")
        if self.spec.open_ended:
            return not self.discovery.finished(samples)
        return any(not w.done for w in self.watched.values())

    def _dump(self, w: Watched, firing: Firing) -> str:
        return dump_process(w.pid, w.exe, firing, self.settings)

    def _fire(self, w: Watched, firing: Firing) -> None:
        what = f"process {w.pid} ({w.exe}): {firing.trigger} {firing.threshold}, measured " \
               f"{firing.value}"
        w.state.dumped(time.monotonic())
        w.cooldown_until = time.monotonic() + self.cooldown
        if self.disk_full and not _has_space(self.settings.out_dir):
            _say(f"{what}; not dumped: no space left in {self.settings.out_dir}")
            return
        try:
            path = self._dump(w, firing)
        except NoSpaceLeft as exc:
            self.result.failures += 1
            self.disk_full = True
            _say(f"{what}; not dumped: {exc}; dumps stop until there is space, "
                 "watching goes on")
            return
        except DumpError as exc:
            self.result.failures += 1
            _say(f"{what}; not dumped: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - one line, and the watch goes on
            self.result.failures += 1
            _say(f"{what}; not dumped: internal error: {type(exc).__name__}: {exc}")
            return
        self.disk_full = False
        w.dumps += 1
        if w.dumps >= self.count:
            w.done = True
        self.result.paths.append(path)
        _say(f"{what} -> {path}")

    def run(self) -> WatchResult:
        # Import the capture and writer code now, not when the first trigger fires.
        from ..backends.linux import capture_session  # noqa: F401
        from ..minidump import writer  # noqa: F401
        from .. import run_command, session  # noqa: F401

        handled = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        old = {s: signal.signal(s, self.request_stop) for s in handled}
        try:
            next_round = time.monotonic()
            while not self.stop.is_set():
                if not self.round():
                    break
                next_round += self.interval
                delay = next_round - time.monotonic()
                if delay < 0:  # a dump took longer than a round: start afresh
                    next_round = time.monotonic()
                    delay = 0
                self.sleep(delay)
        finally:
            self.finish()
            for s, h in old.items():
                signal.signal(s, h)
        return self.result


    def sleep(self, delay: float) -> None:
        self.stop.wait(delay)

    def finish(self) -> None:
        """Called once when the loop ends, whatever the reason."""


def _has_space(directory: str, need: int = 64 << 20) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= need


def _percent(text: str) -> float:
    t = text.strip().rstrip("%")
    try:
        v = float(t)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a percentage; use e.g. 90 or 150 "
                                 "(100 is one CPU core busy all the time)") from None
    if v < 0:
        raise click.BadParameter(f"'{text}': a CPU percentage cannot be negative")
    return v


def _count(text: str) -> float:
    if not text.strip().isdigit():
        raise click.BadParameter(f"'{text}' is not a whole number")
    return float(int(text))


def _signal_number(text: str) -> int:
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        try:
            n = int(signal.Signals[name])
        except KeyError:
            raise click.BadParameter(f"'{text}' is not a signal; use a name like USR1 or "
                                     "SIGTERM, or a number") from None
    if n in (signal.SIGKILL, signal.SIGSTOP):
        raise click.BadParameter(f"{signal.Signals(n).name} cannot be caught: no dump can be "
                                 "taken before it acts")
    if not 0 < n < signal.NSIG:
        raise click.BadParameter(f"'{text}' is not a valid signal number")
    return n


def _duration(c, p, v):
    from ..run_command import parse_duration

    if v is None:
        return None
    if p.name in ("cooldown", "hold") and v.strip() in ("0", "0s", "0ms"):
        return 0.0
    return parse_duration(v)


def _size(c, p, v):
    from ..cli import parse_size

    return None if v is None else parse_size(v)


@click.command(name="watch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pids", nargs=-1, metavar="[PID...]")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Watch every process with this name (also ones that start later).")
@click.option("--tree", "trees", multiple=True, metavar="PID",
              help="Watch the process and all its descendants (also ones started later).")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="Watch every process of this cgroup v2 group and its child groups "
                   "(a container, a Kubernetes pod, a systemd unit), from the host.")
@click.option("--cpu-above", type=str, metavar="PCT",
              help="Dump when CPU use is at or above PCT (100 = one core busy; up to "
                   "100 x CPUs).")
@click.option("--cpu-below", type=str, metavar="PCT", help="Dump when CPU use is below PCT.")
@click.option("--memory-above", callback=_size, metavar="SIZE",
              help="Dump when resident memory reaches SIZE (512M, 2G...).")
@click.option("--memory-below", callback=_size, metavar="SIZE",
              help="Dump when resident memory is below SIZE.")
@click.option("--threads-above", type=str, metavar="N", help="Dump when N or more threads run.")
@click.option("--fds-above", type=str, metavar="N",
              help="Dump when N or more file descriptors are open.")
@click.option("--for", "hold", default=None, callback=_duration, metavar="DURATION",
              help="A threshold must hold this long before it fires (ProcDump's -s; "
                   "default: fire at the first round it holds).")
@click.option("--every", default=None, callback=_duration, metavar="DURATION",
              help="Dump every DURATION, whatever else happens.")
@click.option("--on-signal", "on_signal", default=None, metavar="SIG",
              help="Dump when SIG is sent to the target, before its own handler runs "
                   "(traces the target while watching: every signal costs it a stop).")
@click.option("--on-exit", is_flag=True,
              help="Dump a target that is exiting with a non-zero status or by a signal, "
                   "before it is gone (traces the target while watching).")
@click.option("-n", "--count", default=1, show_default=True, type=click.IntRange(1),
              help="Dumps per process before it is no longer dumped.")
@click.option("--interval", default="1s", show_default=True, callback=_duration,
              metavar="DURATION", help="How often targets are sampled.")
@click.option("--cooldown", default="10s", show_default=True, callback=_duration,
              metavar="DURATION", help="Least time between two dumps of one process.")
@click.option("-o", "--output-dir", default=".", show_default=True, metavar="DIR",
              help="Where the minidumps go (created if missing).")
@click.option("--memory", type=click.Choice(["stacks", "referenced", "full"]),
              default="referenced", show_default=True, help="How much memory each dump holds.")
@click.option("--max-referenced", default="8M", show_default=True, callback=_size,
              metavar="SIZE", help="Budget for --memory=referenced.")
@click.option("--redact", is_flag=True,
              help="Write dumps safe to upload (see `generate_dump --help`).")
def watch_command(pids, names, trees, cgroups, cpu_above, cpu_below, memory_above,
                  memory_below, threads_above, fds_above, hold, every, on_signal, on_exit,
                  count, interval, cooldown, output_dir, memory, max_referenced,
                  redact) -> None:
    """Watch processes and write a minidump when a trigger fires (like ProcDump).

    Targets: PIDs, --name, --tree, --cgroup (any mix). Triggers (any mix; the first that
    fires takes the dump): --cpu-above/--cpu-below, --memory-above/--memory-below,
    --threads-above, --fds-above (each with --for), --every, --on-signal, --on-exit.
    Dumps are named EXE-PID-TRIGGER-UTCTIME.dmp and record the trigger (shown by
    `generate_dump inspect`). Nothing is traced while watching unless --on-signal or
    --on-exit asks for it. Stops by itself when every target has been dumped --count
    times or is gone (never, with --name); SIGINT/SIGTERM stop it cleanly.
    """
    from ..cli import parse_pid

    spec = TargetSpec(pids=[parse_pid(p) for p in pids], names=list(names),
                      trees=[parse_pid(p) for p in trees],
                      cgroups=[resolve_cgroup(c) for c in cgroups])
    if not (spec.pids or spec.names or spec.trees or spec.cgroups):
        raise click.UsageError("nothing to watch: give PIDs, --name, --tree or --cgroup")
    hold = hold or 0.0
    triggers: list[Trigger] = []
    for kind, above, raw, conv in (("cpu", True, cpu_above, _percent),
                                   ("cpu", False, cpu_below, _percent),
                                   ("memory", True, memory_above, float),
                                   ("memory", False, memory_below, float),
                                   ("threads", True, threads_above, _count),
                                   ("fds", True, fds_above, _count)):
        if raw is not None:
            triggers.append(Trigger(kind, above, conv(raw), hold))
    sig = _signal_number(on_signal) if on_signal is not None else None
    if not triggers and every is None and sig is None and not on_exit:
        raise click.UsageError("no trigger: give --cpu-above, --memory-above, --threads-above, "
                               "--fds-above, --every, --on-signal, --on-exit or another")
    out_dir = os.path.abspath(output_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out_dir} is not writable")
    for pid in spec.pids:
        if not os.path.exists(f"/proc/{pid}"):
            raise TargetNotFound(f"no process with PID {pid}")
    settings = DumpSettings(out_dir, memory, max_referenced, redact)
    every = Every(every) if every is not None else None
    if sig is not None or on_exit:
        from .traced import TracedWatcher

        watcher: Watcher = TracedWatcher(spec, triggers, every, count, interval, cooldown,
                                         settings, signal_number=sig, on_exit=on_exit)
    else:
        watcher = Watcher(spec, triggers, every, count, interval, cooldown, settings)
    result = watcher.run()
    _say(f"{len(result.paths)} minidump(s) written"
         + (f", {result.failures} failed" if result.failures else ""))
