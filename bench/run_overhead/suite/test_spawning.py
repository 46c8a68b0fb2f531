"""A small test suite that does what real suites do with processes: subprocess.run,
pipelines through a shell, communicate, a multiprocessing pool, os.system."""
import multiprocessing
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("i", range(20))
def test_python_child(i):
    r = subprocess.run([sys.executable, "-c", f"print({i} * 2)"], capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip() == str(i * 2)


@pytest.mark.parametrize("i", range(20))
def test_shell_pipeline(i, tmp_path):
    (tmp_path / "f").write_text("\n".join(str(x) for x in range(100 + i)))
    r = subprocess.run(f"sort -n {tmp_path}/f | tail -1 | tr -d '\\n'", shell=True,
                       capture_output=True, text=True, check=True)
    assert r.stdout == str(99 + i)


def test_communicate():
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = p.communicate(b"x" * 100000)
    assert len(out) == 100000 and p.returncode == 0


def _square(x):
    return x * x


def test_pool():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert sum(pool.map(_square, range(1000))) == sum(x * x for x in range(1000))


def test_os_system():
    assert os.system("exit 3") >> 8 == 3


def test_child_killed_by_signal():
    r = subprocess.run(["sh", "-c", "kill -TERM $$"])
    assert r.returncode == -15
