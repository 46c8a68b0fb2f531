"""The synthetic CFI stacks of tests/test_unwind_{amd64,arm64}.py, written as minidumps and
walked by Breakpad's ``minidump_stackwalk`` with the same STACK CFI: every frame's pc, sp and
trust must be the same as ours (Breakpad is the reference those rules follow)."""

from __future__ import annotations

import re

import pytest

import test_unwind_amd64 as amd64
import test_unwind_arm64 as arm64
from generate_dump.minidump.writer import minidump_bytes
from generate_dump.snapshot import Amd64Context
from generate_dump.unwind.debug_info import clear_caches
from readers import breakpad_bin, run
from unwind_synth import walk

TRUST = {"given as instruction pointer in context": "context", "call frame info": "cfi",
         "previous frame's frame pointer": "fp", "stack scanning": "scan"}


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield
    clear_caches()


def breakpad_frames(dump, store, pc: str, sp: str) -> list[tuple[int, int, str]]:
    """(pc, sp, trust) per frame of the first thread in minidump_stackwalk's report."""
    r = run([breakpad_bin("minidump_stackwalk"), dump, store])
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout.split("\nThread 0", 1)[1].split("\n\n", 1)[0]
    frames = []
    for block in re.split(r"\n\s*\d+  ", text)[1:]:
        regs = {k: int(v, 16) for k, v in re.findall(r"(\w+) = 0x([0-9a-f]+)", block)}
        found = re.search(r"Found by: (.*)", block)
        assert found is not None, block
        how = found.group(1).strip()
        frames.append((regs[pc], regs[sp], TRUST.get(how, how)))
    return frames


def compare(tmp_path, p, snap, pc: str, sp: str):
    ours = [(f.pc, f.sp, f.trust) for f in walk(snap, p.options()).frames]
    dump = tmp_path / "synthetic.dmp"
    dump.write_bytes(minidump_bytes(snap))
    theirs = breakpad_frames(dump, p.store, pc, sp)
    assert len(ours) >= 2 and ours == theirs


@pytest.mark.parametrize("offset", range(7))
def test_amd64_cfi_like_breakpad(tmp_path, offset):
    s, regs = amd64.cfi_case(offset)
    p = amd64.process(tmp_path, "breakpad")
    ctx = Amd64Context(rip=amd64.MOD + 0x4000 + offset, rsp=s.base, **regs)
    compare(tmp_path, p, p.snapshot(ctx, s), "rip", "rsp")


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "pac"])
@pytest.mark.parametrize("offset", [0, 4, 8, 0xC, 0x10, 0x14, 0x18])
def test_arm64_cfi_like_breakpad(tmp_path, offset, signed):
    s, ctx, _ = arm64.cfi_case(offset, signed)
    p = arm64.process(tmp_path, "breakpad")
    compare(tmp_path, p, p.snapshot(ctx, s), "pc", "sp")
