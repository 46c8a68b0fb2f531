"""`generate_dump inspect` and the stack summaries: real processes, judged by Breakpad.

Frames are compared with what Breakpad's ``minidump_stackwalk -m`` prints when given
``dump_syms`` symbols of every module (tests/checks.py ``Symbols``). To compare like with
like, our walker runs with ``--no-system-debug``: dump_syms saw only the module files (a
stripped libc: .dynsym and .eh_frame), so we read only those too. Normalization before
the name-by-name comparison (both sides):

- Breakpad's trailing frames outside every module are dropped: for ``_start`` (whose CFI
  marks the return address undefined, which STACK CFI cannot express) it invents one more
  frame whose pc is the stack pointer; we stop at ``_start``, as the CFI says.
- GCC clone suffixes (``.cold``, ``.part.N``, ``.isra.N``, ``.constprop.N``,
  ``.lto_priv.N``) are removed: Breakpad names clones after their DWARF origin.
- a frame is (module basename, function); a frame without a function compares by module.

Alias choice needs no normalization: for a stripped library we pick, as dump_syms does,
the first function of .dynsym at the address (``pthread_cond_wait``, not
``___pthread_cond_wait``), and like Breakpad name an address after the nearest symbol
below it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checks import expected_functions
from generate_dump.errors import DumpError
from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.snapshot import (
    Arch, Arm64Context, CpuInfo, ElfBuildId, MemoryRange, MemoryRegion, Module, OS, Process,
    Snapshot, SystemInfo, Thread,
)
from live import Target, compile_program, compile_source, run_dumper
from readers import breakpad_dump_syms, breakpad_stackwalk

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux dumps")

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("main_park", "park_in_nanosleep", "park_in_read", "park_in_condwait")
CLONE_SUFFIX = re.compile(r"(?:\.(?:cold|part|isra|constprop|lto_priv)(?:\.\d+)?)+$")
TEXT_FRAME = re.compile(r"^  #(\d+) 0x([0-9a-f]+)(?: (\S+?)(?:!(.+?))?\+0x([0-9a-f]+))?"
                        r"(?: \((.+):(\d+)\))? \[(context|cfi|fp|scan)\]$")


# -- helpers -----------------------------------------------------------------------------------

def inspect(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "generate_dump.inspect_dump", *map(str, args)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    if check:
        assert r.returncode == 0, f"inspect failed ({r.returncode}): {r.stderr}"
    return r


def inspect_json(*args) -> dict:
    return json.loads(inspect("--json", *args).stdout)


def first_thread_frames(pid: int, dump: Path) -> tuple[list[dict], list[str]]:
    """Dump ``pid`` into ``dump`` and walk it: the first thread's frames and their functions."""
    run_dumper(pid, "-o", dump)
    frames = inspect_json(dump)["threads"][0]["frames"]
    return frames, [f["function"] for f in frames]


def norm(name: str) -> str:
    return CLONE_SUFFIX.sub("", name or "")


def breakpad_walk(path: Path, store: Path) -> dict[int, list[tuple[str, str]]]:
    """(module, function) per frame and thread from minidump_stackwalk -m."""
    tids = [t.tid for t in read_minidump_snapshot(path).threads]
    out: dict[int, list[tuple[str, str]]] = {}
    for line in breakpad_stackwalk(path, store).splitlines():
        p = line.split("|")
        if len(p) >= 7 and p[0].isdigit() and p[1].isdigit():
            out.setdefault(tids[int(p[0])], []).append((p[2], p[3]))
    for frames in out.values():
        while frames and not frames[-1][0]:
            frames.pop()
    return out


def our_walk(doc: dict) -> dict[int, list[tuple[str, str]]]:
    return {t["tid"]: [(f["module"] or "", f["function"] or "") for f in t["frames"]]
            for t in doc["threads"]}


def agreement(ours: dict, theirs: dict) -> tuple[int, int, list[str]]:
    """(frames that agree, frames compared, descriptions of disagreements)."""
    same = total = 0
    diffs = []
    for tid in sorted(set(ours) | set(theirs)):
        a, b = ours.get(tid, []), theirs.get(tid, [])
        for i in range(max(len(a), len(b))):
            total += 1
            fa = (a[i][0], norm(a[i][1])) if i < len(a) else None
            fb = (b[i][0], norm(b[i][1])) if i < len(b) else None
            if fa == fb:
                same += 1
            else:
                diffs.append(f"thread {tid} frame {i}: ours {fa}, Breakpad {fb}")
    return same, total, diffs


def assert_agrees(doc: dict, bp: dict, target: Target) -> float:
    ours = our_walk(doc)
    same, total, diffs = agreement(ours, bp)
    ratio = same / total
    assert ratio >= 0.95, f"{same}/{total} frames agree:\n" + "\n".join(diffs[:40])
    # Every thread's parking function, at the same depth as Breakpad finds it.
    for tid, fn in expected_functions(target).items():
        names = [f for _, f in ours[tid]]
        assert fn in names, f"thread {tid}: {fn} not in {ours[tid]}"
        assert names.index(fn) == [f for _, f in bp[tid]].index(fn), (tid, ours[tid], bp[tid])
    return ratio


def dump_threads(binary: Path, tmp_path: Path, extra: int = 0, name: str = "threads.dmp"):
    target = Target([binary, str(extra)] if extra else [binary])
    out = tmp_path / name
    run_dumper(target.pid, "-o", out)
    return target, out


# -- agreement with Breakpad -------------------------------------------------------------------

@pytest.mark.parametrize("extra", [0, 20])
def test_frames_agree_with_breakpad(threads_bin, symbols, tmp_path, extra):
    target, dump = dump_threads(threads_bin, tmp_path, extra)
    with target:
        store = symbols.add_modules_of(read_minidump_snapshot(dump))
        bp = breakpad_walk(dump, store)
        doc = inspect_json("--no-system-debug", dump)
        assert_agrees(doc, bp, target)
        assert {t["tid"] for t in doc["threads"]} == set(bp)
        for t in doc["threads"]:
            assert t["frames"][0]["trust"] == "context"
            assert all(f["trust"] == "cfi" for f in t["frames"][1:]), t
        # Breakpad's alias: what dump_syms wrote for the stripped libc.
        waiter = next(t for t in doc["threads"] if t["name"] == "waiter")
        assert "pthread_cond_wait" in [f["function"] for f in waiter["frames"]]


def test_breakpad_symbols_alone(threads_bin, symbols, tmp_path):
    """The executable gone from disk: names, lines and STACK CFI come from its .sym."""
    exe = tmp_path / "bin" / "threads"
    exe.parent.mkdir()
    shutil.copy(threads_bin, exe)
    store = tmp_path / "store"
    breakpad_dump_syms(exe, store)
    target, dump = dump_threads(exe, tmp_path)
    with target:
        symbols.add_modules_of(read_minidump_snapshot(dump))  # libc, ld.so, the vDSO
        for sym in Path(symbols.root).rglob("*.sym"):
            if sym.parent.parent.name != "threads":
                dest = store / sym.relative_to(symbols.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(sym, dest)
        bp = breakpad_walk(dump, store)
        exe.rename(exe.with_name("moved"))
        doc = inspect_json("--no-system-debug", "--symbols-path", store, dump)
        main = next(m for m in doc["modules"] if m["main"])
        assert main["symbols"] == "ok" and main["files"][0].endswith("threads.sym"), main
        assert_agrees(doc, bp, target)
        park = [f for t in doc["threads"] for f in t["frames"] if f["function"] in TARGETS]
        assert park and all(f["file"].endswith("threads.c") and f["line"] for f in park)


def test_system_debug_files(threads_bin, tmp_path):
    """With /usr/lib/debug, the same walk; local functions get their own names."""
    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        plain = inspect_json("--no-system-debug", dump)
        full = inspect_json(dump)
    pcs = lambda doc: {t["tid"]: [f["pc"] for f in t["frames"]] for t in doc["threads"]}  # noqa: E731
    assert pcs(plain) == pcs(full)
    libc = next(m for m in full["modules"] if m["name"] == "libc.so.6")
    if any(f.startswith("/usr/lib/debug/") for f in libc["files"]):  # libc6-dbg installed
        sleeper = next(t for t in full["threads"] if t["name"] == "sleeper")
        names = [f["function"] for f in sleeper["frames"]]
        assert "start_thread" in names, names
        assert any(f["line"] for f in sleeper["frames"] if f["module"] == "libc.so.6")


# -- text and JSON -----------------------------------------------------------------------------

def test_text_output_matches_json(threads_bin, tmp_path):
    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        text = inspect(dump).stdout
        doc = inspect_json(dump)
    assert text.startswith(f"Process {target.pid}: ")
    assert "Reason: live snapshot" in text
    assert doc["reason"] == {"kind": "live"}
    assert doc["schema"] == "generate_dump.inspect/1"
    assert doc["process"]["pid"] == target.pid
    for m in doc["modules"]:
        assert f" {m['name']} " in text
    frames_text: dict[int, list] = {}
    tid = None
    for line in text.splitlines():
        m = re.match(r"^Thread (\d+)", line)
        if m:
            tid = int(m.group(1))
            frames_text[tid] = []
            continue
        if line.startswith("  #"):
            fm = TEXT_FRAME.match(line)
            assert fm, f"unparsable frame line {line!r}"
            idx, pc, mod, fn, _off, _file, ln, trust = fm.groups()
            frames_text[tid].append((int(idx), int(pc, 16), mod, fn, int(ln) if ln else None, trust))
    frames_json = {t["tid"]: [(f["index"], int(f["pc"], 16), f["module"], f["function"],
                               f["line"], f["trust"]) for f in t["frames"]]
                   for t in doc["threads"]}
    assert frames_text == frames_json
    assert [t["tid"] for t in doc["threads"]] == list(frames_text)


def test_json_schema_keys(threads_bin, tmp_path):
    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        doc = inspect_json("--thread", target.pid, dump)
    assert set(doc) == {"schema", "file", "process", "system", "reason", "trigger", "python", "modules",
                        "threads"}
    assert doc["python"] is None  # a C program
    assert [t["tid"] for t in doc["threads"]] == [target.pid]
    t = doc["threads"][0]
    assert set(t) == {"tid", "name", "crashed", "note", "holds_gil", "python_thread_id",
                      "python_note", "frames"}
    assert set(t["frames"][0]) == {"index", "pc", "sp", "trust", "module", "module_offset",
                                   "function", "qualname", "function_offset", "file", "line"}
    assert set(doc["modules"][0]) == {"name", "path", "base", "end", "main", "debug_id",
                                      "code_id", "symbols", "files", "mismatched"}
    assert [f["function"] for f in t["frames"]][1] == "main_park"


# -- build ids ---------------------------------------------------------------------------------

def test_mismatched_build_id_is_not_symbolized(threads_bin, tmp_path):
    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        md = read_minidump_snapshot(dump)
        main = md.modules[0]
        record = b"LEpB" + main.identity.build_id  # CodeView signature 0x4270454c
        data = bytearray(dump.read_bytes())
        assert data.count(record) == 1
        at = data.index(record) + 4
        data[at] ^= 0xFF
        patched = tmp_path / "patched.dmp"
        patched.write_bytes(bytes(data))
        doc = inspect_json(patched)
        text = inspect(patched).stdout
    mod = next(m for m in doc["modules"] if m["main"])
    assert mod["symbols"] == "mismatch" and mod["files"] == []
    assert any(str(threads_bin) in x for x in mod["mismatched"]), mod
    assert "build id differs" in text
    frames = [f for t in doc["threads"] for f in t["frames"]]
    ours = [f for f in frames if f["module"] == "threads"]
    assert ours and all(f["function"] is None and f["file"] is None for f in ours)
    assert not set(TARGETS) & {f["function"] for f in frames}
    assert re.search(r"threads\+0x[0-9a-f]+ \[", text)
    # libc is untouched: still named.
    assert any(f["function"] == "pause" for f in frames)


def test_symbols_path_of_another_build(tmp_path):
    """The dump's path is gone; --symbols-path holds a different build, then the right one."""
    (tmp_path / "right").mkdir()
    right = compile_program("threads", tmp_path / "right")
    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    compile_program("threads", wrong_dir, "-O1", "-DOTHER_BUILD=1")
    target, dump = dump_threads(right, tmp_path)
    with target:
        moved = tmp_path / "moved"
        moved.mkdir()
        right.rename(moved / "threads")
        doc = inspect_json("--symbols-path", wrong_dir, dump)
        mod = next(m for m in doc["modules"] if m["main"])
        assert mod["symbols"] == "mismatch", mod
        assert any(str(wrong_dir) in x for x in mod["mismatched"])
        names = {f["function"] for t in doc["threads"] for f in t["frames"]}
        assert not set(TARGETS) & names, names

        doc = inspect_json("--symbols-path", wrong_dir, "--symbols-path", moved, dump)
        mod = next(m for m in doc["modules"] if m["main"])
        assert mod["symbols"] == "ok" and mod["files"] == [str(moved / "threads")], mod
        for tid, fn in expected_functions(target).items():
            t = next(t for t in doc["threads"] if t["tid"] == tid)
            assert fn in [f["function"] for f in t["frames"]], t


# -- crashes, summaries ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crashers(tmp_path_factory) -> Path:
    return compile_program("crashers", tmp_path_factory.mktemp("bin"), "-O0")


def run_crash(out_dir: Path, *command) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generate_dump", "run", "--output-dir",
                           str(out_dir), "--", *map(str, command)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def crashing_block(summary: str) -> list[str]:
    lines = summary.splitlines()
    start = next(i for i, l in enumerate(lines) if l.endswith("(crashed):"))
    block = []
    for l in lines[start + 1:]:
        if not l.startswith("  "):
            break
        block.append(l)
    return block


def test_run_crash_summary(crashers, tmp_path):
    r = run_crash(tmp_path, crashers, "segv")
    assert r.returncode == 139, r.stderr
    block = crashing_block(r.stderr)
    assert re.match(r"  #0 0x[0-9a-f]+ crashers!crash_in_main\+0x[0-9a-f]+ \(crashers\.c:\d+\)$",
                    block[0]), r.stderr
    assert any("crashers!main+" in l for l in block[1:3]), block
    assert "Crash: SIGSEGV (SEGV_MAPERR) at 0x0 in thread" in r.stderr
    # The summary comes first for the crashing thread, then the idle thread.
    assert r.stderr.index("(crashed):") < r.stderr.index("crashers!idle+")

    from generate_dump.inspect_dump import print_stacks, summarize_file

    dump = next(tmp_path.glob("*.dmp"))
    again = summarize_file(dump)
    assert crashing_block(again)[0] == block[0]
    assert print_stacks(dump) == again
    doc = inspect_json(dump)
    reason = doc["reason"]
    assert (reason["kind"], reason["name"], reason["flags_name"], reason["address"]) == \
        ("exception", "SIGSEGV", "SEGV_MAPERR", "0x0")
    assert doc["threads"][0]["crashed"] and doc["threads"][0]["tid"] == reason["thread"]
    assert doc["threads"][0]["frames"][0]["function"] == "crash_in_main"


def test_summary_of_a_snapshot(crashers, tmp_path):
    from generate_dump.inspect_dump import print_stacks, summarize_snapshot

    r = run_crash(tmp_path, crashers, "segv-thread")
    assert r.returncode == 139, r.stderr
    snap = read_minidump_snapshot(next(tmp_path.glob("*.dmp")))
    summary = summarize_snapshot(snap)
    assert print_stacks(snap) == summary
    block = crashing_block(summary)
    assert "crashers!crash_in_worker+" in block[0] and "crashers!worker+" in block[1], summary


CALL_NULL_C = r"""
void (*volatile fnptr)(void) = 0;
__attribute__((noinline)) void call_null(void) { fnptr(); __asm__ volatile(""); }
int main(void) { call_null(); return 0; }
"""


def test_scan_finds_the_caller_of_a_null_call(tmp_path):
    exe = compile_source(CALL_NULL_C, tmp_path / "call_null", "-O0", "-g")
    r = run_crash(tmp_path, exe)
    assert r.returncode == 139, r.stderr
    doc = inspect_json(next(tmp_path.glob("*.dmp")))
    frames = doc["threads"][0]["frames"]
    assert frames[0]["pc"] == "0x0" and frames[0]["module"] is None
    assert (frames[1]["function"], frames[1]["trust"]) == ("call_null", "scan"), frames[:3]
    assert frames[2]["function"] == "main", frames[:3]


LEVELS_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) void level3(void) {
    printf("READY %d\n", (int)getpid()); fflush(stdout); for (;;) pause(); }
