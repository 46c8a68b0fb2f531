"""The pytest plugin on real hung tests, one pytest run per way a test waits for children.

Each case runs ``python -m pytest`` on a generated test file and checks that every process
of the test's tree is dumped (files read by Breakpad's minidump_dump and
minidump_stackwalk, each child's stack shown in the report with a named frame), that the
test's own view of its children is what it would be without the plugin (return codes,
output, timing, no ECHILD: recorded by the inner test in a JSON file), and that nothing of
the tree is left running once pytest has exited.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from generate_dump.inspect_dump import summarize_file
from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.pytest_helper import FORCE_DENIED_ENV
from readers import breakpad_stackwalk, minidump_dump

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")

DUMP_AFTER = 2  # --dump-on-timeout for every case
MARK = "GD_PLUGIN_TREE"  # environment variable that marks every process of one inner run
NAME = re.compile(r"^(?P<exe>.+)-(?P<pid>\d+)-timeout-\d{8}T\d{6}Z(-\d+)?\.dmp$")
LISTED = re.compile(r"^  (?P<role>pytest|child) (?P<pid>\d+) \((?P<exe>[^)]*)\): (?P<path>/\S+)$",
                    re.M)

HEADER = '''
import json, os, signal, subprocess, sys, threading, time

def record(**facts):
    path = os.environ["GD_FACTS"]
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(facts)
    json.dump(old, open(path, "w"))
'''

CASES = {
    # subprocess.run kills its child when the plugin's interrupt arrives.
    "run": ('''
def test_hang():
    subprocess.run(["sleep", "30"])
''', {"sleep": ("clock_nanosleep", "nanosleep")}, "wait4"),
    # A Python child; the test goes on reading it after the interrupt.
    "communicate": ('''
def test_hang():
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", "import time; print('hello', flush=True); "
                          "time.sleep(6); print('bye')"], stdout=subprocess.PIPE)
    res = {}
    try:
        res["out"] = p.communicate()[0].decode()
    except Exception:
        res["out"] = p.communicate()[0].decode()
        raise
    finally:
        record(rc=p.returncode, elapsed=time.monotonic() - t0, **res)
''', {"python": ("clock_nanosleep", "select")}, None),
    # The test keeps waiting after the interrupt: its child ends as it would have.
    "wait": ('''
def test_hang():
    t0 = time.monotonic()
    p = subprocess.Popen(["sleep", "6"])
    try:
        p.wait()
    except Exception:
        p.wait()
        raise
    finally:
        record(rc=p.returncode, elapsed=time.monotonic() - t0)
''', {"sleep": ("clock_nanosleep", "nanosleep")}, "wait4"),
    # os.system waits whatever happens (glibc retries on EINTR): a grandchild too.
    "system": ('''
def test_hang():
    t0 = time.monotonic()
    try:
        os.system("sleep 5; exit 3")
    finally:
        record(elapsed=time.monotonic() - t0)
''', {"sleep": ("clock_nanosleep", "nanosleep"), "dash": ("wait4",)}, "wait4"),
    # multiprocessing pool workers; the pool ends them on the way out.
    "pool": ('''
import multiprocessing

def test_hang():
    with multiprocessing.Pool(2) as pool:
        pool.map(time.sleep, [30, 30], chunksize=1)
''', {"python": ("clock_nanosleep", "select")}, None),
    # Another thread waits for the child; the main thread joins it.
    "thread": ('''
def test_hang():
    t0 = time.monotonic()
    p = subprocess.Popen(["sleep", "6"])
    res = {}
    def waiter():
        try:
            res["rc"] = p.wait()
        except Exception as exc:
            res["error"] = repr(exc)
        res["elapsed"] = time.monotonic() - t0
    done = threading.Event()
    th = threading.Thread(target=lambda: (waiter(), done.set()))
    th.start()
    try:
        th.join()
    finally:
        # Not join() again: CPython's join, once interrupted by an exception, takes the
        # thread for finished (bpo-45274's fix releases the live thread's lock).
        done.wait()
        record(**res)
''', {"sleep": ("clock_nanosleep", "nanosleep")}, None),
    # A grandchild under a shell; the test ends the whole group it started.
    "grandchild": ('''
def test_hang():
    p = subprocess.Popen(["sh", "-c", "sleep 30; exit 0"], start_new_session=True)
    try:
        p.wait()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        record(rc=p.wait())
''', {"sleep": ("clock_nanosleep", "nanosleep"), "dash": ("wait4",)}, "wait4"),
}


@dataclass
class Inner:
    result: object
    dump_dir: Path
    facts: dict
    listed: list = field(default_factory=list)  # (role, pid, exe, path)
    left: list = field(default_factory=list)


def _marked(marker: str) -> list[str]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            if f"{MARK}={marker}".encode() in env.split(b"\0"):
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
                out.append(f"{name}: {cmd.decode(errors='replace')}")
        except OSError:
            continue
    return out


def _leftovers(marker: str) -> list[str]:
    """Processes of the inner run still alive once it has exited (after a grace period in
    which the plugin's helper must have noticed that pytest is gone)."""
    deadline = time.monotonic() + 10
    while True:
        left = _marked(marker)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for line in left:  # never leave them running on the machine
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass
    return left


def run_inner(pytester, monkeypatch, tmp_path, source: str, *args: str,
              denied: bool = False) -> Inner:
    marker = uuid.uuid4().hex
    facts = tmp_path / "facts.json"
    monkeypatch.setenv(MARK, marker)
    monkeypatch.setenv("GD_FACTS", str(facts))
    if denied:
        monkeypatch.setenv(FORCE_DENIED_ENV, "1")
    pytester.makepyfile(test_inner=HEADER + source)
    dump_dir = tmp_path / "dumps"
    result = pytester.runpytest_subprocess(
        f"--dump-on-timeout={DUMP_AFTER}", f"--dump-dir={dump_dir}", "-p", "no:cacheprovider",
        *args, timeout=300)
    inner = Inner(result, dump_dir, json.loads(facts.read_text()) if facts.exists() else {})
    inner.left = _leftovers(marker)
    out = result.stdout.str()
    inner.listed = sorted({(m["role"], int(m["pid"]), m["exe"], m["path"])
                           for m in LISTED.finditer(out)})
    return inner


def check_tree(inner: Inner, children: dict, pytest_frame) -> None:
    """Every process of the tree dumped and readable, the report showing each child's
    stack with a named frame, no failure line, nothing left running."""
    out = inner.result.stdout.str()
    assert "failed:" not in out and "not dumped" not in out, out[-6000:]
    assert inner.left == [], f"left running after pytest exited: {inner.left}"
    roles = [r for r, *_ in inner.listed]
    assert roles.count("pytest") == 1, out[-6000:]
    files = sorted(inner.dump_dir.glob("*.dmp"))
    assert sorted(str(f) for f in files) == sorted(p for *_, p in inner.listed), out[-6000:]
    exes = [e for r, _, e, _ in inner.listed if r == "child"]
    for exe in children:
        assert any(e.startswith(exe) for e in exes), (exe, inner.listed)
    for role, pid, exe, path in inner.listed:
        m = NAME.match(Path(path).name)
        assert m and int(m["pid"]) == pid and m["exe"] == exe, path
        md = read_minidump_snapshot(path)
        assert md.threads and md.modules
        minidump_dump(path)  # asserts exit 0: every stream parsed
        walked = breakpad_stackwalk(path)
        frames = [ln for ln in walked.splitlines() if re.match(r"^\d+\|\d+\|", ln)]
        assert len(frames) >= 2, walked[-3000:]
        summary = summarize_file(path)
        # The report carries the same stacks.
        block = out[out.index(f"{role} {pid} ({exe}) {path}:"):]
        if role == "child":
            names = next(v for k, v in children.items() if exe.startswith(k))
            assert any(f"!{n}+" in summary for n in names), summary
            assert any(f"!{n}+" in block[:3000] for n in names), block[:3000]
        elif pytest_frame:
            assert f"!{pytest_frame}+" in summary, summary


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_child_dumped_and_test_view_unchanged(pytester, monkeypatch, tmp_path, case):
    source, children, pytest_frame = CASES[case]
    inner = run_inner(pytester, monkeypatch, tmp_path, source)
    inner.result.assert_outcomes(failed=1)
    inner.result.stdout.fnmatch_lines(["*test ran longer than 2 s (--dump-on-timeout)*"])
    check_tree(inner, children, pytest_frame)
    _check_facts(case, inner.facts)


def _check_facts(case: str, facts: dict) -> None:
    """What the inner test saw of its children: as without the plugin."""
    if case == "communicate":
        # The child's real end, and what it wrote after the interrupt (what the interrupted
        # read had already taken is lost with it, as with any exception there).
        assert facts["rc"] == 0 and facts["out"].endswith("bye\n"), facts
        assert 6.0 <= facts["elapsed"] < 6.0 + 6, facts
    elif case in ("wait", "thread"):
        # The child's own end (exit 0), not a stop taken for an exit, nor ECHILD; its sleep
        # neither cut short nor stretched by the dump.
        assert facts.get("rc") == 0 and "error" not in facts, facts
        assert 6.0 <= facts["elapsed"] < 6.0 + 6, facts
    elif case == "system":
        assert 5.0 <= facts["elapsed"] < 5.0 + 6, facts
    elif case == "grandchild":
        assert facts == {"rc": -signal.SIGKILL}, facts


@pytest.mark.parametrize("case", ["wait", "grandchild", "thread", "communicate", "system", "pool"])
def test_children_pytest_must_trace_itself(pytester, monkeypatch, tmp_path, case):
    """As under Yama ptrace_scope=1, where only an ancestor may trace: the helper leaves
    every child to pytest's watchdog, which dumps them while the helper holds pytest's
    other threads. The test's view is the same."""
    source, children, pytest_frame = CASES[case]
    inner = run_inner(pytester, monkeypatch, tmp_path, source, denied=True)
    inner.result.assert_outcomes(failed=1)
    check_tree(inner, children, pytest_frame)
    _check_facts(case, inner.facts)


BUSY = '''
def test_hang():
    p = subprocess.Popen(["sleep", "30"])
    th = threading.Thread(target=p.wait, daemon=True)
    th.start()
    try:
        while True:
            pass
    finally:
        p.kill()
        th.join()
        record(rc=p.returncode)
'''


def test_busy_python_thread_when_pytest_must_trace(pytester, monkeypatch, tmp_path):
    """A thread spinning in Python always waits for the GIL when frozen: pytest's own
    tracing would risk a deadlock, so the child is reported as not dumped, and the test and
    its child are untouched."""
    inner = run_inner(pytester, monkeypatch, tmp_path, BUSY, denied=True)
    inner.result.assert_outcomes(failed=1)
    out = inner.result.stdout.str()
    assert "not dumped by pytest either: pytest could not be frozen safely" in out, out[-4000:]
    assert ":gil" in out
    assert [r for r, *_ in inner.listed] == ["pytest"]
    assert inner.facts == {"rc": -signal.SIGKILL}
    assert inner.left == []


def test_busy_python_thread_dumped_by_helper(pytester, monkeypatch, tmp_path):
    inner = run_inner(pytester, monkeypatch, tmp_path, BUSY)
    inner.result.assert_outcomes(failed=1)
    check_tree(inner, {"sleep": ("clock_nanosleep", "nanosleep")}, None)
    assert inner.facts == {"rc": -signal.SIGKILL}


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_cooperates_with_pytest_timeout(pytester, monkeypatch, tmp_path, method):
    """Both plugins on: ours fires first (shorter time), with dumps; pytest-timeout's later
    deadline never triggers."""
    pytest.importorskip("pytest_timeout")
    source, children, pytest_frame = CASES["run"]
    inner = run_inner(pytester, monkeypatch, tmp_path, source, "--timeout=60",
                      f"--timeout-method={method}")
    inner.result.assert_outcomes(failed=1)
    assert "Timeout" not in inner.result.stdout.str().replace("--dump-on-timeout", "")
    check_tree(inner, children, pytest_frame)


def test_pytest_timeout_alone_still_works(pytester):
    pytester.makepyfile(test_inner="import time\ndef test_hang():\n    time.sleep(60)\n")
    quick = pytester.runpytest_subprocess("--timeout=1", "-p", "no:cacheprovider", timeout=300)
    quick.assert_outcomes(failed=1)
    assert "Timeout" in quick.stdout.str()


def test_plugin_is_off_by_default(pytester):
    pytester.makepyfile(test_ok="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "minidumps" not in result.stdout.str()


def test_quick_tests_untouched(pytester, tmp_path):
    pytester.makepyfile(test_ok="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("--dump-on-timeout=30",
                                           f"--dump-dir={tmp_path / 'd'}", "-p",
                                           "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (tmp_path / "d").exists()


def test_plugin_options_in_help(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--dump-on-timeout=SECONDS*", "*--dump-dir=DIR*"])


# -- as an ordinary user (no root, no CAP_SYS_PTRACE) ----------------------------------------


def _user_python() -> str:
    """An interpreter the test user may run (pyenv under /root is out of its reach)."""
    real = os.path.realpath(sys.executable)
    if not real.startswith("/root/"):
        return real
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(system):
        return system
    pytest.skip(f"no interpreter the test user may run ({real} is under /root)")


@pytest.mark.parametrize("denied", [False, True], ids=["helper", "pytest-traces"])
def test_as_ordinary_user(tmp_path, denied):
    """Same uid, no capability: the helper traces pytest (PR_SET_PTRACER) and the children,
    or pytest traces its children as their ancestor: the rules Yama ptrace_scope=1 checks."""
    from targets import setpriv_prefix, unprivileged_user, user_dir

    uid, gid = unprivileged_user()
    python = _user_python()
    d = user_dir(uid, gid)
    try:
        (d / "test_inner.py").write_text(HEADER + CASES["wait"][0])
        os.chown(d / "test_inner.py", uid, gid)
        marker = uuid.uuid4().hex
        paths = [str(Path(__file__).resolve().parent.parent)]
        paths += [p for p in sys.path if p.endswith("site-packages") and not p.startswith("/root/")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ":".join(paths),
               MARK: marker, "GD_FACTS": str(d / "facts.json"), "HOME": str(d)}
        if denied:
            env[FORCE_DENIED_ENV] = "1"
        probe = subprocess.run([*setpriv_prefix(uid, gid), python, "-c",
                                "import pytest, generate_dump.pytest_plugin"],
                               cwd=d, env=env, capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip(f"the test user cannot import pytest and generate_dump with {python} "
                        f"(installed where it may not read?): {probe.stderr.strip()[-300:]}")
        r = subprocess.run(
            [*setpriv_prefix(uid, gid), python, "-m", "pytest", "-p", "no:cacheprovider",
             f"--dump-on-timeout={DUMP_AFTER}", f"--dump-dir={d / 'dumps'}", "test_inner.py"],
            cwd=d, env=env, capture_output=True, text=True, timeout=300)
        left = _leftovers(marker)
        out = r.stdout
        assert r.returncode == 1, out[-4000:] + r.stderr[-2000:]
        assert "failed:" not in out and "not dumped" not in out, out[-6000:]
        assert left == []
        listed = {(m["role"], m["exe"]) for m in LISTED.finditer(out)}
        assert ("child", "sleep") in listed and any(r == "pytest" for r, _ in listed), out
        for f in (d / "dumps").glob("*.dmp"):
            assert f.stat().st_uid == uid
            minidump_dump(f)
        sleep_dump = next((d / "dumps").glob("sleep-*.dmp"))
        assert "!clock_nanosleep+" in summarize_file(sleep_dump)
        facts = json.loads((d / "facts.json").read_text())
        assert facts["rc"] == 0 and 6.0 <= facts["elapsed"] < 12.0, facts
    finally:
        shutil.rmtree(d, ignore_errors=True)
