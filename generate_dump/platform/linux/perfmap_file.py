"""Find and read a process's JIT symbol map, ``/tmp/perf-PID.map``, as the process sees it.

PID is the process's id in its own PID namespace (the last ``NSpid`` of
/proc/PID/status) and /tmp is its own mount namespace's (reached through
/proc/PID/root), so a containerized runtime's map is found from the host. Like perf, we
only trust a regular file owned by the process's user (or root): /tmp is writable by
everyone, and anyone could leave a file of that name there. A file last written before
the process started was left by an earlier process that had the same PID.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Optional

from . import procfs

READ_LIMIT = 64 << 20  # bytes of the file read at most (its last ones)
START_SLACK = 2.0  # seconds: the boot time that process start times count from is whole


@dataclass(frozen=True)
class PerfMapFile:
    path: str  # as the process names it (/tmp/perf-NSPID.map)
    data: bytes  # the file, or its first READ_LIMIT bytes
    size: int  # the file's size
    skipped: int = 0  # bytes at its start left unread (a file larger than the limit)
    problem: str = ""  # why the file was ignored (data is then empty)


def namespace_pid(status: bytes, pid: int) -> int:
    """The process's id in its own PID namespace (the innermost ``NSpid``)."""
    fields = procfs.parse_status(status)
    ns = fields.get("NSpid", "").split()
    return int(ns[-1]) if ns and ns[-1].isdigit() else pid


def _start_time(pid: int) -> Optional[float]:
    """When the process started, Unix seconds (to the second: boot time's precision)."""
    raw = procfs.read_file(f"/proc/{pid}/stat")
    if not raw:
        return None
    try:
        return procfs.boot_time() + procfs.parse_stat(raw).start_time / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _uids(status: bytes) -> set[int]:
    return {int(u) for u in procfs.parse_status(status).get("Uid", "").split() if u.isdigit()}


def read_perf_map(pid: int, limit: int = READ_LIMIT) -> Optional[PerfMapFile]:
    """The process's perf map, or None when it keeps none."""
    status = procfs.read_file(f"/proc/{pid}/status") or b""
    name = f"/tmp/perf-{namespace_pid(status, pid)}.map"
    try:
        fd = os.open(f"/proc/{pid}/root{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except OSError:
        return None  # none (the usual case), a symlink, or no access to the process's root
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return PerfMapFile(name, b"", 0, problem="not a regular file")
        owners = _uids(status) | {0}
        if st.st_uid not in owners:
            return PerfMapFile(name, b"", st.st_size,
                               problem=f"owned by uid {st.st_uid}, not by the process's user")
        started = _start_time(pid)
        if started is not None and st.st_mtime < started - START_SLACK:
            return PerfMapFile(name, b"", st.st_size,
                               problem="last written before the process started (left by an "
                                       "earlier process with the same PID)")
        # A map larger than the limit: its end, where the newest code is (a runtime
        # appends, and a later line for the same addresses wins anyway).
        skip = max(0, st.st_size - limit)
        if skip:
            os.lseek(fd, skip, os.SEEK_SET)
        chunks = []
        total = 0
        while total < limit:
            b = os.read(fd, min(1 << 20, limit - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
        data = b"".join(chunks)
        if skip:
            data = data[data.find(b"\n") + 1:]  # a line cut in the middle
        data = data[: data.rfind(b"\n") + 1]  # a line still being written
        return PerfMapFile(name, data, max(st.st_size, skip + total), skip)
    except OSError as exc:
        return PerfMapFile(name, b"", 0, problem=exc.strerror or str(exc))
    finally:
        os.close(fd)
