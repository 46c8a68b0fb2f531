"""``inspect --json --format rust-minidump``: our walk in the JSON schema of rust-minidump's
``minidump-stackwalk --json`` (minidump-processor's json-schema.md), so that tools built on
that output (Socorro-style processors, dashboards) read ours unchanged.

Every key rust-minidump writes is present; the ones we fill are listed in docs/inspect.md
("rust-minidump JSON"), the others are ``null`` (or ``[]``/``false`` where rust-minidump
writes that when it has nothing). Addresses are ``"0x"`` + 16 hex digits as there.
"""

from __future__ import annotations

import json
from typing import Optional

from .minidump.codeview import code_id, debug_id
from .snapshot import OS, Arch, PdbIdentity, Snapshot
from .unwind import ThreadStack
from .unwind.locate import module_name
from .unwind.debug_info import module_debug

_OS_NAMES = {OS.LINUX: "Linux", OS.ANDROID: "Android", OS.MACOS: "Mac OS X", OS.IOS: "iOS",
             OS.WINDOWS: "Windows NT"}
_ARCH_NAMES = {Arch.AMD64: "amd64", Arch.ARM64: "arm64", Arch.X86: "x86"}
_TRUST = {"context": "context", "cfi": "cfi", "fp": "frame_pointer", "scan": "scan"}


def _hex(v: Optional[int]) -> Optional[str]:
    return None if v is None else f"0x{v & (2**64 - 1):016x}"


def _frame(f, index: int) -> dict:
    """Caller frames show the call instruction's last byte (return address - 1) as
    rust-minidump's ``instruction`` does; offsets are taken from there."""
    md = f.module
    pc = f.lookup_pc
    return {
        "file": f.file,
        "frame": index,
        "function": f.function,
        "function_offset": _hex(pc - f.symbol.start) if f.symbol is not None else None,
        "inlines": None,
        "line": f.line,
        "missing_symbols": md is not None and not md.has_symbols,
        "module": f.module_name,
        "module_offset": _hex(pc - md.module.base) if md is not None else None,
        "offset": _hex(pc),
        "trust": _TRUST.get(f.trust, "none"),
        "unloaded_modules": None,
    }


_AMD64_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
               "r11", "r12", "r13", "r14", "r15", "rip")


def _registers(snapshot: Snapshot, t: ThreadStack) -> Optional[dict]:
    """The crashing thread's registers (x86-64), as rust-minidump shows them on frame 0."""
    if snapshot.system.arch != Arch.AMD64:
        return None
    for tv in snapshot.threads:
        if tv.tid == t.tid and tv.context is not None:
            try:
                return {name: _hex(getattr(tv.context, name)) for name in _AMD64_REGS}
            except AttributeError:
                return None
    return None


def _thread(t: ThreadStack) -> dict:
    return {
        "frame_count": len(t.frames),
        "frames": [_frame(f, i) for i, f in enumerate(t.frames)],
        "last_error_value": None,
        "thread_id": t.tid,
        "thread_name": t.name,
    }


def rust_minidump_document(snapshot: Snapshot, stacks: list[ThreadStack], options) -> dict:
    """The document; ``stacks`` as :func:`walk_process` returned them (any order)."""
    from .inspect_dump import exception_names

    by_tid = {t.tid: t for t in stacks}
    ordered = [by_tid[t.tid] for t in snapshot.threads if t.tid in by_tid]
    modules = []
    main_index = None
    for i, m in enumerate(snapshot.modules):
        md = module_debug(m, options)
        if m.is_main and main_index is None:
            main_index = i
        ident = m.identity
        dfile = module_name(m.path)
        if isinstance(ident, PdbIdentity) and ident.pdb_path:
            dfile = module_name(ident.pdb_path)
        modules.append({
            "base_addr": _hex(m.base),
            "cert_subject": None,
            "code_id": (code_id(ident) or None) if ident is not None else None,
            "corrupt_symbols": False,
            "debug_file": dfile,
            "debug_id": debug_id(ident) if ident is not None else None,
            "end_addr": _hex(m.base + m.size),
            "filename": module_name(m.path),
            "loaded_symbols": md.has_symbols,
            "missing_symbols": not md.has_symbols,
            "symbol_url": md.files.symbol_url,
            "version": None,
        })
    e = snapshot.exception
    crash: dict = {"address": None, "adjusted_address": None, "assertion": None,
                   "crash_inconsistencies": None, "crashing_thread": None,
                   "instruction": None, "instruction_pointer_update": None,
                   "memory_accesses": None, "possible_bit_flips": None, "type": None}
    crashing = None
    if e is not None:
        name, sub = exception_names(snapshot.system.os, e.code, e.flags)
        crash["type"] = f"{name} / {sub}" if sub else name
        crash["address"] = _hex(e.address)
        crash["crash_inconsistencies"] = []
        for i, t in enumerate(ordered):
            if t.tid == e.thread_id:
                crash["crashing_thread"] = i
                crashing = dict(_thread(t), threads_index=i)
                regs = _registers(snapshot, t)
                if regs and crashing["frames"]:
                    crashing["frames"][0]["registers"] = regs
                break
    s = snapshot.system
    system = {
        "cpu_arch": _ARCH_NAMES.get(s.arch) if s else None,
        "cpu_count": s.cpu.count if s else None,
        "cpu_info": (f"family {s.cpu.family} model {s.cpu.model} stepping {s.cpu.stepping}"
                     if s and s.arch in (Arch.AMD64, Arch.X86) else None),
        "cpu_microcode_version": None,
        "os": _OS_NAMES.get(s.os) if s else None,
        "os_ver": (f"{s.os_major}.{s.os_minor}.{s.os_build}"
                   + (f" {s.os_version}" if s.os_version else "")) if s else None,
    }
    doc = {
        "crash_info": crash,
        "handles": None,
        "linux_memory_map_count": None,
        "lsb_release": None,
        "mac_boot_args": None,
        "mac_crash_info": None,
        "main_module": main_index,
        "modules": modules,
        "modules_contains_cert_info": False,
        "pid": snapshot.process.pid,
        "proc_limits": None,
        "soft_errors": None,
        "status": "OK",
        "system_info": system,
        "thread_count": len(snapshot.threads),
        "threads": [_thread(t) for t in ordered],
        "unloaded_modules": [],
    }
    if crashing is not None:
        doc["crashing_thread"] = crashing
    return doc


def rust_minidump_json(snapshot: Snapshot, stacks: list[ThreadStack], options) -> str:
    return json.dumps(rust_minidump_document(snapshot, stacks, options), indent=2, sort_keys=True)
