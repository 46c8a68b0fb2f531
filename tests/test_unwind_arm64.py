"""The ARM64 stack walker's rules on stacks built here, word by word (after rust-minidump's
``minidump-unwind/src/arm64_unittest.rs``): CFI (DWARF ``.eh_frame`` and Breakpad STACK CFI),
the link register of frame 0, the x29 frame-record chain, pointer-authentication bits,
the stack scan and where each stops."""

from __future__ import annotations

from typing import Optional

import pytest

from generate_dump.snapshot import Arch, Arm64Context
from generate_dump.unwind.walker import SCAN_WORDS, SCAN_WORDS_CONTEXT

from unwind_synth import (  # noqa: F401 - fresh_caches: an autouse fixture
    FUNCS, SOURCES, fresh_caches,
    DATA, HEAP, MOD, MOD2, NOT_AFTER_CALL, STACK, STACK_SIZE, BUILD_ID, BUILD_ID2, Cfa, Fde,
    StackBuilder, SynthProcess, summary, walk,
)

FP, LR, SP, PC = 29, 30, 31, 32
HIGH = 0x000D_F700_4000_0000  # a module above 2^48: its address uses bits 48-51

# Functions of libunwound.so (module offsets). No CFI: 0x1000-0x3fff and 0x9000-0x9fff.
SYM = FUNCS + """STACK CFI INIT 4000 100 .cfa: sp 0 + .ra: x30
STACK CFI 4004 .cfa: sp 32 + .ra: .cfa -8 + ^ x19: .cfa -32 + ^ x20: .cfa -24 + ^ x29: .cfa -16 + ^
STACK CFI 4008 x19: x0 x20: x1 x21: x2 x22: x3
STACK CFI 400c .cfa: sp 40 + x1: .cfa 40 - ^ x19: x19 x20: x20 x21: x21 x22: x22
STACK CFI 4014 .cfa: sp 32 + x1: .cfa 32 - ^ x29: .cfa 8 - ^ .ra: .cfa ^ sp: .cfa 8 +
STACK CFI 4018 .cfa: sp 40 + pc: .cfa 40 - ^
STACK CFI INIT 5000 1000 .cfa: sp 0 + .ra: 0
STACK CFI INIT 6000 1000 .cfa: x29 16 + .ra: .cfa -8 + ^ x29: .cfa -16 + ^
STACK CFI INIT 7000 1000 .cfa: x29 16 + .ra: .cfa -8 + ^ x29: .cfa -16 + ^
STACK CFI INIT 8000 800 .cfa: sp 8 - .ra: .cfa 16 + ^
STACK CFI INIT 8800 800 .cfa: moot .ra: ambiguous
"""

# The same rules as DWARF CFA instructions (code alignment 4, as GCC writes them). The
# CIE's initial row: CFA = sp, the return address still in x30.
CIE = Cfa.def_cfa(SP, 0)
FRAME_RECORD = Cfa.def_cfa(FP, 16) + Cfa.offset(FP, -16) + Cfa.offset(LR, -8)
FDES = [
    Fde(0x4000, 0x1000, {
        # paciasp; stp x19, x20, [sp, #-32]!; stp x29, x30, [sp, #16]
        0x4004: Cfa.negate_ra_state + Cfa.def_cfa_offset(32) + Cfa.offset(LR, -8)
        + Cfa.offset(19, -32) + Cfa.offset(20, -24) + Cfa.offset(FP, -16),
        0x4008: b"".join(Cfa.register(19 + i, i) for i in range(4)),
        0x400C: Cfa.def_cfa_offset(40) + Cfa.offset(1, -40)
        + b"".join(Cfa.same_value(19 + i) for i in range(4)),
        0x4014: Cfa.def_cfa_offset(32) + Cfa.offset(1, -32) + Cfa.offset(FP, -8)
        + Cfa.offset_sf(LR, 0) + Cfa.val_offset(SP, 8),
    }),
    Fde(0x5000, 0x1000, {0x5000: Cfa.undefined(LR)}),  # the outermost frame
    Fde(0x6000, 0x1000, {0x6000: FRAME_RECORD}),
    Fde(0x7000, 0x1000, {0x7000: FRAME_RECORD}),
    # CFA = sp - 8 (DW_OP_breg31 -8): the stack pointer would go down.
    Fde(0x8000, 0x800, {0x8000: Cfa.def_cfa_expression(b"\x8f\x78") + Cfa.offset_sf(LR, 16)}),
    Fde(0x8800, 0x800, {0x8800: Cfa.def_cfa_expression(b"\x96")}),  # nothing to evaluate
]


