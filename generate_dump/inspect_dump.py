"""`generate_dump inspect FILE`: what a minidump says, with every thread's stack walked.

::

    generate_dump inspect FILE [--symbols-path DIR ...] [--symbols-url URL ...]
                               [--json [--format generate_dump|rust-minidump]]
                               [--thread TID] [--no-system-debug] [--no-debuginfod]
                               [--max-frames N] [--native | --python-only]

Prints the process, why it was dumped (the signal, its code, the fault address and the
crashing thread; or "live snapshot"), the modules with where their symbols came from,
then every thread (the crashing one first) as::

    Thread 4242 "threads"
      #0 0x00007f8ef1477df2 libc.so.6!pause+0x32 (pause.c:29) [context]
      #1 0x0000564dbf90d51d threads!main_park+0xd (threads.c:39) [cfi]

A frame reads ``#N PC module!function+0xOFF (file:line) [how]``; without a function name
it is ``module+0xOFF`` (offset from the module base), outside every module just the
address, or ``perf-map!NAME+0xOFF`` when the dump carries the process's perf map and a
line of it names that JIT-compiled code (see "JIT code" below). ``how`` is ``context``
(the thread's registers), ``cfi`` (DWARF or Breakpad call frame information), ``fp``
(frame pointer chain) or ``scan`` (a return address found by scanning the stack: least
certain). Caller frames show the return address; their names
and lines are looked up at the call instruction (``pc - 1``). Modules are matched to files
by build id (see :mod:`generate_dump.unwind.locate` for where files are looked for); a
module without a matching file is never given a name from a file of another build.

JIT code (the JVM's, V8's, CPython's perf trampolines) lies outside every module and has
no CFI. A frame there is left by the frame-pointer chain, under Breakpad's rules for it:
the frame pointer is 8-aligned and above the stack pointer, the return address is in
executable memory (the dump's memory map, else a perf map line), and for a return into
JIT code, where no call instruction can be checked, the caller's frame pointer must lie
above the caller's stack pointer and in captured memory. Failing that, the stack scan
(which, as Breakpad's, accepts only module code after a call) finds the next native
frame. Names come from the process's perf map (``/tmp/perf-PID.map``: ``node
--perf-basic-prof``, ``jcmd PID Compiler.perfmap`` on HotSpot, CPython 3.12+ with ``-X perf``),
when ``generate_dump`` found one: the dump carries the lines of it that name code a
thread's registers or stack point into (our stream ``GD_PERF_MAP``, 0x47440001: those
lines verbatim, ``START SIZE NAME`` in hex). Module code keeps its module's names; where
lines overlap, the later one wins (the runtime reused the memory). In JSON such a frame
has ``"module": "perf-map"``, ``"module_offset": null`` and the line's name as ``function``;
the text report says after the modules how many lines the dump carries.

``--symbols-path DIR`` (repeatable) adds directories holding module files (by name or in
``.build-id`` trees), debug files, or Breakpad symbol stores (``NAME/DEBUGID/NAME.sym``).
``--no-system-debug`` ignores ``/usr/lib/debug``. ``--thread TID`` shows one thread.

Symbols from servers (see :mod:`generate_dump.symbols`): with ``DEBUGINFOD_URLS`` set (as
for gdb and eu-stack; ``DEBUGINFOD_CACHE_PATH``, ``DEBUGINFOD_TIMEOUT``,
``DEBUGINFOD_MAXSIZE``, ``DEBUGINFOD_MAXTIME`` too), a module whose files are not on the
disk is looked up by build id: ``/buildid/ID/executable`` when no local file has its code
(every such module: the walk needs code and CFI), ``/buildid/ID/debuginfo`` when none has
its symbols (only modules seen in a stack: a first walk says which), through elfutils' cache
(shared with gdb, eu-stack and debuginfod-find). ``--symbols-url URL`` (repeatable) asks a
Breakpad symbol store (``URL/NAME/DEBUGID/NAME.sym``) for modules in a stack without
symbols; downloads are cached in ``~/.cache/generate_dump/symbols``
(``$GENERATE_DUMP_SYMBOLS_CACHE``), itself a valid ``--symbols-path`` store. Lookups run in
parallel with a progress line on a terminal. A downloaded file is used only if its build id
(``.sym``: debug id) is the module's; otherwise it is reported and dropped. A server that is
unreachable, times out, answers HTML or 5xx, or redirects to another host (not followed)
costs its timeout once and one warning line, then is skipped for the run; a truncated
download, a file over the size cap (``DEBUGINFOD_MAXSIZE``, default 2 GiB; 1 GiB for
``.sym``), a malformed answer or a cache that cannot be written (read-only, full) is one
warning line each. ``--no-debuginfod`` ignores ``DEBUGINFOD_URLS``. The summaries (``run``,
the pytest plugin, ``--print-stacks``) use ``DEBUGINFOD_URLS`` too, with at most
``SUMMARY_SYMBOLS_SECONDS`` (20 s) of downloads.

JSON output (``--json``), schema ``generate_dump.inspect/1``. Addresses are strings
``"0x..."`` (lower-case hex, no padding) so that 64-bit values survive any JSON parser;
keys are always present, with ``null`` when unknown::

    {
      "schema": "generate_dump.inspect/1",
      "file": "/path/to/minidump" | null,
      "process": {"pid": 4242, "name": "threads", "command_line": ["./threads"]},
      "system": {"os": "linux", "arch": "amd64", "os_version": "...", "cpu_count": 2},
      "reason": {"kind": "live"}
              | {"kind": "exception", "thread": 4242, "code": 11, "name": "SIGSEGV",
                 "flags": 1, "flags_name": "SEGV_MAPERR", "address": "0x0"},
      "python": {...} | null,            # see "Python processes" below
      "modules": [{"name": "libc.so.6", "path": "/usr/lib/x86_64-linux-gnu/libc.so.6",
                   "base": "0x7f...", "end": "0x7f...", "main": false,
                   "debug_id": "EC61AC93...0", "code_id": "93ac61ec...",
                   "symbols": "ok" | "missing" | "mismatch" | "no-id",
                   "files": ["/usr/lib/x86_64-linux-gnu/libc.so.6", ...],
                   "mismatched": ["/other/libc.so.6 (build id ...)"]}],
      "threads": [{"tid": 4242, "name": "threads", "crashed": false, "note": null,
                   "holds_gil": false, "python_thread_id": null, "python_note": null,
                   "frames": [{"index": 0, "pc": "0x7f...", "sp": "0x7ffc...",
                               "trust": "context" | "cfi" | "fp" | "scan" | "python",
                               "module": "libc.so.6" | "perf-map" | null,
                               "module_offset": "0x..." | null,
                               "function": "pause" | null, "qualname": null,
                               "function_offset": "0x32" | null,
                               "file": "../sysdeps/unix/sysv/linux/pause.c" | null,
                               "line": 29 | null}]}]
    }

``threads`` lists the crashing thread first, then the others in dump order (or only the
``--thread``). ``symbols`` is ``ok`` when a file with the module's build id was found
(``files`` lists them), ``mismatch`` when only files with another build id were found,
``missing`` when none, ``no-id`` when the dump records no build id for the module.
``note`` says why a thread's walk ended early (no context, a loop, the depth limit).

``--format rust-minidump`` (implies ``--json``) writes the schema of rust-minidump's
``minidump-stackwalk --json`` instead; docs/inspect.md lists the fields filled.

Python processes. When the dump holds CPython stacks (our GD_PYTHON stream, see
:mod:`generate_dump.python.stream`; or, without it, the interpreter's memory in the dump,
decoded again through the module file that has ``_PyRuntime``), every thread's run of
interpreter frames (``_PyEval_EvalFrameDefault`` and the call plumbing around it) is
replaced by the Python frames it was executing, native frames around them kept::

    Thread 4243 "python3.12" (holds the GIL)
      #0 0x00007f2f99eed545 libc.so.6!clock_nanosleep+0x65 (clock_nanosleep.c:48) [context]
      #1 0x00007f2f9a364b62 libpython3.12.so.1.0!time_sleep+0x82 (timemodule.c:2182) [cfi]
      #2 File "/srv/app/worker.py", line 31, in Worker.wait [python]
      #3 File "/usr/lib/python3.12/threading.py", line 1010, in Thread.run [python]
      #4 0x00007f2f9a363a26 libpython3.12.so.1.0!thread_run+0x46 (_threadmodule.c:1114) [cfi]

``--native`` keeps every native frame (each Python run just above the eval-loop frame that
ran it), ``--python-only`` shows only the Python frames. Python frames whose eval-loop
frame the native walk did not reach follow the native frames. In JSON a Python frame has
``"trust": "python"``, ``function`` (``co_name``), ``qualname``, ``file`` and ``line``
(null when the line table has none), and null ``pc``/``sp``/``module``/offsets; a thread
has ``holds_gil``, ``python_thread_id`` (its pthread id) and ``python_note`` (why its
Python stack may be incomplete); the document has ``"python": {"version", "gil_holder",
"read_while_running", "changed_tids", "errors", "threads"}`` or null.

For other code: :func:`summarize_snapshot` (a snapshot just captured, as ``generate_dump
run`` and the pytest plugin report it), :func:`summarize_file` and :func:`print_stacks`
give a short text: the top frames of every thread (Python frames merged in), crashing
thread first, threads with identical top frames listed together. :func:`inspect_snapshot`
gives the whole report of any Snapshot (a file is read with ``read_minidump_snapshot``)
as an :class:`InspectReport`, with ``to_json()`` (the document above) and ``to_text()``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Iterable, Optional, Union

import click

from .errors import DumpError
from .minidump.codeview import code_id, debug_id
from .platform.linux.signals import FAULT_SIGNAL_NAMES
from .memsource import SnapshotMemory
from .python.merge import MODES, PyFrame, merge, state_for_snapshot, thread_for
from .snapshot import OS, Module, PythonState, PythonThread, Snapshot
from .unwind import SnapshotIndex, SymbolOptions, ThreadStack, walk_process
from .unwind.locate import module_name
from .unwind.debug_info import module_debug, prepare
from .symbols.session import budget

SCHEMA = "generate_dump.inspect/1"
SUMMARY_FRAMES = 8
SUMMARY_MAX_TIDS = 8
SUMMARY_SYMBOLS_SECONDS = 20.0  # most time the summaries spend downloading symbols

# -- signals ---------------------------------------------------------------------------------

_LINUX_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
    18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG",
    24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
    30: "SIGPWR", 31: "SIGSYS",
}
_BSD_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGEMT", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGBUS", 11: "SIGSEGV", 12: "SIGSYS",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGURG", 17: "SIGSTOP", 18: "SIGTSTP",
    19: "SIGCONT", 20: "SIGCHLD", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGIO", 24: "SIGXCPU",
    25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGINFO",
    30: "SIGUSR1", 31: "SIGUSR2",
}
_SI_CODES = {
    "SIGILL": ("ILL_ILLOPC", "ILL_ILLOPN", "ILL_ILLADR", "ILL_ILLTRP", "ILL_PRVOPC",
               "ILL_PRVREG", "ILL_COPROC", "ILL_BADSTK"),
    "SIGFPE": ("FPE_INTDIV", "FPE_INTOVF", "FPE_FLTDIV", "FPE_FLTOVF", "FPE_FLTUND",
               "FPE_FLTRES", "FPE_FLTINV", "FPE_FLTSUB"),
    "SIGSEGV": ("SEGV_MAPERR", "SEGV_ACCERR", "SEGV_BNDERR", "SEGV_PKUERR", "SEGV_ACCADI",
                "SEGV_ADIDERR", "SEGV_ADIPERR", "SEGV_MTEAERR", "SEGV_MTESERR"),
    "SIGBUS": ("BUS_ADRALN", "BUS_ADRERR", "BUS_OBJERR", "BUS_MCEERR_AR", "BUS_MCEERR_AO"),
    "SIGTRAP": ("TRAP_BRKPT", "TRAP_TRACE", "TRAP_BRANCH", "TRAP_HWBKPT", "TRAP_UNK"),
    "SIGSYS": ("SYS_SECCOMP",),
}
_GENERIC_SI = {0: "SI_USER", 0x80: "SI_KERNEL", -1: "SI_QUEUE", -2: "SI_TIMER",
               -3: "SI_MESGQ", -4: "SI_ASYNCIO", -5: "SI_SIGIO", -6: "SI_TKILL"}
_WINDOWS_CODES = {
    0xC0000005: "EXCEPTION_ACCESS_VIOLATION", 0x80000003: "EXCEPTION_BREAKPOINT",
    0x80000004: "EXCEPTION_SINGLE_STEP", 0xC00000FD: "EXCEPTION_STACK_OVERFLOW",
    0xC0000094: "EXCEPTION_INT_DIVIDE_BY_ZERO", 0xC000001D: "EXCEPTION_ILLEGAL_INSTRUCTION",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN", 0xC0000374: "STATUS_HEAP_CORRUPTION",
    0xE06D7363: "EXCEPTION_CXX",
}


def exception_names(os_: Optional[OS], code: int, flags: int) -> tuple[str, Optional[str]]:
    """(signal or exception name, si_code name or None)."""
    if os_ == OS.WINDOWS:
        return _WINDOWS_CODES.get(code, f"0x{code:08x}"), None
    table = _BSD_SIGNALS if os_ in (OS.MACOS, OS.IOS) else _LINUX_SIGNALS
    name = table.get(code, f"signal {code}")
    si = flags - (1 << 32) if flags & 0x80000000 else flags
    sub = None
    if si > 0 and name in _SI_CODES and si <= len(_SI_CODES[name]):
        sub = _SI_CODES[name][si - 1]
    elif si in _GENERIC_SI and os_ in (OS.LINUX, OS.ANDROID, None):
        sub = _GENERIC_SI[si]
    return name, sub


def describe_reason(snapshot: Snapshot) -> str:
    e = snapshot.exception
    if e is None:
        return "live snapshot (no exception)"
    os_ = snapshot.system.os
    name, sub = exception_names(os_, e.code, e.flags)
    text = name + (f" ({sub})" if sub else "")
    si = e.flags - (1 << 32) if e.flags & 0x80000000 else e.flags
    if e.address or (name in FAULT_SIGNAL_NAMES and si > 0) or os_ == OS.WINDOWS:
        text += f" at 0x{e.address:x}"
    return text + f" in thread {e.thread_id}"


# -- formatting frames -----------------------------------------------------------------------


def format_frame(f, width: int = 16, trust: bool = True) -> str:
    text = f"#{f.index} 0x{f.pc:0{width}x} "
    if f.module is not None:
        if f.symbol is not None:
            text += f"{f.module.name}!{f.symbol.name}+0x{f.function_offset:x}"
        else:
            text += f"{f.module.name}+0x{f.module_offset:x}"
    elif f.symbol is not None:  # JIT code named by the perf map
        text += f"{f.module_name}!{f.symbol.name}+0x{f.function_offset:x}"
    else:
        text = text.rstrip()
    if f.file is not None and f.line is not None:
        text += f" ({os.path.basename(f.file)}:{f.line})"
    if trust:
        text += f" [{f.trust}]"
    return text


def format_python_frame(f, index: int, trust: bool = True) -> str:
    line = f.line if f.line is not None else "?"
    text = f'#{index} File "{f.file}", line {line}, in {f.display_name}'
    return text + " [python]" if trust else text


def format_item(f, index: int, trust: bool = True) -> str:
    """A line for a merged-stack item: a Python frame or a native one (renumbered)."""
    if isinstance(f, PyFrame):
        return format_python_frame(f, index, trust)
    text = format_frame(f, trust=trust)
    return f"#{index}" + text[text.index(" "):]


def python_frame_json(f, index: int) -> dict:
    return {
        "index": index, "pc": None, "sp": None, "trust": "python", "module": None,
        "module_offset": None, "function": f.function, "qualname": f.qualname,
        "function_offset": None, "file": f.file, "line": f.line,
    }


def item_json(f, index: int) -> dict:
    if isinstance(f, PyFrame):
        return python_frame_json(f, index)
    d = frame_json(f)
    d["index"] = index
    return d


def python_json(state) -> Optional[dict]:
    if state is None:
        return None
    return {"version": state.version, "gil_holder": state.gil_holder,
            "read_while_running": state.read_while_running,
            "changed_tids": list(state.changed_tids), "errors": list(state.errors),
            "threads": len(state.threads)}


def frame_json(f) -> dict:
    return {
        "index": f.index,
        "pc": f"0x{f.pc:x}",
        "sp": f"0x{f.sp:x}",
        "trust": f.trust,
        "module": f.module_name,
        "module_offset": f"0x{f.module_offset:x}" if f.module is not None else None,
        "function": f.function,
        "qualname": None,  # Python frames only
        "function_offset": f"0x{f.function_offset:x}" if f.symbol is not None else None,
        "file": f.file,
        "line": f.line,
    }


def _thread_title(t: ThreadStack) -> str:
    title = f"Thread {t.tid}"
    if t.name:
        title += f' "{t.name}"'
    if t.crashed:
        title += " (crashed)"
    return title


# -- loading ---------------------------------------------------------------------------------


def load_snapshot(path: Union[str, os.PathLike]) -> Snapshot:
    """The Snapshot of the minidump at ``path`` (memory read from the mapped file)."""
    from .sources.minidump_file import MinidumpFileError, read_minidump_snapshot

    p = os.fspath(path)
    if not os.path.exists(p):
        raise DumpError(f"{p}: no such file; give the path of a minidump")
    if os.path.isdir(p):
        raise DumpError(f"{p} is a directory; give the path of a minidump file")
    try:
        return read_minidump_snapshot(p)
    except MinidumpFileError as exc:
        raise DumpError(f"{p} is not a readable minidump: {exc.reason}") from None


def _options(symbols_paths: Iterable[str], system_debug: bool,
             symbols_urls: Iterable[str] = (), debuginfod: bool = True) -> SymbolOptions:
    from urllib.parse import urlsplit

    paths = []
    for d in symbols_paths:
        if not os.path.isdir(d):
            raise DumpError(f"--symbols-path {d}: no such directory")
        paths.append(os.path.abspath(d))
    urls = []
    for u in symbols_urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DumpError(f"--symbols-url {u}: give an http:// or https:// URL")
        urls.append(u.rstrip("/"))
    return SymbolOptions(tuple(paths), system_debug, symbols_urls=tuple(urls),
                         debuginfod=debuginfod)


# -- walking with symbols from servers -------------------------------------------------------


def walk_fetching(index: SnapshotIndex, options: SymbolOptions,
                  tids: Optional[set[int]] = None, max_frames: int = 512,
                  wait: Optional[float] = None) -> tuple[list[ThreadStack], SymbolOptions]:
    """Walk the stacks; with servers configured, in two rounds so that only modules seen in
    a stack get their debug files downloaded: executables of modules without a local file
    (their code and CFI drive the walk) first, in parallel; a first walk; the debug files
    and ``.sym`` files of the modules in its frames, in parallel; the walk again. Returns
    the stacks and the options the final walk used (for module lookups afterwards)."""
    if not options.remote:
        return walk_process(index, options, tids, max_frames), options
    modules = index.snapshot.modules
    first = dataclasses.replace(options, names_for=frozenset())
    prepare(modules, first, wait=wait)
    stacks = walk_process(index, first, tids, max_frames)
    seen = {f.module.module.base for t in stacks for f in t.frames if f.module is not None}
    wanted = [m for m in modules if m.base in seen and m.identity is not None]
    full = dataclasses.replace(options, names_for=frozenset(debug_id(m.identity)
                                                            for m in wanted
                                                            if m.identity is not None))
    prepare(wanted, full, wait=wait)
    return walk_process(index, full, tids, max_frames), full


# -- the report ------------------------------------------------------------------------------


def command_line(snapshot: Snapshot) -> tuple[str, ...]:
    """The process's arguments as the report shows them: the dump's cmdline file (empty
    arguments kept, undecodable bytes replaced), else what the source recorded."""
    raw = snapshot.linux.cmdline if snapshot.linux is not None else None
    if raw:
        return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))
    return snapshot.process.command_line


def process_name(snapshot: Snapshot) -> str:
    """The program's name, else the main module's."""
    args = command_line(snapshot)
    if args:
        return os.path.basename(args[0]) or args[0]
    main = next((m for m in snapshot.modules if m.is_main),
                snapshot.modules[0] if snapshot.modules else None)
    return os.path.basename(main.path) if main is not None else ""


@dataclasses.dataclass
class ModuleReport:
    """A module and where its symbols came from (``symbols``: ok, missing, mismatch,
    no-id; see the module doc)."""

    module: Module
    symbols: str
    files: list[str]
    mismatched: list[str]

    def to_dict(self) -> dict:
        m = self.module
        return {
            "name": module_name(m.path),
            "path": m.path,
            "base": f"0x{m.base:x}",
            "end": f"0x{m.base + m.size:x}",
            "main": bool(m.is_main),
            "debug_id": debug_id(m.identity) if m.identity is not None else None,
            "code_id": (code_id(m.identity) or None) if m.identity is not None else None,
            "symbols": self.symbols,
            "files": list(self.files),
            "mismatched": list(self.mismatched),
        }

    def to_text(self) -> str:
        m = self.module
        line = f"  0x{m.base:016x}-0x{m.base + m.size:016x} {module_name(m.path)}"
        did = debug_id(m.identity) if m.identity is not None else None
        if did:
            line += f" {did}"
        if m.is_main:
            line += " (main)"
        if self.symbols == "ok":
            return line + "  symbols: " + ", ".join(self.files)
        if self.symbols == "mismatch":
            return line + "  symbols: none (build id differs: " + "; ".join(self.mismatched) + ")"
        if self.symbols == "no-id":
            return line + "  symbols: none (no build id in the dump)"
        return line + "  symbols: none (no file with this build id)"


@dataclasses.dataclass
class ThreadReport:
    """A thread's walked stack (``stack``), the frames shown (``items``: native frames and
    Python frames merged by the report's mode) and its Python thread state, if any."""

    stack: ThreadStack
    items: list
    python: Optional[PythonThread] = None

    def to_dict(self) -> dict:
        t, py = self.stack, self.python
        return {
            "tid": t.tid, "name": t.name, "crashed": t.crashed, "note": t.note or None,
            "holds_gil": bool(py is not None and py.holds_gil),
            "python_thread_id": f"0x{py.thread_id:x}" if py is not None else None,
            "python_note": (py.note or None) if py is not None else None,
            "frames": [item_json(f, i) for i, f in enumerate(self.items)],
        }

    def to_text(self) -> list[str]:
        t, py = self.stack, self.python
        lines = [_thread_title(t) + (" (holds the GIL)" if py is not None and py.holds_gil
                                     else "")]
        lines += ["  " + format_item(f, i) for i, f in enumerate(self.items)]
        if t.note:
            lines.append(f"  ({t.note})")
        if py is not None and py.note:
            lines.append(f"  (Python stack incomplete: {py.note})")
        return lines


