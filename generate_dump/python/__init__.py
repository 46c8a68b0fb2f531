"""CPython stacks from another process's memory (live or in a minidump).

:mod:`.locate` finds ``_PyRuntime`` and the version, :mod:`.offsets` knows each version's
structure layout, :mod:`.decode` walks interpreters, thread states and frames through a
:class:`~generate_dump.memsource.MemorySource`, :mod:`.linetable` turns instruction offsets
into line numbers, :mod:`.stream` is the GD_PYTHON stream's JSON form and :mod:`.merge`
puts Python frames in place of the interpreter's native frames.
"""