def process(tmp_path, source: str = "dwarf", base: int = MOD) -> SynthProcess:
    """libunwound.so at ``base`` with the rules above (from ``source``) and libnofiles.so,
    which has no file at all: its code is known only from the snapshot's memory."""
    p = SynthProcess(Arch.ARM64, tmp_path)
    p.add_module("libunwound.so", base, BUILD_ID, source, sym=SYM, fdes=FDES, initial=CIE,
                 ra_reg=LR, code_align=4)
    p.add_module("libnofiles.so", MOD2, BUILD_ID2, None)
    return p


def context(pc: int, sp: int, fp: int = 0, lr: int = 0,
            x: Optional[dict[int, int]] = None) -> Arm64Context:
    x = x or {}
    return Arm64Context(x=tuple(x.get(i, 0) for i in range(29)), fp=fp, lr=lr, sp=sp, pc=pc)


def run(p: SynthProcess, stack: StackBuilder, ctx: Arm64Context, max_frames: int = 512):
    return walk(p.snapshot(ctx, stack), p.options(), max_frames)


def pac(addr: int, bits: int = 0xAE1D) -> int:
    """``addr`` with a pointer-authentication code in its top 16 bits."""
    return addr | bits << 48


# -- context only ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_context_frame_only(tmp_path, source):
    s = StackBuilder()
    got = run(process(tmp_path, source), s, context(MOD + 0x1010, s.base))
    assert summary(got) == [(0x1010, s.base, "context")] and got.note == ""


# -- CFI ------------------------------------------------------------------------------------

# The caller's callee-saved registers (rust-minidump's init_cfi_state).
CALLER = {19: 0x5E68B5D5B5D55E68, 20: 0x34F3EBD1EBD134F3, 21: 0x74BCA31EA31E74BC,
          22: 0x16B32DCB2DCB16B3, 23: 0x21372ADA2ADA2137, 24: 0x557DBBBBBBBB557D,
          25: 0x8CA748BF48BF8CA7, 26: 0x21F0AB46AB4621F0, 27: 0x146732B732B71467,
          28: 0xA673645FA673645F}
CALLER_FP = 0x0000_00A2_8112_E110
RET = MOD + 0x5510  # into epictetus, whose CFI says it is the outermost frame
SAVED_X1 = 0xDD5A48C848C8DD5A


def cfi_case(offset: int, signed: bool) -> tuple[StackBuilder, Arm64Context, dict]:
    """Stack, context and the caller's expected extra registers, frame 0 at
    enchiridion+``offset``; ``signed``: the saved return address carries a PAC."""
    s = StackBuilder()
    x = dict(CALLER)
    fp, lr, extra = CALLER_FP, 0, {}
    ret = pac(RET) if signed else RET
    if offset == 0:
        lr = ret
    elif offset == 4:
        s.push(CALLER[19], CALLER[20], CALLER_FP, ret)
        x.update({19: 0xADC9F635A635ADC9, 20: 0x623135AC35AC6231})
        fp = 0x5FC4BE14BE145FC4
    elif offset == 8:  # x19..x22 moved to x0..x3
        s.push(0xFF3DFB81FB81FF3D, 0x34F3EBD1EBD134F3, CALLER_FP, ret)
        x.update({i: CALLER[19 + i] for i in range(4)})
        x.update({19: 0xADC9F635A635ADC9, 20: 0x623135AC35AC6231, 21: 0xAC4543564356AC45,
                  22: 0x2561562F562F2561})
        fp = 0x5FC4BE14BE145FC4
    elif offset in (0xC, 0x10, 0x14):  # x1 saved too, though not callee-saved
        s.push(SAVED_X1, 0xFF3DFB81FB81FF3D, 0x34F3EBD1EBD134F3, CALLER_FP, ret)
        x[1] = 0xFB756319FB756319
        fp = 0x5FC4BE14BE145FC4
        extra = {1: SAVED_X1}
    else:  # 0x18: the pc from its own slot; the .ra rule finds garbage
        s.push(ret, SAVED_X1, 0xFF3DFB81FB81FF3D, 0x34F3EBD1EBD134F3, CALLER_FP,
               0xF8D157835783F8D1)
        x[1] = 0xFB756319FB756319
        extra = {1: SAVED_X1}
    s.mark("caller_sp")
    return s, context(MOD + 0x4000 + offset, s.base, fp=fp, lr=lr, x=x), extra


