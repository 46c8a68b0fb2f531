"""Which processes a command names: PIDs, whole trees, cgroup v2 groups (Linux /proc)."""

from __future__ import annotations

import os

from .errors import DumpError, TargetNotFound


def children_map() -> dict[int, list[int]]:
    """Parent PID -> its children, from every /proc/PID/stat."""
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
            ppid = int(raw[raw.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(name))
    return out


def tree_deepest_first(root: int, children: dict[int, list[int]]) -> list[int]:
    """``root`` and its descendants, deepest first (children are dumped before parents)."""
    found: list[tuple[int, int]] = []
    todo = [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        found.append((depth, pid))
        todo.extend((c, depth + 1) for c in children.get(pid, ()))
    return [p for _, p in sorted(found, key=lambda x: (-x[0], x[1]))]


def processes_of(pids: list[int], trees: list[int], cgroups: list[str]) -> list[int]:
    """Every process named, each once, in order: PIDs, trees (deepest first), groups."""
    from .watch.targets import cgroup_pids, resolve_cgroup

    out: list[int] = []
    me = os.getpid()
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            raise TargetNotFound(f"no process with PID {pid}")
        out.append(pid)
    if trees:
        children = children_map()
        for root in trees:
            if not os.path.exists(f"/proc/{root}"):
                raise TargetNotFound(f"no process with PID {root}")
            out += tree_deepest_first(root, children)
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
