"""Find LLDB's Python module: ``import lldb``, else the path ``lldb -P`` prints."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from types import ModuleType

from ...errors import DumpError

_CANDIDATES = ("lldb", "lldb-22", "lldb-21", "lldb-20", "lldb-19", "lldb-18")


def _lldb_commands() -> list[list[str]]:
    cmds = [[c, "-P"] for c in _CANDIDATES if shutil.which(c)]
    if sys.platform == "darwin" and shutil.which("xcrun"):
        cmds.append(["xcrun", "lldb", "-P"])
    return cmds


def import_lldb() -> ModuleType:
    """The lldb module, importing it from LLDB's own Python directory when needed."""
    try:
        import lldb  # type: ignore[import-not-found]

        return lldb
    except ImportError:
        pass
    for cmd in _lldb_commands():
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out and os.path.isdir(out) and out not in sys.path:
            sys.path.append(out)
            try:
                import lldb

                return lldb
            except ImportError:
                sys.path.remove(out)
    hint = ("install Xcode or the Command Line Tools (xcode-select --install)"
            if sys.platform == "darwin" else
            "on Debian/Ubuntu: apt-get install lldb-22 python3-lldb-22")
    raise DumpError(f"the LLDB backend needs LLDB's Python module, which was not found; {hint}")


def ensure_debugserver() -> None:
    """Attaching on Linux needs lldb-server; Debian does not put it where LLDB looks."""
    if sys.platform != "linux" or os.environ.get("LLDB_DEBUGSERVER_PATH"):
        return
    found = shutil.which("lldb-server")
    if not found:
        matches = sorted(glob.glob("/usr/lib/llvm-*/bin/lldb-server"))
        found = matches[-1] if matches else None
    if found:
        os.environ["LLDB_DEBUGSERVER_PATH"] = found
