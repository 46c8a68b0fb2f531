"""What is read after the freeze on Windows: PEB facts (command line, environment extent),
the module list with PE identities, and the memory map with paths."""

from __future__ import annotations

import ctypes
import struct
import time
from dataclasses import dataclass
from typing import Optional

from ...snapshot import (
    MemoryRange,
    MemoryRegion,
    Module,
    PdbIdentity,
    Process,
    SoftError,
)
from . import convert as cv
from .process import _Target
from .threads import _filetime



def _peb_address(target: _Target) -> int:
    w = target.w
    info = w.PROCESS_BASIC_INFORMATION()
    status = w.NtQueryInformationProcess(target.handle, w.ProcessBasicInformation,
                                         ctypes.byref(info), ctypes.sizeof(info), None)
    return (info.PebBaseAddress or 0) if status >= 0 else 0


def _unicode_string(target: _Target, address: int) -> str:
    head = target.read(address, 16)
    if len(head) < 16:
        return ""
    length, _maximum, _pad, buffer = struct.unpack("<HHIQ", head)
    if not buffer or not length:
        return ""
    return target.read(buffer, length).decode("utf-16-le", "replace")


@dataclass
class _Facts:
    process: Process
    memory: list[MemoryRange]  # the PEB
    image_base: int
    environment: tuple[int, int]  # [start, end) of the environment block, (0, 0) if unknown


def _environment_extent(target: _Target, params: int) -> tuple[int, int]:
    env = target.u64(params + cv.PARAMS_ENVIRONMENT)
    if not env:
        return 0, 0
    size = target.u64(params + cv.PARAMS_ENVIRONMENT_SIZE)
    if not 0 < size <= cv.MAX_ENVIRONMENT:  # older layouts: find the terminating empty string
        size = len(cv.environment_block(target.read(env, cv.MAX_ENVIRONMENT)))
    return env, env + size


def _process_facts(target: _Target, soft: list[SoftError]) -> _Facts:
    w = target.w
    times = [w.wt.FILETIME() for _ in range(4)]
    try:
        w.GetProcessTimes(target.handle, *(ctypes.byref(t) for t in times))
    except w.Win32Error:
        pass
    peb = _peb_address(target)
    memory: list[MemoryRange] = []
    command_line = ""
    image_base = 0
    environment = (0, 0)
    if peb:
        peb_bytes = target.read(peb, cv.PEB_SIZE)
        if peb_bytes:
            memory.append(MemoryRange(peb, peb_bytes))
        image_base = target.u64(peb + cv.PEB_IMAGE_BASE)
        params = target.u64(peb + cv.PEB_PROCESS_PARAMETERS)
        if params:
            command_line = _unicode_string(target, params + cv.PARAMS_COMMAND_LINE)
            environment = _environment_extent(target, params)
    if environment == (0, 0):
        soft.append(SoftError("memory-unreadable", "the environment block was not found"))
    process = Process(pid=target.pid, create_time=cv.filetime_to_unix(_filetime(times[0])),
                      kernel_time=cv.filetime_seconds(_filetime(times[2])),
                      user_time=cv.filetime_seconds(_filetime(times[3])),
                      command_line=(command_line,) if command_line else ())
    return _Facts(process, memory, image_base, environment)


def _module_list(target: _Target, image_base: int, soft: list[SoftError]) -> list[Module]:
    from ...binfmt.pe import PeError, module_info

    w = target.w
    handles: list[int] = []
    for _attempt in range(5):  # the loader list may change under us: ERROR_PARTIAL_COPY
        count = 1024
        array = (ctypes.c_void_p * count)()
        needed = w.wt.DWORD()
        try:
            w.EnumProcessModulesEx(target.handle, array, ctypes.sizeof(array),
                                   ctypes.byref(needed), w.LIST_MODULES_ALL)
        except w.Win32Error as exc:
            if exc.code == w.ERROR_PARTIAL_COPY:
                time.sleep(0.01)
                continue
            soft.append(SoftError("modules-unreadable", f"the module list is unreadable: {exc}"))
            return []
        n = needed.value // ctypes.sizeof(ctypes.c_void_p)
        if n > count:
            continue
        handles = [h for h in array[:n] if h]
        break
    modules: list[Module] = []
    taken: list[tuple[int, int]] = []
    for base in handles:
        info = w.MODULEINFO()
        try:
            w.GetModuleInformation(target.handle, ctypes.c_void_p(base), ctypes.byref(info),
                                   ctypes.sizeof(info))
        except w.Win32Error:
            continue  # unloaded meanwhile
        buf = ctypes.create_unicode_buffer(32768)
        path = buf.value if w.GetModuleFileNameExW(target.handle, ctypes.c_void_p(base), buf,
                                                   32768) else ""
        path = path or f"module@0x{base:x}"
        size = info.SizeOfImage
        identity: Optional[PdbIdentity] = None
        timestamp = checksum = 0
        version = None
        try:
            pe, _source = module_info(target.read, base, path)
            identity, timestamp, checksum, version = pe.pdb, pe.timestamp, pe.checksum, pe.version
            size = size or pe.size_of_image
        except (PeError, OSError) as exc:
            soft.append(SoftError("module-unreadable", f"{path}: PE headers unreadable ({exc})"))
        if identity is None:
            soft.append(SoftError("module-identity", f"no CodeView (RSDS) record for {path}"))
        if size <= 0 or any(a < base + size and base < b for a, b in taken):
            continue
        taken.append((base, base + size))
        modules.append(Module(path=path, base=base, size=size, identity=identity,
                              timestamp=timestamp, checksum=checksum, version=version,
                              is_main=False))
    main_index = next((i for i, m in enumerate(modules) if m.base == image_base), 0)
    if modules:
        main = modules.pop(main_index)
        modules.insert(0, Module(**{**main.__dict__, "is_main": True}))
    return modules


def _regions_with_paths(target: _Target, modules: list[Module]) -> list[MemoryRegion]:
    out = []
    spans = sorted((m.base, m.end, m.path) for m in modules)
    for r in target.regions(refresh=True):
        path = ""
        if r.kind.value == "image":
            for start, end, p in spans:
                if start <= r.start < end:
                    path = p
                    break
        out.append(MemoryRegion(**{**r.__dict__, "path": path}) if path else r)
    return out
