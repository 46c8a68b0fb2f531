"""What `watch` measures of a process, read from /proc without touching the process.

Each sample is a few small reads (stat, and the fd directory only when asked), so a
watcher can sample a thousand processes a second and the processes never notice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcSample:
    pid: int
    ppid: int
    comm: str
    state: str
    cpu_seconds: float  # user + system time so far
    start_ticks: int  # start time after boot, in clock ticks: (pid, start) names a process
    threads: int
    rss: int  # bytes resident
    fds: Optional[int]  # open file descriptors (None when not asked for or unreadable)
    taken: float  # time.monotonic() when read


def read_stat(pid: int) -> Optional[bytes]:
    try:
        with open(f"/proc/{pid}/stat", "rb", buffering=0) as f:
            return f.read(4096)
    except OSError:
        return None


def parse(pid: int, raw: bytes, taken: float, fds: Optional[int] = None) -> Optional[ProcSample]:
    """A sample from /proc/PID/stat's text (comm may hold spaces and parentheses)."""
    try:
        lparen, rparen = raw.index(b"("), raw.rindex(b")")
        f = raw[rparen + 2:].split()
        # f[0] is field 3 (state) of proc(5): field n is f[n - 3].
        return ProcSample(
            pid=pid, ppid=int(f[1]), comm=raw[lparen + 1:rparen].decode("utf-8", "replace"),
            state=f[0].decode(), cpu_seconds=(int(f[11]) + int(f[12])) / CLK_TCK,
            start_ticks=int(f[19]), threads=int(f[17]), rss=int(f[21]) * PAGE_SIZE,
            fds=fds, taken=taken)
    except (ValueError, IndexError):
        return None


def count_fds(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(pid: int, taken: float, want_fds: bool = False) -> Optional[ProcSample]:
    raw = read_stat(pid)
    if raw is None:
        return None
    return parse(pid, raw, taken, count_fds(pid) if want_fds else None)


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def exe_name(pid: int, comm: str = "") -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).replace(" (deleted)", "")
    except OSError:
        return comm or "process"


def argv0_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    return os.path.basename(head.split(b"\0", 1)[0].decode("utf-8", "replace"))
