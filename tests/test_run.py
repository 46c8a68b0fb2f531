"""`generate_dump run`: crash and hang capture, judged by the real readers."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks import breakpad_frames
from generate_dump.backends.linux.coredumps import (
    is_our_handler,
    parse_core_pattern,
    system_core_pattern,
)
from generate_dump.run_session import duration, size
from generate_dump.sources.minidump_file import read_minidump_snapshot
from live import PROGRAMS, compile_program, kill_marked, left_running
from readers import breakpad_stackwalk, minidump_dump, rust_stackwalk_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run needs ptrace")

# The default mode (no tracing; crashes from core files) and the opt-in full-trace mode.
MODES = pytest.mark.parametrize("mode", [(), ("--trace",)], ids=["default", "trace"])
ANY_NAME = re.compile(r"^[A-Za-z0-9._+-]+?-(\d+)-([A-Za-z0-9]+)-(\d{8}T\d{6}Z)\.dmp$")
NAME = re.compile(r"^crashers-(\d+)-([A-Za-z0-9]+)-(\d{8}T\d{6}Z)\.dmp$")


def need_core_files() -> None:
    """The default mode reads crashes from core files: a core_pattern that pipes cores to
    a handler (apport, systemd-coredump) leaves it only --trace."""
    pattern = system_core_pattern()
    if pattern.pipe:
        pytest.fail(f"kernel.core_pattern is {pattern.text!r}: the default mode of run cannot "
                    "see core files here (set it to e.g. 'core' on the test machine)")


@pytest.fixture(scope="module")
def crashers(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bin")
    return compile_program("crashers", d, "-O0")


def no_cores():
    """The usual CI default: RLIMIT_CORE soft limit 0 (the hard limit stays)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


LAUNCHER = Path(sys.executable).parent / "generate_dump"
PYTHON_M = [sys.executable, "-m", "generate_dump"]


def installed_command() -> list[str]:
    """The installed `generate_dump` (the native launcher where a C compiler was at hand,
    as in CI: tests/test_launcher.py requires it there), else `python -m generate_dump`."""
    return [str(LAUNCHER)] if LAUNCHER.exists() else PYTHON_M


# How `run` is invoked: the installed command (what CI users run) and `python -m`.
ENTRIES = pytest.mark.parametrize("entry", ["installed", "python-m"])


def run(out_dir: Path, *args, env=None, timeout=120, cwd=None,
        core_soft_limit_zero=True, python_m=False) -> subprocess.CompletedProcess:
    """`generate_dump run` with the command's working directory in ``cwd`` (default: the
    output directory, so that a core file written there is seen by the test); through the
    installed command (see installed_command) unless ``python_m``."""
    gd = PYTHON_M if python_m else installed_command()
    cmd = [*gd, "run", "--output-dir", str(out_dir), *map(str, args)]
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd or out_dir, preexec_fn=no_cores if core_soft_limit_zero else None)


