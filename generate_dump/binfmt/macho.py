"""Mach-O module identity: LC_UUID, CPU, file type and segment layout, from files or memory.

A Mach-O module is identified by its LC_UUID: dump_syms names the symbol file after it
(``<UUID>0``), and the minidump carries it in an RSDS CodeView record
(:func:`generate_dump.minidump.codeview.encode_codeview`). Two sources are parsed:

* files on disk, thin or universal ("fat", one slice per architecture), to match a loaded
  image with its file, a dSYM or a symbol file;
* an image in the memory of a process (:func:`image_info`), through a read callback: what
  dyld loaded need not match any file on disk (the dyld shared cache has no files at all).

Everything is plain ``struct`` over bytes, without third-party code, so that it also runs
where the dump is read rather than written. Only little-endian thin images are read (every
Mach-O since the PowerPC era); the universal header is big-endian by definition. Malformed
input raises :class:`MachOError` and nothing else: these bytes come from a process that may
have crashed because it overwrote them. Failures of the read callback or of the file system
(``OSError``) are passed through, so that a caller can tell "unreadable" from "garbage".
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, Optional, Union

from ..snapshot import MachOUuid

MH_MAGIC = 0xFEEDFACE
MH_MAGIC_64 = 0xFEEDFACF
MH_CIGAM = 0xCEFAEDFE  # MH_MAGIC of a big-endian image, read little-endian
MH_CIGAM_64 = 0xCFFAEDFE
FAT_MAGIC = 0xCAFEBABE  # the universal header is always big-endian
FAT_MAGIC_64 = 0xCAFEBABF

MH_OBJECT = 1
MH_EXECUTE = 2
MH_DYLIB = 6
MH_DYLINKER = 7
MH_BUNDLE = 8
MH_DSYM = 10
# The file types dyld maps into a process; anything else at an image address is garbage.
LOADED_FILE_TYPES = frozenset({MH_EXECUTE, MH_DYLIB, MH_DYLINKER, MH_BUNDLE})

LC_SEGMENT = 0x1
LC_ID_DYLIB = 0xD
LC_SEGMENT_64 = 0x19
LC_UUID = 0x1B

CPU_ARCH_ABI64 = 0x01000000
CPU_ARCH_ABI64_32 = 0x02000000
CPU_TYPE_X86 = 7
CPU_TYPE_X86_64 = CPU_TYPE_X86 | CPU_ARCH_ABI64
CPU_TYPE_ARM = 12
CPU_TYPE_ARM64 = CPU_TYPE_ARM | CPU_ARCH_ABI64
CPU_TYPE_ARM64_32 = CPU_TYPE_ARM | CPU_ARCH_ABI64_32
CPU_TYPE_POWERPC = 18
CPU_TYPE_POWERPC64 = CPU_TYPE_POWERPC | CPU_ARCH_ABI64
# The high byte of cpusubtype holds capability bits (CPU_SUBTYPE_LIB64 on x86_64
# executables, the pointer-authentication ABI version on arm64e), not the subtype.
CPU_SUBTYPE_MASK = 0xFF000000

MACH_HEADER_SIZE = 28
MACH_HEADER_64_SIZE = 32
LOAD_COMMAND_SIZE = 8
UUID_COMMAND_SIZE = 24
DYLIB_COMMAND_SIZE = 24
SEGMENT_COMMAND_SIZE = 56
SEGMENT_COMMAND_64_SIZE = 72
SECTION_SIZE = 68
SECTION_64_SIZE = 80
FAT_ARCH_SIZE = 20
FAT_ARCH_64_SIZE = 32

# Real load commands take a few KiB to a few hundred KiB; the cap keeps a corrupt header
# in process memory from asking the read callback for gigabytes.
MAX_SIZEOFCMDS = 16 << 20
# Java class files also begin with 0xCAFEBABE, followed by their version (45 and up) where a
# universal file has its slice count; Apple's file(1) tells the two apart the same way.
MAX_FAT_ARCHS = 44

ReadFn = Callable[[int, int], bytes]

_ARM_SUBTYPES = {
    0: "arm", 5: "armv4t", 6: "armv6", 7: "armv5", 8: "xscale", 9: "armv7", 10: "armv7f",
    11: "armv7s", 12: "armv7k", 13: "armv8", 14: "armv6m", 15: "armv7m", 16: "armv7em",
}
_ARM64_SUBTYPES = {0: "arm64", 1: "arm64v8", 2: "arm64e"}
_X86_64_SUBTYPES = {3: "x86_64", 8: "x86_64h"}
# Names this project (snapshot.Arch) or Linux use for the same architectures.
_ARCH_ALIASES = {"amd64": "x86_64", "x86": "i386", "aarch64": "arm64"}


class MachOError(ValueError):
    pass


def arch_name(cpu_type: int, cpu_subtype: int) -> str:
    """The architecture name lipo, otool and dwarfdump use ("arm64", "x86_64", "arm64e", ...)."""
    sub = cpu_subtype & ~CPU_SUBTYPE_MASK & 0xFFFFFFFF
    if cpu_type == CPU_TYPE_ARM64:
        return _ARM64_SUBTYPES.get(sub, "arm64")
    if cpu_type == CPU_TYPE_X86_64:
        return _X86_64_SUBTYPES.get(sub, "x86_64")
    if cpu_type == CPU_TYPE_X86:
        return "i386"
    if cpu_type == CPU_TYPE_ARM64_32:
        return "arm64_32"
    if cpu_type == CPU_TYPE_ARM:
        return _ARM_SUBTYPES.get(sub, "arm")
    if cpu_type == CPU_TYPE_POWERPC:
        return "ppc"
    if cpu_type == CPU_TYPE_POWERPC64:
        return "ppc64"
    return f"cputype-0x{cpu_type & 0xFFFFFFFF:x}-0x{sub:x}"


def _canonical_arch(arch) -> str:
    name = str(getattr(arch, "value", arch))  # accepts snapshot.Arch too
    return _ARCH_ALIASES.get(name, name)


# --- thin images --------------------------------------------------------------------------


@dataclass(frozen=True)
class MachOHeader:
    is64: bool
    cpu_type: int
    cpu_subtype: int
    file_type: int
    ncmds: int
    sizeofcmds: int
    flags: int

    @property
    def size(self) -> int:
        """Bytes of the mach_header(_64); the load commands follow right after."""
        return MACH_HEADER_64_SIZE if self.is64 else MACH_HEADER_SIZE

    @property
    def arch(self) -> str:
        return arch_name(self.cpu_type, self.cpu_subtype)


@dataclass(frozen=True)
class Segment:
    """One LC_SEGMENT(_64), addresses as linked (not slid)."""

    name: str
    vmaddr: int
    vmsize: int
    fileoff: int
    filesize: int
    maxprot: int
    initprot: int


@dataclass(frozen=True)
class LoadCommands:
    """What this module takes from the load commands."""

    uuid: Optional[bytes]
    segments: tuple[Segment, ...]
    install_name: Optional[str] = None  # LC_ID_DYLIB: the name other images link against
    current_version: int = 0  # LC_ID_DYLIB, packed xxxx.yy.zz


def _magic_error(magic_le: int) -> MachOError:
    if magic_le in (MH_CIGAM, MH_CIGAM_64):
        return MachOError("big-endian Mach-O (PowerPC) is not supported")
    if struct.unpack(">I", struct.pack("<I", magic_le))[0] in (FAT_MAGIC, FAT_MAGIC_64):
        return MachOError("a universal (fat) file, not a single image: pick a slice first")
    return MachOError(f"not a Mach-O image (magic 0x{magic_le:08x})")


def parse_header(data: bytes) -> MachOHeader:
    """Parse a little-endian mach_header or mach_header_64 at the start of ``data``."""
    if len(data) < 4:
        raise MachOError(f"truncated Mach-O header: {len(data)} bytes")
    (magic,) = struct.unpack_from("<I", data)
    if magic not in (MH_MAGIC, MH_MAGIC_64):
        raise _magic_error(magic)
    is64 = magic == MH_MAGIC_64
    need = MACH_HEADER_64_SIZE if is64 else MACH_HEADER_SIZE
    if len(data) < need:
        raise MachOError(f"truncated Mach-O header: {len(data)} of {need} bytes")
    _, cpu_type, cpu_subtype, file_type, ncmds, sizeofcmds, flags = struct.unpack_from(
        "<IIIIIII", data)
    h = MachOHeader(is64, cpu_type, cpu_subtype, file_type, ncmds, sizeofcmds, flags)
    if sizeofcmds > MAX_SIZEOFCMDS:
        raise MachOError(f"implausible sizeofcmds {sizeofcmds} (more than {MAX_SIZEOFCMDS})")
    # Every load command takes at least 8 bytes: this bounds ncmds before any loop runs.
    if ncmds * LOAD_COMMAND_SIZE > sizeofcmds:
        raise MachOError(f"ncmds {ncmds} cannot fit in sizeofcmds {sizeofcmds}")
    return h


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_load_commands(h: MachOHeader, cmds: bytes) -> LoadCommands:
    """Walk ``h.ncmds`` load commands in ``cmds`` (the ``h.sizeofcmds`` bytes after the header).

    Every command must lie inside sizeofcmds and be at least 8 bytes long, so the walk always
    advances and always ends; commands this module has no use for are skipped by size.
    """
    if len(cmds) < h.sizeofcmds:
        raise MachOError(f"truncated load commands: {len(cmds)} of {h.sizeofcmds} bytes")
    seg_cmd, seg_size, sect_size, seg_fmt = (
        (LC_SEGMENT_64, SEGMENT_COMMAND_64_SIZE, SECTION_64_SIZE, "<16sQQQQiiII") if h.is64
        else (LC_SEGMENT, SEGMENT_COMMAND_SIZE, SECTION_SIZE, "<16sIIIIiiII"))
    wrong_seg = LC_SEGMENT if h.is64 else LC_SEGMENT_64
    uuid: Optional[bytes] = None
    segments: list[Segment] = []
    install_name: Optional[str] = None
    current_version = 0
    pos = 0
    for i in range(h.ncmds):
        where = f"load command {i} of {h.ncmds} at offset {pos}"
        if pos + LOAD_COMMAND_SIZE > h.sizeofcmds:
            raise MachOError(f"{where} runs past sizeofcmds {h.sizeofcmds}")
        cmd, cmdsize = struct.unpack_from("<II", cmds, pos)
        if cmdsize < LOAD_COMMAND_SIZE:
            raise MachOError(f"{where} (0x{cmd:x}) has cmdsize {cmdsize}, less than 8")
        if pos + cmdsize > h.sizeofcmds:
            raise MachOError(f"{where} (0x{cmd:x}, cmdsize {cmdsize}) runs past sizeofcmds "
                             f"{h.sizeofcmds}")
        if cmd == LC_UUID:
            if cmdsize < UUID_COMMAND_SIZE:
                raise MachOError(f"{where}: LC_UUID cmdsize {cmdsize} is less than 24")
            if uuid is not None:
                raise MachOError(f"{where}: a second LC_UUID")
            uuid = bytes(cmds[pos + 8 : pos + 24])
        elif cmd == seg_cmd:
            if cmdsize < seg_size:
                raise MachOError(f"{where}: segment command cmdsize {cmdsize} is less than "
                                 f"{seg_size}")
            (name, vmaddr, vmsize, fileoff, filesize, maxprot, initprot, nsects,
             _flags) = struct.unpack_from(seg_fmt, cmds, pos + 8)
            if seg_size + nsects * sect_size > cmdsize:
                raise MachOError(f"{where}: {nsects} sections do not fit in cmdsize {cmdsize}")
            segments.append(Segment(_cstring(name), vmaddr, vmsize, fileoff, filesize,
                                    maxprot, initprot))
        elif cmd == wrong_seg:
            raise MachOError(f"{where}: a {'32' if h.is64 else '64'}-bit segment command in a "
                             f"{'64' if h.is64 else '32'}-bit image")
        elif cmd == LC_ID_DYLIB:
            if cmdsize < DYLIB_COMMAND_SIZE:
                raise MachOError(f"{where}: LC_ID_DYLIB cmdsize {cmdsize} is less than 24")
            name_off, _timestamp, current_version, _compat = struct.unpack_from(
                "<IIII", cmds, pos + 8)
            if not DYLIB_COMMAND_SIZE <= name_off < cmdsize:
                raise MachOError(f"{where}: LC_ID_DYLIB name offset {name_off} is outside "
                                 f"the command")
            install_name = _cstring(bytes(cmds[pos + name_off : pos + cmdsize]))
        pos += cmdsize
    return LoadCommands(uuid, tuple(segments), install_name, current_version)


def _bytes_reader(data) -> ReadFn:
    return lambda off, size: bytes(data[off : off + size])


def _read_exact(read: ReadFn, addr: int, size: int, what: str) -> bytes:
    got = read(addr, size)
    if len(got) < size:
        raise MachOError(f"truncated {what}: {len(got)} of {size} bytes at 0x{addr:x}")
    return bytes(got[:size])


def _parse_at(read: ReadFn, addr: int, limit: Optional[int]) -> tuple[MachOHeader, LoadCommands]:
    """Header and load commands of the thin image at ``addr``; ``limit`` bytes are available
    there (None for process memory, where only the read callback knows)."""
    (magic,) = struct.unpack("<I", _read_exact(read, addr, 4, "Mach-O header"))
    if magic not in (MH_MAGIC, MH_MAGIC_64):
        raise _magic_error(magic)
    size = MACH_HEADER_64_SIZE if magic == MH_MAGIC_64 else MACH_HEADER_SIZE
    h = parse_header(_read_exact(read, addr, size, "Mach-O header"))
    if limit is not None and h.size + h.sizeofcmds > limit:
        raise MachOError(f"load commands ({h.sizeofcmds} bytes) run past the end of the "
                         f"image ({limit} bytes)")
    cmds = _read_exact(read, addr + h.size, h.sizeofcmds, "load commands")
    return h, parse_load_commands(h, cmds)


def read_uuid(data: bytes) -> Optional[bytes]:
    """The 16-byte LC_UUID of one thin image (``data`` starts with its mach header), or None."""
    return _parse_at(_bytes_reader(data), 0, len(data))[1].uuid


# --- universal files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """One architecture of a file: for a thin file the whole file."""

    arch: str
    cpu_type: int
    cpu_subtype: int
    offset: int
    size: int


def _slices(read: ReadFn, total: int) -> list[Slice]:
    head = read(0, 8)
    if len(head) < 4:
        raise MachOError(f"truncated Mach-O header: {len(head)} bytes")
    magic = struct.unpack_from(">I", head)[0]
    if magic not in (FAT_MAGIC, FAT_MAGIC_64):
        h = parse_header(_read_exact(read, 0, min(total, MACH_HEADER_64_SIZE), "Mach-O header"))
        return [Slice(h.arch, h.cpu_type, h.cpu_subtype, 0, total)]
    if len(head) < 8:
        raise MachOError(f"truncated universal header: {len(head)} of 8 bytes")
    is64 = magic == FAT_MAGIC_64
    (count,) = struct.unpack_from(">I", head, 4)
    if count == 0:
        raise MachOError("universal file with no slices")
    if count > MAX_FAT_ARCHS:
        raise MachOError(f"universal header lists {count} slices (more than {MAX_FAT_ARCHS}: "
                         f"a Java class file?)")
    entry = FAT_ARCH_64_SIZE if is64 else FAT_ARCH_SIZE
    table_end = 8 + count * entry
    if table_end > total:
        raise MachOError(f"universal header lists {count} slices; its table runs past the "
                         f"end of the file ({total} bytes)")
    table = _read_exact(read, 8, count * entry, "universal header")
    out: list[Slice] = []
    for i in range(count):
        if is64:
            cpu_type, cpu_subtype, offset, size, _align, _reserved = struct.unpack_from(
                ">IIQQII", table, i * entry)
        else:
            cpu_type, cpu_subtype, offset, size, _align = struct.unpack_from(
                ">IIIII", table, i * entry)
        name = arch_name(cpu_type, cpu_subtype)
        if offset < table_end or offset + size > total:
            raise MachOError(f"slice {i} ({name}) at offset {offset}, size {size} is not "
                             f"inside the file ({total} bytes, header {table_end})")
        if size < MACH_HEADER_SIZE:
            raise MachOError(f"slice {i} ({name}) of {size} bytes is too small for an image")
        if any(s.arch == name for s in out):
            raise MachOError(f"two {name} slices")
        out.append(Slice(name, cpu_type, cpu_subtype, offset, size))
    return out


def _slice_commands(read: ReadFn, s: Slice) -> LoadCommands:
    h, lc = _parse_at(read, s.offset, s.size)
    if h.cpu_type != s.cpu_type:
        raise MachOError(f"the {s.arch} slice holds an image for {h.arch}")
    return lc


def _uuids(read: ReadFn, total: int) -> dict[str, Optional[bytes]]:
    return {s.arch: _slice_commands(read, s).uuid for s in _slices(read, total)}


def _select(read: ReadFn, total: int, arch) -> Optional[bytes]:
    slices = _slices(read, total)
    if arch is None:
        if len(slices) > 1:
            raise MachOError("a universal file with slices "
                             f"{', '.join(s.arch for s in slices)}: name the architecture")
        return _slice_commands(read, slices[0]).uuid
    name = _canonical_arch(arch)
    for s in slices:
        if s.arch == name:
            return _slice_commands(read, s).uuid
    raise MachOError(f"no {name} image (the file has {', '.join(s.arch for s in slices)})")


def slices(data: bytes) -> list[Slice]:
    """The architectures in ``data``: every slice of a universal file, or the one thin image."""
    return _slices(_bytes_reader(data), len(data))


def uuids(data: bytes) -> dict[str, Optional[bytes]]:
    """Architecture name to LC_UUID (None if that image has none), for thin or universal bytes."""
    return _uuids(_bytes_reader(data), len(data))


def uuid_for_arch(data: Union[bytes, bytearray, memoryview], arch=None) -> Optional[bytes]:
    """Like :func:`file_uuid`, over bytes."""
    return _select(_bytes_reader(data), len(data), arch)


def _with_file(path, fn):
    """Run ``fn(read, total)`` over the file, reading only the headers it asks for."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size

        def read(off: int, size: int) -> bytes:
            f.seek(off)
            return f.read(size)

        try:
            return fn(read, total)
        except MachOError as exc:
            raise MachOError(f"{os.fspath(path)}: {exc}") from None


