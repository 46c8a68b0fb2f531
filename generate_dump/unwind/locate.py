"""Which files hold a module's code, CFI and symbols: every candidate is checked by build id.

For a module with GNU build id ``B`` (hex ``xx`` + ``rest``), Breakpad debug id ``D`` and
file name ``N`` (basename of the path in the dump), candidates are, in order:

1. the path recorded in the dump;
2. ``/usr/lib/debug/.build-id/xx/rest.debug`` and ``/usr/lib/debug/.build-id/xx/rest``, and
   the ``.gnu_debuglink`` name next to the binary, in its ``.debug/`` folder and under
   ``/usr/lib/debug/<binary's folder>`` (unless system debug directories are turned off);
3. each ``--symbols-path`` DIR: ``DIR/N``, ``DIR/N.debug``, ``DIR/.build-id/xx/rest(.debug)``,
   ``DIR/xx/rest(.debug)``, a debuginfod cache ``DIR/B/executable`` and ``DIR/B/debuginfo``;
4. Breakpad symbol stores: ``DIR/N/D/N.sym`` in each ``--symbols-path`` DIR;
5. debuginfod (``DEBUGINFOD_URLS``, see :mod:`generate_dump.symbols.debuginfod`): the
   ``executable`` when no local file has the code, the ``debuginfo`` when none has
   symbols (its cache first, servers after);
6. Breakpad HTTP stores (``--symbols-url``): ``URL/N/D/N.sym`` when no file with
   symbols was found, cached on disk (:mod:`generate_dump.symbols.http_store`).

Steps 5 and 6 download debug files and ``.sym`` files only for the modules in
``SymbolOptions.names_for`` (the callers pass those seen in a first walk of the stacks),
so a dump of a process with hundreds of libraries does not fetch all their debug files.

An ELF candidate is used only when its build id (or, for files without one, Breakpad's
``.text`` hash) equals the dump's; a ``.sym`` only when its MODULE line's debug id does.
Files that do not match are remembered so the output can say why a module has no names;
a downloaded file that does not match is also reported on stderr and never cached.
The vDSO, which has no file, is matched against this process's own vDSO.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..minidump.codeview import debug_id
from ..snapshot import ElfBuildId, Module, PdbIdentity
from .breakpad import BreakpadSymbols, open_symbols, read_header
from .elf_debug import ElfImage, open_image, own_vdso

SYSTEM_DEBUG_DIRS = ("/usr/lib/debug",)


@dataclass(frozen=True)
class SymbolOptions:
    symbols_paths: tuple[str, ...] = ()
    system_debug: bool = True  # look under /usr/lib/debug
    use_dump_paths: bool = True  # open the module paths recorded in the dump
    symbols_urls: tuple[str, ...] = ()  # Breakpad HTTP symbol stores (--symbols-url)
    debuginfod: bool = True  # ask the servers of DEBUGINFOD_URLS
    # Debug ids of the modules whose debug files / .sym may be downloaded (those seen in
    # stacks); None: any module. Executables are fetched for every module without a file.
    names_for: Optional[frozenset[str]] = None

    @property
    def remote(self) -> bool:
        """Might a lookup go to the network (or a debuginfod cache)?"""
        if self.symbols_urls:
            return True
        if self.debuginfod:
            from ..symbols import debuginfod

            return debuginfod.client() is not None
        return False

    def key(self) -> tuple:
        dkey = None
        if self.debuginfod:
            from ..symbols import debuginfod

            c = debuginfod.client()
            dkey = c.key() if c is not None else None
        return (tuple(os.path.abspath(p) for p in self.symbols_paths), self.system_debug,
                self.use_dump_paths, self.symbols_urls, dkey, self.names_for)


@dataclass
class ModuleFiles:
    binary: Optional[ElfImage] = None  # code bytes and .eh_frame (the loaded file)
    debug: Optional[ElfImage] = None  # .symtab, DWARF, .debug_frame
    breakpad: Optional[BreakpadSymbols] = None
    mismatched: list[str] = field(default_factory=list)  # files with another build id
    identity: Optional[bytes] = None
    symbol_url: Optional[str] = None  # the --symbols-url the .sym was downloaded from

    @property
    def found(self) -> bool:
        return self.binary is not None or self.debug is not None or self.breakpad is not None

    def sources(self) -> list[str]:
        out = []
        for img in (self.binary, self.debug):
            if img is not None and img.path not in out:
                out.append(img.path)
        if self.breakpad is not None:
            out.append(self.breakpad.path)
        return out


def module_name(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path


def _is_debug_file(img: ElfImage) -> bool:
    """Has symbols or DWARF worth reading beyond what a loaded binary has."""
    s = img.sections
    return (".symtab" in s and s[".symtab"]["sh_type"] != "SHT_NOBITS") or ".debug_info" in s \
        or ".debug_frame" in s or ".gnu_debugdata" in s


def locate(module: Module, options: SymbolOptions) -> ModuleFiles:
    out = ModuleFiles()
    ident = module.identity
    if ident is None:
        return out
    did = debug_id(ident)
    out.identity = did.encode()
    names = options.names_for is None or did in options.names_for
    if isinstance(ident, ElfBuildId) and ident.build_id:
        out.identity = ident.build_id
        _locate_elf(module, ident.build_id, options, out, names)
    _locate_breakpad(module, did, options, out, names)
    return out


def _locate_elf(module: Module, bid: bytes, options: SymbolOptions, out: ModuleFiles,
                names: bool = True) -> None:
    hexid = bid.hex()
    name = module_name(module.path)
    seen: set[str] = set()

    def consider(path: str) -> None:
        if out.binary is not None and out.debug is not None:
            return
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            return
        if real in seen or not os.path.isfile(real):
            return
        seen.add(real)
        img = open_image(path)
        if img is None:
            return
        if not img.matches(bid):
            have = img.build_id.hex() if img.build_id else "none"
            out.mismatched.append(f"{path} (build id {have})")
            return
        if out.binary is None and img.has_code:
            out.binary = img
        if out.debug is None and _is_debug_file(img):
            out.debug = img

    if name == "linux-vdso.so.1" or module.path in ("[vdso]", "linux-gate.so.1"):
        v = own_vdso()
        if v is not None and v.matches(bid):
            out.binary = out.debug = v

    if options.use_dump_paths and module.path.startswith("/"):
        consider(module.path)
    if len(hexid) > 2:
        if options.system_debug:
            for d in SYSTEM_DEBUG_DIRS:
                consider(os.path.join(d, ".build-id", hexid[:2], hexid[2:] + ".debug"))
                consider(os.path.join(d, ".build-id", hexid[:2], hexid[2:]))
        if out.binary is not None and out.debug is None:
            link = out.binary.debuglink
            if link:
                folder = os.path.dirname(out.binary.path)
                consider(os.path.join(folder, link))
                consider(os.path.join(folder, ".debug", link))
                if options.system_debug:
                    for d in SYSTEM_DEBUG_DIRS:
                        consider(os.path.join(d, folder.lstrip("/"), link))
        for d in options.symbols_paths:
            consider(os.path.join(d, name))
            consider(os.path.join(d, name + ".debug"))
            for sub in (".build-id", ""):
                consider(os.path.join(d, sub, hexid[:2], hexid[2:] + ".debug"))
                consider(os.path.join(d, sub, hexid[:2], hexid[2:]))
            consider(os.path.join(d, hexid, "executable"))
            consider(os.path.join(d, hexid, "debuginfo"))
            if out.binary is not None and out.debug is None and out.binary.debuglink:
                consider(os.path.join(d, out.binary.debuglink))
        # A .text hash stands in for a missing build id: no server indexes by it.
        from_hash = getattr(module.identity, "from_text_hash", False)
        if options.debuginfod and not from_hash and (out.binary is None or out.debug is None):
            _ask_debuginfod(bid, consider, out, names)


def _elf_check(bid: bytes):
    """For a downloaded file: None when it is an ELF file with build id ``bid``, else why."""

    def check(path: str) -> Optional[str]:
        try:
            img = ElfImage(path)
        except Exception:  # noqa: BLE001 - truncated or not ELF
            return "not a readable ELF file"
        try:
            if img.build_id is None:
                return "the file has no build id"
            if img.build_id != bid:
                return f"the file has build id {img.build_id.hex()}"
            return None
        finally:
            img.close()

    return check


def _ask_debuginfod(bid: bytes, consider, out: ModuleFiles, names: bool) -> None:
    """The executable when no local file has the code; the debug file when none has
    symbols (downloaded only if ``names``, else only from the cache)."""
    from ..symbols import debuginfod

    client = debuginfod.client()
    if client is None:
        return
    check = _elf_check(bid)
    if out.binary is None:
        path, rejected = client.find(bid, "executable", check)
        out.mismatched.extend(rejected)
        if path is not None:
            consider(path)
    if out.debug is None:
        if names:
            path, rejected = client.find(bid, "debuginfo", check)
            out.mismatched.extend(rejected)
        else:
            path = client.cached(bid.hex(), "debuginfo")[0]
        if path is not None:
            consider(path)



def _locate_breakpad(module: Module, did: str, options: SymbolOptions, out: ModuleFiles,
                     names: bool = True) -> None:
    """``DIR/NAME/DEBUGID/NAME.sym``; for PE modules NAME is the PDB's (``x.pdb/ID/x.sym``)."""
    name = module_name(module.path)
    layouts = [(name, name + ".sym")]
    if name.endswith(".debug"):
        layouts.append((name[: -len(".debug")], name[: -len(".debug")] + ".sym"))
    if isinstance(module.identity, PdbIdentity) and module.identity.pdb_path:
        pdb = module_name(module.identity.pdb_path)
        stem = pdb[:-4] if pdb.lower().endswith(".pdb") else pdb
        layouts.insert(0, (pdb, stem + ".sym"))
    elif name.lower().endswith((".exe", ".dll")):
        layouts.append((name[:-4] + ".pdb", name[:-4] + ".sym"))
    for d in options.symbols_paths:
        for folder, filename in layouts:
            p = os.path.join(d, folder, did, filename)
            if not os.path.isfile(p):
                continue
            h = read_header(p)
            if h is None or h.debug_id != did:
                out.mismatched.append(f"{p} (debug id {h.debug_id if h else 'unreadable'})")
                continue
            out.breakpad = open_symbols(p)
            if out.breakpad is not None:
                return
    if options.symbols_urls and out.debug is None:
        _ask_symbol_stores(layouts, did, options, out, names)


def _ask_symbol_stores(layouts, did: str, options: SymbolOptions, out: ModuleFiles,
                       names: bool) -> None:
    from ..symbols import http_store

    store = http_store.store(options.symbols_urls)
    if store is None:
        return

    def check(path: str) -> Optional[str]:
        h = read_header(path)
        if h is None:
            return "not a Breakpad symbol file"
        if h.debug_id != did:
            return f"its MODULE line has debug id {h.debug_id}"
        return None

    for folder, filename in layouts:
        if names:
            path, url, rejected = store.find(folder, did, filename, check)
            out.mismatched.extend(rejected)
        else:
            path, url = store.cached(folder, did, filename), None
        if path is None:
            continue
        h = read_header(path)
        if h is None or h.debug_id != did:  # a cached file changed under us
            out.mismatched.append(f"{path} (debug id {h.debug_id if h else 'unreadable'})")
            continue
        out.breakpad = open_symbols(path)
        if out.breakpad is not None:
            out.symbol_url = url
            return
