"""The target is never harmed: the dumper killed or interrupted at any moment, targets that
churn threads, exit, are stopped or get signals mid-dump, a recycled PID, failing output."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generate_dump.minidump import read_minidump
from live import Target, assert_running_untraced, compile_program, run_dumper, thread_state

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bin")
    return {"threads": compile_program("threads", d), "faults": compile_program("faults", d)}


def start_dumper(*args, delay: str = "") -> subprocess.Popen:
    env = dict(os.environ)
    if delay:
        env["GENERATE_DUMP_TEST_DELAY"] = delay
    return subprocess.Popen([sys.executable, "-m", "generate_dump", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_trace(pid: int, timeout: float = 20) -> None:
    """Wait until some thread of ``pid`` is traced (the dumper is inside the freeze)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                st = Path(f"/proc/{pid}/task/{t}/status").read_text()
            except OSError:
                continue
            if "TracerPid:\t0" not in st:
                return
        time.sleep(0.002)
    raise AssertionError("the dumper never traced the target")


def no_leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".tmp") or n.startswith("out")]


def test_sigkill_at_random_moments(bins, tmp_path):
    """50 rounds: SIGKILL the dumper at a random moment (attach, copy, write)."""
    rng = random.Random(1234)
    with Target([bins["threads"], "60"]) as target:
        for round_ in range(50):
            out = tmp_path / "out.dmp"
            # Stretch one phase now and then so that every phase gets hit.
            delay = rng.choice(["", "", "opened=0.05", "frozen=0.05", "writing=0.05"])
            p = start_dumper(target.pid, "-o", out, delay=delay)
            time.sleep(rng.uniform(0.0, 0.35))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            p.stdout.close(); p.stderr.close()
            assert_running_untraced(target.pid)
            assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
            if out.exists():  # it finished before the kill: then it is complete
                read_minidump(out)
                out.unlink()
        assert len(target.live_tids()) == 64  # main + 3 + 60: none lost


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("phase", ["frozen", "writing"])
def test_signal_mid_dump(bins, tmp_path, sig, phase):
    with Target([bins["threads"]]) as target:
        out = tmp_path / "out.dmp"
        p = start_dumper(target.pid, "-o", out, delay=f"{phase}=1.5")
        if phase == "frozen":
            wait_for_trace(target.pid)
        else:
            time.sleep(1.0)
        time.sleep(0.2)
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 1
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "interrupted by " + sig.name in lines[0], stderr
        assert stdout == ""
        assert_running_untraced(target.pid)
        assert os.listdir(tmp_path) == []


def test_thread_churn(bins, tmp_path):
    """Threads created and ended thousands of times a second: 50 dumps all succeed."""
    with Target([bins["faults"], "churn"], wait_parked=False) as target:
        for i in range(50):
            out = tmp_path / f"churn{i}.dmp"
            run_dumper(target.pid, "-o", out)
            md = read_minidump(out)
            assert len(md.threads) >= 5  # main + 4 spawners at least
            assert md.thread(target.pid)
            for t in md.threads:
                assert t.context is not None and t.context_size == 1232
            out.unlink()
            assert_running_untraced(target.pid)


def test_target_killed_mid_dump(bins, tmp_path):
    target = Target([bins["threads"]])
    try:
        out = tmp_path / "out.dmp"
        p = start_dumper(target.pid, "-o", out, delay="frozen=1.0")
        wait_for_trace(target.pid)
        target.proc.send_signal(signal.SIGKILL)
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 1, stderr
        assert "exited during the dump" in stderr and len(stderr.strip().splitlines()) == 1
        assert os.listdir(tmp_path) == []
    finally:
        target.close()


def test_target_exits_before_attach(bins, tmp_path):
    target = Target([bins["threads"]])
    try:
        out = tmp_path / "out.dmp"
        p = start_dumper(target.pid, "-o", out, delay="opened=1.0")
        time.sleep(0.3)
        target.proc.send_signal(signal.SIGKILL)
        target.proc.wait()
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 1
        assert "exited" in stderr or "no process" in stderr, stderr
        assert os.listdir(tmp_path) == []
    finally:
        target.close()


