"""The pytest plugin's helper process, and pytest's end of the conversation with it.

The helper is started once per session, through a shell that exits at once: it is nobody's
child in pytest's tree, so no ``os.wait()`` of a test can ever collect its exit. pytest
allows it to trace pytest with ``prctl(PR_SET_PTRACER)`` while a dump is under way. When a
test hangs, the plugin's watchdog asks it to ``dump`` the tree:

- the helper dumps every descendant process of pytest itself. Being another process, its
  ptrace stops are never seen by the test (a tracee's stops go to wait() in the tracer's
  process only; the real parent sees neither them nor, until the tracer lets go, an exit;
  an exit the helper collects is passed on to the real parent by the kernel);
- a child it may not trace (Yama ``ptrace_scope=1`` lets only an ancestor trace, and the
  helper is none) is reported ``denied``: pytest, their ancestor, must trace those itself.
  Stops of pytest's tracees are reported to wait() in ANY thread of pytest, so while it
  does, the helper ``freeze``-s every other thread of pytest (see Helper.freeze and
  :func:`_unsafe_threads` for what makes that safe for a Python process);
- then it dumps pytest itself (every thread, the watchdog too) and says ``end``.

Protocol: one line per message over a socketpair. The helper exits when pytest does.
"""

from __future__ import annotations

import ctypes
import os
import platform
import select
import socket
import subprocess
import sys
import time
from typing import Optional

# How long pytest may stay frozen while its watchdog dumps the children; after that the
# helper lets it run whatever happens (the watchdog stops tracing children when it sees it).
HOLD_LIMIT = 60.0
# Test knob: the helper leaves every child to pytest, as under Yama ptrace_scope=1.
FORCE_DENIED_ENV = "GENERATE_DUMP_TEST_CHILDREN_DENIED"


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


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).replace(" (deleted)", "")
    except OSError:
        return "process"


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


def _dump_one(role: str, pid: int, dump_dir: str, options=None, redact: bool = False) -> str:
    from .errors import DumpError, TargetPermissionError
    from .session import capture_process, write_dump

    exe = exe_name(pid)
    head = f"dump {role} {pid} {exe}"
    try:
        snapshot = capture_process(pid, options, "ptrace")
        path = dump_path(dump_dir, exe, pid, snapshot.time)
        write_dump(snapshot, path, redact=redact)
        return f"{head} written {path}"
    except TargetPermissionError as exc:
        return f"denied {pid} {exe} {exc}" if role == "child" else f"{head} failed {exc}"
    except DumpError as exc:
        return f"{head} failed {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the plugin, never a traceback
        return f"{head} failed internal error: {type(exc).__name__}: {exc}"


def _dump_tree(chan: _Channel, pid: int, dump_dir: str, redact: bool = False) -> None:
    from .platform.linux.proctree import deepest_first, descendants

    force_denied = bool(os.environ.get(FORCE_DENIED_ENV))
    for child in deepest_first(descendants(pid, include_zombies=True)):
        if child == os.getpid():
            continue
        if force_denied:
            chan.send(f"denied {child} {exe_name(child)} ({FORCE_DENIED_ENV} is set)")
        else:
            chan.send(_dump_one("child", child, dump_dir, redact=redact))
    chan.send(_dump_one("pytest", pid, dump_dir, redact=redact))
    chan.send("end")


_MEMORY_SYSCALLS = {  # malloc may hold its arena lock around these
    "x86_64": {9, 10, 11, 12, 25, 28},  # mmap mprotect munmap brk mremap madvise
    "aarch64": {222, 226, 215, 214, 216, 233},
}
_FUTEX = {"x86_64": 202, "aarch64": 98}
_GIL_SPAN = 512  # bytes around the GIL's futex word: its condition variables and mutexes


def _unsafe_threads(pid: int, tids: list, gil: int) -> list[str]:
    """Frozen threads of pytest that its watchdog could wait for forever.

    The watchdog is Python code: it needs the GIL and malloc. A thread stopped outside a
    system call may hold a lock of either; one stopped waiting for the GIL (a futex on the
    GIL's condition variable, at ``gil``) blocks glibc's pthread_cond_signal when the
    watchdog next releases the GIL; one stopped in mmap/brk may hold a malloc arena lock.
    Threads blocked elsewhere (waitpid, sleep, poll, read, other locks) are safe."""
    arch = platform.machine()
    memory, futex = _MEMORY_SYSCALLS.get(arch, set()), _FUTEX.get(arch, -1)
    out = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                words = f.read().split()
        except OSError:
            continue
        if not words or words[0] in ("running", "-1"):
            out.append(f"{tid}:running")
            continue
        nr = int(words[0])
        if nr in memory:
            out.append(f"{tid}:memory")
        elif nr == futex and len(words) > 1 and gil and abs(int(words[1], 16) - gil) < _GIL_SPAN:
            out.append(f"{tid}:gil")
    return out


