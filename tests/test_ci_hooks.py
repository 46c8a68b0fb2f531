"""The ci/ hooks, executed here: the shell wrapper and the GitHub Action's own run steps."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generate_dump.sources.minidump_file import read_minidump_snapshot
from live import ROOT, compile_program

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run needs ptrace")

WRAPPER = ROOT / "ci" / "run-with-dumps.sh"
ACTION = ROOT / "ci" / "github" / "action.yml"


@pytest.fixture(scope="module")
def crashers(tmp_path_factory) -> Path:
    return compile_program("crashers", tmp_path_factory.mktemp("bin"), "-O0")


def generate_dump_command() -> str:
    found = shutil.which("generate_dump")
    assert found, "the generate_dump console script must be on PATH (scripts/test puts it there)"
    return found


def wrapper(tmp_path: Path, *args, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, GENERATE_DUMP=generate_dump_command(), **(env_extra or {}))
    return subprocess.run(["bash", str(WRAPPER), *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)


def test_wrapper_keeps_status_and_lists_dumps(crashers, tmp_path):
    out = tmp_path / "gh_output"
    r = wrapper(tmp_path, "--", crashers, "segv", env_extra={"GITHUB_OUTPUT": str(out)})
    assert r.returncode == 139
    dumps = sorted((tmp_path / "minidumps").glob("*.dmp"))
    assert len(dumps) == 1
    listed = (tmp_path / "minidumps" / "dumps.txt").read_text().split()
    assert [Path(tmp_path / p).resolve() for p in listed] == [d.resolve() for d in dumps]
    assert "run-with-dumps: 1 minidump(s) in minidumps:" in r.stderr
    assert out.read_text().strip() == "dump-count=1"
    assert read_minidump_snapshot(dumps[0]).exception.code == 11


def test_wrapper_timeout(crashers, tmp_path):
    r = wrapper(tmp_path, "--timeout", "1s", "--dump-dir", "out", "--", crashers, "hang-child")
    assert r.returncode == 124
    assert len(list((tmp_path / "out").glob("*.dmp"))) == 2


def test_wrapper_clean_run_leaves_nothing(crashers, tmp_path):
    out = tmp_path / "gh_output"
    r = wrapper(tmp_path, "--", crashers, "exit", "0", env_extra={"GITHUB_OUTPUT": str(out)})
    assert r.returncode == 0
    d = tmp_path / "minidumps"
    assert not d.exists() or list(d.iterdir()) == []
    assert out.read_text().strip() == "dump-count=0"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_wrapper_trace_mode(crashers, tmp_path, how):
    """--trace (or RUN_TRACE=1) reaches run: only tracing sees the original fault behind a
    handler that re-raises it (SEGV_MAPERR, where the default mode reports SI_TKILL)."""
    if how == "flag":
        r = wrapper(tmp_path, "--trace", "--", crashers, "reraise")
    else:
        r = wrapper(tmp_path, "--", crashers, "reraise", env_extra={"RUN_TRACE": "1"})
    assert r.returncode == 139, r.stderr
    (dump,) = (tmp_path / "minidumps").glob("*.dmp")
    e = read_minidump_snapshot(dump).exception
    assert e.code == 11 and e.flags == 1  # SEGV_MAPERR: the fault itself


def test_wrapper_usage(tmp_path):
    r = wrapper(tmp_path)
    assert r.returncode == 125 and "usage:" in r.stderr


def _action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def test_action_uploads_always_and_only_when_dumps_exist():
    action = _action()
    assert action["runs"]["using"] == "composite"
    upload = action["runs"]["steps"][-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"  # also when the job fails, times out or is cancelled
    assert upload["with"]["if-no-files-found"] == "ignore"
    assert upload["with"]["path"] == "${{ inputs.dump-dir }}"
    # Inputs reach the scripts through env, never pasted into the script text.
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]


def _run_step(step: dict, inputs: dict, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Execute a composite step's run script as GitHub does (bash -e -o pipefail)."""
    def expand(value: str) -> str:
        value = value.replace("${{ github.action_path }}", str(ACTION.parent))
        return re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: inputs[m.group(1)], value)

    step_env = dict(env, **{k: expand(str(v)) for k, v in step.get("env", {}).items()})
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                           step["run"]], capture_output=True, text=True, cwd=cwd,
                          env=step_env, timeout=600)


@pytest.mark.parametrize("mode, status, count", [("segv", 139, 1), ("exit 0", 0, 0)])
def test_action_steps_run_locally(crashers, tmp_path, mode, status, count):
    action = _action()
    inputs = {k: v.get("default", "") for k, v in action["inputs"].items()}
    inputs["command"] = f"{crashers} {mode}"
    gh_env, gh_out = tmp_path / "github_env", tmp_path / "github_output"
    env = dict(os.environ, RUNNER_TEMP=str(tmp_path / "runner"), GITHUB_ENV=str(gh_env),
               GITHUB_OUTPUT=str(gh_out))
    (tmp_path / "runner").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    install, run_step = action["runs"]["steps"][0], action["runs"]["steps"][1]
    r = _run_step(install, inputs, env, work)
    assert r.returncode == 0, r.stderr[-3000:]
    exported = dict(line.split("=", 1) for line in gh_env.read_text().splitlines())
    assert os.access(exported["GENERATE_DUMP"], os.X_OK)
    r = _run_step(run_step, inputs, dict(env, **exported), work)
    assert r.returncode == status, r.stderr
    assert gh_out.read_text().strip() == f"dump-count={count}"
    assert len(list((work / "minidumps").glob("*.dmp"))) == count
