"""Stack walking for minidumps and snapshots: find each module's files by build id, read
their call frame information and symbols, and unwind every thread.

- :mod:`.locate`     which files belong to a module (dump path, /usr/lib/debug, --symbols-path,
  Breakpad symbol stores), checked by build id
- :mod:`.elf_debug`  what the walker reads from one ELF file: load segments, code bytes,
  .symtab/.dynsym, DWARF lines (module identity itself is :mod:`generate_dump.binfmt.elf`)
- :mod:`.cfi`        .eh_frame/.debug_frame parsing and CFA rule evaluation
- :mod:`.breakpad`   Breakpad .sym files: FUNC/PUBLIC/line and STACK CFI records
- :mod:`.symbols`    address -> function name tables (Breakpad-compatible alias choice)
- :mod:`.debug_info` one module's debug information, cached per build id and files
- :mod:`.walker`     the unwinder: context, CFI, frame pointer, stack scan (x86-64, ARM64)
- :mod:`.view`       a Snapshot indexed by address (module, region, memory) for the walker
"""

from .locate import SymbolOptions
from .view import SnapshotIndex
from .walker import Frame, ThreadStack, walk_process

__all__ = ["Frame", "SnapshotIndex", "SymbolOptions", "ThreadStack", "walk_process"]
