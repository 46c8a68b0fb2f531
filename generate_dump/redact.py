"""``--redact``: a snapshot transform that leaves a dump safe to upload, and unwindable.

It runs between a source and a sink (the minidump writer, ``convert``), after the target
runs again; nothing here touches the process.

- Thread stacks, and captured memory windows (``referenced``), keep only the words that
  point into mapped memory (code, stacks, heap: what unwinders and debuggers follow) and
  zero words; every other word becomes :data:`~generate_dump.secrets.MARKER`
  (``0x0defaced``, Crashpad's sanitization value). Ranges keep their addresses and sizes,
  so SP, the red zone and every frame stay where they were.
- Memory read while the dump is written (``full``) is searched for secrets by
  :mod:`generate_dump.secrets` while it streams, and each one is overwritten in place
  with the marker pattern; everything else is kept byte for byte.
- The command line, thread names, ``/proc/PID/status`` and an included environment are
  searched the same way; a secret there becomes ``*`` characters.
- What was changed goes in our ``GD_REDACTION`` stream: counts per area and kind, never
  a value.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, cast

from . import secrets
from .snapshot import Arch, ExtraStream, LazyMemory, Memory, MemoryRange, Snapshot

STREAM_SIZE = 4096  # bytes reserved for the GD_REDACTION stream (JSON padded with spaces)


@dataclass
class RedactionReport:
    """Counts of what redaction changed; rendered as the GD_REDACTION stream."""

    stack_words: int = 0  # stack words replaced by the marker
    memory_words: int = 0  # words of captured memory windows replaced by the marker
    full_memory_bytes: int = 0  # bytes of streamed memory overwritten
    found: dict[str, dict[str, int]] = field(default_factory=dict)  # area -> kind -> count
    memory_complete: bool = True  # False until streamed memory has all been scanned

    def add(self, area: str, kind: str, n: int = 1) -> None:
        per = self.found.setdefault(area, {})
        per[kind] = per.get(kind, 0) + n

    def total_found(self) -> int:
        return sum(sum(v.values()) for v in self.found.values())

    def to_json(self) -> dict:
        return {
            "version": 1,
            "marker": f"0x{secrets.MARKER:08x}",
            "stack_words_replaced": self.stack_words,
            "memory_words_replaced": self.memory_words,
            "full_memory_bytes_overwritten": self.full_memory_bytes,
            "full_memory_scan_complete": self.memory_complete,
            "secrets_found": {a: dict(sorted(k.items())) for a, k in sorted(self.found.items())},
        }

    def render(self, final: bool = False) -> bytes:
        """The stream's bytes; ``final`` once all memory has been written (and scanned)."""
        if final:
            self.memory_complete = True
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        if len(data) > STREAM_SIZE:  # cannot happen with the fixed set of areas and kinds
            raise ValueError("redaction record larger than its reserved space")
        return data.ljust(STREAM_SIZE, b" ")


class _Mapped:
    """Is a value an address inside some mapping? (sorted, merged intervals + bisect)"""

    def __init__(self, intervals):
        merged: list[list[int]] = []
        for a, b in sorted(intervals):
            if b <= a:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value < self.ends[i]


def _mapped_of(snapshot: Snapshot) -> _Mapped:
    spans = [(r.start, r.end) for r in snapshot.regions]
    if not spans:  # a dump without a memory map: what it holds is what is known
        spans = [(m.base, m.end) for m in snapshot.modules]
        spans += [(t.stack.start, t.stack.end) for t in snapshot.threads if t.stack]
        spans += [(m.start, m.end) for m in snapshot.memory]
    return _Mapped(spans)


