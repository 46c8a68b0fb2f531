"""Parsers for the /proc and /sys files the Linux backend reads. Pure functions over text."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ...snapshot import MemoryRegion, RegionKind


@dataclass(frozen=True)
class Mapping:
    """One /proc/PID/maps line."""

    start: int
    end: int
    perms: str  # e.g. "r-xp"
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def executable(self) -> bool:
        return self.perms[2] == "x"

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def merge_key(self) -> tuple:
        """Adjacent mappings with equal keys are one stretch of memory (see stacks.py)."""
        return (self.perms, self.inode)

    def region(self) -> MemoryRegion:
        return MemoryRegion(
            start=self.start, size=self.size, readable=self.readable, writable=self.writable,
            executable=self.executable,
            kind=RegionKind.MAPPED if self.shared else RegionKind.PRIVATE,
            path=self.path, offset=self.offset,
        )


def parse_maps(text: bytes) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition(b"-")
        path = parts[5].decode("utf-8", "surrogateescape") if len(parts) > 5 else ""
        out.append(Mapping(
            start=int(lo, 16), end=int(hi, 16), perms=parts[1].decode(),
            offset=int(parts[2], 16), dev=parts[3].decode(), inode=int(parts[4]), path=path,
        ))
    return out


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat we use (field numbers as in proc(5))."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    utime: int  # clock ticks
    stime: int
    start_time: int  # clock ticks after boot
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int


PF_KTHREAD = 0x00200000


def parse_stat(text: bytes) -> ProcStat:
    # comm may contain spaces and parentheses: it runs to the last ')'.
    lparen = text.index(b"(")
    rparen = text.rindex(b")")
    rest = text[rparen + 2 :].split()
    f = [b"", b""] + rest  # f[i] is field i+1 of proc(5) for i >= 2

    def field(n: int) -> int:
        return int(f[n - 1]) if len(f) >= n else 0

    return ProcStat(
        pid=int(text[:lparen]), comm=text[lparen + 1 : rparen].decode("utf-8", "replace"),
        state=f[2].decode(), ppid=field(4), flags=field(9), utime=field(14), stime=field(15),
        start_time=field(22), arg_start=field(48), arg_end=field(49), env_start=field(50),
        env_end=field(51),
    )


def parse_status(text: bytes) -> dict[str, str]:
    out = {}
    for line in text.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def boot_time() -> int:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return int(line.split()[1])
    return 0


def read_file(path: str, limit: int = 64 << 20) -> Optional[bytes]:
    """The whole file, or None when it cannot be read (vanished, permission, ...)."""
    try:
        with open(path, "rb", buffering=0) as f:
            chunks = []
            total = 0
            while total < limit:
                b = f.read(min(1 << 20, limit - total))
                if not b:
                    break
                chunks.append(b)
                total += len(b)
            return b"".join(chunks)
    except OSError:
        return None


def list_tids(pid: int) -> list[int]:
    return [int(n) for n in os.listdir(f"/proc/{pid}/task") if n.isdigit()]


def parse_cpuinfo(text: bytes) -> dict[str, str]:
    """Key/value pairs of the first processor block (and the processor count)."""
    out: dict[str, str] = {}
    count = 0
    for line in text.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "processor":
            count += 1
        if count <= 1:
            out.setdefault(key, value.strip())
    out["_count"] = str(count)
    return out


# cpuid(1).edx bit for each /proc/cpuinfo flag name.
X86_FEATURE_BITS = {
    "fpu": 0, "vme": 1, "de": 2, "pse": 3, "tsc": 4, "msr": 5, "pae": 6, "mce": 7, "cx8": 8,
    "apic": 9, "sep": 11, "mtrr": 12, "pge": 13, "mca": 14, "cmov": 15, "pat": 16,
    "pse36": 17, "pn": 18, "clflush": 19, "dts": 21, "acpi": 22, "mmx": 23, "fxsr": 24,
    "sse": 25, "sse2": 26, "ss": 27, "ht": 28, "tm": 29, "ia64": 30, "pbe": 31,
}
# cpuid(0x80000001).edx bits.
X86_AMD_FEATURE_BITS = {"syscall": 11, "nx": 20, "mmxext": 22, "fxsr_opt": 25, "pdpe1gb": 26,
                        "rdtscp": 27, "lm": 29, "3dnowext": 30, "3dnow": 31}
