"""The snapshot model: what a backend saw in a process, independent of any file format.

Sources produce a :class:`Snapshot`: the backends (ptrace, LLDB, Win32) from a live
process, sources/ from a core file or a minidump. Sinks consume one: the minidump writer,
the core writer, `inspect` and the summaries. Nothing here knows about file layouts or
about how the data was obtained, so each side can be tested on its own: synthetic
snapshots for the sinks, real processes and files for the sources.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union


class Arch(enum.Enum):
    X86 = "x86"
    AMD64 = "amd64"
    ARM64 = "arm64"


class OS(enum.Enum):
    LINUX = "linux"
    ANDROID = "android"
    MACOS = "macos"
    IOS = "ios"
    WINDOWS = "windows"


# --- CPU contexts -------------------------------------------------------------------------

AMD64_GPR_NAMES = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)
X86_GPR_NAMES = ("edi", "esi", "ebx", "edx", "ecx", "eax", "ebp", "eip", "esp")


@dataclass(frozen=True)
class Amd64Context:
    """x86-64 registers. ``fxsave`` is the 512-byte FXSAVE image (what NT_PRFPREG holds)."""

    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    rbx: int = 0
    rsp: int = 0
    rbp: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    eflags: int = 0
    cs: int = 0
    ds: int = 0
    es: int = 0
    fs: int = 0
    gs: int = 0
    ss: int = 0
    fxsave: Optional[bytes] = None
    debug: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # dr0 dr1 dr2 dr3 dr6 dr7

    @property
    def pc(self) -> int:
        return self.rip

    @property
    def sp(self) -> int:
        return self.rsp

    @property
    def mxcsr(self) -> int:
        if self.fxsave is None:
            return 0
        return int.from_bytes(self.fxsave[24:28], "little")


@dataclass(frozen=True)
class Arm64Context:
    """AArch64 registers: x0..x28, fp (x29), lr (x30), sp, pc, pstate; v0..v31 as 128-bit ints."""

    x: tuple[int, ...] = (0,) * 29
    fp: int = 0
    lr: int = 0
    sp: int = 0
    pc: int = 0
    cpsr: int = 0
    v: Optional[tuple[int, ...]] = None
    fpsr: int = 0
    fpcr: int = 0


@dataclass(frozen=True)
class X86Context:
    """32-bit x86 registers; ``fsave`` is the 112-byte FLOATING_SAVE_AREA, ``fxsave`` 512 bytes."""

    eax: int = 0
    ecx: int = 0
    edx: int = 0
    ebx: int = 0
    esp: int = 0
    ebp: int = 0
    esi: int = 0
    edi: int = 0
    eip: int = 0
    eflags: int = 0
    cs: int = 0
    ds: int = 0
    es: int = 0
    fs: int = 0
    gs: int = 0
    ss: int = 0
    fsave: Optional[bytes] = None
    fxsave: Optional[bytes] = None
    debug: tuple[int, ...] = (0, 0, 0, 0, 0, 0)

    @property
    def pc(self) -> int:
        return self.eip

    @property
    def sp(self) -> int:
        return self.esp


CpuContext = Union[Amd64Context, Arm64Context, X86Context]

CONTEXT_TYPES: dict[Arch, type] = {
    Arch.AMD64: Amd64Context,
    Arch.ARM64: Arm64Context,
    Arch.X86: X86Context,
}


# --- memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRange:
    """Bytes copied from the process at ``start``."""

    start: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def slice(self, lo: int, hi: int) -> "MemoryRange":
        """The part of this range between addresses ``lo`` and ``hi``."""
        return MemoryRange(lo, self.data[lo - self.start : hi - self.start])

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        yield self.data


@dataclass(frozen=True)
class LazyMemory:
    """Memory read from the process only while the writer streams it (full dumps).

    ``read(address, size)`` may return fewer bytes (an unreadable page); the writer pads
    with zeros so the file layout holds, and ``on_short`` hears about it.
    """

    start: int
    size: int
    read: Callable[[int, int], bytes] = field(compare=False, repr=False)
    on_short: Optional[Callable[[int, int], None]] = field(default=None, compare=False,
                                                           repr=False)
    # Optional fast path: readinto(address, ctypes buffer) -> bytes read.
    readinto: Optional[Callable[[int, object], int]] = field(default=None, compare=False,
                                                             repr=False)

    @property
    def end(self) -> int:
        return self.start + self.size

    def slice(self, lo: int, hi: int) -> "LazyMemory":
        return LazyMemory(lo, hi - lo, self.read, self.on_short, self.readinto)

    def chunks(self, size: int = 4 << 20) -> Iterator[Union[bytes, memoryview]]:
        """The bytes, piece by piece. With ``readinto`` the pieces are views of one reused
        buffer: each is valid only until the next one is asked for."""
        if self.readinto is not None:
            import ctypes

            buf = ctypes.create_string_buffer(min(size, self.size) or 1)
            view = memoryview(buf).cast("B")
            for addr in range(self.start, self.end, size):
                n = min(size, self.end - addr)
                chunk_buf = buf if n == len(view) else (ctypes.c_char * n).from_buffer(buf)
                got = self.readinto(addr, chunk_buf)
                if got < n:
                    if self.on_short is not None:
                        self.on_short(addr + got, n - got)
                    ctypes.memset(ctypes.addressof(buf) + got, 0, n - got)
                yield view[:n]
            return
        for addr in range(self.start, self.end, size):
            n = min(size, self.end - addr)
            data = self.read(addr, n)
            if len(data) < n:
                if self.on_short is not None:
                    self.on_short(addr + len(data), n - len(data))
                data = data + bytes(n - len(data))
            yield data


Memory = Union[MemoryRange, LazyMemory]


class RegionKind(enum.Enum):
    PRIVATE = "private"
    MAPPED = "mapped"  # shared file or anonymous shared mapping
    IMAGE = "image"  # a mapped executable image (Windows / Mach-O notion)


@dataclass(frozen=True)
class MemoryRegion:
    """One entry of the address space map (a /proc/PID/maps line, a VirtualQuery result)."""

    start: int
    size: int
    readable: bool
    writable: bool
    executable: bool
    kind: RegionKind = RegionKind.PRIVATE
    path: str = ""
    offset: int = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def merge_key(self) -> tuple:
        """Adjacent regions with equal keys are one stretch of memory (one stack, say)."""
        return (self.readable, self.writable, self.executable, self.kind, self.path)


# --- threads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thread:
    tid: int
    context: CpuContext
    stack: Optional[MemoryRange] = None
    name: Optional[str] = None
    thread_pointer: int = 0  # fs_base / TPIDR_EL0 / TEB
    suspend_count: int = 0
    priority_class: int = 0
    priority: int = 0


# --- modules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElfBuildId:
    """GNU build id bytes (any length); ``from_text_hash`` when derived Breakpad-style from .text."""

    build_id: bytes
    from_text_hash: bool = False


@dataclass(frozen=True)
class PdbIdentity:
    """A PE CodeView RSDS record: the 16 GUID bytes as stored in the file, age and PDB path."""

    guid: bytes
    age: int
    pdb_path: str


@dataclass(frozen=True)
class MachOUuid:
    """A Mach-O LC_UUID, 16 bytes in canonical (as printed) order."""

    uuid: bytes


ModuleIdentity = Union[ElfBuildId, PdbIdentity, MachOUuid]


@dataclass(frozen=True)
class FileVersion:
    """VS_FIXEDFILEINFO essentials; versions as 4-tuples (major, minor, build, revision)."""

    file_version: tuple[int, int, int, int] = (0, 0, 0, 0)
    product_version: tuple[int, int, int, int] = (0, 0, 0, 0)
    flags: int = 0
    os: int = 0
    file_type: int = 0  # 1 application, 2 dll
    file_subtype: int = 0


@dataclass(frozen=True)
class Module:
    path: str  # the name readers show; for ELF the basename is the SONAME
    base: int
    size: int
    identity: Optional[ModuleIdentity] = None
    timestamp: int = 0
    checksum: int = 0
    version: Optional[FileVersion] = None
    is_main: bool = False

    @property
    def end(self) -> int:
        return self.base + self.size


# --- process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkMapEntry:
    addr: int  # l_addr (load bias)
    name: str
    ld: int  # l_ld (address of the module's _DYNAMIC)


@dataclass(frozen=True)
class DsoDebug:
    """The dynamic linker's r_debug and link_map chain, and a copy of the executable's _DYNAMIC."""

    version: int
    brk: int
    ldbase: int
    dynamic_addr: int
    link_maps: tuple[LinkMapEntry, ...] = ()
    dynamic: bytes = b""


@dataclass(frozen=True)
class LinuxFiles:
    """Raw /proc and /etc texts that Linux readers understand, stored verbatim."""

    cpuinfo: Optional[bytes] = None
    status: Optional[bytes] = None
    lsb_release: Optional[bytes] = None
    cmdline: Optional[bytes] = None
    environ: Optional[bytes] = None  # only when the user asked for the environment
    auxv: Optional[bytes] = None
    maps: Optional[bytes] = None
    dso_debug: Optional[DsoDebug] = None


@dataclass(frozen=True)
class Process:
    pid: int
    create_time: int = 0  # Unix seconds
    user_time: float = 0.0  # seconds
    kernel_time: float = 0.0
    command_line: tuple[str, ...] = ()
    parent_pid: int = 0


@dataclass(frozen=True)
class CpuInfo:
    """CPU identity; for x86 the cpuid words, elsewhere only what is known."""

    count: int = 1
    vendor: str = ""
    family: int = 0
    model: int = 0
    stepping: int = 0
    version_information: int = 0  # cpuid(1).eax
    feature_information: int = 0  # cpuid(1).edx
    amd_extended_features: int = 0  # cpuid(0x80000001).edx
    max_mhz: int = 0
    current_mhz: int = 0


@dataclass(frozen=True)
class SystemInfo:
    arch: Arch
    os: OS
    os_major: int = 0
    os_minor: int = 0
    os_build: int = 0
    os_version: str = ""  # free text, e.g. "6.1.0-18-amd64 #1 SMP ... x86_64"
    cpu: CpuInfo = field(default_factory=CpuInfo)


@dataclass(frozen=True)
class ExceptionInfo:
    """Why the process was dumped, when it was a signal or exception (not for live snapshots)."""

    thread_id: int
    code: int  # signal number (POSIX) or exception code (Windows)
    flags: int = 0  # si_code (POSIX)
    address: int = 0
    parameters: tuple[int, ...] = ()


@dataclass(frozen=True)
class SoftError:
    """Something that could not be captured; the dump is still useful without it."""

    kind: str  # a short stable word: "thread-vanished", "memory-unreadable", ...
    message: str


# --- Python ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonFrame:
    """One Python frame: what a traceback line says. ``entry`` marks the outermost frame of
    one C-level call of the interpreter loop (_PyEval_EvalFrameDefault), for merging with
    native frames."""

    function: str
    file: str
    line: Optional[int] = None
    qualname: Optional[str] = None
    first_line: int = 0
    entry: bool = True


@dataclass(frozen=True)
class PythonThread:
    """A Python thread state: its native thread (0 when not known) and frames, innermost
    first. ``note`` says why the frames may be incomplete."""

    tid: int
    thread_id: int = 0  # PyThread_get_thread_ident (pthread_t)
    interpreter: int = 0  # index of its interpreter in the runtime's list
    holds_gil: bool = False
    frames: tuple[PythonFrame, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class PythonState:
    """CPython's threads and their Python stacks, decoded from the process's memory.

    ``read_while_running``: read after the threads ran again (the stacks may have moved
    on since registers were copied); ``changed_tids`` lists threads whose innermost frame
    differs from the one seen while frozen."""

    version: str  # "3.11.7"
    runtime_address: int = 0
    module: str = ""
    threads: tuple[PythonThread, ...] = ()
    gil_holder: Optional[int] = None  # tid
    read_while_running: bool = False
    changed_tids: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class TriggerInfo:
    """Why `watch` took the dump: the trigger that fired and what it measured."""

    trigger: str  # "cpu-above", "memory-below", "signal", "exit", "every", ...
    threshold: str  # as the user gave it, e.g. "90%", "512M", "SIGUSR1"
    value: str  # what was measured, e.g. "97.5% for 3.0 s", "exit status 3"
    time: int = 0  # Unix seconds when it fired


@dataclass(frozen=True)
class ExtraStream:
    """A stream that a sink-side step adds (one of our GD_* streams), stored as given.

    ``render(final)`` returns at most ``size`` bytes (padded to ``size``): it is called
    with ``final=False`` to lay the file out, and again with ``final=True`` after the
    memory has been written, so that a step that watches the memory stream by (redaction)
    can record what it saw; that second rendering is written back when the output can seek.
    """

    stream_type: int
    render: Callable[[bool], bytes] = field(compare=False, repr=False)
    size: int = 0


@dataclass(frozen=True)
class Snapshot:
    process: Process
    system: SystemInfo
    threads: tuple[Thread, ...] = ()
    modules: tuple[Module, ...] = ()
    memory: tuple[Memory, ...] = ()  # extra memory besides thread stacks
    regions: tuple[MemoryRegion, ...] = ()
    exception: Optional[ExceptionInfo] = None
    linux: Optional[LinuxFiles] = None
    soft_errors: tuple[SoftError, ...] = ()
    time: int = 0  # when the snapshot was taken, Unix seconds
    trigger: Optional[TriggerInfo] = None  # set by `watch`
    # Lines of the process's JIT symbol map (perf's /tmp/perf-PID.map format) that name
    # code its threads' stacks point into; None when it keeps no map.
    perf_map: Optional[bytes] = None
    extra_streams: tuple[ExtraStream, ...] = ()  # added by sink-side steps (--redact)
    python: Optional[PythonState] = None  # CPython stacks, when the process runs CPython