def sanitize_words(start: int, data: bytes, mapped: _Mapped, word: int = 8) -> tuple[bytes, int]:
    """``data`` (at address ``start``) with every word that is neither zero nor an address
    in ``mapped`` replaced by the marker; returns (new bytes, words replaced).

    Words are aligned to addresses; a partial word at either end is treated the same."""
    n = len(data)
    if not n:
        return data, 0
    marker = secrets.MARKER
    head = (-start) % word
    head = min(head, n)
    body_len = (n - head) // word * word
    code = "Q" if word == 8 else "I"
    words = array(code)
    words.frombytes(bytes(data[head:head + body_len]))
    replaced = 0
    out: list[int] = []
    append = out.append
    starts, ends = mapped.starts, mapped.ends
    bisect_right = bisect.bisect_right
    for w in words:
        if w == 0 or w == marker:
            append(w)
            continue
        i = bisect_right(starts, w) - 1
        if i >= 0 and w < ends[i]:
            append(w)
        else:
            append(marker)
            replaced += 1
    body = array(code, out).tobytes()
    pieces = []
    if head:
        part = bytes(data[:head])
        if any(part):
            part = secrets.MARKER_BYTES[word - head:word] if word == 8 else \
                marker.to_bytes(4, "little")[4 - head:]
            replaced += 1
        pieces.append(part)
    pieces.append(body)
    tail = bytes(data[head + body_len:])
    if tail:
        if any(tail):
            tail = secrets.MARKER_BYTES[:len(tail)]
            replaced += 1
        pieces.append(tail)
    return b"".join(pieces), replaced


def mask_text(text: str, report: RedactionReport, area: str) -> str:
    """``text`` with every secret replaced by as many ``*``."""
    spans = sorted((a, b, kind) for kind, a, b, _ in secrets.find_in_text(text))
    if not spans:
        return text
    out = list(text)
    for a, b, kind in spans:
        report.add(area, kind)
        out[a:b] = "*" * (b - a)
    return "".join(out)


def _mask_fields(raw: bytes, sep: bytes, report: RedactionReport, area: str) -> bytes:
    """A NUL- or newline-separated text (cmdline, environ, status), each field masked."""
    fields = raw.split(sep)
    out = []
    for f in fields:
        text = f.decode("latin-1")
        out.append(mask_text(text, report, area).encode("latin-1"))
    return sep.join(out)


def _count_secrets(data: bytes, report: RedactionReport, area: str) -> None:
    for finding in secrets.find_secrets(data):
        report.add(area, finding.kind)


