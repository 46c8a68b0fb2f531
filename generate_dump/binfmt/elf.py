"""ELF module identity: load span, GNU build id, SONAME, from process memory or from the file.

The in-memory path parses just the ELF and program headers, the PT_NOTE segments and the
dynamic section, straight from bytes (a loaded image need not match any file on disk).
The file path uses pyelftools, imported only when needed, and also provides Breakpad's
fallback identifier: the first 4096 bytes of .text XOR-folded into 16 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Optional

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1
PT_DYNAMIC = 2
PT_NOTE = 4
NT_GNU_BUILD_ID = 3
DT_NULL = 0
DT_STRTAB = 5
DT_SONAME = 14
DT_DEBUG = 21
ET_EXEC = 2
ET_DYN = 3

ReadFn = Callable[[int, int], bytes]


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class ProgramHeader:
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@dataclass(frozen=True)
class ElfHeader:
    is64: bool
    type: int
    machine: int
    phoff: int
    phentsize: int
    phnum: int


def parse_header(data: bytes) -> ElfHeader:
    if len(data) < 52 or data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF image")
    ei_class, ei_data = data[4], data[5]
    if ei_data != 1:
        raise ElfError("big-endian ELF is not supported")
    if ei_class == 2:
        if len(data) < 64:
            raise ElfError("truncated ELF64 header")
        etype, machine = struct.unpack_from("<HH", data, 16)
        (phoff,) = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        return ElfHeader(True, etype, machine, phoff, phentsize, phnum)
    if ei_class == 1:
        etype, machine = struct.unpack_from("<HH", data, 16)
        (phoff,) = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
        return ElfHeader(False, etype, machine, phoff, phentsize, phnum)
    raise ElfError(f"unknown ELF class {ei_class}")


def parse_program_headers(h: ElfHeader, data: bytes) -> list[ProgramHeader]:
    out = []
    for i in range(h.phnum):
        off = i * h.phentsize
        if h.is64:
            if off + 56 > len(data):
                break
            t, flags, offset, vaddr, _paddr, filesz, memsz, align = struct.unpack_from(
                "<IIQQQQQQ", data, off)
        else:
            if off + 32 > len(data):
                break
            t, offset, vaddr, _paddr, filesz, memsz, flags, align = struct.unpack_from(
                "<IIIIIIII", data, off)
        out.append(ProgramHeader(t, offset, vaddr, filesz, memsz, flags, align))
    return out


def build_id_from_notes(data: bytes) -> Optional[bytes]:
    """The descriptor of the first note named "GNU" of type NT_GNU_BUILD_ID."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name_end = pos + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data) + 3:
            return None
        name = data[pos : pos + namesz].rstrip(b"\0")
        if name == b"GNU" and ntype == NT_GNU_BUILD_ID and descsz:
            return bytes(data[name_end : name_end + descsz])
        pos = desc_end
    return None


def text_hash(text: bytes) -> bytes:
    """Breakpad's identifier for ELF files without a build id: XOR-fold of .text[:4096]."""
    out = bytearray(16)
    for i, b in enumerate(text[:4096]):
        out[i % 16] ^= b
    return bytes(out)


@dataclass(frozen=True)
class LoadedImage:
    """What the process memory says about one mapped ELF image."""

    base: int  # load bias + first PT_LOAD vaddr (page aligned)
    size: int  # spans all PT_LOAD segments
    bias: int
    build_id: Optional[bytes]
    soname: Optional[str]
    dynamic_addr: int  # runtime address of _DYNAMIC, 0 if none
    debug_addr: int  # DT_DEBUG value (r_debug address) for executables, 0 if none
    elf_type: int


def _page_down(x: int, page: int) -> int:
    return x & ~(page - 1)


