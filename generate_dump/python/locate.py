"""Find CPython in a process: the module holding ``_PyRuntime`` and the version.

The module is ``libpython3.X`` when loaded, else the executable (static builds such as
Debian's ``/usr/bin/python3.11``). ``_PyRuntime`` and ``Py_Version`` (3.11+) come from the
module file's .dynsym/.symtab; 3.13+ also say their version in ``_PyRuntime`` itself, and
for 3.9/3.10 the file name (``python3.9``, ``libpython3.10.so.1.0``) tells the version.
A module whose file cannot be read, or has no such symbol (stripped), is no Python.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Callable, Iterable, Optional

from ..memsource import MemorySource
from ..binfmt import elf
from ..snapshot import Module
from .decode import Runtime

_NAME = re.compile(r"^(?:lib)?python3\.(\d+)[a-z]*(?:\.so.*|$)")
_PAGE = 4096


def _minor_from_name(path: str) -> int:
    m = _NAME.match(os.path.basename(path))
    return int(m.group(1)) if m else 0


def candidates(modules: Iterable[Module]) -> list[Module]:
    """Modules that may hold the interpreter, most likely first: libpython, then an
    executable named python3.X, then the main executable (an embedding program)."""
    mods = list(modules)
    lib = [m for m in mods if os.path.basename(m.path).startswith("libpython3.")]
    exe = [m for m in mods if m.is_main]
    named = [m for m in mods if _minor_from_name(m.path) and m not in lib and m not in exe]
    return lib + [m for m in exe if m not in lib] + named


def _min_vaddr(path: str) -> Optional[int]:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            h = elf.parse_header(head)
            f.seek(h.phoff)
            phdrs = elf.parse_program_headers(h, f.read(h.phentsize * h.phnum))
    except (OSError, elf.ElfError, struct.error):
        return None
    loads = [p.vaddr for p in phdrs if p.type == elf.PT_LOAD]
    return (min(loads) & ~(_PAGE - 1)) if loads else None


def runtime_in(module: Module, path: str, mem: MemorySource) -> Optional[Runtime]:
    """The runtime in ``module`` (loaded at module.base) whose file is ``path``, or None."""
    syms = elf.find_symbols(path, ("_PyRuntime", "Py_Version"))
    if "_PyRuntime" not in syms:
        return None
    low = _min_vaddr(path)
    if low is None:
        return None
    bias = module.base - low
    hexversion = 0
    if "Py_Version" in syms:
        raw = mem.read(bias + syms["Py_Version"][0], 4)
        if len(raw) == 4:
            hexversion = struct.unpack("<I", raw)[0]
            if (hexversion >> 24) != 3:
                hexversion = 0
    minor = (hexversion >> 16) & 0xFF if hexversion else _minor_from_name(module.path)
    return Runtime(address=bias + syms["_PyRuntime"][0], hexversion=hexversion, minor=minor,
                   module=module.path)


def find_runtime(modules: Iterable[Module], mem: MemorySource,
                 file_for: Callable[[Module], Optional[str]] = lambda m: m.path
                 ) -> Optional[Runtime]:
    """The first candidate module with a ``_PyRuntime`` symbol. ``file_for`` maps a module
    to a readable file of the same build (live: its own path; offline: the file found by
    build id), or None."""
    for m in candidates(modules):
        path = file_for(m)
        if not path or not os.path.isfile(path):
            continue
        rt = runtime_in(m, path, mem)
        if rt is not None:
            return rt
    return None
