"""Walk CPython's runtime -> interpreters -> thread states -> frames in another process's
memory, through a MemorySource only, so it runs on a live process and on a minidump alike.

Every read is bounded (structure sizes, string and table caps), every chain has a length
limit and a seen-set, and anything implausible (a thread state that does not point back to
its interpreter, an object that is not a code object) ends that chain with an error text
instead of an exception: corrupted or half-initialised interpreters give partial results.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..memsource import MemorySource
from ..snapshot import PythonFrame, PythonState, PythonThread
from . import offsets as off
from .linetable import line_for

MAX_INTERPRETERS = 64
MAX_THREADS = 4096
MAX_DEPTH = 8192
MAX_STRING = 4096  # characters
MAX_TABLE = 1 << 20  # bytes of a line table
# 3.12/3.13: 3 is FRAME_OWNED_BY_CSTACK (the shim an eval call pushes); 3.14: 3 is
# FRAME_OWNED_BY_INTERPRETER and 4 FRAME_OWNED_BY_CSTACK. Owner >= 3: not a Python frame.
FIRST_NOT_PYTHON_OWNER = 3


class Recorder:
    """A MemorySource that remembers what it returned, so the bytes go into the dump."""

    def __init__(self, source: MemorySource):
        self.source = source
        self.pieces: list[tuple[int, bytes]] = []

    def read(self, address: int, size: int) -> bytes:
        data = self.source.read(address, size)
        if data:
            self.pieces.append((address, bytes(data)))
        return data

    def ranges(self, gap: int = 0) -> list[tuple[int, bytes]]:
        """The bytes read, merged into disjoint sorted ranges."""
        out: list[tuple[int, bytearray]] = []
        for addr, data in sorted(self.pieces, key=lambda p: p[0]):
            if out and addr <= out[-1][0] + len(out[-1][1]) + gap:
                start, buf = out[-1]
                end = start + len(buf)
                if addr > end:
                    # A small hole: cannot invent bytes, so start a new range.
                    out.append((addr, bytearray(data)))
                elif addr + len(data) > end:
                    buf += data[end - addr:]
            else:
                out.append((addr, bytearray(data)))
        return [(a, bytes(b)) for a, b in out]


class _Corrupt(Exception):
    pass


@dataclass
class _Code:
    name: str
    qualname: Optional[str]
    file: str
    first_line: int
    table: bytes
    code_start: int


@dataclass
class _Reader:
    mem: MemorySource
    table: dict[str, int]
    minor: int
    errors: list[str] = field(default_factory=list)
    codes: dict[int, Optional[_Code]] = field(default_factory=dict)
    type_names: dict[int, str] = field(default_factory=dict)

    def block(self, addr: int, size: int, what: str) -> bytes:
        if not addr or addr & 7 or addr >= 1 << 63:
            raise _Corrupt(f"{what} pointer 0x{addr:x} is not a valid address")
        data = self.mem.read(addr, size)
        if len(data) < size:
            raise _Corrupt(f"{what} at 0x{addr:x} is not readable ({len(data)} of {size} bytes)")
        return data

    def ptr(self, data: bytes, key: str) -> int:
        return struct.unpack_from("<Q", data, self.table[key])[0]

    def span(self, *keys: str) -> int:
        return max(self.table[k] for k in keys) + 8

    # -- objects ------------------------------------------------------------------------------

    def type_name(self, obj: int) -> str:
        t = self.table
        ob_type = struct.unpack("<Q", self.block(obj, 16, "object")[8:16])[0]
        if ob_type not in self.type_names:
            tp = self.block(ob_type, t["type.tp_name"] + 8, "type object")
            name_ptr = struct.unpack_from("<Q", tp, t["type.tp_name"])[0]
            raw = self.mem.read(name_ptr, 64) if name_ptr else b""
            self.type_names[ob_type] = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        return self.type_names[ob_type]

    def string(self, obj: int, what: str) -> str:
        t = self.table
        head = self.block(obj, t["unicode.compact_size"], what)
        length = struct.unpack_from("<q", head, t["unicode.length"])[0]
        state = struct.unpack_from("<I", head, t["unicode.state"])[0]
        kind, compact, ascii_ = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
        if kind not in (1, 2, 4) or not 0 <= length <= 1 << 30:
            raise _Corrupt(f"{what} at 0x{obj:x} is not a str object")
        if compact:
            data = obj + (t["unicode.ascii_size"] if ascii_ else t["unicode.compact_size"])
        else:
            data = struct.unpack("<Q", self.block(obj + t["unicode.compact_size"], 8, what))[0]
        n = min(length, MAX_STRING)
        raw = self.mem.read(data, n * kind) if n else b""
        if len(raw) < n * kind:
            raise _Corrupt(f"{what} text at 0x{data:x} is not readable")
        codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        return raw.decode(codec, "replace") + ("..." if length > n else "")

    def bytes_object(self, obj: int, what: str) -> bytes:
        t = self.table
        head = self.block(obj, t["bytes.ob_sval"], what)
        size = struct.unpack_from("<q", head, t["bytes.ob_size"])[0]
        if not 0 <= size <= MAX_TABLE:
            raise _Corrupt(f"{what} at 0x{obj:x} has an implausible size {size}")
        data = self.mem.read(obj + t["bytes.ob_sval"], size) if size else b""
        if len(data) < size:
            raise _Corrupt(f"{what} at 0x{obj:x} is not readable")
        return data

    def code(self, addr: int) -> _Code:
        if addr in self.codes:
            got = self.codes[addr]
            if got is None:
                raise _Corrupt(f"0x{addr:x} is not a readable code object")
            return got
        self.codes[addr] = None
        t = self.table
        name = self.type_name(addr)
        if name != "code":
            raise _Corrupt(f"frame's code pointer 0x{addr:x} is a {name!r} object, not code")
        table_key = "code.co_lnotab" if self.minor <= 9 else "code.co_linetable"
        keys = ["code.co_filename", "code.co_name", "code.co_firstlineno", table_key]
        if self.minor >= 11:
            keys.append("code.co_qualname")
        raw = self.block(addr, self.span(*keys), "code object")
        first = struct.unpack_from("<i", raw, t["code.co_firstlineno"])[0]
        qual = self.string(self.ptr(raw, "code.co_qualname"), "co_qualname") \
            if self.minor >= 11 else None
        code = _Code(
            name=self.string(self.ptr(raw, "code.co_name"), "co_name"),
            qualname=qual,
            file=self.string(self.ptr(raw, "code.co_filename"), "co_filename"),
            first_line=first,
            table=self.bytes_object(self.ptr(raw, table_key), "line table"),
            code_start=addr + t.get("code.co_code_adaptive", 0),
        )
        self.codes[addr] = code
        return code

    def frame(self, code: _Code, address: int, entry: bool) -> PythonFrame:
        """``address``: byte offset of the current instruction in the bytecode."""
        return PythonFrame(function=code.name, file=code.file,
                           line=line_for(self.minor, code.table, code.first_line, address),
                           qualname=code.qualname, first_line=code.first_line, entry=entry)

    # -- frames -------------------------------------------------------------------------------

    def top_frame(self, ts: bytes) -> int:
        if self.minor <= 10:
            return self.ptr(ts, "tstate.frame")
        if self.minor <= 12:
            cframe = self.ptr(ts, "tstate.cframe")
            if not cframe:
                return 0
            return self.ptr(self.block(cframe, self.span("cframe.current_frame"), "cframe"),
                            "cframe.current_frame")
        return self.ptr(ts, "tstate.current_frame")

    def frames(self, top: int) -> tuple[list[PythonFrame], str]:
        out: list[PythonFrame] = []
        seen: set[int] = set()
        addr = top
        note = ""
        try:
            while addr:
                if addr in seen:
                    return out, f"frame chain loops back to 0x{addr:x}"
                if len(out) >= MAX_DEPTH:
                    return out, f"more than {MAX_DEPTH} frames; the rest left out"
                seen.add(addr)
                if self.minor <= 10:
                    addr = self._old_frame(addr, out)
                else:
                    addr = self._interpreter_frame(addr, out)
        except _Corrupt as exc:
            note = str(exc)
        return out, note

    def _old_frame(self, addr: int, out: list[PythonFrame]) -> int:
        t = self.table
        raw = self.block(addr, self.span("frame.f_back", "frame.f_code", "frame.f_lasti"),
                         "frame object")
        code = self.code(self.ptr(raw, "frame.f_code"))
        lasti = struct.unpack_from("<i", raw, t["frame.f_lasti"])[0]
        # 3.9: f_lasti is a byte offset; 3.10: an instruction index. -1: not started.
        address = lasti if self.minor <= 9 or lasti < 0 else lasti * 2
        out.append(self.frame(code, address, True))
        return self.ptr(raw, "frame.f_back")

    def _interpreter_frame(self, addr: int, out: list[PythonFrame]) -> int:
        t = self.table
        keys = ["iframe.previous", "iframe.code", "iframe.instr", "iframe.owner"]
        if self.minor == 11:
            keys.append("iframe.is_entry")
        raw = self.block(addr, self.span(*keys), "interpreter frame")
        previous = self.ptr(raw, "iframe.previous")
        owner = raw[t["iframe.owner"]]
        if self.minor >= 12 and owner >= FIRST_NOT_PYTHON_OWNER:
            # The shim a C-level eval call pushes: the frame above it was that call's first.
            if out and not out[-1].entry:
                out[-1] = _with_entry(out[-1])
            return previous
        code_ptr = self.ptr(raw, "iframe.code")
        if self.minor >= 14:
            code_ptr &= ~3  # a tagged stack reference
        code = self.code(code_ptr)
        instr = self.ptr(raw, "iframe.instr")
        index = (instr - code.code_start) // 2
        entry = bool(raw[t["iframe.is_entry"]]) if self.minor == 11 else False
        out.append(self.frame(code, index * 2 if index >= 0 else -1, entry))
        return previous


def _with_entry(f: PythonFrame) -> PythonFrame:
    return PythonFrame(f.function, f.file, f.line, f.qualname, f.first_line, True)


@dataclass
class Runtime:
    """Where the interpreter lives: _PyRuntime's address and the version (as far as known
    before reading it: 3.13+ say it themselves)."""

    address: int
    hexversion: int = 0  # 0: unknown (only minor known)
    minor: int = 0
    module: str = ""


def read_layout(mem: MemorySource, rt: Runtime) -> tuple[int, int, dict[str, int]]:
    """(minor, hexversion, table) for this runtime, or raises _Corrupt/ValueError."""
    head = mem.read(rt.address, off.DEBUG_OFFSETS_READ)
    got = off.from_debug_offsets(head)
    if got is not None:
        hexversion, table = got
        return off.version_tuple(hexversion)[1], hexversion, table
    if head[:8] == off.DEBUG_COOKIE:
        raise ValueError("the runtime's debug offsets have an unknown layout "
                         "(free-threaded build or a newer CPython)")
    minor = rt.minor or off.version_tuple(rt.hexversion)[1]
    if (3, minor) not in off.TABLES:
        raise ValueError(f"CPython 3.{minor} is not supported (3.9 and later are)")
    return minor, rt.hexversion, off.TABLES[(3, minor)]


def version_text(minor: int, hexversion: int) -> str:
    if hexversion:
        major, mi, micro = off.version_tuple(hexversion)
        return f"{major}.{mi}.{micro}"
    return f"3.{minor}"


def decode(mem: MemorySource, rt: Runtime,
           tid_of_thread_id: Optional[Callable[[int], int]] = None) -> PythonState:
    """Every interpreter's thread states and their Python frames. Never raises for bad
    memory: problems become ``errors`` (and ``note`` on the thread concerned)."""
    try:
        return _decode(mem, rt, tid_of_thread_id)
    except Exception as exc:  # noqa: BLE001 - memory we did not foresee: say so, go on
        return PythonState(version=version_text(rt.minor, rt.hexversion),
                           runtime_address=rt.address, module=rt.module,
                           errors=(f"Python stacks could not be decoded: "
                                   f"{type(exc).__name__}: {exc}",))


def _decode(mem: MemorySource, rt: Runtime,
            tid_of_thread_id: Optional[Callable[[int], int]]) -> PythonState:
    errors: list[str] = []
    try:
        minor, hexversion, table = read_layout(mem, rt)
    except (ValueError, _Corrupt) as exc:
        return PythonState(version=version_text(rt.minor, rt.hexversion),
                           runtime_address=rt.address, module=rt.module, errors=(str(exc),))
    r = _Reader(mem, table, minor, errors)
    threads: list[PythonThread] = []
    gil_tstate = 0
    holder_tid: Optional[int] = None
    tstate_tids: dict[int, int] = {}
    try:
        runtime = r.block(rt.address, r.span(*(k for k in table if k.startswith("runtime."))),
                          "_PyRuntime")
        if minor <= 11:
            locked = struct.unpack_from("<i", runtime, table["runtime.gil_locked"])[0]
            if locked:
                gil_tstate = r.ptr(runtime, "runtime.gil_last_holder")
        interp = r.ptr(runtime, "runtime.interpreters_head")
        if not interp:
            errors.append("no interpreter yet (the runtime is not initialised)")
        seen_interps: set[int] = set()
        index = 0
        while interp and index < MAX_INTERPRETERS and interp not in seen_interps:
            seen_interps.add(interp)
            keys = ["interp.next", "interp.threads_head"]
            if minor >= 12:
                keys.append("interp.ceval_gil")
            ip = r.block(interp, r.span(*keys), "interpreter state")
            if minor >= 12 and index == 0:
                gil = r.ptr(ip, "interp.ceval_gil")
                if gil:
                    g = r.block(gil, r.span("gil.locked", "gil.last_holder"), "GIL state")
                    if struct.unpack_from("<i", g, table["gil.locked"])[0]:
                        gil_tstate = r.ptr(g, "gil.last_holder")
            threads += _threads(r, interp, index, r.ptr(ip, "interp.threads_head"),
                                tid_of_thread_id, tstate_tids)
            interp = r.ptr(ip, "interp.next")
            index += 1
    except _Corrupt as exc:
        errors.append(str(exc))
    if gil_tstate and gil_tstate in tstate_tids:
        holder_tid = tstate_tids[gil_tstate]
        threads = [PythonThread(t.tid, t.thread_id, t.interpreter, True, t.frames, t.note)
                   if t.tid == holder_tid and t.tid else t for t in threads]
    return PythonState(version=version_text(minor, hexversion), runtime_address=rt.address,
                       module=rt.module, threads=tuple(threads), gil_holder=holder_tid,
                       errors=tuple(errors))


def _threads(r: _Reader, interp: int, index: int, head: int,
             tid_of_thread_id: Optional[Callable[[int], int]],
             tstate_tids: dict[int, int]) -> list[PythonThread]:
    out: list[PythonThread] = []
    keys = ["tstate.next", "tstate.interp", "tstate.thread_id"]
    if r.minor <= 10:
        keys.append("tstate.frame")
    elif r.minor <= 12:
        keys += ["tstate.cframe", "tstate.native_thread_id"]
    else:
        keys += ["tstate.current_frame", "tstate.native_thread_id"]
    seen: set[int] = set()
    ts = head
    while ts:
        if ts in seen or len(out) >= MAX_THREADS:
            r.errors.append(f"thread state list of interpreter {index} loops or is too long")
            break
        seen.add(ts)
        raw = r.block(ts, r.span(*keys), "thread state")
        if r.ptr(raw, "tstate.interp") != interp:
            r.errors.append(f"thread state 0x{ts:x} does not belong to interpreter {index}: "
                            "corrupted or being torn down")
            break
        thread_id = r.ptr(raw, "tstate.thread_id")
        tid = r.ptr(raw, "tstate.native_thread_id") if r.minor >= 11 else 0
        if not tid and tid_of_thread_id is not None:
            tid = tid_of_thread_id(thread_id)
        tstate_tids[ts] = tid
        note = ""
        frames: list[PythonFrame] = []
        try:
            top = r.top_frame(raw)
        except _Corrupt as exc:
            top, note = 0, str(exc)
        if top:
            frames, note = r.frames(top)
        out.append(PythonThread(tid=tid, thread_id=thread_id, interpreter=index,
                                frames=tuple(frames), note=note))
        ts = r.ptr(raw, "tstate.next")
    return out


ReadMany = Callable[[list], list]


def thread_states(mem: MemorySource, rt: Runtime) -> Optional["ThreadStates"]:
    """The main interpreter's thread states (address, thread_id), read before a freeze, or
    None when the runtime cannot be read."""
    try:
        minor, _, table = read_layout(mem, rt)
        r = _Reader(mem, table, minor)
        runtime = r.block(rt.address, table["runtime.interpreters_head"] + 8, "_PyRuntime")
        interp = r.ptr(runtime, "runtime.interpreters_head")
        if not interp:
            return None
        ip = r.block(interp, r.span("interp.threads_head"), "interpreter state")
        out: list[tuple[int, int]] = []
        ts = r.ptr(ip, "interp.threads_head")
        while ts and len(out) < MAX_THREADS and all(ts != a for a, _ in out):
            raw = r.block(ts, r.span("tstate.next", "tstate.thread_id"), "thread state")
            out.append((ts, r.ptr(raw, "tstate.thread_id")))
            ts = r.ptr(raw, "tstate.next")
        return ThreadStates(minor, table, out)
    except Exception:  # noqa: BLE001 - no marks then
        return None


@dataclass
class ThreadStates:
    minor: int
    table: dict[str, int]
    states: list[tuple[int, int]]  # (thread state address, thread_id)

    def marks(self, read_many: ReadMany) -> dict[int, tuple[int, int]]:
        """{thread_id: (innermost frame, its instruction position)}: one batched read per
        pointer level (two or three in all, whatever the thread count), so it is cheap
        enough to do while the process is frozen."""
        t = self.table
        if self.minor <= 10:
            levels = ["tstate.frame"]
            where = "frame.f_lasti"
        elif self.minor <= 12:
            levels = ["tstate.cframe", "cframe.current_frame"]
            where = "iframe.instr"
        else:
            levels = ["tstate.current_frame"]
            where = "iframe.instr"
        addrs = [ts for ts, _ in self.states]
        for key in levels + [where]:
            want = [(a + t[key], 8) for a in addrs if a]
            got = iter(read_many(want) if want else [])
            nxt = []
            for a in addrs:
                if not a:
                    nxt.append(0)
                    continue
                data = next(got)
                nxt.append(struct.unpack("<Q", bytes(data[:8]))[0]
                           if data is not None and len(data) >= 8 else 0)
            if key == levels[-1]:
                tops = nxt
            addrs = nxt
        return {tid: (top, pos) for (_, tid), top, pos in zip(self.states, tops, addrs)}


def sequential(mem: MemorySource) -> ReadMany:
    return lambda ranges: [mem.read(a, n) for a, n in ranges]
