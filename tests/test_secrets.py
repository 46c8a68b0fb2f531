"""The detectors and the redaction transform on bytes built here (no process needed)."""

from __future__ import annotations

import dataclasses
import io
import random
import struct

from hypothesis import given, settings, strategies as st

from planted import KINDS, make
from generate_dump import secrets
from generate_dump.minidump.reader import parse
from generate_dump.minidump.writer import WriteOptions, write_minidump
from generate_dump.redact import (RedactingMemory, RedactionReport, _Mapped, mask_text,
                                  read_report, redact_snapshot, sanitize_words)
from generate_dump.snapshot import LazyMemory
from synthetic import amd64_snapshot as synthetic_snapshot


def _kinds(data: bytes) -> list[str]:
    return [f.kind for f in secrets.find_secrets(data)]


def test_every_kind_found_ascii_and_utf16_in_binary_noise():
    rng = random.Random(7)
    for kind in KINDS:
        text, value = make(kind, rng)
        for enc in ("ascii", "utf-16-le"):
            # UTF-16 text at an even offset, as wchar_t arrays are (secrets._busy_spans)
            data = bytes(rng.randrange(256) for _ in range(300)) + b"\0\0" \
                + text.encode(enc) + b"\0" + bytes(rng.randrange(256) for _ in range(300))
            found = [f for f in secrets.find_secrets(data) if f.kind == kind]
            assert found, (kind, enc)
            f = found[0]
            width = 2 if enc != "ascii" else 1
            assert data[f.start:f.end].decode(enc) == (value if kind != "pem-private-key"
                                                       else text)
            assert f.encoding == ("ascii" if enc == "ascii" else "utf-16le")
            assert (f.end - f.start) == len(f.value) * width or kind == "pem-private-key"


def test_ordinary_text_is_not_a_secret():
    quiet = [
        b"password = None", b"password=getpass.getpass()", b"passwd = HTTPPasswordMgr",
        b"getpass = fallback_getpass", b"api_key=%s", b"password: ${PASSWORD}",
        b"_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE10_M_replaceEmmPKcm",
        b"sun/jvm/hotspot/debugger/win32/coff/COFFSymbolConstants",
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/",
        b"0123456789abcdef0123456789abcdef0123456789abcdef",  # hex: a hash, not a key
        b"https://docs.python.org/3/library/secrets.html#module-secrets",
        b"-----BEGIN CERTIFICATE-----\nMIIDMjCCAhqgAwIBAgIUSr5acxyjissxoU6rCHUf5QfHBwAwDQYJKoZIhvcNAQEL\n"
        b"BQAwHzEdMBsGA1UEAwwUc2FuZGJveGluZy1lZ3Jlc3MtY2EwHhcNNzAwMTAxMDAw\n"
        b"-----END CERTIFICATE-----",
    ]
    for text in quiet:
        assert _kinds(b"\0" + text + b"\0") == [], text


def test_mask_never_shows_a_usable_value():
    rng = random.Random(9)
    for kind in KINDS:
        _, value = make(kind, rng)
        m = secrets.mask(value)
        assert value not in m and m.endswith(f"({len(value)} chars)")
        assert len(m.split("*")[0]) <= 4


def test_fill_is_never_text():
    for n in range(1, 40):
        for off in range(8):
            f = secrets.fill(n, off)
            assert len(f) == n
            assert not any(f.count(bytes([c])) > (n + 3) // 4 for c in b"\t\n\r")
    assert _kinds(secrets.fill(4096)) == []


MAPPED = _Mapped([(0x1000, 0x5000), (0x7F0000000000, 0x7F0000100000)])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x4000), st.lists(st.integers(0, (1 << 64) - 1), max_size=64),
       st.integers(0, 7), st.integers(0, 7))
def test_sanitize_words_keeps_pointers_and_zero(base, words, head, tail):
    start = base * 8 + head
    data = bytes(range(1, head + 1)) + struct.pack(f"<{len(words)}Q", *words) + \
        bytes(range(1, tail + 1))
    out, n = sanitize_words(start, data, MAPPED)
    assert len(out) == len(data)
    replaced = 0
    pos = (-start) % 8
    pos = min(pos, len(data))
    for i in range((len(data) - pos) // 8):
        (before,) = struct.unpack_from("<Q", data, pos + 8 * i)
        (after,) = struct.unpack_from("<Q", out, pos + 8 * i)
        if before == 0 or before in MAPPED:
            assert after == before
        else:
            assert after == secrets.MARKER
            replaced += 1
    assert n >= replaced


def test_redacting_memory_overwrites_secrets_across_chunk_and_slice_edges():
    rng = random.Random(11)
    size = 3 * (1 << 20)
    backing = bytearray(rng.randbytes(size))
    for i in range(0, size, 7):
        backing[i] = 0  # binary, with short printable stretches
    planted = []
    for edge in (1 << 20, 2 << 20, (1 << 20) + 12345):
        text, value = make("github-token", rng)
        at = edge - 17
        backing[at - 1] = 0
        backing[at:at + len(text)] = text.encode()
        backing[at + len(text)] = 0
        planted.append((at, text.encode()))
    base = 0x7F0000000000

    def read(addr, n):
        lo = max(0, addr - base)
        return bytes(backing[lo:max(lo, min(size, addr - base + n))])

    report = RedactionReport()
    whole = RedactingMemory(LazyMemory(base, size, read), report)
    pieces = [whole.slice(base, base + (1 << 20) + 12345),
              whole.slice(base + (1 << 20) + 12345, base + size)]
    out = b"".join(bytes(c) for p in pieces for c in p.chunks(1 << 20))
    assert len(out) == size
    for at, text in planted:
        assert text not in out
        assert out[at:at + len(text)] == secrets.fill(len(text), base + at)
    changed = sum(1 for a, b in zip(out, backing) if a != b)
    assert changed == sum(len(t) for _, t in planted)
    assert report.found["full-memory"]["github-token"] == 3


def test_mask_text_and_counts():
    report = RedactionReport()
    masked = mask_text("pwd=Xy7kQ2mZ9a", report, "thread-name")
    assert masked == "pwd=" + "*" * 10 and report.found == {"thread-name": {"password-assignment": 1}}
    assert mask_text("worker-3", report, "thread-name") == "worker-3"


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable sink (like a pipe to zstd)."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def test_gd_redaction_stream_is_final_when_the_output_can_seek():
    rng = random.Random(13)
    text, _ = make("slack-token", rng)
    secret_page = bytearray(4096)
    secret_page[100:100 + len(text)] = text.encode()
    snap = synthetic_snapshot()
    lazy = LazyMemory(0x10000000, 4096, lambda a, n: bytes(secret_page[a - 0x10000000:][:n]))
    snap = dataclasses.replace(snap, memory=(lazy,))
    red, _ = redact_snapshot(snap)
    seekable = io.BytesIO()
    write_minidump(red, seekable, WriteOptions(memory64=True))
    doc = read_report(parse(seekable.getvalue()))
    assert doc["full_memory_scan_complete"] is True
    assert doc["secrets_found"]["full-memory"] == {"slack-token": 1}
    assert text.encode() not in seekable.getvalue()

    red, _ = redact_snapshot(snap)
    pipe = _Pipe()
    write_minidump(red, pipe, WriteOptions(memory64=True))
    doc = read_report(parse(bytes(pipe.buf)))
    assert doc["full_memory_scan_complete"] is False  # said, not guessed
    assert text.encode() not in pipe.buf
