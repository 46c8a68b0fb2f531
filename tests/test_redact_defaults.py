"""--redact wherever dumps are made: `run` and the pytest plugin redact by default (their
dumps are uploaded) and can opt out; the in-lldb command redacts when asked."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import live
from planted import make, scan_json
from readers import lldb_bin
from targets import threads_binary

from generate_dump.minidump import read_minidump
from generate_dump.redact import read_report

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


def _token() -> str:
    return make("github-token", random.Random(42))[0]


@pytest.mark.parametrize("flag", [None, "--no-redact"])
def test_run_redacts_by_default(tmp_path, flag):
    token = _token()
    out = tmp_path / "dumps"
    args = [sys.executable, "-m", "generate_dump", "run", "--timeout", "1s",
            "--output-dir", str(out)]
    if flag:
        args.append(flag)
    args += ["--", sys.executable, "-c", "import sys, time; time.sleep(60)", token]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 124, r.stderr
    dumps = sorted(out.glob("*.dmp"))
    assert dumps, r.stderr
    for d in dumps:
        status, doc = scan_json(d)
        report = read_report(read_minidump(d))
        if flag is None:
            assert token.encode() not in d.read_bytes()
            assert (status, doc["count"]) == (0, 0)
            assert report["secrets_found"]["command-line"] == {"github-token": 1}
        else:
            assert report is None
            assert status == 3 and any(f["kind"] == "github-token" for f in doc["findings"])


HANGING = """
import sys, time
SECRET = sys.argv  # keeps the interpreter's argv alive
def test_hangs():
    time.sleep(600)
"""


@pytest.mark.parametrize("flag", [None, "--dump-no-redact"])
def test_pytest_plugin_redacts_by_default(pytester, tmp_path, flag):
    token = _token()
    pytester.makepyfile(test_hang=HANGING)
    dump_dir = tmp_path / "dumps"
    args = ["--dump-on-timeout=2", f"--dump-dir={dump_dir}", "-p", "no:cacheprovider",
            f"--junitxml={tmp_path}/{token}.xml"]  # the token on pytest's command line
    if flag:
        args.append(flag)
    pytester.runpytest_subprocess(*args, timeout=300)
    dumps = sorted(dump_dir.glob("*.dmp"))
    assert len(dumps) == 1, dumps  # the test has no child: pytest's own dump
    status, doc = scan_json(dumps[0])
    report = read_report(read_minidump(dumps[0]))
    if flag is None:
        assert token.encode() not in dumps[0].read_bytes()
        assert (status, doc["count"]) == (0, 0)
        assert report is not None and report["stack_words_replaced"] > 0
    else:
        assert report is None and status == 3


def test_in_lldb_command_redact(tmp_path):
    token = _token()
    out = tmp_path / "lldb.dmp"
    with live.Target([threads_binary(), "0", token]) as target:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([str(lldb_bin()), "-b", "--no-lldbinit",
                            "-o", "command script import generate_dump.lldb_command",
                            "-o", f"process attach -p {target.pid}",
                            "-o", f"generate_dump -o {out} --redact",
                            "-o", "process detach"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert f"generate_dump: wrote {out}" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
        live.assert_running_untraced(target.pid)
    assert token.encode() not in out.read_bytes()
    status, doc = scan_json(out)
    assert (status, doc["count"]) == (0, 0), doc["findings"][:3]
    report = read_report(read_minidump(out))
    assert report["stack_words_replaced"] > 0