def dumps(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.dmp")) if out_dir.exists() else []


def crash_report(path: Path, symbols) -> tuple[tuple[str, str, int], dict[int, list[str]]]:
    """Breakpad's verdict (reason, address, crashed thread index) and frames per thread."""
    md = read_minidump_snapshot(path)
    store = symbols.add_modules_of(md)
    text = breakpad_stackwalk(path, store)
    crash = next(l.split("|") for l in text.splitlines() if l.startswith("Crash|"))
    return (crash[1], crash[2], int(crash[3])), breakpad_frames(text, [t.tid for t in md.threads])


@MODES
def test_null_dereference(crashers, symbols, tmp_path, mode):
    r = run(tmp_path, *mode, "--", crashers, "segv")
    assert r.returncode == 139, r.stderr
    files = dumps(tmp_path)
    assert len(files) == 1
    m = NAME.match(files[0].name)
    assert m and m.group(2) == "SIGSEGV" and ":" not in files[0].name
    md = read_minidump_snapshot(files[0])
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


@MODES
def test_crash_on_a_worker_thread(crashers, symbols, tmp_path, mode):
    r = run(tmp_path, *mode, "--", crashers, "segv-thread")
    assert r.returncode == 139
    (path,) = dumps(tmp_path)
    md = read_minidump_snapshot(path)
    pid = int(NAME.match(path.name).group(1))
    assert md.exception.thread_id != pid
    assert len(md.threads) == 2
    crash, frames = crash_report(path, symbols)
    assert frames[md.exception.thread_id][0] == "crash_in_worker"
    # The stack summary on stderr: the crashing thread first, its frame 0 named.
    summary = r.stderr.split("Crash: ", 1)[1]
    # (a core file carries no thread names: the default mode may show none)
    assert re.search(rf'Thread {md.exception.thread_id}( "crashers")? \(crashed\):', summary)
    assert re.search(r"#0 0x[0-9a-f]+ crashers!crash_in_worker\+0x[0-9a-f]+", summary)
    # Breakpad names the crashing thread by its index in the thread list.
    index = [t.tid for t in md.threads].index(md.exception.thread_id)
    assert crash == ("SIGSEGV /SEGV_MAPERR", "0x0", index)


@MODES
def test_abort(crashers, symbols, tmp_path, mode):
    r = run(tmp_path, *mode, "--", crashers, "abort")
    assert r.returncode == 134
    (path,) = dumps(tmp_path)
    assert NAME.match(path.name).group(2) == "SIGABRT"
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGABRT
    crash, frames = crash_report(path, symbols)
    assert crash[0] == "SIGABRT"
    assert "abort_here" in frames[md.exception.thread_id]


@MODES
def test_handled_signal_is_passed_through(crashers, tmp_path, mode):
    r = run(tmp_path, *mode, "--", crashers, "handled")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "recovered"
    assert dumps(tmp_path) == []
    assert r.stderr == ""


def test_handler_that_reraises_trace(crashers, symbols, tmp_path):
    r = run(tmp_path, "--trace", "--", crashers, "reraise")
    assert r.returncode == 139
    (path,) = dumps(tmp_path)
    md = read_minidump_snapshot(path)
    # The dump is taken at the re-raise, but reports the original fault.
    assert md.exception.code == signal.SIGSEGV and md.exception.flags == 1
    crash, frames = crash_report(path, symbols)
    assert crash[:2] == ("SIGSEGV /SEGV_MAPERR", "0x0")
    assert "crash_in_main" in frames[md.exception.thread_id]


@MODES
def test_crashing_child_process(crashers, tmp_path, mode):
    r = run(tmp_path, *mode, "--", crashers, "child-segv")
    assert r.returncode == 3  # the parent's own status
    (path,) = dumps(tmp_path)
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGSEGV
    assert md.process.pid == int(NAME.match(path.name).group(1))


@MODES
def test_timeout_dumps_the_tree(crashers, tmp_path, mode):
    start = time.monotonic()
    r = run(tmp_path, *mode, "--timeout", "2s", "--", crashers, "hang-child")
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
        md = read_minidump_snapshot(f)
        assert md.exception is None and md.threads
        minidump_dump(f)
    assert not os.path.exists(f"/proc/{child}") or \
        Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] in "ZX"


@MODES
def test_exit_status_is_the_commands(crashers, tmp_path, mode):
    assert run(tmp_path, *mode, "--", crashers, "exit", "7").returncode == 7
    assert run(tmp_path, *mode, "--", crashers, "exit", "0").returncode == 0
    assert dumps(tmp_path) == []


def test_command_not_found(tmp_path):
    r = run(tmp_path, "--", tmp_path / "missing")
    assert r.returncode == 127
    assert "cannot run" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_duration(crashers, tmp_path):
    r = run(tmp_path, "--timeout", "soon", "--", crashers, "exit")
    assert r.returncode == 125
    assert "not a duration" in r.stderr