CFI_CASES = [(src, off) for src in SOURCES for off in (0, 4, 8, 0xC, 0x10, 0x14)] + \
    [("breakpad", 0x18)]  # an explicit pc rule: Breakpad's format only


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "pac"])
@pytest.mark.parametrize(("source", "offset"), CFI_CASES)
def test_cfi_recovers_caller_and_callee_saved_registers(tmp_path, source, offset, signed):
    """Each step of enchiridion's prologue: the caller's pc (from x30, from the stack, with
    its pointer-authentication bits stripped), sp (the CFA, or an explicit rule), x19-x29
    from the stack, from other registers or unchanged, and x1 where a rule saves it; then
    epictetus's CFI ends the walk."""
    s, ctx, extra = cfi_case(offset, signed)
    got = run(process(tmp_path, source), s, ctx)
    assert summary(got) == [(0x4000 + offset, s.base, "context"),
                            (0x5510, s["caller_sp"], "cfi")], got.note
    caller = got.frames[1]
    assert {r: caller.regs.get(r) for r in CALLER} == CALLER
    assert {r: caller.regs.get(r) for r in extra} == extra
    assert (caller.regs[FP], caller.regs[SP], caller.regs[PC]) == \
        (CALLER_FP, s["caller_sp"], RET)
    if source == "breakpad":
        assert [f.function for f in got.frames] == ["enchiridion", "epictetus"]


@pytest.mark.parametrize("source", SOURCES)
def test_cfi_callers_caller_uses_recovered_registers(tmp_path, source):
    """Frame 0 returns through x30; frames 1 and 2 compute their CFA from x29, each from
    the x29 the frame below recovered."""
    s = StackBuilder()
    s.skip(32).mark("fp1").push("fp2", MOD + 0x7030)  # middle: frame record
    s.skip(48).mark("fp2").push(0x0BAD_BEEF, MOD + 0x5510)  # outer
    s.push(0, MOD + 0x3050)  # epictetus is the outermost frame: no scan finds this
    got = run(process(tmp_path, source), s,
              context(MOD + 0x4000, s.base, fp=s["fp1"], lr=MOD + 0x6020, x={19: 0x99}))
    assert summary(got) == [(0x4000, s.base, "context"),
                            (0x6020, s.base, "cfi"),
                            (0x7030, s["fp1"] + 16, "cfi"),
                            (0x5510, s["fp2"] + 16, "cfi")], got.note
    assert [(f.regs[19], f.regs[FP]) for f in got.frames] == [
        (0x99, s["fp1"]), (0x99, s["fp1"]), (0x99, s["fp2"]), (0x99, 0x0BAD_BEEF)]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("where", [0x8010, 0x8810], ids=["sp-backwards", "bad-expression"])
def test_cfi_rejected_falls_back_to_scan(tmp_path, source, where):
    s = StackBuilder().push(0, MOD + 0x2040).mark("caller_sp")
    got = run(process(tmp_path, source), s, context(MOD + where, s.base))
    assert summary(got) == [(where, s.base, "context"), (0x2040, s["caller_sp"], "scan")]


# -- link register and frame records --------------------------------------------------------