@dataclasses.dataclass
class InspectReport:
    """What ``inspect`` says about a snapshot: :meth:`to_json` is the document of the
    module doc (schema ``generate_dump.inspect/1``), :meth:`to_text` the text report.
    ``options`` are those the walk used (with servers: the modules given names)."""

    snapshot: Snapshot
    file: Optional[str]
    options: SymbolOptions
    python: Optional[PythonState]
    modules: list[ModuleReport]
    threads: list[ThreadReport]
    perf_map_lines: Optional[int] = None  # lines of the dump's perf map, when it has one

    def to_dict(self) -> dict:
        snap = self.snapshot
        s = snap.system
        e = snap.exception
        if e is None:
            reason: dict = {"kind": "live"}
        else:
            name, sub = exception_names(s.os, e.code, e.flags)
            reason = {"kind": "exception", "thread": e.thread_id, "code": e.code,
                      "name": name, "flags": e.flags, "flags_name": sub,
                      "address": f"0x{e.address:x}"}
        tr = snap.trigger
        return {
            "schema": SCHEMA,
            "file": self.file,
            "process": {"pid": snap.process.pid, "name": process_name(snap),
                        "command_line": list(command_line(snap))},
            "system": {"os": s.os.value, "arch": s.arch.value, "os_version": s.os_version,
                       "cpu_count": s.cpu.count},
            "reason": reason,
            "trigger": ({"trigger": tr.trigger, "threshold": tr.threshold, "value": tr.value,
                         "time": tr.time} if tr is not None else None),
            "python": python_json(self.python),
            "modules": [m.to_dict() for m in self.modules],
            "threads": [t.to_dict() for t in self.threads],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_rust_minidump_json(self) -> str:
        """The walk in the schema of rust-minidump's ``minidump-stackwalk --json``."""
        from .rust_minidump_json import rust_minidump_json

        return rust_minidump_json(self.snapshot, [t.stack for t in self.threads],
                                  self.options)

    def to_text(self) -> str:
        snap = self.snapshot
        s = snap.system
        args = command_line(snap)
        title = f"Process {snap.process.pid}"
        if args:
            title += ": " + " ".join(args)
        elif process_name(snap):
            title += f" ({process_name(snap)})"
        lines = [title]
        if self.file:
            lines.append(f"Dump: {self.file}")
        if s.os.value:
            lines.append(f"System: {s.os.value} {s.arch.value}, {s.cpu.count} CPUs"
                         + (f", {s.os_version}" if s.os_version else ""))
        lines.append("Reason: " + describe_reason(snap))
        tr = snap.trigger
        if tr is not None:
            lines.append(f"Trigger: {tr.trigger} {tr.threshold} (measured {tr.value})")
        py = python_json(self.python)
        if py is not None:
            lines.append(_python_line(py))
        lines.append("")
        lines.append(f"Modules ({len(self.modules)}):")
        lines += [m.to_text() for m in self.modules]
        if self.perf_map_lines is not None:
            lines.append(f"Perf map: {self.perf_map_lines} lines naming JIT code "
                         "(perf-map!NAME)")
        for t in self.threads:
            lines.append("")
            lines += t.to_text()
        return "\n".join(lines)


def inspect_snapshot(snapshot: Snapshot, options: SymbolOptions, tid: Optional[int] = None,
                     max_frames: int = 512, mode: str = "merged",
                     file: Optional[str] = None,
                     memory: Optional[SnapshotMemory] = None) -> InspectReport:
    """The whole report. ``mode``: merged (Python frames in place of the eval loop's),
    native (both) or python (only Python frames), see :mod:`generate_dump.python.merge`.
    ``file``: the dump it came from; ``memory``: the memory to read (default: all the
    snapshot holds)."""
    threads = snapshot.threads
    if tid is not None and all(t.tid != tid for t in threads):
        have = ", ".join(str(t.tid) for t in threads[:20])
        raise DumpError(f"no thread {tid} in the dump (threads: {have}"
                        f"{', ...' if len(threads) > 20 else ''})")
    index = SnapshotIndex(snapshot, memory)
    stacks, options = walk_fetching(index, options, {tid} if tid is not None else None,
                                    max_frames)
    python = state_for_snapshot(snapshot, index.memory, options)
    modules = []
    for m in snapshot.modules:
        md = module_debug(m, options)
        modules.append(ModuleReport(m, md.status, md.files.sources(),
                                    list(md.files.mismatched)))
    reports = []
    for t in stacks:
        py = thread_for(python, t.tid)
        # The walk stops at max_frames native frames; Python frames beyond it still follow.
        reports.append(ThreadReport(t, merge(t.frames, py, mode), py))
    return InspectReport(snapshot, file, options, python, modules, reports,
                         len(index.perf_map) if index.perf_map is not None else None)


def _python_line(py: dict) -> str:
    text = f"Python: CPython {py['version']}, {py['threads']} thread states"
    if py["gil_holder"]:
        text += f", GIL held by thread {py['gil_holder']}"
    if py["changed_tids"]:
        text += (", stacks of threads " + ", ".join(map(str, py["changed_tids"]))
                 + " moved on between the freeze and the read")
    elif py["read_while_running"]:
        text += " (read just after the process resumed)"
    if py["errors"]:
        text += "; errors: " + "; ".join(py["errors"][:3])
    return text


# -- summaries -------------------------------------------------------------------------------


def summarize(snapshot: Snapshot, options: Optional[SymbolOptions] = None,
              frames: int = SUMMARY_FRAMES, memory: Optional[SnapshotMemory] = None) -> str:
    """Top ``frames`` frames per thread (Python frames merged in), crashing thread first;
    identical stacks grouped. ``memory``: what to read (default: all the snapshot holds)."""
    options = options or SymbolOptions()
    index = SnapshotIndex(snapshot, memory)
    python = state_for_snapshot(snapshot, index.memory, options)
    # Python frames replace eval-loop frames: walk deeper to reach the innermost ones.
    with budget(SUMMARY_SYMBOLS_SECONDS if options.remote else None):
        stacks, _ = walk_fetching(index, options, max_frames=frames + (64 if python else 1),
                                  wait=SUMMARY_SYMBOLS_SECONDS)
    items: dict[int, list] = {}
    groups: dict[tuple, list[ThreadStack]] = {}
    order: list[tuple] = []
    for t in stacks:
        merged = items[id(t)] = merge(t.frames, thread_for(python, t.tid))
        body = tuple(format_item(f, i, trust=f.trust in ("fp", "scan"))
                     for i, f in enumerate(merged[:frames]))
        more = len(merged) > frames
        key = ("crashed", t.tid) if t.crashed else (body, more, t.note, t.name)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(t)
    out = []
    if snapshot.exception is not None:
        out.append(f"Crash: {describe_reason(snapshot)}")
    py = python_json(python)
    if py is not None:
        out.append(_python_line(py))
    for key in order:
        members = groups[key]
        t = members[0]
        if len(members) == 1:
            head = _thread_title(t)
        else:
            tids = ", ".join(str(m.tid) for m in members[:SUMMARY_MAX_TIDS])
            if len(members) > SUMMARY_MAX_TIDS:
                tids += f" and {len(members) - SUMMARY_MAX_TIDS} more"
            head = f"{len(members)} threads" + (f' "{t.name}"' if t.name else "") + f": {tids}"
        out.append(head + ":")
        merged = items[id(t)]
        for i, f in enumerate(merged[:frames]):
            out.append("  " + format_item(f, i, trust=f.trust in ("fp", "scan")))
        if len(merged) > frames:
            out.append("  ...")
        if not merged:
            out.append(f"  (no frames: {t.note or 'unknown'})")
    return "\n".join(out)


def summarize_snapshot(snapshot: Snapshot, frames: int = SUMMARY_FRAMES) -> str:
    """Short text for `generate_dump run` and the pytest plugin: top frames of each thread,
    crashing thread first. Only the memory copied into the snapshot is read: its lazy
    ranges are the live process's, which runs on (or is gone) by now."""
    return summarize(snapshot, frames=frames, memory=SnapshotMemory(snapshot, lazy=False))


def summarize_file(path: Union[str, os.PathLike], frames: int = SUMMARY_FRAMES,
                   symbols_paths: Iterable[str] = ()) -> str:
    return summarize(load_snapshot(path), _options(symbols_paths, True), frames=frames)


def print_stacks(path_or_snapshot: Union[str, os.PathLike, Snapshot]) -> str:
    """The summary `generate_dump PID --print-stacks` prints after writing the dump."""
    if isinstance(path_or_snapshot, Snapshot):
        return summarize_snapshot(path_or_snapshot)
    return summarize_file(path_or_snapshot)


FORMATS = ("generate_dump", "rust-minidump")


def inspect_file(path: Union[str, os.PathLike], symbols_paths: Iterable[str] = (),
                 as_json: bool = False, thread: Optional[int] = None,
                 system_debug: bool = True, max_frames: int = 512,
                 symbols_urls: Iterable[str] = (), debuginfod: bool = True,
                 fmt: str = "generate_dump", mode: str = "merged") -> str:
    if mode not in MODES:
        raise DumpError(f"unknown stack mode {mode!r}")
    options = _options(symbols_paths, system_debug, symbols_urls, debuginfod)
    report = inspect_snapshot(load_snapshot(path), options, thread, max_frames, mode,
                              file=os.fspath(path))
    if fmt == "rust-minidump":
        return report.to_rust_minidump_json()
    return report.to_json() if as_json else report.to_text()


# -- command line ----------------------------------------------------------------------------


@click.command(name="inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", metavar="FILE")
@click.option("--symbols-path", "symbols_paths", multiple=True, metavar="DIR",
              help="Also look for module files, debug files (by name or .build-id tree) "
                   "and Breakpad symbols (NAME/DEBUGID/NAME.sym) in DIR. Repeatable.")
@click.option("--symbols-url", "symbols_urls", multiple=True, metavar="URL",
              help="Ask this Breakpad symbol store (URL/NAME/DEBUGID/NAME.sym) for modules "
                   "without symbols; downloads are cached. Repeatable.")
@click.option("--debuginfod/--no-debuginfod", default=True, show_default=True,
              help="Look modules up in the debuginfod servers of DEBUGINFOD_URLS.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (schema generate_dump.inspect/1) instead of text.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="generate_dump",
              show_default=True,
              help="JSON schema: ours, or that of rust-minidump's minidump-stackwalk --json "
                   "(implies --json).")
@click.option("--thread", "thread", type=int, metavar="TID", help="Show only thread TID.")
@click.option("--system-debug/--no-system-debug", default=True, show_default=True,
              help="Look for debug files under /usr/lib/debug.")
@click.option("--max-frames", default=512, show_default=True, type=click.IntRange(1, 100000),
              help="Stop each thread's walk after this many frames.")
@click.option("--native", "mode", flag_value="native",
              help="Python processes: keep every native frame, the interpreter's own "
                   "included, with the Python frames above the eval loop frame running them.")
@click.option("--python-only", "mode", flag_value="python",
              help="Python processes: show only the Python frames.")
def inspect_command(file: str, symbols_paths: tuple[str, ...], symbols_urls: tuple[str, ...],
                    debuginfod: bool, as_json: bool, fmt: str, thread: Optional[int],
                    system_debug: bool, max_frames: int, mode: Optional[str]) -> None:
    """Print what the minidump FILE says: process, reason, modules, and every thread's
    stack walked with CFI, frame pointers or stack scanning, symbolized from the module
    files (matched by build id), the symbol paths and symbol servers. In a CPython process
    the interpreter's frames are replaced by the Python frames they ran (File "...", line
    N, in function)."""
    click.echo(inspect_file(file, symbols_paths, as_json, thread, system_debug, max_frames,
                            symbols_urls, debuginfod, fmt, mode or "merged"))


def main(argv: Optional[list[str]] = None) -> None:
    """`python -m generate_dump.inspect_dump ...` (what `generate_dump inspect` runs)."""
    prog = "generate_dump inspect"
    try:
        inspect_command.main(args=sys.argv[1:] if argv is None else argv, prog_name=prog,
                             standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"{prog}: error: {exc.format_message()} (see '{prog} --help')", err=True)
        sys.exit(1)
    except DumpError as exc:
        click.echo(f"{prog}: error: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
