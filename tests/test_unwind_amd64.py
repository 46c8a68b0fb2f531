"""The x86-64 stack walker's rules on stacks built here, word by word (after rust-minidump's
``minidump-unwind/src/amd64_unittest.rs``): CFI (DWARF ``.eh_frame`` and Breakpad STACK CFI,
the same rules in both forms), the ``rbp`` chain, the stack scan and where each stops."""

from __future__ import annotations

import pytest

from generate_dump.snapshot import Amd64Context, Arch
from generate_dump.unwind.walker import SCAN_WORDS, SCAN_WORDS_CONTEXT, Amd64

from unwind_synth import (  # noqa: F401 - fresh_caches: an autouse fixture
    FUNCS, SOURCES, fresh_caches,
    DATA, HEAP, MOD, MOD2, NOT_AFTER_CALL, STACK, STACK_SIZE, BUILD_ID, BUILD_ID2, Cfa, Fde,
    StackBuilder, SynthProcess, sleb, summary, walk,
)

RSP, RBP, RBX, R12, R13, R14, R15, RIP = 7, 6, 3, 12, 13, 14, 15, 16
CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")

# Functions of libunwound.so (module offsets). No CFI: 0x1000-0x3fff and 0x9000-0x9fff.
SYM = FUNCS + """STACK CFI INIT 4000 100 .cfa: $rsp 8 + .ra: .cfa 8 - ^
STACK CFI 4001 .cfa: $rsp 16 + $rbx: .cfa 16 - ^
STACK CFI 4002 $r12: $rbx
STACK CFI 4003 .cfa: $rsp 40 + $r13: .cfa 32 - ^
STACK CFI 4005 .ra: $r13
STACK CFI 4006 .cfa: $rbp 16 + $rbp: .cfa 24 - ^
STACK CFI INIT 5000 1000 .cfa: $rsp 8 + .ra: 0
STACK CFI INIT 6000 1000 .cfa: $rbp 16 + .ra: .cfa 8 - ^ $rbp: .cfa 16 - ^
STACK CFI INIT 7000 1000 .cfa: $rbp 16 + .ra: .cfa 8 - ^ $rbp: .cfa 16 - ^
STACK CFI INIT 8000 800 .cfa: $rsp 8 - .ra: .cfa 16 + ^
STACK CFI INIT 8800 800 .cfa: moot .ra: ambiguous
"""

# The same rules as DWARF CFA instructions. The CIE's initial row: CFA = rsp + 8, return
# address at CFA - 8.
CIE = Cfa.def_cfa(RSP, 8) + Cfa.offset(RIP, -8)
RBP_FRAME = Cfa.def_cfa(RBP, 16) + Cfa.offset(RBP, -16)
FDES = [
    Fde(0x4000, 0x1000, {
        0x4001: Cfa.def_cfa_offset(16) + Cfa.offset(RBX, -16),
        0x4002: Cfa.register(R12, RBX),
        0x4003: Cfa.def_cfa_offset(40) + Cfa.offset(R13, -32),
        0x4005: Cfa.register(RIP, R13),
        0x4006: Cfa.def_cfa(RBP, 16) + Cfa.offset(RBP, -24),
    }),
    Fde(0x5000, 0x1000, {0x5000: Cfa.undefined(RIP)}),  # the outermost frame
    Fde(0x6000, 0x1000, {0x6000: RBP_FRAME}),
    Fde(0x7000, 0x1000, {0x7000: RBP_FRAME}),
    # CFA = rsp - 8 (DW_OP_breg7 -8): the stack pointer would go down.
    Fde(0x8000, 0x800, {0x8000: Cfa.def_cfa_expression(b"\x77\x78") + Cfa.offset_sf(RIP, 16)}),
    Fde(0x8800, 0x800, {0x8800: Cfa.def_cfa_expression(b"\x96")}),  # nothing to evaluate
]


def process(tmp_path, source: str = "dwarf") -> SynthProcess:
    """libunwound.so with the rules above (from ``source``) and libnofiles.so, which has no
    file at all: its code is known only from the snapshot's memory."""
    p = SynthProcess(Arch.AMD64, tmp_path)
    p.add_module("libunwound.so", MOD, BUILD_ID, source, sym=SYM, fdes=FDES, initial=CIE,
                 ra_reg=RIP)
    p.add_module("libnofiles.so", MOD2, BUILD_ID2, None)
    return p


