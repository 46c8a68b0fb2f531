"""How much memory a dump holds: --memory=stacks|referenced|full, -o -, dumps over 4 GiB."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checks import check_with_readers, expected_functions
from generate_dump.minidump import read_minidump
from generate_dump.memsource import SnapshotMemory
from generate_dump.sources.minidump_file import read_minidump_snapshot
from live import Target, assert_running_untraced, compile_program, run_dumper
from readers import lldb_core, minidump_dump, run, rust_minidump_stackwalk, rust_stackwalk_json

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")


@pytest.fixture(scope="module")
def markers_bin(tmp_path_factory) -> Path:
    return compile_program("memmarkers", tmp_path_factory.mktemp("bin"))


def lldb_bytes(path: Path, address: int, count: int) -> bytes:
    out = lldb_core(path, f"memory read --format x --size 1 --count {count} {address:#x}")
    values = re.findall(r"0x([0-9a-f]{2})\b", out.split("memory read", 1)[1])
    return bytes(int(v, 16) for v in values[:count])


def rust_hexdump_has(path: Path, address: int, marker: bytes) -> bool:
    """Whether rust-minidump's --dump shows ``marker`` in the memory region at ``address``."""
    text = run([rust_minidump_stackwalk(), "--dump", path]).stdout
    for block in text.split("MINIDUMP_MEMORY_DESCRIPTOR")[1:]:
        m = re.search(r"start_of_memory_range = (0x[0-9a-f]+)\s+memory.data_size\s+= (0x[0-9a-f]+)",
                      block)
        if not m:
            continue
        start, size = int(m.group(1), 16), int(m.group(2), 16)
        if not start <= address < start + size:
            continue
        data = bytearray()
        for line in re.findall(r"^\s+[0-9a-f]{8}: ((?:[0-9a-f]{2} )+)", block, re.M):
            data += bytes.fromhex(line.replace(" ", ""))
        off = address - start
        return bytes(data[off : off + len(marker)]) == marker
    return False


def test_full_has_the_heap_marker_but_not_dontdump(markers_bin, tmp_path):
    tag = os.urandom(6).hex()
    with Target([markers_bin, "markers", tag], wait_parked=False) as target:
        heap, dd = target.ready_values
        heap_marker, dd_marker = f"HEAP-MARKER-{tag}".encode(), f"DONTDUMP-MARKER-{tag}".encode()
        full, stacks = tmp_path / "full.dmp", tmp_path / "stacks.dmp"
        run_dumper(target.pid, "--memory", "full", "-o", full)
        run_dumper(target.pid, "--memory", "stacks", "-o", stacks)
        assert_running_untraced(target.pid)
    mem = SnapshotMemory(read_minidump_snapshot(full))
    assert mem.read(heap, len(heap_marker)) == heap_marker
    assert mem.read(dd, 8) == b""
    data = full.read_bytes()
    assert dd_marker not in data
    assert lldb_bytes(full, heap, len(heap_marker)) == heap_marker
    assert rust_hexdump_has(full, heap, heap_marker)
    minidump_dump(full)
    # stacks: no heap at all.
    assert heap_marker not in stacks.read_bytes()
    assert SnapshotMemory(read_minidump_snapshot(stacks)).read(heap, 4) == b""
    assert read_minidump(stacks).memory64 == []


def test_full_over_4_gib(markers_bin, tmp_path):
    if shutil.disk_usage(tmp_path).free < 12 << 30:
        pytest.skip("needs 12 GiB of free disk for a 4.5 GiB dump")
    tag = os.urandom(6).hex()
    with Target([markers_bin, "big", tag], wait_parked=False) as target:
        (addr,) = target.ready_values
        marker = f"BIG-MARKER-{tag}".encode()
        out = tmp_path / "big.dmp"
        run_dumper(target.pid, "--memory", "full", "-o", out)
        assert_running_untraced(target.pid)
    try:
        assert out.stat().st_size > 4 << 30
        md = read_minidump(out)
        desc = next(d for d in md.memory64 if d.start <= addr < d.end)
        assert desc.rva + (addr - desc.start) > 4 << 30, "the marker must lie past 4 GiB"
        mem = SnapshotMemory(read_minidump_snapshot(out))
        assert mem.read(addr, len(marker)) == marker
        assert lldb_bytes(out, addr, len(marker)) == marker
        # rust-minidump parses the whole file and lists the range that holds the marker
        # (its hexdump of 4.5 GiB would be too long to read here).
        text = run([rust_minidump_stackwalk(), "--dump", "--brief", out]).stdout
        ranges = [(int(a, 16), int(b, 16)) for a, b in re.findall(
            r"start_of_memory_range = (0x[0-9a-f]+)\s+memory.data_size\s+= (0x[0-9a-f]+)", text)]
        assert any(a <= addr < a + n for a, n in ranges)
        assert rust_stackwalk_json(out)["thread_count"] == 1
    finally:
        out.unlink(missing_ok=True)


