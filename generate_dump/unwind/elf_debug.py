"""What the stack walker needs from one ELF file (or an in-memory ELF image such as the vDSO).

pyelftools reads the headers and sections (and decompresses SHF_COMPRESSED debug sections);
symbol tables are decoded here with ``struct`` (an order of magnitude faster than
iterating pyelftools symbols on a libc), CFI by :mod:`.cfi`, line tables by pyelftools'
DWARF line program parser, one compilation unit at a time.
"""

from __future__ import annotations

import bisect
import io
import lzma
import os
import struct
import threading
from dataclasses import dataclass
from typing import Optional

from ..binfmt.elf import build_id_from_notes, text_hash
from .cfi import CfiSection

PF_X = 1
STT_FUNC = 2
STB_LOCAL = 0
SHN_UNDEF = 0
SHT_NOBITS = 8
SHT_NOTE = 7
PAGE = 4096

# e_machine values
EM_X86_64 = 62
EM_AARCH64 = 183
EM_386 = 3


@dataclass(frozen=True)
class Load:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@dataclass(frozen=True)
class ElfSymbol:
    value: int
    size: int
    name: str
    is_global: bool
    index: int


class ElfImage:
    """One ELF file's identity, load layout, code, CFI, symbols and line tables (lazily)."""

    def __init__(self, path: str, data: Optional[bytes] = None):
        from elftools.elf.elffile import ELFFile

        self.path = path
        self._lock = threading.Lock()
        self._stream = io.BytesIO(data) if data is not None else open(path, "rb")
        try:
            self.elf = ELFFile(self._stream)
        except Exception:
            self._stream.close()
            raise
        elf = self.elf
        self.is64 = elf.elfclass == 64
        self.address_size = 8 if self.is64 else 4
        self.machine = {"EM_X86_64": EM_X86_64, "EM_AARCH64": EM_AARCH64, "EM_386": EM_386}.get(
            elf["e_machine"], 0)
        self.loads: list[Load] = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                self.loads.append(Load(seg["p_vaddr"], seg["p_memsz"], seg["p_offset"],
                                       seg["p_filesz"], seg["p_flags"]))
        self.loads.sort(key=lambda l: l.vaddr)
        self.min_vaddr = (self.loads[0].vaddr & ~(PAGE - 1)) if self.loads else 0
        self.sections = {s.name: s for s in elf.iter_sections() if s.name}
        self.build_id = self._build_id()
        self._text_hash: Optional[bytes] = None
        text = self.sections.get(".text")
        self.has_code = text is not None and text["sh_type"] != "SHT_NOBITS"
        self._cfi: Optional[list[CfiSection]] = None
        self._symbols: Optional[tuple[list[ElfSymbol], list[ElfSymbol]]] = None
        self._lines: Optional[DwarfLines] = None
        self._lines_tried = False

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass

    # -- identity -----------------------------------------------------------------------------

    def _build_id(self) -> Optional[bytes]:
        for s in self.elf.iter_sections():
            if s["sh_type"] == "SHT_NOTE" and s["sh_type"] != "SHT_NOBITS":
                try:
                    bid = build_id_from_notes(s.data())
                except Exception:  # noqa: BLE001 - a broken note is no build id
                    bid = None
                if bid:
                    return bid
        for seg in self.elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                try:
                    bid = build_id_from_notes(seg.data())
                except Exception:  # noqa: BLE001
                    bid = None
                if bid:
                    return bid
        return None

    @property
    def text_hash(self) -> Optional[bytes]:
        if self._text_hash is None and self.has_code:
            self._text_hash = text_hash(self.sections[".text"].data()[:4096])
        return self._text_hash

    def matches(self, identity_bytes: bytes) -> bool:
        """Does this file carry the id the dump recorded (GNU build id, else .text hash)?"""
        if self.build_id is not None:
            return self.build_id == identity_bytes
        try:
            return self.text_hash is not None and self.text_hash == identity_bytes[:16]
        except Exception:  # noqa: BLE001 - unreadable .text: cannot be the module
            return False

    @property
    def debuglink(self) -> Optional[str]:
        s = self.sections.get(".gnu_debuglink")
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        try:
            name = s.data().split(b"\0", 1)[0]
        except Exception:  # noqa: BLE001
            return None
        return name.decode("utf-8", "surrogateescape") or None

    # -- code ---------------------------------------------------------------------------------

    def exec_ranges(self) -> list[tuple[int, int]]:
        return [(l.vaddr, l.vaddr + l.memsz) for l in self.loads if l.flags & PF_X]

    def read(self, vaddr: int, size: int) -> Optional[bytes]:
        """File bytes at link-time address ``vaddr`` (only what a PT_LOAD maps from the file)."""
        if not self.has_code:
            return None
        for l in self.loads:
            if l.vaddr <= vaddr and vaddr + size <= l.vaddr + l.filesz:
                with self._lock:
                    self._stream.seek(l.offset + vaddr - l.vaddr)
                    data = self._stream.read(size)
                return data if len(data) == size else None
        return None

    # -- CFI ----------------------------------------------------------------------------------

    def cfi(self) -> list[CfiSection]:
        if self._cfi is None:
            out = []
            for name, is_eh in ((".eh_frame", True), (".debug_frame", False)):
                s = self.sections.get(name)
                if s is None or s["sh_type"] == "SHT_NOBITS" or s["sh_size"] == 0:
                    continue
                try:
                    out.append(CfiSection(s.data(), s["sh_addr"], is_eh, self.address_size,
                                          name=f"{name} of {self.path}"))
                except Exception:  # noqa: BLE001 - unreadable CFI is no CFI
                    continue
            self._cfi = out
        return self._cfi

    # -- symbols ------------------------------------------------------------------------------

    def symbols(self) -> tuple[list[ElfSymbol], list[ElfSymbol]]:
        """(.symtab functions, .dynsym functions), in table order; .gnu_debugdata's symtab
        (MiniDebugInfo) counts as .symtab when the file has none of its own."""
        if self._symbols is None:
            symtab = self._read_symbols(".symtab")
            dynsym = self._read_symbols(".dynsym")
            if not symtab and ".gnu_debugdata" in self.sections:
                symtab = self._minidebuginfo_symbols()
            self._symbols = (symtab, dynsym)
        return self._symbols

    def _read_symbols(self, name: str) -> list[ElfSymbol]:
        s = self.sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return []
        try:
            strtab = self.elf.get_section(s["sh_link"])
            strings = strtab.data()
            raw = s.data()
        except Exception:  # noqa: BLE001
            return []
        return parse_symbols(raw, strings, self.is64)

    def _minidebuginfo_symbols(self) -> list[ElfSymbol]:
        try:
            inner = lzma.decompress(self.sections[".gnu_debugdata"].data())
            img = ElfImage(self.path + "[.gnu_debugdata]", data=inner)
        except Exception:  # noqa: BLE001
            return []
        try:
            return img.symbols()[0]
        finally:
            img.close()

    # -- lines --------------------------------------------------------------------------------

    def lines(self) -> Optional["DwarfLines"]:
        if not self._lines_tried:
            self._lines_tried = True
            if ".debug_line" in self.sections and ".debug_info" in self.sections:
                try:
                    self._lines = DwarfLines(self)
                except Exception:  # noqa: BLE001 - broken DWARF: no lines
                    self._lines = None
        return self._lines


