"""PE module identity: CodeView RSDS record, TimeDateStamp, SizeOfImage, CheckSum, version.

What a minidump's MINIDUMP_MODULE needs from a Windows image, from two sources:

* an image mapped in a process (:func:`image_info`), through a read callback over its
  virtual addresses: the headers and every RVA are read where the loader mapped them, so
  this works for images whose file is gone, replaced or unreachable. Plain ``struct``, no
  third-party code, every offset bounds-checked.
* a file on disk (:func:`file_info`), parsed with pefile (the project's declared PE
  dependency): the fallback when the memory is unreadable, and where the loader did not
  map what we need (a debug directory whose data lies outside every section).

:func:`module_info` combines them: memory first, the file for what memory lacks, and only
when the file is the same image (equal TimeDateStamp and SizeOfImage).

Malformed input raises :class:`PeError` and nothing else: these bytes come from a process
that may have crashed because it overwrote them. Failures of the read callback
(``OSError``) are passed through, so that a caller can tell "unreadable" from "garbage".
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from typing import Callable, Optional

from ..snapshot import FileVersion, PdbIdentity

ReadFn = Callable[[int, int], bytes]

MZ = b"MZ"
PE_SIGNATURE = b"PE\0\0"
OPTIONAL_MAGIC_PE32 = 0x10B
OPTIONAL_MAGIC_PE32_PLUS = 0x20B

IMAGE_FILE_MACHINE_I386 = 0x14C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_ARM64 = 0xAA64
IMAGE_FILE_DLL = 0x2000

DIRECTORY_RESOURCE = 2
DIRECTORY_DEBUG = 6
IMAGE_DEBUG_TYPE_CODEVIEW = 2
RT_VERSION = 16

CV_SIGNATURE_RSDS = b"RSDS"
VS_FFI_SIGNATURE = 0xFEEF04BD

HEADER_READ = 0x1000  # the loader maps the headers in the first page
MAX_HEADER = 0x10000  # SizeOfHeaders of real images is a few hundred bytes to a page or two
DEBUG_ENTRY_SIZE = 28
MAX_DEBUG_ENTRIES = 64
MAX_CODEVIEW = 24 + 1024  # RSDS header + a PDB path (MAX_PATH is 260; be generous)
RESOURCE_DIR_SIZE = 16
RESOURCE_ENTRY_SIZE = 8
MAX_RESOURCE_ENTRIES = 4096
FIXED_FILE_INFO_SIZE = 52
MAX_VERSION_RESOURCE = 1 << 16  # VS_VERSIONINFO wLength is a u16


class PeError(ValueError):
    pass


@dataclass(frozen=True)
class PeInfo:
    """What a minidump module record takes from a PE image."""

    machine: int
    pe32_plus: bool
    timestamp: int
    size_of_image: int
    checksum: int
    characteristics: int
    pdb: Optional[PdbIdentity] = None
    version: Optional[FileVersion] = None
    # Memory only: a CodeView entry exists but its data is not mapped (AddressOfRawData 0),
    # or the version resource could not be read; the file may still have them.
    incomplete: bool = False

    @property
    def is_dll(self) -> bool:
        return bool(self.characteristics & IMAGE_FILE_DLL)

    def same_image(self, other: "PeInfo") -> bool:
        return (self.timestamp, self.size_of_image, self.machine) == \
            (other.timestamp, other.size_of_image, other.machine)


@dataclass(frozen=True)
class _Headers:
    machine: int
    pe32_plus: bool
    timestamp: int
    size_of_image: int
    checksum: int
    characteristics: int
    directories: tuple[tuple[int, int], ...]  # (rva, size) per data directory

    def directory(self, index: int) -> tuple[int, int]:
        return self.directories[index] if index < len(self.directories) else (0, 0)


def _u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def _u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def parse_headers(data: bytes) -> _Headers:
    """DOS, COFF and optional headers from the start of an image (file or memory)."""
    if len(data) < 0x40 or data[:2] != MZ:
        raise PeError("not a PE image (no MZ header)")
    e_lfanew = _u32(data, 0x3C)
    if e_lfanew < 0x40 or e_lfanew > MAX_HEADER:
        raise PeError(f"implausible e_lfanew 0x{e_lfanew:x}")
    if e_lfanew + 24 > len(data):
        raise PeError(f"PE header at 0x{e_lfanew:x} lies beyond the {len(data)} bytes read")
    if data[e_lfanew : e_lfanew + 4] != PE_SIGNATURE:
        raise PeError("not a PE image (no PE signature)")
    coff = e_lfanew + 4
    machine, _nsections, timestamp, _symtab, _nsyms, opt_size, characteristics = \
        struct.unpack_from("<HHIIIHH", data, coff)
    opt = coff + 20
    if opt_size < 2 or opt + opt_size > len(data):
        raise PeError(f"optional header of {opt_size} bytes does not fit the headers")
    magic = _u16(data, opt)
    if magic == OPTIONAL_MAGIC_PE32_PLUS:
        count_off, dir_off = 108, 112
    elif magic == OPTIONAL_MAGIC_PE32:
        count_off, dir_off = 92, 96
    else:
        raise PeError(f"unknown optional header magic 0x{magic:x}")
    if opt_size < dir_off:
        raise PeError(f"optional header of {opt_size} bytes is too short for magic 0x{magic:x}")
    size_of_image = _u32(data, opt + 56)
    checksum = _u32(data, opt + 64)
    count = min(_u32(data, opt + count_off), 16, (opt_size - dir_off) // 8)
    dirs = tuple(struct.unpack_from("<II", data, opt + dir_off + 8 * i) for i in range(count))
    return _Headers(machine, magic == OPTIONAL_MAGIC_PE32_PLUS, timestamp, size_of_image,
                    checksum, characteristics, dirs)


def parse_codeview(data: bytes) -> Optional[PdbIdentity]:
    """An RSDS CodeView record (PDB 7.0): GUID as stored, age, NUL-terminated PDB path."""
    if len(data) < 24 or data[:4] != CV_SIGNATURE_RSDS:
        return None
    guid = bytes(data[4:20])
    age = _u32(data, 20)
    path = bytes(data[24:]).split(b"\0", 1)[0].decode("utf-8", "replace")
    return PdbIdentity(guid=guid, age=age, pdb_path=path)


def parse_fixed_file_info(data: bytes) -> Optional[FileVersion]:
    """VS_FIXEDFILEINFO (52 bytes) -> FileVersion; None without the 0xFEEF04BD signature."""
    if len(data) < FIXED_FILE_INFO_SIZE:
        return None
    (sig, _strucver, fv_ms, fv_ls, pv_ms, pv_ls, mask, flags, file_os, ftype, fsub, _dms,
     _dls) = struct.unpack_from("<13I", data)
    if sig != VS_FFI_SIGNATURE:
        return None
    return FileVersion(
        file_version=(fv_ms >> 16, fv_ms & 0xFFFF, fv_ls >> 16, fv_ls & 0xFFFF),
        product_version=(pv_ms >> 16, pv_ms & 0xFFFF, pv_ls >> 16, pv_ls & 0xFFFF),
        flags=flags & mask, os=file_os, file_type=ftype, file_subtype=fsub,
    )


def parse_version_info(data: bytes) -> Optional[FileVersion]:
    """The VS_FIXEDFILEINFO inside a VS_VERSIONINFO resource (the RT_VERSION data)."""
    if len(data) < 6:
        return None
    _length, value_length, _type = struct.unpack_from("<HHH", data)
    key = "VS_VERSION_INFO\0".encode("utf-16-le")
    if data[6 : 6 + len(key)] != key:
        return None
    value = (6 + len(key) + 3) & ~3  # the value is DWORD-aligned
    if value_length < FIXED_FILE_INFO_SIZE:
        return None
    return parse_fixed_file_info(data[value : value + FIXED_FILE_INFO_SIZE])


# --- an image mapped in a process ---------------------------------------------------------


def _read_exact(read: ReadFn, addr: int, size: int, what: str) -> bytes:
    data = read(addr, size)
    if len(data) < size:
        raise PeError(f"{what}: only {len(data)} of {size} bytes readable at 0x{addr:x}")
    return data


def _in_image(h: _Headers, rva: int, size: int, what: str) -> None:
    if rva == 0 or size <= 0 or rva + size > h.size_of_image:
        raise PeError(f"{what} at RVA 0x{rva:x} (+0x{size:x}) lies outside the image "
                      f"(SizeOfImage 0x{h.size_of_image:x})")


def _memory_codeview(read: ReadFn, base: int, h: _Headers) -> tuple[Optional[PdbIdentity], bool]:
    """(RSDS identity, whether a CodeView entry exists whose data is not mapped)."""
    rva, size = h.directory(DIRECTORY_DEBUG)
    if rva == 0 or size == 0:
        return None, False
    count = min(size // DEBUG_ENTRY_SIZE, MAX_DEBUG_ENTRIES)
    if count == 0:
        return None, False
    _in_image(h, rva, count * DEBUG_ENTRY_SIZE, "debug directory")
    table = _read_exact(read, base + rva, count * DEBUG_ENTRY_SIZE, "debug directory")
    unmapped = False
    for i in range(count):
        (_chars, _ts, _major, _minor, dtype, dsize, data_rva, _ptr) = struct.unpack_from(
            "<IIHHIIII", table, i * DEBUG_ENTRY_SIZE)
        if dtype != IMAGE_DEBUG_TYPE_CODEVIEW:
            continue
        if data_rva == 0:
            unmapped = True  # only in the file (PointerToRawData)
            continue
        dsize = min(dsize, MAX_CODEVIEW)
        _in_image(h, data_rva, dsize, "CodeView record")
        identity = parse_codeview(_read_exact(read, base + data_rva, dsize, "CodeView record"))
        if identity is not None:
            return identity, False
    return None, unmapped


def _resource_entries(read: ReadFn, base: int, h: _Headers, root: int, offset: int
                      ) -> list[tuple[int, bool, int]]:
    """(id, is_directory, offset) of the id entries of the resource directory at ``offset``."""
    rva = root + offset
    _in_image(h, rva, RESOURCE_DIR_SIZE, "resource directory")
    head = _read_exact(read, base + rva, RESOURCE_DIR_SIZE, "resource directory")
    named, ids = _u16(head, 12), _u16(head, 14)
    total = named + ids
    if total > MAX_RESOURCE_ENTRIES:
        raise PeError(f"resource directory with {total} entries")
    if total == 0:
        return []
    _in_image(h, rva + RESOURCE_DIR_SIZE, total * RESOURCE_ENTRY_SIZE, "resource entries")
    raw = _read_exact(read, base + rva + RESOURCE_DIR_SIZE, total * RESOURCE_ENTRY_SIZE,
                      "resource entries")
    out = []
    for i in range(named, total):  # named entries come first; RT_VERSION is an id
        name, target = struct.unpack_from("<II", raw, i * RESOURCE_ENTRY_SIZE)
        out.append((name & 0xFFFF, bool(target & 0x80000000), target & 0x7FFFFFFF))
    return out


def _memory_version(read: ReadFn, base: int, h: _Headers) -> Optional[FileVersion]:
    root, size = h.directory(DIRECTORY_RESOURCE)
    if root == 0 or size == 0:
        return None
    types = _resource_entries(read, base, h, root, 0)
    entry = next(((d, off) for rid, d, off in types if rid == RT_VERSION), None)
    # type -> name -> language -> data entry: take the first name and language.
    for _level in range(2):
        if entry is None or not entry[0]:
            return None
        children = _resource_entries(read, base, h, root, entry[1])
        entry = (children[0][1], children[0][2]) if children else None
    if entry is None or entry[0]:
        return None
    _in_image(h, root + entry[1], 16, "resource data entry")
    data_rva, data_size = struct.unpack_from(
        "<II", _read_exact(read, base + root + entry[1], 16, "resource data entry"))
    data_size = min(data_size, MAX_VERSION_RESOURCE)
    if data_size < 6 + 32 + FIXED_FILE_INFO_SIZE:
        return None
    _in_image(h, data_rva, data_size, "version resource")
    return parse_version_info(_read_exact(read, base + data_rva, data_size, "version resource"))


def image_info(read: ReadFn, base: int) -> PeInfo:
    """Identity of the PE image the loader mapped at ``base`` (``read(address, size)``)."""
    first = read(base, HEADER_READ)
    h = parse_headers(first)
    pdb, unmapped = _memory_codeview(read, base, h)
    incomplete = unmapped
    try:
        version = _memory_version(read, base, h)
    except PeError:
        version, incomplete = None, True
    return PeInfo(machine=h.machine, pe32_plus=h.pe32_plus, timestamp=h.timestamp,
                  size_of_image=h.size_of_image, checksum=h.checksum,
                  characteristics=h.characteristics, pdb=pdb, version=version,
                  incomplete=incomplete)


# --- a file on disk (pefile) --------------------------------------------------------------


def file_info(path: str | os.PathLike) -> PeInfo:
    """Identity of a PE file, read with pefile. OSError when the file cannot be read."""
    import pefile

    try:
        pe = pefile.PE(os.fspath(path), fast_load=True)
    except pefile.PEFormatError as exc:
        raise PeError(f"{os.fspath(path)}: {exc.value if hasattr(exc, 'value') else exc}") from None
    try:
        pe.parse_data_directories(directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"],
        ])
        pdb = None
        for entry in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []):
            s = entry.struct
            if s.Type != IMAGE_DEBUG_TYPE_CODEVIEW:
                continue
            size = min(s.SizeOfData, MAX_CODEVIEW)
            raw = pe.__data__[s.PointerToRawData : s.PointerToRawData + size] \
                if s.PointerToRawData else pe.get_data(s.AddressOfRawData, size)
            pdb = parse_codeview(bytes(raw))
            if pdb is not None:
                break
        version = None
        for ffi in getattr(pe, "VS_FIXEDFILEINFO", None) or []:
            raw = ffi.__pack__()
            version = parse_fixed_file_info(raw)
            if version is not None:
                break
        opt, fh = pe.OPTIONAL_HEADER, pe.FILE_HEADER
        return PeInfo(machine=fh.Machine, pe32_plus=opt.Magic == OPTIONAL_MAGIC_PE32_PLUS,
                      timestamp=fh.TimeDateStamp, size_of_image=opt.SizeOfImage,
                      checksum=opt.CheckSum, characteristics=fh.Characteristics, pdb=pdb,
                      version=version)
    except (pefile.PEFormatError, struct.error, IndexError, ValueError) as exc:
        raise PeError(f"{os.fspath(path)}: {exc}") from None
    finally:
        pe.close()


# --- both ---------------------------------------------------------------------------------


def module_info(read: ReadFn, base: int, path: Optional[str] = None,
                open_path: Optional[Callable[[str], str]] = None) -> tuple[PeInfo, str]:
    """The image at ``base``, from memory, completed from the file at ``path`` if needed.

    Returns (info, source) where source says where the identity came from: "memory",
    "memory+file" or "file". ``open_path`` maps ``path`` to a path this process can open
    (identity by default). Raises PeError (or OSError) when neither source works.
    """
    mem_error: Optional[Exception] = None
    try:
        mem = image_info(read, base)
    except (PeError, OSError) as exc:
        mem, mem_error = None, exc
    if mem is not None and mem.pdb is not None and not mem.incomplete:
        return mem, "memory"
    if path:
        try:
            disk = file_info(open_path(path) if open_path else path)
        except (PeError, OSError):
            disk = None
        if disk is not None:
            if mem is None:
                return disk, "file"
            if mem.same_image(disk) and (disk.pdb or disk.version):
                return replace(mem, pdb=mem.pdb or disk.pdb, version=mem.version or disk.version,
                               incomplete=False), "memory+file"
    if mem is not None:
        return mem, "memory"
    assert mem_error is not None
    raise mem_error
