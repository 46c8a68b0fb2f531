"""Python stacks in dumps of CPython processes, judged by py-spy and pystack.

One target per CPython version (tests/programs/pystacks.py: threads in time.sleep, a lock,
a socket read, C code via ctypes, 200-deep recursion, a generator, a coroutine, and one
spinning with the GIL) is stopped with SIGSTOP; ``py-spy dump`` and ``pystack remote``
read it, generate_dump dumps it, then it runs on and exits. The dump, moved to another
directory after the target is gone, is inspected: every thread's Python frames (function,
file, line) must equal what both tools saw, frame by frame, and the GIL holder too. Then
the same dump without its GD_PYTHON stream decodes to the same frames from the dump's
memory alone; with that memory scrambled it still inspects (soft errors, native frames).

Interpreters: pyenv's (/root/.pyenv/versions), the ones scripts/install-python-test-versions
builds (/var/cache/generate_dump-pythons) and Debian's /usr/bin/python3.X. 3.11 and 3.13
must exist in CI; other versions are skipped (with the reason) when absent.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generate_dump.minidump import format as fmt
from generate_dump.minidump.reader import read_minidump
from generate_dump.sources.minidump_file import read_minidump_snapshot

HERE = Path(__file__).parent
PROGRAM = HERE / "programs" / "pystacks.py"
VENV_BIN = Path(sys.executable).parent
REQUIRED = {"3.11", "3.13"}
CACHE = os.environ.get("GENERATE_DUMP_PYTHONS", "/var/cache/generate_dump-pythons")
DEPTH = 200


def _tool(name: str) -> str:
    for cand in (VENV_BIN / name, Path("/work/main/.venv/bin") / name):
        if cand.exists():
            return str(cand)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed (scripts/install-test-deps installs it)")
    pytest.skip(f"{name} is not installed")


def find_python(version: str, debian: bool = False) -> str:
    if debian:
        cands = [f"/usr/bin/python{version}"]
    else:
        cands = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
        cands += [f"{CACHE}/{version}/bin/python{version}"]
        cands += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    if version in REQUIRED and not debian and os.environ.get("CI"):
        pytest.fail(f"CPython {version} is missing: run scripts/install-python-test-versions")
    pytest.skip(f"CPython {version} is not installed here "
                f"(scripts/install-python-test-versions builds it)")


def _stopped(pid: int) -> bool:
    for tid in os.listdir(f"/proc/{pid}/task"):
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
        if raw[raw.rindex(b")") + 2:].split()[0] not in (b"T", b"t"):
            return False
    return True


def _wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + 10
    while not _stopped(pid):
        assert time.monotonic() < deadline, "target did not stop"
        time.sleep(0.02)


# -- what the other tools say ----------------------------------------------------------------


def pyspy_frames(pid: int) -> tuple[dict[int, list[tuple]], set[int]]:
    r = subprocess.run([_tool("py-spy"), "dump", "--pid", str(pid), "--json", "--nonblocking"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out, gil = {}, set()
    for t in json.loads(r.stdout):
        # Without native_thread_id (3.9, 3.10) py-spy knows only the pthread id.
        key = t["os_thread_id"] or f"0x{t['thread_id']:x}"
        out[key] = [(f["name"], f["filename"], f["line"]) for f in t["frames"]]
        if t.get("owns_gil"):
            gil.add(key)
    return out, gil


def by_pthread(doc: dict, keys) -> dict:
    """py-spy's keys (TIDs, or pthread ids as hex for 3.9/3.10) -> our TIDs."""
    ids = {t["python_thread_id"]: t["tid"] for t in doc["threads"] if t["python_thread_id"]}
    return {k: (ids.get(k, k) if isinstance(k, str) else k) for k in keys}


_PYSTACK_THREAD = re.compile(r"^Traceback for thread (\d+) .*?\[(.*?)\]")
_PYSTACK_FRAME = re.compile(r'^\s+\(Python\) File "(.*)", line (\d+), in (.*)$')


