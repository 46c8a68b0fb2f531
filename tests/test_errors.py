"""Errors carry their exit status (generate_dump/errors.py): each class maps to its status,
each is raised where its condition is detected (against real processes, real files, a
real full filesystem), and the commands' outcomes (status, the one stderr line) for a
missing process, a denied one and bad input are what they always were."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from generate_dump import errors
from generate_dump.errors import (
    BadInput,
    CommandNotFound,
    CommandNotRunnable,
    DumpError,
    Interrupted,
    InvalidTarget,
    NoSpaceLeft,
    OutputError,
    RunError,
    TargetGone,
    TargetNotFound,
    TargetPermissionError,
    run_exit_status,
)

from targets import (
    Targets,
    assert_target_intact,
    exited_pid,
    run_dumper,
    run_dumper_as,
    start_seizer,
    tracer_pid,
    unprivileged_user,
    user_dir,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="real processes through ptrace, run: Linux only")

# -- the table -----------------------------------------------------------------------------------

STATUS = {
    DumpError: 1, BadInput: 1, TargetNotFound: 1, TargetPermissionError: 1, TargetGone: 1,
    InvalidTarget: 1, OutputError: 1, NoSpaceLeft: 1, Interrupted: 1,
    RunError: 125, CommandNotRunnable: 126, CommandNotFound: 127,
}


def test_every_error_class_is_in_the_table():
    defined = {v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, DumpError)}
    assert defined == set(STATUS)


@pytest.mark.parametrize("cls", list(STATUS), ids=lambda c: c.__name__)
def test_each_class_carries_its_status(cls):
    exc = cls("message")
    assert exc.exit_status == STATUS[cls]
    assert str(exc) == "message"
    # `generate_dump run` (timeout(1)'s scheme): an error that is not about the command is
    # run's own failure, 125.
    assert run_exit_status(exc) == (STATUS[cls] if issubclass(cls, RunError) else 125)


def test_no_space_left_is_an_output_error():
    assert issubclass(NoSpaceLeft, OutputError)
    assert issubclass(CommandNotFound, CommandNotRunnable)


# -- raised where the condition is detected --------------------------------------------------

def test_bad_process_ids_are_bad_input():
    from generate_dump.cli import parse_pid

    for text in ("abc", "", "0", "-5", "12abc"):
        with pytest.raises(BadInput):
            parse_pid(text)
    with pytest.raises(TargetNotFound, match="go up to"):
        parse_pid("99999999999")


@linux_only
def test_capture_of_a_missing_process():
    from generate_dump.session import capture_process

    pid = exited_pid()
    with pytest.raises(TargetNotFound) as info:
        capture_process(pid)
    assert str(info.value) == f"no process with PID {pid}"


@linux_only
def test_capture_of_ourselves_is_an_invalid_target():
    from generate_dump.session import capture_process

    with pytest.raises(InvalidTarget, match="generate_dump itself"):
        capture_process(os.getpid())


@linux_only
def test_capture_of_a_process_traced_by_another():
    """Another tracer holds the process: a TargetPermissionError naming that tracer, and
    the process is left as it was (still traced by its tracer only)."""
    from generate_dump.session import capture_process

    targets = Targets()
    try:
        target = targets.threads()
        seizer = targets.helper(start_seizer(target.pid))
        with pytest.raises(TargetPermissionError) as info:
            capture_process(target.pid)
        assert f"process {target.pid}" in str(info.value)
        assert str(seizer.pid) in str(info.value)
        assert tracer_pid(target.pid) == seizer.pid
    finally:
        targets.close()


@linux_only
def test_spawn_failures_say_which():
    from generate_dump.backends.linux.spawn import spawn

    missing = "/nonexistent-dir/no-such-program"
    with pytest.raises(CommandNotFound) as info:
        spawn([missing], own_group=False)
    assert str(info.value) == f"cannot run {missing}: No such file or directory"


@linux_only
def test_spawn_of_a_file_that_is_not_executable(tmp_path):
    from generate_dump.backends.linux.spawn import spawn

    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(CommandNotRunnable) as info:
        spawn([str(script)], own_group=False)
    assert not isinstance(info.value, CommandNotFound)
    assert str(info.value) == f"cannot run {script}: Permission denied"


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_filesystem_is_no_space_left(tmp_path):
    """write_dump on a 16 KiB tmpfs: NoSpaceLeft (watch stops dumping on it), no file."""
    from generate_dump.session import capture_process, write_dump

    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)], check=True)
    targets = Targets()
    try:
        snapshot = capture_process(targets.threads().pid)
        with pytest.raises(NoSpaceLeft, match="no space left on the device"):
            write_dump(snapshot, small / "x.dmp")
        assert os.listdir(small) == []
    finally:
        targets.close()
        subprocess.run(["umount", str(small)], check=False)


# -- the commands' outcomes, unchanged ---------------------------------------------------------

def one_error(r: subprocess.CompletedProcess, status: int) -> str:
    assert r.returncode == status, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), r.stderr
    return r.stderr


@linux_only
def test_cli_no_such_process(tmp_path):
    pid = exited_pid()
    err = one_error(run_dumper([pid], cwd=tmp_path), 1)
    assert err == f"generate_dump: error: no process with PID {pid}\n"
    assert os.listdir(tmp_path) == []


def test_cli_bad_input(tmp_path):
    err = one_error(run_dumper(["abc"], cwd=tmp_path), 1)
    assert err == ("generate_dump: error: 'abc' is not a process ID; give a positive whole "
                   "number such as 1234 (see 'pgrep NAME')\n")
    err = one_error(run_dumper([], cwd=tmp_path), 1)
    assert err == ("generate_dump: error: missing PID: give the process ID of the process to "
                   "dump (see 'generate_dump --help')\n")
    err = one_error(run_dumper(["1", "2", "-o", "-"], cwd=tmp_path), 1)
    assert err == ("generate_dump: error: several processes cannot all go to standard output; "
                   "give a directory with -o\n")
    assert os.listdir(tmp_path) == []


@linux_only
def test_cli_permission_denied():
    user = unprivileged_user()
    udir = user_dir(*user)
    targets = Targets()
    try:
        target = targets.threads()
        err = one_error(run_dumper_as(user, ["-o", udir / "x.dmp", target.pid]), 1)
        assert err == (f"generate_dump: error: not permitted to trace process {target.pid}: "
                       "it runs as root (uid 0); run generate_dump as that user or as root\n")
        assert os.listdir(udir) == []
        assert_target_intact(target)
    finally:
        targets.close()
        shutil.rmtree(udir, ignore_errors=True)


def run_cmd(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generate_dump", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


@linux_only
def test_run_statuses(tmp_path):
    missing = tmp_path / "missing"
    err = one_error(run_cmd(tmp_path, "--output-dir", tmp_path, "--", missing), 127)
    assert err == f"generate_dump run: error: cannot run {missing}: No such file or directory\n"

    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    err = one_error(run_cmd(tmp_path, "--output-dir", tmp_path, "--", script), 126)
    assert err == f"generate_dump run: error: cannot run {script}: Permission denied\n"

    err = one_error(run_cmd(tmp_path, "--timeout", "soon", "--", "true"), 125)
    assert err.startswith("generate_dump run: error: Invalid value for '--timeout': 'soon' is "
                          "not a duration")
    assert os.listdir(tmp_path) == ["not-executable"]


@linux_only
def test_run_status_comes_from_the_class_not_the_words(tmp_path):
    """run's own failure is 125 even when its message happens to hold "cannot run" or
    "No such file" (a directory the user named so); matching the text gave 126 here."""
    blocker = tmp_path / "cannot run"
    blocker.write_text("a file where the output directory should go\n")
    out_dir = blocker / "No such file"
    r = run_cmd(tmp_path, "--output-dir", out_dir, "--", "true")
    err = one_error(r, 125)
    assert err == (f"generate_dump run: error: cannot create output directory {out_dir}: "
                   "Not a directory\n")


@linux_only
def test_run_command_status_is_untouched(tmp_path):
    r = run_cmd(tmp_path, "--output-dir", tmp_path, "--", "sh", "-c", "exit 126")
    assert r.returncode == 126 and r.stderr == ""
    r = run_cmd(tmp_path, "--output-dir", tmp_path, "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM
