"""--redact end to end: real targets with planted secrets, every --memory preset.

Without --redact the raw file holds the planted values and `generate_dump scan` reports
each copy (checked against a plain byte search, ASCII and UTF-16LE) and so does
detect-secrets on the file's strings; with --redact no copy is left, neither finds any,
and Breakpad, rust-minidump and LLDB unwind every thread to the same functions.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

import live
from checks import Symbols, breakpad_frames, lldb_frames, rust_frames
from planted import (KINDS, Planted, detect_secrets, make, present, scan_json, strings_text,
                     thread_name_secret)
from readers import breakpad_stackwalk, lldb_core, rust_stackwalk_json
from targets import assert_target_intact, compile_c, run_dumper

from generate_dump.minidump import read_minidump
from generate_dump.redact import read_report

PRESETS = ("stacks", "referenced", "full")
C_PLACES = ("heap-ascii", "heap-utf16", "stack-ascii", "stack-utf16", "argument")


def _c_planted(rng: random.Random) -> tuple[list[Planted], list[Planted], list[Planted]]:
    """(values read from stdin, in the program's order; argv values; thread names)."""
    lines = []
    for kind in KINDS:
        for place in C_PLACES:
            text, value = make(kind, rng)
            lines.append(Planted(kind, place, text, value))
    argv = [Planted(kind, "argv", *make(kind, rng)) for kind in KINDS]
    names = [thread_name_secret(rng, "pass"), thread_name_secret(rng, "pwd")]
    return lines, argv, names


class Dumps:
    def __init__(self, root: Path, target, planted: list[Planted]):
        self.root, self.target, self.planted = root, target, planted
        self.paths: dict[tuple[str, bool], Path] = {}

    def get(self, preset: str, redact: bool) -> Path:
        key = (preset, redact)
        if key not in self.paths:
            out = self.root / f"{preset}-{'redacted' if redact else 'plain'}.dmp"
            args = [self.target.pid, "--memory", preset, "-o", out]
            if redact:
                args.append("--redact")
            r = run_dumper(args)
            assert r.returncode == 0, r.stderr
            assert_target_intact(self.target)
            self.paths[key] = out
        return self.paths[key]


@pytest.fixture(scope="module")
def c_target(tmp_path_factory):
    root = tmp_path_factory.mktemp("redact-c")
    rng = random.Random(19)
    lines, argv, names = _c_planted(rng)
    stdin = root / "values"
    stdin.write_text("".join(p.text.replace("\n", "|") + "\n" for p in lines))
    exe = compile_c("secrets")
    with open(stdin) as f:
        target = live.Target([exe, names[0].text, names[1].text, *[p.text for p in argv]],
                             stdin=f)
    try:
        yield Dumps(root, target, lines + argv + names)
    finally:
        target.close()


def _covered(findings: list[dict], offset: int, length: int, kind: str | None) -> dict | None:
    for f in findings:
        width = 2 if f["encoding"] == "utf-16le" else 1
        # (a password's needle includes its keyword; the finding is the value after it)
        if offset <= f["file_offset"] < offset + length and \
                f["file_offset"] + f["length"] * width <= offset + length or \
                f["file_offset"] <= offset and offset + length <= f["file_offset"] + f["length"] * width:
            return f if kind is None or f["kind"] == kind else None
    return None


def _expected_places(preset: str) -> set[str]:
    places = {"stack-ascii", "stack-utf16", "argument", "argv", "thread-name"}
    if preset == "full":
        places |= {"heap-ascii", "heap-utf16"}
    return places


@pytest.mark.parametrize("preset", PRESETS)
def test_scan_finds_every_planted_copy(c_target, preset):
    dump = c_target.get(preset, redact=False)
    copies = present(dump, c_target.planted)
    want = {p for p in c_target.planted if p.place in _expected_places(preset)}
    missing = sorted(f"{p.kind}@{p.place}" for p in want - set(copies))
    assert not missing, f"planted values not in the {preset} dump at all: {missing}"
    if preset == "referenced":
        # The main stack points at every heap value; windows are 512 bytes from 128 below
        # a pointer, coalesced, so most (not always all) are whole in the dump.
        heap = [p for p in copies if p.place.startswith("heap")]
        assert len(heap) >= len(KINDS), f"only {len(heap)} heap values in referenced memory"
    status, doc = scan_json(dump)
    assert status == 3
    for p, spots in copies.items():
        for offset, length in spots:
            f = _covered(doc["findings"], offset, length, p.kind)
            assert f is not None, (f"scan missed {p.kind} ({p.place}) at file offset "
                                   f"0x{offset:x} in the {preset} dump")
        if p.place.startswith("stack") or p.place == "argument":
            streams = {_covered(doc["findings"], o, n, p.kind)["stream"] for o, n in spots}
            assert "ThreadList" in streams, f"{p.kind} ({p.place}) not reported on a stack"
    kinds = {f["kind"] for f in doc["findings"]}
    assert kinds >= set(KINDS)
    # Masked: no finding shows a planted value.
    shown = " ".join(f["masked"] for f in doc["findings"])
    assert not any(p.value in shown for p in c_target.planted)


def _reported(p: Planted, line: str) -> bool:
    """Does a detect-secrets finding on ``line`` (a strings line) show planted ``p``?
    (It reports a PEM key by its header line.)"""
    if p.kind == "pem-private-key":
        return "PRIVATE KEY" in line
    return p.value in line


@pytest.mark.parametrize("preset", PRESETS)
def test_detect_secrets_finds_planted_without_redact(c_target, preset, tmp_path):
    dump = c_target.get(preset, redact=False)
    results = detect_secrets(strings_text(dump, tmp_path / "strings.ini"))
    copies = present(dump, c_target.planted)
    found = {p for p in copies if any(_reported(p, line) for _, line in results)}
    # detect-secrets reports one GitHub, GitLab and PEM value per file however many
    # differ, so the comparison is per kind: it finds each planted kind.
    kinds_missed = set(KINDS) - {p.kind for p in found}
    assert not kinds_missed, f"detect-secrets found no planted {sorted(kinds_missed)}"
    print(f"{preset}: detect-secrets found {len(found)} of {len(copies)} planted values "
          f"in the dump's strings ({len(results)} findings in all)")


@pytest.mark.parametrize("preset", PRESETS)
def test_redacted_dump_holds_no_planted_secret(c_target, preset, tmp_path):
    dump = c_target.get(preset, redact=True)
    copies = present(dump, c_target.planted)
    assert not copies, "left in the redacted dump: " + ", ".join(
        sorted(f"{p.kind}@{p.place}" for p in copies))
    status, doc = scan_json(dump)
    assert (status, doc["count"]) == (0, 0), doc["findings"][:5]
    results = detect_secrets(strings_text(dump, tmp_path / "strings.ini"))
    print(f"{preset}: detect-secrets on the redacted dump: {len(results)} findings "
          f"{sorted({t for t, _ in results})}")
    leaked = [(t, line) for t, line in results
              if any(_reported(p, line) for p in c_target.planted)]
    assert not leaked, f"detect-secrets finds planted secrets: {leaked[:5]}"
    report = read_report(read_minidump(dump))
    assert report is not None and report["stack_words_replaced"] > 0
    assert report["full_memory_scan_complete"] is True
    found = report["secrets_found"]
    assert found.get("thread-name", {}).get("password-assignment") == 2
    assert set(found.get("stack", {})) == set(KINDS)
    assert set(found.get("command-line", {})) == set(KINDS)
    if preset == "full":
        assert set(found.get("full-memory", {})) == set(KINDS)
        assert report["full_memory_bytes_overwritten"] > 0
    # The GD_REDACTION record itself holds counts only.
    assert not any(p.value in str(report) for p in c_target.planted)


def _unwinds(dump: Path, symbols: Symbols) -> dict[str, dict[int, list[str]]]:
    md = read_minidump(dump)
    tids = [t.tid for t in md.threads]
    store = symbols.add_modules_of(md)
    return {
        "breakpad": breakpad_frames(breakpad_stackwalk(dump, store), tids),
        "rust-minidump": rust_frames(rust_stackwalk_json(dump, "--symbols-path", str(store))),
        # LLDB prints argument values after the name (`f(x=1,`): those may be redacted.
        "lldb": {tid: [f.split("(")[0] for f in frames] for tid, frames in
                 lldb_frames(lldb_core(dump, "thread list", "bt all")).items()},
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_every_reader_unwinds_the_same_with_redact(c_target, preset, tmp_path):
    symbols = Symbols(tmp_path / "symbols")
    plain = _unwinds(c_target.get(preset, redact=False), symbols)
    redacted = _unwinds(c_target.get(preset, redact=True), symbols)
    for reader in plain:
        assert len(plain[reader]) == 2, f"{reader}: {plain[reader]}"
        for tid, frames in plain[reader].items():
            assert len(frames) >= 3, f"{reader} thread {tid}: {frames}"
        assert redacted[reader] == plain[reader], (
            f"{reader} unwinds differently after --redact ({preset}):\n"
            f"plain    {plain[reader]}\nredacted {redacted[reader]}")
    # The stacks reach the planted functions (the comparison is not between two failures).
    flat = {r: " ".join(" ".join(f) for f in v.values()) for r, v in plain.items()}
    for reader, text in flat.items():
        assert "park_with_args" in text and "main_park" in text, f"{reader}: {text}"


# -- a Python target ---------------------------------------------------------------------

PY_TARGET = r"""
import ctypes, os, sys, threading, time
values = open(sys.argv[1]).read().split("\x00")   # heap ASCII, heap UTF-16, locals, args
names = sys.argv[2:4]
heap_ascii = values[0::4]
heap_utf16 = ["\u0100" + v for v in values[1::4]]  # stored as UCS-2: UTF-16LE in memory
libc = ctypes.CDLL(None)
ready = threading.Barrier(3)

def park(arg0, arg1, arg2, arg3, arg4, arg5, arg6, arg7, arg8):
    local_values = [v + "" for v in values[2::4]]
    ready.wait()
    while True:
        time.sleep(3600)

def named(name, args):
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: the thread's name in the kernel
    park(*args)

for name, place in ((names[0], 3), (names[1], 3)):
    threading.Thread(target=named, args=(name, values[place::4]), name=name,
                     daemon=True).start()
ready.wait()
time.sleep(0.2)
print("READY", os.getpid(), flush=True)
while True:
    time.sleep(3600)
"""
PY_PLACES = ("heap-ascii", "heap-utf16", "local", "argument")


@pytest.fixture(scope="module")
def py_target(tmp_path_factory):
    root = tmp_path_factory.mktemp("redact-py")
    rng = random.Random(1919)
    values = [Planted(kind, place, *make(kind, rng)) for kind in KINDS for place in PY_PLACES]
    argv = [Planted(kind, "argv", *make(kind, rng)) for kind in KINDS]
    names = [thread_name_secret(rng, "pwd"), thread_name_secret(rng, "pass")]
    data = root / "values"
    data.write_text("\x00".join(p.text for p in values))
    script = root / "target.py"
    script.write_text(PY_TARGET)
    target = live.Target([sys.executable, script, data, names[0].text, names[1].text,
                          *[p.text for p in argv]])
    try:
        yield Dumps(root, target, values + argv + names)
    finally:
        target.close()


@pytest.mark.parametrize("preset", PRESETS)
def test_python_target(py_target, preset, tmp_path):
    plain = py_target.get(preset, redact=False)
    copies = present(plain, py_target.planted)
    want = {p for p in py_target.planted if p.place in ("argv", "thread-name")
            or preset == "full"}
    missing = sorted(f"{p.kind}@{p.place}" for p in want - set(copies))
    assert not missing, f"planted values not in the {preset} dump: {missing}"
    _, doc = scan_json(plain)
    for p, spots in copies.items():
        for offset, length in spots:
            # A stale heap copy may run into other text (a reused block): then it is
            # found inside a longer high-entropy string instead. Covered either way;
            # every kind is still reported as itself somewhere.
            assert _covered(doc["findings"], offset, length, None), (
                f"scan missed {p.kind} ({p.place}) at 0x{offset:x} in the {preset} dump")
    assert {f["kind"] for f in doc["findings"]} >= {p.kind for p in copies}

    redacted = py_target.get(preset, redact=True)
    left = present(redacted, py_target.planted)
    assert not left, "left after --redact: " + ", ".join(f"{p.kind}@{p.place}" for p in left)
    status, doc = scan_json(redacted)
    assert (status, doc["count"]) == (0, 0), doc["findings"][:5]
    results = detect_secrets(strings_text(redacted, tmp_path / "strings.ini"))
    leaked = [(t, line) for t, line in results
              if any(_reported(p, line) for p in py_target.planted)]
    assert not leaked, f"detect-secrets finds planted secrets: {leaked[:5]}"

    symbols = Symbols(tmp_path / "symbols")
    before, after = _unwinds(plain, symbols), _unwinds(redacted, symbols)
    for reader in before:
        assert len(before[reader]) == 3, f"{reader}: {before[reader]}"
        assert all(len(f) >= 3 for f in before[reader].values()), before[reader]
        assert after[reader] == before[reader], (
            f"{reader} unwinds the Python target differently after --redact ({preset})")


def test_full_dump_to_a_pipe_is_redacted_while_it_streams(c_target, tmp_path):
    """-o -: no file to edit afterwards, so full memory is searched as it is written."""
    out = tmp_path / "piped.dmp"
    with open(out, "wb") as f:
        r = subprocess.run([sys.executable, "-m", "generate_dump", str(c_target.target.pid),
                            "--memory", "full", "--redact", "-o", "-"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        f.write(r.stdout)
    assert r.returncode == 0, r.stderr
    assert_target_intact(c_target.target)
    assert not present(out, c_target.planted)
    status, doc = scan_json(out)
    assert (status, doc["count"]) == (0, 0), doc["findings"][:5]
    report = read_report(read_minidump(out))
    assert report["full_memory_scan_complete"] is False  # a pipe cannot be rewritten
    assert report["stack_words_replaced"] > 0


def test_convert_redacts_a_core(c_target, tmp_path):
    """`convert --redact`: a core of the planted target (gdb's gcore) becomes a minidump
    that holds none of the planted secrets, in full; without --redact they are there."""
    import shutil

    if shutil.which("gcore") is None:
        pytest.fail("gdb's gcore is not installed: run scripts/install-test-deps")
    core = tmp_path / "target.core"
    r = subprocess.run(["gcore", "-o", str(tmp_path / "target"), str(c_target.target.pid)],
                       capture_output=True, text=True, timeout=300)
    produced = tmp_path / f"target.{c_target.target.pid}"
    assert r.returncode == 0 and produced.exists(), r.stderr
    produced.rename(core)
    live.assert_running_untraced(c_target.target.pid)
    plain, redacted = tmp_path / "plain.dmp", tmp_path / "redacted.dmp"
    for out, extra in ((plain, []), (redacted, ["--redact"])):
        r = subprocess.run([sys.executable, "-m", "generate_dump", "convert", str(core),
                            "-o", str(out), "--memory", "full", *extra],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    assert present(plain, c_target.planted), "the plain conversion should hold the secrets"
    left = present(redacted, c_target.planted)
    assert not left, "left in the redacted conversion: " + ", ".join(
        sorted(f"{p.kind}@{p.place}" for p in left))
    status, doc = scan_json(redacted)
    assert (status, doc["count"]) == (0, 0), doc["findings"][:5]
