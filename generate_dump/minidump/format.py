"""Minidump constants and record layouts (MINIDUMP_* from the Windows SDK, MD* from Breakpad).

Only layouts live here; what goes in them is the writer's job and what comes out the
reader's. Sizes are pinned by tests against the values in the reference doc.
"""

from __future__ import annotations

import enum

from .layout import Record

SIGNATURE = 0x504D444D  # "MDMP"
VERSION = 0xA793


class StreamType(enum.IntEnum):
    THREAD_LIST = 3
    MODULE_LIST = 4
    MEMORY_LIST = 5
    EXCEPTION = 6
    SYSTEM_INFO = 7
    MEMORY64_LIST = 9
    MISC_INFO = 15
    MEMORY_INFO_LIST = 16
    THREAD_NAME_LIST = 24
    LINUX_CPU_INFO = 0x47670003
    LINUX_PROC_STATUS = 0x47670004
    LINUX_LSB_RELEASE = 0x47670005
    LINUX_CMD_LINE = 0x47670006
    LINUX_ENVIRON = 0x47670007
    LINUX_AUXV = 0x47670008
    LINUX_MAPS = 0x47670009
    LINUX_DSO_DEBUG = 0x4767000A
    MOZ_SOFT_ERRORS = 0x4D7A0004
    # Streams of ours ("GD" = 0x4744), each documented where it is written.
    GD_PERF_MAP = 0x47440001  # JIT symbol maps (/tmp/perf-PID.map)
    GD_PYTHON = 0x47440002  # CPython interpreter state and decoded Python stacks
    GD_TRIGGER = 0x47440003  # why `watch` took the dump (trigger and measured value)
    GD_REDACTION = 0x47440004  # what --redact changed
    GD_SOURCE = 0x47440005  # where the snapshot came from (live process, core file, ...)


class ProcessorArchitecture(enum.IntEnum):
    X86 = 0
    ARM = 5
    AMD64 = 9
    ARM64 = 12
    ARM64_OLD = 0x8003  # Breakpad's pre-standard value; not written by us


class PlatformId(enum.IntEnum):
    WIN32_NT = 2
    MACOS = 0x8101
    IOS = 0x8102
    LINUX = 0x8201
    ANDROID = 0x8203


CV_SIGNATURE_ELF = 0x4270454C  # "BpEL": Breakpad's ELF build-id CodeView record
CV_SIGNATURE_RSDS = 0x53445352  # "RSDS": PDB 7.0

VS_FFI_SIGNATURE = 0xFEEF04BD
VS_FFI_STRUCVERSION = 0x00010000
VFT_APP = 1
VFT_DLL = 2

# ContextFlags
CONTEXT_AMD64 = 0x00100000
CONTEXT_X86 = 0x00010000
CONTEXT_ARM64 = 0x00400000
CONTEXT_CONTROL = 0x1
CONTEXT_INTEGER = 0x2
CONTEXT_SEGMENTS = 0x4  # x86 / amd64
CONTEXT_FLOATING_POINT = 0x8  # x86 / amd64
CONTEXT_DEBUG_REGISTERS = 0x10  # x86 / amd64
CONTEXT_EXTENDED_REGISTERS = 0x20  # x86
CONTEXT_ARM64_FLOATING_POINT = 0x4

# MiscInfo Flags1
MISC1_PROCESS_ID = 0x1
MISC1_PROCESS_TIMES = 0x2
MISC1_PROCESSOR_POWER_INFO = 0x4
MISC3_TIMEZONE = 0x40
MISC4_BUILDSTRING = 0x100

# MemoryInfo
MEM_COMMIT = 0x1000
MEM_PRIVATE = 0x20000
MEM_MAPPED = 0x40000
MEM_IMAGE = 0x1000000
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
PAGE_EXECUTE = 0x10
PAGE_EXECUTE_READ = 0x20
PAGE_EXECUTE_READWRITE = 0x40
PAGE_EXECUTE_WRITECOPY = 0x80
PAGE_GUARD = 0x100

_READABLE = {PAGE_READONLY, PAGE_READWRITE, PAGE_WRITECOPY, PAGE_EXECUTE_READ,
             PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY}
_WRITABLE = {PAGE_READWRITE, PAGE_WRITECOPY, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY}
_EXECUTABLE = {PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY}


def protection(readable: bool, writable: bool, executable: bool) -> int:
    """The PAGE_* value for a region's permissions (what MemoryInfoList stores)."""
    if executable:
        return (PAGE_EXECUTE_READWRITE if writable else
                PAGE_EXECUTE_READ if readable else PAGE_EXECUTE)
    if writable:
        return PAGE_READWRITE
    return PAGE_READONLY if readable else PAGE_NOACCESS


