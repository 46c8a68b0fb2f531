"""Where the kernel writes core dumps, and noticing them appear without tracing anyone.

`generate_dump run` turns a crashing descendant's core dump into a minidump. Facts used:
- /proc/sys/kernel/core_pattern: a file name pattern (relative to the crashing process's
  working directory unless absolute; %-specifiers; ".PID" appended when core_uses_pid is
  set and the pattern has no %p) or a pipe to a handler ("|...") whose output we cannot see;
- RLIMIT_CORE's soft limit, inherited over fork and exec, decides whether a core is written
  and bounds its size (the kernel stops writing at the limit);
- the kernel creates the core file and closes it once written: inotify's IN_CLOSE_WRITE on
  the directory says when it is complete, at no cost to the processes being watched;
- the core's NT_PRPSINFO note names the process, its parent, process group and session.
"""

from __future__ import annotations

import os
import resource
import struct

TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    from re import Pattern
    from typing import Optional

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
CORE_USES_PID = "/proc/sys/kernel/core_uses_pid"


class NamePattern:
    """``match(name)`` for core file names; the regex is compiled (and `re` imported) at
    the first use, after run's start-up, not during it."""

    def __init__(self, pieces: list[tuple[str, str]]):
        self.pieces = pieces  # ("literal", text) or ("regex", pattern)
        self._compiled: Optional[Pattern[str]] = None

    def match(self, name: str):
        if self._compiled is None:
            import re

            self._compiled = re.compile("".join(
                re.escape(text) if kind == "literal" else text
                for kind, text in self.pieces) + r"\Z")
        return self._compiled.match(name)


class CorePattern:
    """kernel.core_pattern, parsed for finding the files it names: ``text``; ``pipe``
    (to a handler); ``directory``, absolute, or relative to the crashing process's cwd
    ("" = the cwd); ``name``, a NamePattern for the file name, or None if we cannot
    predict it. (A plain class: collections.namedtuple costs run's start-up.)"""

    __slots__ = ("text", "pipe", "directory", "name")

    def __init__(self, text: str, pipe: bool, directory: str, name: Optional[NamePattern]):
        self.text, self.pipe, self.directory, self.name = text, pipe, directory, name

    @property
    def relative(self) -> bool:
        return not self.pipe and not os.path.isabs(self.directory)

    def directory_for(self, cwd: str) -> str:
        return os.path.normpath(os.path.join(cwd, self.directory))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def parse_core_pattern(text: str, uses_pid: bool) -> CorePattern:
    text = text or "core"
    if text.startswith("|"):
        return CorePattern(text, True, "", None)
    directory, base = os.path.split(text)
    if "%" in directory:
        return CorePattern(text, False, directory, None)  # per-process directories
    pieces: list[tuple[str, str]] = []
    has_pid, i = False, 0
    while i < len(base):
        c = base[i]
        if c == "%" and i + 1 < len(base):
            spec = base[i + 1]
            if spec == "%":
                pieces.append(("literal", "%"))
            else:
                has_pid |= spec == "p"
                pieces.append(("regex", r"\d+" if spec in "pPiIugst" else r"[^/]*"))
            i += 2
            continue
        pieces.append(("literal", c))
        i += 1
    if uses_pid and not has_pid:
        pieces.append(("regex", r"\.\d+"))
    return CorePattern(text, False, directory, NamePattern(pieces))


def is_our_handler(pattern: CorePattern) -> bool:
    """Does the pipe run `generate_dump core-handler` (which writes minidumps itself)?"""
    words = pattern.text[1:].split()
    return pattern.pipe and "core-handler" in words and any(
        "generate_dump" in os.path.basename(w) or w.endswith("generate_dump") for w in words)


def system_core_pattern() -> CorePattern:
    return parse_core_pattern(_read(CORE_PATTERN), _read(CORE_USES_PID) not in ("", "0"))


def core_soft_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_CORE)


def raised_core_limit(bound: int) -> Optional[tuple[int, int]]:
    """The (soft, hard) RLIMIT_CORE to give the command so that it dumps core, at most
    ``bound`` bytes; None to leave the limit as it is (already as large, or bound 0)."""
    soft, hard = core_soft_limit()
    if bound <= 0:
        return None
    want = bound if hard == resource.RLIM_INFINITY else min(bound, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return None
    return want, hard


class DirectoryWatch:
    """inotify on directories for files closed after writing (IN_CLOSE_WRITE)."""

    IN_CLOSE_WRITE = 0x8
    IN_MOVED_TO = 0x80
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory
        self.watched: set[str] = set()

    def add(self, directory: str) -> bool:
        if directory in self.watched:
            return True
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory),
                                          self.IN_CLOSE_WRITE | self.IN_MOVED_TO)
        if wd < 0:
            return False
        self.watched.add(directory)
        self.dirs[wd] = directory
        return True

    def read(self) -> list[str]:
        """Paths of files written since the last call."""
        out: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            if not data:
                return out
            pos = 0
            while pos + 16 <= len(data):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16:pos + 16 + size].split(b"\0", 1)[0]
                pos += 16 + size
                if wd in self.dirs and name:
                    out.append(os.path.join(self.dirs[wd], os.fsdecode(name)))

    def close(self, *, exiting: bool = False) -> None:
        """Closing the last reference to an inotify descriptor that has watches waits for
        an RCU grace period in the kernel (7-15 ms measured here). With ``exiting`` (the
        caller exits next), a forked child holds the last reference until we are gone
        and pays that wait, so that whoever waits for us does not."""
        if exiting and self.watched:
            try:
                gone_r, gone_w = os.pipe()
                pid = os.fork()
            except OSError:
                pid = -1
            if pid == 0:
                try:
                    keep = sorted((self.fd, gone_r))
                    os.closerange(0, keep[0])  # stdout and stderr too: the caller may be
                    os.closerange(keep[0] + 1, keep[1])  # reading them until EOF
                    os.closerange(keep[1] + 1, 1 << 20)
                    os.read(gone_r, 1)  # EOF once the parent has exited
                finally:
                    os._exit(0)
            if pid > 0:
                os.close(gone_r)  # gone_w stays open until our exit
        os.close(self.fd)


class CoreIds:
    """Who wrote a core: from its NT_PRPSINFO note; ``signal`` is pr_cursig of the first
    NT_PRSTATUS (the signal it died of)."""

    __slots__ = ("pid", "ppid", "pgrp", "sid", "fname", "signal")

    def __init__(self, pid: int, ppid: int, pgrp: int, sid: int, fname: str, signal: int):
        self.pid, self.ppid, self.pgrp, self.sid = pid, ppid, pgrp, sid
        self.fname, self.signal = fname, signal


def core_ids(path: str) -> Optional[CoreIds]:
    """Who wrote a 64-bit little-endian ELF core (from its first NT_PRSTATUS and its
    NT_PRPSINFO); None if it is not one. Reads only the headers and notes, so it works on
    a core the size limit cut short."""
    from ...binfmt import elfcore as ec

    try:
        with open(path, "rb") as f:
            head = f.read(ec.EHDR.size)
            if len(head) < ec.EHDR.size:
                return None
            (ident, etype, machine, _v, _e, phoff, _s, _f, _eh, phentsize, phnum, *_r) = \
                ec.EHDR.unpack(head)
            if ident[:4] != b"\x7fELF" or ident[4] != ec.ELFCLASS64 \
                    or ident[5] != ec.ELFDATA2LSB or etype != ec.ET_CORE \
                    or phentsize < ec.PHDR.size:
                return None
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            status = info = None
            for i in range(len(table) // phentsize):
                ptype, _fl, offset, _va, _pa, filesz, _mem, _al = ec.PHDR.unpack_from(
                    table, i * phentsize)
                if ptype != ec.PT_NOTE:
                    continue
                f.seek(offset)
                notes = f.read(min(filesz, 4 << 20))
                pos = 0
                while pos + 12 <= len(notes) and (status is None or info is None):
                    namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
                    pos += 12 + ((namesz + 3) & ~3)
                    desc = notes[pos:pos + descsz]
                    pos += (descsz + 3) & ~3
                    if ntype == ec.NT_PRSTATUS and status is None:
                        status = ec.parse_prstatus(desc, machine)
                    elif ntype == ec.NT_PRPSINFO and info is None:
                        info = ec.parse_prpsinfo(desc)
            if status is None or info is None:
                return None
            return CoreIds(info.pid, info.ppid, status.pgrp, status.sid, info.fname,
                           status.cursig)
    except (OSError, struct.error, ValueError, KeyError):
        return None