def record_chain(first_ret: int = MOD + 0x3050, second_ret: int = MOD2 + 0x1060) -> StackBuilder:
    """Frame records (saved x29, saved x30) up the stack, the last one ending the chain."""
    s = StackBuilder()
    s.push(0x7, MOD + 0x9010)  # frame 0's locals: a scan would stop at 0x9010
    s.skip(16).mark("fp1").push("fp2", first_ret)
    s.skip(64).mark("fp2").push(0, second_ret)
    s.skip(16)
    return s


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("signed", [False, True], ids=["plain", "pac"])
def test_leaf_returns_to_link_register_then_frame_records(tmp_path, source, signed):
    """Frame 0 without CFI, in a leaf that saved nothing: its caller is at x30 (with the
    same sp); the callers above come from the x29 chain."""
    s = record_chain(pac(MOD + 0x3050, 0x23) if signed else MOD + 0x3050)
    lr = pac(MOD + 0x2040) if signed else MOD + 0x2040
    got = run(process(tmp_path, source), s, context(MOD + 0x1010, s.base, s["fp1"], lr))
    assert summary(got) == [(0x1010, s.base, "context"),
                            (0x2040, s.base, "fp"),
                            (0x3050, s["fp1"] + 16, "fp"),
                            (MOD2 + 0x1060 - MOD, s["fp2"] + 16, "fp")], got.note
    assert [f.regs[FP] for f in got.frames] == [s["fp1"], s["fp1"], s["fp2"], 0]


def test_stale_link_register_into_the_same_function_is_ignored(tmp_path):
    """x30 pointing back into frame 0's own function (names from the .sym say so) is a
    stale value from an earlier call: the caller comes from the frame record."""
    s = record_chain()
    got = run(process(tmp_path, "breakpad"), s,
              context(MOD + 0x1010, s.base, s["fp1"], MOD + 0x1060))
    assert summary(got)[:2] == [(0x1010, s.base, "context"), (0x3050, s["fp1"] + 16, "fp")]
    assert got.frames[0].function == "nocfi_one" and got.frames[1].function == "nocfi_three"


@pytest.mark.parametrize("source", SOURCES)
def test_link_register_already_in_the_frame_record(tmp_path, source):
    """A non-leaf frame 0 whose record holds x30's value: the record is used, so the
    caller's sp is above it (not frame 0's sp)."""
    s = record_chain(first_ret=MOD + 0x2040)
    got = run(process(tmp_path, source), s,
              context(MOD + 0x1010, s.base, s["fp1"], MOD + 0x2040))
    assert summary(got)[:2] == [(0x1010, s.base, "context"), (0x2040, s["fp1"] + 16, "fp")]


@pytest.mark.parametrize("source", SOURCES)
def test_frame_record_chain(tmp_path, source):
    """No CFI, x30 not a return address: the x29 chain, with x19 carried up."""
    s = record_chain()
    got = run(process(tmp_path, source), s,
              context(MOD + 0x1010, s.base, s["fp1"], 0x1234, x={19: 0x5A5A}))
    assert summary(got) == [(0x1010, s.base, "context"),
                            (0x3050, s["fp1"] + 16, "fp"),
                            (MOD2 + 0x1060 - MOD, s["fp2"] + 16, "fp")], got.note
    assert {f.regs[19] for f in got.frames} == {0x5A5A}


def test_frame_record_chain_limited_by_max_frames(tmp_path):
    s = record_chain()
    got = run(process(tmp_path), s, context(MOD + 0x1010, s.base, s["fp1"]), max_frames=2)
    assert [f.pc - MOD for f in got.frames] == [0x1010, 0x3050]
    assert got.note == "stopped after 2 frames"


@pytest.mark.parametrize("source", SOURCES)
def test_pac_bits_stripped_above_a_high_module(tmp_path, source):
    """A module above 2^48: the strip mask keeps the address bits it uses (48-51) and
    drops the authentication code above them, in x30 and in frame records."""
    s = record_chain(first_ret=pac(HIGH + 0x3050, 0x1000))
    got = run(process(tmp_path, source, base=HIGH), s,
              context(HIGH + 0x1010, s.base, s["fp1"], pac(HIGH + 0x2040, 0x1000)))
    assert summary(got, HIGH)[:3] == [(0x1010, s.base, "context"), (0x2040, s.base, "fp"),
                                      (0x3050, s["fp1"] + 16, "fp")], got.note


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("bad", ["below-sp", "outside-stack", "overflow", "unaligned", "zero"])
def test_bad_frame_pointer_falls_back_to_scan(tmp_path, source, bad):
    """x29 below sp (the chain going backwards), outside the captured stack, at the top of
    the address space, misaligned or zero: no record is read; the scan finds a return
    address (one after a BL)."""
    s = StackBuilder().push(0, 0x1234).mark("sp").push(MOD + 0x2040).mark("caller_sp")
    s.push(s.base + 0x100, MOD + 0x3050)  # what a record at the wrong place would return
    fp = {"below-sp": s["sp"] - 8, "outside-stack": STACK + STACK_SIZE + 0x1000,
          "overflow": (1 << 64) - 8, "unaligned": s["sp"] + 0x23, "zero": 0}[bad]
    got = run(process(tmp_path, source), s, context(MOD + 0x1010, s["sp"], fp))
    assert summary(got)[:2] == [(0x1010, s["sp"], "context"),
                                (0x2040, s["caller_sp"], "scan")], got.note
    sps = [f.sp for f in got.frames]
    assert sps == sorted(set(sps))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("ret", [MOD + NOT_AFTER_CALL, DATA + 0x10, HEAP + 0x10, 0],
                         ids=["not-after-bl", "module-data", "heap", "zero"])