def run(p: SynthProcess, stack: StackBuilder, max_frames: int = 512, **regs):
    return walk(p.snapshot(Amd64Context(**regs), stack), p.options(), max_frames)


def reg(frame, name: str) -> int:
    return frame.regs[Amd64.NAMES.index(name)]


def assert_sp_grows(stack):
    sps = [f.sp for f in stack.frames]
    assert sps == sorted(sps) and len(set(sps)) == len(sps), sps


# -- context only ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_context_frame_only(tmp_path, source):
    """No rule recovers a caller (no CFI here, rbp 0, nothing on the stack): one frame."""
    s = StackBuilder()
    got = run(process(tmp_path, source), s, rip=MOD + 0x1010, rsp=s.base)
    assert summary(got) == [(0x1010, s.base, "context")]
    assert got.frames[0].module_name == "libunwound.so" and got.note == ""


# -- CFI ------------------------------------------------------------------------------------

# Frame 0's registers (rust-minidump's init_cfi_state): the caller's, unless a test changes
# what the callee did to them.
CALLER = dict(rbp=0x68995B1DE4700266, rbx=0x5A5BEEB38DE23BE8, r12=0xED1B02E8CC0FC79C,
              r13=0x1D20AD8ACACBE930, r14=0xE94CFFC2F7ADAA28, r15=0xB638D17D8DA413B5)
RET = MOD + 0x5510  # into epictetus, whose CFI says it is the outermost frame


def cfi_case(offset: int) -> tuple[StackBuilder, dict]:
    """The stack and frame 0's registers with frame 0 at enchiridion+``offset``."""
    s = StackBuilder()
    regs = dict(CALLER)
    if offset == 0:
        s.push(RET)
    elif offset in (1, 2):
        s.push(CALLER["rbx"], RET)
        regs["rbx"] = 0xBE0487D2F9EAFE29
        if offset == 2:  # r12 moved into rbx; the callee's own r12 differs
            regs.update(rbx=CALLER["r12"], r12=0xB0118DE918A4BCEA)
    elif offset in (3, 4):
        s.push(0x0E023828DFFD4D81, CALLER["r13"], 0x319E68B49E3ACE0F, CALLER["rbx"], RET)
        regs.update(rbx=CALLER["r12"], r12=0x89D04FA804C87A43, r13=0x5118E02CBDB24B03)
    elif offset == 5:  # the return address is in r13; its stack slot is garbage
        s.push(0x4B516DD035745953, CALLER["r13"], 0xA6D445E16AE3D872, CALLER["rbx"],
               0xAA95FA054AEDFBAE)
        regs.update(rbx=CALLER["r12"], r12=0x46B1B8868891B34A, r13=RET)
    else:  # rbp is the frame pointer: CFA = rbp + 16
        s.push(0x043C6DFCEB91AA34, CALLER["r13"], CALLER["rbp"]).mark("rbp")
        s.push(CALLER["rbx"], 0xF015EE516AD89EAB)
        regs.update(rbp=s["rbp"], rbx=CALLER["r12"], r12=0x26E007B341ACFEBD, r13=RET)
    s.mark("caller_sp")
    return s, regs


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("offset", range(7))
def test_cfi_recovers_caller_and_callee_saved_registers(tmp_path, source, offset):
    """Each step of enchiridion's prologue: the caller's pc and sp, and its callee-saved
    registers from the stack, from another register (r12 in rbx, the return address in
    r13) or unchanged; then epictetus's CFI ends the walk."""
    s, regs = cfi_case(offset)
    got = run(process(tmp_path, source), s, rip=MOD + 0x4000 + offset, rsp=s.base, **regs)
    assert summary(got) == [(0x4000 + offset, s.base, "context"),
                            (0x5510, s["caller_sp"], "cfi")], got.note
    caller = got.frames[1]
    assert {r: reg(caller, r) for r in CALLEE_SAVED} == CALLER
    assert (reg(caller, "rip"), reg(caller, "rsp")) == (RET, s["caller_sp"])
    if source == "breakpad":
        assert [f.function for f in got.frames] == ["enchiridion", "epictetus"]


