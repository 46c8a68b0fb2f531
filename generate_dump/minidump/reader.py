"""Read minidumps: everything the writer writes, from any writer, with bounds checked.

This is the file's layout (streams, descriptors and where they lie in the file), for the
tools that patch or search the file itself (``--redact`` in place, ``scan``) and for the
format's tests. The process a dump describes is read as a Snapshot, through
:func:`generate_dump.sources.minidump_file.read_minidump_snapshot`.

Every malformed input raises :class:`MinidumpFormatError` with a message that says what
and where; nothing else escapes (the fuzz tests hold us to it). Memory is not copied on
open: ranges point into the file (an mmap for paths) and are sliced on demand.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from ..snapshot import (
    Arch,
    CpuContext,
    CpuInfo,
    DsoDebug,
    ExceptionInfo,
    FileVersion,
    LinkMapEntry,
    MemoryRegion,
    Module,
    ModuleIdentity,
    OS,
    PythonState,
    RegionKind,
    SoftError,
    TriggerInfo,
    SystemInfo,
)
from . import format as fmt
from .codeview import CodeViewError, decode_codeview
from .context import ContextError, decode_context
from .layout import Record

_ARCHES = {
    fmt.ProcessorArchitecture.X86: Arch.X86,
    fmt.ProcessorArchitecture.AMD64: Arch.AMD64,
    fmt.ProcessorArchitecture.ARM64: Arch.ARM64,
    fmt.ProcessorArchitecture.ARM64_OLD: Arch.ARM64,  # Breakpad's Linux client
}
_OSES = {
    fmt.PlatformId.WIN32_NT: OS.WINDOWS,
    fmt.PlatformId.MACOS: OS.MACOS,
    fmt.PlatformId.IOS: OS.IOS,
    fmt.PlatformId.LINUX: OS.LINUX,
    fmt.PlatformId.ANDROID: OS.ANDROID,
}
_RAW_LINUX: dict[int, str] = {
    fmt.StreamType.LINUX_CPU_INFO: "cpuinfo",
    fmt.StreamType.LINUX_PROC_STATUS: "status",
    fmt.StreamType.LINUX_LSB_RELEASE: "lsb_release",
    fmt.StreamType.LINUX_CMD_LINE: "cmdline",
    fmt.StreamType.LINUX_ENVIRON: "environ",
    fmt.StreamType.LINUX_AUXV: "auxv",
    fmt.StreamType.LINUX_MAPS: "maps",
}
# A count beyond this many records is treated as corrupt rather than allocated.
_MAX_RECORDS = 1 << 22


class MinidumpFormatError(ValueError):
    """The file is not a minidump, or a part of it is malformed."""


@dataclass(frozen=True)
class MemoryDescriptor:
    start: int
    size: int
    rva: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class ThreadRecord:
    tid: int
    suspend_count: int
    priority_class: int
    priority: int
    teb: int
    stack: Optional[MemoryDescriptor]
    context: Optional[CpuContext]
    context_size: int


@dataclass
class Minidump:
    data: Union[bytes, memoryview, mmap.mmap]
    time: int = 0
    streams: dict[int, tuple[int, int]] = field(default_factory=dict)  # type -> (rva, size)
    system: Optional[SystemInfo] = None
    misc: Optional[dict] = None
    threads: list[ThreadRecord] = field(default_factory=list)
    thread_names: dict[int, str] = field(default_factory=dict)
    modules: list[Module] = field(default_factory=list)
    memory: list[MemoryDescriptor] = field(default_factory=list)
    memory64: list[MemoryDescriptor] = field(default_factory=list)
    regions: list[MemoryRegion] = field(default_factory=list)
    exception: Optional[ExceptionInfo] = None
    exception_context: Optional[CpuContext] = None
    linux: dict[str, bytes] = field(default_factory=dict)
    dso_debug: Optional[DsoDebug] = None
    soft_errors: list[SoftError] = field(default_factory=list)
    trigger: Optional[TriggerInfo] = None
    perf_map: Optional[bytes] = None  # our GD_PERF_MAP stream: JIT symbol map lines
    python: Optional[PythonState] = None  # our GD_PYTHON stream
    old_arm64: bool = False  # contexts use Breakpad's MDRawContextARM64_Old layout

    # -- access ----------------------------------------------------------------------------

    def bytes_at(self, desc: MemoryDescriptor) -> bytes:
        return bytes(self.data[desc.rva : desc.rva + desc.size])

    def all_memory(self) -> list[MemoryDescriptor]:
        return sorted(self.memory + self.memory64, key=lambda d: d.start)

    def thread(self, tid: int) -> ThreadRecord:
        for t in self.threads:
            if t.tid == tid:
                return t
        raise KeyError(tid)


# -- parsing ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, data):
        self.data = data
        self.size = len(data)

    def check(self, rva: int, size: int, what: str) -> None:
        if rva < 0 or size < 0 or rva + size > self.size:
            raise MinidumpFormatError(
                f"{what} at offset 0x{rva:x} (+{size} bytes) lies outside the file "
                f"of {self.size} bytes")

    def record(self, rec: Record, rva: int, what: str) -> dict:
        self.check(rva, rec.size, what)
        return rec.unpack(self.data, rva)

    def u32(self, rva: int, what: str) -> int:
        self.check(rva, 4, what)
        return struct.unpack_from("<I", self.data, rva)[0]

    def raw(self, rva: int, size: int, what: str) -> bytes:
        self.check(rva, size, what)
        return bytes(self.data[rva : rva + size])

    def string(self, rva: int, what: str) -> str:
        length = self.u32(rva, what)
        if length % 2 or length > 1 << 20:
            raise MinidumpFormatError(f"{what} at 0x{rva:x} has a bad length {length}")
        raw = self.raw(rva + 4, length, what)
        return raw.decode("utf-16-le", "surrogatepass")

    def list_of(self, rec: Record, rva: int, size: int, what: str) -> list[dict]:
        """A ``{u32 count; records[count]}`` list; some writers pad the count to 8 bytes."""
        count = self.u32(rva, what)
        if count > _MAX_RECORDS or 4 + count * rec.size > size:
            raise MinidumpFormatError(
                f"{what} claims {count} records of {rec.size} bytes but has {size} bytes")
        header = 8 if count and size == 8 + count * rec.size else 4
        return [self.record(rec, rva + header + i * rec.size, what) for i in range(count)]

    def memory(self, start: int, size: int, rva: int, what: str) -> MemoryDescriptor:
        self.check(rva, size, what)
        return MemoryDescriptor(start, size, rva)


def parse(data) -> Minidump:
    """Parse a minidump held in ``data`` (bytes, memoryview or mmap)."""
    p = _Parser(data)
    if p.size < fmt.HEADER.size:
        raise MinidumpFormatError(f"file of {p.size} bytes is too short for a minidump header")
    h = fmt.HEADER.unpack(data)
    if h["signature"] != fmt.SIGNATURE:
        raise MinidumpFormatError(
            f"not a minidump: signature 0x{h['signature']:08x}, expected 'MDMP'")
    if h["version"] & 0xFFFF != fmt.VERSION:
        raise MinidumpFormatError(f"unsupported minidump version 0x{h['version'] & 0xFFFF:04x}")
    n = h["stream_count"]
    if n > 4096:
        raise MinidumpFormatError(f"implausible stream count {n}")
    p.check(h["directory_rva"], n * fmt.DIRECTORY.size, "stream directory")
    md = Minidump(data=data, time=h["time_date_stamp"])
    for i in range(n):
        e = fmt.DIRECTORY.unpack(data, h["directory_rva"] + i * fmt.DIRECTORY.size)
        st = e["stream_type"]
        if st == 0:  # UnusedStream
            continue
        if st in md.streams:
            raise MinidumpFormatError(f"duplicate stream type 0x{st:x}")
        p.check(e["rva"], e["data_size"], f"stream 0x{st:x}")
        md.streams[st] = (e["rva"], e["data_size"])
    # SystemInfo first: contexts need the architecture.
    order = sorted(md.streams, key=lambda st: st != fmt.StreamType.SYSTEM_INFO)
    for st in order:
        rva, size = md.streams[st]
        handler = _HANDLERS.get(st)
        try:
            if handler is not None:
                handler(p, md, rva, size)
            elif st in _RAW_LINUX:
                md.linux[_RAW_LINUX[st]] = p.raw(rva, size, _RAW_LINUX[st])
        except (ContextError, CodeViewError, UnicodeDecodeError, struct.error) as exc:
            raise MinidumpFormatError(f"stream 0x{st:x}: {exc}") from None
    return md


def read_minidump(path: Union[str, os.PathLike]) -> Minidump:
    """Open and parse a minidump file. The file stays mapped for memory access."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise MinidumpFormatError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    return parse(data)


