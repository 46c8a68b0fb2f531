"""End to end on Linux: dump real processes, then let the three real readers judge the file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from checks import (
    breakpad_frames, check_registers_and_modules, check_with_readers, expected_functions,
    lldb_frames, rust_frames,
)
from generate_dump.minidump import read_minidump
from generate_dump.minidump.codeview import code_id
from live import (
    Target, assert_running_untraced, compile_program, python_target, readelf_build_id,
    run_dumper, syscall_sp_pc,
)
from readers import breakpad_stackwalk, lldb_core, minidump_dump, rust_stackwalk_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")

@pytest.mark.parametrize("mode", ["suspend", "no-suspend"])
def test_threads_program_all_readers(threads_bin, symbols, tmp_path, mode):
    with Target([threads_bin]) as target:
        expected = expected_functions(target)
        sppc_before = {t: syscall_sp_pc(target.pid, t) for t in expected}
        out = tmp_path / "threads.dmp"
        args = [target.pid, "-o", out] + (["-r"] if mode == "no-suspend" else [])
        run_dumper(*args)
        assert_running_untraced(target.pid)
        # The dump interrupted and restarted every blocking call at the same place.
        assert all(syscall_sp_pc(target.pid, t) == v for t, v in sppc_before.items())
        check_registers_and_modules(out, target)
        check_with_readers(out, target, expected, symbols)
        assert_running_untraced(target.pid)


def test_300_threads(threads_bin, symbols, tmp_path):
    with Target([threads_bin, "297"]) as target:
        expected = expected_functions(target)
        assert len(expected) == 301
        out = tmp_path / "many.dmp"
        run_dumper(target.pid, "-o", out)
        assert_running_untraced(target.pid)
        check_registers_and_modules(out, target)
        check_with_readers(out, target, expected, symbols)


def test_zombie_leader(threads_bin, symbols, tmp_path):
    env = dict(os.environ, THREADS_EXIT_MAIN="1")
    with Target([threads_bin], env=env) as target:
        # Wait for the leader to become a zombie.
        for _ in range(100):
            if Path(f"/proc/{target.pid}/stat").read_text().split(") ")[1][0] == "Z":
                break
            import time
            time.sleep(0.05)
        expected = expected_functions(target)
        assert target.pid not in expected and len(expected) == 3
        out = tmp_path / "zombie.dmp"
        run_dumper(target.pid, "-o", out)
        assert_running_untraced(target.pid)
        md = read_minidump(out)
        assert any(m.is_main and m.path.endswith("threads") for m in md.modules)
        check_with_readers(out, target, expected, symbols)


def test_cpython_process(symbols, tmp_path):
    with python_target(threads=4) as target:
        tids = target.live_tids()
        out = tmp_path / "py.dmp"
        run_dumper(target.pid, "-o", out)
        assert_running_untraced(target.pid)
        md = read_minidump(out)
        assert sorted(t.tid for t in md.threads) == tids
        minidump_dump(out)
        store = symbols.add_modules_of(md)
        bp = breakpad_frames(breakpad_stackwalk(out, store), [t.tid for t in md.threads])
        rs = rust_frames(rust_stackwalk_json(out, "--use-local-debuginfo"))
        ll = lldb_frames(lldb_core(out, "thread list", "bt all"))
        for tid in tids:
            # Every thread sleeps in time.sleep -> clock_nanosleep, and unwinds past libc.
            assert any("nanosleep" in f for f in bp[tid][:3]), (tid, bp[tid][:5])
            assert any("nanosleep" in f for f in rs[tid][:3]), (tid, rs[tid][:5])
            assert any("nanosleep" in f for f in ll[tid][:3]), (tid, ll[tid][:5])
            assert len(rs[tid]) >= 4 and len(bp[tid]) >= 4 and len(ll[tid]) >= 4
        check_registers_and_modules(out, target)


def test_environment_secret_not_in_dump(threads_bin, tmp_path):
    secret = "s3cr3t-" + os.urandom(12).hex()
    env = dict(os.environ, SECRET_ENV=secret)
    with Target([threads_bin], env=env) as target:
        assert secret.encode() in Path(f"/proc/{target.pid}/environ").read_bytes()
        out = tmp_path / "noenv.dmp"
        run_dumper(target.pid, "-o", out)
        data = out.read_bytes()
        assert secret.encode() not in data
        assert secret.encode("utf-16-le") not in data
        md = read_minidump(out)
        assert "environ" not in md.linux
        # Opt in: the LinuxEnviron stream and the stack strings carry it.
        out2 = tmp_path / "env.dmp"
        run_dumper(target.pid, "-o", out2, "--include-environment")
        md2 = read_minidump(out2)
        assert secret.encode() in md2.linux["environ"]
        main = md2.thread(target.pid)
        assert secret.encode() in md2.bytes_at(main.stack)
        assert_running_untraced(target.pid)


def test_dump_streams_match_proc(threads_bin, tmp_path):
    with Target([threads_bin]) as target:
        out = tmp_path / "streams.dmp"
        run_dumper(target.pid, "-o", out)
        md = read_minidump(out)
        assert md.misc["process_id"] == target.pid
        assert md.linux["cmdline"] == Path(f"/proc/{target.pid}/cmdline").read_bytes()
        assert md.linux["auxv"] == Path(f"/proc/{target.pid}/auxv").read_bytes()
        names = {t.tid: md.thread_names.get(t.tid) for t in md.threads}
        for tid, name in names.items():
            assert name == Path(f"/proc/{target.pid}/task/{tid}/comm").read_text().strip()
        assert md.system.cpu.count == os.cpu_count()
        assert md.system.os_version.startswith("Linux " + os.uname().release)
        # The DsoDebug link map names the libraries the dynamic linker loaded.
        names = [e.name for e in md.dso_debug.link_maps]
        assert any(n.endswith("libc.so.6") for n in names), names
        # Regions cover every stack.
        for t in md.threads:
            assert any(r.start <= t.stack.start and t.stack.end <= r.end for r in md.regions)
        rust = rust_stackwalk_json(out)
        assert rust["pid"] == target.pid
        assert {m["code_id"] for m in rust["modules"]} >= {
            code_id(m.identity) for m in md.modules if m.identity}


def test_static_executable(symbols, tmp_path):
    """No dynamic linker, no r_debug: modules come from the mappings alone."""
    binary = compile_program("threads", tmp_path, "-static")
    with Target([binary]) as target:
        expected = expected_functions(target)
        out = tmp_path / "static.dmp"
        run_dumper(target.pid, "-o", out)
        assert_running_untraced(target.pid)
        md = read_minidump(out)
        assert md.modules[0].is_main and md.modules[0].path == str(binary)
        assert code_id(md.modules[0].identity) == readelf_build_id(str(binary))
        assert md.dso_debug is None
        # rust-minidump's --use-local-debuginfo reads DWARF only, and a static glibc has
        # none (just .eh_frame): give it the Breakpad symbols (CFI from .eh_frame) instead.
        check_with_readers(out, target, expected, symbols, rust_uses_breakpad_symbols=True)
