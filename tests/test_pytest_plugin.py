"""The pytest plugin catches a hanging test: dumps of the test process and its child."""

from __future__ import annotations

import sys

import pytest

from generate_dump.minidump import read_minidump
from readers import minidump_dump

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")

HANGING_TEST = """
import subprocess, sys, time

def test_hangs():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(600)
    finally:
        child.kill()
        child.wait()

def test_quick():
    assert True
"""


def test_hanging_test_is_dumped_and_failed(pytester, tmp_path):
    pytester.makepyfile(test_hang=HANGING_TEST)
    dump_dir = tmp_path / "dumps"
    result = pytester.runpytest_subprocess("--dump-on-timeout=2", f"--dump-dir={dump_dir}",
                                           "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test ran longer than 2 s (--dump-on-timeout); minidumps:*",
    ])
    files = sorted(dump_dir.glob("*.dmp"))
    names = [f.name for f in files]
    assert any("-pytest-" in n for n in names), names
    assert any("-child-" in n for n in names), names
    assert all(n.startswith("test_hangs-") for n in names)
    for f in files:
        assert str(f) in result.stdout.str()
        md = read_minidump(f)
        assert md.threads and md.modules
        minidump_dump(f)
    pytest_dump = read_minidump(next(f for f in files if "-pytest-" in f.name))
    assert any("python" in m.path for m in pytest_dump.modules)


def test_plugin_is_off_by_default(pytester):
    pytester.makepyfile(test_ok="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "minidumps" not in result.stdout.str()


def test_plugin_options_in_help(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--dump-on-timeout=SECONDS*", "*--dump-dir=DIR*"])


def test_cooperates_with_pytest_timeout(pytester, tmp_path):
    """Both plugins on: ours fires first (shorter time), with dumps; pytest-timeout's later
    deadline never triggers, and its SIGALRM handling is left alone."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(test_hang=HANGING_TEST)
    dump_dir = tmp_path / "dumps"
    result = pytester.runpytest_subprocess("--dump-on-timeout=1", "--timeout=60",
                                           f"--dump-dir={dump_dir}", "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    assert "Timeout" not in result.stdout.str().replace("--dump-on-timeout", "")
    assert len(list(dump_dir.glob("*.dmp"))) == 2
    # And the other way round, pytest-timeout alone still works with our plugin loaded.
    quick = pytester.runpytest_subprocess("--timeout=1", "-p", "no:cacheprovider", timeout=300)
    quick.assert_outcomes(passed=1, failed=1)
    assert "Timeout" in quick.stdout.str()


def test_report_shows_where_the_hung_test_was(pytester, tmp_path):
    pytester.makepyfile(test_hang=HANGING_TEST)
    result = pytester.runpytest_subprocess("--dump-on-timeout=2", f"--dump-dir={tmp_path}",
                                           "-p", "no:cacheprovider", "-rA", timeout=300)
    out = result.stdout.str()
    # The pytest process's main thread sleeps in time.sleep: the summary shows it.
    assert "minidumps" in out and "nanosleep" in out, out[-4000:]
