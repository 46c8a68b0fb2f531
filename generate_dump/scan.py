"""``generate_dump scan FILE``: which secret-looking values a minidump holds, before it is
uploaded anywhere.

The whole file is searched (so nothing escapes: streams we do not know, strings between
streams), with the detectors --redact uses (generate_dump/secrets.py); each finding is
then placed: memory (stack of thread T, MemoryList, Memory64List) with its address, a
stream with the offset in it, or a bare file offset. Values are shown masked.

Exit status: 0 nothing found, 3 something found, 1 error (CI can refuse to upload on 3).
"""

from __future__ import annotations

import bisect
import json
import sys
from dataclasses import dataclass
from typing import Iterator, Optional

import click

PROG = "generate_dump scan"
FOUND_EXIT = 3
CHUNK = 16 << 20


@dataclass(frozen=True)
class Place:
    """Where a file offset lies: a stream, and an address when it is memory."""

    stream: str
    address: Optional[int] = None  # process address, for memory
    offset: Optional[int] = None  # offset inside the stream, for other streams
    thread_id: Optional[int] = None


def _stream_name(stream_type: int) -> str:
    from .minidump.format import StreamType

    try:
        return "".join(w.capitalize() for w in StreamType(stream_type).name.split("_"))
    except ValueError:
        return f"0x{stream_type:08x}"


