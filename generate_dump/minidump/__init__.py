"""The minidump format: layouts, CPU contexts, CodeView records, a writer and a reader.

Names are imported lazily: writing a dump should not pay for importing the reader.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Minidump": "reader", "MinidumpFormatError": "reader", "parse": "reader",
    "read_minidump": "reader",
    "MinidumpWriteError": "writer", "WriteOptions": "writer", "minidump_bytes": "writer",
    "write_minidump": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