def file_uuids(path) -> dict[str, Optional[bytes]]:
    """Architecture name to LC_UUID for a thin or universal file (None: that slice has none).

    Raises MachOError for malformed files, OSError when the file cannot be read.
    """
    return _with_file(path, _uuids)


def file_uuid(path, arch=None) -> Optional[bytes]:
    """The LC_UUID of ``path`` for ``arch`` ("arm64", "x86_64", ...; also snapshot.Arch).

    Without ``arch``, a thin file's image or a universal file's only slice; a universal file
    with several slices is ambiguous and raises. A named ``arch`` that the file lacks raises
    too, also for thin files: the UUID of another architecture would match the wrong
    symbols. None when the image has no LC_UUID (linked with -no_uuid).
    """
    return _with_file(path, lambda read, total: _select(read, total, arch))


# --- images in process memory -------------------------------------------------------------


@dataclass(frozen=True)
class MachOImage:
    """What the process memory says about one image that dyld loaded at ``base``."""

    base: int  # the address of the mach header: __TEXT's vmaddr plus the slide
    size: int  # __TEXT's vmsize: what Crashpad and Breakpad write as SizeOfImage
    slide: int  # load address minus link address, as dyld computes it from __TEXT
    span_start: int  # slid lowest address of the segments other than __PAGEZERO
    span_end: int  # slid end of the highest such segment
    uuid: Optional[bytes]
    cpu_type: int
    cpu_subtype: int
    file_type: int
    is64: bool
    segments: tuple[Segment, ...]  # as linked; add ``slide`` for addresses in the process
    install_name: Optional[str] = None
    current_version: int = 0

    @property
    def arch(self) -> str:
        return arch_name(self.cpu_type, self.cpu_subtype)


