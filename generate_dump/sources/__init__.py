"""Snapshot sources that read files: ELF core files (core.py, corefile.py) and minidumps
(minidump_file.py). Live processes are the other sources: the backends (backends/linux,
backends/lldb, backends/windows), reached through session.py. Every source produces the
same :class:`generate_dump.snapshot.Snapshot`, its memory read on demand where it lives
in a file."""
