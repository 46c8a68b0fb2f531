"""DWARF call frame information: ``.eh_frame`` and ``.debug_frame`` parsing and evaluation.

Only the CIE/FDE headers are parsed when a section is loaded (a sorted index of FDE
address ranges); an FDE's instructions are interpreted when a program counter inside it is
unwound, and the resulting row is cached. The interpreter follows DWARF 5 section 6.4
plus the GNU extensions GCC and glibc emit (``DW_CFA_GNU_args_size``,
``DW_CFA_GNU_negative_offset_extended``, the ``S`` signal-frame augmentation).

pyelftools reads the sections (including compressed ones); it has its own CFI decoder,
but that one parses every entry up front (half a second for libc) and rejects
``DW_CFA_GNU_args_size`` in decoded tables, so the interpreter is ours.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

MASK64 = (1 << 64) - 1

# Register rules (DWARF 5, 6.4.1).
UNDEFINED = "undefined"
SAME = "same"
OFFSET = "offset"  # saved at CFA + n
VAL_OFFSET = "val_offset"  # value is CFA + n
REGISTER = "register"  # in another register
EXPRESSION = "expression"  # saved at the address the expression computes
VAL_EXPRESSION = "val_expression"  # value is what the expression computes


class CfiError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    kind: str
    arg: Any = None  # by kind: an offset or register number (int), an expression (bytes)


@dataclass
class Row:
    """The unwind rules in force at one program counter."""

    cfa_reg: Optional[int] = None
    cfa_offset: int = 0
    cfa_expr: Optional[bytes] = None
    regs: dict[int, Rule] = field(default_factory=dict)
    ra_reg: int = 16
    signal_frame: bool = False

    def copy(self) -> "Row":
        return Row(self.cfa_reg, self.cfa_offset, self.cfa_expr, dict(self.regs), self.ra_reg,
                   self.signal_frame)


@dataclass
class Cie:
    offset: int
    version: int
    augmentation: str
    code_align: int
    data_align: int
    ra_reg: int
    fde_encoding: int
    address_size: int
    signal_frame: bool
    has_aug_data: bool
    instructions: bytes
    initial: Optional[Row] = None


@dataclass(frozen=True)
class Fde:
    start: int
    end: int
    cie: Cie
    instructions_at: int
    instructions_end: int


# -- primitive readers ------------------------------------------------------------------------


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def read_sleb(data: bytes, pos: int) -> tuple[int, int]:
    """The ULEB128 bits, negative when the last byte's bit 6 (the value's top bit) is set."""
    result, end = read_uleb(data, pos)
    bits = 7 * (end - pos)
    if result >> (bits - 1) & 1:
        result -= 1 << bits
    return result, end


_FIXED = {0x02: ("<H", 2), 0x03: ("<I", 4), 0x04: ("<Q", 8),
          0x0A: ("<h", 2), 0x0B: ("<i", 4), 0x0C: ("<q", 8)}

DW_EH_PE_omit = 0xFF


def read_encoded(data: bytes, pos: int, enc: int, address_size: int, section_addr: int,
                 datarel_base: int = 0) -> tuple[int, int]:
    """A pointer in DW_EH_PE encoding ``enc`` at ``pos``; pcrel uses the section address."""
    if enc == DW_EH_PE_omit:
        return 0, pos
    fmt = enc & 0x0F
    app = enc & 0x70
    start = pos
    if fmt == 0x00:  # absptr
        if address_size == 8:
            (value,) = struct.unpack_from("<Q", data, pos)
        else:
            (value,) = struct.unpack_from("<I", data, pos)
        pos += address_size
    elif fmt == 0x01:
        value, pos = read_uleb(data, pos)
    elif fmt == 0x09:
        value, pos = read_sleb(data, pos)
    elif fmt in _FIXED:
        f, n = _FIXED[fmt]
        (value,) = struct.unpack_from(f, data, pos)
        pos += n
    else:
        raise CfiError(f"unknown pointer encoding 0x{enc:02x}")
    if app == 0x10:  # pcrel
        value += section_addr + start
    elif app == 0x30:  # datarel
        value += datarel_base
    return value & MASK64, pos


# -- the section index ------------------------------------------------------------------------


class CfiSection:
    """FDE index of one ``.eh_frame`` (``is_eh``) or ``.debug_frame`` section."""

    def __init__(self, data: bytes, section_addr: int, is_eh: bool, address_size: int = 8,
                 name: str = ""):
        self.data = data
        self.addr = section_addr
        self.is_eh = is_eh
        self.address_size = address_size
        self.name = name or (".eh_frame" if is_eh else ".debug_frame")
        self._cies: dict[int, Cie] = {}
        self._rows: dict[int, Optional[tuple[Row, Fde]]] = {}
        fdes: list[Fde] = []
        pos = 0
        n = len(data)
        while pos + 4 <= n:
            (length,) = struct.unpack_from("<I", data, pos)
            offsize = 4
            body = pos + 4
            if length == 0:
                if is_eh:
                    break  # terminator
                pos = body
                continue
            if length == 0xFFFFFFFF:
                (length,) = struct.unpack_from("<Q", data, body)
                body += 8
                offsize = 8
            end = body + length
            if end > n or length < offsize:
                break
            try:
                fde = self._entry(pos, body, end, offsize)
            except (CfiError, IndexError, struct.error):
                fde = None
            if fde is not None and fde.end > fde.start:
                fdes.append(fde)
            pos = end
        fdes.sort(key=lambda f: f.start)
        self.fdes = fdes
        self._starts = [f.start for f in fdes]

    def _entry(self, pos: int, body: int, end: int, offsize: int) -> Optional[Fde]:
        data = self.data
        ident = int.from_bytes(data[body:body + offsize], "little")
        if self.is_eh:
            is_cie = ident == 0
        else:
            is_cie = ident == (0xFFFFFFFF if offsize == 4 else 0xFFFFFFFFFFFFFFFF)
        if is_cie:
            return None
        cie_off = (body - ident) if self.is_eh else ident
        cie = self._cie(cie_off)
        p = body + offsize
        start, p = read_encoded(data, p, cie.fde_encoding, cie.address_size, self.addr)
        size, p = read_encoded(data, p, cie.fde_encoding & 0x0F, cie.address_size, self.addr)
        if cie.has_aug_data:
            auglen, p = read_uleb(data, p)
            p += auglen
        return Fde(start, (start + size) & MASK64, cie, p, end)

    def _cie(self, offset: int) -> Cie:
        cached = self._cies.get(offset)
        if cached is not None:
            return cached
        data = self.data
        (length,) = struct.unpack_from("<I", data, offset)
        body = offset + 4
        offsize = 4
        if length == 0xFFFFFFFF:
            (length,) = struct.unpack_from("<Q", data, body)
            body += 8
            offsize = 8
        end = body + length
        if end > len(data):
            raise CfiError(f"CIE at 0x{offset:x} runs past the section")
        p = body + offsize
        version = data[p]
        p += 1
        nul = data.index(b"\0", p)
        aug = data[p:nul].decode("ascii", "replace")
        p = nul + 1
        address_size = self.address_size
        if "eh" in aug:
            p += address_size
        if version >= 4:
            address_size = data[p]
            p += 2  # address_size, segment_size
        code_align, p = read_uleb(data, p)
        data_align, p = read_sleb(data, p)
        if version == 1:
            ra = data[p]
            p += 1
        else:
            ra, p = read_uleb(data, p)
        fde_enc = 0x00  # absptr
        signal = False
        has_aug = aug.startswith("z")
        if has_aug:
            auglen, p = read_uleb(data, p)
            aug_end = p + auglen
            q = p
            for ch in aug[1:]:
                if ch == "L":
                    q += 1
                elif ch == "R":
                    fde_enc = data[q]
                    q += 1
                elif ch == "P":
                    penc = data[q]
                    _, q = read_encoded(data, q + 1, penc & 0x7F, address_size, self.addr)
                elif ch == "S":
                    signal = True
                elif ch in "BG":
                    pass
                else:
                    break
            p = aug_end
        elif aug not in ("", "eh"):
            raise CfiError(f"unsupported CIE augmentation {aug!r}")
        cie = Cie(offset, version, aug, code_align, data_align, ra, fde_enc, address_size,
                  signal, has_aug, bytes(data[p:end]))
        self._cies[offset] = cie
        return cie

    # -- lookup -------------------------------------------------------------------------------

    def find(self, pc: int) -> Optional[Fde]:
        i = bisect.bisect_right(self._starts, pc) - 1
        # FDEs do not nest; a few may overlap (discarded sections): look back a little.
        for j in range(i, max(-1, i - 4), -1):
            f = self.fdes[j]
            if f.start <= pc < f.end:
                return f
        return None

    def row(self, pc: int) -> Optional[tuple[Row, Fde]]:
        """The rules at ``pc`` (a link-time address), or None when no FDE covers it."""
        if pc in self._rows:
            return self._rows[pc]
        fde = self.find(pc)
        result = None
        if fde is not None:
            try:
                result = (execute_fde(self, fde, pc), fde)
            except (CfiError, IndexError, struct.error):
                result = None
        if len(self._rows) > 100_000:
            self._rows.clear()
        self._rows[pc] = result
        return result


# -- the interpreter ----------------------------------------------------------------------


def _initial_row(section: CfiSection, cie: Cie) -> Row:
    if cie.initial is None:
        row = Row(ra_reg=cie.ra_reg, signal_frame=cie.signal_frame)
        _run(section, cie, cie.instructions, 0, len(cie.instructions), row, None, 0, None)
        cie.initial = row
    return cie.initial


def execute_fde(section: CfiSection, fde: Fde, pc: int) -> Row:
    initial = _initial_row(section, fde.cie)
    row = initial.copy()
    _run(section, fde.cie, section.data, fde.instructions_at, fde.instructions_end, row,
         initial, fde.start, pc)
    return row


def _run(section: CfiSection, cie: Cie, data: bytes, pos: int, end: int, row: Row,
         initial: Optional[Row], loc: int, target: Optional[int]) -> None:
    """Execute CFA instructions until ``end`` or until the location passes ``target``."""
    stack: list[Row] = []
    ca, da = cie.code_align, cie.data_align
    while pos < end:
        op = data[pos]
        pos += 1
        hi, lo = op & 0xC0, op & 0x3F
        if hi == 0x40:  # advance_loc
            loc += lo * ca
            if target is not None and loc > target:
                return
            continue
        if hi == 0x80:  # offset
            off, pos = read_uleb(data, pos)
            row.regs[lo] = Rule(OFFSET, off * da)
            continue
        if hi == 0xC0:  # restore
            _restore(row, initial, lo)
            continue
        if op == 0x00:  # nop
            continue
        if op == 0x01:  # set_loc
            loc, pos = read_encoded(data, pos, cie.fde_encoding, cie.address_size, section.addr)
            if target is not None and loc > target:
                return
        elif op in (0x02, 0x03, 0x04):  # advance_loc1/2/4
            n = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            delta = int.from_bytes(data[pos:pos + n], "little")
            pos += n
            loc += delta * ca
            if target is not None and loc > target:
                return
        elif op in (0x05, 0x11, 0x14, 0x15):  # offset_extended(_sf), val_offset(_sf)
            reg, pos = read_uleb(data, pos)
            off, pos = (read_sleb if op in (0x11, 0x15) else read_uleb)(data, pos)
            row.regs[reg] = Rule(VAL_OFFSET if op >= 0x14 else OFFSET, off * da)
        elif op == 0x06:  # restore_extended
            reg, pos = read_uleb(data, pos)
            _restore(row, initial, reg)
        elif op == 0x07:  # undefined
            reg, pos = read_uleb(data, pos)
            row.regs[reg] = Rule(UNDEFINED)
        elif op == 0x08:  # same_value
            reg, pos = read_uleb(data, pos)
            row.regs[reg] = Rule(SAME)
        elif op == 0x09:  # register
            reg, pos = read_uleb(data, pos)
            reg2, pos = read_uleb(data, pos)
            row.regs[reg] = Rule(REGISTER, reg2)
        elif op == 0x0A:  # remember_state
            stack.append(row.copy())
        elif op == 0x0B:  # restore_state
            if stack:
                saved = stack.pop()
                row.cfa_reg, row.cfa_offset, row.cfa_expr = saved.cfa_reg, saved.cfa_offset, saved.cfa_expr
                row.regs = saved.regs
        elif op == 0x0C:  # def_cfa
            reg, pos = read_uleb(data, pos)
            off, pos = read_uleb(data, pos)
            row.cfa_reg, row.cfa_offset, row.cfa_expr = reg, off, None
        elif op == 0x0D:  # def_cfa_register
            reg, pos = read_uleb(data, pos)
            row.cfa_reg, row.cfa_expr = reg, None
        elif op == 0x0E:  # def_cfa_offset
            off, pos = read_uleb(data, pos)
            row.cfa_offset = off
        elif op == 0x0F:  # def_cfa_expression
            n, pos = read_uleb(data, pos)
            row.cfa_expr, row.cfa_reg = bytes(data[pos:pos + n]), None
            pos += n
        elif op in (0x10, 0x16):  # expression, val_expression
            reg, pos = read_uleb(data, pos)
            n, pos = read_uleb(data, pos)
            row.regs[reg] = Rule(EXPRESSION if op == 0x10 else VAL_EXPRESSION,
                                 bytes(data[pos:pos + n]))
            pos += n
        elif op == 0x12:  # def_cfa_sf
            reg, pos = read_uleb(data, pos)
            off, pos = read_sleb(data, pos)
            row.cfa_reg, row.cfa_offset, row.cfa_expr = reg, off * da, None
        elif op == 0x13:  # def_cfa_offset_sf
            off, pos = read_sleb(data, pos)
            row.cfa_offset = off * da
        elif op == 0x2D:  # GNU_window_save / AARCH64_negate_ra_state: PAC bits are masked
            pass
        elif op == 0x2E:  # GNU_args_size
            _, pos = read_uleb(data, pos)
        elif op == 0x2F:  # GNU_negative_offset_extended
            reg, pos = read_uleb(data, pos)
            off, pos = read_uleb(data, pos)
            row.regs[reg] = Rule(OFFSET, -off * da)
        else:
            raise CfiError(f"unknown CFA instruction 0x{op:02x}")


def _restore(row: Row, initial: Optional[Row], reg: int) -> None:
    if initial is not None and reg in initial.regs:
        row.regs[reg] = initial.regs[reg]
    else:
        row.regs.pop(reg, None)


# -- DWARF expressions ------------------------------------------------------------------------

ReadWord = Callable[[int], Optional[int]]


class ExprError(ValueError):
    pass


def _to_signed(v: int) -> int:
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def evaluate(expr: bytes, regs: dict[int, int], read: ReadWord, initial: Optional[int] = None,
             address_size: int = 8) -> int:
    """Evaluate a DWARF expression (the subset CFI uses); raises ExprError when it cannot."""
    stack: list[int] = [] if initial is None else [initial & MASK64]
    pos = 0
    steps = 0
    n = len(expr)

    def reg(r: int) -> int:
        if r not in regs:
            raise ExprError(f"register {r} is not known")
        return regs[r]

    def pop() -> int:
        if not stack:
            raise ExprError("stack underflow")
        return stack.pop()

    def deref(addr: int, size: int = address_size) -> int:
        v = read(addr & MASK64)
        if v is None:
            raise ExprError(f"cannot read 0x{addr & MASK64:x}")
        return v & ((1 << (8 * size)) - 1)

    while pos < n:
        steps += 1
        if steps > 10_000:
            raise ExprError("expression does not terminate")
        op = expr[pos]
        pos += 1
        if 0x30 <= op <= 0x4F:
            stack.append(op - 0x30)
        elif 0x50 <= op <= 0x6F:
            stack.append(reg(op - 0x50))
        elif 0x70 <= op <= 0x8F:
            off, pos = read_sleb(expr, pos)
            stack.append((reg(op - 0x70) + off) & MASK64)
        elif op == 0x03:  # addr
            stack.append(int.from_bytes(expr[pos:pos + address_size], "little"))
            pos += address_size
        elif op == 0x06:
            stack.append(deref(pop()))
        elif op in (0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F):
            size = {0x08: 1, 0x09: 1, 0x0A: 2, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8, 0x0F: 8}[op]
            v = int.from_bytes(expr[pos:pos + size], "little", signed=bool(op & 1))
            pos += size
            stack.append(v & MASK64)
        elif op == 0x10:
            v, pos = read_uleb(expr, pos)
            stack.append(v & MASK64)
        elif op == 0x11:
            v, pos = read_sleb(expr, pos)
            stack.append(v & MASK64)
        elif op == 0x12:
            v = pop()
            stack += [v, v]
        elif op == 0x13:
            pop()
        elif op == 0x14:
            if len(stack) < 2:
                raise ExprError("stack underflow")
            stack.append(stack[-2])
        elif op == 0x15:
            i = expr[pos]
            pos += 1
            if i >= len(stack):
                raise ExprError("pick out of range")
            stack.append(stack[-1 - i])
        elif op == 0x16:
            a, b = pop(), pop()
            stack += [a, b]
        elif op == 0x17:
            a, b, c = pop(), pop(), pop()
            stack += [a, c, b]
        elif op == 0x19:
            stack.append(abs(_to_signed(pop())) & MASK64)
        elif op in (0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
                    0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E):
            b, a = pop(), pop()
            sa, sb = _to_signed(a), _to_signed(b)
            if op == 0x1A:
                v = a & b
            elif op == 0x1B:
                if sb == 0:
                    raise ExprError("division by zero")
                v = int(sa / sb)
            elif op == 0x1C:
                v = a - b
            elif op == 0x1D:
                if b == 0:
                    raise ExprError("division by zero")
                v = a % b
            elif op == 0x1E:
                v = a * b
            elif op == 0x21:
                v = a | b
            elif op == 0x22:
                v = a + b
            elif op == 0x24:
                v = a << (b & 63)
            elif op == 0x25:
                v = a >> (b & 63)
            elif op == 0x26:
                v = sa >> (b & 63)
            elif op == 0x27:
                v = a ^ b
            else:
                v = int({0x29: sa == sb, 0x2A: sa >= sb, 0x2B: sa > sb, 0x2C: sa <= sb,
                         0x2D: sa < sb, 0x2E: sa != sb}[op])
            stack.append(v & MASK64)
        elif op == 0x1F:
            stack.append(-pop() & MASK64)
        elif op == 0x20:
            stack.append(~pop() & MASK64)
        elif op == 0x23:
            v, pos = read_uleb(expr, pos)
            stack.append((pop() + v) & MASK64)
        elif op in (0x28, 0x2F):  # bra, skip
            (off,) = struct.unpack_from("<h", expr, pos)
            pos += 2
            if op == 0x2F or pop() != 0:
                pos += off
                if not 0 <= pos <= n:
                    raise ExprError("branch out of the expression")
        elif op == 0x90:  # regx
            r, pos = read_uleb(expr, pos)
            stack.append(reg(r))
        elif op == 0x92:  # bregx
            r, pos = read_uleb(expr, pos)
            off, pos = read_sleb(expr, pos)
            stack.append((reg(r) + off) & MASK64)
        elif op == 0x94:  # deref_size
            size = expr[pos]
            pos += 1
            stack.append(deref(pop(), size))
        elif op == 0x96:  # nop
            pass
        else:
            raise ExprError(f"unsupported DWARF operation 0x{op:02x}")
    if not stack:
        raise ExprError("empty result")
    return stack[-1]
