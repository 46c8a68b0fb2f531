"""Windows system facts for the SystemInfo stream: OS version (RtlGetVersion, which unlike
GetVersionEx is not lied to by compatibility shims), processor count and identity."""

from __future__ import annotations

import ctypes
from typing import Optional

from ...snapshot import Arch, CpuInfo, OS, SystemInfo
from . import win32 as w
from .convert import cpu_from_cpuid, cpu_from_system_info

# cpuid(leaf in ecx, out[4] in rdx): eax, ebx, ecx, edx stored at rdx (Windows x64 ABI).
_CPUID_THUNK = bytes([
    0x53,                    # push rbx
    0x49, 0x89, 0xD0,        # mov r8, rdx
    0x89, 0xC8,              # mov eax, ecx
    0x31, 0xC9,              # xor ecx, ecx
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])


def _cpuid_leaves() -> Optional[tuple]:
    """cpuid leaves 0, 1 and 0x80000001, run from a small executable page; None if the
    process may not make executable memory (Arbitrary Code Guard) or anything fails."""
    page = None
    try:
        page = w.VirtualAlloc(None, 4096, w.MEM_COMMIT | w.MEM_RESERVE, w.PAGE_READWRITE)
        ctypes.memmove(page, _CPUID_THUNK, len(_CPUID_THUNK))
        old = w.wt.DWORD()
        w.VirtualProtect(page, 4096, w.PAGE_EXECUTE_READ, ctypes.byref(old))
        w.FlushInstructionCache(w.GetCurrentProcess(), page, 4096)
        out_t = ctypes.c_uint32 * 4
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.POINTER(out_t))(page)

        def leaf(n: int) -> tuple[int, int, int, int]:
            out = out_t()
            fn(n, ctypes.byref(out))
            return tuple(out)

        l0 = leaf(0)
        l1 = leaf(1) if l0[0] >= 1 else (0, 0, 0, 0)
        ext = leaf(0x80000000)
        e1 = leaf(0x80000001) if ext[0] >= 0x80000001 else None
        return l0, l1, e1
    except (OSError, w.Win32Error, ValueError):
        return None
    finally:
        if page:
            try:
                w.VirtualFree(page, 0, w.MEM_RELEASE)
            except w.Win32Error:
                pass


def _registry_cpu() -> tuple[str, int]:
    """(VendorIdentifier, ~MHz) of processor 0 from the registry; ("", 0) if absent."""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                            r"HARDWARE\DESCRIPTION\System\CentralProcessor\0") as key:
            vendor = mhz = None
            try:
                vendor = winreg.QueryValueEx(key, "VendorIdentifier")[0]
            except OSError:
                pass
            try:
                mhz = winreg.QueryValueEx(key, "~MHz")[0]
            except OSError:
                pass
            return str(vendor or ""), int(mhz or 0)
    except (OSError, ImportError, ValueError):
        return "", 0


def native_machine() -> int:
    """PROCESSOR_ARCHITECTURE_* of the machine (not of this process)."""
    si = w.SYSTEM_INFO()
    w.GetNativeSystemInfo(ctypes.byref(si))
    return si.wProcessorArchitecture


def wine_version() -> str:
    try:
        fn = w.ntdll.wine_get_version
    except AttributeError:
        return ""
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    return (fn() or b"").decode("ascii", "replace")


def os_version() -> tuple[int, int, int, str]:
    info = w.RTL_OSVERSIONINFOW()
    info.dwOSVersionInfoSize = ctypes.sizeof(info)
    if w.RtlGetVersion(ctypes.byref(info)) < 0:
        return 0, 0, 0, ""
    return info.dwMajorVersion, info.dwMinorVersion, info.dwBuildNumber, info.szCSDVersion


def system_info() -> SystemInfo:
    major, minor, build, csd = os_version()
    wine = wine_version()
    text = " ".join(part for part in (csd, f"(Wine {wine})" if wine else "") if part)
    si = w.SYSTEM_INFO()
    w.GetNativeSystemInfo(ctypes.byref(si))
    count = si.dwNumberOfProcessors or 1
    vendor, mhz = _registry_cpu()
    leaves = _cpuid_leaves()
    if leaves is not None:
        cpu = cpu_from_cpuid(count, leaves[0], leaves[1], leaves[2], mhz)
    else:
        cpu = cpu_from_system_info(count, si.wProcessorLevel, si.wProcessorRevision, vendor, mhz)
    if not cpu.vendor and vendor:
        cpu = CpuInfo(**{**cpu.__dict__, "vendor": vendor})
    return SystemInfo(arch=Arch.AMD64, os=OS.WINDOWS, os_major=major, os_minor=minor,
                      os_build=build, os_version=text, cpu=cpu)
