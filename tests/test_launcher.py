"""The native `generate_dump` launcher (launcher/generate_dump.c): `run` starts its command
before the Python interpreter, and nothing else changes.

The early start is judged by what it must not change (options read as the Python side
reads them, signals, exit status, crash capture) and by one fact only it can make true: a
command runs even when the Python side fails at once (an injected bug)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generate_dump.run_session import plain_run
from live import compile_program, kill_marked, left_running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

BIN = Path(sys.executable).parent
LAUNCHER = BIN / "generate_dump"


def launcher_built() -> bool:
    try:
        with open(LAUNCHER, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def need_launcher() -> None:
    if not launcher_built():
        if os.environ.get("CI"):
            pytest.fail(f"{LAUNCHER} is not the native launcher: scripts/test installs gcc "
                        "before the package, so setup.py must have built it")
        pytest.skip("no native launcher installed (pip install -e . with a C compiler)")


def test_installed_pair():
    """`generate_dump` is the launcher; `generate_dump-python`, beside it, the Python side
    it becomes; both answer as generate_dump."""
    need_launcher()
    for exe in (LAUNCHER, BIN / "generate_dump-python"):
        r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "generate_dump 0.1.0\n"), r.stderr
    r = subprocess.run([str(LAUNCHER), "run", "--bogus", "--", "true"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 125 and "generate_dump run" in r.stderr, r.stderr


def launcher_says(argv: list[str]) -> str:
    r = subprocess.run([str(LAUNCHER), "run", *argv], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, GENERATE_DUMP_TEST_LAUNCHER_PARSE="1"))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


COMMON = [
    ["--", "make", "test"],
    ["make", "test"],
    ["--timeout", "30m", "--", "pytest", "-x"],
    ["--timeout=90", "--output-dir", "dumps", "--", "sh", "-c", "x"],
    ["--output-dir=d", "--max-dumps", "3", "--kill-after", "500ms", "--core-limit", "512M",
     "--dump-on-signal", "--no-redact", "--", "x"],
    ["--core-limit", "0", "--redact", "--", "x", "-"],
]


@pytest.mark.parametrize("argv", COMMON, ids=range(len(COMMON)))
def test_usual_lines_start_early(argv):
    """The lines CI users write start early, and Python reads them as plain too."""
    need_launcher()
    assert plain_run(argv) is not None
    assert launcher_says(argv) == "early"


WORDS = st.sampled_from([
    "--", "-", "", "--timeout", "--timeout=", "--timeout=5", "--output-dir", "--output-dir=",
    "--max-dumps", "--max-dumps=2", "--kill-after", "--core-limit", "--core-limit=2G",
    "--dump-on-signal", "--redact", "--no-redact", "--trace", "--redact=1", "--help", "-h",
    "5", "0", "0.0", "1.", ".5", "1e3", "0x10", " 7 ", "7\t", "3 ms", "3m s", "2h", "10ms",
    "1.5s", "512M", "2GiB", "2 gb", "1k", "3x", "99999999999999999999999G", "\x1c5",
    "cmd", "sh", "-c", "-x", "a=b", "--x=--", "é",
])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(WORDS, max_size=7))
def test_launcher_starts_early_only_what_python_takes(argv):
    """Every line the launcher starts early is a plain `run` for the Python side, read the
    same way (else the command would run under options run did not take)."""
    need_launcher()
    if launcher_says(argv) == "early":
        assert plain_run(argv) is not None, argv


def test_command_runs_before_python(tmp_path):
    """With the Python side failing at once (an injected bug), the command still runs, and
    run passes its status through with one line on stderr: the launcher started it."""
    need_launcher()
    marker = tmp_path / "ran"
    env = dict(os.environ, GENERATE_DUMP_TEST_FAIL="run-start")
    r = subprocess.run([str(LAUNCHER), "run", "--output-dir", str(tmp_path), "--", "sh", "-c",
                        f'touch {marker}; exit 3'], capture_output=True, text=True,
                       timeout=60, env=env)
    assert marker.exists()
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "InjectedFailure" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_environment_is_the_callers(tmp_path):
    """The command's environment, signal mask and process group are what run's Python side
    gives it: the launcher's note to Python is not in it, nothing is blocked."""
    need_launcher()
    probe = ("import os, signal; print(sorted(k for k in os.environ if 'GENERATE_DUMP' in k),"
             " sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),"
             " os.getpgid(0) == os.getpid())")
    r = subprocess.run([str(LAUNCHER), "run", "--output-dir", str(tmp_path), "--",
                        sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[] [] True", r.stdout


@pytest.mark.parametrize("attempt", range(6))
def test_signal_before_python_is_up_is_forwarded(tmp_path, attempt):
    """SIGTERM to run before its Python side handles signals (sent at once, or a few ms
    later): it waits, blocked, and is forwarded to the command, which dies of it; run exits
    128+15 and leaves nothing running."""
    need_launcher()
    marker = f"{60 + attempt / 100 + os.getpid() % 1000 / 1e6:.6f}"
    p = subprocess.Popen([str(LAUNCHER), "run", "--output-dir", str(tmp_path), "--", "sleep",
                          marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(attempt * 0.003)
        p.send_signal(signal.SIGTERM)
        # -15: killed before its first instruction could block the signal (so before it
        # started anything), as the bare command would have been.
        assert p.wait(timeout=30) in (128 + signal.SIGTERM, -signal.SIGTERM), p.stderr.read()
        assert not left_running(marker), "the command outlived run"
    finally:
        kill_marked(marker)
        p.kill()
        p.wait()


def test_crash_before_python_is_up_is_dumped(tmp_path):
    """A command that crashes at once, before the Python side watches for core files: its
    core, already written, is found and converted (with the exception stream), and the
    core the soft limit 0 would not have allowed is deleted."""
    need_launcher()
    import resource


    exe = compile_program("crashers", tmp_path, "-O0")

    def no_cores():
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([str(LAUNCHER), "run", "--output-dir", str(out), "--", str(exe), "segv"],
                       capture_output=True, text=True, timeout=120, cwd=out,
                       preexec_fn=no_cores)
    assert r.returncode == 128 + signal.SIGSEGV, r.stderr
    files = sorted(out.glob("*.dmp"))
    assert len(files) == 1, (r.stderr, sorted(out.iterdir()))
    assert "got SIGSEGV" in r.stderr, r.stderr
    assert not [f for f in out.iterdir() if f.name.startswith("core")]


@pytest.mark.slow
def test_without_a_compiler_the_python_command_is_installed(tmp_path):
    """No C compiler at install time (CC fails): the install still succeeds, and
    `generate_dump` is the Python console script, which runs `run` the same way."""
    import sysconfig

    import pip

    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(venv / "bin" / "python"), os.path.dirname(pip.__file__), "install",
                        "--quiet", "--no-deps", str(root)], capture_output=True, text=True,
                       env=dict(os.environ, CC="false"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    command = venv / "bin" / "generate_dump"
    assert command.read_bytes().startswith(b"#!"), "expected the Python console script"
    assert (venv / "bin" / "generate_dump-python").exists()
    r = subprocess.run([str(command), "run", "--output-dir", str(tmp_path), "--", "sh", "-c",
                        "exit 3"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (3, ""), r.stderr


def test_a_script_pip_wrote_through_sh_is_run_as_a_script(tmp_path):
    """pip writes `#!/bin/sh` and an exec trampoline when the interpreter's path is long or
    has spaces: the launcher then runs the script as it is, never the shell with Python
    code, and `run` works the same."""
    need_launcher()
    bin_dir = tmp_path / "a dir with spaces"
    bin_dir.mkdir()
    launcher = bin_dir / "generate_dump"
    launcher.write_bytes(LAUNCHER.read_bytes())
    launcher.chmod(0o755)
    script = bin_dir / "generate_dump-python"
    script.write_text("#!/bin/sh\n"
                      f"'''exec' \"{sys.executable}\" \"$0\" \"$@\"\n"
                      "' '''\n"
                      "import sys\n"
                      "from generate_dump._entry import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    r = subprocess.run([str(launcher), "run", "--output-dir", str(tmp_path), "--", "sh", "-c",
                        "echo ran; exit 3"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (3, "ran\n", ""), r.stderr
