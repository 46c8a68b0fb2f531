"""`generate_dump run`: crash and hang capture, judged by the real readers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checks import breakpad_frames
from generate_dump.minidump import read_minidump
from live import compile_program
from readers import breakpad_stackwalk, minidump_dump, rust_stackwalk_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run needs ptrace")

NAME = re.compile(r"^crashers-(\d+)-([A-Za-z0-9]+)-(\d{8}T\d{6}Z)\.dmp$")


@pytest.fixture(scope="module")
def crashers(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bin")
    return compile_program("crashers", d, "-O0")


def run(out_dir: Path, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "generate_dump", "run", "--output-dir", str(out_dir), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def dumps(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.dmp")) if out_dir.exists() else []


def crash_report(path: Path, symbols) -> tuple[tuple[str, str, int], dict[int, list[str]]]:
    """Breakpad's verdict (reason, address, crashed thread index) and frames per thread."""
    md = read_minidump(path)
    store = symbols.add_modules_of(md)
    text = breakpad_stackwalk(path, store)
    crash = next(l.split("|") for l in text.splitlines() if l.startswith("Crash|"))
    return (crash[1], crash[2], int(crash[3])), breakpad_frames(text, [t.tid for t in md.threads])


def test_null_dereference(crashers, symbols, tmp_path):
    r = run(tmp_path, "--", crashers, "segv")
    assert r.returncode == 139, r.stderr
    files = dumps(tmp_path)
    assert len(files) == 1
    m = NAME.match(files[0].name)
    assert m and m.group(2) == "SIGSEGV" and ":" not in files[0].name
    md = read_minidump(files[0])
    e = md.exception
    assert e.code == signal.SIGSEGV and e.flags == 1 and e.address == 0
    assert e.thread_id == int(m.group(1))  # the main thread crashed
    assert f"process {m.group(1)} (crashers) got SIGSEGV (SEGV_MAPERR) at 0x0" in r.stderr
    assert str(files[0]) in r.stderr
    minidump_dump(files[0])
    crash, frames = crash_report(files[0], symbols)
    assert crash == ("SIGSEGV /SEGV_MAPERR", "0x0", 0)  # thread 0 is the main thread
    assert frames[e.thread_id][0] == "crash_in_main"
    rust = rust_stackwalk_json(files[0], "--use-local-debuginfo")
    assert rust["crash_info"]["type"] == "SIGSEGV / SEGV_MAPERR"
    assert rust["crashing_thread"]["frames"][0]["function"] == "crash_in_main"


def test_crash_on_a_worker_thread(crashers, symbols, tmp_path):
    r = run(tmp_path, "--", crashers, "segv-thread")
    assert r.returncode == 139
    (path,) = dumps(tmp_path)
    md = read_minidump(path)
    pid = int(NAME.match(path.name).group(1))
    assert md.exception.thread_id != pid
    assert len(md.threads) == 2
    crash, frames = crash_report(path, symbols)
    assert frames[md.exception.thread_id][0] == "crash_in_worker"
    # The stack summary on stderr: the crashing thread first, its frame 0 named.
    summary = r.stderr.split("Crash: ", 1)[1]
    assert f'Thread {md.exception.thread_id} "crashers" (crashed):' in summary
    assert re.search(r"#0 0x[0-9a-f]+ crashers!crash_in_worker\+0x[0-9a-f]+", summary)
    # Breakpad names the crashing thread by its index in the thread list.
    index = [t.tid for t in md.threads].index(md.exception.thread_id)
    assert crash == ("SIGSEGV /SEGV_MAPERR", "0x0", index)


def test_abort(crashers, symbols, tmp_path):
    r = run(tmp_path, "--", crashers, "abort")
    assert r.returncode == 134
    (path,) = dumps(tmp_path)
    assert NAME.match(path.name).group(2) == "SIGABRT"
    md = read_minidump(path)
    assert md.exception.code == signal.SIGABRT
    crash, frames = crash_report(path, symbols)
    assert crash[0] == "SIGABRT"
    assert "abort_here" in frames[md.exception.thread_id]


def test_handled_signal_is_passed_through(crashers, tmp_path):
    r = run(tmp_path, "--", crashers, "handled")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "recovered"
    assert dumps(tmp_path) == []
    assert r.stderr == ""


