"""Live test targets: compile the C programs, start them, check they end up running untraced."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "programs"


def compile_program(name: str, out_dir: Path, *flags: str) -> Path:
    src = PROGRAMS / f"{name}.c"
    out = out_dir / name
    subprocess.run(["gcc", "-O2", "-g", "-pthread", *flags, "-o", str(out), str(src)], check=True)
    return out


def compile_source(source: str, out: Path, *flags: str) -> Path:
    """Write C ``source`` beside ``out`` (as OUT.c) and build it with gcc ``flags``."""
    src = out.with_name(out.name + ".c")
    src.write_text(source)
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True)
    return out


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of ``proc``'s stdout within ``timeout`` seconds, read byte by byte so that
    nothing after the newline is consumed (the test may read the rest itself)."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line within {timeout} s (got {buf!r})")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1)
            if not chunk:
                break  # end of file: the process exited
            buf += chunk
    return buf.decode(errors="replace")


class Target:
    """A started program that prints 'READY <pid>' once it is parked; killed on close.

    ``prefix`` runs it through another command that execs it in place (setpriv to start it
    as another user); the READY pid must still be the started process."""

    def __init__(self, argv: list, env: dict | None = None, ready_timeout: float = 30.0,
                 wait_parked: bool = True, prefix: list | None = None, **popen):
        self.argv = [str(a) for a in (prefix or []) + list(argv)]
        popen.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True, **popen)
        self.pid = self.proc.pid
        deadline = time.monotonic() + ready_timeout
        try:
            line = read_line(self.proc, ready_timeout)
        except TimeoutError:
            line = ""
        words = line.split()
        if not words or words[0] != "READY" or int(words[1]) != self.pid:
            self.close()
            raise RuntimeError(f"target {argv[0]} did not become ready: {line!r} "
                               f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        # Extra words on the READY line (addresses, ...) for the test to use.
        self.ready_values = [int(x, 0) for x in words[2:]]
        # READY is printed just before the main thread parks: wait until every thread
        # sits in a blocking syscall, so that registers can be checked against /proc.
        while wait_parked and time.monotonic() < deadline:
            if all(syscall_sp_pc(self.pid, t) for t in self.live_tids()):
                break
            time.sleep(0.01)

    def tids(self) -> list[int]:
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))

    def live_tids(self) -> list[int]:
        return [t for t in self.tids() if thread_state(self.pid, t) not in ("Z", "X")]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    kill = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def python_target(threads: int = 3) -> Target:
    code = (
        "import threading, time, os, sys\n"
        f"n = {threads}\n"
        "b = threading.Barrier(n + 1)\n"
        "def park():\n"
        "    b.wait()\n"
        "    while True: time.sleep(3600)\n"
        "for i in range(n): threading.Thread(target=park, name=f'py-{i}', daemon=True).start()\n"
        "b.wait(); time.sleep(0.2)\n"
        "print('READY', os.getpid(), flush=True)\n"
        "while True: time.sleep(3600)\n"
    )
    return Target([sys.executable, "-c", code])


def alive_with_argv(word: str) -> list[int]:
    """Pids of the processes with ``word`` among their arguments (a unique marker given to
    a command, to find it again however it was reparented)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if word.encode() in f.read().split(b"\0"):
                        out.append(int(entry))
            except OSError:
                pass
    return out


def left_running(word: str, within: float = 5.0) -> list[int]:
    """alive_with_argv(word) once none is left, or after ``within`` seconds."""
    deadline = time.monotonic() + within
    while alive_with_argv(word) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive_with_argv(word)


def kill_marked(word: str) -> None:
    """SIGKILL whatever alive_with_argv(word) finds (a test's cleanup)."""
    for pid in alive_with_argv(word):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def thread_state(pid: int, tid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
    except OSError:
        return "X"
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def assert_running_untraced(pid: int) -> None:
    """The target exists, has no tracer, and no thread is stopped (state t or T)."""
    status = Path(f"/proc/{pid}/status").read_text()
    tracer = [l for l in status.splitlines() if l.startswith("TracerPid:")][0].split()[1]
    assert tracer == "0", f"process {pid} still traced by {tracer}"
    # A thread that was just detached may need a moment to leave the stop.
    deadline = time.monotonic() + 5
    while True:
        states = {t: thread_state(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}
        stopped = {t: s for t, s in states.items() if s in ("t", "T")}
        if not stopped:
            break
        assert time.monotonic() < deadline, f"threads left stopped: {stopped}"
        time.sleep(0.05)
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
        assert "TracerPid:\t0" in st, f"thread {t} still traced"


def syscall_sp_pc(pid: int, tid: int) -> tuple[int, int] | None:
    """(sp, pc) from /proc/PID/task/TID/syscall for a thread blocked in a syscall."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
    except OSError:
        return None
    if len(fields) < 3 or fields[0] in ("running", "-1"):
        return None
    return int(fields[-2], 16), int(fields[-1], 16)


def readelf_build_id(path: str) -> str | None:
    r = subprocess.run(["readelf", "-n", path], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    return None


def run_dumper(*args, check: bool = True, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "generate_dump", *[str(a) for a in args]],
                       capture_output=True, text=True, timeout=300, env=env, **kw)
    if check:
        assert r.returncode == 0, f"generate_dump failed ({r.returncode}): {r.stderr}"
    return r
