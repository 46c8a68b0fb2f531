"""Where CPython keeps what a stack reader needs, per version (x86-64 and AArch64, LP64).

3.9 to 3.12 publish nothing for out-of-process readers, so their tables below are facts
measured from CPython's own headers: ``offsetof`` over the installed ``Include/internal``
structures of each release (``_PyRuntimeState``, ``PyInterpreterState``, ``PyThreadState``,
``_PyCFrame``, ``_PyInterpreterFrame``/``PyFrameObject``, ``PyCodeObject``, ``PyASCIIObject``,
``PyBytesObject``); ``scripts/python-offsets.c`` prints them for a given installation.

3.13 and later publish ``_Py_DebugOffsets`` at the start of ``_PyRuntime`` (cookie
``xdebugpy``): the structure is a run of 64-bit words, one group per object kind, each group
starting with the object's size. :func:`from_debug_offsets` reads the words we need by their
index in the 3.13 or 3.14 layout. Fields absent in a version are left out of its table.
"""

from __future__ import annotations

import struct
from typing import Optional

DEBUG_COOKIE = b"xdebugpy"

# Common to every supported version on LP64.
_OBJECTS = {
    "object.ob_type": 8,
    "type.tp_name": 24,
    "unicode.length": 16,
    "unicode.state": 32,
    "bytes.ob_size": 16,
    "bytes.ob_sval": 32,
}

# PyASCIIObject and PyCompactUnicodeObject since 3.12 (which dropped their wstr fields).
_UNICODE_SINCE_3_12 = {"unicode.ascii_size": 40, "unicode.compact_size": 56}

_PY_3_9 = {
    "runtime.interpreters_head": 32, "runtime.gil_locked": 368,
    "runtime.gil_last_holder": 360,
    "interp.next": 0, "interp.threads_head": 8,
    "tstate.next": 8, "tstate.interp": 16, "tstate.thread_id": 176, "tstate.frame": 24,
    "frame.f_back": 24, "frame.f_code": 32, "frame.f_lasti": 104,
    "code.co_lnotab": 120, "code.co_filename": 104, "code.co_name": 112,
    "code.co_firstlineno": 40,
    "unicode.ascii_size": 48, "unicode.compact_size": 72,
}

TABLES: dict[tuple[int, int], dict[str, int]] = {
    (3, 9): _PY_3_9,
    # 3.10: 3.9 but for f_lasti and the line table (co_linetable replaced co_lnotab).
    (3, 10): {**{k: v for k, v in _PY_3_9.items() if k != "code.co_lnotab"},
              "frame.f_lasti": 96, "code.co_linetable": 120},
    (3, 11): {
        "runtime.interpreters_head": 40, "runtime.gil_locked": 376,
        "runtime.gil_last_holder": 368,
        "interp.next": 0, "interp.threads_head": 16,
        "tstate.next": 8, "tstate.interp": 16, "tstate.thread_id": 152,
        "tstate.native_thread_id": 160, "tstate.cframe": 56, "cframe.current_frame": 8,
        "iframe.code": 32, "iframe.instr": 56, "iframe.previous": 48, "iframe.owner": 69,
        "iframe.is_entry": 68,
        "code.co_code_adaptive": 184, "code.co_qualname": 128, "code.co_linetable": 136,
        "code.co_filename": 112, "code.co_name": 120, "code.co_firstlineno": 72,
        "unicode.ascii_size": 48, "unicode.compact_size": 72,
    },
    (3, 12): {
        "runtime.interpreters_head": 40,
        "interp.ceval_gil": 384, "gil.locked": 16, "gil.last_holder": 8,
        "interp.next": 0, "interp.threads_head": 72,
        "tstate.next": 8, "tstate.interp": 16, "tstate.thread_id": 136,
        "tstate.native_thread_id": 144, "tstate.cframe": 56, "cframe.current_frame": 0,
        "iframe.code": 0, "iframe.instr": 56, "iframe.previous": 8, "iframe.owner": 70,
        "code.co_code_adaptive": 192, "code.co_qualname": 128, "code.co_linetable": 136,
        "code.co_filename": 112, "code.co_name": 120, "code.co_firstlineno": 68,
        **_UNICODE_SINCE_3_12,
    },
}
for _t in TABLES.values():
    _t.update(_OBJECTS)