def test_frame_record_with_implausible_return_address(tmp_path, source, ret):
    s = StackBuilder().mark("fp1").push("fp2", ret).push(MOD + 0x3050).mark("caller_sp")
    s.skip(16).mark("fp2").push(0, 0)
    got = run(process(tmp_path, source), s, context(MOD + 0x1010, s.base, s["fp1"]))
    assert summary(got) == [(0x1010, s.base, "context"), (0x3050, s["caller_sp"], "scan")]


# -- the stack scan -------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_scan_takes_only_return_addresses_after_a_branch_with_link(tmp_path, source):
    s = StackBuilder()
    s.push(HEAP + 0x100, 0x7400_B000_0000, DATA + 0x20, MOD + NOT_AFTER_CALL, s.base, 4096)
    s.push(MOD2 + 0x1060).mark("sp1")
    s.push(0x1, MOD2 + 0x2000, STACK + 0x10).push(pac(MOD + 0x2080)).mark("sp2")
    s.skip(64)
    got = run(process(tmp_path, source), s, context(MOD + 0x1010, s.base))
    assert summary(got) == [(0x1010, s.base, "context"),
                            (MOD2 + 0x1060 - MOD, s["sp1"], "scan"),
                            (0x2080, s["sp2"], "scan")], got.note


@pytest.mark.parametrize(("frame", "words", "found"), [
    (0, SCAN_WORDS_CONTEXT - 1, True), (0, SCAN_WORDS_CONTEXT, False),
    (1, SCAN_WORDS - 1, True), (1, SCAN_WORDS, False)])
def test_scan_limits(tmp_path, frame, words, found):
    """Frame 0 scans SCAN_WORDS_CONTEXT words, later frames SCAN_WORDS."""
    s = StackBuilder().skip(8 * words).push(MOD + 0x2040).mark("caller_sp")
    # frame 1: frame 0 at enchiridion's entry returns through x30 into CFI-less code
    ctx = context(MOD + 0x4000, s.base, lr=MOD + 0x9010) if frame else \
        context(MOD + 0x1010, s.base)
    got = run(process(tmp_path), s, ctx)
    want = [(0x4000, s.base, "context"), (0x9010, s.base, "cfi")] if frame else \
        [(0x1010, s.base, "context")]
    if found:
        want.append((0x2040, s["caller_sp"], "scan"))
    assert summary(got) == want and got.note == ""


def test_scan_stops_at_the_end_of_the_stack(tmp_path):
    s = StackBuilder().skip(STACK_SIZE - 32).mark("sp").push(0, 0, 0, MOD + 0x2040)
    got = run(process(tmp_path), s, context(MOD + 0x1010, s["sp"]))
    assert summary(got) == [(0x1010, s["sp"], "context"), (0x2040, STACK + STACK_SIZE, "scan")]
    assert got.note == ""


# -- frame 0 outside code ------------------------------------------------------------------


@pytest.mark.parametrize("pc", [0, HEAP + 0x10], ids=["null", "data"])
def test_call_through_bad_pointer_returns_to_link_register(tmp_path, pc):
    """``blr`` to a null or data pointer: the return address is in x30, not on the
    stack; the frame records go on from x29."""
    s = record_chain()
    got = run(process(tmp_path), s, context(pc, s.base, s["fp1"], MOD + 0x2040))
    assert summary(got, 0)[:3] == [(pc, s.base, "context"), (MOD + 0x2040, s.base, "fp"),
                                   (MOD + 0x3050, s["fp1"] + 16, "fp")], got.note