__attribute__((noinline)) void level2(void) { level3(); __asm__ volatile(""); }
__attribute__((noinline)) void level1(void) { level2(); __asm__ volatile(""); }
int main(void) { level1(); return 0; }
"""


@pytest.mark.parametrize("flags,trust", [
    (["-O0", "-fno-omit-frame-pointer"], "fp"),
    (["-O2", "-fomit-frame-pointer"], "scan"),
])
def test_code_without_cfi(tmp_path, flags, trust):
    """No .eh_frame for the program's own functions: frame pointers, else a stack scan."""
    exe = compile_source(LEVELS_C, tmp_path / "levels", *flags,
                         "-fno-asynchronous-unwind-tables", "-fno-unwind-tables")
    with Target([exe]) as target:
        frames, names = first_thread_frames(target.pid, tmp_path / "levels.dmp")
    i = names.index("level3")
    assert names[i:i + 4] == ["level3", "level2", "level1", "main"], frames
    assert [f["trust"] for f in frames[i + 1:i + 4]] == [trust] * 3, frames
    assert "__libc_start_main" in names[i + 4:]


SIGNAL_C = r"""
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static void handler(int sig) { (void)sig; for (;;) pause(); }
__attribute__((noinline)) void spin(void) { for (;;) __asm__ volatile("" ::: "memory"); }
int main(void) {
    signal(SIGUSR1, handler);
    printf("READY %d\n", (int)getpid()); fflush(stdout);
    spin();
}
"""


