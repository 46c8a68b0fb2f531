"""Snapshot sinks besides the minidump writer (minidump/writer.py): ELF core files
(core_writer.py), and the streaming of bulk memory both writers share (placed.py). The
other consumers of a Snapshot are `inspect` and the stack summaries (inspect_dump.py)."""