@pytest.mark.parametrize("source", SOURCES)
def test_cfi_callers_caller_uses_recovered_registers(tmp_path, source):
    """Frame 0 saves rbx; frames 1 and 2 compute their CFA from rbp, each from the rbp
    the frame below recovered (the context's, then the one frame 1 restored)."""
    s = StackBuilder()
    s.push(0x1111_2222_3333_4444, MOD + 0x6020)  # enchiridion+1: saved rbx, return
    s.skip(32).mark("rbp1").push("rbp2", MOD + 0x7030)  # middle: frame record
    s.skip(48).mark("rbp2").push(0x0BAD_BEEF, MOD + 0x5510)  # outer
    s.push(0, MOD + 0x3050)  # epictetus is the outermost frame: no scan finds this
    got = run(process(tmp_path, source), s, rip=MOD + 0x4001, rsp=s.base, rbp=s["rbp1"],
              rbx=0x99)
    assert summary(got) == [(0x4001, s.base, "context"),
                            (0x6020, s.base + 16, "cfi"),
                            (0x7030, s["rbp1"] + 16, "cfi"),
                            (0x5510, s["rbp2"] + 16, "cfi")], got.note
    assert [(reg(f, "rbx"), reg(f, "rbp")) for f in got.frames] == [
        (0x99, s["rbp1"]), (0x1111_2222_3333_4444, s["rbp1"]),
        (0x1111_2222_3333_4444, s["rbp2"]), (0x1111_2222_3333_4444, 0x0BAD_BEEF)]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("where", [0x8010, 0x8810], ids=["sp-backwards", "bad-expression"])
def test_cfi_rejected_falls_back_to_scan(tmp_path, source, where):
    """CFI whose CFA lies below the stack pointer, or cannot be evaluated, is not
    believed: the scan finds the return address instead."""
    s = StackBuilder().push(0, MOD + 0x2040).mark("caller_sp")
    got = run(process(tmp_path, source), s, rip=MOD + where, rsp=s.base)
    assert summary(got) == [(where, s.base, "context"), (0x2040, s["caller_sp"], "scan")]


@pytest.mark.parametrize("source", SOURCES)
def test_cfi_return_address_outside_code_is_not_believed(tmp_path, source):
    """A CFI result that returns into the heap: the walker tries the frame pointer and the
    scan, which finds the real return address further up."""
    s = StackBuilder().push(HEAP + 0x40).skip(16).push(MOD + 0x3050).mark("caller_sp")
    got = run(process(tmp_path, source), s, rip=MOD + 0x4000, rsp=s.base)
    assert summary(got) == [(0x4000, s.base, "context"), (0x3050, s["caller_sp"], "scan")]


# -- the frame-pointer chain ----------------------------------------------------------------


def fp_chain() -> StackBuilder:
    """Three frame records (saved rbp, return address) into CFI-less code of both modules,
    with a plausible return address below the first record that only a scan would take."""
    s = StackBuilder()
    s.push(0x7, MOD + 0x9010)  # frame 0's locals: a scan would stop at 0x9010
    s.mark("rbp0").push("rbp1", MOD + 0x2040)
    s.skip(32).mark("rbp1").push("rbp2", MOD + 0x3050)
    s.skip(64).mark("rbp2").push(0, MOD2 + 0x1060)
    s.skip(16)
    return s


@pytest.mark.parametrize("source", SOURCES)
def test_frame_pointer_chain(tmp_path, source):
    s = fp_chain()
    got = run(process(tmp_path, source), s, rip=MOD + 0x1010, rsp=s.base, rbp=s["rbp0"],
              rbx=0x5A5A)
    assert summary(got) == [(0x1010, s.base, "context"),
                            (0x2040, s["rbp0"] + 16, "fp"),
                            (0x3050, s["rbp1"] + 16, "fp"),
                            (MOD2 + 0x1060 - MOD, s["rbp2"] + 16, "fp")], got.note
    assert [reg(f, "rbp") for f in got.frames] == [s["rbp0"], s["rbp1"], s["rbp2"], 0]
    assert {reg(f, "rbx") for f in got.frames} == {0x5A5A}  # callee-saved: carried up
    assert got.frames[3].module_name == "libnofiles.so"


