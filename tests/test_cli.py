"""The command line end to end, against real processes: exit status, the single stderr
line, the output file (name, mode, atomic replacement, symlinks), and the state each target
is left in (alive, untraced, no thread stopped) whatever happened."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generate_dump import __version__
from generate_dump.sources.minidump_file import read_minidump_snapshot

from targets import (
    Targets,
    assert_target_intact,
    exited_pid,
    find_kernel_thread,
    leftover_temp_files,
    nodump_binary,
    run_dumper,
    run_dumper_as,
    start_seizer,
    stat_fields,
    unprivileged_user,
    user_dir,
)

ERROR = "generate_dump: error: "


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def targets():
    t = Targets()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def target(targets):
    """The threads program (main + 3 parked threads + 1 extra), run as root."""
    return targets.threads(extra=1)


@pytest.fixture
def user():
    return unprivileged_user()


@pytest.fixture
def udir(user):
    d = user_dir(*user)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------

def assert_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, nothing on stdout, exactly one stderr line: the error, containing ``words``."""
    assert r.returncode == 1, f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.stdout == "", f"unexpected stdout: {r.stdout!r}"
    assert r.stderr.endswith("\n") and r.stderr.count("\n") == 1, \
        f"want exactly one stderr line, got: {r.stderr!r}"
    line = r.stderr.rstrip("\n")
    assert line.startswith(ERROR), line
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in {line!r}"
    return line


def assert_success(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.stdout == "", f"unexpected stdout: {r.stdout!r}"
    assert ERROR not in r.stderr, r.stderr


def assert_dump_of(path: Path, target) -> None:
    """A private regular file that parses, holding exactly the target's threads."""
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    md = read_minidump_snapshot(path)
    assert sorted(t.tid for t in md.threads) == target.tids()


def assert_clean(directory) -> None:
    assert leftover_temp_files(directory) == []


# -- --help and --version ----------------------------------------------------------------------

def test_help():
    r = run_dumper(["--help"])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    for pattern in (r"\bPID\b", r"-o, --output\b", r"-r, --no-suspend\b",
                    r"--include-environment\b", r"--version\b"):
        assert re.search(pattern, r.stdout), f"{pattern} missing from --help:\n{r.stdout}"


def test_short_help_is_the_same():
    assert run_dumper(["-h"]).stdout == run_dumper(["--help"]).stdout


def test_version():
    r = run_dumper(["--version"])
    assert (r.returncode, r.stdout, r.stderr) == (0, f"generate_dump {__version__}\n", "")
    assert __version__ == "0.1.0"


def test_console_script_version():
    exe = Path(sys.executable).parent / "generate_dump"
    script = str(exe) if exe.exists() else shutil.which("generate_dump")
    if script is None:
        pytest.skip("console script generate_dump not installed (pip install -e .)")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "generate_dump 0.1.0\n", "")


# -- success -----------------------------------------------------------------------------------

def test_default_output_in_cwd(target, tmp_path):
    r = run_dumper([target.pid], cwd=tmp_path)
    assert_success(r)
    out = tmp_path / f"minidump.{target.pid}"
    assert_dump_of(out, target)
    assert sorted(os.listdir(tmp_path)) == [out.name]
    assert str(out) in r.stderr  # the summary names the file
    assert_target_intact(target)
    assert_clean(tmp_path)


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_output_option(target, tmp_path, flag):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "elsewhere" / "my.dmp"
    out.parent.mkdir()
    r = run_dumper([flag, out, target.pid], cwd=cwd)
    assert_success(r)
    assert_dump_of(out, target)
    assert os.listdir(cwd) == []
    assert os.listdir(out.parent) == ["my.dmp"]
    assert_target_intact(target)


def test_relative_output_is_relative_to_cwd(target, tmp_path):
    (tmp_path / "sub").mkdir()
    r = run_dumper([target.pid, "-o", "sub/rel.dmp"], cwd=tmp_path)
    assert_success(r)
    assert_dump_of(tmp_path / "sub" / "rel.dmp", target)
    assert_target_intact(target)
    assert_clean(tmp_path / "sub")


@pytest.mark.parametrize("flag", ["-r", "--no-suspend"])
def test_no_suspend(target, tmp_path, flag):
    r = run_dumper([flag, "-o", tmp_path / "d", target.pid], cwd=tmp_path)
    assert_success(r)
    assert_dump_of(tmp_path / "d", target)
    assert_target_intact(target)
    assert_clean(tmp_path)