class RedactingMemory:
    """A :class:`LazyMemory` stand-in whose bytes come out with secrets overwritten.

    Each chunk is searched together with up to :data:`secrets.MAX_SECRET` bytes before
    and after it (read from the source, not emitted), so a secret that crosses a chunk
    or slice edge is still found whole and the part inside this chunk overwritten."""

    def __init__(self, inner: LazyMemory, report: RedactionReport):
        self.inner = inner
        self.report = report

    @property
    def start(self) -> int:
        return self.inner.start

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def end(self) -> int:
        return self.inner.end

    def slice(self, lo: int, hi: int) -> "RedactingMemory":
        return RedactingMemory(self.inner.slice(lo, hi), self.report)

    def _peek(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            return self.inner.read(addr, size)
        except Exception:  # a context read that fails only narrows the search
            return b""

    def chunks(self, size: int = 4 << 20) -> Iterator[bytes]:
        k = secrets.MAX_SECRET
        addr = self.inner.start
        before = self._peek(max(0, addr - k), min(k, addr))
        for chunk in self.inner.chunks(size):
            n = len(chunk)
            after = self._peek(addr + n, k)
            window = before + bytes(chunk) + after
            lo = len(before)
            hits = [f for f in secrets.find_secrets(window)
                    if f.end > lo and f.start < lo + n]
            if hits:
                out = bytearray(window[lo:lo + n])
                for f in hits:
                    a, b = max(f.start, lo) - lo, min(f.end, lo + n) - lo
                    out[a:b] = secrets.fill(b - a, addr + a)
                    self.report.full_memory_bytes += b - a
                    if f.start >= lo:  # count each secret once: in the chunk it starts in
                        self.report.add("full-memory", f.kind)
                data = bytes(out)
            else:
                data = window[lo:lo + n]
            before = window[max(0, lo + n - k):lo + n]  # original bytes, for the next search
            addr += n
            yield data


def redact_snapshot(snapshot: Snapshot) -> tuple[Snapshot, RedactionReport]:
    """The snapshot as --redact writes it, and the report of what changed (which keeps
    counting while streamed memory is written: the GD_REDACTION stream is final after)."""
    report = RedactionReport()
    mapped = _mapped_of(snapshot)
    word = 4 if snapshot.system.arch == Arch.X86 else 8

    threads = []
    for t in snapshot.threads:
        stack = t.stack
        if stack is not None and stack.data:
            _count_secrets(stack.data, report, "stack")
            data, n = sanitize_words(stack.start, stack.data, mapped, word)
            report.stack_words += n
            stack = MemoryRange(stack.start, data)
        name = mask_text(t.name, report, "thread-name") if t.name else t.name
        threads.append(dataclasses.replace(t, stack=stack, name=name))

    memory: list[Memory] = []
    for m in snapshot.memory:
        if isinstance(m, MemoryRange):
            _count_secrets(m.data, report, "memory")
            data, n = sanitize_words(m.start, m.data, mapped, word)
            report.memory_words += n
            memory.append(MemoryRange(m.start, data))
        else:
            report.memory_complete = False
            # A LazyMemory stand-in (start, size, end, slice, chunks): what sinks use.
            memory.append(cast(LazyMemory, RedactingMemory(m, report)))

    process = dataclasses.replace(
        snapshot.process,
        command_line=tuple(mask_text(a, report, "command-line")
                           for a in snapshot.process.command_line))
    linux = snapshot.linux
    if linux is not None:
        changes: dict[str, Any] = {}
        if linux.cmdline is not None:
            # Count once: the cmdline stream and Process.command_line hold the same text.
            scratch = RedactionReport()
            changes["cmdline"] = _mask_fields(linux.cmdline, b"\0", scratch, "command-line")
            if not snapshot.process.command_line:
                for area, kinds in scratch.found.items():
                    for kind, n in kinds.items():
                        report.add(area, kind, n)
        if linux.environ is not None:
            changes["environ"] = _mask_fields(linux.environ, b"\0", report, "environment")
        if linux.status is not None:
            changes["status"] = _mask_fields(linux.status, b"\n", report, "proc-status")
        linux = dataclasses.replace(linux, **changes)

    redacted = dataclasses.replace(snapshot, threads=tuple(threads), memory=tuple(memory),
                                   process=process, linux=linux)
    redacted = with_report_stream(redacted, report)
    return redacted, report


def with_report_stream(snapshot: Snapshot, report: RedactionReport) -> Snapshot:
    from .minidump.format import StreamType

    stream = ExtraStream(StreamType.GD_REDACTION, report.render, STREAM_SIZE)
    return dataclasses.replace(snapshot, extra_streams=snapshot.extra_streams + (stream,))


def read_report(md) -> Optional[dict]:
    """The GD_REDACTION record of a parsed minidump, or None when it has none."""
    from .minidump.format import StreamType

    where = md.streams.get(StreamType.GD_REDACTION)
    if where is None:
        return None
    rva, size = where
    try:
        return json.loads(bytes(md.data[rva:rva + size]).decode())
    except (UnicodeDecodeError, ValueError):
        return None


# -- redacting a written file in place (full dumps of a held process) ----------------------


def placeholder(snapshot: Snapshot) -> tuple[Snapshot, RedactionReport]:
    """The snapshot unchanged but for an (empty) GD_REDACTION stream: for a dump that
    :func:`redact_file` will redact in place once the process runs again."""
    from .minidump.format import StreamType

    report = RedactionReport(memory_complete=False)
    # Rendered as "not complete" by the writer; redact_file writes the final record.
    stream = ExtraStream(StreamType.GD_REDACTION, lambda final: report.render(False),
                         STREAM_SIZE)
    return dataclasses.replace(snapshot, extra_streams=snapshot.extra_streams + (stream,)), \
        report


def redact_file(fd: int, report: RedactionReport) -> None:
    """Redact the minidump open (read-write) as ``fd`` in place, as :func:`redact_snapshot`
    would have: stacks and MemoryList windows word-sanitized, Memory64List memory searched
    and secrets overwritten, thread names and Linux text streams masked (same lengths),
    then the GD_REDACTION stream rewritten with the counts.

    Used for full dumps of a frozen process: they are written while the process is
    stopped, exactly as without --redact, and redacted after it runs again, so the
    freeze does not grow. The file is still the unnamed temporary one: nothing unredacted
    ever carries the output's name."""
    import mmap
    import os
    import struct

    from .minidump import format as fmt
    from .minidump.reader import parse

    size = os.fstat(fd).st_size
    mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
    try:
        md = parse(mm)
        mapped = _Mapped([(r.start, r.end) for r in md.regions]
                         or [(m.base, m.end) for m in md.modules])
        word = 4 if md.system is not None and md.system.arch == Arch.X86 else 8
        stacks = set()
        for t in md.threads:
            d = t.stack
            if d is None or not d.size:
                continue
            stacks.add(d.rva)
            data = bytes(mm[d.rva:d.rva + d.size])
            _count_secrets(data, report, "stack")
            new, n = sanitize_words(d.start, data, mapped, word)
            report.stack_words += n
            mm[d.rva:d.rva + d.size] = new
        for d in md.memory:
            if d.rva in stacks:
                continue
            data = bytes(mm[d.rva:d.rva + d.size])
            _count_secrets(data, report, "memory")
            new, n = sanitize_words(d.start, data, mapped, word)
            report.memory_words += n
            mm[d.rva:d.rva + d.size] = new
        _redact_memory64(fd, md.memory64, report)
        names = md.streams.get(fmt.StreamType.THREAD_NAME_LIST)
        if names is not None:
            rva, _ = names
            (count,) = struct.unpack_from("<I", mm, rva)
            for i in range(count):
                rec = fmt.THREAD_NAME.unpack(mm, rva + 4 + i * fmt.THREAD_NAME.size)
                at = rec["name_rva"]
                (length,) = struct.unpack_from("<I", mm, at)
                text = bytes(mm[at + 4:at + 4 + length]).decode("utf-16-le", "surrogatepass")
                masked = mask_text(text, report, "thread-name")
                if masked != text:
                    mm[at + 4:at + 4 + length] = masked.encode("utf-16-le", "surrogatepass")
        for st, sep, area in ((fmt.StreamType.LINUX_CMD_LINE, b"\0", "command-line"),
                              (fmt.StreamType.LINUX_ENVIRON, b"\0", "environment"),
                              (fmt.StreamType.LINUX_PROC_STATUS, b"\n", "proc-status")):
            where = md.streams.get(st)
            if where is not None:
                rva, n = where
                mm[rva:rva + n] = _mask_fields(bytes(mm[rva:rva + n]), sep, report, area)
        where = md.streams.get(fmt.StreamType.GD_REDACTION)
        if where is not None:
            rva, n = where
            mm[rva:rva + n] = report.render(final=True).ljust(n, b" ")[:n]
        mm.flush()
    finally:
        mm.close()


def _redact_memory64(fd: int, descriptors, report: RedactionReport,
                     piece: int = 16 << 20) -> None:
    """Search Memory64List memory piece by piece (with MAX_SECRET bytes of context on both
    sides) and overwrite each secret with the marker pattern. pread/pwrite, not the
    mapping: the dumper's memory stays one piece, whatever the dump's size."""
    import os

    from .minidump.reader import MemoryDescriptor

    k = secrets.MAX_SECRET
    merged: list = []  # address- and file-adjacent ranges as one: secrets may straddle
    for d in sorted(descriptors, key=lambda d: d.rva):
        last = merged[-1] if merged else None
        if last is not None and last.end == d.start and last.rva + last.size == d.rva:
            merged[-1] = MemoryDescriptor(last.start, last.size + d.size, last.rva)
        else:
            merged.append(d)
    for d in merged:
        for lo in range(0, d.size, piece):
            hi = min(d.size, lo + piece)
            ctx_lo, ctx_hi = max(0, lo - k), min(d.size, hi + k)
            window = os.pread(fd, ctx_hi - ctx_lo, d.rva + ctx_lo)
            for f in secrets.find_secrets(window, base=ctx_lo):
                if f.end <= lo or f.start >= hi:
                    continue
                a, b = max(f.start, lo), min(f.end, hi)
                os.pwrite(fd, secrets.fill(b - a, d.start + a), d.rva + a)
                report.full_memory_bytes += b - a
                if f.start >= lo:
                    report.add("full-memory", f.kind)