def read_loaded_image(read: ReadFn, map_start: int, map_offset: int = 0,
                      page: int = 4096) -> LoadedImage:
    """Parse an ELF image mapped at ``map_start`` (the mapping with file offset ``map_offset``)."""
    head = read(map_start, 64)
    h = parse_header(head)
    ph_size = h.phentsize * h.phnum
    if h.phnum == 0 or h.phnum > 512 or h.phentsize < (56 if h.is64 else 32):
        raise ElfError("implausible program header table")
    phdata = read(map_start + h.phoff, ph_size)
    phdrs = parse_program_headers(h, phdata)
    loads = [p for p in phdrs if p.type == PT_LOAD]
    if not loads:
        raise ElfError("no PT_LOAD segment")
    first = min(loads, key=lambda p: p.vaddr)
    # The mapping at file offset map_offset holds the segment that contains that offset.
    seg = next((p for p in loads
                if _page_down(p.offset, page) <= map_offset < p.offset + max(p.filesz, 1)),
               first)
    bias = map_start - _page_down(seg.vaddr, page) - (map_offset - _page_down(seg.offset, page))
    lo = _page_down(first.vaddr, page)
    hi = max(p.vaddr + p.memsz for p in loads)
    hi = (hi + page - 1) & ~(page - 1)
    base = bias + lo

    build_id = None
    for p in phdrs:
        if p.type == PT_NOTE and 0 < p.filesz <= 1 << 20:
            try:
                notes = read(bias + p.vaddr, p.filesz)
            except OSError:
                continue
            build_id = build_id_from_notes(notes)
            if build_id:
                break

    soname = None
    dynamic_addr = debug_addr = 0
    dyn = next((p for p in phdrs if p.type == PT_DYNAMIC), None)
    if dyn is not None and 0 < dyn.memsz <= 1 << 20:
        dynamic_addr = bias + dyn.vaddr
        raw = read(dynamic_addr, dyn.memsz)
        entries = _dynamic_entries(raw, h.is64)
        debug_addr = entries.get(DT_DEBUG, 0)
        if DT_SONAME in entries and DT_STRTAB in entries:
            strtab = entries[DT_STRTAB]
            # ld.so relocates d_ptr values in writable _DYNAMIC sections; the vDSO's and
            # some architectures' are left as link-time addresses.
            if strtab < base:
                strtab += bias
            name = read(strtab + entries[DT_SONAME], 256).split(b"\0", 1)[0]
            soname = name.decode("utf-8", "surrogateescape") or None
    return LoadedImage(base, hi - lo, bias, build_id, soname, dynamic_addr, debug_addr, h.type)


def _dynamic_entries(raw: bytes, is64: bool) -> dict[int, int]:
    fmt, size = ("<qQ", 16) if is64 else ("<iI", 8)
    out: dict[int, int] = {}
    for off in range(0, len(raw) - size + 1, size):
        tag, val = struct.unpack_from(fmt, raw, off)
        if tag == DT_NULL:
            break
        out.setdefault(tag, val)
    return out


@dataclass(frozen=True)
class FileIdentity:
    build_id: Optional[bytes]
    text_hash: Optional[bytes]
    soname: Optional[str]


def file_identity(path: str) -> FileIdentity:
    """Build id, .text hash and SONAME of an ELF file on disk (pyelftools)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            build_id = None
            for sec in elf.iter_sections():
                if isinstance(sec, NoteSection):
                    for note in sec.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                            build_id = bytes.fromhex(note["n_desc"])
                            break
                if build_id:
                    break
            soname = None
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            # pyelftools sets .soname on DT_SONAME tags only
                            soname = tag.soname  # type: ignore[attr-defined]
            text = elf.get_section_by_name(".text")
            th = text_hash(text.data()[:4096]) if text is not None and text["sh_type"] != "SHT_NOBITS" else None
            return FileIdentity(build_id, th, soname)
    except (OSError, ELFError, ValueError, KeyError) as exc:
        raise ElfError(f"{path}: {exc}") from None


# -- data symbols from the file (Python's _PyRuntime, Py_Version) -----------------------------

SHT_SYMTAB = 2
SHT_DYNSYM = 11
_MAX_SYMTAB = 64 << 20


def find_symbols(path: str, names: "tuple[str, ...]") -> dict[str, tuple[int, int]]:
    """{name: (st_value, st_size)} for defined symbols of any type named in ``names``, from
    the file's .symtab or .dynsym (64-bit little-endian files; {} for anything else).

    Reads only the section headers, the two symbol tables and their string tables: finding
    a data symbol such as ``_PyRuntime`` needs no full ELF parser.
    """
    out: dict[str, tuple[int, int]] = {}
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != ELF_MAGIC or head[4] != 2 or head[5] != 1:
                return out
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
            if not shoff or shentsize < 64 or not 0 < shnum < 65536:
                return out
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            sections = []
            for i in range(len(table) // shentsize):
                (_n, stype, _fl, _addr, off, size, link, _info, _al,
                 entsize) = struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize)
                sections.append((stype, off, size, link, entsize))
            wanted = {n.encode(): n for n in names}
            # .dynsym first: small, and where an executable exports what modules need.
            for kind in (SHT_DYNSYM, SHT_SYMTAB):
                if len(out) == len(wanted):
                    break
                for stype, off, size, link, entsize in sections:
                    if stype != kind or entsize != 24 or size > _MAX_SYMTAB \
                            or link >= len(sections):
                        continue
                    _, str_off, str_size, _, _ = sections[link]
                    if str_size > _MAX_SYMTAB:
                        continue
                    f.seek(str_off)
                    strings = f.read(str_size)
                    if not any(raw + b"\0" in strings for raw in wanted):
                        continue
                    f.seek(off)
                    syms = f.read(size)
                    for st_name, _info, _other, shndx, value, sz in struct.iter_unpack(
                            "<IBBHQQ", syms[: len(syms) // 24 * 24]):
                        if shndx == 0 or not value:
                            continue
                        for raw, name in wanted.items():
                            if strings.startswith(raw, st_name) \
                                    and strings[st_name + len(raw):st_name + len(raw) + 1] \
                                    == b"\0":
                                out.setdefault(name, (value, sz))
    except OSError:
        return out
    return out
