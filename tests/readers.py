"""Locate and run the real minidump readers: Breakpad, rust-minidump and LLDB.

Tools come from ``.tools/`` (made by scripts/install-test-deps) or from the environment
variables BREAKPAD_BIN, RUST_MINIDUMP_BIN and LLDB. A missing reader skips the test that
needs it with the reason, except under CI (CI=true), where it fails: CI must use all three.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
READER_TIMEOUT = 300


def _need(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    message = f"{what} not found: run scripts/install-test-deps"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run every reader test)")
    pytest.skip(message)


def breakpad_bin(name: str) -> Path:
    base = Path(os.environ.get("BREAKPAD_BIN", TOOLS / "breakpad/node_modules/minidump/bin/linux-x64"))
    return _need(base / name, f"Breakpad {name}")


def rust_minidump_stackwalk() -> Path:
    base = Path(os.environ.get("RUST_MINIDUMP_BIN", TOOLS / "rust-minidump"))
    return _need(base / "minidump-stackwalk", "rust-minidump minidump-stackwalk")


def lldb_bin() -> Path:
    found = os.environ.get("LLDB") or shutil.which("lldb-22")
    return _need(Path(found) if found else None, "lldb-22")


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=READER_TIMEOUT, **kw)


def minidump_dump(path) -> str:
    """Breakpad's minidump_dump output; asserts exit 0 (every stream parsed)."""
    r = run([breakpad_bin("minidump_dump"), path])
    assert r.returncode == 0, f"minidump_dump failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r.stdout


def breakpad_stackwalk(path, symbols_dir=None) -> str:
    cmd = [breakpad_bin("minidump_stackwalk"), "-m", path]
    if symbols_dir:
        cmd.append(symbols_dir)
    r = run(cmd)
    assert r.returncode == 0, f"minidump_stackwalk failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r.stdout


def breakpad_dump_syms(binary: Path, symbols_dir: Path, debug_dir: Optional[Path] = None,
                       timeout: float = READER_TIMEOUT) -> Path:
    """Write Breakpad symbols for ``binary`` into the store layout; returns the .sym path.
    ``debug_dir``: where dump_syms finds the binary's separate debug file."""
    cmd = [str(breakpad_bin("dump_syms")), str(binary)]
    if debug_dir is not None:
        cmd.append(str(debug_dir))
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    first = r.stdout.split(b"\n", 1)[0].decode().split()
    # MODULE Linux x86_64 <debug id> <name>
    debug_id, name = first[3], first[4]
    out = symbols_dir / name / debug_id / (name + ".sym")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(r.stdout)
    return out


def rust_stackwalk_json(path, *extra) -> dict:
    r = run([rust_minidump_stackwalk(), "--json", *extra, path])
    assert r.returncode == 0, f"minidump-stackwalk failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return json.loads(r.stdout)


def rust_dump(path) -> str:
    r = run([rust_minidump_stackwalk(), "--dump", path])
    assert r.returncode == 0, f"minidump-stackwalk --dump failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r.stdout


def lldb_core(path, *commands: str) -> str:
    cmd = [lldb_bin(), "-b", "--no-lldbinit", "--core", path]
    for c in commands:
        cmd += ["-o", c]
    r = run(cmd)
    assert r.returncode == 0, f"lldb failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout
