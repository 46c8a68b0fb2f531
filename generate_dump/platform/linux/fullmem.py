"""Which mappings a full dump copies: what the kernel would put in a core file.

Every readable mapping, except those the process marked MADV_DONTDUMP ("dd" in the
VmFlags of /proc/PID/smaps) and the classes /proc/PID/coredump_filter leaves out. As in
the kernel, a file-backed mapping that the filter excludes still contributes its first
page when it starts with an ELF header (bit 4), so modules stay identifiable.
"""

from __future__ import annotations

from . import procfs
from .procfs import Mapping

# coredump_filter bits (core(5)).
ANON_PRIVATE, ANON_SHARED, FILE_PRIVATE, FILE_SHARED = 0, 1, 2, 3
ELF_HEADERS, HUGE_PRIVATE, HUGE_SHARED = 4, 5, 6
DEFAULT_FILTER = 0x33
_NEVER = ("[vvar]", "[vsyscall]", "[vvar_vclock]")


def vm_flags(smaps: bytes) -> dict[int, set[str]]:
    """Start address -> VmFlags of each mapping in a /proc/PID/smaps text, plus the
    pseudo-flag "anon" when the mapping has anonymous (copy-on-write) pages."""
    out: dict[int, set[str]] = {}
    current = None
    anon = False
    for line in smaps.splitlines():
        head = line.split(b" ", 1)[0]
        if b"-" in head and not head.endswith(b":"):
            try:
                current = int(head.split(b"-")[0], 16)
            except ValueError:
                current = None
            anon = False
        elif line.startswith(b"Anonymous:"):
            anon = line.split()[1] != b"0"
        elif line.startswith(b"VmFlags:") and current is not None:
            out[current] = set(line[8:].decode().split()) | ({"anon"} if anon else set())
    return out


def coredump_filter(pid: int) -> int:
    raw = procfs.read_file(f"/proc/{pid}/coredump_filter")
    try:
        return int(raw, 16) if raw else DEFAULT_FILTER
    except ValueError:
        return DEFAULT_FILTER


def full_ranges(pid: int, maps: list[Mapping], read_head=None) -> list[tuple[int, int]]:
    """The [start, end) ranges a full dump holds. ``read_head(addr)`` returns the first
    bytes at ``addr`` (to recognize ELF headers)."""
    flags = vm_flags(procfs.read_file(f"/proc/{pid}/smaps") or b"")
    mask = coredump_filter(pid)
    out = []
    for m in maps:
        if not m.readable or m.path in _NEVER:
            continue
        vf = flags.get(m.start, set())
        if "dd" in vf:
            continue  # MADV_DONTDUMP
        anonymous = m.inode == 0
        if "ht" in vf:
            bit = HUGE_SHARED if m.shared else HUGE_PRIVATE
        elif anonymous or (not m.shared and "anon" in vf):
            # A private file mapping with copy-on-write pages (.data, .bss, relocated
            # GOT) counts as anonymous memory, as in the kernel's core dumps.
            bit = ANON_SHARED if m.shared else ANON_PRIVATE
        else:
            bit = FILE_SHARED if m.shared else FILE_PRIVATE
        if mask >> bit & 1:
            out.append((m.start, m.end))
        elif (mask >> ELF_HEADERS & 1) and not anonymous and m.offset == 0 \
                and read_head is not None and read_head(m.start) == b"\x7fELF":
            out.append((m.start, min(m.end, m.start + 4096)))
    return out