def parse_symbols(raw: bytes, strings: bytes, is64: bool) -> list[ElfSymbol]:
    """Function symbols (STT_FUNC, defined, non-zero) of a symbol table, in table order."""
    out = []
    if is64:
        it = struct.iter_unpack("<IBBHQQ", raw[: len(raw) // 24 * 24])
        for i, (st_name, info, _other, shndx, value, size) in enumerate(it):
            if info & 0xF != STT_FUNC or shndx == SHN_UNDEF or value == 0:
                continue
            out.append(ElfSymbol(value, size, _name(strings, st_name), info >> 4 != STB_LOCAL, i))
    else:
        it = struct.iter_unpack("<IIIBBH", raw[: len(raw) // 16 * 16])
        for i, (st_name, value, size, info, _other, shndx) in enumerate(it):
            if info & 0xF != STT_FUNC or shndx == SHN_UNDEF or value == 0:
                continue
            out.append(ElfSymbol(value, size, _name(strings, st_name), info >> 4 != STB_LOCAL, i))
    return out


def _name(strings: bytes, off: int) -> str:
    end = strings.find(b"\0", off)
    raw = strings[off:end if end >= 0 else len(strings)]
    name = raw.decode("utf-8", "replace")
    at = name.find("@")
    return name[:at] if at > 0 else name


class DwarfLines:
    """Address -> (file, line) from .debug_line, one compilation unit at a time."""

    MAX_SCAN_INFO = 2 << 20  # without .debug_aranges, index all CUs only when this small

    def __init__(self, image: ElfImage):
        self.image = image
        self.dwarf = image.elf.get_dwarf_info(relocate_dwarf_sections=False)
        self._aranges = None
        try:
            if self.dwarf.debug_aranges_sec is not None:
                self._aranges = self.dwarf.get_aranges()
        except Exception:  # noqa: BLE001
            self._aranges = None
        self._cu_tables: dict[int, Optional[_LineTable]] = {}
        self._all: Optional[_LineTable] = None

    def lookup(self, vaddr: int) -> Optional[tuple[str, int]]:
        with self.image._lock:
            return self._lookup(vaddr)

    def _lookup(self, vaddr: int) -> Optional[tuple[str, int]]:
        if self._aranges is not None:
            try:
                off = self._aranges.cu_offset_at_addr(vaddr)
            except Exception:  # noqa: BLE001
                off = None
            if off is not None:
                if off in self._cu_tables:
                    table = self._cu_tables[off]
                else:
                    table = self._table_for_cu(off)
                    self._cu_tables[off] = table
                if table is not None:
                    return table.lookup(vaddr)
            return None  # .debug_aranges covers every compilation unit: no line here
        if self._all is None:
            size = self.image.sections[".debug_info"]["sh_size"]
            self._all = _LineTable()
            if size <= self.MAX_SCAN_INFO:
                for cu in self.dwarf.iter_CUs():
                    try:
                        lp = self.dwarf.line_program_for_CU(cu)
                    except Exception:  # noqa: BLE001
                        continue
                    if lp is not None:
                        self._all.add_program(lp)
            self._all.finish()
        return self._all.lookup(vaddr)

    def _table_for_cu(self, offset: int) -> Optional["_LineTable"]:
        try:
            cu = self.dwarf.get_CU_at(offset)
            lp = self.dwarf.line_program_for_CU(cu)
        except Exception:  # noqa: BLE001
            return None
        if lp is None:
            return None
        t = _LineTable()
        t.add_program(lp)
        t.finish()
        return t


class _LineTable:
    def __init__(self):
        self.rows: list[tuple[int, int, int, str]] = []  # (address, is_start, line, file)

    def add_program(self, lp) -> None:
        version = lp.header["version"]
        files = lp.header["file_entry"]
        dirs = lp.header["include_directory"]
        names: dict[int, str] = {}

        def file_name(index: int) -> str:
            if index in names:
                return names[index]
            i = index if version >= 5 else index - 1
            name = "?"
            if 0 <= i < len(files):
                fe = files[i]
                name = _text(fe.name)
                d = fe.dir_index if version >= 5 else fe.dir_index - 1
                if not name.startswith("/") and 0 <= d < len(dirs):
                    name = os.path.join(_text(dirs[d]), name)
            names[index] = name
            return name

        try:
            entries = lp.get_entries()
        except Exception:  # noqa: BLE001
            return
        for e in entries:
            st = e.state
            if st is None:
                continue
            if st.end_sequence:
                self.rows.append((st.address, 0, 0, ""))
            else:
                self.rows.append((st.address, 1, st.line, file_name(st.file)))

    def finish(self) -> None:
        self.rows.sort(key=lambda r: (r[0], r[1]))
        self._addrs = [r[0] for r in self.rows]

    def lookup(self, vaddr: int) -> Optional[tuple[str, int]]:
        i = bisect.bisect_right(self._addrs, vaddr) - 1
        if i < 0:
            return None
        r = self.rows[i]
        if not r[1] or r[2] == 0:
            return None
        return r[3], r[2]


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# -- caching ------------------------------------------------------------------------------

_images: dict[tuple, Optional[ElfImage]] = {}
_images_lock = threading.Lock()
MAX_CACHED_IMAGES = 256


def open_image(path: str) -> Optional[ElfImage]:
    """The parsed ELF at ``path``, shared while the file is unchanged; None if not ELF."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _images_lock:
        if key in _images:
            return _images[key]
    try:
        img: Optional[ElfImage] = ElfImage(path)
    except Exception:  # noqa: BLE001 - not ELF, unreadable, truncated
        img = None
    with _images_lock:
        if len(_images) >= MAX_CACHED_IMAGES:
            for k in list(_images)[: MAX_CACHED_IMAGES // 2]:
                old = _images.pop(k)
                if old is not None:
                    old.close()
        _images.setdefault(key, img)
        return _images[key]


_vdso: Optional[ElfImage] = None
_vdso_tried = False


def own_vdso() -> Optional[ElfImage]:
    """The vDSO of this process (the same kernel's vDSO is the same file: same build id)."""
    global _vdso, _vdso_tried
    if _vdso_tried:
        return _vdso
    _vdso_tried = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        getauxval = libc.getauxval
        getauxval.restype = ctypes.c_ulong
        getauxval.argtypes = [ctypes.c_ulong]
        base = getauxval(33)  # AT_SYSINFO_EHDR
        if not base:
            return None
        size = _vdso_size(base)
        if not size:
            return None
        data = ctypes.string_at(base, size)
        _vdso = ElfImage("[vdso]", data=data)
    except Exception:  # noqa: BLE001 - no vDSO here: fine
        _vdso = None
    return _vdso


def _vdso_size(base: int) -> int:
    """Bytes of the vDSO image: from /proc/self/maps, the mapping that starts at ``base``."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if lo == base:
                        return hi - lo
    except OSError:
        pass
    return 0