def test_already_stopped_stays_stopped(bins, tmp_path):
    with Target([bins["threads"]]) as target:
        os.kill(target.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while any(thread_state(target.pid, t) != "T" for t in target.tids()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        out = tmp_path / "stopped.dmp"
        run_dumper(target.pid, "-o", out)
        assert len(read_minidump(out).threads) == 4
        time.sleep(0.2)
        assert all(thread_state(target.pid, t) == "T" for t in target.tids()), \
            "a job-control stopped process must stay stopped"
        status = Path(f"/proc/{target.pid}/status").read_text()
        assert "TracerPid:\t0" in status
        os.kill(target.pid, signal.SIGCONT)
        assert_running_untraced(target.pid)


def test_signals_during_freeze_are_not_lost(bins, tmp_path):
    with Target([bins["faults"], "signals"]) as target:
        out = tmp_path / "sig.dmp"
        p = start_dumper(target.pid, "-o", out, delay="frozen=0.5")
        wait_for_trace(target.pid)
        for _ in range(3):
            os.kill(target.pid, signal.SIGUSR1)
            time.sleep(0.02)
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 0, stderr
        # Standard signals coalesce: at least one delivery must come through.
        line = target.proc.stdout.readline()
        assert line.strip() == "USR1"
        assert_running_untraced(target.pid)


def test_thread_that_cannot_stop_is_a_soft_error(bins, tmp_path):
    """A thread in vfork() ignores PTRACE_INTERRUPT: it is left out, with a warning."""
    with Target([bins["faults"], "vfork"], wait_parked=False) as target:
        out = tmp_path / "vfork.dmp"
        r = run_dumper(target.pid, "-o", out)
        warnings = [l for l in r.stderr.splitlines() if "warning" in l]
        assert len(warnings) == 1 and "did not stop" in warnings[0], r.stderr
        md = read_minidump(out)
        assert any(e.kind == "thread-not-stopped" for e in md.soft_errors)
        assert md.thread(target.pid)
        assert_running_untraced(target.pid)
        from readers import rust_stackwalk_json
        doc = rust_stackwalk_json(out)
        assert any(e.get("kind") == "thread-not-stopped" for e in doc["soft_errors"])
    # Reap the vfork child that outlives the target (it was reparented).
    subprocess.run(["pkill", "-9", "-P", "1", "-f", str(bins["faults"])], check=False)


def _set_next_pid(pid: int) -> bool:
    try:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        return True
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="recycling a PID needs root (ns_last_pid)")
def test_recycled_pid_is_not_dumped(bins, tmp_path):
    """The PID is killed and reused by another process while the dumper waits: no dump."""
    first = Target([bins["threads"]])
    pid = first.pid
    out = tmp_path / "out.dmp"
    p = start_dumper(pid, "-o", out, delay="opened=1.5")
    time.sleep(0.5)
    first.close()
    second = None
    for _ in range(20):
        if not _set_next_pid(pid):
            pytest.skip("cannot write /proc/sys/kernel/ns_last_pid")
        candidate = Target([bins["threads"]])
        if candidate.pid == pid:
            second = candidate
            break
        candidate.close()
    assert second is not None, "could not recycle the PID"
    try:
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 1
        assert "names another process" in stderr or "exited" in stderr, stderr
        assert not out.exists()
        assert_running_untraced(second.pid)
    finally:
        second.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full(bins, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        with Target([bins["threads"]]) as target:
            res = run_dumper(target.pid, "-o", mnt / "full.dmp", check=False)
            assert res.returncode == 1
            assert "no space left" in res.stderr and len(res.stderr.strip().splitlines()) == 1
            assert os.listdir(mnt) == []
            assert_running_untraced(target.pid)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -r never freezes the whole process: it has no "frozen" stage.
_STAGES = [(phase, mode) for phase in ("frozen", "stacks", "modules", "writer")
           for mode in ("suspend", "-r", "--memory=full") if (phase, mode) != ("frozen", "-r")]


@pytest.mark.parametrize("phase,mode", _STAGES)
def test_unexpected_failure_at_each_stage(bins, tmp_path, phase, mode):
    """A bug of ours (GENERATE_DUMP_TEST_FAIL raises a RuntimeError) at any stage of the
    capture or the writing: one line on stderr, exit 1, no output file, and the target
    runs on untraced with every thread out of the stop."""
    mode = [] if mode == "suspend" else [mode]
    with Target([bins["threads"]]) as target:
        out = tmp_path / "out.dmp"
        env = dict(os.environ, GENERATE_DUMP_TEST_FAIL=phase)
        r = run_dumper(target.pid, *mode, "-o", out, check=False, env=env)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines == [f"generate_dump: error: internal error: InjectedFailure: injected "
                         f"failure at {phase} (please report)"], r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert os.listdir(tmp_path) == []
        assert_running_untraced(target.pid)
        # Still the same process, still answering: all its threads are alive.
        assert len(target.live_tids()) == 4
