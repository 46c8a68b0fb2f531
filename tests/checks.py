"""Checks shared by the end-to-end tests: what the three real readers say about a dump of
the threads test program, and facts compared with /proc and readelf."""

from __future__ import annotations

import os
import re
from pathlib import Path

from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.minidump.codeview import code_id
from live import Target, readelf_build_id, syscall_sp_pc
from readers import (
    breakpad_dump_syms, breakpad_stackwalk, lldb_core, minidump_dump, rust_stackwalk_json,
)

FUNCTION_BY_NAME = {
    "sleeper": "park_in_nanosleep",
    "reader": "park_in_read",
    "waiter": "park_in_condwait",
    "extra": "park_in_nanosleep",
}


class Symbols:
    """A Breakpad symbol store filled with dump_syms output for the modules of each dump."""

    def __init__(self, root: Path):
        self.root = root
        self.done: set[str] = set()

    def add_modules_of(self, dump) -> Path:
        for m in dump.modules:
            path = m.path
            real = None
            for candidate in (path, _resolve_soname_path(path)):
                if candidate and os.path.isfile(candidate):
                    real = candidate
                    break
            if real is None or real in self.done:
                continue
            self.done.add(real)
            self._dump_syms(Path(real))
        return self.root

    def _dump_syms(self, binary: Path) -> None:
        breakpad_dump_syms(binary, self.root)


def _resolve_soname_path(path: str) -> str | None:
    # The module name carries the SONAME as basename; the file may be a symlink of that name.
    return path if os.path.exists(path) else None


def expected_functions(target: Target) -> dict[int, str]:
    out = {}
    for tid in target.live_tids():
        if tid == target.pid:
            out[tid] = "main_park"
            continue
        name = Path(f"/proc/{target.pid}/task/{tid}/comm").read_text().strip()
        out[tid] = FUNCTION_BY_NAME[name]
    return out


def breakpad_frames(text: str, tids: list[int]) -> dict[int, list[str]]:
    """Function names per thread from minidump_stackwalk -m (thread index -> ThreadList order)."""
    frames: dict[int, list[str]] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 7 and parts[0].isdigit() and parts[1].isdigit():
            frames.setdefault(tids[int(parts[0])], []).append(parts[3] or parts[2])
    return frames


def rust_frames(doc: dict) -> dict[int, list[str]]:
    return {t["thread_id"]: [f.get("function") or "" for f in t["frames"]] for t in doc["threads"]}


def lldb_frames(text: str) -> dict[int, list[str]]:
    """Parse `thread list` (index -> tid) and `bt all` (index -> frames)."""
    index_to_tid: dict[int, int] = {}
    frames: dict[int, list[str]] = {}
    current = None
    in_bt = False
    for line in text.splitlines():
        if line.startswith("(lldb) bt all"):
            in_bt = True
            continue
        m = re.match(r"[\s*]*thread #(\d+): tid = (\d+)", line)
        if m and not in_bt:
            index_to_tid[int(m.group(1))] = int(m.group(2))
            continue
        m = re.match(r"[\s*]*thread #(\d+)", line)
        if m and in_bt:
            current = int(m.group(1))
            frames[current] = []
            continue
        m = re.match(r"[\s*]*frame #\d+: 0x[0-9a-f]+ (\S+)", line)
        if m and in_bt and current is not None:
            frames[current].append(m.group(1))
    return {index_to_tid[i]: f for i, f in frames.items() if i in index_to_tid}


def check_with_readers(path: Path, target: Target, expected: dict[int, str], symbols: Symbols,
                       rust_uses_breakpad_symbols: bool = False) -> None:
    md = read_minidump_snapshot(path)
    tids = [t.tid for t in md.threads]
    assert sorted(tids) == sorted(expected), "thread ids differ from /proc/PID/task"

    minidump_dump(path)

    store = symbols.add_modules_of(md)
    bp = breakpad_frames(breakpad_stackwalk(path, store), tids)
    rust_args = (["--symbols-path", str(store)] if rust_uses_breakpad_symbols
                 else ["--use-local-debuginfo"])
    rs = rust_frames(rust_stackwalk_json(path, *rust_args))
    ll = lldb_frames(lldb_core(path, "thread list", "bt all"))
    for tid, fn in expected.items():
        assert fn in bp.get(tid, []), f"Breakpad: thread {tid} does not reach {fn}: {bp.get(tid)}"
        assert fn in rs.get(tid, []), f"rust-minidump: thread {tid} does not reach {fn}: {rs.get(tid)}"
        assert any(f.endswith("`" + fn) for f in ll.get(tid, [])), \
            f"LLDB: thread {tid} does not reach {fn}: {ll.get(tid)}"


def check_registers_and_modules(path: Path, target: Target) -> None:
    md = read_minidump_snapshot(path)
    for t in md.threads:
        sppc = syscall_sp_pc(target.pid, t.tid)
        if sppc is not None:
            assert (t.context.rsp, t.context.rip) == sppc, f"thread {t.tid}: rsp/rip differ"
        assert t.stack is not None and t.stack.start <= t.context.rsp < t.stack.end
    checked = 0
    for m in md.modules:
        if os.path.isfile(m.path):
            expected = readelf_build_id(m.path)
            if expected:
                assert code_id(m.identity) == expected, f"{m.path}: code id differs from readelf -n"
                checked += 1
    assert checked >= 2, "too few modules with files to compare build ids"
    assert md.modules[0].is_main and Path(md.modules[0].path).name == "threads" or \
        md.modules[0].path.endswith("python3") or "python" in md.modules[0].path
