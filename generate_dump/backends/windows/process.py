"""The target process on Windows: opening it (privileges, protection, WOW64 refusal) and
reading its memory and memory map through the handle."""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Optional

from ...errors import InvalidTarget, TargetGone
from ...snapshot import (
    MemoryRegion,
)
from . import convert as cv

_PAGE = 4096




class _Target:
    """An open handle to the process (which also pins its PID against reuse)."""

    def __init__(self, w, pid: int, handle, name: str, debug_privilege: bool):
        self.w = w
        self.pid = pid
        self.handle = handle
        self.name = name
        self.debug_privilege = debug_privilege
        self._regions: Optional[list[MemoryRegion]] = None

    def close(self) -> None:
        if self.handle:
            try:
                self.w.CloseHandle(self.handle)
            except self.w.Win32Error:
                pass
            self.handle = None

    def alive(self) -> bool:
        code = self.w.wt.DWORD()
        try:
            self.w.GetExitCodeProcess(self.handle, ctypes.byref(code))
        except self.w.Win32Error:
            return False
        return code.value == self.w.STILL_ACTIVE

    def _read_once(self, address: int, size: int) -> Optional[bytes]:
        buf = ctypes.create_string_buffer(size)
        done = self.w.SIZE_T(0)
        if self.w.ReadProcessMemory(self.handle, ctypes.c_void_p(address), buf, size,
                                    ctypes.byref(done)):
            return buf.raw[: done.value]
        return None

    def read(self, address: int, size: int) -> bytes:
        """Bytes at ``address``; on a fault, the readable prefix (page by page)."""
        if size <= 0 or address <= 0:
            return b""
        data = self._read_once(address, size)
        if data is not None and len(data) == size:
            return data
        out = bytearray()
        pos, end = address, address + size
        while pos < end:
            chunk = min(end, (pos // _PAGE + 1) * _PAGE) - pos
            part = self._read_once(pos, chunk)
            if not part:
                break
            out += part
            pos += len(part)
        return bytes(out)

    def u64(self, address: int) -> int:
        data = self.read(address, 8)
        return struct.unpack("<Q", data)[0] if len(data) == 8 else 0

    def regions(self, refresh: bool = False) -> list[MemoryRegion]:
        """Committed memory, by VirtualQueryEx over the whole user address space."""
        if self._regions is not None and not refresh:
            return self._regions
        w = self.w
        mbi = w.MEMORY_BASIC_INFORMATION()
        out: list[MemoryRegion] = []
        address = 0
        limit = 1 << 47
        while address < limit:
            if not w.VirtualQueryEx(self.handle, ctypes.c_void_p(address), ctypes.byref(mbi),
                                    ctypes.sizeof(mbi)):
                break
            base = mbi.BaseAddress or 0
            size = mbi.RegionSize
            if size <= 0 or base + size <= address:
                break
            region = cv.memory_region(base, size, mbi.State, mbi.Protect, mbi.Type)
            if region is not None:
                out.append(region)
            address = base + size
        self._regions = out
        return out


def _enable_debug_privilege(w) -> bool:
    """Enable SeDebugPrivilege if our token holds it (an elevated administrator's does)."""
    token = w.wt.HANDLE()
    try:
        w.OpenProcessToken(w.GetCurrentProcess(), w.TOKEN_ADJUST_PRIVILEGES | w.TOKEN_QUERY,
                           ctypes.byref(token))
    except w.Win32Error:
        return False
    try:
        tp = w.TOKEN_PRIVILEGES()
        tp.PrivilegeCount = 1
        w.LookupPrivilegeValueW(None, "SeDebugPrivilege", ctypes.byref(tp.Privileges[0].Luid))
        tp.Privileges[0].Attributes = w.SE_PRIVILEGE_ENABLED
        w.AdjustTokenPrivileges(token, False, ctypes.byref(tp), 0, None, None)
        return ctypes.get_last_error() != w.ERROR_NOT_ALL_ASSIGNED
    except w.Win32Error:
        return False
    finally:
        w.CloseHandle(token)


def _image_name(w, handle) -> str:
    size = w.wt.DWORD(1024)
    buf = ctypes.create_unicode_buffer(size.value)
    try:
        w.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size))
    except w.Win32Error:
        return ""
    return buf.value.rsplit("\\", 1)[-1]


def _protection_level(w, handle) -> int:
    level = ctypes.c_ubyte(0)
    status = w.NtQueryInformationProcess(handle, w.ProcessProtectionInformation,
                                         ctypes.byref(level), 1, None)
    return level.value if status >= 0 else 0


def _describe_denied(w, pid: int) -> tuple[str, int]:
    """(image name, protection level) through a limited handle, which is granted more often."""
    try:
        h = w.OpenProcess(w.PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    except w.Win32Error:
        return "", 0
    try:
        return _image_name(w, h), _protection_level(w, h)
    finally:
        w.CloseHandle(h)


def _open_target(w, pid: int) -> _Target:
    special = cv.special_pid(pid)
    if special is not None:
        raise special
    if pid == os.getpid():
        raise InvalidTarget(f"PID {pid} is generate_dump itself; give the PID of another process")
    privileged = _enable_debug_privilege(w)
    access = (w.PROCESS_QUERY_INFORMATION | w.PROCESS_QUERY_LIMITED_INFORMATION
              | w.PROCESS_VM_READ | w.SYNCHRONIZE)
    try:
        handle = w.OpenProcess(access, False, pid)
    except w.Win32Error as exc:
        if exc.code == w.ERROR_INVALID_PARAMETER:
            from .threads import _thread_owner  # threads imports this module

            owner = _thread_owner(w, pid)
            if owner:
                raise InvalidTarget(f"{pid} is a thread of process {owner}, not a process; "
                                    f"give the process ID {owner}") from None
        name, level = _describe_denied(w, pid) if exc.code == w.ERROR_ACCESS_DENIED else ("", 0)
        raise cv.open_error(pid, exc.code, name, level, privileged) from None
    target = _Target(w, pid, handle, _image_name(w, handle), privileged)
    try:
        if not target.alive():
            raise TargetGone(f"process {pid} ({target.name}) has already exited; "
                             "there is nothing left to dump")
        _check_architecture(w, target)
    except BaseException:
        target.close()
        raise
    return target


def _check_architecture(w, target: _Target) -> None:
    from .system import native_machine

    if native_machine() != w.PROCESSOR_ARCHITECTURE_AMD64:
        raise InvalidTarget("generate_dump supports x64 Windows only; this machine's "
                            "processor architecture is not x64")
    if w.IsWow64Process2 is not None:
        process_machine, native = w.wt.USHORT(), w.wt.USHORT()
        try:
            w.IsWow64Process2(target.handle, ctypes.byref(process_machine), ctypes.byref(native))
        except w.Win32Error:
            process_machine.value = 0
        if process_machine.value != w.IMAGE_FILE_MACHINE_UNKNOWN:
            raise cv.wow64_error(target.pid, target.name)
        return
    wow = w.wt.BOOL()
    try:
        w.IsWow64Process(target.handle, ctypes.byref(wow))
    except w.Win32Error:
        return
    if wow.value:
        raise cv.wow64_error(target.pid, target.name)
