"""Open an ELF core file for reading: decompress it if systemd stored it compressed, spool
it when it comes through a pipe, check its header and segments, and read its memory with
pread (never mmap, never whole: a multi-GiB core costs almost no memory of ours).
"""

from __future__ import annotations

import bisect
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Union

from ..errors import DumpError
from ..binfmt import elfcore as ec

ELF_MAGIC = b"\x7fELF"
# Compressed cores as systemd-coredump stores them: magic -> decompressor command.
COMPRESSORS = (
    (b"\x28\xb5\x2f\xfd", "zstd", ["zstd", "-d", "-c", "-q"]),
    (b"\x04\x22\x4d\x18", "lz4", ["lz4", "-d", "-c", "-q"]),
    (b"\xfd7zXZ\x00", "xz", ["xz", "-d", "-c", "-q"]),
)
MAX_NOTES = 256 << 20
MAX_SEGMENTS = 1 << 20
_COPY = 4 << 20


class CoreFileError(DumpError):
    """The input is not a usable core file (truncated, corrupt, foreign, not a core)."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def held_end(self) -> int:
        """End of the bytes the file holds (a segment may hold only its first page)."""
        return self.vaddr + min(self.filesz, self.memsz)


def compression_of(head: bytes) -> Optional[tuple[str, list[str]]]:
    for magic, name, cmd in COMPRESSORS:
        if head.startswith(magic):
            return name, cmd
    return None


class CoreFile:
    """A core file opened for random access. ``read`` is a MemorySource over its PT_LOADs."""

    def __init__(self, fd: int, name: str, owns_fd: bool = True, mtime: Optional[int] = None):
        self.fd = fd
        self.name = name
        self._owns = owns_fd
        self.size = os.fstat(fd).st_size
        self.mtime = int(os.fstat(fd).st_mtime) if mtime is None else mtime
        self._parse_headers()

    # -- opening -------------------------------------------------------------------------

    def _pread(self, size: int, offset: int) -> bytes:
        # One read is the usual case: no copy, and at most ``size`` bytes held at once.
        first = os.pread(self.fd, size, offset)
        if len(first) == size or not first:
            return first
        out = bytearray(first)
        while len(out) < size:
            chunk = os.pread(self.fd, min(size - len(out), 8 << 20), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def _parse_headers(self) -> None:
        head = self._pread(ec.EHDR.size, 0)
        what = f"{self.name}"
        if head[:4] != ELF_MAGIC:
            if head[:4] == b"MDMP":
                raise CoreFileError(f"{what} is a minidump, not a core file")
            raise CoreFileError(f"{what} is not an ELF core file (no ELF header)")
        if len(head) < ec.EHDR.size:
            raise CoreFileError(f"{what} is truncated: {len(head)} bytes, shorter than an "
                                "ELF header")
        (ident, etype, machine, _v, _entry, phoff, _shoff, _flags, _ehsize, phentsize,
         phnum, _she, _shn, _shs) = ec.EHDR.unpack(head)
        if ident[4] != ec.ELFCLASS64 or ident[5] != ec.ELFDATA2LSB:
            raise CoreFileError(f"{what} is a 32-bit or big-endian ELF file; only 64-bit "
                                "little-endian cores (x86-64, aarch64) are supported")
        if etype != ec.ET_CORE:
            raise CoreFileError(f"{what} is an ELF file but not a core file (type {etype})")
        if machine not in (ec.EM_X86_64, ec.EM_AARCH64):
            raise CoreFileError(f"{what} is a core of another architecture "
                                f"({ec.machine_name(machine)}); only x86-64 and aarch64 are "
                                "supported")
        if phnum == ec.PN_XNUM and _shoff:
            # More than 65534 mappings: the real count is in section header 0's sh_info.
            sh0 = self._pread(64, _shoff)
            phnum = int.from_bytes(sh0[44:48], "little") if len(sh0) == 64 else phnum
        if phnum == ec.PN_XNUM or phnum > MAX_SEGMENTS or (phnum and phentsize < ec.PHDR.size):
            raise CoreFileError(f"{what} has a corrupt program header table "
                                f"({phnum} entries of {phentsize} bytes)")
        self.machine = machine
        table = self._pread(phnum * phentsize, phoff)
        if len(table) < phnum * phentsize:
            raise CoreFileError(f"{what} is truncated: the program headers end at byte "
                                f"{phoff + phnum * phentsize}, the file has {self.size}")
        loads, notes = [], []
        for i in range(phnum):
            ptype, flags, off, vaddr, _pa, filesz, memsz, _al = ec.PHDR.unpack_from(
                table, i * phentsize)
            if ptype == ec.PT_LOAD:
                loads.append(Segment(vaddr, memsz, off, filesz, flags))
            elif ptype == ec.PT_NOTE:
                notes.append((off, filesz))
        for s in loads + [Segment(0, n, o, n, 0) for o, n in notes]:
            if s.filesz and s.offset + s.filesz > self.size:
                raise CoreFileError(
                    f"{what} is truncated: a segment ends at byte {s.offset + s.filesz}, "
                    f"the file has {self.size} (was the core cut short by a size limit?)")
        if not notes:
            raise CoreFileError(f"{what} has no notes (PT_NOTE): no threads or registers")
        loads.sort(key=lambda s: s.vaddr)
        self.segments = loads
        self._starts = [s.vaddr for s in loads]
        self.note_segments = notes

    def note_bytes(self) -> list[bytes]:
        out = []
        for off, size in self.note_segments:
            if size > MAX_NOTES:
                raise CoreFileError(f"{self.name} has implausibly large notes ({size} bytes)")
            out.append(self._pread(size, off))
        return out

    # -- memory ----------------------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        """Bytes at ``address`` held by the core (shorter where it holds none)."""
        out = bytearray()
        addr, want = address, size
        i = bisect.bisect_right(self._starts, addr) - 1
        while want > 0 and 0 <= i < len(self.segments):
            s = self.segments[i]
            if not s.vaddr <= addr < s.held_end:
                break
            n = min(want, s.held_end - addr)
            piece = self._pread(n, s.offset + addr - s.vaddr)
            out += piece
            if len(piece) < n:
                break
            addr += n
            want -= n
            i += 1
        return bytes(out)

    def readinto(self, address: int, buf) -> int:
        """Fill ``buf`` from ``address``; returns how many bytes the core held."""
        data = self.read(address, len(buf))
        memoryview(buf).cast("B")[: len(data)] = data
        return len(data)

    def held_ranges(self) -> list[tuple[int, int]]:
        """The [start, end) ranges whose bytes the file holds, one per segment (one per
        mapping of the process: adjacent mappings stay apart, as in live full dumps)."""
        return [(s.vaddr, s.held_end) for s in self.segments if s.held_end > s.vaddr]

    def close(self) -> None:
        if self._owns and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- input: paths, pipes, compressed files -----------------------------------------------------


def _linkable_temp(directory: Optional[str]) -> Optional[int]:
    """An unnamed read-write file in ``directory`` that can later get a name (O_TMPFILE
    without O_EXCL); None where the filesystem has no O_TMPFILE."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        return os.open(directory or tempfile.gettempdir(),
                       flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


def spool(src: BinaryIO, directory: Optional[str] = None,
          deadline: Optional[float] = None, head: bytes = b"",
          linkable: bool = False) -> int:
    """Copy a stream into an unnamed temporary file; returns its descriptor (at offset 0).

    ``deadline`` (time.monotonic) bounds the copy: past it a CoreFileError is raised.
    ``linkable``: where possible, a file that output.link_anonymous can name later."""
    fd = _linkable_temp(directory) if linkable else None
    if fd is None:
        fd = _temp_fd(directory)
    try:
        if head:
            os.write(fd, head)
        readinto = getattr(src, "readinto", None)
        buf = bytearray(_COPY)
        view = memoryview(buf)
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise CoreFileError("gave up reading the core: the time limit passed "
                                    "(slow disk or huge core)")
            n = readinto(view) if readinto else len(_into(view, src.read(_COPY)))
            if not n:
                break
            done = 0
            while done < n:
                done += os.write(fd, view[done:n])
        return fd
    except OSError as exc:
        os.close(fd)
        raise CoreFileError(f"cannot store the core in a temporary file: {exc.strerror}") \
            from None
    except BaseException:
        os.close(fd)
        raise


def _temp_fd(directory: Optional[str]) -> int:
    """A descriptor of an unnamed temporary file in ``directory`` (the system's default
    when None)."""
    tmp = tempfile.TemporaryFile(dir=directory)
    try:
        return os.dup(tmp.fileno())
    finally:
        tmp.close()


def _into(view: memoryview, data: bytes) -> bytes:
    view[: len(data)] = data
    return data


def decompress(path_or_fd: Union[str, int], command: list[str], name: str,
               directory: Optional[str] = None) -> int:
    """Run a decompressor over a compressed core into an unnamed temporary file."""
    if shutil.which(command[0]) is None:
        raise CoreFileError(f"{name} is {command[0]}-compressed and the {command[0]} command "
                            "is not installed")
    fd = _temp_fd(directory)
    try:
        src = open(path_or_fd, "rb", closefd=not isinstance(path_or_fd, int))
        with src:
            if isinstance(path_or_fd, int):
                src.seek(0)
            r = subprocess.run(command, stdin=src, stdout=fd, stderr=subprocess.PIPE)
        if r.returncode != 0:
            msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CoreFileError(f"{name}: {command[0]} could not decompress it"
                                + (f" ({msg[-1]})" if msg else ""))
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_core(source: Union[str, os.PathLike, BinaryIO, int], temp_dir: Optional[str] = None,
              deadline: Optional[float] = None) -> CoreFile:
    """A CoreFile from a path, an open file or a descriptor it then owns; pipes are
    spooled, compressed cores decompressed, into unnamed temporary files in ``temp_dir``."""
    if isinstance(source, int):
        return open_core_fd(source, "standard input", temp_dir)
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CoreFileError(f"cannot read {name}: {exc.strerror}") from None
    else:
        name = getattr(source, "name", "standard input")
        name = name if isinstance(name, str) else "standard input"
        try:
            seekable = source.seekable()
        except (AttributeError, OSError, ValueError):
            seekable = False
        if seekable and hasattr(source, "fileno"):
            fd = os.dup(source.fileno())
        else:
            fd = spool(source, temp_dir, deadline)
    return open_core_fd(fd, name, temp_dir)


def open_core_fd(fd: int, name: str, temp_dir: Optional[str] = None) -> CoreFile:
    """A CoreFile owning ``fd`` (closed here on failure); compressed cores decompressed."""
    try:
        head = os.pread(fd, 8, 0)
        comp = compression_of(head)
        mtime = int(os.fstat(fd).st_mtime)  # of the file as given, not the decompressed copy
        if comp is not None:
            newfd = decompress(fd, comp[1], name, temp_dir)
            os.close(fd)
            fd = newfd
        return CoreFile(fd, name, mtime=mtime)
    except BaseException:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        raise


ReadFn = Callable[[int, int], bytes]
