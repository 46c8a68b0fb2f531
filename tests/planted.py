"""Secrets to plant in test targets, one valid value per (kind, place), and the independent
checks of a dump for them: the raw bytes (ASCII and UTF-16LE) and detect-secrets."""

from __future__ import annotations

import base64
import json
import random
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
KINDS = ("aws-access-key-id", "aws-secret-access-key", "github-token", "gitlab-token",
         "slack-token", "jwt", "pem-private-key", "password-assignment", "high-entropy")


@dataclass(frozen=True)
class Planted:
    kind: str
    place: str  # heap-ascii, stack-utf16, argv, thread-name, ...
    text: str  # what is written in the process
    value: str  # the secret inside ``text`` (what must never survive redaction)

    @property
    def needle(self) -> str:
        """What a copy of it looks like. A password is a secret only next to its keyword:
        a stale heap fragment holding the bare value (seen in CPython) is unrecognisable
        to any format-based detector, so it is searched for with its keyword."""
        return self.text if self.kind == "password-assignment" else self.value

    def encodings(self) -> list[bytes]:
        enc = ["utf-16-le"] if "utf16" in self.place or self.place == "thread-name" else []
        enc.append("ascii")
        return [self.needle.encode(e) for e in enc]


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    # Random but with every character class present (as real tokens have).
    while True:
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if (any(c.isupper() for c in s) and any(c.islower() for c in s)
                and any(c.isdigit() for c in s)) or not any(c.islower() for c in alphabet):
            return s


def make(kind: str, rng: random.Random) -> tuple[str, str]:
    """(text, value) of one fresh secret of ``kind``."""
    if kind == "aws-access-key-id":
        v = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
        return v, v
    if kind == "aws-secret-access-key":
        v = _pick(rng, B64, 40)
        return f"aws_secret_access_key={v}", v
    if kind == "github-token":
        v = "ghp_" + _pick(rng, ALNUM, 36)
        return v, v
    if kind == "gitlab-token":
        v = "glpat-" + _pick(rng, ALNUM, 20)
        return v, v
    if kind == "slack-token":
        v = (f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-"
             + _pick(rng, ALNUM, 24))
        return v, v
    if kind == "jwt":
        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
        v = (b64({"alg": "HS256", "typ": "JWT"}) + "." + b64({"sub": _pick(rng, ALNUM, 12)})
             + "." + _pick(rng, ALNUM + "-_", 43))
        return v, v
    if kind == "pem-private-key":
        v = ("-----BEGIN RSA PRIVATE KEY-----\n" + _pick(rng, B64, 64) + "\n"
             + _pick(rng, B64, 40) + "\n-----END RSA PRIVATE KEY-----")
        return v, v
    if kind == "password-assignment":
        v = _pick(rng, ALNUM, 9) + "!" + _pick(rng, ALNUM, 3)
        return f"password={v}", v
    if kind == "high-entropy":
        v = _pick(rng, ALNUM, 48)
        return f'"{v}"', v
    raise ValueError(kind)


def thread_name_secret(rng: random.Random, keyword: str) -> Planted:
    """A password assignment that fits a Linux thread name (15 characters)."""
    v = _pick(rng, ALNUM, 14 - len(keyword))
    return Planted("password-assignment", "thread-name", f"{keyword}={v}", v)


def occurrences(data: bytes, needle: bytes) -> list[int]:
    out, pos = [], data.find(needle)
    while pos >= 0:
        out.append(pos)
        pos = data.find(needle, pos + 1)
    return out


def present(dump: Path, planted: list[Planted]) -> dict[Planted, list[tuple[int, int]]]:
    """Planted value -> [(file offset, length)] of every copy in the raw file."""
    data = dump.read_bytes()
    out = {}
    for p in planted:
        spots = [(o, len(e)) for e in p.encodings() for o in occurrences(data, e)]
        if spots:
            out[p] = spots
    return out


# -- detect-secrets, the independent detector ---------------------------------------------

def detect_secrets_bin() -> Path:
    cand = Path(sys.executable).with_name("detect-secrets")
    found = cand if cand.exists() else (shutil.which("detect-secrets") and
                                        Path(shutil.which("detect-secrets")))
    if not found:
        message = "detect-secrets not found: pip install detect-secrets (test extra)"
        import os

        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def strings_text(dump: Path, out: Path) -> Path:
    """The dump's printable strings, ASCII and UTF-16LE (binutils strings), one a line.

    detect-secrets skips binary files (run on a raw dump it reports nothing, even for
    a planted AWS key), so it is given what `strings` extracts, as a person would. Name
    the file ``*.ini``: for .txt files its keyword detector wants quoted values."""
    lines = []
    for enc in ("s", "l"):
        r = subprocess.run(["strings", "-a", "-n", "8", "-e", enc, str(dump)],
                           capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
        lines.append(r.stdout)
    out.write_bytes(b"".join(lines))
    return out


def detect_secrets(text_file: Path) -> list[tuple[str, str]]:
    """(type, line) of every detect-secrets finding in ``text_file``."""
    r = subprocess.run([str(detect_secrets_bin()), "scan", "--all-files", str(text_file)],
                       capture_output=True, text=True, timeout=600, cwd=text_file.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    lines = text_file.read_bytes().decode("latin-1").split("\n")
    return [(f["type"], lines[f["line_number"] - 1])
            for results in doc["results"].values() for f in results]


def scan_json(dump: Path) -> tuple[int, dict]:
    r = subprocess.run([sys.executable, "-m", "generate_dump", "scan", "--json", str(dump)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 3), f"scan failed ({r.returncode}): {r.stderr}"
    doc = json.loads(r.stdout)
    assert (r.returncode == 3) == (doc["count"] > 0), "exit status disagrees with findings"
    return r.returncode, doc
