"""One module's debug information: files found by build id, CFI, names, lines, code bytes.

:func:`module_debug` caches a :class:`ModuleDebug` per (path, build id, symbol options),
and the ELF and .sym parsers cache per file, so the 1000 threads of a dump (or the many
dumps of one run) parse libc's CFI and symbols once.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Iterable, Optional

from ..snapshot import Module
from .breakpad import BreakpadSymbols
from .cfi import Row
from .elf_debug import ElfImage
from .locate import ModuleFiles, SymbolOptions, locate, module_name
from .symbols import SymbolTable, elf_symbol_table


@dataclass(frozen=True)
class Symbol:
    name: str
    start: int  # absolute address


class ModuleDebug:
    def __init__(self, module: Module, files: ModuleFiles):
        self.module = module
        self.name = module_name(module.path)
        self.files = files
        ref = files.binary or files.debug
        # The dump's base is the load bias plus the first PT_LOAD page.
        self.bias = module.base - ref.min_vaddr if ref is not None else module.base
        self._symtab: Optional[SymbolTable] = None
        self._lock = threading.Lock()
        self._exec: Optional[list[tuple[int, int]]] = None
        self._elf_has_symtab: Optional[bool] = None

    # -- status -------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """ok, missing (no file), mismatch (only files with another build id), no-id."""
        if self.files.found:
            return "ok"
        if self.files.identity is None:
            return "no-id"
        return "mismatch" if self.files.mismatched else "missing"

    @property
    def has_symbols(self) -> bool:
        return self.files.found

    # -- CFI ----------------------------------------------------------------------------------

    def cfi_row(self, addr: int) -> Optional[tuple[str, Row]]:
        """('dwarf', row) for a DWARF CFI row covering ``addr`` (absolute)."""
        vaddr = addr - self.bias
        for img in (self.files.binary, self.files.debug):
            if img is None:
                continue
            for sec in img.cfi():
                hit = sec.row(vaddr)
                if hit is not None:
                    return "dwarf", hit[0]
        return None

    def breakpad_rules(self, addr: int) -> Optional[dict[str, str]]:
        bp = self.files.breakpad
        if bp is None or not bp.has_cfi():
            return None
        return bp.cfi_rules(addr - self.module.base)

    # -- names and lines ----------------------------------------------------------------------

    def _elf_symbols(self) -> SymbolTable:
        with self._lock:
            if self._symtab is None:
                symtab: list = []
                dynsym: list = []
                if self.files.binary is not None:
                    s, d = self.files.binary.symbols()
                    symtab, dynsym = list(s), list(d)
                if self.files.debug is not None and self.files.debug is not self.files.binary:
                    s, d = self.files.debug.symbols()
                    if s:
                        symtab = list(s)
                    if not dynsym:
                        dynsym = list(d)
                self._symtab = elf_symbol_table(symtab, dynsym)
            return self._symtab

    def symbol(self, addr: int) -> Optional[Symbol]:
        """The function at ``addr`` (absolute), named as Breakpad would name it."""
        if not self.files.found:
            return None
        bp: Optional[BreakpadSymbols] = self.files.breakpad
        if self._elf_has_symtab is None:
            self._elf_has_symtab = any(img is not None and bool(img.symbols()[0])
                                       for img in (self.files.binary, self.files.debug))
        elf_has_symtab = self._elf_has_symtab
        # A .sym with FUNC records beats a stripped ELF's .dynsym; a full .symtab beats both.
        if bp is not None and bp.has_names() and not elf_has_symtab:
            hit = bp.function(addr - self.module.base)
            if hit is not None:
                return Symbol(hit[0], hit[1] + self.module.base)
        table = self._elf_symbols()
        if len(table):
            hit = table.lookup(addr - self.bias)
            if hit is not None:
                return Symbol(hit[0], hit[1] + self.bias)
        if bp is not None and bp.has_names():
            hit = bp.function(addr - self.module.base)
            if hit is not None:
                return Symbol(hit[0], hit[1] + self.module.base)
        return None

    def line(self, addr: int) -> Optional[tuple[str, int]]:
        for img in (self.files.debug, self.files.binary):
            if img is None:
                continue
            lines = img.lines()
            if lines is not None:
                hit = lines.lookup(addr - self.bias)
                if hit is not None:
                    return hit
                break
        bp = self.files.breakpad
        if bp is not None:
            return bp.line(addr - self.module.base)
        return None

    # -- code ---------------------------------------------------------------------------------

    def exec_ranges(self) -> Optional[list[tuple[int, int]]]:
        """Absolute executable ranges from the file's program headers, None if unknown."""
        if self._exec is None:
            img = self.files.binary or self.files.debug
            if img is None:
                return None
            self._exec = [(lo + self.bias, hi + self.bias) for lo, hi in img.exec_ranges()]
        return self._exec

    def read_code(self, addr: int, size: int) -> Optional[bytes]:
        img: Optional[ElfImage] = self.files.binary
        if img is None:
            return None
        return img.read(addr - self.bias, size)


_cache: dict[tuple, ModuleDebug] = {}
_cache_lock = threading.Lock()


def module_debug(module: Module, options: SymbolOptions) -> ModuleDebug:
    ident = getattr(module.identity, "build_id", None)
    key = (module.path, ident, module.base, options.key())
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    md = ModuleDebug(module, locate(module, options))
    with _cache_lock:
        if len(_cache) > 4096:
            _cache.clear()
        _cache[key] = md
    return md


def prepare(modules: Iterable[Module], options: SymbolOptions,
            wait: Optional[float] = None) -> None:
    """Find the files of ``modules`` in parallel when that may need the network (debuginfod,
    symbol stores), with a progress line at a terminal; later :func:`module_debug` calls
    are then cache hits. ``wait``: return after that many seconds at most."""
    if not options.remote:
        return
    from ..symbols import session

    jobs = [functools.partial(module_debug, m, options) for m in modules
            if m.identity is not None]
    session.run_parallel(jobs, "fetching symbols", wait=wait)


def clear_caches() -> None:
    """Forget every parsed module and file, servers found down and warnings given (tests;
    long-running processes)."""
    from ..symbols import http_store, session
    from . import breakpad, elf_debug

    session.reset()
    http_store.reset()
    with _cache_lock:
        _cache.clear()
    with elf_debug._images_lock:
        for img in elf_debug._images.values():
            if img is not None:
                img.close()
        elf_debug._images.clear()
    with breakpad._cache_lock:
        breakpad._cache.clear()
