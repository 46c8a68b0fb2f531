"""Pure conversions for the Windows backend: raw Win32 values -> snapshot objects, and the
user-facing messages for Win32 failures. No ctypes calls here, so all of it can be tested
on any platform.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence

from ...errors import DumpError, InvalidTarget, TargetGone, TargetNotFound, TargetPermissionError
from ...minidump.context import decode_context
from ...minidump.format import permissions as protection
from ...snapshot import Amd64Context, Arch, CpuInfo, MemoryRegion, RegionKind
from ..stacks import MAX_STACK, stack_range

# Error codes (winerror.h) used in messages; the same values as in win32.py.
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_NOT_SUPPORTED = 50
ERROR_INVALID_PARAMETER = 87
ERROR_PARTIAL_COPY = 299
ERROR_PRIVILEGE_NOT_HELD = 1314

MEM_COMMIT = 0x1000
MEM_PRIVATE = 0x20000
MEM_MAPPED = 0x40000
MEM_IMAGE = 0x1000000

# x64 TEB layout (identical on Windows 7..11 and in Wine)
TEB_STACK_BASE = 0x08  # NT_TIB.StackBase: top of the stack, exclusive
TEB_STACK_LIMIT = 0x10  # NT_TIB.StackLimit: lowest committed stack page
TEB_PEB = 0x60
TEB_DEALLOCATION_STACK = 0x1478  # base of the stack reservation
TEB_SIZE = 0x1838  # sizeof(TEB) on x64 Windows 10/11

# x64 PEB / RTL_USER_PROCESS_PARAMETERS offsets
PEB_IMAGE_BASE = 0x10
PEB_PROCESS_PARAMETERS = 0x20
PEB_SIZE = 0x7C8
PARAMS_COMMAND_LINE = 0x70  # UNICODE_STRING {u16 Length; u16 MaximumLength; u64 Buffer}
PARAMS_ENVIRONMENT = 0x80
PARAMS_ENVIRONMENT_SIZE = 0x3F0
MAX_ENVIRONMENT = 4 << 20

FILETIME_UNIX_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601


def filetime_to_unix(ft: int) -> int:
    """A FILETIME (100 ns units since 1601) as Unix seconds; 0 stays 0."""
    return max(0, (ft - FILETIME_UNIX_EPOCH) // 10_000_000) if ft else 0


def filetime_seconds(ft: int) -> float:
    """A FILETIME duration (user/kernel time) in seconds."""
    return ft / 10_000_000


def amd64_context(raw: bytes) -> Amd64Context:
    """An x64 CONTEXT as GetThreadContext fills it. It is byte for byte the minidump
    CONTEXT_AMD64 (1232 bytes): FltSave at 0x100 is the 512-byte FXSAVE image."""
    return decode_context(Arch.AMD64, raw)  # type: ignore[return-value]


def region_kind(mem_type: int) -> RegionKind:
    if mem_type == MEM_IMAGE:
        return RegionKind.IMAGE
    if mem_type == MEM_MAPPED:
        return RegionKind.MAPPED
    return RegionKind.PRIVATE


def memory_region(base: int, size: int, state: int, protect: int, mem_type: int,
                  path: str = "") -> Optional[MemoryRegion]:
    """A VirtualQueryEx result as a MemoryRegion; None for free or reserved-only memory."""
    if state != MEM_COMMIT or size <= 0:
        return None
    r, w, x = protection(protect)
    return MemoryRegion(start=base, size=size, readable=r, writable=w, executable=x,
                        kind=region_kind(mem_type), path=path)


def teb_stack(teb: bytes) -> tuple[int, int, int]:
    """(StackBase, StackLimit, DeallocationStack) from the bytes of an x64 TEB (0 if short)."""
    base = struct.unpack_from("<Q", teb, TEB_STACK_BASE)[0] if len(teb) >= 0x10 else 0
    limit = struct.unpack_from("<Q", teb, TEB_STACK_LIMIT)[0] if len(teb) >= 0x18 else 0
    dealloc = (struct.unpack_from("<Q", teb, TEB_DEALLOCATION_STACK)[0]
               if len(teb) >= TEB_DEALLOCATION_STACK + 8 else 0)
    return base, limit, dealloc


def stack_bounds(rsp: int, teb: bytes, regions: Optional[Sequence[MemoryRegion]] = None
                 ) -> Optional[tuple[int, int]]:
    """The stack bytes to copy for a thread: [RSP, StackBase) from its TEB.

    Windows x64 has no red zone (anything below RSP may be overwritten at any moment by
    the kernel), so the copy starts at RSP. When RSP is not inside the stack the TEB
    describes (a fiber, a hand-made stack, an unreadable TEB), the memory regions decide:
    from RSP to the top of the region holding it (Crashpad's rule, without the red zone).
    """
    base, limit, dealloc = teb_stack(teb)
    low = min(x for x in (limit, dealloc) if x) if (limit or dealloc) else 0
    if base and low and low <= rsp < base:
        return rsp, min(base, rsp + MAX_STACK)
    if regions:
        ordered = sorted(regions, key=lambda r: r.start)
        rng = stack_range(rsp, ordered, [r.start for r in ordered], True, 0)
        if rng is not None:
            start, end = rng
            return max(start, rsp) if start <= rsp < end else start, end
    return None


def cpu_from_cpuid(count: int, leaf0: tuple[int, int, int, int], leaf1: tuple[int, int, int, int],
                   ext1: Optional[tuple[int, int, int, int]] = None, mhz: int = 0) -> CpuInfo:
    """CpuInfo from raw cpuid results (eax, ebx, ecx, edx) of leaves 0, 1 and 0x80000001."""
    vendor = struct.pack("<III", leaf0[1], leaf0[3], leaf0[2]).rstrip(b"\0").decode("ascii",
                                                                                   "replace")
    eax = leaf1[0]
    base_family = (eax >> 8) & 0xF
    family = base_family + ((eax >> 20) & 0xFF if base_family == 15 else 0)
    model = (eax >> 4) & 0xF
    if base_family in (6, 15):
        model |= ((eax >> 16) & 0xF) << 4
    return CpuInfo(count=count, vendor=vendor, family=family, model=model, stepping=eax & 0xF,
                   version_information=eax, feature_information=leaf1[3],
                   amd_extended_features=ext1[3] if ext1 and vendor == "AuthenticAMD" else 0,
                   max_mhz=mhz, current_mhz=mhz)


def cpu_from_system_info(count: int, level: int, revision: int, vendor: str = "",
                         mhz: int = 0) -> CpuInfo:
    """CpuInfo from GetNativeSystemInfo (wProcessorLevel = family, wProcessorRevision =
    model << 8 | stepping) when cpuid cannot be run."""
    model, stepping = (revision >> 8) & 0xFF, revision & 0xFF
    base_family = min(level, 15)
    version = (stepping & 0xF) | (model & 0xF) << 4 | base_family << 8 \
        | ((model >> 4) & 0xF) << 16 | (max(0, level - 15) & 0xFF) << 20
    return CpuInfo(count=count, vendor=vendor, family=level, model=model, stepping=stepping,
                   version_information=version, max_mhz=mhz, current_mhz=mhz)


def environment_block(data: bytes) -> bytes:
    """The environment block (UTF-16 "NAME=value\\0" strings ending with an empty one)
    cut after its terminating double NUL."""
    for i in range(0, len(data) - 3, 2):
        if data[i : i + 4] == b"\0\0\0\0":
            return data[: i + 4]
    return data


# --- messages -----------------------------------------------------------------------------


def _who(pid: int, name: str) -> str:
    return f"process {pid} ({name})" if name else f"process {pid}"


def special_pid(pid: int) -> Optional[DumpError]:
    if pid == 0:
        return InvalidTarget("PID 0 is the System Idle Process, not a real process; "
                             "give the PID of a program (see Task Manager, Details tab)")
    if pid == 4:
        return InvalidTarget("PID 4 is the Windows kernel (System): it has no user-mode "
                             "memory to dump; give the PID of a program")
    return None


def protection_name(level: int) -> str:
    """A PS_PROTECTION byte: type in bits 0-2 (1 light, 2 full), signer in bits 4-7."""
    kind = {1: "protected process light (PPL)", 2: "protected process"}.get(level & 7,
                                                                             "protected process")
    signer = {1: "Authenticode", 2: "CodeGen", 3: "Antimalware", 4: "Lsa", 5: "Windows",
              6: "WinTcb", 7: "WinSystem", 8: "App"}.get(level >> 4)
    return f"{kind}, signer {signer}" if signer else kind


def open_error(pid: int, code: int, name: str = "", protection_level: int = 0,
               have_debug_privilege: bool = False) -> DumpError:
    """Why OpenProcess (or DebugActiveProcess) failed, in words a Windows user can act on."""
    who = _who(pid, name)
    if code == ERROR_INVALID_PARAMETER:
        return TargetNotFound(f"no process with PID {pid} (see Task Manager's Details tab or "
                              "'tasklist' for process IDs)")
    if code == ERROR_ACCESS_DENIED:
        if protection_level:
            return TargetPermissionError(
                f"{who} is a {protection_name(protection_level)}: Windows lets no debugger "
                "or dump tool read its memory, not even an administrator")
        if have_debug_privilege:
            return TargetPermissionError(
                f"access to {who} is denied even with SeDebugPrivilege enabled: it is "
                "probably shielded by security software (anti-malware, anti-cheat) or is a "
                "system process that cannot be debugged")
        return TargetPermissionError(
            f"access to {who} is denied: it runs as another user, as a service, or "
            "elevated. Run generate_dump from an elevated prompt (Run as administrator), "
            "which gives it the SeDebugPrivilege needed to open any process")
    return DumpError(f"cannot open {who}: Windows error {code}")


def debug_attach_error(pid: int, code: int, name: str = "", protection_level: int = 0,
                       have_debug_privilege: bool = False) -> DumpError:
    who = _who(pid, name)
    if code == ERROR_ACCESS_DENIED:
        return open_error(pid, code, name, protection_level, have_debug_privilege)
    if code == ERROR_NOT_SUPPORTED:
        return InvalidTarget(f"cannot debug {who}: a 32-bit generate_dump cannot attach to a "
                             "64-bit process; run it with a 64-bit Python")
    if code == ERROR_INVALID_PARAMETER:
        return TargetGone(f"{who} exited before the debugger could attach; no dump was written")
    return DumpError(f"cannot attach to {who} as a debugger (Windows error {code}); "
                     "try -r, which does not attach")


def wow64_error(pid: int, name: str = "") -> DumpError:
    return InvalidTarget(
        f"{_who(pid, name)} is a 32-bit (WOW64) process; generate_dump writes x64 dumps of "
        "64-bit processes only. Use procdump -ma or Task Manager's 'Create dump file' for "
        "32-bit processes")


def gone_error(pid: int, name: str = "") -> TargetGone:
    return TargetGone(f"{_who(pid, name)} exited during the dump; no dump was written")