def test_referenced_memory_rules(threads_bin, symbols, tmp_path):
    budget = 64 * 1024
    with Target([threads_bin, "4"]) as target:
        expected = expected_functions(target)
        out = tmp_path / "ref.dmp"
        run_dumper(target.pid, "--memory", "referenced", "--max-referenced", "64K", "-o", out)
        maps = Path(f"/proc/{target.pid}/maps").read_text().splitlines()
        readable = []
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if line.split()[1][0] == "r":
                readable.append((lo, hi))
        md = read_minidump(out)
        stacks = [(t.stack.start, t.stack.end) for t in md.threads]
        extra = [d for d in md.memory if (d.start, d.end) not in stacks]
        assert extra, "some referenced memory is expected (pointers to globals, heap, TLS)"
        assert sum(d.size for d in extra) <= budget
        for d in extra:
            assert any(lo <= d.start and d.end <= hi for lo, hi in readable), hex(d.start)
            assert all(d.end <= s or d.start >= e for s, e in stacks), hex(d.start)
        ordered = sorted(md.memory, key=lambda d: d.start)
        assert all(a.end <= b.start for a, b in zip(ordered, ordered[1:])), "overlap"
        check_with_readers(out, target, expected, symbols)
        assert_running_untraced(target.pid)


def test_stdout_is_byte_identical_to_the_file(threads_bin, tmp_path):
    from generate_dump.cli import DumpRequest, capture_session
    from generate_dump.minidump.writer import WriteOptions, write_minidump
    from generate_dump.output import write_snapshot

    with Target([threads_bin]) as target:
        for memory in ("referenced", "full"):
            req = DumpRequest(pid=target.pid, memory=memory)
            options = WriteOptions(memory64=memory == "full")
            path = tmp_path / f"{memory}.dmp"
            with capture_session(req) as snapshot:
                write_snapshot(snapshot, str(path), options)
                # The stdout path: the same writer into a pipe.
                cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                import threading

                got = []
                reader = threading.Thread(target=lambda: got.append(cat.stdout.read()))
                reader.start()
                write_minidump(snapshot, cat.stdin, options)
                cat.stdin.close()
                reader.join()
                cat.wait()
            assert got[0] == path.read_bytes()
        assert_running_untraced(target.pid)


def test_dash_output_goes_to_stdout(threads_bin, tmp_path):
    with Target([threads_bin]) as target:
        r = subprocess.run([sys.executable, "-m", "generate_dump", str(target.pid), "-o", "-"],
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout[:4] == b"MDMP"
        assert b"wrote standard output" in r.stderr
        path = tmp_path / "piped.dmp"
        path.write_bytes(r.stdout)
        md = read_minidump(path)
        assert sorted(t.tid for t in md.threads) == target.tids()
        minidump_dump(path)
        assert os.listdir(tmp_path) == ["piped.dmp"]


def test_full_dump_freezes_the_process_while_writing(threads_bin, tmp_path):
    """Full dumps are consistent: the process stays stopped until the file is written."""
    from live import thread_state

    with Target([threads_bin]) as target:
        env = dict(os.environ, GENERATE_DUMP_TEST_DELAY="writing=1.0")
        p = subprocess.Popen([sys.executable, "-m", "generate_dump", "--memory", "full",
                              str(target.pid), "-o", str(tmp_path / "f.dmp")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        import time

        time.sleep(0.7)
        states = {thread_state(target.pid, t) for t in target.tids()}
        p.communicate(timeout=60)
        assert p.returncode == 0
        assert states == {"t"}, states
        assert_running_untraced(target.pid)


def test_progress_on_a_terminal(markers_bin, tmp_path):
    """A full dump shows progress on stderr when stderr is a terminal (a real pty here),
    and nothing of the kind when it is not."""
    import pty
    import select as select_mod

    with Target([markers_bin, "markers", "p"], wait_parked=False) as target:
        out = tmp_path / "full.dmp"
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "generate_dump", "--memory", "full",
                              str(target.pid), "-o", str(out)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            r, _, _ = select_mod.select([master], [], [], 60)
            if not r:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
        assert p.wait(timeout=60) == 0
        assert re.search(rb"writing [0-9,]+ of [0-9,]+ MiB \(100%\)", seen), seen[-500:]
        quiet = run_dumper(target.pid, "--memory", "full", "-o", tmp_path / "quiet.dmp")
        assert "writing" not in quiet.stderr
        assert_running_untraced(target.pid)