def permissions(protect: int) -> tuple[bool, bool, bool]:
    """(readable, writable, executable) of a PAGE_* value; guard pages are unreadable."""
    if protect & PAGE_GUARD:
        return False, False, False
    base = protect & 0xFF
    return base in _READABLE, base in _WRITABLE, base in _EXECUTABLE

# Largest region Breakpad's reader accepts in one memory descriptor.
BREAKPAD_MAX_REGION = 64 * 1024 * 1024
# More MemoryList descriptors than this and Breakpad rejects the whole list
# (MinidumpMemoryList::max_regions_); the other limits are in docs/minidump-limits.md.
MAX_MEMORY_RANGES = 4096
# Breakpad reads at most this many threads, modules and UTF-16 units in a string.
BREAKPAD_MAX_THREADS = 4096
BREAKPAD_MAX_MODULES = 2048
BREAKPAD_MAX_STRING = 1024

HEADER = Record("MINIDUMP_HEADER", [
    ("signature", "I"), ("version", "I"), ("stream_count", "I"), ("directory_rva", "I"),
    ("checksum", "I"), ("time_date_stamp", "I"), ("flags", "Q"),
])
DIRECTORY = Record("MINIDUMP_DIRECTORY", [("stream_type", "I"), ("data_size", "I"), ("rva", "I")])
LOCATION = Record("MINIDUMP_LOCATION_DESCRIPTOR", [("data_size", "I"), ("rva", "I")])
MEMORY_DESCRIPTOR = Record("MINIDUMP_MEMORY_DESCRIPTOR", [
    ("start", "Q"), ("data_size", "I"), ("rva", "I"),
])
MEMORY64_HEADER = Record("MINIDUMP_MEMORY64_LIST", [("count", "Q"), ("base_rva", "Q")])
MEMORY64_DESCRIPTOR = Record("MINIDUMP_MEMORY_DESCRIPTOR64", [("start", "Q"), ("data_size", "Q")])

THREAD = Record("MINIDUMP_THREAD", [
    ("thread_id", "I"), ("suspend_count", "I"), ("priority_class", "I"), ("priority", "I"),
    ("teb", "Q"),
    ("stack_start", "Q"), ("stack_size", "I"), ("stack_rva", "I"),
    ("context_size", "I"), ("context_rva", "I"),
])

FIXED_FILE_INFO = Record("VS_FIXEDFILEINFO", [
    ("signature", "I"), ("struct_version", "I"),
    ("file_version_ms", "I"), ("file_version_ls", "I"),
    ("product_version_ms", "I"), ("product_version_ls", "I"),
    ("file_flags_mask", "I"), ("file_flags", "I"), ("file_os", "I"),
    ("file_type", "I"), ("file_subtype", "I"),
    ("file_date_ms", "I"), ("file_date_ls", "I"),
])

MODULE = Record("MINIDUMP_MODULE", [
    ("base", "Q"), ("size", "I"), ("checksum", "I"), ("time_date_stamp", "I"),
    ("name_rva", "I"), ("version_info", "52s"),
    ("cv_size", "I"), ("cv_rva", "I"), ("misc_size", "I"), ("misc_rva", "I"),
    ("reserved0", "Q"), ("reserved1", "Q"),
])

SYSTEM_INFO = Record("MINIDUMP_SYSTEM_INFO", [
    ("processor_architecture", "H"), ("processor_level", "H"), ("processor_revision", "H"),
    ("number_of_processors", "B"), ("product_type", "B"),
    ("major_version", "I"), ("minor_version", "I"), ("build_number", "I"),
    ("platform_id", "I"), ("csd_version_rva", "I"), ("suite_mask", "H"), ("reserved2", "H"),
    ("cpu", "24s"),
])
CPU_X86 = Record("X86_CPU_INFO", [
    ("vendor_id", "12s"), ("version_information", "I"), ("feature_information", "I"),
    ("amd_extended_cpu_features", "I"),
])
CPU_OTHER = Record("OTHER_CPU_INFO", [("processor_features", "2Q"), ("pad", "8s")])

MISC_INFO_SIZES = (24, 44, 232, 832, 1364)
MISC_INFO_4 = Record("MINIDUMP_MISC_INFO_4", [
    ("size_of_info", "I"), ("flags1", "I"), ("process_id", "I"),
    ("process_create_time", "I"), ("process_user_time", "I"), ("process_kernel_time", "I"),
    ("processor_max_mhz", "I"), ("processor_current_mhz", "I"), ("processor_mhz_limit", "I"),
    ("processor_max_idle_state", "I"), ("processor_current_idle_state", "I"),
    ("process_integrity_level", "I"), ("process_execute_flags", "I"), ("protected_process", "I"),
    ("time_zone_id", "I"), ("time_zone", "172s"),
    ("build_string", "520s"), ("dbg_bld_str", "80s"),
])

