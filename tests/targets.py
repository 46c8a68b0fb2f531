"""Real target processes for end-to-end tests, and helpers to run and check generate_dump.

Targets are compiled C programs (tests/programs/*.c plus small inline ones) started with
``subprocess``; each prints ``READY <pid>`` once it is parked. Binaries live in a 0755
directory under /tmp so that an unprivileged test user can run them too.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import pytest

import live

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PROGRAMS = TESTS / "programs"
TEST_USER = "gdtest"
READY_TIMEOUT = 30.0
DUMP_TIMEOUT = 60.0
PF_KTHREAD = 0x00200000

_build_dir: Optional[Path] = None
_built: dict[str, Path] = {}


# -- building ----------------------------------------------------------------------------------

def build_dir() -> Path:
    """A world-readable directory for compiled targets (removed at interpreter exit)."""
    global _build_dir
    if _build_dir is None:
        d = Path(tempfile.mkdtemp(prefix="gd-targets-", dir="/tmp"))
        d.chmod(0o755)
        import atexit

        atexit.register(shutil.rmtree, d, True)
        _build_dir = d
    return _build_dir


def compile_c(name: str, source: Optional[str] = None) -> Path:
    """Compile tests/programs/NAME.c (or ``source`` text) once per session; returns the binary."""
    if name in _built:
        return _built[name]
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: needed to build the C test targets")
    out = build_dir() / name
    if source is None:
        src = PROGRAMS / f"{name}.c"
    else:
        src = build_dir() / f"{name}.c"
        src.write_text(source)
    r = subprocess.run(["gcc", "-O2", "-g", "-pthread", "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"gcc failed for {src}:\n{r.stderr}"
    out.chmod(0o755)
    _built[name] = out
    return out


NODUMP_C = r"""
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(void) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) { perror("prctl"); return 1; }
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
"""


def threads_binary() -> Path:
    return compile_c("threads")


def nodump_binary() -> Path:
    return compile_c("nodump", NODUMP_C)


# -- the unprivileged user ---------------------------------------------------------------------

def unprivileged_user() -> tuple[int, int]:
    """(uid, gid) of the unprivileged test user, created if needed (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates the unprivileged user "
                    f"'{TEST_USER}' and runs processes as it")
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        r = subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", TEST_USER],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0 and "already exists" not in r.stderr:
            pytest.fail(f"useradd {TEST_USER} failed: {r.stderr.strip()}")
        pw = pwd.getpwnam(TEST_USER)
    return pw.pw_uid, pw.pw_gid


