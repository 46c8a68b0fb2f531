"""Snapshot sinks besides the minidump writer (ELF core files)."""
