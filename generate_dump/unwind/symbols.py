"""Address -> function name tables, with the names Breakpad's tools would print.

Lookup follows Breakpad's PUBLIC-record rule: the nearest symbol at or below the address
names it (``function+offset``), as ``minidump_stackwalk`` and rust-minidump print for
symbols without DWARF ranges. When several symbols share an address (glibc has many
aliases: ``read``/``__read``/``__libc_read``), the name is chosen as ``dump_syms`` does on
the file the module was loaded from:

1. the first function symbol of the loaded file's ``.dynsym``, in table order (what
   ``dump_syms`` writes as PUBLIC for a stripped library: ``pthread_cond_wait``, not
   ``___pthread_cond_wait``);
2. else the first global, then the first local function symbol of ``.symtab`` (of the
   debug file or the unstripped binary), in table order.

Version suffixes (``@GLIBC_2.3.2``) are dropped; C++ names are demangled when the C++
runtime's ``__cxa_demangle`` can be loaded.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
from typing import Iterable, Optional

from .elf_debug import ElfSymbol


class SymbolTable:
    def __init__(self, entries: Iterable[tuple[int, int, str]]):
        """``entries``: (address, size, name), first entry per address wins."""
        seen: dict[int, tuple[int, str]] = {}
        for addr, size, name in entries:
            if addr not in seen:
                seen[addr] = (size, name)
            elif size > seen[addr][0]:
                seen[addr] = (size, seen[addr][1])
        self.addrs = sorted(seen)
        self.names = [seen[a][1] for a in self.addrs]
        self.sizes = [seen[a][0] for a in self.addrs]

    def __len__(self) -> int:
        return len(self.addrs)

    def lookup(self, addr: int) -> Optional[tuple[str, int]]:
        """(name, start) of the nearest symbol at or below ``addr``."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        return self.names[i], self.addrs[i]


def elf_symbol_table(symtab: list[ElfSymbol], dynsym: list[ElfSymbol]) -> SymbolTable:
    """Merge .dynsym (preferred names) and .symtab (everything else); see the module doc."""
    ordered: list[tuple[int, int, str]] = []
    ordered += [(s.value, s.size, demangle(s.name)) for s in dynsym if s.name]
    ordered += [(s.value, s.size, demangle(s.name)) for s in symtab if s.name and s.is_global]
    ordered += [(s.value, s.size, demangle(s.name)) for s in symtab if s.name and not s.is_global]
    return SymbolTable(ordered)


# -- demangling ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cxa_demangle():
    for name in ("libstdc++.so.6", ctypes.util.find_library("stdc++"), "libc++abi.so.1",
                 "libc++.so.1"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            fn = lib.__cxa_demangle
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_int)]
        try:
            free = ctypes.CDLL(None).free
        except Exception:  # noqa: BLE001 - no C runtime to free with: no demangling
            return None
        free.argtypes = [ctypes.c_void_p]
        free.restype = None
        return fn, free
    return None


@functools.lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """The demangled C++ name, or ``name`` itself."""
    if not name.startswith("_Z"):
        return name
    funcs = _cxa_demangle()
    if funcs is None:
        return name
    fn, free = funcs
    status = ctypes.c_int(0)
    ptr = fn(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
    if status.value != 0 or not ptr:
        return name
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        free(ptr)
