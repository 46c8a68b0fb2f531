"""Malformed input: the reader raises MinidumpFormatError with a message saying what is wrong
and where, and nothing else escapes (a fixed-seed mutation fuzz holds it to that)."""

from __future__ import annotations

import random
import struct

import pytest

from generate_dump.minidump import MinidumpFormatError, minidump_bytes, parse, read_minidump
from generate_dump.minidump import format as fmt
from generate_dump.memsource import SnapshotMemory
from generate_dump.sources.minidump_file import MinidumpFileError, read_minidump_snapshot

from synthetic import amd64_snapshot, arm64_snapshot


@pytest.fixture(scope="module")
def good() -> bytes:
    return minidump_bytes(amd64_snapshot(with_exception=True))


def _stream(data: bytes, stream_type: int) -> tuple[int, int]:
    return parse(data).streams[stream_type]


def _dir_entry_offset(data: bytes, stream_type: int) -> int:
    h = fmt.HEADER.unpack(data)
    for i in range(h["stream_count"]):
        off = h["directory_rva"] + i * fmt.DIRECTORY.size
        if struct.unpack_from("<I", data, off)[0] == stream_type:
            return off
    raise KeyError(stream_type)


def _patch(data: bytes, offset: int, fmt_str: str, *values) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<" + fmt_str, buf, offset, *values)
    return bytes(buf)


def _fails(data, *fragments: str) -> str:
    with pytest.raises(MinidumpFormatError) as info:
        parse(data)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_the_unmodified_file_parses(good):
    md = parse(good)
    assert len(md.threads) == 3 and md.exception is not None


def test_empty_input():
    _fails(b"", "0 bytes", "too short")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dmp"
    p.write_bytes(b"")
    with pytest.raises(MinidumpFormatError, match="too short"):
        read_minidump(p)


def test_missing_file(tmp_path):
    with pytest.raises(MinidumpFormatError, match="cannot read .*nope.dmp"):
        read_minidump(tmp_path / "nope.dmp")


def test_wrong_signature(good):
    _fails(b"PAGE" + good[4:], "not a minidump", "signature")
    _fails(b"\x7fELF" + bytes(60), "not a minidump")


def test_wrong_version(good):
    _fails(_patch(good, 4, "I", 0x1234), "unsupported minidump version 0x1234")


def test_truncated_header(good):
    for n in (1, 4, 16, 31):
        _fails(good[:n], f"{n} bytes", "too short")


def test_directory_outside_file(good):
    _fails(_patch(good, 12, "I", len(good) + 100), "stream directory", "outside the file")
    # A stream count that makes the directory run past the end.
    _fails(_patch(good, 8, "I", 4000), "stream directory", "outside the file")


def test_implausible_stream_count(good):
    _fails(_patch(good, 8, "I", 0xFFFFFFFF), "implausible stream count")


def test_directory_cut_off(good):
    # Everything after the first directory entries is gone.
    _fails(good[:32 + 5 * fmt.DIRECTORY.size], "stream directory", "outside the file")


def test_stream_outside_file(good):
    off = _dir_entry_offset(good, fmt.StreamType.MODULE_LIST)
    _fails(_patch(good, off + 8, "I", len(good) + 8), "stream 0x4", "outside the file")
    _fails(_patch(good, off + 4, "I", len(good)), "stream 0x4", "outside the file")


def test_truncated_file_loses_memory_first(good):
    # Bulk memory is last: cutting into it breaks a memory range, not the structure.
    md = parse(good)
    first_memory = min(d.rva for d in md.all_memory())
    _fails(good[:first_memory + 10], "outside the file")


def test_duplicate_stream_types(good):
    off = _dir_entry_offset(good, fmt.StreamType.LINUX_CPU_INFO)
    msg = _fails(_patch(good, off, "I", fmt.StreamType.EXCEPTION), "duplicate stream type 0x6")
    assert "0x6" in msg


