"""Python state for a snapshot: decode it from a live process's memory and keep the bytes.

Backends call :func:`runtime_before_freeze` (file reads only, nothing stopped yet),
:func:`frozen_marks` while the threads are stopped (a few reads per thread), and
:func:`capture_python` after they run again: the full decode, through a recorder so that
every byte it used goes into the dump and the stacks can be rebuilt offline.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional

from ..memsource import MemorySource
from ..snapshot import MemoryRange, Module, PythonState, Snapshot, SoftError
from .decode import Recorder, Runtime, ThreadStates, decode, sequential, thread_states
from .locate import find_runtime


def runtime_before_freeze(modules: Iterable[Module], mem: MemorySource) -> Optional[Runtime]:
    try:
        return find_runtime(modules, mem)
    except Exception:  # noqa: BLE001 - an unreadable module file means no Python stacks
        return None


def missing_reason(modules: Iterable[Module]) -> Optional[str]:
    """Why a process that looks like CPython (a python3.X or libpython3.X module) gives no
    Python stacks, or None when nothing looks like CPython."""
    from .locate import _minor_from_name

    for m in modules:
        if _minor_from_name(m.path) or os.path.basename(m.path).startswith("libpython3."):
            return (f"{m.path} looks like CPython but has no readable _PyRuntime symbol "
                    "(a stripped or static build, or the file changed): no Python stacks")
    return None


def states_before_freeze(mem: MemorySource, rt: Optional[Runtime]) -> Optional[ThreadStates]:
    """The thread states to mark while frozen (read before the freeze)."""
    return thread_states(mem, rt) if rt is not None else None


def frozen_marks(states: Optional[ThreadStates], read_many) -> dict[int, tuple[int, int]]:
    """While frozen: each thread's innermost frame and instruction, in 2-3 batched reads."""
    if states is None:
        return {}
    try:
        return states.marks(read_many)
    except Exception:  # noqa: BLE001 - a hint only; never fail the freeze over it
        return {}


def tid_mapper(snapshot: Snapshot):
    """thread_id (pthread_t) -> TID for versions without native_thread_id: on x86-64 glibc
    pthread_self() is the thread pointer (fs base)."""
    by_tp = {t.thread_pointer: t.tid for t in snapshot.threads if t.thread_pointer}
    return lambda thread_id: by_tp.get(thread_id, 0)


def capture_python(snapshot: Snapshot, mem: MemorySource, rt: Optional[Runtime] = None,
                   marks: Optional[dict[int, tuple[int, int]]] = None,
                   ran: bool = True, states: Optional[ThreadStates] = None
                   ) -> tuple[Optional[PythonState], list[MemoryRange]]:
    """(state, memory ranges it was decoded from); (None, []) when no CPython is found.

    ``ran``: the threads ran between the freeze and now. With ``marks`` (from
    :func:`frozen_marks`) the threads whose innermost frame or instruction differs now
    are listed in ``changed_tids``."""
    if rt is None:
        rt = runtime_before_freeze(snapshot.modules, mem)
        if rt is None:
            return None, []
    rec = Recorder(mem)
    state = decode(rec, rt, tid_mapper(snapshot))
    changed: list[int] = []
    if ran and marks and states is not None:
        after = frozen_marks(states, sequential(mem))
        for t in state.threads:
            if marks.get(t.thread_id) != after.get(t.thread_id):
                changed.append(t.tid)
    from dataclasses import replace

    state = replace(state, read_while_running=ran, changed_tids=tuple(changed))
    return state, [MemoryRange(a, d) for a, d in rec.ranges()]


def with_python(snapshot: Snapshot, read_stacks, *, keep_memory: bool,
                say_missing: bool = True) -> Snapshot:
    """``snapshot`` with its CPython stacks: ``read_stacks()`` returns (state, ranges) as
    capture_python does. The memory they came from goes first (so that it wins over
    overlapping windows and the dump decodes to the same stacks); a full dump
    (``keep_memory`` false) holds it already. Never loses the dump over the Python part:
    failures become soft errors (and, with ``say_missing``, why no interpreter was
    found)."""
    try:
        state, ranges = read_stacks()
    except Exception as exc:  # noqa: BLE001 - never lose the dump over the Python part
        return dataclasses.replace(snapshot, soft_errors=snapshot.soft_errors + (
            SoftError("python-unreadable", f"Python stacks could not be read: {exc}"),))
    if state is None:
        reason = missing_reason(snapshot.modules) if say_missing else None
        if reason:
            return dataclasses.replace(snapshot, soft_errors=snapshot.soft_errors + (
                SoftError("python-not-found", reason),))
        return snapshot
    soft = snapshot.soft_errors
    if state.errors:
        soft += (SoftError("python-partial", "Python stacks: " + "; ".join(state.errors[:5])),)
    return dataclasses.replace(snapshot, python=state, soft_errors=soft,
                               memory=(tuple(ranges) if keep_memory else ()) + snapshot.memory)