# _Py_DebugOffsets in declaration order: the header, then one group of 64-bit words per
# object kind, each starting with the object's size. Names are ours (as in TABLES).
_DEBUG_GROUPS_3_13: dict[str, tuple[str, ...]] = {
    "header": ("cookie", "version", "free_threaded"),
    "runtime": ("size", "finalizing", "interpreters_head"),
    "interp": ("size", "id", "next", "threads_head", "gc", "imports_modules", "sysdict",
               "builtins", "ceval_gil", "gil_runtime_state", "gil_enabled", "gil_locked",
               "gil_holder"),
    "tstate": ("size", "prev", "next", "interp", "current_frame", "thread_id",
               "native_thread_id", "datastack_chunk", "status"),
    "iframe": ("size", "previous", "code", "instr", "localsplus", "owner"),
    "code": ("size", "co_filename", "co_name", "co_qualname", "co_linetable",
             "co_firstlineno", "co_argcount", "co_localsplusnames", "co_localspluskinds",
             "co_code_adaptive"),
    "object": ("size", "ob_type"),
    "type": ("size", "tp_name", "tp_repr", "tp_flags"),
}
_interp_3_13 = _DEBUG_GROUPS_3_13["interp"]
_DEBUG_GROUPS_3_14 = {
    **_DEBUG_GROUPS_3_13,
    # interpreter_state gains threads_main after threads_head, and two generation
    # counters at its end; interpreter_frame stackpointer and tlbc_index; code co_tlbc.
    "interp": _interp_3_13[:4] + ("threads_main",) + _interp_3_13[4:]
    + ("code_object_generation", "tlbc_generation"),
    "iframe": _DEBUG_GROUPS_3_13["iframe"] + ("stackpointer", "tlbc_index"),
    "code": _DEBUG_GROUPS_3_13["code"] + ("co_tlbc",),
}
# The fields we read, by the name "group.field".
_DEBUG_USED = frozenset({
    "runtime.interpreters_head",
    "interp.next", "interp.threads_head", "interp.ceval_gil", "interp.gil_runtime_state",
    "interp.gil_locked", "interp.gil_holder",
    "tstate.next", "tstate.interp", "tstate.current_frame", "tstate.thread_id",
    "tstate.native_thread_id",
    "iframe.previous", "iframe.code", "iframe.instr", "iframe.owner",
    "code.co_filename", "code.co_name", "code.co_qualname", "code.co_linetable",
    "code.co_firstlineno", "code.co_code_adaptive",
    "object.ob_type", "type.tp_name",
})


def _word_indexes(groups: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Word index of each field we use, and the layout's length in words as ``_words``."""
    names = [f"{group}.{name}" for group, fields in groups.items() for name in fields]
    layout = {name: i for i, name in enumerate(names) if name in _DEBUG_USED}
    layout["_words"] = len(names)
    return layout


_DEBUG_LAYOUTS = {(3, 13): _word_indexes(_DEBUG_GROUPS_3_13),
                  (3, 14): _word_indexes(_DEBUG_GROUPS_3_14)}
DEBUG_OFFSETS_READ = 8 * max(l["_words"] for l in _DEBUG_LAYOUTS.values())


def version_tuple(hexversion: int) -> tuple[int, int, int]:
    return (hexversion >> 24) & 0xFF, (hexversion >> 16) & 0xFF, (hexversion >> 8) & 0xFF


def from_debug_offsets(blob: bytes) -> Optional[tuple[int, dict[str, int]]]:
    """(PY_VERSION_HEX, table) from the bytes at the start of ``_PyRuntime``, or None when
    they do not hold a _Py_DebugOffsets we know (no cookie, an unknown layout)."""
    if len(blob) < 24 or blob[:8] != DEBUG_COOKIE:
        return None
    hexversion, free_threaded = struct.unpack_from("<QQ", blob, 8)
    major, minor, _ = version_tuple(hexversion)
    if major != 3 or minor < 13 or free_threaded:
        return None
    layout = _DEBUG_LAYOUTS.get((3, min(minor, 14)))
    if layout is None or len(blob) < 8 * layout["_words"]:
        return None
    words = struct.unpack_from(f"<{layout['_words']}Q", blob, 0)
    table = {k: words[i] for k, i in layout.items() if not k.startswith("_")}
    # The interpreter's own GIL: locked/holder as offsets inside the _gil_runtime_state.
    table["gil.locked"] = table.pop("interp.gil_locked") - table["interp.gil_runtime_state"]
    table["gil.last_holder"] = table.pop("interp.gil_holder") - table["interp.gil_runtime_state"]
    table.pop("interp.gil_runtime_state")
    for k, v in _OBJECTS.items():
        table.setdefault(k, v)
    table.update(_UNICODE_SINCE_3_12)
    # Sanity: offsets inside objects are small; garbage here means corrupted memory.
    if any(v > 1 << 20 for v in table.values()):
        return None
    return hexversion, table