def test_unused_stream_entries_are_ignored(good):
    off = _dir_entry_offset(good, fmt.StreamType.LINUX_CPU_INFO)
    md = parse(_patch(good, off, "I", 0))
    assert "cpuinfo" not in md.linux and len(md.threads) == 3


def test_thread_list_count_larger_than_stream(good):
    rva, size = _stream(good, fmt.StreamType.THREAD_LIST)
    _fails(_patch(good, rva, "I", 1000), "ThreadList", "1000 records", f"{size} bytes")
    _fails(_patch(good, rva, "I", 0xFFFFFFFF), "ThreadList")


def test_module_list_count_larger_than_stream(good):
    rva, _ = _stream(good, fmt.StreamType.MODULE_LIST)
    _fails(_patch(good, rva, "I", 4), "ModuleList", "4 records of 108 bytes")


def test_memory_list_count_larger_than_stream(good):
    rva, _ = _stream(good, fmt.StreamType.MEMORY_LIST)
    _fails(_patch(good, rva, "I", 5), "MemoryList", "5 records of 16 bytes")


def test_memory_info_list_header_does_not_fit(good):
    rva, _ = _stream(good, fmt.StreamType.MEMORY_INFO_LIST)
    _fails(_patch(good, rva + 8, "Q", 1 << 40), "MemoryInfoList")
    _fails(_patch(good, rva + 4, "I", 8), "MemoryInfoList")  # entry smaller than 48 bytes


def test_memory_descriptor_outside_file(good):
    rva, _ = _stream(good, fmt.StreamType.MEMORY_LIST)
    # First descriptor: {u64 start; u32 size; u32 rva}
    _fails(_patch(good, rva + 4 + 8, "I", 0x7FFFFFFF), "memory at 0x", "outside the file")


def test_stack_outside_file(good):
    rva, _ = _stream(good, fmt.StreamType.THREAD_LIST)
    _fails(_patch(good, rva + 4 + 36, "I", len(good)), "stack of thread 1000", "outside the file")


def test_bad_string_length(good):
    rva, _ = _stream(good, fmt.StreamType.MODULE_LIST)
    name_rva = struct.unpack_from("<I", good, rva + 4 + 20)[0]
    _fails(_patch(good, name_rva, "I", 7), "module name", "bad length 7")  # odd
    _fails(_patch(good, name_rva, "I", 1 << 24), "module name", "bad length")  # huge
    _fails(_patch(good, name_rva, "I", 1 << 16), "module name", "outside the file")


def test_bad_thread_name_string(good):
    rva, _ = _stream(good, fmt.StreamType.THREAD_NAME_LIST)
    name_rva = struct.unpack_from("<Q", good, rva + 4 + 4)[0]
    _fails(_patch(good, name_rva, "I", 3), "thread name", "bad length 3")
    _fails(_patch(good, rva + 4 + 4, "Q", 1 << 40), "thread name", "outside the file")


def test_bad_csd_version_string(good):
    rva, _ = _stream(good, fmt.StreamType.SYSTEM_INFO)
    _fails(_patch(good, rva + 24, "I", len(good) + 4), "CSD version", "outside the file")


def test_context_smaller_than_architecture(good):
    rva, _ = _stream(good, fmt.StreamType.THREAD_LIST)
    msg = _fails(_patch(good, rva + 4 + 40, "I", 716), "CONTEXT_AMD64", "1232", "716")
    assert msg.startswith("stream 0x3")


def test_arm64_context_smaller_than_architecture():
    data = minidump_bytes(arm64_snapshot())
    rva, _ = _stream(data, fmt.StreamType.THREAD_LIST)
    _fails(_patch(data, rva + 4 + 40, "I", 900), "CONTEXT_ARM64", "912", "900")


def test_exception_context_smaller_than_architecture(good):
    rva, _ = _stream(good, fmt.StreamType.EXCEPTION)
    _fails(_patch(good, rva + 160, "I", 100), "stream 0x6", "CONTEXT_AMD64", "100")


def test_context_without_system_info(good):
    off = _dir_entry_offset(good, fmt.StreamType.SYSTEM_INFO)
    _fails(_patch(good, off, "I", 0x12345), "without a SystemInfo")


