"""``generate_dump core-handler``: the kernel's core_pattern pipe handler. It reads the
core the kernel writes to its standard input and writes a minidump instead.

Install (see README, "Minidumps from the kernel")::

    echo '|/usr/local/bin/generate_dump core-handler --dir /var/crash %P %s %t %e' \
        > /proc/sys/kernel/core_pattern

The kernel keeps the dying process (and its /proc/PID) until the core is read, so the
handler reads standard input first, as fast as it can, into an unnamed temporary file,
then converts. A time limit bounds the whole run: past it the handler stops reading
(the kernel then abandons the core), removes what it wrote and exits 1.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Optional

import click

from .errors import DumpError

PROG = "generate_dump"
DEFAULT_DIR = "/var/crash"
DIR_ENV = "GENERATE_DUMP_CORE_DIR"
DEFAULT_TIME_LIMIT = 120.0
_GRACE = 5.0  # after the limit, the watchdog ends the process outright


def _log(message: str, error: bool = False) -> None:
    """One line on stderr (the kernel discards it) and in the system log (LOG_ERR for
    ``error``, which also puts "error: " before the message)."""
    if error:
        message = f"error: {message}"
    try:
        sys.stderr.write(f"{PROG} core-handler: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        import syslog

        syslog.openlog(f"{PROG}-core-handler", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_INFO, message)
    except (ImportError, OSError):
        pass


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)[:64] or "process"


def _watchdog(limit: float) -> None:
    """End this process if it outlives the limit (a write stuck on a slow disk): open
    stdin closes, so the kernel stops waiting; unnamed temporary files vanish."""
    def expire():
        _log(f"time limit of {limit:g} s passed; gave up (no dump written)", error=True)
        os._exit(1)

    t = threading.Timer(limit + _GRACE, expire)
    t.daemon = True
    t.start()


def _keep_spooled(fd: int, path: str) -> None:
    """Give the spooled core its name (no second copy when the file is linkable)."""
    from .output import _link_anonymous, atomic_output

    directory, base = os.path.split(os.path.abspath(path))
    try:
        os.fsync(fd)
        tmp = _link_anonymous(fd, directory, base)
    except (OSError, DumpError):
        tmp = None
    if tmp is not None:
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return
    with atomic_output(path) as out:  # not an O_TMPFILE file: copy it
        pos = 0
        while chunk := os.pread(fd, 4 << 20, pos):
            out.write(chunk)
            pos += len(chunk)


def _process_alive(pid: int) -> bool:
    return pid > 0 and os.path.exists(f"/proc/{pid}/stat")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pid", type=int, metavar="PID")
@click.argument("signal", type=int, metavar="SIGNAL", required=False, default=0)
@click.argument("timestamp", type=int, metavar="TIME", required=False)
@click.argument("comm", metavar="COMM", required=False, default="")
@click.option("--dir", "directory", metavar="DIR", envvar=DIR_ENV, default=DEFAULT_DIR,
              show_default=True,
              help=f"Where to write the minidumps (also from ${DIR_ENV}).")
@click.option("--memory", type=click.Choice(["stacks", "referenced", "full"]),
              default="referenced", show_default=True, help="How much memory to keep.")
@click.option("--max-referenced", default="8M", show_default=True, metavar="SIZE",
              help="Budget for --memory=referenced.")
@click.option("--keep-core", is_flag=True, help="Also keep the core file beside the minidump.")
@click.option("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, show_default=True,
              metavar="SECONDS",
              help="Give up (no output) after this long: the kernel waits for the handler "
                   "while it reads the core.")
def handler_command(pid: int, signal: int, timestamp: Optional[int], comm: str,
                    directory: str, memory: str, max_referenced: str, keep_core: bool,
                    time_limit: float) -> None:
    """Read a core from standard input as the kernel pipes it (core_pattern
    `|generate_dump core-handler %P %s %t %e`) and write DIR/COMM.PID.TIME.dmp.
    PID is %P (the pid in the initial namespace), SIGNAL %s, TIME %t, COMM %e."""
    from .cli import parse_size
    from .convert_command import core_to_minidump

    if sys.stdin is None or sys.stdin.isatty():
        raise DumpError("standard input is a terminal: the kernel pipes the core there "
                        "(see README: installing the core handler)")
    deadline = time.monotonic() + time_limit
    _watchdog(time_limit)
    stamp = timestamp if timestamp is not None else int(time.time())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create the dump directory {directory}: {exc.strerror}") \
            from None
    base = os.path.join(directory, f"{_safe_name(comm or 'core')}.{pid}.{stamp}")
    from .sources.corefile import open_core, spool

    spooled = spool(sys.stdin.buffer, directory, deadline, linkable=keep_core)
    kept = os.dup(spooled) if keep_core else -1
    try:
        core = open_core(spooled, directory)
        try:
            # The whole core is read: the kernel is free now. /proc/PID still describes
            # the dead process until we exit (if core_pipe_limit makes the kernel wait).
            live = pid if _process_alive(pid) else None
            snap, size = core_to_minidump(core, base + ".dmp", memory=memory,
                                          max_referenced=parse_size(max_referenced),
                                          live_pid=live, deadline=deadline, dump_time=stamp)
        finally:
            core.close()
        if keep_core:
            _keep_spooled(kept, base + ".core")
    finally:
        if kept >= 0:
            os.close(kept)
    if time.monotonic() > deadline:
        for suffix in (".dmp", ".core"):
            try:
                os.unlink(base + suffix)
            except OSError:
                pass
        raise DumpError(f"time limit of {time_limit:g} s passed; gave up")
    _log(f"wrote {base}.dmp (signal {signal}, {len(snap.threads)} threads, "
         f"{size // 1024} KiB)")


def main(args: list[str]) -> None:
    try:
        handler_command.main(args=args, prog_name=f"{PROG} core-handler",
                             standalone_mode=False)
    except click.exceptions.UsageError as exc:
        _log(f"{exc.format_message()} (see '{PROG} core-handler --help')", error=True)
        sys.exit(1)
    except DumpError as exc:
        _log(str(exc), error=True)
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        _log("interrupted", error=True)
        sys.exit(1)
    sys.exit(0)
