"""Merged stacks: native frames with each interpreter-loop frame replaced by the Python
frames it was running.

Python frames come in runs, innermost first: a run is what one C-level call of the eval
loop (``_PyEval_EvalFrameDefault``) executes; it ends at a frame marked ``entry``. The
n-th eval-loop frame of the native walk (innermost first) gets the n-th run. Runs left
over (the native walk ended early, or the module has no symbols) follow the native
frames. Modes:

* ``merged`` (default): eval-loop frames replaced, the interpreter's call plumbing around
  them (``_PyFunction_Vectorcall``, ``_PyObject_Call``, ...) hidden;
* ``native``: every native frame kept, the Python run shown just above its eval frame;
* ``python``: Python frames only.

:func:`state_for_snapshot` gives the Python state of a snapshot: its own (a dump's GD_PYTHON
stream), or, when it has none, a decode of its memory (found through the module files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

from ..snapshot import PythonFrame, PythonState, PythonThread

MODES = ("merged", "native", "python")

EVAL_FUNCTIONS = {"_PyEval_EvalFrameDefault", "PyEval_EvalFrameEx"}
_PLUMBING = re.compile(
    r"^(_PyEval_\w+|PyEval_\w+|_PyFunction_\w+|function_code_fastcall|_PyObject_\w*Call\w*"
    r"|PyObject_\w*Call\w*|_PyVectorcall_\w+|PyVectorcall_\w+|method_vectorcall\w*"
    r"|slot_tp_call|call_function|cfunction_vectorcall\w*|cfunction_call"
    r"|_PyCFunction\w*|vectorcall_\w+|_PyObject_VectorcallTstate|object_vacall"
    r"|_Py_VectorCall\w*|do_call_core)$", re.IGNORECASE)


@dataclass(frozen=True)
class PyFrame:
    """A Python frame in a merged stack (``trust`` "python")."""

    function: str
    qualname: Optional[str]
    file: str
    line: Optional[int]
    trust: str = "python"

    @property
    def display_name(self) -> str:
        return self.qualname or self.function


Item = Union[PyFrame, object]  # object: the walker's native Frame


def _py(f: PythonFrame) -> PyFrame:
    return PyFrame(f.function, f.qualname, f.file, f.line)


def runs(thread: PythonThread) -> list[list[PyFrame]]:
    out: list[list[PyFrame]] = []
    cur: list[PyFrame] = []
    for f in thread.frames:
        cur.append(_py(f))
        if f.entry:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _name(frame) -> Optional[str]:
    return getattr(frame, "function", None)


def merge(native: list, thread: Optional[PythonThread], mode: str = "merged") -> list:
    """The frames to show, innermost first: the walker's frames and PyFrames."""
    if thread is None or not thread.frames:
        return [] if mode == "python" else list(native)
    py_runs = runs(thread)
    if mode == "python":
        return [f for run in py_runs for f in run]
    out: list = []
    pending = list(py_runs)
    for f in native:
        name = _name(f)
        if name in EVAL_FUNCTIONS and pending:
            out.extend(pending.pop(0))
            if mode == "native":
                out.append(f)
            continue
        if mode == "merged" and name and _PLUMBING.match(name):
            # Just outside an eval frame (its Python frames shown last), or just inside one.
            if (out and isinstance(out[-1], PyFrame)) or _eval_ahead(native, f, pending):
                continue
        out.append(f)
    for run in pending:
        out.extend(run)
    return out


def _eval_ahead(native: list, frame, pending: list) -> bool:
    """Plumbing just inside an eval frame (between a C function and the loop) is hidden
    too, when an eval frame follows before any other named frame."""
    if not pending:
        return False
    i = native.index(frame)
    for g in native[i + 1:]:
        name = _name(g)
        if name in EVAL_FUNCTIONS:
            return True
        if not name or not _PLUMBING.match(name):
            return False
    return False


def thread_for(state: Optional[PythonState], tid: int) -> Optional[PythonThread]:
    if state is None:
        return None
    for t in state.threads:
        if t.tid == tid:
            return t
    return None


# -- offline ----------------------------------------------------------------------------------


def state_for_snapshot(snapshot, memory, options=None) -> Optional[PythonState]:
    """The snapshot's Python state: its own (a capture's, a dump's GD_PYTHON stream), or
    decoded from ``memory`` (a MemorySource over it) when it has none and a module file
    with ``_PyRuntime`` is found (None otherwise). Never raises for bad memory."""
    if snapshot.python is not None:
        return snapshot.python
    from ..unwind.debug_info import module_debug
    from ..unwind.locate import SymbolOptions
    from .decode import decode
    from .locate import find_runtime

    options = options or SymbolOptions()

    def file_for(m) -> Optional[str]:
        try:
            md = module_debug(m, options)
        except Exception:  # noqa: BLE001 - an unreadable file is no file
            return None
        img = md.files.binary
        return img.path if img is not None else None

    try:
        rt = find_runtime(snapshot.modules, memory, file_for)
    except Exception:  # noqa: BLE001 - unreadable module files: no Python stacks
        return None
    if rt is None:
        return None
    by_tp = {t.thread_pointer: t.tid for t in snapshot.threads if t.thread_pointer}
    state = decode(memory, rt, lambda thread_id: by_tp.get(thread_id, 0))
    if not state.threads and not state.errors:
        return None
    return state