def test_through_a_signal_frame(tmp_path):
    """A handler blocked in pause(): CFI expressions of __restore_rt lead back to the
    interrupted function, whose pc is the interrupted instruction itself (no pc - 1)."""
    import signal
    import time

    from live import syscall_sp_pc

    exe = compile_source(SIGNAL_C, tmp_path / "sig", "-O2", "-g")
    with Target([exe], wait_parked=False) as target:
        # Out of the write(2) of "READY" and into spin() before the signal comes.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{target.pid}/syscall").read_text().split()[0] != "running" \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(target.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while syscall_sp_pc(target.pid, target.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        frames, names = first_thread_frames(target.pid, tmp_path / "sig.dmp")
    i = names.index("handler")
    assert frames[i + 1]["module"] == "libc.so.6"  # __restore_rt, the signal trampoline
    assert names[i + 2:i + 4] == ["spin", "main"], frames
    assert all(f["trust"] == "cfi" for f in frames[1:i + 4])
    assert "__libc_start_main" in names[i + 4:]


# -- a 20-thread summary groups identical stacks -----------------------------------------------

def test_summary_groups_identical_threads(threads_bin, tmp_path):
    from generate_dump.inspect_dump import summarize_file

    target, dump = dump_threads(threads_bin, tmp_path, extra=20)
    with target:
        summary = summarize_file(dump)
    assert re.search(r'^20 threads "extra": \d+, ', summary, re.M), summary
    assert summary.count("park_in_nanosleep") == 2, summary  # "sleeper" and the 20 "extra"
    assert summary.splitlines()[0].startswith(f'Thread {target.pid} "threads"')


# -- errors ------------------------------------------------------------------------------------

def test_errors(tmp_path):
    from generate_dump.inspect_dump import inspect_command

    junk = tmp_path / "junk.dmp"
    junk.write_bytes(b"MDMP" + os.urandom(60))
    for args, words in (
        ([str(junk)], "not a readable minidump"),
        ([str(tmp_path / "missing.dmp")], "no such file"),
        ([str(tmp_path)], "is a directory"),
        (["--symbols-path", str(tmp_path / "nodir"), str(junk)], "no such directory"),
    ):
        with pytest.raises(DumpError, match=words):
            inspect_command.main(args=args, standalone_mode=False)
        r = inspect(*args, check=False)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


def test_unknown_thread(threads_bin, tmp_path):
    from generate_dump.inspect_dump import inspect_command

    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        with pytest.raises(DumpError, match="no thread 1 in the dump"):
            inspect_command.main(args=["--thread", "1", str(dump)], standalone_mode=False)