def test_unknown_architecture_and_platform(good):
    rva, _ = _stream(good, fmt.StreamType.SYSTEM_INFO)
    # (0x8003, Breakpad's old arm64, is supported: see test_breakpad_old_arm64_context_is_read)
    _fails(_patch(good, rva, "H", 0x1234), "unsupported processor architecture 0x1234")
    _fails(_patch(good, rva, "H", 0x8004), "unsupported processor architecture 0x8004")
    _fails(_patch(good, rva + 20, "I", 0x9999), "unknown platform id 0x9999")


def test_bad_misc_info_size(good):
    rva, _ = _stream(good, fmt.StreamType.MISC_INFO)
    _fails(_patch(good, rva, "I", 100), "MiscInfo", "unknown size 100")
    _fails(_patch(good, rva, "I", 1364), "MiscInfo", "1364")  # bigger than the stream


def test_bad_codeview_record(good):
    rva, _ = _stream(good, fmt.StreamType.MODULE_LIST)
    cv_rva = struct.unpack_from("<I", good, rva + 4 + 80)[0]
    _fails(_patch(good, cv_rva, "I", 0x11223344), "stream 0x4", "CodeView signature 0x11223344")
    _fails(_patch(good, rva + 4 + 76, "I", 2), "stream 0x4", "too short")
    # RSDS shorter than its 24-byte header.
    _fails(_patch(_patch(good, cv_rva, "I", fmt.CV_SIGNATURE_RSDS), rva + 4 + 76, "I", 12),
           "RSDS record of 12 bytes")


def test_bad_soft_errors(good):
    rva, size = _stream(good, fmt.StreamType.MOZ_SOFT_ERRORS)
    _fails(_patch(good, rva, "c", b"{"), "soft errors", "not JSON")
    _fails(_patch(good, rva, "2s", b"\xff\xfe"), "soft errors")
    obj = b'{"a": 1}'.ljust(size)
    _fails(_patch(good, rva, f"{size}s", obj), "not a JSON list")


def test_bad_dso_debug(good):
    rva, _ = _stream(good, fmt.StreamType.LINUX_DSO_DEBUG)
    _fails(_patch(good, rva + 8, "I", 1 << 30), "DsoDebug claims")
    _fails(_patch(good, rva + 4, "I", len(good)), "link map", "outside the file")


def test_memory64_list_count_larger_than_stream():
    from generate_dump.minidump import WriteOptions

    data = minidump_bytes(amd64_snapshot(), WriteOptions(memory64=True))
    rva, size = _stream(data, fmt.StreamType.MEMORY64_LIST)
    _fails(_patch(data, rva, "Q", 100), "Memory64List claims 100 ranges", f"{size} bytes")
    # Ranges that run past the end of the file.
    _fails(_patch(data, rva + 16 + 8, "Q", 1 << 33), "memory64 at 0x", "outside the file")


# -- mutation fuzz ---------------------------------------------------------------------------

def _mutations(base: bytes, rng: random.Random, n: int):
    structure_end = min(d.rva for d in parse(base).all_memory())
    for _ in range(n):
        data = bytearray(base)
        kind = rng.random()
        if kind < 0.15:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 8)):
                # Mostly hit the structure (headers, records, strings); memory bytes are inert.
                pos = rng.randrange(structure_end if rng.random() < 0.9 else len(data))
                r = rng.random()
                if r < 0.4:
                    data[pos] ^= 1 << rng.randrange(8)
                elif r < 0.7:
                    data[pos] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
                else:
                    word = rng.choice((0, 0xFFFFFFFF, 0x80000000, len(base), len(base) - 1,
                                       rng.randrange(1 << 32)))
                    pos = min(pos - pos % 4, len(data) - 4)
                    struct.pack_into("<I", data, pos, word)
        yield bytes(data)