@MODES
def test_signals_are_forwarded(crashers, tmp_path, mode):
    p = subprocess.Popen([*installed_command(), "run", *mode, "--output-dir",
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
    p = subprocess.Popen([*installed_command(), "run", "--dump-on-signal",
                          "--output-dir", str(tmp_path), "--", str(crashers), "hang-child"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = int(p.stdout.readline().split()[1])
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    files = dumps(tmp_path)
    assert len(files) == 2 and all(NAME.match(f.name).group(2) == "sigterm" for f in files)
    assert child in {int(NAME.match(f.name).group(1)) for f in files}


# --- the default mode: crashes from core files, nothing traced ---------------------------


def test_handler_that_reraises_default(crashers, symbols, tmp_path):
    """Without tracing only the final signal is known: the re-raise (SI_TKILL); the stack
    still shows the faulting function under the handler."""
    need_core_files()
    r = run(tmp_path, "--", crashers, "reraise")
    assert r.returncode == 139
    (path,) = dumps(tmp_path)
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGSEGV and md.exception.flags == 0xFFFFFFFA  # SI_TKILL
    crash, frames = crash_report(path, symbols)
    assert crash[0].startswith("SIGSEGV")
    assert "crash_in_main" in frames[md.exception.thread_id]


def test_crash_in_a_grandchild(crashers, symbols, tmp_path):
    """A crash two levels down (the shell reaps it, not run) is captured from its core,
    and the core, which exists only because run raised the limit, is deleted."""
    need_core_files()
    work = tmp_path / "work"
    work.mkdir()
    r = run(tmp_path / "out", "--", "sh", "-c", '"$0" segv-thread; echo "shell got $?"; exit 5',
            crashers, cwd=work)
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() == "shell got 139"
    (path,) = dumps(tmp_path / "out")
    pid = int(NAME.match(path.name).group(1))
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGSEGV and md.exception.flags == 1  # SEGV_MAPERR
    assert md.exception.address == 0 and md.exception.thread_id != pid
    minidump_dump(path)
    crash, frames = crash_report(path, symbols)
    assert crash[:2] == ("SIGSEGV /SEGV_MAPERR", "0x0")
    assert frames[md.exception.thread_id][:2] == ["crash_in_worker", "worker"]
    assert f"process {pid} (crashers) got SIGSEGV (SEGV_MAPERR) at 0x0" in r.stderr
    assert list(work.iterdir()) == []  # the core was deleted


@MODES
@pytest.mark.parametrize("shape", ["failing", "exec", "passing"])
def test_crash_in_a_directory_entered_just_before(crashers, symbols, tmp_path, mode, shape):
    """`cd build && ./test` crashing at once: the core lands in a directory run has not
    seen yet (its scan runs once a second). The default mode finds it afterwards, below
    the directories it knows: when the shell reports the crash (failing), when the
    crasher is run's own child (exec), and, in a run long enough to afford the look,
    when the command ends well anyway (passing); the core run caused is deleted."""
    need_core_files()
    work = tmp_path / "work"
    (work / "build" / "tests").mkdir(parents=True)
    script = {"failing": 'cd build/tests && "$0" segv',
              "exec": 'cd build/tests && exec "$0" segv',
              "passing": '(cd build/tests && "$0" segv); sleep 1.5; exit 0'}[shape]
    r = run(tmp_path / "out", *mode, "--", "sh", "-c", script, crashers, cwd=work)
    assert r.returncode == (0 if shape == "passing" else 139), r.stderr
    (path,) = dumps(tmp_path / "out")
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGSEGV and md.exception.address == 0
    crash, frames = crash_report(path, symbols)
    assert crash[:2] == ("SIGSEGV /SEGV_MAPERR", "0x0")
    assert frames[md.exception.thread_id][:2] == ["crash_in_main", "main"]
    assert list((work / "build" / "tests").iterdir()) == []  # the core was deleted


def test_core_kept_when_the_command_would_have_written_it(crashers, tmp_path):
    need_core_files()
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.fail("this test needs a nonzero hard RLIMIT_CORE (ulimit -H -c)")

    def cores_allowed():
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))

    cmd = [*installed_command(), "run", "--output-dir", str(tmp_path / "out"),
           "--", str(crashers), "segv"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       preexec_fn=cores_allowed)
    assert r.returncode == 139, r.stderr
    assert len(dumps(tmp_path / "out")) == 1
    core = tmp_path / "core"
    assert core.exists() and core.read_bytes()[:4] == b"\x7fELF"  # the user's core stays


def test_core_limit_zero_turns_crash_capture_off(crashers, tmp_path):
    r = run(tmp_path, "--core-limit", "0", "--", crashers, "segv")
    assert r.returncode == 139
    assert dumps(tmp_path) == [] and not (tmp_path / "core").exists()
    assert "got SIGSEGV; no minidump: crash capture is off" in r.stderr


@pytest.mark.parametrize("text, uses_pid, pipe, directory, name, other", [
    ("core", False, False, "", "core", "core.12"),
    ("core", True, False, "", "core.4242", "core"),
    ("/var/crash/core.%e.%p", False, False, "/var/crash", "core.my prog.17", "core.x"),
    ("cores/%e-%t", False, False, "cores", "sh-1700000000", "sh"),
    ("|/usr/share/apport/apport -p%p -s%s -c%c", False, True, "", None, None),
    ("/tmp/%u/core", False, False, "/tmp/%u", None, None),
])
def test_core_pattern(text, uses_pid, pipe, directory, name, other):
    p = parse_core_pattern(text, uses_pid)
    assert p.pipe == pipe and p.directory == directory
    assert not is_our_handler(p)
    if name is None:
        assert p.name is None
    else:
        assert p.name.match(name) and not p.name.match(other)


def test_our_core_handler_is_recognised():
    """With `generate_dump core-handler` as core_pattern, crashes are dumped by it: run
    says so instead of asking for --trace."""
    p = parse_core_pattern("|/usr/local/bin/generate_dump core-handler --dir /var/crash "
                           "%P %s %t %e", False)
    assert p.pipe and is_our_handler(p)


@MODES
def test_signals_the_program_handles_are_delivered(crashers, tmp_path, mode):
    """SIGUSR1 raised 3000 times, SIGALRM and SIGPROF from interval timers: every one
    reaches the program's handler, in both modes."""
    r = run(tmp_path, *mode, "--", crashers, "signals", "3000")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "USR1 3000 ALRM>=20 PROF>=20"
    assert r.stderr == "" and dumps(tmp_path) == []


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except OSError:
            return True
        if state in "ZX":
            return True
        time.sleep(0.05)
    return False


@MODES
def test_timeout_reaches_a_daemonised_descendant(crashers, tmp_path, mode):
    """A descendant that double-forked and called setsid is still dumped and ended at the
    timeout (run is a child subreaper, so the orphan stays below it)."""
    r = run(tmp_path, *mode, "--timeout", "2s", "--kill-after", "2s", "--", crashers,
            "hang-daemon")
    assert r.returncode == 124, r.stderr
    daemon = int(re.search(r"DAEMON (\d+)", r.stdout).group(1))
    pids = {int(NAME.match(f.name).group(1)) for f in dumps(tmp_path)}
    assert daemon in pids and len(pids) == 2
    assert _gone(daemon)


@MODES
def test_a_failing_dump_changes_nothing(crashers, tmp_path, mode):
    """The output directory turns into a file under run's feet: every dump fails, run says
    so in one line per dump and keeps the command's status; nothing is left running."""
    out = tmp_path / "out"
    script = 'rm -rf "$1" && touch "$1" && exec "$0" "$2"'
    r = run(out, *mode, "--", "sh", "-c", script, crashers, out, "segv", cwd=tmp_path)
    assert r.returncode == 139, r.stderr
    assert "Traceback" not in r.stderr
    assert re.search(r"got SIGSEGV.*; no minidump: .*(Not a directory|not a directory|exists)",
                     r.stderr), r.stderr
    out.unlink()
    r = run(out, *mode, "--timeout", "1s", "--", "sh", "-c", script, crashers, out,
            "hang-child", cwd=tmp_path)
    assert r.returncode == 124, r.stderr
    assert "Traceback" not in r.stderr
    child = int(re.search(r"CHILD (\d+)", r.stdout).group(1))
    assert r.stderr.count("no minidump:") == 2
    assert _gone(child)


def test_a_dying_tracer_drops_the_signal_of_a_stopped_tracee(tmp_path):
    """The kernel fact behind #13's lost SIGURG: a tracer that exits while its tracee sits
    in a signal-delivery-stop takes that signal with it (the tracee resumes without it).
    So `run --trace` must never just exit: it detaches every tracee with its signal."""
    from ptrace.binding import func

    r_fd, w_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r_fd)
        signal.signal(signal.SIGUSR1, lambda s, f: os.write(w_fd, b"H"))
        while True:
            time.sleep(0.01)
    os.close(w_fd)
    try:
        time.sleep(0.2)
        for detach in (False, True):
            tracer = os.fork()
            if tracer == 0:
                code = 1
                try:
                    func.ptrace(0x4206, child, 0, 0)  # PTRACE_SEIZE
                    os.kill(child, signal.SIGUSR1)
                    _, status = os.waitpid(child, 0x40000000)
                    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGUSR1
                    if detach:
                        func.ptrace(0x11, child, 0, signal.SIGUSR1)  # PTRACE_DETACH, SIGUSR1
                    code = 0
                finally:
                    os._exit(code)
            assert os.waitpid(tracer, 0)[1] == 0
            time.sleep(0.3)
            os.set_blocking(r_fd, False)
            try:
                got = os.read(r_fd, 10)
            except BlockingIOError:
                got = b""
            assert got == (b"H" if detach else b""), (detach, got)
            assert Path(f"/proc/{child}/status").read_text().count("TracerPid:\t0") == 1
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(r_fd)


# --- Go: preemption signals, crashes and hangs under run --------------------------------


@pytest.fixture(scope="module")
def gopreempt(tmp_path_factory) -> Path:
    go = shutil.which("go")
    assert go, "Go (golang-go) is needed: scripts/install-test-deps installs it"
    d = tmp_path_factory.mktemp("go")
    env = dict(os.environ, GOCACHE=str(d / "cache"), GO111MODULE="off", CGO_ENABLED="0")
    out = d / "gopreempt"
    subprocess.run([go, "build", "-o", str(out), str(PROGRAMS / "gopreempt.go")], check=True,
                   env=env, timeout=600)
    return out


def _go_busy_runs(gopreempt, tmp_path, mode, times):
    for i in range(times):
        status = 10 + i
        r = run(tmp_path, *mode, "--", gopreempt, "busy", "3", status, timeout=300)
        assert r.returncode == status, (i, r.stderr[-2000:])
        assert r.stdout.strip() == "rounds 3" and r.stderr == ""
    assert dumps(tmp_path) == []


@MODES
def test_go_preemption_under_run(gopreempt, tmp_path, mode):
    """Garbage collections that must preempt spinning goroutines (SIGURG) finish, and the
    program exits with its own status; see the slow variant for many runs in a row."""
    _go_busy_runs(gopreempt, tmp_path, mode, 3)


@pytest.mark.slow
@MODES
def test_go_preemption_under_run_20_times(gopreempt, tmp_path, mode):
    _go_busy_runs(gopreempt, tmp_path, mode, 20)


@MODES
def test_go_crash(gopreempt, symbols, tmp_path, mode):
    """GOTRACEBACK=crash: the runtime prints its traceback and dies of SIGABRT; run exits
    with the same status as the bare program and leaves a dump with the exception."""
    need_core_files()
    env = dict(os.environ, GOTRACEBACK="crash")
    bare = subprocess.run([str(gopreempt), "crash"], capture_output=True, env=env,
                          preexec_fn=no_cores, cwd=tmp_path, timeout=60)
    r = run(tmp_path / "out", *mode, "--", gopreempt, "crash", env=env, cwd=tmp_path)
    assert bare.returncode == -signal.SIGABRT
    assert r.returncode == 128 + signal.SIGABRT, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "nil pointer dereference" in r.stderr  # the runtime's own report got through
    (path,) = dumps(tmp_path / "out")
    md = read_minidump_snapshot(path)
    assert md.exception.code == signal.SIGABRT
    minidump_dump(path)
    crash, frames = crash_report(path, symbols)
    assert crash[0].startswith("SIGABRT")
    crashed = frames[md.exception.thread_id]
    assert len(crashed) >= 3 and any(f.startswith("runtime.") for f in crashed), crashed


@MODES
def test_go_timeout(gopreempt, tmp_path, mode):
    r = run(tmp_path, *mode, "--timeout", "2s", "--", gopreempt, "hang", timeout=120)
    assert r.returncode == 124, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    pid = int(re.search(r"process (\d+) \(gopreempt\) was still running", r.stderr).group(1))
    assert _gone(pid)  # also when the dump failed
    files = dumps(tmp_path)
    assert len(files) == 1, r.stderr[-3000:]
    assert int(ANY_NAME.match(files[0].name).group(1)) == pid
    md = read_minidump_snapshot(files[0])
    assert len(md.threads) >= 3
    minidump_dump(files[0])


@ENTRIES
@pytest.mark.parametrize("attempt", range(8))
def test_sigterm_at_start_never_orphans_the_command(tmp_path, attempt, entry):
    """SIGTERM to run the moment its command has started (a cancelled CI job; the same
    race as test_dump_on_signal's): the command gets the signal too and is never left
    running without run. Signal handling is set up before the command is spawned."""
    marker = f"{30 + attempt / 100 + os.getpid() % 1000 / 1e6:.6f}"
    gd = installed_command() if entry == "installed" else PYTHON_M
    p = subprocess.Popen([*gd, "run", "--output-dir",
                          str(tmp_path), "--", "sh", "-c", 'echo ready; exec sleep "$0"',
                          marker],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        left = left_running(marker)
        assert not left, f"sleep {marker} outlived run (pids {left})"
        assert p.returncode == 128 + signal.SIGTERM, p.stderr.read()
    finally:
        kill_marked(marker)
        p.kill()
        p.wait()


def test_command_without_double_dash(tmp_path):
    """`run CMD ARG...` (no `--`, no option-like word after CMD) runs CMD as `run -- CMD`;
    an option-like word after CMD is left to the option parser, which rejects it."""
    r = run(tmp_path, "echo", "hello", "world")
    assert r.returncode == 0 and r.stdout == "hello world\n", r.stderr
    r = run(tmp_path, "false")
    assert r.returncode == 1
    r = run(tmp_path, "echo", "-n", "x")
    assert r.returncode == 125 and "No such option" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("spelling", [["--"], ["--timeout", "1h", "--"], ["--trace", "--"]],
                         ids=["fast-path", "fast-path-options", "click"])
def test_bug_of_ours_is_one_line_and_125(tmp_path, spelling):
    """A bug of ours in run (injected before the command starts) is one line on stderr and
    run's own status, 125, never a traceback; the command does not run."""
    marker = tmp_path / "ran"
    env = dict(os.environ, GENERATE_DUMP_TEST_FAIL="run-start")
    r = run(tmp_path, *spelling, "touch", marker, env=env, python_m=True)
    assert r.returncode == 125, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("generate_dump run: error: internal error: InjectedFailure"), \
        r.stderr
    assert not marker.exists()


def test_fast_path_imports_stay_light():
    """`run` starts its command before anything heavy loads: the modules its default mode
    needs import neither click, the capture machinery, dataclasses, typing, re, enum (nor
    signal, which imports it), collections nor ctypes (each costs the wrapped command, or
    the CPU beside it, milliseconds of start-up; see README, What it costs)."""
    code = ("import sys\n"
            "import generate_dump._entry, generate_dump.run_session\n"
            "import generate_dump.backends.linux.supervisor\n"
            "heavy = {'click', 'typing', 'dataclasses', 'ptrace', 'elftools', 're', 'enum',\n"
            "         'signal', 'collections', 'ctypes', 'functools',\n"
            "         'generate_dump.backends.linux.capture', 'generate_dump.snapshot'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


_DURATION = r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|)\s*"
_SIZE = r"\s*([0-9]+)\s*([kKmMgG]?)(?:i?[bB])?\s*"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789.msShkKmMgGiIbB x\t\n\x1c\xa0\u0663_-+e")),
               max_size=8))
