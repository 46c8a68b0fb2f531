"""Where CPython keeps what a stack reader needs, per version (x86-64 and AArch64, LP64).

3.9 to 3.12 publish nothing for out-of-process readers, so their tables below are facts
measured from CPython's own headers: ``offsetof`` over the installed ``Include/internal``
structures of each release (``_PyRuntimeState``, ``PyInterpreterState``, ``PyThreadState``,
``_PyCFrame``, ``_PyInterpreterFrame``/``PyFrameObject``, ``PyCodeObject``, ``PyASCIIObject``,
``PyBytesObject``); ``tools/python_offsets.c`` prints them for a given installation.

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

TABLES: dict[tuple[int, int], dict[str, int]] = {
    (3, 9): {
        "runtime.interpreters_head": 32, "runtime.gil_locked": 368,
        "runtime.gil_last_holder": 360,
        "interp.next": 0, "interp.threads_head": 8,
        "tstate.next": 8, "tstate.interp": 16, "tstate.thread_id": 176, "tstate.frame": 24,
        "frame.f_back": 24, "frame.f_code": 32, "frame.f_lasti": 104,
        "code.co_lnotab": 120, "code.co_filename": 104, "code.co_name": 112,
        "code.co_firstlineno": 40,
        "unicode.ascii_size": 48, "unicode.compact_size": 72,
    },
    (3, 10): {
        "runtime.interpreters_head": 32, "runtime.gil_locked": 368,
        "runtime.gil_last_holder": 360,
        "interp.next": 0, "interp.threads_head": 8,
        "tstate.next": 8, "tstate.interp": 16, "tstate.thread_id": 176, "tstate.frame": 24,
        "frame.f_back": 24, "frame.f_code": 32, "frame.f_lasti": 96,
        "code.co_linetable": 120, "code.co_filename": 104, "code.co_name": 112,
        "code.co_firstlineno": 40,
        "unicode.ascii_size": 48, "unicode.compact_size": 72,
    },
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
        "unicode.ascii_size": 40, "unicode.compact_size": 56,
    },
}
for _t in TABLES.values():
    _t.update(_OBJECTS)

# _Py_DebugOffsets: word index of each field we use (3 header words: cookie, version,
# free_threaded; then the groups in declaration order).
_DEBUG_LAYOUTS = {
    (3, 13): {
        "runtime.interpreters_head": 5,
        # interpreter_state: size id next threads_head gc imports_modules sysdict builtins
        # ceval_gil gil_runtime_state gil_enabled gil_locked gil_holder  (words 6..18)
        "interp.next": 8, "interp.threads_head": 9, "interp.ceval_gil": 14,
        "interp.gil_runtime_state": 15, "interp.gil_locked": 17, "interp.gil_holder": 18,
        # thread_state: size prev next interp current_frame thread_id native_thread_id
        # datastack_chunk status  (19..27)
        "tstate.next": 21, "tstate.interp": 22, "tstate.current_frame": 23,
        "tstate.thread_id": 24, "tstate.native_thread_id": 25,
        # interpreter_frame: size previous executable instr_ptr localsplus owner  (28..33)
        "iframe.previous": 29, "iframe.code": 30, "iframe.instr": 31, "iframe.owner": 33,
        # code_object: size filename name qualname linetable firstlineno argcount
        # localsplusnames localspluskinds co_code_adaptive  (34..43)
        "code.co_filename": 35, "code.co_name": 36, "code.co_qualname": 37,
        "code.co_linetable": 38, "code.co_firstlineno": 39, "code.co_code_adaptive": 43,
        # pyobject (44, 45), type_object (46..49)
        "object.ob_type": 45, "type.tp_name": 47,
        "_words": 44 + 2 + 4,
    },
    (3, 14): {
        "runtime.interpreters_head": 5,
        # interpreter_state gains threads_main after threads_head, and two generation
        # counters at its end  (6..21)
        "interp.next": 8, "interp.threads_head": 9, "interp.ceval_gil": 15,
        "interp.gil_runtime_state": 16, "interp.gil_locked": 18, "interp.gil_holder": 19,
        # thread_state (22..30)
        "tstate.next": 24, "tstate.interp": 25, "tstate.current_frame": 26,
        "tstate.thread_id": 27, "tstate.native_thread_id": 28,
        # interpreter_frame gains stackpointer, tlbc_index  (31..38)
        "iframe.previous": 32, "iframe.code": 33, "iframe.instr": 34, "iframe.owner": 36,
        # code_object gains co_tlbc  (39..49)
        "code.co_filename": 40, "code.co_name": 41, "code.co_qualname": 42,
        "code.co_linetable": 43, "code.co_firstlineno": 44, "code.co_code_adaptive": 48,
        # pyobject (50, 51), type_object (52..55)
        "object.ob_type": 51, "type.tp_name": 53,
        "_words": 50 + 2 + 4,
    },
}
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
    table["unicode.ascii_size"] = 40
    table["unicode.compact_size"] = 56
    # Sanity: offsets inside objects are small; garbage here means corrupted memory.
    if any(v > 1 << 20 for v in table.values()):
        return None
    return hexversion, table