def pystack_frames(pid: int) -> tuple[dict[int, list[tuple]], set[int]]:
    r = subprocess.run([_tool("pystack"), "remote", "--no-block", "--no-color", str(pid)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out: dict[int, list[tuple]] = {}
    gil: set[int] = set()
    tid = None
    for line in r.stdout.splitlines():
        m = _PYSTACK_THREAD.match(line)
        if m:
            tid = int(m.group(1))
            out[tid] = []
            if "Has the GIL" in m.group(2):
                gil.add(tid)
            continue
        m = _PYSTACK_FRAME.match(line)
        if m and tid is not None:
            out[tid].append((m.group(3), m.group(1), int(m.group(2))))
    return {t: list(reversed(f)) for t, f in out.items()}, gil  # most recent call first


def inspect_json(path: Path, *extra: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "generate_dump", "inspect", "--json", *extra,
                        str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def python_frames(doc: dict) -> dict[int, list[dict]]:
    """Each thread's Python frames (without their position in the merged stack)."""
    return {t["tid"]: [{k: v for k, v in f.items() if k != "index"}
                       for f in t["frames"] if f["trust"] == "python"]
            for t in doc["threads"]}


# -- the paused target, seen by everyone -----------------------------------------------------


class Seen:
    def __init__(self, exe: str, tmp: Path):
        self.exe = exe
        proc = subprocess.Popen([exe, str(PROGRAM), str(DEPTH)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("READY"), line
            self.pid = proc.pid
            os.kill(proc.pid, signal.SIGSTOP)
            _wait_stopped(proc.pid)
            self.pyspy, self.pyspy_gil = pyspy_frames(proc.pid)
            self.pystack, self.pystack_gil = pystack_frames(proc.pid)
            dump = tmp / "py.dmp"
            r = subprocess.run([sys.executable, "-m", "generate_dump", str(proc.pid), "-o",
                                str(dump)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            assert _stopped(proc.pid), "a stopped target must stay stopped"
        finally:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            proc.kill()
            proc.wait(timeout=30)
        # Read after the target has exited, from another directory.
        moved = tmp / "elsewhere"
        moved.mkdir()
        self.dump = moved / "copy.dmp"
        shutil.move(str(dump), self.dump)


VERSIONS = [
    pytest.param(("3.11", False), id="3.11"),
    pytest.param(("3.13", False), id="3.13"),
    pytest.param(("3.12", False), id="3.12"),
    pytest.param(("3.11", True), id="debian-3.11", marks=pytest.mark.slow),
    pytest.param(("3.10", False), id="3.10", marks=pytest.mark.slow),
    pytest.param(("3.9", False), id="3.9", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=VERSIONS)
def seen(request, tmp_path_factory) -> Seen:
    version, debian = request.param
    exe = find_python(version, debian)
    return Seen(exe, tmp_path_factory.mktemp(f"py{version}"))


def _ours(frames: list[dict], qualified: bool) -> list[tuple]:
    return [((f["qualname"] or f["function"]) if qualified else f["function"], f["file"],
             f["line"]) for f in frames]


def test_frames_match_pyspy_and_pystack(seen: Seen):
    doc = inspect_json(seen.dump)
    ours = python_frames(doc)
    assert doc["python"] is not None and not doc["python"]["errors"], doc["python"]
    assert doc["python"]["read_while_running"] is False  # the target was stopped throughout
    tids = by_pthread(doc, seen.pyspy)
    assert set(tids.values()) == set(seen.pystack)
    assert len(seen.pyspy) == 9  # main + 8 kinds of thread
    names = {t["tid"]: t["name"] for t in doc["threads"]}
    for key, frames in seen.pyspy.items():
        tid = tids[key]
        assert tid in ours, f"thread {tid} has no Python frames in the dump"
        # py-spy names frames by qualified name on 3.11+, pystack by co_name.
        qualified = "." in "".join(f[0] for f in frames) or any(
            f["qualname"] and f["qualname"] != f["function"] for f in ours[tid])
        assert _ours(ours[tid], qualified) == frames, f"thread {tid} ({names.get(tid)}): py-spy"
        assert _ours(ours[tid], False) == seen.pystack[tid], f"thread {tid}: pystack"
    deep = [f for f in ours.values() if sum(x["function"] == "recurse" for x in f) == DEPTH + 1]
    assert len(deep) == 1
    assert any(f[0]["function"] == "inner" or any(x["function"] == "inner" for x in f)
               for f in ours.values())


def test_gil_holder_matches(seen: Seen):
    doc = inspect_json(seen.dump)
    holders = {t["tid"] for t in doc["threads"] if t["holds_gil"]}
    assert holders == seen.pystack_gil == set(by_pthread(doc, seen.pyspy_gil).values())
    # The spinning thread holds the GIL, unless it was stopped while handing it over.
    assert len(holders) <= 1
    for tid in holders:
        assert python_frames(doc)[tid][0]["function"] == "busy"
        assert doc["python"]["gil_holder"] == tid


def test_merged_text_and_modes(seen: Seen):
    text = subprocess.run([sys.executable, "-m", "generate_dump", "inspect", str(seen.dump)],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert re.search(r'File ".*pystacks\.py", line \d+, in nap \[python\]', text.stdout)
    assert "Python: CPython 3." in text.stdout
    # Merged: the eval loop's frames are replaced; --native keeps them; --python-only
    # shows nothing else.
    merged = inspect_json(seen.dump)
    native = inspect_json(seen.dump, "--native")
    only = inspect_json(seen.dump, "--python-only")
    for m, n, o in zip(merged["threads"], native["threads"], only["threads"]):
        assert m["tid"] == n["tid"] == o["tid"]
        assert all(f["trust"] == "python" for f in o["frames"])
        assert python_frames({"threads": [m]}) == python_frames({"threads": [n]})
        assert [f["function"] for f in o["frames"]] == \
            [f["function"] for f in m["frames"] if f["trust"] == "python"]
        assert not any(f["function"] == "_PyEval_EvalFrameDefault" for f in m["frames"])
    if any(f["function"] == "_PyEval_EvalFrameDefault"
           for t in native["threads"] for f in t["frames"]):
        # With symbols for the interpreter, Python frames sit where the eval loop was:
        # native frames (time_sleep, clock_nanosleep) above them, thread start below.
        t = [t for t in merged["threads"] if any(f["function"] == "sleeper"
                                                 for f in t["frames"])][0]
        kinds = [f["trust"] == "python" for f in t["frames"]]
        first = kinds.index(True)
        assert first > 0 and not any(kinds[:first])
        assert any(f["function"] and "sleep" in f["function"] for f in t["frames"][:first])


def _without_stream(src: Path, dst: Path) -> None:
    """A copy whose GD_PYTHON directory entry is renamed to an unused stream type."""
    data = bytearray(src.read_bytes())
    count, rva = struct.unpack_from("<II", data, 8)
    for i in range(count):
        at = rva + 12 * i
        if struct.unpack_from("<I", data, at)[0] == fmt.StreamType.GD_PYTHON:
            struct.pack_into("<I", data, at, 0x4744FFFF)
    dst.write_bytes(bytes(data))


def test_offline_decode_from_memory(seen: Seen, tmp_path):
    bare = tmp_path / "bare.dmp"
    _without_stream(seen.dump, bare)
    assert read_minidump_snapshot(bare).python is None
    with_stream = python_frames(inspect_json(seen.dump))
    from_memory = python_frames(inspect_json(bare))
    assert from_memory == with_stream


def test_scrambled_interpreter_memory(seen: Seen, tmp_path):
    """Every memory range except stacks filled with random bytes, stream removed: still a
    report, the native frames, no traceback, no hang."""
    bare = tmp_path / "bare.dmp"
    _without_stream(seen.dump, bare)
    md = read_minidump(bare)
    stacks = {t.stack.start for t in md.threads if t.stack}
    data = bytearray(bare.read_bytes())
    rng = random.Random(16)
    for d in md.all_memory():
        if d.start not in stacks:
            data[d.rva:d.rva + d.size] = bytes(rng.getrandbits(8) for _ in range(d.size))
    bare.write_bytes(bytes(data))
    doc = inspect_json(bare)
    assert len(doc["threads"]) == 9
    assert all(t["frames"] for t in doc["threads"])
    assert not any(f["trust"] == "python" for t in doc["threads"] for f in t["frames"])
    summary = subprocess.run([sys.executable, "-c",
                              "import sys; from generate_dump.inspect_dump import summarize_file;"
                              " print(summarize_file(sys.argv[1]))", str(bare)],
                             capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr


# -- no Python, broken Python -----------------------------------------------------------------


def test_non_python_process_has_no_python_stream(tmp_path):
    proc = subprocess.Popen(["sleep", "600"])
    try:
        time.sleep(0.2)
        dump = tmp_path / "sleep.dmp"
        r = subprocess.run([sys.executable, "-m", "generate_dump", str(proc.pid), "-o",
                            str(dump), "--print-stacks"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert "Python:" not in r.stderr
    finally:
        proc.kill()
        proc.wait()
    assert read_minidump_snapshot(dump).python is None
    assert fmt.StreamType.GD_PYTHON not in read_minidump(dump).streams
    doc = inspect_json(dump)
    assert doc["python"] is None
    assert doc["threads"][0]["frames"]
    assert not any(f["trust"] == "python" for f in doc["threads"][0]["frames"])


def test_python_without_runtime_symbol_is_a_soft_error(tmp_path):
    """An executable named like CPython without _PyRuntime (as a stripped static build
    would be): the dump is written, with a soft error saying why there are no stacks."""
    fake = tmp_path / "python3.99"
    shutil.copy("/usr/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "600"])
    try:
        time.sleep(0.2)
        dump = tmp_path / "fake.dmp"
        r = subprocess.run([sys.executable, "-m", "generate_dump", str(proc.pid), "-o",
                            str(dump)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "no readable _PyRuntime" in r.stderr
    finally:
        proc.kill()
        proc.wait()
    snap = read_minidump_snapshot(dump)
    assert snap.python is None
    assert [e.kind for e in snap.soft_errors] == ["python-not-found"]
    assert inspect_json(dump)["python"] is None


def _fake_312(cycle: bool) -> tuple:
    """A hand-made CPython 3.12 runtime in a RangesMemory: one interpreter, one thread
    whose two frames run one code object; with ``cycle`` the outer frame's ``previous``
    points back at the inner one."""
    from generate_dump.memsource import RangesMemory
    from generate_dump.python.offsets import TABLES

    t = TABLES[(3, 12)]
    base = 0x100000
    runtime, interp, tstate, cframe = base, base + 0x1000, base + 0x2000, base + 0x3000
    f1, f2, code, ctype = base + 0x4000, base + 0x4100, base + 0x5000, base + 0x6000
    name, fname, table, tname = base + 0x7000, base + 0x7100, base + 0x7200, base + 0x7300
    mem = {a: bytearray(0x400) for a in (runtime, interp, tstate, cframe, f1, code, ctype,
                                         name, fname, table, tname)}
    mem[f1] = bytearray(0x200)  # f1 and f2 share one block
    q = lambda blk, off, v: struct.pack_into("<Q", mem[blk], off, v)  # noqa: E731
    q(runtime, t["runtime.interpreters_head"], interp)
    q(interp, t["interp.threads_head"], tstate)
    q(tstate, t["tstate.interp"], interp)
    q(tstate, t["tstate.native_thread_id"], 4242)
    q(tstate, t["tstate.cframe"], cframe)
    q(cframe, t["cframe.current_frame"], f1)
    for fr, prev in ((f1, f2), (f2, f1 if cycle else 0)):
        off = fr - f1
        struct.pack_into("<Q", mem[f1], off + t["iframe.code"], code)
        struct.pack_into("<Q", mem[f1], off + t["iframe.previous"], prev)
        struct.pack_into("<Q", mem[f1], off + t["iframe.instr"],
                         code + t["code.co_code_adaptive"] + 2)
    q(code, t["object.ob_type"], ctype)
    q(ctype, t["type.tp_name"], tname)
    mem[tname][:5] = b"code\0"
    q(code, t["code.co_name"], name)
    q(code, t["code.co_qualname"], name)
    q(code, t["code.co_filename"], fname)
    q(code, t["code.co_linetable"], table)
    struct.pack_into("<i", mem[code], t["code.co_firstlineno"], 10)
    for obj, text in ((name, b"spin"), (fname, b"/x/fake.py")):
        q(obj, t["unicode.length"], len(text))
        struct.pack_into("<I", mem[obj], t["unicode.state"], (1 << 2) | (1 << 5) | (1 << 6))
        mem[obj][t["unicode.ascii_size"]:t["unicode.ascii_size"] + len(text)] = text
    # Location table: 2 code units on line 10, then 2 on line 11 (short forms 10, 11).
    lt = bytes([0x80 | (10 << 3) | 1, 0, 0, 0x80 | (11 << 3) | 1, 0, 0])
    q(table, t["bytes.ob_size"], len(lt))
    mem[table][t["bytes.ob_sval"]:t["bytes.ob_sval"] + len(lt)] = lt
    from generate_dump.python.decode import Runtime

    return RangesMemory((a, bytes(b)) for a, b in mem.items()), Runtime(runtime, 0x030C01F0, 12)


def test_decoder_on_handmade_runtime():
    from generate_dump.python.decode import decode

    mem, rt = _fake_312(cycle=False)
    state = decode(mem, rt)
    assert state.version == "3.12.1" and not state.errors
    (thread,) = state.threads
    assert thread.tid == 4242 and not thread.note
    assert [(f.function, f.file, f.line) for f in thread.frames] == \
        [("spin", "/x/fake.py", 10), ("spin", "/x/fake.py", 10)]


def test_decoder_stops_at_a_frame_cycle():
    from generate_dump.python.decode import decode

    mem, rt = _fake_312(cycle=True)
    started = time.monotonic()
    state = decode(mem, rt)
    assert time.monotonic() - started < 5
    (thread,) = state.threads
    assert len(thread.frames) == 2
    assert "loops back" in thread.note


def test_decoder_on_garbage_and_nothing():
    from generate_dump.memsource import EmptyMemory, RangesMemory
    from generate_dump.python.decode import Runtime, decode

    state = decode(EmptyMemory(), Runtime(0x1000, 0, 11))
    assert not state.threads and state.errors
    rng = random.Random(3)
    noise = RangesMemory([(0x1000, bytes(rng.getrandbits(8) for _ in range(1 << 16)))])
    for minor in (9, 10, 11, 12, 13):
        state = decode(noise, Runtime(0x1000 + 8 * minor, 0, minor))
        assert state.errors or not state.threads
    state = decode(EmptyMemory(), Runtime(0x1000, 0, 8))
    assert "not supported" in state.errors[0]


# -- the pytest plugin's report -----------------------------------------------------------------

pytest_plugins = ["pytester"]

HANGING = """
import subprocess, sys, time

def test_hangs():
    child = subprocess.Popen([sys.executable, "-c", "import time\\ntime.sleep(600)"])
    try:
        time.sleep(600)
    finally:
        child.kill()
        child.wait()
"""


def test_pytest_report_shows_python_lines(pytester, tmp_path):
    """A hung test: the report shows the Python line it hangs on, in pytest and in its
    Python child."""
    pytester.makepyfile(test_hang=HANGING)
    result = pytester.runpytest_subprocess("--dump-on-timeout=2", f"--dump-dir={tmp_path}",
                                           "-p", "no:cacheprovider", timeout=300)
    out = result.stdout.str()
    lines = (pytester.path / "test_hang.py").read_text().splitlines()
    line = 1 + lines.index("        time.sleep(600)")
    assert re.search(rf'File ".*test_hang\.py", line {line}, in test_hangs', out), out[-4000:]
    assert 'File "<string>", line 2, in <module>' in out, out[-4000:]


def test_lldb_backend_reads_python_stacks_too(tmp_path):
    """The LLDB backend decodes while LLDB holds the process stopped: the parked threads'
    Python frames equal py-spy's (the spinning thread moves, so it is left out)."""
    exe = find_python("3.13")
    proc = subprocess.Popen([exe, str(PROGRAM), "20"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("READY")
        dump = tmp_path / "lldb.dmp"
        r = subprocess.run([sys.executable, "-m", "generate_dump", "--backend", "lldb",
                            str(proc.pid), "-o", str(dump)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0 and "lldb" in r.stderr.lower() and not os.environ.get("CI"):
            pytest.skip(f"LLDB backend unavailable: {r.stderr.strip()}")
        assert r.returncode == 0, r.stderr
        spy, _ = pyspy_frames(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    doc = inspect_json(dump)
    assert doc["python"]["read_while_running"] is False
    ours = python_frames(doc)
    parked = {tid: frames for tid, frames in spy.items() if frames[0][0] != "busy"}
    assert len(parked) == 8
    for tid, frames in parked.items():
        assert _ours(ours[tid], True) == frames, tid
