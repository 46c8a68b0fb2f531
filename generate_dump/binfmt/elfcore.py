"""Linux ELF core file facts: note types and the layouts of the notes the kernel, gdb's
gcore and systemd-coredump write (prstatus, prpsinfo, siginfo, NT_FILE), for x86-64 and
AArch64. Pure byte <-> value conversions, shared by the core reader and the core writer.

Layouts are those of the kernel's ``struct elf_prstatus`` / ``struct elf_prpsinfo``
(include/uapi/linux/elfcore.h) on 64-bit little-endian machines.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from ..platform.linux.signals import FAULT_SIGNALS

ET_CORE = 4
EM_X86_64 = 62
EM_AARCH64 = 183
ELFCLASS64 = 2
ELFDATA2LSB = 1
PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4
PN_XNUM = 0xFFFF  # e_phnum when the count is in section header 0 (sh_info)

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # 56 bytes

# Note types (name "CORE" unless said otherwise).
NT_PRSTATUS = 1
NT_PRFPREG = 2  # NT_FPREGSET
NT_PRPSINFO = 3
NT_AUXV = 6
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
NT_X86_XSTATE = 0x202  # name "LINUX"
NT_ARM_TLS = 0x401  # name "LINUX"

# Signals whose default action writes a core (signal(7)): only these are crashes.
CORE_SIGNALS = frozenset({3, 4, 5, 6, 7, 8, 11, 24, 25, 31})

# struct elf_prstatus: elf_siginfo(12) cursig(2)+pad(2) sigpend(8) sighold(8)
# pid ppid pgrp sid (4 each) 4 timevals (16 each) = 112 bytes, then pr_reg, then pr_fpvalid.
_PRSTATUS_HEAD = struct.Struct("<iiihxxQQiiiiqqqqqqqq")  # 112 bytes
PR_REG_OFFSET = 112

# x86-64 user_regs_struct order (27 words).
AMD64_USER_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
    "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
    "gs_base", "ds", "es", "fs", "gs",
)
# AArch64 user_pt_regs: x0..x30, sp, pc, pstate (34 words).
ARM64_USER_REGS = tuple(f"x{i}" for i in range(31)) + ("sp", "pc", "pstate")

_ARCH_REGS = {EM_X86_64: AMD64_USER_REGS, EM_AARCH64: ARM64_USER_REGS}
PRPSINFO = struct.Struct("<bcbbxxxxQIIiiii16s80s")  # 136 bytes
SIGINFO_SIZE = 128
FXSAVE_SIZE = 512
ARM64_FPSIMD_SIZE = 528  # v0..v31, fpsr, fpcr, 8 bytes padding


class CoreFormatError(ValueError):
    """The bytes are not what a core file note of that type must hold."""


def prstatus_size(machine: int) -> int:
    return (PR_REG_OFFSET + 8 * len(_ARCH_REGS[machine]) + 4 + 7) & ~7


@dataclass(frozen=True)
class PrStatus:
    """One thread's NT_PRSTATUS: identity, signal state, times and general registers."""

    pid: int  # the thread id
    ppid: int = 0
    pgrp: int = 0
    sid: int = 0
    cursig: int = 0
    sigpend: int = 0
    sighold: int = 0
    utime: float = 0.0
    stime: float = 0.0
    regs: tuple[tuple[str, int], ...] = ()

    def reg(self, name: str) -> int:
        return dict(self.regs).get(name, 0)


def parse_prstatus(data: bytes, machine: int) -> PrStatus:
    names = _ARCH_REGS[machine]
    need = PR_REG_OFFSET + 8 * len(names)
    if len(data) < need:
        raise CoreFormatError(f"NT_PRSTATUS holds {len(data)} bytes, needs {need}")
    (signo, _code, _errno, cursig, sigpend, sighold, pid, ppid, pgrp, sid,
     ut_s, ut_us, st_s, st_us, *_children) = _PRSTATUS_HEAD.unpack_from(data, 0)
    words = struct.unpack_from(f"<{len(names)}Q", data, PR_REG_OFFSET)
    return PrStatus(pid=pid, ppid=ppid, pgrp=pgrp, sid=sid, cursig=cursig, sigpend=sigpend,
                    sighold=sighold, utime=ut_s + ut_us / 1e6, stime=st_s + st_us / 1e6,
                    regs=tuple(zip(names, words)))


def encode_prstatus(st: PrStatus, machine: int) -> bytes:
    names = _ARCH_REGS[machine]
    values = dict(st.regs)
    ut_s, ut_us = int(st.utime), int((st.utime % 1) * 1e6)
    st_s, st_us = int(st.stime), int((st.stime % 1) * 1e6)
    head = _PRSTATUS_HEAD.pack(st.cursig, 0, 0, st.cursig, st.sigpend, st.sighold, st.pid,
                               st.ppid, st.pgrp, st.sid, ut_s, ut_us, st_s, st_us, 0, 0, 0, 0)
    regs = struct.pack(f"<{len(names)}Q", *(values.get(n, 0) & (2**64 - 1) for n in names))
    body = head + regs + struct.pack("<I", 1)  # pr_fpvalid
    return body.ljust(prstatus_size(machine), b"\0")


@dataclass(frozen=True)
class PrPsInfo:
    pid: int
    ppid: int = 0
    uid: int = 0
    gid: int = 0
    state: int = 0
    fname: str = ""
    psargs: str = ""