def setpriv_prefix(uid: int, gid: int) -> list[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not found: needed to run a target as another user")
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def user_dir(uid: int, gid: int) -> Path:
    """A fresh directory under /tmp owned by the test user (caller removes it)."""
    d = Path(tempfile.mkdtemp(prefix="gd-user-", dir="/tmp"))
    os.chown(d, uid, gid)
    d.chmod(0o755)
    return d


# -- targets -----------------------------------------------------------------------------------

Target = live.Target


def start_target(argv: Sequence, env: Optional[dict] = None,
                 user: Optional[tuple[int, int]] = None) -> Target:
    """Start ``argv`` (optionally as user (uid, gid)) and wait for its ``READY <pid>`` line."""
    return Target(list(argv), env=env, ready_timeout=READY_TIMEOUT,
                  prefix=setpriv_prefix(*user) if user is not None else None, cwd="/")


class Targets:
    """Starts targets and kills every one of them (and helper processes) at the end."""

    def __init__(self):
        self._all: list[Target] = []
        self._helpers: list[subprocess.Popen] = []

    def start(self, argv: Sequence, env: Optional[dict] = None,
              user: Optional[tuple[int, int]] = None) -> Target:
        t = start_target(argv, env=env, user=user)
        self._all.append(t)
        return t

    def threads(self, extra: int = 0, env: Optional[dict] = None,
                user: Optional[tuple[int, int]] = None) -> Target:
        return self.start([threads_binary(), str(extra)], env=env, user=user)

    def helper(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._helpers.append(proc)
        return proc

    def close(self) -> None:
        for p in self._helpers:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for s in (p.stdout, p.stderr, p.stdin):
                if s is not None:
                    s.close()
        for t in self._all:
            t.kill()


# -- tracing another process from a helper -----------------------------------------------------

SEIZE_HELPER = r"""
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, int(sys.argv[1]), None, None) != 0:  # PTRACE_SEIZE
    print("FAILED", ctypes.get_errno(), flush=True)
    sys.exit(1)
print("SEIZED", flush=True)
while True:
    time.sleep(3600)
"""


def start_seizer(pid: int) -> subprocess.Popen:
    """A process that PTRACE_SEIZEs ``pid`` (which keeps running) and then just sleeps."""
    p = subprocess.Popen([sys.executable, "-c", SEIZE_HELPER, str(pid)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    line = live.read_line(p, READY_TIMEOUT).strip()
    if line != "SEIZED":
        p.kill()
        p.wait()
        raise RuntimeError(f"helper could not seize {pid}: {line}")
    return p


# -- /proc inspection --------------------------------------------------------------------------

def stat_fields(path: str) -> list[str]:
    """Fields of a /proc stat file after the ``(comm)``: [state, ppid, pgrp, ...]."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2 :].decode().split()


def tracer_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    raise AssertionError(f"no TracerPid in /proc/{pid}/status")


def thread_states(pid: int) -> dict[int, str]:
    return {int(t): live.thread_state(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def assert_target_intact(target: Target) -> None:
    """The target lives, nobody traces it and none of its threads is stopped (the checks
    of live.assert_running_untraced, plus: it is our child and has not exited)."""
    assert target.proc.poll() is None, f"target {target.pid} died ({target.proc.returncode})"
    live.assert_running_untraced(target.pid)
    state = stat_fields(f"/proc/{target.pid}/stat")[0]
    assert state not in ("Z", "X"), f"target {target.pid} is {state}"


def leftover_temp_files(directory) -> list[str]:
    return sorted(glob.glob(os.path.join(str(directory), ".*.tmp")))


def find_kernel_thread() -> Optional[tuple[int, str]]:
    """(pid, comm) of a kernel thread: PID 2 if it is kthreadd, else any PF_KTHREAD task."""
    def check(pid: int) -> Optional[str]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        comm = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
        flags = int(raw[raw.rindex(b")") + 2 :].split()[6])
        return comm if flags & PF_KTHREAD else None

    comm = check(2)
    if comm == "kthreadd":
        return 2, comm
    for name in os.listdir("/proc"):
        if name.isdigit():
            comm = check(int(name))
            if comm is not None:
                return int(name), comm
    return None


def exited_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# -- running generate_dump ---------------------------------------------------------------------

def run_dumper(args: Sequence, cwd=None, env: Optional[dict] = None,
               timeout: float = DUMP_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m generate_dump ARGS`` as the current user."""
    return subprocess.run([sys.executable, "-m", "generate_dump", *[str(a) for a in args]],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# Runs generate_dump as another user. The interpreter and its site-packages may live where
# that user cannot reach them (pyenv under /root, mode 0700), so the process starts as root,
# opens each sys.path directory (O_PATH), then gives up root for good: all uids and gids,
# supplementary groups and, with them, every capability. From then on it is an ordinary
# process of that user as far as ptrace and file permissions go; its imports still work
# because sys.path now names those directories as /proc/self/fd/N, a process's own open
# files that it may always reach.
_AS_USER = r"""
import ctypes, os, sys
uid, gid = int(sys.argv[1]), int(sys.argv[2])
del sys.argv[1:3]
moved = {}  # sys.path directory -> the same directory as /proc/self/fd/N
for entry in sys.path:
    try:
        fd = os.open(entry or ".", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        continue
    moved[os.path.abspath(entry or ".")] = f"/proc/self/fd/{fd}"


def relocate(path):
    for old, new in moved.items():
        if path == old or path.startswith(old + os.sep):
            return new + path[len(old):]
    return path


import generate_dump.cli  # resolves the editable install's finder while still root
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
assert os.getresuid() == (uid, uid, uid) and os.getgroups() == []
# The uid change made this process non-dumpable (a program exec'ed as the user would be
# dumpable); /proc/self/fd is only reachable by its owner when it is dumpable.
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
sys.path[:] = list(moved.values())
for module in list(sys.modules.values()):  # packages find submodules through __path__
    path = getattr(module, "__path__", None)
    if isinstance(path, list):
        path[:] = [relocate(p) for p in path]
sys.path_importer_cache.clear()
generate_dump.cli.main(sys.argv[1:])
"""


def run_dumper_as(user: tuple[int, int], args: Sequence, cwd=None,
                  timeout: float = DUMP_TIMEOUT) -> subprocess.CompletedProcess:
    uid, gid = user
    return subprocess.run([sys.executable, "-c", _AS_USER, str(uid), str(gid),
                           *[str(a) for a in args]],
                          capture_output=True, text=True, cwd=cwd or "/", timeout=timeout,
                          stdin=subprocess.DEVNULL)