def test_frame_pointer_chain_limited_by_max_frames(tmp_path):
    s = fp_chain()
    got = run(process(tmp_path), s, max_frames=3, rip=MOD + 0x1010, rsp=s.base, rbp=s["rbp0"])
    assert [f.pc - MOD for f in got.frames] == [0x1010, 0x2040, 0x3050]
    assert got.note == "stopped after 3 frames"


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("bad", ["below-sp", "outside-stack", "overflow", "unaligned", "zero"])
def test_bad_frame_pointer_falls_back_to_scan(tmp_path, source, bad):
    """A frame pointer below the stack pointer (the chain going backwards), outside the
    captured stack, at the top of the address space, misaligned or zero: no frame record
    is read there; the scan finds the return address."""
    s = StackBuilder().push(0, 0x1234).mark("sp").push(MOD + 0x2040).mark("caller_sp")
    s.push(s.base + 0x100, MOD + 0x3050)  # what a record at the wrong place would return
    rbp = {"below-sp": s["sp"] - 8, "outside-stack": STACK + STACK_SIZE + 0x1000,
           "overflow": (1 << 64) - 8, "unaligned": s["sp"] + 0x23, "zero": 0}[bad]
    got = run(process(tmp_path, source), s, rip=MOD + 0x1010, rsp=s["sp"], rbp=rbp)
    assert summary(got)[:2] == [(0x1010, s["sp"], "context"),
                                (0x2040, s["caller_sp"], "scan")], got.note
    assert_sp_grows(got)


@pytest.mark.parametrize("source", SOURCES)
def test_frame_chain_going_backwards_ends_in_scan(tmp_path, source):
    """The second record's saved rbp points below the first: that frame is not followed
    down the stack again; the scan goes on upward from the caller's stack pointer."""
    s = StackBuilder().mark("low").push(0x1111, MOD + 0x9010)  # an old record, down below
    s.skip(16).mark("rbp0").push("low", MOD + 0x2040)
    s.mark("caller_sp").push(0x1234, MOD + 0x3050).mark("caller2_sp").skip(16)
    got = run(process(tmp_path, source), s, rip=MOD + 0x1010, rsp=s.base + 8, rbp=s["rbp0"])
    assert summary(got) == [(0x1010, s.base + 8, "context"),
                            (0x2040, s["caller_sp"], "fp"),
                            (0x3050, s["caller2_sp"], "scan")], got.note


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("ret", [MOD + NOT_AFTER_CALL, DATA + 0x10, HEAP + 0x10, 0],
                         ids=["not-after-call", "module-data", "heap", "zero"])
def test_frame_record_with_implausible_return_address(tmp_path, source, ret):
    """A frame record whose return address is no return address (code not after a call,
    the module's data, the heap, zero) is refused; the scan finds the real one."""
    s = StackBuilder().mark("rbp0").push("rbp1", ret).push(MOD + 0x3050).mark("caller_sp")
    s.skip(16).mark("rbp1").push(0, 0)
    got = run(process(tmp_path, source), s, rip=MOD + 0x1010, rsp=s.base, rbp=s["rbp0"])
    assert summary(got) == [(0x1010, s.base, "context"), (0x3050, s["caller_sp"], "scan")]


# -- the stack scan -------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_scan_takes_only_return_addresses_into_module_code(tmp_path, source):
    """Scanning three frames: values outside modules, in a module's data, in its code but
    not after a call, and frame 0's own pc, are skipped; return addresses into a module
    with files and one without are taken, each frame's sp just above its return address."""
    s = StackBuilder()
    s.push(MOD + 0x1060)  # frame 0's own pc (after a call) on top of the stack
    s.push(HEAP + 0x100, 0x7400_B000_0000, DATA + 0x20, MOD + NOT_AFTER_CALL, s.base, 4096)
    s.push(MOD2 + 0x1060).mark("sp1")
    s.push(0x1, MOD2 + 0x2000, STACK + 0x10).push(MOD + 0x2080).mark("sp2")
    s.skip(64)
    got = run(process(tmp_path, source), s, rip=MOD + 0x1060, rsp=s.base)
    assert summary(got) == [(0x1060, s.base, "context"),
                            (MOD2 + 0x1060 - MOD, s["sp1"], "scan"),
                            (0x2080, s["sp2"], "scan")], got.note
    assert [f.module_name for f in got.frames] == ["libunwound.so", "libnofiles.so",
                                                   "libunwound.so"]


@pytest.mark.parametrize(("frame", "words", "found"), [
    (0, SCAN_WORDS_CONTEXT - 1, True), (0, SCAN_WORDS_CONTEXT, False),
    (1, SCAN_WORDS - 1, True), (1, SCAN_WORDS, False)])