def parse_prpsinfo(data: bytes) -> PrPsInfo:
    if len(data) < PRPSINFO.size:
        raise CoreFormatError(f"NT_PRPSINFO holds {len(data)} bytes, needs {PRPSINFO.size}")
    (state, _sname, _zomb, _nice, _flag, uid, gid, pid, ppid, _pgrp, _sid, fname,
     psargs) = PRPSINFO.unpack_from(data, 0)

    def text(raw: bytes) -> str:
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    return PrPsInfo(pid=pid, ppid=ppid, uid=uid, gid=gid, state=state, fname=text(fname),
                    psargs=text(psargs).rstrip(" "))


def encode_prpsinfo(p: PrPsInfo) -> bytes:
    return PRPSINFO.pack(p.state, b"R", 0, 0, 0, p.uid, p.gid, p.pid, p.ppid, p.pid, p.pid,
                         p.fname.encode("utf-8", "surrogateescape")[:15],
                         p.psargs.encode("utf-8", "surrogateescape")[:79])


@dataclass(frozen=True)
class SigInfo:
    signo: int
    errno: int = 0
    code: int = 0
    addr: int = 0  # si_addr for SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP, else 0
    sender_pid: int = 0  # si_pid for signals sent by kill/tgkill (si_code <= 0)
    sender_uid: int = 0




def parse_siginfo(data: bytes) -> SigInfo:
    if len(data) < 24:
        raise CoreFormatError(f"NT_SIGINFO holds {len(data)} bytes, needs {SIGINFO_SIZE}")
    signo, err, code = struct.unpack_from("<iii", data, 0)
    addr = sender_pid = sender_uid = 0
    if code > 0 and signo in FAULT_SIGNALS:
        (addr,) = struct.unpack_from("<Q", data, 16)
    elif code <= 0:
        sender_pid, sender_uid = struct.unpack_from("<iI", data, 16)
    return SigInfo(signo, err, code, addr, sender_pid, sender_uid)


def encode_siginfo(s: SigInfo) -> bytes:
    head = struct.pack("<iiixxxx", s.signo, s.errno, s.code)
    if s.code > 0 and s.signo in FAULT_SIGNALS:
        tail = struct.pack("<Q", s.addr)
    else:
        tail = struct.pack("<iI", s.sender_pid, s.sender_uid)
    return (head + tail).ljust(SIGINFO_SIZE, b"\0")


@dataclass(frozen=True)
class FileMapping:
    """One NT_FILE entry: a file mapped at [start, end) from byte ``offset`` of ``path``."""

    start: int
    end: int
    offset: int
    path: str


def parse_nt_file(data: bytes) -> list[FileMapping]:
    if len(data) < 16:
        raise CoreFormatError(f"NT_FILE holds {len(data)} bytes, needs at least 16")
    count, page = struct.unpack_from("<QQ", data, 0)
    table_end = 16 + 24 * count
    if count > 1 << 20 or table_end > len(data) or page == 0:
        raise CoreFormatError(f"NT_FILE claims {count} files in {len(data)} bytes")
    names = bytes(data[table_end:]).split(b"\0")
    if len(names) < count:
        raise CoreFormatError(f"NT_FILE has {len(names)} names for {count} files")
    out = []
    for i in range(count):
        start, end, pgoff = struct.unpack_from("<QQQ", data, 16 + 24 * i)
        if end < start:
            raise CoreFormatError(f"NT_FILE entry {i} ends before it starts")
        out.append(FileMapping(start, end, pgoff * page,
                               names[i].decode("utf-8", "surrogateescape")))
    return out


def encode_nt_file(files: list[FileMapping], page: int = 4096) -> bytes:
    table = b"".join(struct.pack("<QQQ", f.start, f.end, f.offset // page) for f in files)
    names = b"".join(f.path.encode("utf-8", "surrogateescape") + b"\0" for f in files)
    return struct.pack("<QQ", len(files), page) + table + names


# -- notes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    name: bytes
    type: int
    desc: bytes


def iter_notes(data: bytes) -> Iterator[Note]:
    """The notes of a PT_NOTE segment; raises CoreFormatError where one runs past the end."""
    pos, n = 0, len(data)
    while pos + 12 <= n:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name_end = pos + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if pos + namesz > n or name_end + descsz > n:
            raise CoreFormatError(f"note of type 0x{ntype:x} at offset {pos - 12} runs past "
                                  f"the end of the notes ({namesz}+{descsz} bytes)")
        yield Note(bytes(data[pos:pos + namesz]).rstrip(b"\0"), ntype,
                   bytes(data[name_end:name_end + descsz]))
        pos = desc_end
    if n - pos not in (0,) and any(data[pos:]):
        raise CoreFormatError(f"{n - pos} stray bytes after the last note")


def encode_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    nm = name + b"\0"
    return (struct.pack("<III", len(nm), len(desc), ntype) + nm.ljust((len(nm) + 3) & ~3, b"\0")
            + desc.ljust((len(desc) + 3) & ~3, b"\0"))


def machine_name(machine: int) -> str:
    return {EM_X86_64: "x86-64", EM_AARCH64: "aarch64", 3: "i386", 40: "arm", 8: "mips",
            20: "powerpc", 21: "ppc64", 22: "s390", 243: "riscv"}.get(machine,
                                                                     f"machine {machine}")


def amd64_fxsave_from_xstate(xstate: bytes) -> Optional[bytes]:
    """The legacy FXSAVE image at the start of an XSAVE area (NT_X86_XSTATE)."""
    return bytes(xstate[:FXSAVE_SIZE]) if len(xstate) >= FXSAVE_SIZE else None
