"""Windows programs under Wine, for the Windows backend tests (tests/test_windows.py).

scripts/install-windows-test-deps puts a Windows CPython in .tools/windows/python and a Wine
prefix in .tools/windows/prefix; the MinGW-w64 cross compiler builds the test programs.
Where any of it is missing the tests are skipped with the reason, except under CI
(CI=true), where they fail: CI must run them.

Wine notes: a Windows python.exe needs pipes (or /dev/null), not regular files, for its
standard streams; every Wine process of one prefix talks to one wineserver, which lingers
a few seconds after the last one exits. Windows process ids are Wine's, not Linux's.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path, PureWindowsPath
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
WINDOWS_TOOLS = ROOT / ".tools" / "windows"
PROGRAMS = ROOT / "tests" / "programs"
MINGW_GCC = "x86_64-w64-mingw32-gcc"
MINGW_WINDRES = "x86_64-w64-mingw32-windres"
RUN_TIMEOUT = 180
INSTALL_HINT = "run scripts/install-windows-test-deps"


def missing(what: str) -> None:
    """Skip (fail under CI) because ``what`` is not installed."""
    message = f"{what}: {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the Windows tests)")
    pytest.skip(message)


def mingw_or_skip() -> str:
    gcc = shutil.which(MINGW_GCC)
    if gcc is None or shutil.which(MINGW_WINDRES) is None:
        missing(f"the MinGW-w64 cross compiler ({MINGW_GCC}, {MINGW_WINDRES}) is not installed")
    return gcc


def compile_windows(name: str, out_dir: Path, *, version_rc: Optional[str] = None,
                    shared: bool = False, extra: tuple[str, ...] = ()) -> Path:
    """Build tests/programs/NAME.c (or out_dir/NAME.c) with MinGW-w64: DWARF debug info, a
    PDB next to it and a CodeView RSDS record naming it (ld --pdb implies --build-id), and
    an optional VERSIONINFO resource given as .rc text."""
    gcc = mingw_or_skip()
    src = out_dir / f"{name}.c"
    if not src.exists():
        src = PROGRAMS / f"{name}.c"
    suffix = ".dll" if shared else ".exe"
    out = out_dir / f"{name}{suffix}"
    objects = []
    if version_rc is not None:
        rc = out_dir / f"{name}.rc"
        rc.write_text(version_rc)
        res = out_dir / f"{name}.res.o"
        subprocess.run([MINGW_WINDRES, str(rc), "-O", "coff", "-o", str(res)], check=True,
                       cwd=out_dir)
        objects.append(str(res))
    cmd = [gcc, "-O2", "-g", "-Wl,--build-id", f"-Wl,--pdb={name}.pdb", *extra,
           *(["-shared"] if shared else []), "-o", out.name, str(src), *objects]
    subprocess.run(cmd, check=True, cwd=out_dir)
    return out


class Wine:
    """The Wine installation, the test prefix and the Windows Python in it."""

    def __init__(self, wine: str, prefix: Path, python: Path):
        self.wine = wine
        self.prefix = prefix
        self.python = python
        self.env = dict(os.environ, WINEPREFIX=str(prefix), WINEDEBUG="-all",
                        WINEDLLOVERRIDES="mscoree,mshtml=", PYTHONDONTWRITEBYTECODE="1")
        for name in ("DISPLAY", "WAYLAND_DISPLAY", "PYTHONPATH", "PYTHONHOME"):
            self.env.pop(name, None)

    # -- paths -----------------------------------------------------------------------------

    @staticmethod
    def to_windows(path) -> str:
        """A Unix path as Wine shows it to Windows programs (the Z: drive is /)."""
        return "Z:" + str(Path(path).resolve()).replace("/", "\\")

    def to_unix(self, path: str) -> Optional[Path]:
        """A Windows path of this prefix as a Unix path (C: is drive_c, Z: is /)."""
        p = path[4:] if path.startswith("\\\\?\\") else path
        win = PureWindowsPath(p)
        drive = win.drive.upper()
        rest = list(win.parts[1:])
        if drive == "Z:":
            return Path("/", *rest)
        if drive == "C:":
            return Path(self.prefix, "drive_c", *rest)
        return None

    # -- running ---------------------------------------------------------------------------

    def run(self, *args, timeout: float = RUN_TIMEOUT, env: Optional[dict] = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([self.wine, *map(str, args)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(self.env, **(env or {})))

    def python_env(self, root: Path = ROOT, extra: Optional[dict] = None) -> dict:
        return dict(self.env, PYTHONPATH=self.to_windows(root), **(extra or {}))

    def run_python(self, *args, timeout: float = RUN_TIMEOUT, env: Optional[dict] = None,
                   cwd=None) -> subprocess.CompletedProcess:
        """The Windows python.exe with this checkout importable (PYTHONPATH via Z:)."""
        return subprocess.run([self.wine, str(self.python), *map(str, args)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=self.python_env(extra=env), cwd=cwd)

    def start_python(self, *args, env: Optional[dict] = None) -> subprocess.Popen:
        return subprocess.Popen([self.wine, str(self.python), *map(str, args)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=self.python_env(extra=env))

    def generate_dump(self, *args, timeout: float = RUN_TIMEOUT, env: Optional[dict] = None
                      ) -> subprocess.CompletedProcess:
        """``python.exe -m generate_dump ARGS``; paths given as Path are converted."""
        conv = [self.to_windows(a) if isinstance(a, Path) else str(a) for a in args]
        return self.run_python("-m", "generate_dump", *conv, timeout=timeout, env=env)


def wine_or_skip() -> Wine:
    wine = shutil.which("wine")
    if wine is None or not (Path("/usr/lib/wine/wine64").exists() or shutil.which("wine64")):
        missing("Wine (64-bit) is not installed")
    prefix = Path(os.environ.get("GENERATE_DUMP_WINEPREFIX", WINDOWS_TOOLS / "prefix"))
    if not (prefix / "system.reg").exists():
        missing(f"no initialised Wine prefix at {prefix}")
    python = WINDOWS_TOOLS / "python" / "python.exe"
    if not python.exists():
        missing(f"no Windows Python at {python}")
    return Wine(wine, prefix, python)


class WinTarget:
    """tests/programs/win_threads.exe under Wine: prints "READY <pid>" once its threads are
    parked; answers each line on its standard input with "PONG <n>"."""

    def __init__(self, wine: Wine, exe: Path, *args, env: Optional[dict] = None,
                 ready_timeout: float = 60.0):
        self.wine = wine
        self.exe = exe
        self.proc = subprocess.Popen([wine.wine, str(exe), *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(wine.env, **(env or {})))
        line = self._line(ready_timeout)
        if not line or not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.close()
            raise RuntimeError(f"{exe.name} did not become ready: {line!r} {err[-2000:]}")
        self.pid = int(line.split()[1])

    def _line(self, timeout: float) -> Optional[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                line = self.proc.stdout.readline()
                return line.strip() if line else None

    def ping(self, timeout: float = 20.0) -> Optional[str]:
        """Send a line; the answer ("PONG n") if one comes within ``timeout``, else None."""
        self.proc.stdin.write("ping\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def helper(self, *args) -> subprocess.CompletedProcess:
        """win_threads.exe in one of its helper modes (--threads, --modules, --alive)."""
        return self.wine.run(self.exe, *args, timeout=RUN_TIMEOUT)

    def toolhelp_threads(self) -> list[int]:
        r = self.helper("--threads", self.pid)
        assert r.returncode == 0, r.stderr
        return [int(x) for x in r.stdout.split()]

    def toolhelp_modules(self) -> dict[int, tuple[int, str]]:
        """base -> (size, path) from Module32First/Next."""
        r = self.helper("--modules", self.pid)
        assert r.returncode == 0, r.stderr
        out = {}
        for line in r.stdout.splitlines():
            base, size, path = line.split(" ", 2)
            out[int(base, 16)] = (int(size, 16), path)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None and self.helper("--alive", self.pid).returncode == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f:
                    try:
                        f.close()
                    except OSError:
                        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
