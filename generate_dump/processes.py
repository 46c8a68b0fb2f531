"""Which processes a command names: PIDs, whole trees, cgroup v2 groups (Linux /proc)."""

from __future__ import annotations

import os

from .errors import DumpError, TargetNotFound
from .platform.linux.proctree import deepest_first, descendants


def processes_of(pids: list[int], trees: list[int], cgroups: list[str]) -> list[int]:
    """Every process named, each once, in order: PIDs, trees (deepest first), groups."""
    from .watch.targets import cgroup_pids, resolve_cgroup

    out: list[int] = []
    me = os.getpid()
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            raise TargetNotFound(f"no process with PID {pid}")
        out.append(pid)
    for root in trees:
        if not os.path.exists(f"/proc/{root}"):
            raise TargetNotFound(f"no process with PID {root}")
        out += deepest_first(descendants(root, include_zombies=True)) + [root]
    for path in cgroups:
        members = cgroup_pids(resolve_cgroup(path))
        out += sorted(members or ())
    seen: set[int] = set()
    unique = []
    for p in out:
        if p not in seen and p != me:
            seen.add(p)
            unique.append(p)
    if not unique:
        raise DumpError("no process to dump (the cgroup is empty?)")
    return unique
