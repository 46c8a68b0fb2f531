"""Detectors for secret-looking values in raw memory: one module that drives both
``generate_dump scan`` (report) and ``--redact`` (overwrite), so the two cannot disagree.

Memory is searched in two steps so that gigabytes go by at regex-engine speed: first the
runs of printable characters (ASCII, or UTF-16LE: a printable byte then a zero byte) at
least :data:`MIN_RUN` long, then the detectors on the text of each run. Every detector
looks for a format that is rare by accident (a known token prefix, a PEM header, a JWT's
``eyJ...``), except the high-entropy one, whose thresholds are set from measurements of
dumps without secrets (CPython, Node, a JVM, our test programs: see tests/test_scan.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

# Kinds, in the order reports list them.
KINDS = (
    "aws-access-key-id",
    "aws-secret-access-key",
    "github-token",
    "gitlab-token",
    "slack-token",
    "jwt",
    "pem-private-key",
    "password-assignment",
    "high-entropy",
)

MIN_RUN = 12  # shortest text that can hold a detectable secret ("pwd=" + 8)
MAX_SECRET = 8192  # longest secret a match may span (a 4096-bit PEM key is ~3.3 KB)


_B64 = r"A-Za-z0-9+/"
_PASSWORD_WORDS = (r"pass(?:word|wd|phrase)?|pwd|secret|api[_-]?key|access[_-]?token|"
                   r"auth[_-]?token|private[_-]?key")

# Distinctive prefixes (ghp_, glpat-, xox?-, eyJ) need no left boundary: in UTF-16 the
# byte before a string (a 16-bit length, say) may read as one more character.
_DETECTORS = [
    ("pem-private-key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,%d}?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
        r"|[\sA-Za-z0-9+/=:,-]*)" % MAX_SECRET)),
    ("aws-access-key-id", re.compile(
        r"(?<![A-Z0-9])(?:AKIA|ASIA)"
        r"[A-Z2-7]{16}(?![A-Z0-9])")),
    ("aws-secret-access-key", re.compile(
        r"(?i:aws)[\w.-]{0,20}?(?i:secret|key)[\w.\"' -]{0,20}?[=:]\s*[\"']?"
        r"([%s]{40})(?![%s])" % (_B64, _B64))),
    ("github-token", re.compile(
        r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,251})"
        r"(?![A-Za-z0-9_])")),
    ("gitlab-token", re.compile(
        r"gl(?:pat|dt|ptt|rt|soat|cbt|oas|imt|ft|agent)-[A-Za-z0-9_-]{20,64}"
        r"(?![A-Za-z0-9_-])")),
    ("slack-token", re.compile(
        r"xox[abposre]-[0-9]{6,}-[A-Za-z0-9-]{8,}"
        r"|https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}")),
    ("jwt", re.compile(
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")),
    ("password-assignment", re.compile(
        r"(?i:(?<![A-Za-z0-9])(?:%s))[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
        r"([^\s\"'`,;&|<>(){}\[\]%%$\\#*]{6,128})" % _PASSWORD_WORDS)),
    ("high-entropy", re.compile(r"(?<![%s_-])[%s_-]{32,512}={0,2}(?![%s=_-])"
                                % (_B64, _B64, _B64))),
]

# Values that a password assignment holds in code and documentation, not in secrets.
_PLACEHOLDERS = re.compile(
    r"(?i)^(?:none|null|nil|true|false|undefined|empty|password\w*|passwd|secret\w*|"
    r"changeme|example\w*|your\w*|xxx+|\.+|-+|_+|redacted|hidden|required|optional|"
    r"self\.\w+|os\.\w+.*|getpass.*|input.*|prompt.*|str|bytes|string|int|bool|"
    r"[a-z_]+\.[a-z_.]+)$")

HIGH_ENTROPY_BITS = 4.5  # Shannon entropy per character, over the whole run
HIGH_ENTROPY_MIN_DISTINCT = 20


@dataclass(frozen=True)
class Finding:
    """One secret-looking value: ``start``/``end`` are byte offsets in the searched buffer."""

    kind: str
    start: int
    end: int
    encoding: str  # "ascii" or "utf-16le"
    value: str

    def masked(self) -> str:
        return mask(self.value)


def mask(value: str) -> str:
    """Enough to recognise a value one planted, never enough to use it."""
    keep = 4 if len(value) >= 16 else 2 if len(value) >= 8 else 0
    return f"{value[:keep]}{'*' * 8} ({len(value)} chars)"


def entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_WORDS = re.compile(r"[A-Z][a-z]{2,}|[a-z]{4,}")
_SEQUENCES = ("0123456789", "abcdefgh", "ABCDEFGH", "qwerty", "QWERTY")
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
WORDY_FRACTION = 0.5  # share of a token in words; identifiers: 0.5-0.8 (README)


def _looks_random(token: str) -> bool:
    """A run of base64 characters that is random, not a name. Thresholds measured on
    dumps without secrets (CPython, Node, JDK 17) and on random tokens (README)."""
    core = token.rstrip("=")
    if len(set(core)) < HIGH_ENTROPY_MIN_DISTINCT:
        return False
    upper = sum(ch.isupper() for ch in core)
    lower = sum(ch.islower() for ch in core)
    digits = sum(ch.isdigit() for ch in core)
    # Random base64/alphanumerics mix all three; identifiers, words and hex do not.
    if upper < 3 or lower < 3 or digits < 2:
        return False
    separators = max(3, len(core) // 10)  # random base64url has one per 64 characters
    if core.count("_") >= separators or any(s in core for s in _SEQUENCES):
        return False  # C++ mangled names; alphabets and digit tables
    if _GO_BUILD_ID.fullmatch(token):
        return False  # Go build ids (action/content hashes joined by /): public
    parts = core.split("/")
    if sum(1 for x in parts[1:-1] if _PACKAGE.fullmatch(x)) >= min(2, len(parts) - 2) >= 1:
        return False  # paths and Java class names (java/lang/Object, sun/security/...)
    if core.count("-") >= separators + 1 or _CONSTANT.search(core):
        return False  # kebab-case names, CONSTANT_CASE (BYTES_PER_ELEMENT)
    if sum(len(w) for w in _WORDS.findall(core)) > WORDY_FRACTION * len(core):
        return False  # words: identifiers, symbol names, option lists
    if _mangled(core) or _encodes_text(core):
        return False
    # Random strings' measured entropy grows with length: log2(n) - 1 up to 4.5 bits.
    return entropy(core) >= min(HIGH_ENTROPY_BITS, math.log2(len(core)) - 1.0)


_GO_BUILD_ID = re.compile(r"[A-Za-z0-9_-]{20,24}(?:/[A-Za-z0-9_-]{20,24}){1,3}")
_CONSTANT = re.compile(r"[A-Z]{3,}_[A-Z]{3,}")
_PACKAGE = re.compile(r"[a-z][a-z0-9_]+")
_TEXT_RUN = re.compile(rb"[A-Za-z][A-Za-z .,:'-]{7,}")
_MANGLED = re.compile(r"^_?Z[NK]|^St\d|St\d\d?[a-z_]{3}|cxx11|_S_|EE[A-Z]")


def _mangled(core: str) -> bool:
    """Itanium C++ mangled names (_ZNSt10filesystem..., St23_Sp_counted_ptr...)."""
    return _MANGLED.search(core) is not None


def _encodes_text(core: str) -> bool:
    """Base64 of text (certificate names in DER, documents) at any of the 4 alignments:
    public data, not a key; random keys decode to random bytes."""
    import base64
    import binascii

    s = core.replace("-", "+").replace("_", "/")
    for off in range(4):
        part = s[off:off + (len(s) - off) // 4 * 4]
        try:
            if _TEXT_RUN.search(base64.b64decode(part)):
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def _in_base64_block(text: str, a: int, b: int) -> bool:
    """Is text[a:b] one line of a multi-line base64 block (a PEM certificate, MIME)?
    Public certificates are not secrets; private keys have their own detector."""
    after = text[b:b + 17]
    if after[:1] == "\n" and len(after) == 17 and all(c in _B64_CHARS for c in after[1:]):
        return True
    before = text[max(0, a - 17):a]
    if before[-1:] == "\n" and len(before) == 17 and all(c in _B64_CHARS for c in before[:-1]):
        return True
    return after.startswith("\n-----END") or before.endswith("-----\n")


def _password_value_ok(value: str) -> bool:
    if _PLACEHOLDERS.match(value):
        return False
    # Real passwords mix classes; identifiers (getpass = fallback_getpass, CamelCase
    # class names) and single words do not: they have no digit and no symbol.
    if all(c.isalpha() or c == "_" for c in value):
        return False
    if value[0] in "/~." or value[1:3] == ":\\":
        return False  # a path: PWD=/home/ci (the working directory), key_file=./id_rsa
    classes = (any(c.islower() for c in value) + any(c.isupper() for c in value)
               + any(c.isdigit() for c in value) + any(not c.isalnum() for c in value))
    return classes >= 2 or len(value) >= 12


# Substrings (lower case) at which a detector's match begins: the detector's regex is
# tried only there (``match`` at each place the substring occurs), so text is passed
# over at substring-search speed instead of regex speed.
_ANCHORS = {
    "pem-private-key": ("-----begin ",),
    "aws-access-key-id": ("akia", "asia"),
    "aws-secret-access-key": ("aws",),
    "github-token": ("gh",),  # ghp_ gho_ ghu_ ghs_ ghr_ github_pat_: one search
    "gitlab-token": ("gl",),  # glpat- gldt- glptt- ...
    "slack-token": ("xox", "https://hooks.slack.com/"),
    "jwt": ("eyj",),
    "password-assignment": ("pass", "pwd", "secret", "api", "access", "auth", "private"),
}
_B64_END = re.compile(rb"B*")


def _matches(kind: str, rx, text: str, low: str, raw_cls: bytes):
    if kind == "high-entropy":
        pos = 0
        while True:
            pos = raw_cls.find(_B64_SEED, pos)
            if pos < 0:
                return
            end = _B64_END.match(raw_cls, pos).end()  # type: ignore[union-attr]  # B* matches
            m = rx.match(text, pos)
            if m is not None:
                yield m
            pos = end
    for anchor in _ANCHORS[kind]:
        pos = low.find(anchor)
        while pos >= 0:
            m = rx.match(text, pos)
            if m is not None:
                yield m
            pos = low.find(anchor, pos + 1)


def find_in_text(text: str, raw_cls: bytes = b"") -> Iterator[tuple[str, int, int, str]]:
    """(kind, start, end, value) for every secret in the ASCII ``text``, earlier detectors
    first; spans never overlap (a JWT is not also reported as high entropy).
    ``raw_cls`` is the text through :data:`_B64CLASS` (computed when not given)."""
    taken: list[tuple[int, int]] = []
    low = text.lower()
    if not raw_cls:
        raw_cls = text.encode("ascii", "replace").translate(_B64CLASS)

    def free(a: int, b: int) -> bool:
        return all(b <= x or a >= y for x, y in taken)

    for kind, rx in _DETECTORS:
        for m in _matches(kind, rx, text, low, raw_cls):
            if m.lastindex:
                a, b = m.span(1)
            else:
                a, b = m.span()
            value = text[a:b]
            if kind == "password-assignment" and not _password_value_ok(value):
                continue
            if kind == "high-entropy" and (not _looks_random(value)
                                           or _in_base64_block(text, a, b)):
                continue
            if kind == "pem-private-key":
                a, b = m.span()
            if free(a, b):
                taken.append((a, b))
                yield kind, a, b, value


_class = bytearray(b"." * 256)
for _c in b"\t\n\r" + bytes(range(0x20, 0x7F)):
    _class[_c] = ord("P")
_class[0] = ord("Z")
_CLASS = bytes(_class)
_b64class = bytearray(b"." * 256)
for _c in (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"):
    _b64class[_c] = ord("B")
_B64CLASS = bytes(_b64class)
_ASCII_SEED = b"P" * MIN_RUN
_UTF16_SEED = b"PZ" * MIN_RUN
_ASCII_END = re.compile(rb"P*")
_UTF16_END = re.compile(rb"(?:PZ)*")
_B64_SEED = b"B" * 32


_NONZERO = bytes([ord(".")] + [ord("#")] * 255)
_STRETCH = b"###"  # MIN_RUN // _STRIDE samples in a row
_STRIDE = 4
_JOIN = 256  # spans closer than this are searched as one


def _busy_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """Stretches of ``data`` that may hold a printable run of MIN_RUN characters.

    Every 4th byte is looked at (a strided slice and bytes.translate, C loops over a
    quarter of the data): a run of MIN_RUN non-zero bytes, or of MIN_RUN UTF-16
    characters at even addresses (as wchar_t arrays are), makes at least MIN_RUN/4
    consecutive samples non-zero, so only around such stretches is the exact search
    needed. Untouched, sparse and mostly-zero memory passes at slicing speed."""
    n = len(data)
    s = data[::_STRIDE].translate(_NONZERO)
    pos = s.find(_STRETCH)
    span = None
    while pos >= 0:
        end = s.find(b".", pos)
        if end < 0:
            end = len(s)
        lo, hi = max(0, (pos - 1) * _STRIDE), min(n, (end + 1) * _STRIDE)
        if span is not None and lo - span[1] < _JOIN:
            span[1] = hi
        else:
            if span is not None:
                yield span[0], span[1]
            span = [lo, hi]
        pos = s.find(_STRETCH, end)
    if span is not None:
        yield span[0], span[1]


def text_runs(data) -> Iterator[tuple[int, int, str]]:
    """(start, end, encoding) of every printable run of at least MIN_RUN characters.

    Found with bytes.translate and bytes.find (C loops) instead of a regex, and only in
    the stretches that :func:`_busy_spans` keeps: on a full dump this is the inner loop
    over every byte."""
    if not isinstance(data, bytes):
        data = bytes(data)
    for lo, hi in _busy_spans(data):
        cls = data[lo:hi].translate(_CLASS)
        pos = 0
        while True:
            pos = cls.find(_ASCII_SEED, pos)
            if pos < 0:
                break
            stop = _ASCII_END.match(cls, pos).end()  # type: ignore[union-attr]  # P* matches
            yield lo + pos, lo + stop, "ascii"
            pos = stop
        pos = 0
        while True:
            pos = cls.find(_UTF16_SEED, pos)
            if pos < 0:
                break
            stop = _UTF16_END.match(cls, pos).end()  # type: ignore[union-attr]  # (PZ)* matches
            yield lo + pos, lo + stop, "utf-16le"
            pos = stop


def find_secrets(data, base: int = 0) -> Iterator[Finding]:
    """Every secret in the bytes ``data`` (ASCII or UTF-16LE text); offsets are ``base`` +
    the byte offset in ``data``, so a caller can pass an address."""
    if not isinstance(data, bytes):
        data = bytes(data)
    for start, end, encoding in text_runs(data):
        raw = data[start:end]
        if encoding == "utf-16le":
            raw = raw[::2]
            width = 2
        else:
            width = 1
        text = raw.decode("ascii")
        for kind, a, b, value in find_in_text(text, raw.translate(_B64CLASS)):
            yield Finding(kind, base + start + a * width, base + start + b * width,
                          encoding, value)


MARKER = 0x0DEFACED  # Crashpad's word for "sanitized"
MARKER_BYTES = MARKER.to_bytes(8, "little")


def fill(length: int, offset: int = 0) -> bytes:
    """``length`` bytes of the marker pattern, as if laid from an 8-aligned ``offset``:
    never printable text, so a redacted secret matches no detector (ours or others')."""
    pattern = MARKER_BYTES[:4]
    start = offset % 4
    reps = (start + length) // 4 + 1
    return (pattern * reps)[start:start + length]
