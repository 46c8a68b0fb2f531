"""The GD_PYTHON stream: a decoded PythonState as UTF-8 JSON, schema ``generate_dump.python/1``.

::

    {"schema": "generate_dump.python/1",
     "version": "3.11.7",                       # CPython version (3.9/3.10: "3.X")
     "runtime_address": "0x7f...",              # _PyRuntime, to decode the memory again
     "module": "/usr/lib/libpython3.11.so.1.0", # the module holding it
     "gil_holder": 4243 | null,                 # TID of the thread holding the GIL
     "read_while_running": false,               # true: decoded after the threads ran on
     "changed_tids": [],                        # threads whose innermost frame moved since
                                                # the freeze (their stacks are approximate)
     "errors": ["..."],                         # what could not be read
     "threads": [{"tid": 4242,                  # native thread id (0: unknown)
                  "thread_id": "0x7f...",       # pthread_t of the thread state
                  "interpreter": 0, "holds_gil": false, "note": "",
                  "frames": [{"function": "wait", "qualname": "Event.wait",
                              "file": "/usr/lib/python3.11/threading.py", "line": 629,
                              "first_line": 611, "entry": false}]}]}   # innermost first

``entry`` marks the outermost frame run by one C-level call of the eval loop. Readers
ignore keys they do not know; a missing key takes its default.
"""

from __future__ import annotations

import json

from ..snapshot import PythonFrame, PythonState, PythonThread

SCHEMA = "generate_dump.python/1"


def encode(state: PythonState) -> bytes:
    doc = {
        "schema": SCHEMA,
        "version": state.version,
        "runtime_address": f"0x{state.runtime_address:x}",
        "module": state.module,
        "gil_holder": state.gil_holder,
        "read_while_running": state.read_while_running,
        "changed_tids": list(state.changed_tids),
        "errors": list(state.errors),
        "threads": [{
            "tid": t.tid, "thread_id": f"0x{t.thread_id:x}", "interpreter": t.interpreter,
            "holds_gil": t.holds_gil, "note": t.note,
            "frames": [{"function": f.function, "qualname": f.qualname, "file": f.file,
                        "line": f.line, "first_line": f.first_line, "entry": f.entry}
                       for f in t.frames],
        } for t in state.threads],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _int(v, default: int = 0) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return default
    return default


def decode(data: bytes) -> PythonState:
    """The state in a GD_PYTHON stream; ValueError when it is not one we can read."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"Python stream is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(
            "generate_dump.python/"):
        raise ValueError("Python stream has no generate_dump.python schema")
    threads = []
    for t in doc.get("threads") or []:
        if not isinstance(t, dict):
            continue
        frames = []
        for f in t.get("frames") or []:
            if not isinstance(f, dict):
                continue
            line = f.get("line")
            frames.append(PythonFrame(
                function=str(f.get("function", "")), file=str(f.get("file", "")),
                line=line if isinstance(line, int) and not isinstance(line, bool) else None,
                qualname=f.get("qualname") if isinstance(f.get("qualname"), str) else None,
                first_line=_int(f.get("first_line")), entry=bool(f.get("entry", True))))
        threads.append(PythonThread(
            tid=_int(t.get("tid")), thread_id=_int(t.get("thread_id")),
            interpreter=_int(t.get("interpreter")), holds_gil=bool(t.get("holds_gil")),
            frames=tuple(frames), note=str(t.get("note") or "")))
    gil = doc.get("gil_holder")
    return PythonState(
        version=str(doc.get("version", "")),
        runtime_address=_int(doc.get("runtime_address")),
        module=str(doc.get("module", "")),
        threads=tuple(threads),
        gil_holder=gil if isinstance(gil, int) and not isinstance(gil, bool) else None,
        read_while_running=bool(doc.get("read_while_running")),
        changed_tids=tuple(_int(x) for x in doc.get("changed_tids") or []),
        errors=tuple(str(e) for e in doc.get("errors") or []),
    )