def test_duration_and_size_read_what_their_regexes_say(text):
    """run_session reads durations and sizes by hand (re costs run's start-up): the same
    values as the regexes they replaced, and the same refusals."""
    m = re.fullmatch(_DURATION, text)
    expected = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}[
        m.group(2)] if m and float(m.group(1)) > 0 else None
    try:
        got = duration(text)
    except ValueError:
        got = None
    assert got == expected, text
    m = re.fullmatch(_SIZE, text)
    expected = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[
        m.group(2).lower()] if m else None
    try:
        got = size(text)
    except ValueError:
        got = None
    assert got == expected, text


def _ignore(*sigs):
    def pre():
        for s in sigs:
            signal.signal(s, signal.SIG_IGN)
    return pre


@MODES
@pytest.mark.parametrize("ignored", [(), (signal.SIGHUP,), (signal.SIGINT, signal.SIGQUIT),
                                     (signal.SIGHUP, signal.SIGTERM, signal.SIGCHLD)],
                         ids=["none", "nohup", "int-quit", "hup-term-chld"])
@ENTRIES
def test_command_inherits_the_callers_ignored_signals(tmp_path, mode, ignored, entry):
    """`nohup generate_dump run -- CMD` (or a CI runner that ignores SIGINT): the command
    ignores what the caller ignored, exactly as when started bare; run too does not die of
    an ignored signal."""
    probe = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]

    def mask(argv):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           preexec_fn=_ignore(*ignored))
        assert r.returncode == 0, r.stderr
        blocked, ignored_mask = (int(line.split()[1], 16) for line in r.stdout.splitlines())
        assert blocked == 0, r.stdout  # SigBlk comes first in /proc/PID/status
        return ignored_mask

    bare = mask(probe)
    gd = installed_command() if entry == "installed" else PYTHON_M
    wrapped = mask([*gd, "run", *mode, "--output-dir", str(tmp_path), "--", *probe])
    watched = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
               signal.SIGPIPE, signal.SIGXFSZ}
    bits = sum(1 << (s - 1) for s in watched)
    assert wrapped & bits == bare & bits, (hex(bare), hex(wrapped))
    for s in ignored:
        assert bare & (1 << (s - 1))
