"""One way in and one way out for a live process: open a capture session for a PID (the
backend chosen here, nowhere else) and write a snapshot as a minidump.

The command line, `watch`, `run` (its supervisor and tracer), the pytest plugin and the
lldb command all go through these, so the choice of backend, the redaction and the
atomic write are decided once. Every import is made on first use: `generate_dump run`
loads this module only when it writes its first dump.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ContextManager, Optional, Union

from .errors import BadInput, DumpError

BACKENDS = ("ptrace", "lldb", "windows")


def backend_for(name: str = "auto") -> str:
    """The backend ``name`` means here: "auto" is ptrace on Linux, lldb on macOS and
    windows on Windows."""
    if name != "auto":
        return name
    if sys.platform.startswith("linux"):
        return "ptrace"
    if sys.platform == "darwin":
        return "lldb"
    if sys.platform == "win32":
        return "windows"
    raise DumpError(f"no backend for {sys.platform} yet")


def _backend(name: str) -> tuple[Callable[..., ContextManager], type]:
    """The chosen backend's capture_session and options class (imported only now)."""
    backend = backend_for(name)
    if backend == "ptrace":
        if not sys.platform.startswith("linux"):
            raise BadInput("the ptrace backend works on Linux only; use --backend lldb")
        from .backends.linux.capture import CaptureOptions, capture_session

        return capture_session, CaptureOptions
    if backend == "windows":
        if sys.platform != "win32":
            raise BadInput("the windows backend works on Windows only")
        from .backends.windows import WindowsOptions, capture_session as windows_session

        return windows_session, WindowsOptions
    if backend == "lldb":
        from .backends.lldb import LldbOptions, capture_session as lldb_session

        return lldb_session, LldbOptions
    raise ValueError(f"unknown backend {name!r} (one of auto, {', '.join(BACKENDS)})")


def _options_for(cls: type, options: Any) -> Any:
    """``options`` as the backend's own options class: the options every backend shares
    (backends/options.py) are carried over, a backend's own ones only to that backend."""
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    from dataclasses import fields

    from .backends.options import CaptureOptions as Common

    return cls(**{f.name: getattr(options, f.name) for f in fields(Common)})


def capture_session(pid: int, options: Any = None, backend: str = "auto") -> ContextManager:
    """``with capture_session(pid, options) as snapshot:`` the process ``pid`` through the
    chosen backend. ``options``: a backends.options.CaptureOptions (or a backend's own
    subclass). The process is held only while registers and stacks are copied, except for
    a frozen full dump, whose memory is read while the ``with`` block writes it. Raises a
    DumpError subclass (TargetNotFound, TargetPermissionError, ...) with a user message."""
    session, cls = _backend(backend)
    return session(pid, _options_for(cls, options))


def capture_process(pid: int, options: Any = None, backend: str = "auto"):
    """A snapshot of ``pid`` with everything copied before it returns (not for frozen
    full dumps: their memory is read while they are written, see capture_session)."""
    from .backends.options import capture_now

    session, cls = _backend(backend)
    return capture_now(session, pid, _options_for(cls, options))


Output = Union[str, "os.PathLike[str]", BinaryIO]


def write_dump(snapshot, out: Output, *, memory64: bool = False, progress=None,
               redact: bool = False) -> int:
    """Write ``snapshot`` as a minidump; returns its size. ``out``: a path, written
    atomically (output.atomic_output: nothing under that name until it is complete), or
    an open binary file. ``memory64``: memory in a Memory64List (full dumps).
    ``redact``: sanitize it first (redact.py), as --redact does."""
    from . import _testhooks
    from .minidump.writer import WriteOptions, write_minidump

    if redact:
        from .redact import redact_snapshot

        snapshot, _ = redact_snapshot(snapshot)
    options = WriteOptions(memory64=memory64)
    if isinstance(out, (str, os.PathLike)):
        from .output import atomic_output

        with atomic_output(os.fspath(out)) as f:
            size = write_minidump(snapshot, f, options, progress)
            _testhooks.pause("writing")
        return size
    size = write_minidump(snapshot, out, options, progress)
    out.flush()
    _testhooks.pause("writing")
    return size


@dataclass
class Dumped:
    """What capture_and_write did: the snapshot as captured (and adjusted), the file's
    size, and what --redact changed (None without it)."""

    snapshot: Any
    size: int
    redaction: Any = None


def capture_and_write(pid: int, out: Output, options: Any = None, *, backend: str = "auto",
                      redact: bool = False, progress=None,
                      adjust: Optional[Callable[[Any], Any]] = None) -> Dumped:
    """Capture ``pid`` and write its minidump to ``out`` (a path, or an open binary file
    such as standard output). The output is opened (and checked) before the process is
    touched and committed (fsync, rename) after it runs again, so a full dump's freeze
    does not include the fsync. ``adjust(snapshot)``: a changed snapshot to write (watch
    records its trigger). With ``redact``, a full dump of a frozen process is written as
    it is and redacted in the file after the process runs again (the freeze stays what it
    is without --redact); other dumps are redacted before they are written."""
    memory = getattr(options, "memory", "referenced")
    suspend = getattr(options, "suspend", True)
    opened: ContextManager[BinaryIO]
    if isinstance(out, (str, os.PathLike)):
        from .output import atomic_output

        to_file, opened = True, atomic_output(os.fspath(out))
    else:
        to_file, opened = False, nullcontext(out)
    report = None
    with opened as f:
        with capture_session(pid, options, backend) as snapshot:
            if adjust is not None:
                snapshot = adjust(snapshot)
            to_write = snapshot
            in_place = redact and memory == "full" and suspend and to_file
            if redact:
                from .redact import placeholder, redact_snapshot

                to_write, report = (placeholder if in_place else redact_snapshot)(snapshot)
            size = write_dump(to_write, f, memory64=memory == "full", progress=progress)
        if in_place and report is not None:
            from .redact import redact_file

            f.flush()
            redact_file(f.fileno(), report)
    return Dumped(snapshot, size, report)
