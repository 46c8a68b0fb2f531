"""The one process-tree walker (platform/linux/proctree.py) against a real tree, judged by
ps(1); both ways of finding children (task/*/children files and the /proc scan) agree."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from generate_dump.platform.linux import proctree

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _ps_tree(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (depth below root, state letter) of root's descendants, from ps(1)."""
    rows = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat="], capture_output=True,
                          text=True, check=True).stdout.split("\n")
    parent, state = {}, {}
    for row in rows:
        if row.strip():
            pid, ppid, stat = row.split()[:3]
            parent[int(pid)], state[int(pid)] = int(ppid), stat[0]
    out = {}
    for pid in parent:
        depth, p = 0, pid
        while p in parent and p != root and depth < 1000:
            p, depth = parent[p], depth + 1
        if p == root and pid != root:
            out[pid] = (depth, state[pid])
    return out


@pytest.fixture
def tree():
    """sh -> (sleep, sh -> sleep): four processes below the root, two levels deep."""
    root = subprocess.Popen(["sh", "-c", "sleep 60 & (sleep 61 & wait) & echo READY; wait"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 10
        while len(_ps_tree(root.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield root.pid
    finally:
        for pid in _ps_tree(root.pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        root.kill()
        root.wait()


def test_descendants_match_ps_both_ways(tree):
    want = {pid: depth for pid, (depth, _) in _ps_tree(tree).items()}
    assert len(want) == 3 and sorted(want.values()) == [1, 1, 2]
    assert proctree.has_children_files()  # Debian's kernel: the fast path is the one used
    assert proctree.descendants(tree) == want
    assert proctree.descendants(tree, children=proctree.children_map()) == want
    order = proctree.deepest_first(want)
    assert [want[p] for p in order] == [2, 1, 1]


def test_zombies_only_when_asked():
    """An exited, unreaped child is in the tree only with include_zombies."""
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while _ps_tree(os.getpid()).get(child.pid, (0, ""))[1] != "Z":
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.02)
        assert child.pid not in proctree.descendants(os.getpid())
        assert proctree.descendants(os.getpid(), include_zombies=True)[child.pid] == 1
        scanned = proctree.children_map()
        assert child.pid not in proctree.descendants(os.getpid(), children=scanned)
    finally:
        child.wait()


def test_gone_root_has_no_descendants():
    p = subprocess.Popen(["true"])
    p.wait()
    assert proctree.descendants(p.pid) == {}
    assert proctree.children_of(p.pid) == []