def image_info(read: ReadFn, header_addr: int) -> MachOImage:
    """Parse the image whose mach header is at ``header_addr`` in process memory.

    ``read(addr, size)`` returns the bytes there (fewer when the memory ends, which counts as
    truncation) or raises OSError. ``size`` is __TEXT's vmsize, not the span: images in the
    dyld shared cache keep __TEXT, __DATA and a __LINKEDIT shared with every other image far
    apart, so a span would cover other modules and mislead readers that attribute addresses
    to the module whose [base, base + size) holds them. Code lies in __TEXT, which is what
    stack walkers need; the span is there for whoever wants every mapped segment.
    """
    try:
        h, lc = _parse_at(read, header_addr, None)
        if h.file_type not in LOADED_FILE_TYPES:
            raise MachOError(f"file type {h.file_type} is not a loadable image (executable, "
                             f"dylib, dylinker or bundle)")
        texts = [s for s in lc.segments if s.name == "__TEXT"]
        if len(texts) != 1:
            raise MachOError("no __TEXT segment" if not texts else "more than one __TEXT segment")
        text = texts[0]
        if text.vmsize == 0:
            raise MachOError("the __TEXT segment is empty")
        slide = header_addr - text.vmaddr
        mapped = [s for s in lc.segments if s.name != "__PAGEZERO" and s.vmsize]
        start = min(s.vmaddr for s in mapped) + slide
        end = max(s.vmaddr + s.vmsize for s in mapped) + slide
        top = 1 << (64 if h.is64 else 32)
        if start < 0 or end > top:
            raise MachOError(f"segments span 0x{start:x}..0x{end:x}, outside the "
                             f"{'64' if h.is64 else '32'}-bit address space")
    except MachOError as exc:
        raise MachOError(f"image at 0x{header_addr:x}: {exc}") from None
    return MachOImage(header_addr, text.vmsize, slide, start, end, lc.uuid, h.cpu_type,
                      h.cpu_subtype, h.file_type, h.is64, lc.segments, lc.install_name,
                      lc.current_version)


# --- identity -----------------------------------------------------------------------------


def identity(source: Union[MachOImage, bytes, bytearray, memoryview, str, os.PathLike],
             arch=None) -> Optional[MachOUuid]:
    """The module identity of an image in memory, of image bytes, or of a file (``arch`` picks
    a universal file's slice); None when the image has no LC_UUID."""
    if isinstance(source, MachOImage):
        uuid = source.uuid
    elif isinstance(source, (bytes, bytearray, memoryview)):
        uuid = uuid_for_arch(source, arch)
    else:
        uuid = file_uuid(source, arch)
    return MachOUuid(uuid) if uuid is not None else None