MEMORY_INFO_HEADER = Record("MINIDUMP_MEMORY_INFO_LIST", [
    ("size_of_header", "I"), ("size_of_entry", "I"), ("number_of_entries", "Q"),
])
MEMORY_INFO = Record("MINIDUMP_MEMORY_INFO", [
    ("base_address", "Q"), ("allocation_base", "Q"), ("allocation_protect", "I"),
    ("alignment1", "I"), ("region_size", "Q"), ("state", "I"), ("protect", "I"),
    ("type", "I"), ("alignment2", "I"),
])

THREAD_NAME = Record("MINIDUMP_THREAD_NAME", [("thread_id", "I"), ("name_rva", "Q")])

EXCEPTION_STREAM = Record("MINIDUMP_EXCEPTION_STREAM", [
    ("thread_id", "I"), ("alignment", "I"),
    ("exception_code", "I"), ("exception_flags", "I"), ("exception_record", "Q"),
    ("exception_address", "Q"), ("number_parameters", "I"), ("unused_alignment", "I"),
    ("exception_information", "15Q"),
    ("context_size", "I"), ("context_rva", "I"),
])
EXCEPTION_MAXIMUM_PARAMETERS = 15

DSO_DEBUG = Record("MDRawDebug64", [
    ("version", "I"), ("map_rva", "I"), ("dso_count", "I"), ("pad", "I"),
    ("brk", "Q"), ("ldbase", "Q"), ("dynamic", "Q"),
])
LINK_MAP = Record("MDRawLinkMap64", [("addr", "Q"), ("name_rva", "I"), ("pad", "I"), ("ld", "Q")])

CONTEXT_AMD64_RECORD = Record("CONTEXT_AMD64", [
    ("home", "6Q"), ("context_flags", "I"), ("mx_csr", "I"),
    ("cs", "H"), ("ds", "H"), ("es", "H"), ("fs", "H"), ("gs", "H"), ("ss", "H"),
    ("eflags", "I"),
    ("dr0", "Q"), ("dr1", "Q"), ("dr2", "Q"), ("dr3", "Q"), ("dr6", "Q"), ("dr7", "Q"),
    ("rax", "Q"), ("rcx", "Q"), ("rdx", "Q"), ("rbx", "Q"),
    ("rsp", "Q"), ("rbp", "Q"), ("rsi", "Q"), ("rdi", "Q"),
    ("r8", "Q"), ("r9", "Q"), ("r10", "Q"), ("r11", "Q"),
    ("r12", "Q"), ("r13", "Q"), ("r14", "Q"), ("r15", "Q"),
    ("rip", "Q"), ("fxsave", "512s"), ("vector_register", "416s"),
    ("vector_control", "Q"), ("debug_control", "Q"),
    ("last_branch_to_rip", "Q"), ("last_branch_from_rip", "Q"),
    ("last_exception_to_rip", "Q"), ("last_exception_from_rip", "Q"),
])

CONTEXT_ARM64_RECORD = Record("CONTEXT_ARM64", [
    ("context_flags", "I"), ("cpsr", "I"), ("x", "29Q"), ("fp", "Q"), ("lr", "Q"),
    ("sp", "Q"), ("pc", "Q"), ("v", "512s"), ("fpcr", "I"), ("fpsr", "I"),
    ("bcr", "8I"), ("bvr", "8Q"), ("wcr", "2I"), ("wvr", "2Q"),
])

# Breakpad's pre-standard arm64 context (MDRawContextARM64_Old, with architecture 0x8003),
# which its Linux client still writes: read, never written.
CONTEXT_ARM64_OLD_RECORD = Record("MDRawContextARM64_Old", [
    ("context_flags", "Q"), ("iregs", "32Q"), ("pc", "Q"), ("cpsr", "I"),
    ("fpsr", "I"), ("fpcr", "I"), ("v", "512s"),
])
CONTEXT_ARM64_OLD_FLOATING_POINT = 0x4

CONTEXT_X86_RECORD = Record("CONTEXT_X86", [
    ("context_flags", "I"),
    ("dr0", "I"), ("dr1", "I"), ("dr2", "I"), ("dr3", "I"), ("dr6", "I"), ("dr7", "I"),
    ("float_save", "112s"),
    ("gs", "I"), ("fs", "I"), ("es", "I"), ("ds", "I"),
    ("edi", "I"), ("esi", "I"), ("ebx", "I"), ("edx", "I"), ("ecx", "I"), ("eax", "I"),
    ("ebp", "I"), ("eip", "I"), ("cs", "I"), ("eflags", "I"), ("esp", "I"), ("ss", "I"),
    ("extended_registers", "512s"),
])

# Soft errors: rust-minidump reads the stream as a JSON value; a list of objects is what
# minidump-writer emits and what its processor prints.
