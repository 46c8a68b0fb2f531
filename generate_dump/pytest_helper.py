"""The pytest plugin's helper process: it freezes pytest while pytest dumps its children.

A tracee's ptrace stops are reported to wait() in ANY thread of the tracer's process, so
pytest cannot trace its test's children while the test's own threads run (a thread in
``waitpid(child)``, as in ``subprocess.run``, would take the stops for exits). So:

1. this helper (started once per session, outside pytest's process tree, so that its exit
   is never seen by a test's ``os.wait()``) seizes every thread of pytest except the
   plugin's own, copies their registers and stacks, and answers ``frozen``;
2. the plugin's watchdog thread, now the only thread of pytest that can run, traces each
   child (pytest is their ancestor: allowed under Yama ``ptrace_scope=1``) and answers
   ``done``;
3. the helper releases pytest (restarted system calls such as ``waitpid`` or ``sleep``
   resume exactly), writes pytest's dump and answers ``written PATH`` or ``failed WHY``.

pytest allows the helper to trace it with ``prctl(PR_SET_PTRACER)`` while this lasts.
Protocol: one line per message over a socketpair. The helper exits when pytest does.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import sys
import time
from typing import Optional

# How long pytest may stay frozen while its watchdog dumps the children; after that the
# helper lets it run whatever happens (the watchdog stops tracing children when it sees it).
HOLD_LIMIT = 60.0


# --- in the helper process ------------------------------------------------------------------


class _Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.replace("\n", " ").encode("utf-8", "replace") + b"\n")

    def readline(self, timeout: Optional[float], also: Optional[int] = None) -> Optional[str]:
        """A line; "" at end of file or when ``also`` (pytest's pidfd) is readable;
        None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            fds = [self.sock] + ([also] if also is not None else [])
            ready, _, _ = select.select(fds, [], [], wait)
            if not ready:
                return None
            if also is not None and also in ready:
                return ""
            data = self.sock.recv(4096)
            if not data:
                return ""
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def dump_path(dump_dir: str, exe: str, pid: int, when: int) -> str:
    """`generate_dump run`'s name for the dump (EXE-PID-timeout-UTCTIME.dmp), with a
    ``-N`` suffix if two hung tests dump the same process within one second."""
    from .run_command import dump_file_name

    path = os.path.join(dump_dir, dump_file_name(exe, pid, "timeout", when or None))
    base, n = path[: -len(".dmp")], 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}.dmp"
    return path


def _pytest_gone_fd(pid: int) -> Optional[int]:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _freeze_and_dump(chan: _Channel, pid: int, exclude: frozenset, dump_dir: str,
                     gone_fd: Optional[int]) -> None:
    from .backends.linux import capture
    from .backends.linux.capture import CaptureOptions
    from .backends.linux.procfs import list_tids
    from .errors import DumpError
    from .output import write_snapshot

    held = []

    def hold(tids: list) -> None:
        held.append(True)
        try:
            live = [t for t in list_tids(pid) if t not in exclude]
        except OSError:
            live = []
        missing = sorted(set(live) - set(tids))
        chan.send("frozen ok" if not missing else
                  "frozen partial " + ",".join(str(t) for t in missing))
        chan.readline(HOLD_LIMIT, gone_fd)  # "done", end of file, or time is up

    try:
        snapshot = capture(pid, CaptureOptions(exclude_tids=exclude, while_frozen=hold))
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe")).replace(" (deleted)", "")
        path = dump_path(dump_dir, exe, pid, snapshot.time)
        write_snapshot(snapshot, path)
        reply = f"written {path}"
    except DumpError as exc:
        reply = f"failed {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the plugin, never a traceback
        reply = f"failed internal error: {type(exc).__name__}: {exc}"
    chan.send(reply)  # after "frozen", or the only answer if the freeze never happened


