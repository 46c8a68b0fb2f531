"""Which processes `watch` follows: PIDs, names, whole trees and cgroup v2 groups.

Every round re-reads /proc (and cgroup.procs), so processes that start later are picked
up, and a process is named by (pid, start time) so that a reused PID is a new process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..errors import BadInput
from ..platform.linux import proctree
from . import procstat


def cgroup2_root() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrids)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                left, _, right = line.partition(b" - ")
                if right.split(b" ", 1)[0] == b"cgroup2":
                    return left.split(b" ")[4].decode()
    except OSError:
        pass
    return None


def resolve_cgroup(path: str) -> str:
    """A cgroup v2 directory from an absolute directory or a path inside the hierarchy
    (as /proc/PID/cgroup shows it, e.g. /system.slice/nginx.service)."""
    if os.path.isfile(os.path.join(path, "cgroup.procs")):
        return os.path.abspath(path)
    root = cgroup2_root()
    if root is not None:
        candidate = os.path.join(root, path.lstrip("/"))
        if os.path.isfile(os.path.join(candidate, "cgroup.procs")):
            return candidate
    where = f" (cgroup v2 is mounted at {root})" if root else " (no cgroup v2 hierarchy is mounted)"
    raise BadInput(f"no cgroup v2 group at {path}{where}")


def cgroup_pids(directory: str) -> Optional[set[int]]:
    """Every process in the group and its child groups; None once the group is gone."""
    out: set[int] = set()
    if not os.path.isdir(directory):
        return None
    for here, dirs, files in os.walk(directory):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(here, "cgroup.procs"), "rb") as f:
                out.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            if here == directory and not os.path.isdir(directory):
                return None
    return out


@dataclass
class TargetSpec:
    """What the user asked to watch."""

    pids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    trees: list[int] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # resolved directories

    @property
    def open_ended(self) -> bool:
        """Can processes we have not seen yet still become targets?"""
        return bool(self.names or self.trees or self.cgroups)


def _matches(name: str, sample: procstat.ProcSample) -> bool:
    """ProcDump's -w: the process name (comm, which the kernel cuts to 15 bytes); a longer
    name must also be the executable's or argv[0]'s base name."""
    if len(name) <= 15:
        return sample.comm == name
    return sample.comm == name[:15] and name in (procstat.exe_name(sample.pid),
                                                 procstat.argv0_name(sample.pid))


class Discovery:
    """Finds the current targets; keeps the last whole-system listing for trees and names."""

    def __init__(self, spec: TargetSpec, self_pid: int = 0):
        self.spec = spec
        self.self_pid = self_pid or os.getpid()
        self.gone_cgroups: set[str] = set()
        self.tree_roots_seen: set[int] = set()

    def find(self, now: float, want_fds: bool) -> tuple[dict[int, procstat.ProcSample], list[str]]:
        """Samples of every current target, keyed by pid, and notes to tell the user."""
        notes: list[str] = []
        wanted: set[int] = set(self.spec.pids)
        samples: dict[int, procstat.ProcSample] = {}
        every: dict[int, procstat.ProcSample] = {}  # the whole system, when names need it
        children = None
        if self.spec.names:
            for pid in procstat.all_pids():
                s = procstat.sample(pid, now)
                if s is not None:
                    every[pid] = s
            for pid, s in every.items():
                if pid != self.self_pid and any(_matches(n, s) for n in self.spec.names):
                    wanted.add(pid)
            if self.spec.trees:  # the parent links are read already: no second scan
                children = proctree.children_map({pid: s.ppid for pid, s in every.items()})
        for root in self.spec.trees:
            alive = root in every if self.spec.names else procstat.read_stat(root) is not None
            if not alive:
                continue
            self.tree_roots_seen.add(root)
            tree = proctree.descendants(root, include_zombies=True, children=children)
            wanted.update(p for p in (root, *tree) if p != self.self_pid)
        for pid in wanted:
            if pid in every:
                samples[pid] = every[pid]
        for group in self.spec.cgroups:
            if group in self.gone_cgroups:
                continue
            members = cgroup_pids(group)
            if members is None:
                self.gone_cgroups.add(group)
                notes.append(f"cgroup {group} is gone; no longer watching it")
                continue
            wanted |= members
        for pid in wanted:
            if pid not in samples and pid != self.self_pid:
                s = procstat.sample(pid, now)
                if s is not None:
                    samples[pid] = s
        if want_fds:
            samples = {p: procstat.ProcSample(**{**s.__dict__, "fds": procstat.count_fds(p)})
                       for p, s in samples.items()}
        return samples, notes

    def finished(self, current: dict[int, procstat.ProcSample]) -> bool:
        """No target is left and none can appear any more."""
        if current:
            return False
        if self.spec.names:
            return False
        if any(c not in self.gone_cgroups for c in self.spec.cgroups):
            return False
        return True
