"""The minidump format: layouts, CPU contexts, CodeView records, a writer and a reader."""

from .reader import Minidump, MinidumpFormatError, parse, read_minidump
from .writer import MinidumpWriteError, WriteOptions, minidump_bytes, write_minidump

__all__ = [
    "Minidump", "MinidumpFormatError", "MinidumpWriteError", "WriteOptions",
    "minidump_bytes", "parse", "read_minidump", "write_minidump",
]