def _futex_of(pid: int, tid: int) -> str:
    """The futex address thread ``tid`` waits on, in hex ("0" if it waits on none)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            words = f.read().split()
    except OSError:
        return "0"
    if len(words) > 1 and words[0] == str(_FUTEX.get(platform.machine(), -1)):
        return words[1].replace("0x", "")
    return "0"


class _Released(Exception):
    """The watchdog is done: let pytest go without writing a dump."""


def _freeze(chan: _Channel, pid: int, exclude: frozenset, gil: int,
            gone_fd: Optional[int]) -> None:
    from .backends.linux.capture import CaptureOptions
    from .platform.linux.procfs import list_tids
    from .errors import DumpError
    from .session import capture_process

    answer = []

    def hold(tids: list) -> None:
        try:
            live = [t for t in list_tids(pid) if t not in exclude]
        except OSError:
            live = []
        missing = sorted(set(live) - set(tids))
        unsafe = _unsafe_threads(pid, tids, gil)
        if missing or unsafe:
            # Released BEFORE the answer: the watchdog may wait on a lock of theirs.
            answer.append("unsafe " + ",".join([f"{t}:unstoppable" for t in missing] + unsafe))
            raise _Released()
        chan.send("frozen ok")
        chan.readline(HOLD_LIMIT, gone_fd)  # "done", end of file, or time is up
        answer.append("released")
        raise _Released()

    try:
        capture_process(pid, CaptureOptions(exclude_tids=exclude, memory="stacks",
                                            while_frozen=hold), "ptrace")
        chan.send("released")
    except _Released:
        chan.send(answer[-1])
    except DumpError as exc:
        chan.send(f"failed {exc}")
    except Exception as exc:  # noqa: BLE001
        chan.send(f"failed internal error: {type(exc).__name__}: {exc}")


def main(argv: Optional[list] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd, pytest_pid = int(argv[0]), int(argv[1])
    try:
        os.setsid()  # out of pytest's process group: a test's killpg(0, ...) spares us
    except OSError:
        pass
    chan = _Channel(socket.socket(fileno=fd))
    try:
        gone_fd: Optional[int] = os.pidfd_open(pytest_pid)
    except (AttributeError, OSError):
        gone_fd = None
    # Loaded now, while nothing waits: a dump starts at once.
    from .backends.linux import capture  # noqa: F401
    from . import output, run_command, session  # noqa: F401

    chan.send(f"ready {os.getpid()}")
    while True:
        line = chan.readline(None if gone_fd is not None else 1.0, gone_fd)
        if line is None:
            if not os.path.exists(f"/proc/{pytest_pid}"):
                return
            continue
        if not line:
            return
        words = line.split(" ")
        if words[0] == "dump" and len(words) >= 4:  # dump PID REDACT(0/1) DIR
            _dump_tree(chan, int(words[1]), line.split(" ", 3)[3], redact=words[2] == "1")
        elif words[0] == "probe" and len(words) == 3:
            # pytest's watchdog holds the GIL: the probe thread soon waits for it.
            found = "0"
            for _ in range(10):
                time.sleep(0.02)
                found = _futex_of(int(words[1]), int(words[2]))
                if found != "0":
                    break
            chan.send(f"probe {found}")
        elif words[0] == "freeze" and len(words) == 4:
            exclude = frozenset(int(t) for t in words[2].split(",") if t)
            _freeze(chan, int(words[1]), exclude, int(words[3], 16), gone_fd)


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
        self.gil: Optional[int] = None  # see gil_futex
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {package_root!r}); "
                "from generate_dump.pytest_helper import main; main(sys.argv[1:])")
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
        self.sock.settimeout(10.0)
        self.sock.sendall(line.encode() + b"\n")

    def gil_futex(self) -> int:
        """Where a thread waiting for the GIL sleeps (0 if unknown): a thread that wants
        the GIL is started while this one keeps it, and the helper looks at it."""
        import threading

        state = {"tid": 0, "stop": False}
        started = threading.Event()

        def want_gil() -> None:
            state["tid"] = threading.get_native_id()
            started.set()
            while not state["stop"]:
                pass

        probe = threading.Thread(target=want_gil, name="generate_dump-gil-probe", daemon=True)
        probe.start()
        started.wait()
        try:
            answer = self.ask_holding_gil(f"probe {os.getpid()} {state['tid']}")
        finally:
            state["stop"] = True
            probe.join()
        words = answer.split()
        return int(words[1], 16) if len(words) == 2 and words[0] == "probe" else 0

    def freeze(self, exclude: list, gil: int) -> str:
        """Freeze pytest but ``exclude``; "frozen ok" (then send "done" when finished),
        or "unsafe ..." / "failed ..." (pytest runs already).

        The GIL is kept while the helper stops pytest's other threads: none of them is
        stopped holding it, so the caller then runs Python code alone."""
        return self.ask_holding_gil(f"freeze {os.getpid()} {','.join(map(str, exclude))} {gil:x}")

    def ask_holding_gil(self, line: str, timeout: float = 30.0) -> str:
        """Send ``line`` and wait for the answer without releasing the GIL."""
        msg = line.encode() + b"\n"
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
            if _gil_libc.poll(ctypes.byref(pfd), 1, left) <= 0:
                continue  # EINTR or timeout: the deadline decides
            n = _gil_libc.read(fd, chunk, 4096)
            if n == 0:
                raise HelperError("the helper process is gone")
            if n > 0:
                self.buf += chunk.raw[:n]
        reply, self.buf = self.buf.split(b"\n", 1)
        return reply.decode("utf-8", "replace")


def set_ptracer(pid: int) -> None:
    """Allow ``pid`` to trace this process (Yama); 0 withdraws it. No-op without Yama."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PTRACER, pid, 0, 0, 0)