def test_handler_that_reraises(crashers, symbols, tmp_path):
    r = run(tmp_path, "--", crashers, "reraise")
    assert r.returncode == 139
    (path,) = dumps(tmp_path)
    md = read_minidump(path)
    # The dump is taken at the re-raise, but reports the original fault.
    assert md.exception.code == signal.SIGSEGV and md.exception.flags == 1
    crash, frames = crash_report(path, symbols)
    assert crash[:2] == ("SIGSEGV /SEGV_MAPERR", "0x0")
    assert "crash_in_main" in frames[md.exception.thread_id]


def test_crashing_child_process(crashers, tmp_path):
    r = run(tmp_path, "--", crashers, "child-segv")
    assert r.returncode == 3  # the parent's own status
    (path,) = dumps(tmp_path)
    md = read_minidump(path)
    assert md.exception.code == signal.SIGSEGV
    assert md.misc["process_id"] == int(NAME.match(path.name).group(1))


def test_timeout_dumps_the_tree(crashers, tmp_path):
    start = time.monotonic()
    r = run(tmp_path, "--timeout", "2s", "--", crashers, "hang-child")
    elapsed = time.monotonic() - start
    assert r.returncode == 124, r.stderr
    assert elapsed < 2 + 8, elapsed  # the deadline plus dumping and ending the tree
    child = int(re.search(r"CHILD (\d+)", r.stdout).group(1))
    files = dumps(tmp_path)
    assert len(files) == 2
    pids = {int(NAME.match(f.name).group(1)) for f in files}
    assert child in pids
    assert all(NAME.match(f.name).group(2) == "timeout" for f in files)
    # Children first in the report.
    lines = [l for l in r.stderr.splitlines() if "still running at the timeout" in l]
    assert f"process {child} " in lines[0]
    for f in files:
        md = read_minidump(f)
        assert md.exception is None and md.threads
        minidump_dump(f)
    assert not os.path.exists(f"/proc/{child}") or \
        Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] in "ZX"


def test_exit_status_is_the_commands(crashers, tmp_path):
    assert run(tmp_path, "--", crashers, "exit", "7").returncode == 7
    assert run(tmp_path, "--", crashers, "exit", "0").returncode == 0
    assert dumps(tmp_path) == []


def test_command_not_found(tmp_path):
    r = run(tmp_path, "--", tmp_path / "missing")
    assert r.returncode == 127
    assert "cannot run" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_duration(crashers, tmp_path):
    r = run(tmp_path, "--timeout", "soon", "--", crashers, "exit")
    assert r.returncode == 125
    assert "not a duration" in r.stderr


def test_signals_are_forwarded(crashers, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "generate_dump", "run", "--output-dir",
                          str(tmp_path), "--", str(crashers), "hang-child"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    child = int(line.split()[1])
    p.send_signal(signal.SIGTERM)
    # SIGTERM reaches the command's process group: parent and child end, no dumps.
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert dumps(tmp_path) == []
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}")


def test_github_actions_annotations(crashers, tmp_path):
    env = dict(os.environ, GITHUB_ACTIONS="true")
    r = run(tmp_path, "--", crashers, "segv", env=env)
    assert r.returncode == 139
    lines = r.stderr.splitlines()
    assert lines[0].startswith("::group::generate_dump run: process ")
    assert "::endgroup::" in lines
    errors = [l for l in lines if l.startswith("::error::")]
    assert len(errors) == 1 and "SIGSEGV" in errors[0] and ".dmp" in errors[0]


def test_max_dumps(crashers, tmp_path):
    r = run(tmp_path, "--max-dumps", "0", "--", crashers, "segv")
    assert r.returncode == 139
    assert dumps(tmp_path) == []
    assert "no minidump: not dumped: --max-dumps 0 reached" in r.stderr


def test_dump_on_signal(crashers, tmp_path):
    """A cancelled CI job: SIGTERM to run dumps the tree first, then ends it."""
    p = subprocess.Popen([sys.executable, "-m", "generate_dump", "run", "--dump-on-signal",
                          "--output-dir", str(tmp_path), "--", str(crashers), "hang-child"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = int(p.stdout.readline().split()[1])
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    files = dumps(tmp_path)
    assert len(files) == 2 and all(NAME.match(f.name).group(2) == "sigterm" for f in files)
    assert child in {int(NAME.match(f.name).group(1)) for f in files}
