"""ctypes bindings for the Win32 and NT calls the Windows backend makes (64-bit Python only).

Only importable on Windows. Every bound function checks its result and raises
:class:`Win32Error` with the function name and the Windows error code (an NTSTATUS from
ntdll is converted with RtlNtStatusToDosError, its raw value kept in ``status``).
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import wintypes as wt
from typing import Optional

# Win32 constants shared with the pure conversions live in convert.py; re-exported here
# for the code that calls the API.
from .convert import (  # noqa: F401
    ERROR_FILE_NOT_FOUND,
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_HANDLE,
    ERROR_NOT_SUPPORTED,
    ERROR_INVALID_PARAMETER,
    ERROR_PARTIAL_COPY,
    ERROR_PRIVILEGE_NOT_HELD,
    MEM_COMMIT,
    MEM_PRIVATE,
    MEM_MAPPED,
    MEM_IMAGE,
)
from ...minidump.format import (  # noqa: F401 - Windows constants, re-exported
    PAGE_NOACCESS,
    PAGE_READONLY,
    PAGE_READWRITE,
    PAGE_WRITECOPY,
    PAGE_EXECUTE,
    PAGE_EXECUTE_READ,
    PAGE_EXECUTE_READWRITE,
    PAGE_EXECUTE_WRITECOPY,
    PAGE_GUARD,
)

if sys.platform != "win32":  # pragma: no cover - guarded by the callers
    raise ImportError("generate_dump.backends.windows.win32 works on Windows only")

kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
ntdll = ctypes.WinDLL("ntdll")
advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)

PVOID = ctypes.c_void_p
SIZE_T = ctypes.c_size_t
NTSTATUS = ctypes.c_long

# --- constants ----------------------------------------------------------------------------

PROCESS_TERMINATE = 0x0001
PROCESS_VM_OPERATION = 0x0008
PROCESS_VM_READ = 0x0010
PROCESS_DUP_HANDLE = 0x0040
PROCESS_QUERY_INFORMATION = 0x0400
PROCESS_SUSPEND_RESUME = 0x0800
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
SYNCHRONIZE = 0x00100000

THREAD_SUSPEND_RESUME = 0x0002
THREAD_GET_CONTEXT = 0x0008
THREAD_QUERY_INFORMATION = 0x0040
THREAD_QUERY_LIMITED_INFORMATION = 0x0800

STILL_ACTIVE = 259

ERROR_SUCCESS = 0
ERROR_SEM_TIMEOUT = 121
WAIT_TIMEOUT = 258
ERROR_NOACCESS = 998
ERROR_NOT_ALL_ASSIGNED = 1300

CREATE_PROCESS_DEBUG_EVENT = 3
CREATE_THREAD_DEBUG_EVENT = 2
EXCEPTION_DEBUG_EVENT = 1
EXIT_PROCESS_DEBUG_EVENT = 5
EXIT_THREAD_DEBUG_EVENT = 4
LOAD_DLL_DEBUG_EVENT = 6
OUTPUT_DEBUG_STRING_EVENT = 8
RIP_EVENT = 9
UNLOAD_DLL_DEBUG_EVENT = 7

DBG_CONTINUE = 0x00010002
DBG_EXCEPTION_NOT_HANDLED = 0x80010001
EXCEPTION_BREAKPOINT = 0x80000003
STATUS_WX86_BREAKPOINT = 0x4000001F

CONTEXT_AMD64 = 0x00100000
CONTEXT_ALL = CONTEXT_AMD64 | 0x1F  # CONTROL INTEGER SEGMENTS FLOATING_POINT DEBUG_REGISTERS
CONTEXT_SIZE = 1232
CONTEXT_ALIGN = 16

MEM_RESERVE = 0x2000
MEM_RELEASE = 0x8000
MEM_FREE = 0x10000


TH32CS_SNAPTHREAD = 0x4
LIST_MODULES_ALL = 0x3

PROCESSOR_ARCHITECTURE_INTEL = 0
PROCESSOR_ARCHITECTURE_ARM = 5
PROCESSOR_ARCHITECTURE_AMD64 = 9
PROCESSOR_ARCHITECTURE_ARM64 = 12

IMAGE_FILE_MACHINE_UNKNOWN = 0
IMAGE_FILE_MACHINE_I386 = 0x14C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_ARM64 = 0xAA64

# NtQueryInformationThread / NtQueryInformationProcess classes
ThreadBasicInformation = 0
ThreadQuerySetWin32StartAddress = 9
ThreadSuspendCount = 35
ProcessBasicInformation = 0
ProcessProtectionInformation = 61

TOKEN_ADJUST_PRIVILEGES = 0x20
TOKEN_QUERY = 0x8
SE_PRIVILEGE_ENABLED = 0x2

INFINITE = 0xFFFFFFFF


class Win32Error(Exception):
    """A failed call: ``function`` and ``code`` (a Win32 error code)."""

    def __init__(self, function: str, code: int, status: Optional[int] = None):
        self.function = function
        self.code = code
        self.status = status
        super().__init__(f"{function} failed: {ctypes.FormatError(code).strip()} "
                         f"(error {code}{f', NTSTATUS 0x{status & 0xFFFFFFFF:08X}' if status else ''})")


# --- structures ---------------------------------------------------------------------------


class EXCEPTION_RECORD(ctypes.Structure):
    _fields_ = [("ExceptionCode", wt.DWORD), ("ExceptionFlags", wt.DWORD),
                ("ExceptionRecord", PVOID), ("ExceptionAddress", PVOID),
                ("NumberParameters", wt.DWORD), ("ExceptionInformation", SIZE_T * 15)]


class EXCEPTION_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("ExceptionRecord", EXCEPTION_RECORD), ("dwFirstChance", wt.DWORD)]


class CREATE_THREAD_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("hThread", wt.HANDLE), ("lpThreadLocalBase", PVOID), ("lpStartAddress", PVOID)]


class CREATE_PROCESS_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("hFile", wt.HANDLE), ("hProcess", wt.HANDLE), ("hThread", wt.HANDLE),
                ("lpBaseOfImage", PVOID), ("dwDebugInfoFileOffset", wt.DWORD),
                ("nDebugInfoSize", wt.DWORD), ("lpThreadLocalBase", PVOID),
                ("lpStartAddress", PVOID), ("lpImageName", PVOID), ("fUnicode", wt.WORD)]


class EXIT_THREAD_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("dwExitCode", wt.DWORD)]


class EXIT_PROCESS_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("dwExitCode", wt.DWORD)]


class LOAD_DLL_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("hFile", wt.HANDLE), ("lpBaseOfDll", PVOID), ("dwDebugInfoFileOffset", wt.DWORD),
                ("nDebugInfoSize", wt.DWORD), ("lpImageName", PVOID), ("fUnicode", wt.WORD)]


class _DEBUG_EVENT_UNION(ctypes.Union):
    _fields_ = [("Exception", EXCEPTION_DEBUG_INFO), ("CreateThread", CREATE_THREAD_DEBUG_INFO),
                ("CreateProcessInfo", CREATE_PROCESS_DEBUG_INFO),
                ("ExitThread", EXIT_THREAD_DEBUG_INFO), ("ExitProcess", EXIT_PROCESS_DEBUG_INFO),
                ("LoadDll", LOAD_DLL_DEBUG_INFO)]


class DEBUG_EVENT(ctypes.Structure):
    _fields_ = [("dwDebugEventCode", wt.DWORD), ("dwProcessId", wt.DWORD),
                ("dwThreadId", wt.DWORD), ("u", _DEBUG_EVENT_UNION)]


class MEMORY_BASIC_INFORMATION(ctypes.Structure):
    _fields_ = [("BaseAddress", PVOID), ("AllocationBase", PVOID),
                ("AllocationProtect", wt.DWORD), ("PartitionId", wt.WORD),
                ("RegionSize", SIZE_T), ("State", wt.DWORD), ("Protect", wt.DWORD),
                ("Type", wt.DWORD)]


class SYSTEM_INFO(ctypes.Structure):
    _fields_ = [("wProcessorArchitecture", wt.WORD), ("wReserved", wt.WORD),
                ("dwPageSize", wt.DWORD), ("lpMinimumApplicationAddress", PVOID),
                ("lpMaximumApplicationAddress", PVOID), ("dwActiveProcessorMask", SIZE_T),
                ("dwNumberOfProcessors", wt.DWORD), ("dwProcessorType", wt.DWORD),
                ("dwAllocationGranularity", wt.DWORD), ("wProcessorLevel", wt.WORD),
                ("wProcessorRevision", wt.WORD)]


class RTL_OSVERSIONINFOW(ctypes.Structure):
    _fields_ = [("dwOSVersionInfoSize", wt.DWORD), ("dwMajorVersion", wt.DWORD),
                ("dwMinorVersion", wt.DWORD), ("dwBuildNumber", wt.DWORD),
                ("dwPlatformId", wt.DWORD), ("szCSDVersion", wt.WCHAR * 128)]


class THREADENTRY32(ctypes.Structure):
    _fields_ = [("dwSize", wt.DWORD), ("cntUsage", wt.DWORD), ("th32ThreadID", wt.DWORD),
                ("th32OwnerProcessID", wt.DWORD), ("tpBasePri", wt.LONG),
                ("tpDeltaPri", wt.LONG), ("dwFlags", wt.DWORD)]


class MODULEINFO(ctypes.Structure):
    _fields_ = [("lpBaseOfDll", PVOID), ("SizeOfImage", wt.DWORD), ("EntryPoint", PVOID)]


class CLIENT_ID(ctypes.Structure):
    _fields_ = [("UniqueProcess", PVOID), ("UniqueThread", PVOID)]


class THREAD_BASIC_INFORMATION(ctypes.Structure):
    _fields_ = [("ExitStatus", NTSTATUS), ("TebBaseAddress", PVOID), ("ClientId", CLIENT_ID),
                ("AffinityMask", SIZE_T), ("Priority", wt.LONG), ("BasePriority", wt.LONG)]


class PROCESS_BASIC_INFORMATION(ctypes.Structure):
    _fields_ = [("ExitStatus", NTSTATUS), ("PebBaseAddress", PVOID), ("AffinityMask", SIZE_T),
                ("BasePriority", wt.LONG), ("UniqueProcessId", SIZE_T),
                ("InheritedFromUniqueProcessId", SIZE_T)]


class LUID(ctypes.Structure):
    _fields_ = [("LowPart", wt.DWORD), ("HighPart", wt.LONG)]


class LUID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Luid", LUID), ("Attributes", wt.DWORD)]


class TOKEN_PRIVILEGES(ctypes.Structure):
    _fields_ = [("PrivilegeCount", wt.DWORD), ("Privileges", LUID_AND_ATTRIBUTES * 1)]


# --- binding helpers ----------------------------------------------------------------------


def _last_error(name: str):
    def check(result, func, args):
        if not result:
            raise Win32Error(name, ctypes.get_last_error())
        return result
    return check


def _bind(dll, name: str, restype, argtypes, check: bool = True, optional: bool = False):
    try:
        fn = getattr(dll, name)
    except AttributeError:
        if optional:
            return None
        raise
    fn.restype = restype
    fn.argtypes = argtypes
    if check:
        fn.errcheck = _last_error(name)
    return fn


_B = wt.BOOL
_H = wt.HANDLE
_D = wt.DWORD

OpenProcess = _bind(kernel32, "OpenProcess", _H, [_D, _B, _D])
CloseHandle = _bind(kernel32, "CloseHandle", _B, [_H])
GetCurrentProcess = _bind(kernel32, "GetCurrentProcess", _H, [], check=False)
GetCurrentProcessId = _bind(kernel32, "GetCurrentProcessId", _D, [], check=False)
GetExitCodeProcess = _bind(kernel32, "GetExitCodeProcess", _B, [_H, ctypes.POINTER(_D)])
IsWow64Process = _bind(kernel32, "IsWow64Process", _B, [_H, ctypes.POINTER(_B)])
IsWow64Process2 = _bind(kernel32, "IsWow64Process2", _B,
                        [_H, ctypes.POINTER(wt.USHORT), ctypes.POINTER(wt.USHORT)], optional=True)
QueryFullProcessImageNameW = _bind(kernel32, "QueryFullProcessImageNameW", _B,
                                   [_H, _D, wt.LPWSTR, ctypes.POINTER(_D)])
CheckRemoteDebuggerPresent = _bind(kernel32, "CheckRemoteDebuggerPresent", _B,
                                   [_H, ctypes.POINTER(_B)])
DebugActiveProcess = _bind(kernel32, "DebugActiveProcess", _B, [_D])
DebugActiveProcessStop = _bind(kernel32, "DebugActiveProcessStop", _B, [_D])
DebugSetProcessKillOnExit = _bind(kernel32, "DebugSetProcessKillOnExit", _B, [_B])
WaitForDebugEvent = _bind(kernel32, "WaitForDebugEvent", _B, [ctypes.POINTER(DEBUG_EVENT), _D])
ContinueDebugEvent = _bind(kernel32, "ContinueDebugEvent", _B, [_D, _D, _D])
OpenThread = _bind(kernel32, "OpenThread", _H, [_D, _B, _D])
SuspendThread = _bind(kernel32, "SuspendThread", _D, [_H], check=False)
ResumeThread = _bind(kernel32, "ResumeThread", _D, [_H], check=False)
GetThreadContext = _bind(kernel32, "GetThreadContext", _B, [_H, PVOID])
GetThreadPriority = _bind(kernel32, "GetThreadPriority", ctypes.c_int, [_H], check=False)
GetPriorityClass = _bind(kernel32, "GetPriorityClass", _D, [_H], check=False)
GetThreadTimes = _bind(kernel32, "GetThreadTimes", _B, [_H] + [ctypes.POINTER(wt.FILETIME)] * 4)
GetProcessTimes = _bind(kernel32, "GetProcessTimes", _B,
                        [_H] + [ctypes.POINTER(wt.FILETIME)] * 4)
GetThreadDescription = _bind(kernel32, "GetThreadDescription", ctypes.c_long,
                             [_H, ctypes.POINTER(wt.LPWSTR)], check=False, optional=True)
LocalFree = _bind(kernel32, "LocalFree", PVOID, [PVOID], check=False)
ReadProcessMemory = _bind(kernel32, "ReadProcessMemory", _B,
                          [_H, PVOID, PVOID, SIZE_T, ctypes.POINTER(SIZE_T)], check=False)
VirtualQueryEx = _bind(kernel32, "VirtualQueryEx", SIZE_T,
                       [_H, PVOID, ctypes.POINTER(MEMORY_BASIC_INFORMATION), SIZE_T], check=False)
CreateToolhelp32Snapshot = _bind(kernel32, "CreateToolhelp32Snapshot", _H, [_D, _D], check=False)
Thread32First = _bind(kernel32, "Thread32First", _B, [_H, ctypes.POINTER(THREADENTRY32)],
                      check=False)
Thread32Next = _bind(kernel32, "Thread32Next", _B, [_H, ctypes.POINTER(THREADENTRY32)],
                     check=False)
EnumProcessModulesEx = _bind(kernel32, "K32EnumProcessModulesEx", _B,
                             [_H, ctypes.POINTER(PVOID), _D, ctypes.POINTER(_D), _D])
GetModuleInformation = _bind(kernel32, "K32GetModuleInformation", _B,
                             [_H, PVOID, ctypes.POINTER(MODULEINFO), _D])
GetModuleFileNameExW = _bind(kernel32, "K32GetModuleFileNameExW", _D, [_H, PVOID, wt.LPWSTR, _D])
GetNativeSystemInfo = _bind(kernel32, "GetNativeSystemInfo", None,
                            [ctypes.POINTER(SYSTEM_INFO)], check=False)
VirtualAlloc = _bind(kernel32, "VirtualAlloc", PVOID, [PVOID, SIZE_T, _D, _D])
VirtualProtect = _bind(kernel32, "VirtualProtect", _B, [PVOID, SIZE_T, _D, ctypes.POINTER(_D)])
VirtualFree = _bind(kernel32, "VirtualFree", _B, [PVOID, SIZE_T, _D])
GetModuleHandleW = _bind(kernel32, "GetModuleHandleW", wt.HMODULE, [wt.LPCWSTR])
GetProcAddress = _bind(kernel32, "GetProcAddress", PVOID, [wt.HMODULE, wt.LPCSTR])
FlushInstructionCache = _bind(kernel32, "FlushInstructionCache", _B, [_H, PVOID, SIZE_T],
                              check=False)

NtQueryInformationThread = _bind(ntdll, "NtQueryInformationThread", NTSTATUS,
                                 [_H, ctypes.c_int, PVOID, wt.ULONG, ctypes.POINTER(wt.ULONG)],
                                 check=False)
NtQueryInformationProcess = _bind(ntdll, "NtQueryInformationProcess", NTSTATUS,
                                  [_H, ctypes.c_int, PVOID, wt.ULONG, ctypes.POINTER(wt.ULONG)],
                                  check=False)
RtlGetVersion = _bind(ntdll, "RtlGetVersion", NTSTATUS, [ctypes.POINTER(RTL_OSVERSIONINFOW)],
                      check=False)
RtlNtStatusToDosError = _bind(ntdll, "RtlNtStatusToDosError", wt.ULONG, [NTSTATUS], check=False)

OpenProcessToken = _bind(advapi32, "OpenProcessToken", _B, [_H, _D, ctypes.POINTER(_H)])
LookupPrivilegeValueW = _bind(advapi32, "LookupPrivilegeValueW", _B,
                              [wt.LPCWSTR, wt.LPCWSTR, ctypes.POINTER(LUID)])
AdjustTokenPrivileges = _bind(advapi32, "AdjustTokenPrivileges", _B,
                              [_H, _B, ctypes.POINTER(TOKEN_PRIVILEGES), _D, PVOID, PVOID])

INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value


def nt_check(function: str, status: int) -> None:
    if status < 0:
        raise Win32Error(function, RtlNtStatusToDosError(status), status)


def last_error() -> int:
    return ctypes.get_last_error()
