"""Snapshot sources that read files rather than live processes (ELF core files)."""
