"""The tree stays free of the mistakes pyflakes finds (ruff) and of type errors (mypy), both
configured in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    try:
        import ruff  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ruff is not installed (the test extra installs it)")
        pytest.skip("ruff is not installed: pip install ruff")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _mypy(tmp_path, *args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("mypy is not installed (the test extra installs it)")
        pytest.skip("mypy is not installed: pip install mypy")
    # Configured by [tool.mypy] in pyproject.toml; a fresh cache keeps the tree clean.
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_mypy_clean(tmp_path):
    """The package type-checks as Linux code (the Windows backend is excluded here)."""
    r = _mypy(tmp_path, "generate_dump")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout, r.stdout


def test_mypy_clean_windows_backend(tmp_path):
    """The Windows backend type-checks as Windows code (ctypes.WinDLL, winreg exist there)."""
    files = sorted(str(p.relative_to(ROOT))
                   for p in (ROOT / "generate_dump/backends/windows").glob("*.py"))
    assert len(files) >= 5, files
    r = _mypy(tmp_path, "--platform", "win32", *files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Success: no issues found in {len(files)} source files" in r.stdout, r.stdout