def _system_info(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    v = p.record(fmt.SYSTEM_INFO, rva, "SystemInfo")
    arch_code = v["processor_architecture"]
    if arch_code not in _ARCHES:
        raise MinidumpFormatError(f"unsupported processor architecture 0x{arch_code:x}")
    arch = _ARCHES[fmt.ProcessorArchitecture(arch_code)]
    md.old_arm64 = arch_code == fmt.ProcessorArchitecture.ARM64_OLD
    platform = v["platform_id"]
    if platform not in _OSES:
        raise MinidumpFormatError(f"unknown platform id 0x{platform:x}")
    csd = p.string(v["csd_version_rva"], "CSD version") if v["csd_version_rva"] else ""
    cpu = CpuInfo(count=v["number_of_processors"], family=v["processor_level"],
                  model=v["processor_revision"] >> 8, stepping=v["processor_revision"] & 0xFF)
    if arch in (Arch.X86, Arch.AMD64):
        c = fmt.CPU_X86.unpack(v["cpu"])
        cpu = CpuInfo(
            count=cpu.count, family=cpu.family, model=cpu.model, stepping=cpu.stepping,
            vendor=c["vendor_id"].rstrip(b"\0").decode("ascii", "replace"),
            version_information=c["version_information"],
            feature_information=c["feature_information"],
            amd_extended_features=c["amd_extended_cpu_features"],
        )
    md.system = SystemInfo(
        arch=arch, os=_OSES[fmt.PlatformId(platform)], os_major=v["major_version"],
        os_minor=v["minor_version"], os_build=v["build_number"], os_version=csd, cpu=cpu,
    )


def _misc_info(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    declared = p.u32(rva, "MiscInfo")
    if declared not in fmt.MISC_INFO_SIZES or declared > size:
        raise MinidumpFormatError(f"MiscInfo has unknown size {declared} (stream {size} bytes)")
    full = p.raw(rva, declared, "MiscInfo").ljust(fmt.MISC_INFO_4.size, b"\0")
    md.misc = fmt.MISC_INFO_4.unpack(full[: fmt.MISC_INFO_4.size])
    if md.system is not None and md.misc["flags1"] & fmt.MISC1_PROCESSOR_POWER_INFO:
        md.system = SystemInfo(**{**md.system.__dict__, "cpu": CpuInfo(**{
            **md.system.cpu.__dict__, "max_mhz": md.misc["processor_max_mhz"],
            "current_mhz": md.misc["processor_current_mhz"]})})


def _context(p: _Parser, md: Minidump, rva: int, size: int, what: str) -> Optional[CpuContext]:
    if size == 0:
        return None
    if md.system is None:
        raise MinidumpFormatError(f"{what}: a context without a SystemInfo stream")
    return decode_context(md.system.arch, p.raw(rva, size, what), old_arm64=md.old_arm64)


def _thread_list(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    for v in p.list_of(fmt.THREAD, rva, size, "ThreadList"):
        stack = None
        if v["stack_size"]:
            stack = p.memory(v["stack_start"], v["stack_size"], v["stack_rva"],
                             f"stack of thread {v['thread_id']}")
        md.threads.append(ThreadRecord(
            tid=v["thread_id"], suspend_count=v["suspend_count"],
            priority_class=v["priority_class"], priority=v["priority"], teb=v["teb"],
            stack=stack,
            context=_context(p, md, v["context_rva"], v["context_size"],
                             f"context of thread {v['thread_id']}"),
            context_size=v["context_size"],
        ))


def _thread_names(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    for v in p.list_of(fmt.THREAD_NAME, rva, size, "ThreadNameList"):
        md.thread_names[v["thread_id"]] = p.string(v["name_rva"], "thread name")


def _module_list(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    for i, v in enumerate(p.list_of(fmt.MODULE, rva, size, "ModuleList")):
        name = p.string(v["name_rva"], "module name")
        identity: Optional[ModuleIdentity] = None
        if v["cv_size"]:
            identity = decode_codeview(p.raw(v["cv_rva"], v["cv_size"], f"CodeView of {name}"))
        ffi = fmt.FIXED_FILE_INFO.unpack(v["version_info"])
        version = None
        if ffi["signature"] == fmt.VS_FFI_SIGNATURE:
            version = FileVersion(
                file_version=(ffi["file_version_ms"] >> 16, ffi["file_version_ms"] & 0xFFFF,
                              ffi["file_version_ls"] >> 16, ffi["file_version_ls"] & 0xFFFF),
                product_version=(ffi["product_version_ms"] >> 16,
                                 ffi["product_version_ms"] & 0xFFFF,
                                 ffi["product_version_ls"] >> 16,
                                 ffi["product_version_ls"] & 0xFFFF),
                flags=ffi["file_flags"], os=ffi["file_os"], file_type=ffi["file_type"],
                file_subtype=ffi["file_subtype"],
            )
        md.modules.append(Module(
            path=name, base=v["base"], size=v["size"], identity=identity,
            timestamp=v["time_date_stamp"], checksum=v["checksum"], version=version,
            is_main=(i == 0),
        ))


def _memory_list(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    for v in p.list_of(fmt.MEMORY_DESCRIPTOR, rva, size, "MemoryList"):
        md.memory.append(p.memory(v["start"], v["data_size"], v["rva"],
                                  f"memory at 0x{v['start']:x}"))


def _memory64_list(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    h = p.record(fmt.MEMORY64_HEADER, rva, "Memory64List")
    count = h["count"]
    if count > _MAX_RECORDS or fmt.MEMORY64_HEADER.size + count * fmt.MEMORY64_DESCRIPTOR.size > size:
        raise MinidumpFormatError(f"Memory64List claims {count} ranges but has {size} bytes")
    pos = h["base_rva"]
    for i in range(count):
        v = p.record(fmt.MEMORY64_DESCRIPTOR,
                     rva + fmt.MEMORY64_HEADER.size + i * fmt.MEMORY64_DESCRIPTOR.size,
                     "Memory64List")
        md.memory64.append(p.memory(v["start"], v["data_size"], pos,
                                    f"memory64 at 0x{v['start']:x}"))
        pos += v["data_size"]


def _memory_info_list(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    h = p.record(fmt.MEMORY_INFO_HEADER, rva, "MemoryInfoList")
    hs, es, n = h["size_of_header"], h["size_of_entry"], h["number_of_entries"]
    if hs < fmt.MEMORY_INFO_HEADER.size or es < fmt.MEMORY_INFO.size or n > _MAX_RECORDS \
            or hs + n * es > size:
        raise MinidumpFormatError(
            f"MemoryInfoList header ({hs}, {es}, {n}) does not fit its {size} bytes")
    for i in range(n):
        v = p.record(fmt.MEMORY_INFO, rva + hs + i * es, "MemoryInfoList entry")
        readable, writable, executable = fmt.permissions(v["protect"])
        kind = {fmt.MEM_MAPPED: RegionKind.MAPPED, fmt.MEM_IMAGE: RegionKind.IMAGE}.get(
            v["type"], RegionKind.PRIVATE)
        md.regions.append(MemoryRegion(
            start=v["base_address"], size=v["region_size"], readable=readable,
            writable=writable, executable=executable, kind=kind,
        ))


def _exception(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    v = p.record(fmt.EXCEPTION_STREAM, rva, "Exception")
    n = min(v["number_parameters"], fmt.EXCEPTION_MAXIMUM_PARAMETERS)
    md.exception = ExceptionInfo(
        thread_id=v["thread_id"], code=v["exception_code"], flags=v["exception_flags"],
        address=v["exception_address"], parameters=tuple(v["exception_information"][:n]),
    )
    md.exception_context = _context(p, md, v["context_rva"], v["context_size"],
                                    "exception context")


def _dso_debug(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    v = p.record(fmt.DSO_DEBUG, rva, "DsoDebug")
    if v["dso_count"] > _MAX_RECORDS:
        raise MinidumpFormatError(f"DsoDebug claims {v['dso_count']} link maps")
    maps = []
    for i in range(v["dso_count"]):
        m = p.record(fmt.LINK_MAP, v["map_rva"] + i * fmt.LINK_MAP.size, "link map")
        maps.append(LinkMapEntry(addr=m["addr"], name=p.string(m["name_rva"], "link map name"),
                                 ld=m["ld"]))
    dynamic = p.raw(rva + fmt.DSO_DEBUG.size, max(0, size - fmt.DSO_DEBUG.size), "_DYNAMIC")
    md.dso_debug = DsoDebug(
        version=v["version"], brk=v["brk"], ldbase=v["ldbase"],
        dynamic_addr=v["dynamic"], link_maps=tuple(maps), dynamic=dynamic,
    )


def _soft_errors(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    try:
        doc = json.loads(p.raw(rva, size, "soft errors").decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise MinidumpFormatError(f"soft errors stream is not JSON: {exc}") from None
    if not isinstance(doc, list):
        raise MinidumpFormatError("soft errors stream is not a JSON list")
    for item in doc:
        if isinstance(item, dict):
            md.soft_errors.append(SoftError(str(item.get("kind", "")), str(item.get("message", ""))))
        else:
            md.soft_errors.append(SoftError("unknown", json.dumps(item)))


def _trigger(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    try:
        doc = json.loads(p.raw(rva, size, "trigger").decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise MinidumpFormatError(f"trigger stream is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MinidumpFormatError("trigger stream is not a JSON object")
    t = doc.get("time", 0)
    md.trigger = TriggerInfo(trigger=str(doc.get("trigger", "")),
                             threshold=str(doc.get("threshold", "")),
                             value=str(doc.get("value", "")),
                             time=t if isinstance(t, int) else 0)


def _perf_map(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    md.perf_map = p.raw(rva, size, "perf map")


def _python(p: _Parser, md: Minidump, rva: int, size: int) -> None:
    from ..python.stream import decode

    raw = p.raw(rva, size, "Python stream")
    try:
        md.python = decode(raw)
    except ValueError as exc:
        # Only our own addition is lost: the rest of the dump stays readable.
        md.soft_errors.append(SoftError("python-stream", str(exc)))


_HANDLERS: dict[int, Callable[[_Parser, Minidump, int, int], None]] = {
    fmt.StreamType.SYSTEM_INFO: _system_info,
    fmt.StreamType.MISC_INFO: _misc_info,
    fmt.StreamType.THREAD_LIST: _thread_list,
    fmt.StreamType.THREAD_NAME_LIST: _thread_names,
    fmt.StreamType.MODULE_LIST: _module_list,
    fmt.StreamType.MEMORY_LIST: _memory_list,
    fmt.StreamType.MEMORY64_LIST: _memory64_list,
    fmt.StreamType.MEMORY_INFO_LIST: _memory_info_list,
    fmt.StreamType.EXCEPTION: _exception,
    fmt.StreamType.LINUX_DSO_DEBUG: _dso_debug,
    fmt.StreamType.MOZ_SOFT_ERRORS: _soft_errors,
    fmt.StreamType.GD_TRIGGER: _trigger,
    fmt.StreamType.GD_PERF_MAP: _perf_map,
    fmt.StreamType.GD_PYTHON: _python,
}