def test_registered_in_cli(threads_bin, tmp_path):
    from generate_dump import cli

    if "inspect" not in getattr(cli, "SUBCOMMANDS", {}):
        pytest.skip("cli.py does not dispatch 'generate_dump inspect' yet")
    target, dump = dump_threads(threads_bin, tmp_path)
    with target:
        r = subprocess.run([sys.executable, "-m", "generate_dump", "inspect", "--json", str(dump)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["process"]["pid"] == target.pid


# -- units: no process needed ------------------------------------------------------------------

def test_x86_call_detection():
    from generate_dump.unwind.walker import Amd64, _amd64_call_with_rex

    a = Amd64()
    pad = b"\x90" * 8
    assert a.is_call_before(pad + b"\xe8\x10\x20\x30\x40")  # call rel32
    assert a.is_call_before(pad + b"\xff\xd0")  # call rax
    assert a.is_call_before(pad + b"\xff\x15\x00\x10\x00\x00")  # call [rip+disp32]
    assert a.is_call_before(pad + b"\xff\x54\x24\x08")  # call [rsp+8]
    assert a.is_call_before(pad + b"\xff\x50\x10")  # call [rax+0x10]
    assert _amd64_call_with_rex(pad + b"\x41\xff\xd4")  # call r12
    assert not a.is_call_before(pad + b"\x48\x89\xc7")  # mov rdi, rax
    assert not a.is_call_before(pad + b"\xff\xe0")  # jmp rax


def test_breakpad_postfix():
    from generate_dump.unwind.breakpad import evaluate_postfix, parse_rules

    rules = parse_rules(".cfa: $rsp 16 + .ra: .cfa -8 + ^ $rbp: .cfa -16 + ^")
    assert rules == {".cfa": "$rsp 16 +", ".ra": ".cfa -8 + ^", "$rbp": ".cfa -16 + ^"}
    mem = {0x1008: 0xAAAA, 0x1000: 0xBBBB}
    vals = {"$rsp": 0xFF0}
    cfa = evaluate_postfix(rules[".cfa"], vals, mem.get)
    vals[".cfa"] = cfa
    assert cfa == 0x1000
    assert evaluate_postfix(rules["$rbp"], {**vals, ".cfa": 0x1010}, mem.get) == 0xBBBB
    assert evaluate_postfix(rules[".ra"], {**vals, ".cfa": 0x1010}, mem.get) == 0xAAAA
    with pytest.raises(ValueError):
        evaluate_postfix(rules[".ra"], vals, mem.get)  # 0xff8 was not captured
    assert evaluate_postfix("$rsp 15 @", {"$rsp": 0x1007}, mem.get) == 0x1007 & ~14


def _arm64_snapshot(lr_leaf: bool, pac: bool = False) -> Snapshot:
    base = 0x5500_0000_0000
    stack_lo = 0x7FF0_0000_0000
    words = [0] * 64

    def put(addr: int, value: int) -> None:
        words[(addr - stack_lo) // 8] = value

    fp0, fp1 = stack_lo + 0x20, stack_lo + 0x60
    ret1, ret2 = base + 0x1234, base + 0x2468
    tag = 0x0023_0000_0000_0000 if pac else 0
    put(fp0, fp1)
    put(fp0 + 8, ret1 | tag)
    put(fp1, 0)
    put(fp1 + 8, ret2 | tag)
    stack = MemoryRange(stack_lo, b"".join(w.to_bytes(8, "little") for w in words))
    lr = base + 0x3000 if lr_leaf else ret1
    ctx = Arm64Context(x=(0,) * 29, fp=fp0, lr=lr, sp=stack_lo + 0x10, pc=base + 0x100)
    return Snapshot(
        process=Process(pid=7),
        system=SystemInfo(arch=Arch.ARM64, os=OS.LINUX, cpu=CpuInfo()),
        threads=(Thread(tid=7, context=ctx, stack=stack, name="main"),),
        modules=(Module("/nonexistent/libfake.so", base, 0x10000,
                        ElfBuildId(b"\x11" * 20), is_main=True),),
        regions=(MemoryRegion(base, 0x10000, True, False, True),
                 MemoryRegion(stack_lo, 0x1000, True, True, False)),
    )


@pytest.mark.parametrize("leaf,pac", [(False, False), (True, False), (False, True)])
def test_arm64_frame_pointers(leaf, pac):
    from generate_dump.unwind import walk_process

    [stack] = walk_process(_arm64_snapshot(leaf, pac))
    got = [(f.pc - 0x5500_0000_0000, f.trust) for f in stack.frames]
    want = [(0x100, "context")] + ([(0x3000, "fp")] if leaf else []) + \
        [(0x1234, "fp"), (0x2468, "fp")]
    assert got == want
    assert all(f.module.name == "libfake.so" and f.symbol is None for f in stack.frames)
    assert stack.frames[0].module.status == "missing"
