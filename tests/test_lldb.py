"""The LLDB backend and the in-lldb `generate_dump` command, with the real LLDB 22."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from checks import check_registers_and_modules, check_with_readers, expected_functions
from generate_dump.minidump import read_minidump
from live import ROOT, Target, assert_running_untraced, compile_source, run_dumper
from readers import breakpad_stackwalk, lldb_bin, minidump_dump, rust_stackwalk_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="these tests drive LLDB against Linux processes")

CRASH_SOURCE = r"""
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
volatile int *bad = (int *)0x10;
__attribute__((noinline)) void crash_here(void) { *bad = 1; }
static void *idle(void *arg) { for (;;) sleep(100); return arg; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, idle, 0);
    usleep(100000);
    crash_here();
    return 0;
}
"""


def lldb_session(*commands: str, on_crash: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run lldb-22 in batch mode with the package importable by LLDB's own Python."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [str(lldb_bin()), "-b", "--no-lldbinit"]
    for c in commands:
        cmd += ["-o", c]
    for c in on_crash:
        cmd += ["-k", c]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_lldb_backend_all_readers(threads_bin, symbols, tmp_path):
    with Target([threads_bin]) as target:
        expected = expected_functions(target)
        out = tmp_path / "lldb.dmp"
        run_dumper("--backend", "lldb", target.pid, "-o", out)
        assert_running_untraced(target.pid)
        check_registers_and_modules(out, target)
        check_with_readers(out, target, expected, symbols)


def test_backends_agree(threads_bin, tmp_path):
    """ptrace and LLDB give the same threads, modules, registers and stacks."""
    with Target([threads_bin, "2"]) as target:
        a, b = tmp_path / "ptrace.dmp", tmp_path / "lldb.dmp"
        run_dumper("--backend", "ptrace", target.pid, "-o", a)
        run_dumper("--backend", "lldb", target.pid, "-o", b)
        assert_running_untraced(target.pid)
        pa, pb = read_minidump(a), read_minidump(b)
        assert [t.tid for t in pa.threads] == [t.tid for t in pb.threads]
        assert pa.modules == pb.modules
        assert pa.thread_names == pb.thread_names
        for ta, tb in zip(pa.threads, pb.threads):
            ca, cb = ta.context, tb.context
            # Every thread is blocked in a syscall: integer registers are identical, and so
            # is the FXSAVE image up to the XMM registers (the rest is OS-reserved).
            assert ca.__dict__ | {"fxsave": None} == cb.__dict__ | {"fxsave": None}, ta.tid
            assert ca.fxsave[:416] == cb.fxsave[:416], ta.tid
            assert ta.teb == tb.teb
            assert (ta.stack.start, ta.stack.size) == (tb.stack.start, tb.stack.size)
            assert pa.bytes_at(ta.stack) == pb.bytes_at(tb.stack)


def test_lldb_backend_refuses_no_suspend(threads_bin, tmp_path):
    with Target([threads_bin]) as target:
        r = run_dumper("--backend", "lldb", "-r", target.pid, "-o", tmp_path / "x.dmp",
                       check=False)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot capture a process without stopping it" in lines[0]
        assert os.listdir(tmp_path) == []
        assert_running_untraced(target.pid)


def test_lldb_backend_no_such_process(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    r = run_dumper("--backend", "lldb", p.pid, "-o", tmp_path / "x.dmp", check=False)
    assert r.returncode == 1 and "no process with PID" in r.stderr


def test_in_lldb_command_after_attach(threads_bin, symbols, tmp_path):
    with Target([threads_bin]) as target:
        expected = expected_functions(target)
        out = tmp_path / "attached.dmp"
        r = lldb_session("command script import generate_dump.lldb_command",
                         f"process attach -p {target.pid}",
                         f"generate_dump -o {out}",
                         "process detach")
        assert r.returncode == 0, r.stderr
        assert f"generate_dump: wrote {out}" in r.stdout, r.stdout[-2000:]
        assert_running_untraced(target.pid)
        md = read_minidump(out)
        assert md.exception is None  # an attach stop is not a crash
        check_with_readers(out, target, expected, symbols)


def test_in_lldb_command_help():
    r = lldb_session("command script import generate_dump.lldb_command", "help generate_dump")
    assert r.returncode == 0
    assert "Write a minidump of the process being debugged" in r.stdout
    assert "-o FILE" in r.stdout and "--include-environment" in r.stdout


def test_in_lldb_command_without_process():
    r = lldb_session("command script import generate_dump.lldb_command", "generate_dump")
    assert "no process; launch or attach to one first" in r.stdout + r.stderr


def test_in_lldb_command_records_sigsegv(tmp_path):
    binary = compile_source(CRASH_SOURCE, tmp_path / "crash", "-O0", "-g", "-pthread")
    out = tmp_path / "crash.dmp"
    r = lldb_session("command script import generate_dump.lldb_command",
                     f"file {binary}", "run",
                     on_crash=(f"generate_dump -o {out}", "kill"))
    assert f"generate_dump: wrote {out}" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert "SIGSEGV in thread" in r.stdout
    md = read_minidump(out)
    e = md.exception
    assert e is not None and e.code == 11 and e.flags == 1 and e.address == 0x10
    assert e.thread_id == md.threads[0].tid  # the main thread faulted
    assert md.exception_context == md.threads[0].context
    minidump_dump(out)
    text = breakpad_stackwalk(out)
    assert "SIGSEGV /SEGV_MAPERR" in text and "0x10" in text
    rust = rust_stackwalk_json(out, "--use-local-debuginfo")
    assert rust["crash_info"]["type"] == "SIGSEGV / SEGV_MAPERR"
    assert int(rust["crash_info"]["address"], 16) == 0x10
    frames = rust["crashing_thread"]["frames"]
    assert frames[0]["function"] == "crash_here"
