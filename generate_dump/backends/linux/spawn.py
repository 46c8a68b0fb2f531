"""Start `generate_dump run`'s command the way a shell or subprocess would.

Python ignores SIGPIPE and SIGXFSZ for itself; the command gets them back at their
defaults (as subprocess does), so it observes what it would have observed without us.
"""

from __future__ import annotations

import errno
import os
import resource
TYPE_CHECKING = False  # no typing at run time: it costs run's start-up ~2 ms
if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` imports enum for its enums, ~3 ms of run's start-up
    import _signal as signal
if TYPE_CHECKING:
    from typing import Callable, Optional

from ...errors import CommandNotFound, CommandNotRunnable


def spawn(argv: list[str], *, own_group: bool, core_limit: Optional[tuple[int, int]] = None,
          before_exec: Optional[Callable[[int], None]] = None,
          ignored: tuple[int, ...] = ()) -> int:
    """Fork and exec ``argv``; returns its pid. ``before_exec(pid)`` runs in the parent
    while the child waits just before exec (to seize it). ``ignored``: signals the
    command gets ignored (as it would have inherited them from our caller). Exec failures
    raise CommandNotFound (no such file) or CommandNotRunnable (any other reason)."""
    if before_exec is None and not ignored:  # posix_spawn cannot make a signal ignored
        return _posix_spawn(argv, own_group=own_group, core_limit=core_limit)
    gate_r, gate_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(gate_w)
            os.close(err_r)
            if own_group:
                os.setpgid(0, 0)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            for ign in ignored:
                signal.signal(ign, signal.SIG_IGN)
            if core_limit is not None:
                resource.setrlimit(resource.RLIMIT_CORE, core_limit)
            os.read(gate_r, 1)
            os.close(gate_r)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(err_w, f"{exc.errno}".encode())
        except BaseException:  # noqa: BLE001 - never return into the parent's code
            os.write(err_w, b"0")
        finally:
            os._exit(127)
    os.close(gate_r)
    os.close(err_w)
    if own_group:
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first
    try:
        if before_exec is not None:
            before_exec(pid)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(gate_w)
        os.close(err_r)
        raise
    os.write(gate_w, b"x")
    os.close(gate_w)
    failure = os.read(err_r, 64)
    os.close(err_r)
    if failure:
        os.waitpid(pid, 0x40000000)  # __WALL: also when traced
        code = int(failure or b"0")
        error = CommandNotFound if code == errno.ENOENT else CommandNotRunnable
        raise error(f"cannot run {argv[0]}: {os.strerror(code) if code else 'failed'}")
    return pid


def _posix_spawn(argv: list[str], *, own_group: bool,
                 core_limit: Optional[tuple[int, int]]) -> int:
    """The same start through posix_spawn (vfork and exec, no Python code in the child):
    about 2 ms less than fork from Python, for every command `run` starts. RLIMIT_CORE is
    inherited, so ours is set for the moment of the spawn and put back after."""
    ours = resource.getrlimit(resource.RLIMIT_CORE) if core_limit is not None else None
    try:
        if core_limit is not None:
            resource.setrlimit(resource.RLIMIT_CORE, core_limit)
        try:
            if own_group:
                return os.posix_spawnp(argv[0], argv, os.environ, setpgroup=0,
                                       setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
            return os.posix_spawnp(argv[0], argv, os.environ,
                                   setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            error = CommandNotFound if exc.errno == errno.ENOENT else CommandNotRunnable
            raise error(f"cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        if ours is not None:
            resource.setrlimit(resource.RLIMIT_CORE, ours)
