"""The process tree below a process, read from /proc (ppid links); no tracing needed.

`generate_dump run` uses it at its deadline to find every descendant (with
PR_SET_CHILD_SUBREAPER set on run, orphaned and daemonised descendants are reparented to
run and so stay in the tree), and to learn the working directories where the kernel
writes core files.
"""

from __future__ import annotations

import ctypes
import errno
import os
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    from typing import Iterable, Optional

PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process become its children instead of init's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: int) -> Optional[tuple[int, str]]:
    """(ppid, state) of ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rindex(b")") + 2:].split(None, 2)
    return int(rest[1]), rest[0].decode()


def descendants(root: int) -> dict[int, int]:
    """Every live (not zombie) descendant of ``root``: pid -> depth below root (1 = child)."""
    children: dict[int, list[int]] = {}
    state: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        got = _stat_fields(pid)
        if got is None:
            continue
        children.setdefault(got[0], []).append(pid)
        state[pid] = got[1]
    out: dict[int, int] = {}
    todo = [(c, 1) for c in children.get(root, ())]
    while todo:
        pid, depth = todo.pop()
        if pid in out:
            continue
        if state.get(pid) not in ("Z", "X"):
            out[pid] = depth
        todo.extend((c, depth + 1) for c in children.get(pid, ()))
    return out


def deepest_first(tree: dict[int, int]) -> list[int]:
    return sorted(tree, key=lambda p: (-tree[p], p))


def cwd_of(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each process; ones that are already gone are skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