class _Locator:
    """File offset -> Place: memory descriptors first, then streams' own bytes."""

    def __init__(self, md):
        from .minidump.format import StreamType

        items: list[tuple[int, int, tuple[str, int, Optional[int]]]] = []  # (rva, end, what)
        stacks = set()
        for t in md.threads:
            if t.stack is not None and t.stack.size:
                items.append((t.stack.rva, t.stack.rva + t.stack.size,
                              ("ThreadList", t.stack.start, t.tid)))
                stacks.add(t.stack.rva)
        for d in md.memory:
            if d.rva not in stacks:
                items.append((d.rva, d.end - d.start + d.rva, ("MemoryList", d.start, None)))
        for d in md.memory64:
            items.append((d.rva, d.rva + d.size, ("Memory64List", d.start, None)))
        self.memory = sorted(items, key=lambda x: x[0])
        # Strings that live outside their stream's range: thread names.
        self.names: list[tuple[int, int, int]] = []  # (rva, end, thread id)
        where = md.streams.get(StreamType.THREAD_NAME_LIST)
        if where is not None:
            import struct

            from .minidump import format as fmt

            rva, size = where
            try:
                (count,) = struct.unpack_from("<I", md.data, rva)
                for i in range(min(count, (size - 4) // fmt.THREAD_NAME.size)):
                    rec = fmt.THREAD_NAME.unpack(md.data, rva + 4 + i * fmt.THREAD_NAME.size)
                    (length,) = struct.unpack_from("<I", md.data, rec["name_rva"])
                    self.names.append((rec["name_rva"], rec["name_rva"] + 4 + length,
                                       rec["thread_id"]))
            except struct.error:
                self.names = []
        self.memory_starts = [x[0] for x in self.memory]
        streams = sorted((rva, rva + size, st) for st, (rva, size) in md.streams.items()
                         if st not in (StreamType.MEMORY_LIST, StreamType.MEMORY64_LIST))
        self.streams = streams
        self.stream_starts = [x[0] for x in streams]

    def place(self, offset: int) -> Place:
        i = bisect.bisect_right(self.memory_starts, offset) - 1
        if i >= 0:
            rva, end, (stream, start, tid) = self.memory[i]
            if offset < end:
                return Place(stream, address=start + offset - rva, thread_id=tid)
        for rva, end, tid in self.names:
            if rva <= offset < end:
                return Place("ThreadNameList", offset=offset - rva, thread_id=tid)
        i = bisect.bisect_right(self.stream_starts, offset) - 1
        if i >= 0:
            rva, end, st = self.streams[i]
            if offset < end:
                return Place(_stream_name(st), offset=offset - rva)
        return Place("file", offset=offset)


def scan_bytes(data) -> Iterator:
    """Findings (secrets.Finding, offsets into ``data``) over a large buffer, piece by
    piece with overlap, each secret reported once."""
    from . import secrets

    mv = memoryview(data).cast("B")
    n = len(mv)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        ctx = max(0, lo - secrets.MAX_SECRET)
        for f in secrets.find_secrets(mv[ctx:min(n, hi + secrets.MAX_SECRET)], base=ctx):
            if lo <= f.start < hi:
                yield f


def scan_file(path: str) -> list[dict]:
    """Every secret-looking value in the minidump at ``path``, as report dictionaries."""
    import mmap

    from .minidump.reader import MinidumpFormatError, read_minidump

    try:
        md = read_minidump(path)
        data, locator = md.data, _Locator(md)
    except MinidumpFormatError as exc:
        # A minidump our reader refuses (LLDB writes one Exception stream per stopped
        # thread, say) is still searched whole; findings then carry file offsets only.
        with open(path, "rb") as f:
            if f.read(4) != b"MDMP":
                raise
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        click.echo(f"{PROG}: warning: {exc}; searching the file as raw bytes", err=True)
        locator = None
    out = []
    seen: set[tuple[int, int]] = set()
    for f in scan_bytes(data):
        if (f.start, f.end) in seen:
            continue
        seen.add((f.start, f.end))
        p = locator.place(f.start) if locator is not None else Place("file", offset=f.start)
        item = {"kind": f.kind, "stream": p.stream, "file_offset": f.start,
                "encoding": f.encoding, "length": len(f.value), "masked": f.masked()}
        if p.address is not None:
            item["address"] = f"0x{p.address:x}"
        if p.offset is not None and p.stream != "file":
            item["stream_offset"] = p.offset
        if p.thread_id is not None:
            item["thread_id"] = p.thread_id
        out.append(item)
    return out


def _text(path: str, findings: list[dict]) -> str:
    if not findings:
        return f"{path}: no secret-looking values found"
    lines = [f"{path}: {len(findings)} secret-looking value(s) found"]
    for f in findings:
        where = f["stream"]
        if "thread_id" in f:
            what = "name" if f["stream"] == "ThreadNameList" else "stack"
            where += f" ({what} of thread {f['thread_id']})"
        if "address" in f:
            where += f" at {f['address']}"
        elif "stream_offset" in f:
            where += f" +0x{f['stream_offset']:x}"
        else:
            where += f" offset 0x{f['file_offset']:x}"
        lines.append(f"  {f['kind']:<22} {where:<48} {f['masked']} [{f['encoding']}]")
    return "\n".join(lines)


@click.command(name="scan", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def scan_command(file: str, as_json: bool) -> None:
    """Report secret-looking values in the minidump FILE (ours or another tool's):
    AWS keys, GitHub/GitLab/Slack tokens, JWTs, PEM private keys, password assignments
    and high-entropy strings, as ASCII or UTF-16LE; where each is (stream, address) and
    its value masked. Exit status: 0 nothing found, 3 found, 1 error."""
    findings = scan_file(file)
    if as_json:
        click.echo(json.dumps({"file": file, "count": len(findings), "findings": findings},
                              indent=2))
    else:
        click.echo(_text(file, findings))
    sys.exit(FOUND_EXIT if findings else 0)


def scan_main(args: list[str]) -> None:
    from .errors import DumpError
    from .minidump.reader import MinidumpFormatError

    def fail(msg: str):
        click.echo(f"{PROG}: error: {msg}", err=True)
        sys.exit(1)

    try:
        scan_command.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.exceptions.UsageError as exc:
        fail(f"{exc.format_message()} (see '{PROG} --help')")
    except (MinidumpFormatError, DumpError) as exc:
        fail(str(exc))
    except BrokenPipeError:
        sys.exit(1)
    except (OSError, ValueError, MemoryError) as exc:
        fail(f"cannot scan {args[-1] if args else 'the file'}: {exc}")
    sys.exit(0)