def test_environment_only_on_request(targets, tmp_path):
    secret = "gd-cli-secret-5f0c2a9e"
    env = dict(os.environ, SECRET_ENV=secret)
    t = targets.threads(env=env)
    r = run_dumper(["-o", tmp_path / "plain", t.pid])
    assert_success(r)
    r = run_dumper(["--include-environment", "-o", tmp_path / "env", t.pid])
    assert_success(r)
    plain, with_env = read_minidump_snapshot(tmp_path / "plain"), read_minidump_snapshot(tmp_path / "env")
    assert plain.linux.environ is None
    assert secret.encode() not in (tmp_path / "plain").read_bytes()
    assert f"SECRET_ENV={secret}".encode() in with_env.linux.environ
    assert_target_intact(t)
    assert_clean(tmp_path)


def test_existing_output_is_replaced(target, tmp_path):
    out = tmp_path / "out.dmp"
    out.write_bytes(b"old contents, not a minidump\n")
    out.chmod(0o644)
    before = os.stat(out).st_ino
    # Another name for the old file: an atomic replace leaves its contents alone.
    os.link(out, tmp_path / "old-link")
    r = run_dumper(["-o", out, target.pid])
    assert_success(r)
    assert os.stat(out).st_ino != before
    assert_dump_of(out, target)
    assert (tmp_path / "old-link").read_bytes() == b"old contents, not a minidump\n"
    assert_target_intact(target)
    assert_clean(tmp_path)


@pytest.mark.parametrize("dangling", [False, True], ids=["to-file", "dangling"])
def test_symlink_output_is_refused(target, tmp_path, dangling):
    real = tmp_path / "real"
    if not dangling:
        real.write_bytes(b"precious")
    link = tmp_path / "link.dmp"
    link.symlink_to(real)
    r = run_dumper(["-o", link, target.pid])
    assert_error(r, "symbolic link")
    assert os.readlink(link) == str(real)
    if dangling:
        assert not real.exists()
    else:
        assert real.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == sorted(["link.dmp"] + ([] if dangling else ["real"]))
    assert_target_intact(target)


