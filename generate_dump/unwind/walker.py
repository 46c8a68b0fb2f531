"""The stack walker: context frame, then per frame CFI, frame pointer, stack scan.

Each caller frame is recovered by the first method that works, and says which one:

- ``context``: frame 0, the thread's registers (the exception context for a crash);
- ``cfi``: DWARF CFI from ``.eh_frame``/``.debug_frame`` of the module's files, else
  Breakpad STACK CFI from a ``.sym`` file;
- ``fp``: the frame-pointer chain (x86-64 ``rbp``, ARM64 ``x29``; on ARM64 also the link
  register for frame 0 without CFI), accepted only when the return address lands in
  executable module code right after a call instruction (when the code is available),
  or in JIT code (executable memory outside modules, or named by the perf map) when the
  frame record passes Breakpad's checks: the caller's frame pointer lies above the
  caller's stack pointer and in captured memory;
- ``scan``: a bounded scan of the stack (40 words; 120 from frame 0) for a value that lies
  in an executable range of a module and, when the module's code can be read (from its
  file, else from the dump's memory), follows a call instruction.

A frame whose CFI marks the return address undefined (``_start``, ``clone3``) or zero ends
the walk; a CFI result that is implausible (outside every module and executable mapping,
or a stack pointer that goes down) falls back to the frame pointer and the scan, whose
results must be plausible return addresses with a growing stack pointer. A repeated
(pc, sp) pair and :data:`MAX_FRAMES` end the walk too.

When frame 0's pc is not in executable module code (a call through a null or wild
pointer), the scan is tried before the frame pointer: the return address the bad call
pushed is on top of the stack, while the frame pointer still describes the caller's caller.

Callers' program counters are looked up at ``pc - 1`` (the call instruction), except
after a signal frame (CIE augmentation ``S``), where the saved pc is the interrupted
instruction itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..perfmap import MODULE_NAME as PERF_MAP_MODULE
from ..snapshot import Amd64Context, Arch, Arm64Context, Snapshot, Thread
from . import cfi as cfimod
from .breakpad import PostfixError, evaluate_postfix
from .cfi import ExprError, Row
from .locate import SymbolOptions
from .debug_info import ModuleDebug, Symbol, module_debug
from .view import SnapshotIndex

MAX_FRAMES = 512
SCAN_WORDS = 40
SCAN_WORDS_CONTEXT = 120
MASK64 = (1 << 64) - 1

TRUST_CONTEXT = "context"
TRUST_CFI = "cfi"
TRUST_FP = "fp"
TRUST_SCAN = "scan"


class _End(Exception):
    """CFI says this is the outermost frame."""


@dataclass
class Frame:
    index: int
    pc: int
    sp: int
    trust: str
    regs: dict[int, int] = field(repr=False, default_factory=dict)
    exact: bool = True  # pc is the instruction itself (frame 0, after a signal frame)
    module: Optional[ModuleDebug] = field(default=None, repr=False)
    symbol: Optional[Symbol] = None
    file: Optional[str] = None
    line: Optional[int] = None
    signal_frame: bool = False
    jit: bool = False  # symbol comes from the process's perf map (code outside modules)

    @property
    def lookup_pc(self) -> int:
        return self.pc if self.exact else self.pc - 1

    @property
    def module_name(self) -> Optional[str]:
        if self.module is not None:
            return self.module.name
        return PERF_MAP_MODULE if self.jit else None

    @property
    def module_offset(self) -> Optional[int]:
        return self.pc - self.module.module.base if self.module is not None else None

    @property
    def function(self) -> Optional[str]:
        return self.symbol.name if self.symbol is not None else None

    @property
    def function_offset(self) -> Optional[int]:
        return self.pc - self.symbol.start if self.symbol is not None else None


@dataclass
class ThreadStack:
    tid: int
    name: Optional[str]
    frames: list[Frame]
    crashed: bool = False
    note: str = ""  # why there are no (more) frames, when that is not the normal end


# -- architectures ----------------------------------------------------------------------------


class ArchSpec:
    name = ""
    sp = 0
    pc = 0
    fp = 0
    ra = 0
    callee_saved: frozenset = frozenset()
    breakpad_regs: dict[str, int] = {}

    def regs(self, ctx) -> dict[int, int]:
        raise NotImplementedError

    def strip(self, v: int) -> int:
        return v

    def is_call_before(self, code: bytes) -> bool:
        raise NotImplementedError

    call_window = 0


class Amd64(ArchSpec):
    name = "amd64"
    sp, pc, fp, ra = 7, 16, 6, 16
    callee_saved = frozenset({3, 6, 12, 13, 14, 15})
    NAMES = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
    breakpad_regs = {"$" + n: i for i, n in enumerate(NAMES)}
    call_window = 8

    def regs(self, ctx: Amd64Context) -> dict[int, int]:
        return {i: getattr(ctx, n) for i, n in enumerate(self.NAMES)}

    def is_call_before(self, code: bytes) -> bool:
        """Does an x86-64 call instruction end exactly at the end of ``code``?"""
        n = len(code)
        if n >= 5 and code[n - 5] == 0xE8:  # call rel32
            return True
        for k in range(2, min(n, 8) + 1):  # call r/m64: [REX] FF /2 (or /3)
            i = n - k
            if code[i] != 0xFF:
                continue
            if _ff_call_length(code, i) == k:
                return True
        return False


def _ff_call_length(code: bytes, i: int) -> int:
    """Length of a call FF /2|/3 at ``i`` counting a REX prefix before it, 0 if not a call."""
    if i + 1 >= len(code):
        return 0
    modrm = code[i + 1]
    reg = (modrm >> 3) & 7
    if reg not in (2, 3):
        return 0
    mod, rm = modrm >> 6, modrm & 7
    length = 2
    if mod != 3 and rm == 4:
        if i + 2 >= len(code):
            return 0
        sib = code[i + 2]
        length += 1
        if mod == 0 and sib & 7 == 5:
            length += 4
    if mod == 1:
        length += 1
    elif mod == 2:
        length += 4
    elif mod == 0 and rm == 5:
        length += 4
    if i + length == len(code):
        return length
    return 0


def _amd64_call_with_rex(code: bytes) -> bool:
    n = len(code)
    for k in range(3, min(n, 9) + 1):
        i = n - k
        if 0x40 <= code[i] <= 0x4F and code[i + 1] == 0xFF and \
                _ff_call_length(code, i + 1) == k - 1:
            return True
    return False


class Arm64(ArchSpec):
    name = "arm64"
    sp, pc, fp, ra = 31, 32, 29, 30
    callee_saved = frozenset(range(19, 31))
    breakpad_regs = {**{f"x{i}": i for i in range(31)}, "fp": 29, "lr": 30, "sp": 31,
                     "pc": 32}
    call_window = 4

    def __init__(self, mask: int = (1 << 48) - 1):
        self.mask = mask

    def regs(self, ctx: Arm64Context) -> dict[int, int]:
        r = {i: v for i, v in enumerate(ctx.x[:29])}
        r.update({29: ctx.fp, 30: ctx.lr, 31: ctx.sp, 32: ctx.pc})
        return r

    def strip(self, v: int) -> int:
        return v & self.mask  # pointer authentication bits of return addresses

    def is_call_before(self, code: bytes) -> bool:
        if len(code) < 4:
            return False
        insn = int.from_bytes(code[-4:], "little")
        return (insn & 0xFC000000) == 0x94000000 \
            or (insn & 0xFFFFFC1F) == 0xD63F0000 \
            or (insn & 0xFEFFF800) == 0xD63F0800  # BLRAA/BLRAB/BLRAAZ/BLRABZ


def arch_spec(view: SnapshotIndex) -> Optional[ArchSpec]:
    if view.arch == Arch.AMD64:
        return Amd64()
    if view.arch == Arch.ARM64:
        top = max((m.base + m.size for m in view.modules), default=1 << 47)
        bits = max(48, top.bit_length())
        return Arm64((1 << bits) - 1)
    return None


# -- the walker -------------------------------------------------------------------------------


class Walker:
    def __init__(self, view: SnapshotIndex, options: SymbolOptions, spec: ArchSpec):
        self.view = view
        self.options = options
        self.spec = spec
        self.word = 8
        self._mods: dict[int, ModuleDebug] = {}
        self._sym_cache: dict[tuple[int, bool], tuple] = {}
        self._ret_cache: dict[tuple[int, bool], bool] = {}

    # memory ------------------------------------------------------------------------------

    def read_word(self, addr: int, thread: Optional[Thread] = None) -> Optional[int]:
        if addr < 0 or addr > MASK64 - 8:
            return None
        stack = thread.stack if thread is not None else None
        if stack is not None and stack.start <= addr and addr + 8 <= stack.end:
            off = addr - stack.start
            return int.from_bytes(stack.data[off:off + 8], "little")
        b = self.view.read(addr, 8)
        return int.from_bytes(b, "little") if b is not None else None

    # modules -----------------------------------------------------------------------------

    def module(self, addr: int) -> Optional[ModuleDebug]:
        m = self.view.module_at(addr)
        if m is None:
            return None
        md = self._mods.get(m.base)
        if md is None:
            md = module_debug(m, self.options)
            self._mods[m.base] = md
        return md

    def executable(self, addr: int) -> bool:
        md = self.module(addr)
        region = self.view.region_at(addr) if self.view.regions else None
        if region is not None:
            if not region.executable:
                return False
            if md is None:
                return True  # executable memory outside modules (JIT code)
        if md is None:  # JIT code if the perf map names it, unless the map says unmapped
            return not self.view.regions and self.view.perf_map is not None \
                and self.view.perf_map.lookup(addr) is not None
        ranges = md.exec_ranges()
        if ranges is not None:
            return any(lo <= addr < hi for lo, hi in ranges)
        return True

    def jit_code(self, addr: int) -> bool:
        """In executable memory outside every module (code a JIT compiler generated): by the
        dump's memory map, else by the process's perf map."""
        return addr >= 4096 and self.module(addr) is None and self.executable(addr)

    def plausible_return(self, addr: int) -> bool:
        """Inside an executable range of a module, and right after a call when checkable."""
        if addr < 4096:
            return False
        key = (addr, True)
        hit = self._ret_cache.get(key)
        if hit is not None:
            return hit
        ok = False
        md = self.module(addr)
        if md is not None and self.executable(addr):
            ok = True
            n = self.spec.call_window
            code = md.read_code(addr - n, n)
            if code is None:
                code = self.view.read(addr - n, n)  # module memory in the dump (full dumps)
            if code is not None:
                ok = self.spec.is_call_before(code) or (
                    isinstance(self.spec, Amd64) and _amd64_call_with_rex(code))
        self._ret_cache[key] = ok
        return ok

    # symbols -----------------------------------------------------------------------------

    def symbolize(self, frame: Frame) -> None:
        key = (frame.pc, frame.exact)
        hit = self._sym_cache.get(key)
        if hit is None:
            lookup = frame.lookup_pc
            md = self.module(lookup)
            sym = fileline = None
            jit = False
            if md is not None:
                sym = md.symbol(lookup)
                fileline = md.line(lookup)
            elif self.view.perf_map is not None:
                entry = self.view.perf_map.lookup(lookup)
                if entry is not None:
                    sym, jit = Symbol(entry.name, entry.start), True
            hit = (md, sym, fileline, jit)
            self._sym_cache[key] = hit
        frame.module, frame.symbol, fl, frame.jit = hit
        if fl is not None:
            frame.file, frame.line = fl

    # walking -----------------------------------------------------------------------------

    def walk(self, thread: Thread, crashed: bool = False,
             max_frames: int = MAX_FRAMES) -> ThreadStack:
        out = ThreadStack(thread.tid, thread.name, [], crashed)
        if thread.context is None:
            out.note = "no CPU context in the dump"
            return out
        try:
            regs = self.spec.regs(thread.context)
        except (AttributeError, TypeError):
            out.note = "CPU context of another architecture"
            return out
        sp = self.spec
        frame = Frame(0, regs[sp.pc], regs[sp.sp], TRUST_CONTEXT, regs)
        try:
            self.symbolize(frame)
        except Exception:  # noqa: BLE001
            pass
        out.frames.append(frame)
        seen = {(frame.pc, frame.sp)}
        while len(out.frames) < max_frames:
            try:
                caller = self.unwind(frame, thread)
            except _End:
                break
            except Exception as exc:  # noqa: BLE001 - one odd frame must not end the report
                out.note = f"unwinding stopped: {type(exc).__name__}: {exc}"
                break
            if caller is None:
                break
            key = (caller.pc, caller.sp)
            if key in seen:
                out.note = "the stack loops"
                break
            seen.add(key)
            try:
                self.symbolize(caller)
            except Exception:  # noqa: BLE001 - unreadable symbols: the frame stays unnamed
                pass
            out.frames.append(caller)
            frame = caller
        else:
            out.note = f"stopped after {max_frames} frames"
        return out

    def unwind(self, frame: Frame, thread: Thread) -> Optional[Frame]:
        md = self.module(frame.lookup_pc)
        if md is not None:
            got = self._by_dwarf_cfi(frame, thread, md)
            if got is None:
                got = self._by_breakpad_cfi(frame, thread, md)
            if got is not None:
                if got is _STOP:
                    # Go marks the functions that switch stacks as outermost for its own
                    # unwinder; the thread goes on below them on the other stack, which
                    # Breakpad and rust-minidump reach by scanning: so do we.
                    if _switches_go_stack(md, frame.lookup_pc):
                        return self._by_scan(frame, thread)
                    return None
                return got
        if frame.index == 0 and not self.executable(frame.pc):
            # A call through a bad pointer (pc 0, data): the caller's return address is on
            # top of the stack (x86-64) or in the link register (ARM64, tried first by the
            # frame-pointer rule), and the frame pointer still describes the caller's caller.
            got = None if isinstance(self.spec, Arm64) else self._by_scan(frame, thread)
            if got is not None:
                return got
        got = self._by_frame_pointer(frame, thread)
        if got is not None:
            return got
        return self._by_scan(frame, thread)

    def _accept(self, frame: Frame, caller: Frame, strict_sp: bool = True) -> bool:
        if caller.pc < 4096:
            return False
        if caller.sp < frame.sp or (strict_sp and caller.sp == frame.sp):
            return False
        return True

    def _by_dwarf_cfi(self, frame: Frame, thread: Thread, md: ModuleDebug):
        hit = md.cfi_row(frame.lookup_pc)
        if hit is None:
            return None
        _, row = hit
        try:
            regs = self._apply_row(row, frame.regs, thread)
        except _End:
            return _STOP
        except (ExprError, KeyError, cfimod.CfiError):
            return None
        caller = Frame(frame.index + 1, regs[self.spec.pc], regs[self.spec.sp], TRUST_CFI, regs,
                       exact=row.signal_frame)
        frame.signal_frame = row.signal_frame
        return self._check_cfi_caller(frame, caller)

    def _check_cfi_caller(self, frame: Frame, caller: Frame):
        """A CFI result: the caller, _STOP at a zero return address (the conventional
        outermost frame), None when implausible (try the frame pointer and the scan)."""
        if caller.pc == 0:
            return _STOP
        if not self._accept(frame, caller, strict_sp=False) or \
                (caller.sp == frame.sp and caller.pc == frame.pc):
            return None
        if self.module(caller.lookup_pc) is None and not self.executable(caller.pc):
            return None
        return caller

    def _apply_row(self, row: Row, regs: dict[int, int], thread: Thread) -> dict[int, int]:
        read = lambda a: self.read_word(a, thread)  # noqa: E731
        spec = self.spec
        if row.cfa_expr is not None:
            cfa = cfimod.evaluate(row.cfa_expr, regs, read)
        else:
            if row.cfa_reg is None or row.cfa_reg not in regs:
                raise KeyError("CFA register unknown")
            cfa = (regs[row.cfa_reg] + row.cfa_offset) & MASK64
        ra_rule = row.regs.get(row.ra_reg)
        if ra_rule is None or ra_rule.kind == cfimod.UNDEFINED:
            if ra_rule is not None or row.ra_reg not in spec.callee_saved:
                raise _End()
        out: dict[int, int] = {}
        for r in spec.callee_saved:
            if r in regs and r not in row.regs:
                out[r] = regs[r]
        for r, rule in row.regs.items():
            k = rule.kind
            if k == cfimod.UNDEFINED:
                continue
            if k == cfimod.SAME:
                if r in regs:
                    out[r] = regs[r]
            elif k == cfimod.OFFSET:
                v = read((cfa + rule.arg) & MASK64)
                if v is None:
                    if r == row.ra_reg:
                        raise KeyError("return address unreadable")
                    continue
                out[r] = v
            elif k == cfimod.VAL_OFFSET:
                out[r] = (cfa + rule.arg) & MASK64
            elif k == cfimod.REGISTER:
                if rule.arg in regs:
                    out[r] = regs[rule.arg]
            elif k == cfimod.EXPRESSION:
                try:
                    v = read(cfimod.evaluate(rule.arg, regs, read, initial=cfa))
                except ExprError:
                    v = None
                if v is not None:
                    out[r] = v
            elif k == cfimod.VAL_EXPRESSION:
                try:
                    out[r] = cfimod.evaluate(rule.arg, regs, read, initial=cfa)
                except ExprError:
                    pass
        if row.ra_reg not in out:
            raise KeyError("no return address")
        if spec.sp not in row.regs or spec.sp not in out:
            out[spec.sp] = cfa
        out[spec.pc] = spec.strip(out[row.ra_reg])
        if spec.ra != spec.pc:
            out[row.ra_reg] = out[spec.pc]
        return out

    def _by_breakpad_cfi(self, frame: Frame, thread: Thread, md: ModuleDebug):
        rules = md.breakpad_rules(frame.lookup_pc)
        if not rules or ".cfa" not in rules or ".ra" not in rules:
            return None
        spec = self.spec
        read = lambda a: self.read_word(a, thread)  # noqa: E731
        values = {name: frame.regs[num] for name, num in spec.breakpad_regs.items()
                  if num in frame.regs}
        try:
            cfa = evaluate_postfix(rules[".cfa"], values, read)
            values[".cfa"] = cfa
            ra = evaluate_postfix(rules[".ra"], values, read)
        except PostfixError:
            return None
        out: dict[int, int] = {r: frame.regs[r] for r in spec.callee_saved if r in frame.regs}
        for name, expr in rules.items():
            if name in (".cfa", ".ra"):
                continue
            num = spec.breakpad_regs.get(name, spec.breakpad_regs.get("$" + name))
            if num is None:
                continue
            try:
                out[num] = evaluate_postfix(expr, values, read)
            except PostfixError:
                out.pop(num, None)
        # As Breakpad: .cfa and .ra give the caller's sp and pc unless a rule recovers
        # them explicitly (ARM64 ``sp:``, ``pc:``).
        out.setdefault(spec.sp, cfa)
        out[spec.pc] = spec.strip(out.get(spec.pc, ra))
        if spec.ra != spec.pc:
            out[spec.ra] = out[spec.pc]
        caller = Frame(frame.index + 1, out[spec.pc], out[spec.sp], TRUST_CFI, out,
                       exact=False)
        return self._check_cfi_caller(frame, caller)

    def _by_frame_pointer(self, frame: Frame, thread: Thread) -> Optional[Frame]:
        spec = self.spec
        regs = frame.regs
        fp, sp = regs.get(spec.fp), regs.get(spec.sp)
        if sp is None:
            return None
        if isinstance(spec, Arm64) and frame.index == 0 and spec.ra in regs:
            leaf = self._arm64_leaf(frame)
            if leaf is not None:
                return leaf
        if fp is None or fp == 0 or fp % 8 or fp < sp or fp - sp > (64 << 20):
            return None
        caller_fp = self.read_word(fp, thread)
        ret = self.read_word(fp + 8, thread)
        if caller_fp is None or ret is None:
            return None
        ret = spec.strip(ret)
        if not self.plausible_return(ret):
            if not self.jit_code(ret):
                return None
            # A return into code outside every module (JIT-compiled code): no call
            # instruction to check, so Breakpad's frame-record invariants must hold: the
            # caller's frame pointer lies above the caller's stack pointer and in captured
            # memory (a chain of frame records going up the stack).
            if not _canonical(ret) or caller_fp < fp + 16 \
                    or self.read_word(caller_fp, thread) is None:
                return None
        out = {r: regs[r] for r in spec.callee_saved if r in regs}
        out[spec.fp] = caller_fp
        out[spec.sp] = fp + 16
        out[spec.pc] = ret
        if spec.ra != spec.pc:
            out[spec.ra] = ret
        caller = Frame(frame.index + 1, ret, fp + 16, TRUST_FP, out, exact=False)
        return caller if self._accept(frame, caller) else None

    def _arm64_leaf(self, frame: Frame) -> Optional[Frame]:
        """Frame 0 without CFI on ARM64: a leaf function returns to the link register."""
        spec = self.spec
        lr = spec.strip(frame.regs[spec.ra])
        if not self.plausible_return(lr):
            return None
        here = self.module(frame.pc)
        if here is not None:
            s1, s2 = here.symbol(frame.pc), here.symbol(lr - 4)
            if s1 is not None and s2 is not None and s1.start == s2.start:
                return None  # lr is stale: it points back into this same function
        fp = frame.regs.get(spec.fp)
        if fp is not None and fp >= frame.regs[spec.sp]:
            saved = self.read_word(fp + 8)
            if saved is not None and spec.strip(saved) == lr:
                return None  # the frame record already holds it: use the fp chain
        out = dict(frame.regs)
        out[spec.pc] = lr
        return Frame(frame.index + 1, lr, frame.sp, TRUST_FP, out, exact=False)

    def _by_scan(self, frame: Frame, thread: Thread) -> Optional[Frame]:
        spec = self.spec
        sp = frame.regs.get(spec.sp)
        if sp is None:
            return None
        words = SCAN_WORDS_CONTEXT if frame.index == 0 else SCAN_WORDS
        fp = frame.regs.get(spec.fp)
        for i in range(words):
            addr = sp + i * 8
            v = self.read_word(addr, thread)
            if v is None:
                return None
            v = spec.strip(v)
            if v == frame.pc and i == 0 and frame.index == 0:
                continue
            if not self.plausible_return(v):
                continue
            out = {r: frame.regs[r] for r in spec.callee_saved if r in frame.regs}
            caller_sp = addr + 8
            if isinstance(spec, Amd64) and fp is not None and fp == addr - 8:
                saved = self.read_word(fp, thread)
                if saved is not None:
                    out[spec.fp] = saved  # `push rbp` just below the return address
            out[spec.sp] = caller_sp
            out[spec.pc] = v
            if spec.ra != spec.pc:
                out[spec.ra] = v
            caller = Frame(frame.index + 1, v, caller_sp, TRUST_SCAN, out, exact=False)
            if self._accept(frame, caller):
                return caller
        return None


_STOP = object()

# Go runtime functions that move a goroutine to the system (g0) stack or back.
_GO_STACK_SWITCHES = ("runtime.systemstack", "runtime.mcall", "runtime.asmcgocall",
                      "runtime.morestack", "runtime.cgocallback")


def _switches_go_stack(md, pc: int) -> bool:
    sym = md.symbol(pc)
    return sym is not None and sym.name.startswith(_GO_STACK_SWITCHES)


def _canonical(addr: int) -> bool:
    """Not in the hole between the lower and upper halves of a 48-bit address space."""
    return not (0x7FFF_FFFF_FFFF < addr < 0xFFFF_8000_0000_0000)


def walk_process(view: Union[Snapshot, SnapshotIndex], options: Optional[SymbolOptions] = None,
                 tids: Optional[set[int]] = None,
                 max_frames: int = MAX_FRAMES) -> list[ThreadStack]:
    """Every thread's stack (or those in ``tids``), crashing thread first. ``view``: a
    Snapshot, or the index of one (to reuse it across walks)."""
    if isinstance(view, Snapshot):
        view = SnapshotIndex(view)
    options = options or SymbolOptions()
    spec = arch_spec(view)
    exception = view.snapshot.exception
    crashed_tid = exception.thread_id if exception is not None else None
    order = sorted(view.snapshot.threads, key=lambda t: t.tid != crashed_tid)
    out = []
    walker = Walker(view, options, spec) if spec is not None else None
    for t in order:
        if tids is not None and t.tid not in tids:
            continue
        crashed = t.tid == crashed_tid
        if walker is None:
            out.append(ThreadStack(t.tid, t.name, [], crashed,
                                   note=f"no unwinder for {view.arch.value if view.arch else 'unknown'}"))
            continue
        out.append(walker.walk(t, crashed, max_frames))
    return out
