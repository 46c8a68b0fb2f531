"""The process tree below a process, read from /proc; no tracing needed.

One walker for every command that follows a tree: `run` at its deadline (with
PR_SET_CHILD_SUBREAPER set on run, orphaned and daemonised descendants are reparented to
run and so stay in the tree; it also learns the working directories where the kernel
writes core files), `generate_dump PID --tree`, `watch --tree` and the pytest plugin's
helper. Children are read from /proc/PID/task/TID/children (a few small reads per
process of the tree) where the kernel has them (CONFIG_PROC_CHILDREN), otherwise from one
scan of every /proc/PID/stat's parent link.

Import-light (os only at the top): the pytest plugin's helper loads it.
"""

from __future__ import annotations

import errno
import os
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    from typing import Iterable, Mapping, Optional, Sequence

PR_SET_CHILD_SUBREAPER = 36

_children_files: Optional[bool] = None


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process become its children instead of init's."""
    import ctypes

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
        rest = raw[raw.rindex(b")") + 2:].split(None, 2)
        return int(rest[1]), rest[0].decode()
    except (OSError, ValueError, IndexError):
        return None


def is_running(pid: int) -> bool:
    """Does ``pid`` exist and has not exited (a zombie has)?"""
    fields = _stat_fields(pid)
    return fields is not None and fields[1] not in ("Z", "X")


def has_children_files() -> bool:
    """Does this kernel have /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)?"""
    global _children_files
    if _children_files is None:
        _children_files = os.path.exists(f"/proc/self/task/{os.getpid()}/children")
    return _children_files


def children_of(pid: int) -> list[int]:
    """The children of ``pid`` (of all its threads); [] if it is gone. Needs
    :func:`has_children_files`."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass  # the thread exited: its children went to another thread of the process
    return out


def children_map(parents: Optional[Mapping[int, int]] = None) -> dict[int, list[int]]:
    """Parent PID -> its children: from ``parents`` (pid -> ppid) when the caller has
    read them already, else from every /proc/PID/stat."""
    if parents is None:
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                got = _stat_fields(int(name))
                if got is not None:
                    parents[int(name)] = got[0]
    out: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        out.setdefault(ppid, []).append(pid)
    return out


def descendants(root: int, *, include_zombies: bool = False,
                children: Optional[Mapping[int, Sequence[int]]] = None) -> dict[int, int]:
    """Every descendant of ``root`` (not ``root``): pid -> depth below root (1 = child).
    Zombies (exited, not yet reaped) are left out unless ``include_zombies``.
    ``children``: a parent -> children map the caller has already (see children_map)."""
    given = children if children is not None or has_children_files() else children_map()

    def kids(pid: int) -> Sequence[int]:
        return children_of(pid) if given is None else given.get(pid, ())

    out: dict[int, int] = {}
    todo = [(c, 1) for c in kids(root)]
    while todo:
        pid, depth = todo.pop()
        if pid in out or pid == root:
            continue
        out[pid] = depth
        todo.extend((c, depth + 1) for c in kids(pid))
    if not include_zombies:
        for pid in list(out):
            got = _stat_fields(pid)
            if got is None or got[1] in ("Z", "X"):
                del out[pid]
    return out


def deepest_first(tree: Mapping[int, int]) -> list[int]:
    """The PIDs of a :func:`descendants` tree, deepest first (children before parents)."""
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