def _start_dumper_paused_while_writing(args, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, GENERATE_DUMP_TEST_DELAY=f"writing={seconds}")
    return subprocess.Popen([sys.executable, "-m", "generate_dump", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_until_writing(proc: subprocess.Popen, directory: Path, timeout: float = 30) -> None:
    """Until ``proc`` holds its (unnamed or temporary) output file in ``directory`` open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith(f"{directory}/") and \
                        (link.endswith(" (deleted)") or link.endswith(".tmp")):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError("the dumper never started writing")


def test_existing_output_stays_whole_until_replaced(target, tmp_path):
    out = tmp_path / "out.dmp"
    out.write_bytes(b"old")
    proc = _start_dumper_paused_while_writing(["-o", out, target.pid], 1.0)
    try:
        _wait_until_writing(proc, tmp_path)
        assert out.read_bytes() == b"old"  # not truncated or written in place
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_success(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    assert_dump_of(out, target)
    assert_target_intact(target)
    assert_clean(tmp_path)


def test_symlink_planted_while_writing_is_not_followed(target, tmp_path):
    out = tmp_path / "out.dmp"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    proc = _start_dumper_paused_while_writing(["-o", out, target.pid], 1.0)
    try:
        _wait_until_writing(proc, tmp_path)
        out.symlink_to(victim)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_error(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr),
                 "symbolic link")
    assert os.readlink(out) == str(victim)
    assert victim.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out.dmp", "victim"]
    assert_target_intact(target)


# -- usage errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ([], ["missing PID"]),
    (["abc"], ["'abc'", "not a process ID"]),
    (["12abc"], ["'12abc'", "not a process ID"]),
    ([""], ["not a process ID"]),
    (["0"], ["'0'", "not a valid process ID", "positive"]),
    (["-5"], ["'-5'", "not a valid process ID", "positive"]),
    (["--", "-5"], ["'-5'", "not a valid process ID", "positive"]),
    (["99999999999"], ["99999999999", "no process", "go up to"]),
    (["1", "2", "-o", "-"], ["several processes", "standard output"]),
    (["--bogus", "1"], ["no such option", "--bogus"]),
    (["-o"], ["-o", "requires an argument"]),
], ids=["missing", "abc", "12abc", "empty", "zero", "negative", "dashdash-negative", "huge",
        "extra", "unknown-opt", "o-without-file"])
def test_usage_errors(tmp_path, args, words):
    r = run_dumper(args, cwd=tmp_path)
    assert_error(r, *words)
    assert os.listdir(tmp_path) == []


def test_usage_errors_point_to_help(tmp_path):
    for args in ([], ["--bogus", "1"]):
        line = assert_error(run_dumper(args, cwd=tmp_path))
        assert "--help" in line, line


# -- target errors -----------------------------------------------------------------------------

def test_no_such_process(tmp_path):
    pid = exited_pid()
    r = run_dumper([pid], cwd=tmp_path)
    assert_error(r, "no process", str(pid))
    assert os.listdir(tmp_path) == []


def test_zombie(tmp_path):
    child = subprocess.Popen(["true"])  # not waited for: it stays a zombie
    try:
        deadline = time.monotonic() + 10
        while stat_fields(f"/proc/{child.pid}/stat")[0] != "Z":
            assert time.monotonic() < deadline, "child did not become a zombie"
            time.sleep(0.01)
        r = run_dumper([child.pid], cwd=tmp_path)
        assert_error(r, f"process {child.pid}", "exited", "zombie")
        assert os.listdir(tmp_path) == []
    finally:
        child.wait()


def test_own_pid(tmp_path):
    code = "import os; from generate_dump.cli import main; main([str(os.getpid())])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert_error(r, "generate_dump itself", "another process")
    assert os.listdir(tmp_path) == []


def test_kernel_thread(tmp_path):
    found = find_kernel_thread()
    if found is None:
        pytest.skip("no kernel thread visible in /proc (PID namespace)")
    pid, comm = found
    r = run_dumper([pid], cwd=tmp_path)
    assert_error(r, f"PID {pid}", "kernel thread")
    assert os.listdir(tmp_path) == []


def test_thread_id_is_not_a_process(target, tmp_path):
    tid = next(t for t in target.tids() if t != target.pid)
    r = run_dumper([tid], cwd=tmp_path)
    line = assert_error(r, str(tid), f"thread of process {target.pid}")
    assert re.search(rf"\bgive\b.*\b{target.pid}\b", line), line  # says what to give
    assert os.listdir(tmp_path) == []
    assert_target_intact(target)


def test_already_traced(targets, target, tmp_path):
    seizer = targets.helper(start_seizer(target.pid))
    r = run_dumper([target.pid], cwd=tmp_path)
    line = assert_error(r, "already traced", f"process {seizer.pid}")
    assert "detach" in line
    assert os.listdir(tmp_path) == []
    # The other tracer was left alone, and the target keeps running under it.
    assert seizer.poll() is None
    with open(f"/proc/{target.pid}/status") as f:
        assert f"TracerPid:\t{seizer.pid}\n" in f.read()
    seizer.kill()
    seizer.wait()
    assert_target_intact(target)


# -- output errors -----------------------------------------------------------------------------

def test_output_directory_missing(target, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.dmp"
    r = run_dumper(["-o", out, target.pid])
    assert_error(r, "output directory", str(out.parent), "does not exist")
    assert os.listdir(tmp_path) == []
    assert_target_intact(target)


def test_output_is_a_directory(target, tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    r = run_dumper(["-o", d, target.pid])
    assert_error(r, str(d), "is a directory")
    assert os.listdir(d) == []
    assert_clean(tmp_path)
    assert_target_intact(target)


def test_output_is_not_a_regular_file(target, tmp_path):
    r = run_dumper(["-o", "/dev/null", target.pid], cwd=tmp_path)
    assert_error(r, "/dev/null", "not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_dumper(["-o", fifo, target.pid], cwd=tmp_path)
    assert_error(r, str(fifo), "not a regular file")
    assert os.listdir(tmp_path) == ["fifo"]
    assert_target_intact(target)


def test_default_output_name_is_a_directory(target, tmp_path):
    (tmp_path / f"minidump.{target.pid}").mkdir()
    r = run_dumper([target.pid], cwd=tmp_path)
    assert_error(r, "is a directory")
    assert_clean(tmp_path)
    assert_target_intact(target)


# -- permissions, for real: an unprivileged user ----------------------------------------------

def test_user_cannot_dump_root_process(target, user, udir):
    r = run_dumper_as(user, ["-o", udir / "x.dmp", target.pid])
    assert_error(r, f"process {target.pid}", "runs as root", "as that user or as root")
    assert os.listdir(udir) == []
    assert_target_intact(target)


def test_user_dumps_own_process(targets, user, udir):
    t = targets.threads(extra=2, user=user)
    with open(f"/proc/{t.pid}/status") as f:
        assert f"Uid:\t{user[0]}\t" in f.read()
    r = run_dumper_as(user, ["-o", udir / "own.dmp", t.pid])
    assert_success(r)
    out = udir / "own.dmp"
    assert_dump_of(out, t)
    assert os.stat(out).st_uid == user[0]
    assert os.listdir(udir) == ["own.dmp"]
    assert_target_intact(t)


def test_user_dumps_own_process_no_suspend(targets, user, udir):
    t = targets.threads(user=user)
    r = run_dumper_as(user, ["-r", "-o", udir / "own.dmp", t.pid])
    assert_success(r)
    assert_dump_of(udir / "own.dmp", t)
    assert_target_intact(t)
    assert_clean(udir)


def test_user_default_output_in_cwd(targets, user, udir):
    t = targets.threads(user=user)
    r = run_dumper_as(user, [t.pid], cwd=udir)
    assert_success(r)
    assert_dump_of(udir / f"minidump.{t.pid}", t)
    assert_target_intact(t)


def test_user_cannot_dump_non_dumpable_process(targets, user, udir):
    t = targets.start([nodump_binary()], user=user)
    # The kernel's sign of a non-dumpable process: its /proc files (not the /proc/PID
    # directory itself, which keeps the owner's uid since Linux 4.11) belong to root.
    assert os.stat(f"/proc/{t.pid}").st_uid == user[0]
    assert os.stat(f"/proc/{t.pid}/stat").st_uid == 0
    r = run_dumper_as(user, ["-o", udir / "x.dmp", t.pid])
    assert_error(r, f"process {t.pid}", "not dumpable")
    assert os.listdir(udir) == []
    assert_target_intact(t)


def test_root_dumps_non_dumpable_process(targets, user, tmp_path):
    t = targets.start([nodump_binary()], user=user)
    r = run_dumper(["-o", tmp_path / "nd.dmp", t.pid])
    assert_success(r)
    assert_dump_of(tmp_path / "nd.dmp", t)
    assert_target_intact(t)


def test_user_output_directory_not_writable(targets, user):
    t = targets.threads(user=user)
    root_dir = user_dir(0, 0)  # root-owned, 0755: the user may enter but not write
    try:
        r = run_dumper_as(user, ["-o", root_dir / "x.dmp", t.pid])
        assert_error(r, "output directory", str(root_dir), "not writable")
        assert os.listdir(root_dir) == []
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)
    assert_target_intact(t)


def test_user_symlink_to_root_file_is_refused(targets, user, udir):
    """The symlink refusal holds for an unprivileged user too (a planted link to a root
    file): nothing is written through it."""
    t = targets.threads(user=user)
    victim = user_dir(0, 0) / "victim"
    victim.write_bytes(b"root data")
    try:
        link = udir / "out.dmp"
        link.symlink_to(victim)
        r = run_dumper_as(user, ["-o", link, t.pid])
        assert_error(r, "symbolic link")
        assert victim.read_bytes() == b"root data"
        assert os.readlink(link) == str(victim)
        assert_clean(udir)
    finally:
        shutil.rmtree(victim.parent, ignore_errors=True)
    assert_target_intact(t)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop CAP_SYS_PTRACE")
def test_root_without_cap_sys_ptrace(targets, user, tmp_path):
    """Root in a container started without SYS_PTRACE: the message names the capability."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    t = targets.threads(user=user)
    cmd = ["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace",
           sys.executable, "-m", "generate_dump", "-o", str(tmp_path / "x.dmp"), str(t.pid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert_error(r, f"process {t.pid}", "CAP_SYS_PTRACE")
    assert os.listdir(tmp_path) == []
    assert_target_intact(t)