def main(argv: Optional[list] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd, pytest_pid = int(argv[0]), int(argv[1])
    try:
        os.setsid()  # out of pytest's process group: a test's killpg(0, ...) spares us
    except OSError:
        pass
    chan = _Channel(socket.socket(fileno=fd))
    gone_fd = _pytest_gone_fd(pytest_pid)
    # Loaded now, while nothing waits: a freeze starts at once.
    from .backends.linux import capture  # noqa: F401
    from . import output, run_command  # noqa: F401

    chan.send(f"ready {os.getpid()}")
    while True:
        line = chan.readline(None if gone_fd is not None else 1.0, gone_fd)
        if line is None:
            if not os.path.exists(f"/proc/{pytest_pid}"):
                return
            continue
        if not line:
            return
        words = line.split(" ", 3)
        if words[0] == "freeze" and len(words) == 4:
            exclude = frozenset(int(t) for t in words[2].split(",") if t)
            _freeze_and_dump(chan, int(words[1]), exclude, words[3], gone_fd)


# --- in pytest ------------------------------------------------------------------------------

PR_SET_PTRACER = 0x59616D61


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


# Functions called through PyDLL keep the GIL while they block: see Helper.freeze.
_gil_libc = ctypes.PyDLL(None, use_errno=True)
_gil_libc.poll.argtypes = [ctypes.POINTER(_PollFd), ctypes.c_ulong, ctypes.c_int]
_gil_libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_gil_libc.read.restype = ctypes.c_ssize_t
_gil_libc.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_gil_libc.write.restype = ctypes.c_ssize_t


class HelperError(Exception):
    pass


class Helper:
    """pytest's end: starts the helper process and talks to it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.buf = b""
        self.pid = 0
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {package_root!r}); "
                "from generate_dump.pytest_helper import main; main(sys.argv[1:])")
        # Started through a shell that exits at once: the helper is nobody's child here,
        # so no wait() of a test can ever collect its exit.
        subprocess.run(
            ["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh",
             sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=60, check=True)
        theirs.close()

    def close(self) -> None:
        self.sock.close()

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                raise HelperError(f"the helper did not answer within {timeout:g} s") from None
            if not data:
                raise HelperError("the helper process is gone")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def ready(self, timeout: float = 60.0) -> int:
        if not self.pid:
            words = self.readline(timeout).split()
            if words[:1] != ["ready"]:
                raise HelperError(f"unexpected answer from the helper: {' '.join(words)}")
            self.pid = int(words[1])
        return self.pid

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def freeze(self, exclude: list, dump_dir: str, timeout: float = 30.0) -> str:
        """Ask for the freeze and wait for the answer WITHOUT releasing the GIL.

        Holding the GIL while the helper stops pytest's other threads guarantees that
        none of them is stopped holding it; the caller then runs Python code alone."""
        msg = (f"freeze {os.getpid()} {','.join(map(str, exclude))} {dump_dir}\n").encode()
        fd = self.sock.fileno()
        sent = 0
        while sent < len(msg):
            n = _gil_libc.write(fd, msg[sent:], len(msg) - sent)
            if n < 0:
                if ctypes.get_errno() in (4, 11):  # EINTR, EAGAIN
                    continue
                raise HelperError(f"cannot talk to the helper: {os.strerror(ctypes.get_errno())}")
            sent += n
        deadline = time.monotonic() + timeout
        chunk = ctypes.create_string_buffer(4096)
        pfd = _PollFd(fd, 1, 0)  # POLLIN
        while b"\n" not in self.buf:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                raise HelperError(f"the helper did not answer within {timeout:g} s")
            r = _gil_libc.poll(ctypes.byref(pfd), 1, left)
            if r <= 0:
                continue  # EINTR or timeout: the deadline decides
            n = _gil_libc.read(fd, chunk, 4096)
            if n == 0:
                raise HelperError("the helper process is gone")
            if n > 0:
                self.buf += chunk.raw[:n]
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def set_ptracer(pid: int) -> None:
    """Allow ``pid`` to trace this process (Yama); 0 withdraws it. No-op without Yama."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PTRACER, pid, 0, 0, 0)
