"""Synthetic processes for unit tests of the stack walker (tests/test_unwind_*.py).

As rust-minidump's ``minidump-unwind/src/amd64_unittest.rs`` does, each test builds the stack
in the test, word by word, over a known base (:class:`StackBuilder`), gives the walker a
module whose unwind rules it wrote itself, and checks each walked frame's pc, sp, registers
and trust. The module's rules come in the two forms the walker reads:

- ``dwarf``: a small ELF file written here (:func:`elf_image`) with ``.text`` and an
  ``.eh_frame`` assembled from DWARF CFA instructions (:func:`eh_frame`), found through
  the module path recorded in the snapshot and matched by its build id;
- ``breakpad``: a Breakpad ``.sym`` file with ``STACK CFI`` records in a symbol store, the
  module's code (the same ELF bytes) in the snapshot's memory.

:func:`walk` is the one place that hands a snapshot to the walker.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import pytest

from generate_dump.minidump.codeview import debug_id
from generate_dump.snapshot import (
    Arch, CpuInfo, ElfBuildId, MemoryRange, MemoryRegion, Module, OS, Process, RegionKind,
    Snapshot, SystemInfo, Thread,
)
from generate_dump.unwind import SymbolOptions, ThreadStack, walk_process
from generate_dump.unwind.debug_info import clear_caches
from generate_dump.unwind.walker import MAX_FRAMES

MOD = 0x7400_C000_0000  # the module with unwind rules (rust-minidump's module1)
MOD2 = 0x7500_B000_0000  # a module with no files at all: its code only in the dump's memory
MOD_SIZE = 0x10000  # r-x; a rw- data page follows, still inside the module
DATA = MOD + MOD_SIZE
HEAP = 0x5600_0000_0000  # readable, writable, not executable, outside every module
STACK = 0x7FFD_0000_0000  # lowest captured stack address
STACK_SIZE = 0x2000
TEXT = 0x1000  # .text starts here (module offset); headers below it
TEXT_END = 0xA000

# Module offsets right after a call instruction: the return addresses tests may use.
CALL_RETURNS = (0x1060, 0x2040, 0x2080, 0x3050, 0x5510, 0x6020, 0x7030, 0x8040, 0x9010)
NOT_AFTER_CALL = 0x2100  # module code, but the instruction before it is no call

BUILD_ID = bytes.fromhex("c0ffee00" * 5)
BUILD_ID2 = bytes.fromhex("0badf00d" * 5)

E8_CALL = b"\xe8\x00\x00\x00\x00"  # call rel32
BL = (0x94000000 | 0x40).to_bytes(4, "little")  # bl .+0x100
X86_NOP = b"\x90"
ARM64_NOP = (0xD503201F).to_bytes(4, "little")


# -- the stack ------------------------------------------------------------------------------


class StackBuilder:
    """Stack memory from a known base upward: words, labels naming addresses, gaps.

    A word may be a label's name, resolved when the stack is built (a frame pointer saved
    before the frame it points to is laid out)."""

    def __init__(self, base: int = STACK, size: int = STACK_SIZE):
        self.base = base
        self.size = size
        self.words: list[Union[int, str]] = []
        self.labels: dict[str, int] = {}

    @property
    def here(self) -> int:
        return self.base + 8 * len(self.words)

    def mark(self, name: str) -> "StackBuilder":
        self.labels[name] = self.here
        return self

    def push(self, *words: Union[int, str]) -> "StackBuilder":
        self.words.extend(words)
        return self

    def skip(self, nbytes: int, fill: int = 0) -> "StackBuilder":
        assert nbytes % 8 == 0
        self.words.extend([fill] * (nbytes // 8))
        return self

    def __getitem__(self, label: str) -> int:
        return self.labels[label]

    def memory(self) -> MemoryRange:
        words = [self.labels[w] if isinstance(w, str) else w for w in self.words]
        assert len(words) * 8 <= self.size, "the stack outgrew its memory"
        words += [0] * (self.size // 8 - len(words))
        return MemoryRange(self.base, b"".join(w.to_bytes(8, "little") for w in words))


# -- DWARF CFI ------------------------------------------------------------------------------


def uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
        out.append(b | (0 if done else 0x80))
        if done:
            return bytes(out)


DATA_ALIGN = -8


class Cfa:
    """DWARF CFA instructions (DWARF 5, 6.4.2), offsets in bytes (factored here)."""

    @staticmethod
    def def_cfa(reg: int, off: int) -> bytes:
        return b"\x0c" + uleb(reg) + uleb(off)

    @staticmethod
    def def_cfa_offset(off: int) -> bytes:
        return b"\x0e" + uleb(off)

    @staticmethod
    def def_cfa_register(reg: int) -> bytes:
        return b"\x0d" + uleb(reg)

    @staticmethod
    def def_cfa_expression(expr: bytes) -> bytes:
        return b"\x0f" + uleb(len(expr)) + expr

    @staticmethod
    def offset(reg: int, off: int) -> bytes:
        """``reg`` saved at CFA + ``off`` (a negative multiple of 8)."""
        assert off % DATA_ALIGN == 0 and off <= 0
        return b"\x05" + uleb(reg) + uleb(off // DATA_ALIGN)

    @staticmethod
    def expression(reg: int, expr: bytes) -> bytes:
        """``reg`` saved at the address ``expr`` computes (the CFA pushed first)."""
        return b"\x10" + uleb(reg) + uleb(len(expr)) + expr

    @staticmethod
    def offset_sf(reg: int, off: int) -> bytes:
        """``reg`` saved at CFA + ``off`` (any multiple of 8)."""
        return b"\x11" + uleb(reg) + sleb(off // DATA_ALIGN)

    @staticmethod
    def val_offset(reg: int, off: int) -> bytes:
        """``reg``'s value is CFA + ``off``."""
        return b"\x15" + uleb(reg) + sleb(off // DATA_ALIGN)

    @staticmethod
    def register(reg: int, other: int) -> bytes:
        return b"\x09" + uleb(reg) + uleb(other)

    @staticmethod
    def same_value(reg: int) -> bytes:
        return b"\x08" + uleb(reg)

    @staticmethod
    def undefined(reg: int) -> bytes:
        return b"\x07" + uleb(reg)

    @staticmethod
    def advance(delta: int, code_align: int) -> bytes:
        n = delta // code_align
        return bytes([0x40 | n]) if n < 64 else b"\x02" + bytes([n])

    remember_state = b"\x0a"
    restore_state = b"\x0b"
    negate_ra_state = b"\x2d"  # AArch64 pointer authentication state toggle


@dataclass
class Fde:
    """One function's CFI: ``rows`` maps module offsets (``start`` and on) to the
    instructions that take effect there."""

    start: int
    size: int
    rows: dict[int, bytes] = field(default_factory=dict)


def _entry(body: bytes) -> bytes:
    body += b"\0" * (-(len(body) + 4) % 8)  # DW_CFA_nop padding
    return struct.pack("<I", len(body)) + body


def eh_frame(section_addr: int, ra_reg: int, code_align: int, initial: bytes,
             fdes: list[Fde], signal: bool = False) -> bytes:
    """An ``.eh_frame`` at link-time address ``section_addr``: one CIE (augmentation zR, or
    zRS for a signal frame; FDE addresses pc-relative sdata4, as GCC writes them), then
    one FDE per function."""
    aug = b"zRS" if signal else b"zR"
    cie = _entry(b"\0\0\0\0" + b"\x01" + aug + b"\0" + uleb(code_align) + sleb(DATA_ALIGN)
                 + bytes([ra_reg]) + uleb(1) + b"\x1b" + initial)
    out = bytearray(cie)
    for f in fdes:
        at = len(out)
        program = bytearray()
        loc = f.start
        for off in sorted(f.rows):
            if off > loc:
                program += Cfa.advance(off - loc, code_align)
                loc = off
            program += f.rows[off]
        pc_field = section_addr + at + 8
        body = (struct.pack("<I", at + 4) + struct.pack("<i", f.start - pc_field)
                + struct.pack("<i", f.size) + uleb(0) + bytes(program))
        out += _entry(body)
    return bytes(out + b"\0\0\0\0")


# -- ELF files ------------------------------------------------------------------------------

EM = {Arch.AMD64: 62, Arch.ARM64: 183}


def text_bytes(arch: Arch) -> bytes:
    """The module's code from offset 0 to TEXT_END: no-ops, a call before each of
    CALL_RETURNS."""
    nop, call = (X86_NOP, E8_CALL) if arch == Arch.AMD64 else (ARM64_NOP, BL)
    code = bytearray(nop * (TEXT_END // len(nop)))
    for ret in CALL_RETURNS:
        code[ret - len(call):ret] = call
    return bytes(code)


def elf_image(arch: Arch, build_id: bytes, cfi: Optional[bytes] = None, cfi_at: int = 0) -> bytes:
    """A shared object: one r-x PT_LOAD of the whole file at address 0, sections .text
    (TEXT..TEXT_END), .eh_frame (``cfi``, which must have been assembled for address
    ``cfi_at`` == TEXT_END), the GNU build-id note and .shstrtab."""
    code = text_bytes(arch)
    sections: list[tuple[str, int, int, bytes]] = [(".text", 1, 6, code[TEXT:])]  # PROGBITS, AX
    if cfi is not None:
        assert cfi_at == TEXT_END
        sections.append((".eh_frame", 1, 2, cfi))  # PROGBITS, A
    note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id
    sections.append((".note.gnu.build-id", 7, 2, note))
    names = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
    sections.append((".shstrtab", 3, 0, names))
    body = bytearray(code)  # .text in place, at its link-time address
    placed = []
    for name, kind, flags, data in sections:
        if name == ".text":
            at = TEXT
        else:
            body += b"\0" * (-len(body) % 8)
            at = len(body)
            body += data
        placed.append((names.index(name.encode() + b"\0"), kind, flags, at, data))
    body += b"\0" * (-len(body) % 8)
    shoff = len(body)
    shdrs = bytes(64)
    for name_off, kind, flags, at, data in placed:
        addr = at if flags & 2 else 0
        shdrs += struct.pack("<IIQQQQIIQQ", name_off, kind, flags, addr, at, len(data), 0, 0,
                             8 if kind != 3 else 1, 0)
    total = shoff + len(shdrs)
    ehdr = (b"\x7fELF\x02\x01\x01\0" + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", 3, EM[arch], 1, 0, 64, shoff, 0, 64, 56, 1, 64,
                          len(placed) + 1, len(placed)))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, shoff, shoff, 0x1000)  # PT_LOAD, R+X
    body[0:64 + 56] = ehdr + phdr
    assert len(body) + len(shdrs) == total
    return bytes(body) + shdrs


# -- the process ----------------------------------------------------------------------------


@dataclass
class SynthProcess:
    """What a test sets up besides the stack: modules, their files and the memory map."""

    arch: Arch
    tmp: Path
    modules: list[Module] = field(default_factory=list)
    memory: list[MemoryRange] = field(default_factory=list)
    regions: list[MemoryRegion] = field(default_factory=list)
    store: Optional[Path] = None

    def options(self) -> SymbolOptions:
        paths = (str(self.store),) if self.store is not None else ()
        return SymbolOptions(paths, system_debug=False, debuginfod=False)

    def add_module(self, name: str, base: int, build_id: bytes, source: Optional[str],
                   sym: str = "", fdes: Optional[list[Fde]] = None, initial: bytes = b"",
                   ra_reg: int = 16, code_align: int = 1, signal: bool = False) -> None:
        """A module at ``base``: ``source`` 'dwarf' (an ELF file with ``fdes``), 'breakpad'
        (a .sym file whose body is ``sym``; code in memory) or None (no file, code in
        memory)."""
        cfi = None
        if source == "dwarf":
            cfi = eh_frame(TEXT_END, ra_reg, code_align, initial, fdes or [], signal)
        image = elf_image(self.arch, build_id, cfi, TEXT_END)
        path = self.tmp / name
        if source == "dwarf":
            path.write_bytes(image)
        else:
            self.memory.append(MemoryRange(base, image[:TEXT_END]))
        ident = ElfBuildId(build_id)
        if source == "breakpad":
            did = debug_id(ident)
            self.store = self.tmp / "symbols"
            sym_path = self.store / name / did / (name + ".sym")
            sym_path.parent.mkdir(parents=True)
            arch = "x86_64" if self.arch == Arch.AMD64 else "arm64"
            sym_path.write_text(f"MODULE Linux {arch} {did} {name}\n{sym}")
        self.modules.append(Module(str(path), base, MOD_SIZE + 0x1000, ident,
                                   is_main=not self.modules))
        self.regions += [MemoryRegion(base, MOD_SIZE, True, False, True, RegionKind.PRIVATE,
                                      str(path)),
                         MemoryRegion(base + MOD_SIZE, 0x1000, True, True, False,
                                      RegionKind.PRIVATE, str(path))]

    def snapshot(self, context, stack: StackBuilder) -> Snapshot:
        regions = self.regions + [MemoryRegion(HEAP, 0x10000, True, True, False),
                                  MemoryRegion(stack.base, stack.size, True, True, False)]
        return Snapshot(
            process=Process(pid=4242),
            system=SystemInfo(arch=self.arch, os=OS.LINUX, cpu=CpuInfo()),
            threads=(Thread(tid=4242, context=context, stack=stack.memory(), name="t"),),
            modules=tuple(self.modules),
            memory=tuple(self.memory),
            regions=tuple(sorted(regions, key=lambda r: r.start)),
        )


# The functions of libunwound.so (module offsets) in both architectures' tests, as
# Breakpad FUNC records. No CFI: 0x1000-0x3fff and 0x9000-0x9fff.
FUNCS = """FUNC 1000 1000 0 nocfi_one
FUNC 2000 1000 0 nocfi_two
FUNC 3000 1000 0 nocfi_three
FUNC 4000 1000 10 enchiridion
FUNC 5000 1000 10 epictetus
FUNC 6000 1000 0 middle
FUNC 7000 1000 0 outer
FUNC 8000 800 0 palinal
FUNC 8800 800 0 rhetorical
FUNC 9000 1000 0 nocfi_nine
"""

# The rules are written twice, as DWARF CFI in an ELF file and as Breakpad STACK CFI.
SOURCES = ["dwarf", "breakpad"]


@pytest.fixture(autouse=True)
def fresh_caches():
    """Each test parses its own synthetic modules (the caches key on path and build id)."""
    clear_caches()
    yield
    clear_caches()


def walk(snap: Snapshot, options: SymbolOptions, max_frames: int = MAX_FRAMES) -> ThreadStack:
    """The walker over ``snap``'s only thread (the one place building the walker's view)."""
    [stack] = walk_process(snap, options, max_frames=max_frames)
    return stack


def summary(stack: ThreadStack, base: int = MOD) -> list[tuple[int, int, str]]:
    """(pc - base, sp, trust) per frame."""
    return [(f.pc - base, f.sp, f.trust) for f in stack.frames]