@pytest.mark.parametrize("make, seed", [
    (lambda: amd64_snapshot(with_exception=True), 1234),
    (arm64_snapshot, 5678),
])
def test_mutation_fuzz(make, seed):
    base = minidump_bytes(make())
    rng = random.Random(seed)
    outcomes = {"ok": 0, "error": 0}
    for data in _mutations(base, rng, 300):
        try:
            snap = read_minidump_snapshot(data)
            mem = SnapshotMemory(snap)
            mem.read(0x60000000, 10)
            for m in snap.memory:
                mem.read(m.start, m.size)
            assert snap.system is not None
        except MinidumpFileError as exc:
            assert str(exc), "an error needs a message"
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    # The loop must exercise both outcomes to mean anything.
    assert outcomes["ok"] > 10 and outcomes["error"] > 10, outcomes


def test_deeply_nested_soft_errors_json(good):
    """json.loads raises RecursionError (not ValueError) on deep nesting; that must still
    come out as MinidumpFormatError."""
    payload = b"[" * 100_000
    off = _dir_entry_offset(good, fmt.StreamType.MOZ_SOFT_ERRORS)
    data = _patch(good, off + 4, "II", len(payload), len(good)) + payload
    _fails(data, "soft errors")


def test_mutation_fuzz_of_a_real_dump(tmp_path):
    """Mutations of a dump of a live process: parse or MinidumpFormatError, never a hang,
    never another exception, never unbounded memory."""
    import signal
    import sys
    import tracemalloc

    if not sys.platform.startswith("linux"):
        pytest.skip("needs the Linux backend to make a real dump")
    from live import Target, compile_program, run_dumper

    binary = compile_program("threads", tmp_path)
    with Target([binary, "5"]) as target:
        out = tmp_path / "real.dmp"
        run_dumper(target.pid, "-o", out)
    base = out.read_bytes()
    rng = random.Random(4242)
    outcomes = {"ok": 0, "error": 0}

    def hung(*_):
        raise AssertionError("the reader hung on a mutated file")

    old = signal.signal(signal.SIGALRM, hung)
    tracemalloc.start()
    try:
        for data in _mutations(base, rng, 300):
            signal.alarm(10)
            try:
                read_minidump_snapshot(data)
            except MinidumpFileError as exc:
                assert str(exc)
                outcomes["error"] += 1
            else:
                outcomes["ok"] += 1
            finally:
                signal.alarm(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, old)
    assert outcomes["ok"] > 10 and outcomes["error"] > 10, outcomes
    # The file is a few hundred KiB; parsing it must not blow up on lying counts.
    assert peak < 64 * 1024 * 1024, f"peak {peak} bytes"


def test_breakpad_old_arm64_context_is_read():
    """Breakpad's Linux client writes arm64 dumps with architecture 0x8003 and its old
    796-byte context; the reader understands them (rust-minidump agrees)."""
    from synthetic import arm64_snapshot
    from generate_dump.minidump.format import CONTEXT_ARM64_OLD_RECORD, SYSTEM_INFO, THREAD

    snap = arm64_snapshot()
    data = bytearray(minidump_bytes(snap))
    rva, _ = _stream(bytes(data), fmt.StreamType.SYSTEM_INFO)
    struct.pack_into("<H", data, rva + SYSTEM_INFO.offset("processor_architecture"), 0x8003)
    trva, _ = _stream(bytes(data), fmt.StreamType.THREAD_LIST)
    for i, t in enumerate(snap.threads):
        c = t.context
        old = CONTEXT_ARM64_OLD_RECORD.pack(
            context_flags=0x80000007, iregs=list(c.x) + [c.fp, c.lr, c.sp], pc=c.pc,
            cpsr=c.cpsr, fpsr=c.fpsr, fpcr=c.fpcr,
            v=b"".join(q.to_bytes(16, "little") for q in c.v))
        assert len(old) == 796
        while len(data) % 16:
            data.append(0)
        at = len(data)
        data += old
        rec = trva + 4 + i * THREAD.size
        struct.pack_into("<II", data, rec + THREAD.offset("context_size"), len(old), at)
    md = parse(bytes(data))
    assert [t.context for t in md.threads] == [t.context for t in snap.threads]