def test_scan_limits(tmp_path, frame, words, found):
    """Frame 0 scans SCAN_WORDS_CONTEXT words, later frames SCAN_WORDS: a return address
    just inside the window is found, one just past it is not (and the walk ends)."""
    s = StackBuilder()
    if frame == 1:  # frame 0 at enchiridion's entry: CFI returns into CFI-less code
        s.push(MOD + 0x9010)
    s.mark("scan_from").skip(8 * words).push(MOD + 0x2040).mark("caller_sp")
    got = run(process(tmp_path), s, rip=MOD + (0x4000 if frame else 0x1010), rsp=s.base)
    want = [(0x4000, s.base, "context"), (0x9010, s["scan_from"], "cfi")] if frame else \
        [(0x1010, s.base, "context")]
    if found:
        want.append((0x2040, s["caller_sp"], "scan"))
    assert summary(got) == want
    assert got.note == ""


def test_scan_stops_at_the_end_of_the_stack(tmp_path):
    """The scan reads no further than the captured stack: a return address in its last
    word is found, and the walk then ends there, without a note."""
    top = STACK + STACK_SIZE
    s = StackBuilder()
    s.skip(STACK_SIZE - 32).mark("sp").push(0, 0, 0, MOD + 0x2040)
    got = run(process(tmp_path), s, rip=MOD + 0x1010, rsp=s["sp"])
    assert summary(got) == [(0x1010, s["sp"], "context"), (0x2040, top, "scan")]
    assert got.note == ""
    s = StackBuilder().skip(STACK_SIZE - 32).mark("sp").push(0, 0, 0, 0)
    got = run(process(tmp_path), s, rip=MOD + 0x1010, rsp=s["sp"])
    assert summary(got) == [(0x1010, s["sp"], "context")]


# -- frame 0 outside code ------------------------------------------------------------------


@pytest.mark.parametrize("pc", [0, HEAP + 0x10], ids=["null", "data"])
def test_call_through_bad_pointer_scans_first(tmp_path, pc):
    """A call through a null or data pointer: the return address it pushed is on top of
    the stack (found by the scan), and rbp still describes the caller's caller."""
    s = StackBuilder().push(MOD + 0x2040).mark("sp1").skip(16)
    s.mark("rbp").push(0, MOD + 0x3050).mark("sp2").skip(16)
    got = run(process(tmp_path), s, rip=pc, rsp=s.base, rbp=s["rbp"])
    assert summary(got, 0) == [(pc, s.base, "context"), (MOD + 0x2040, s["sp1"], "scan"),
                               (MOD + 0x3050, s["sp2"], "fp")], got.note


# -- signal frames -------------------------------------------------------------------------

SIGRETURN = 0x7600_0000_0000  # libsig.so: a signal trampoline, CIE augmentation "zRS"


def breg_rsp(off: int) -> bytes:
    """DW_OP_breg7 (rsp + off)."""
    return b"\x77" + sleb(off)


def test_signal_frame_caller_is_looked_up_at_its_own_pc(tmp_path):
    """A signal trampoline's CFI (marked ``S``, its FDE starting a byte before the code, as
    glibc's __restore_rt) restores rsp, rip and rbp from the signal context on the stack.
    The interrupted frame's pc is the interrupted instruction itself: here the first one
    of ``middle``, whose rules are used (pc - 1 would be in epictetus, the outermost)."""
    p = process(tmp_path)
    trampoline = Fde(0x2000 - 1, 0x101, {0x2000 - 1: Cfa.def_cfa_expression(
        breg_rsp(24) + b"\x06")  # CFA = *(rsp + 24): the interrupted rsp
        + Cfa.expression(RIP, breg_rsp(32)) + Cfa.expression(RBP, breg_rsp(16))})
    p.add_module("libsig.so", SIGRETURN, b"\x51" * 20, "dwarf", fdes=[trampoline],
                 initial=CIE, ra_reg=RIP, signal=True)
    s = StackBuilder().push(SIGRETURN + 0x2000).mark("uc")  # the handler returns to it
    s.push(0, 0, "rbp", "sp2", MOD + 0x6000).skip(32)
    s.mark("sp2").skip(32).mark("rbp").push(0, MOD + 0x5510).mark("sp3").skip(16)
    got = run(p, s, rip=MOD + 0x4000, rsp=s.base)
    assert summary(got) == [(0x4000, s.base, "context"),
                            (SIGRETURN + 0x2000 - MOD, s["uc"], "cfi"),
                            (0x6000, s["sp2"], "cfi"),
                            (0x5510, s["sp3"], "cfi")], got.note
    assert [f.exact for f in got.frames] == [True, False, True, False]
    assert got.frames[1].signal_frame and not got.frames[2].signal_frame
