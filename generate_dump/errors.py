"""Errors with messages meant for the user: the command prints ``str(error)`` on one line
and exits with the error's ``exit_status``.

The class says what kind of failure it is, and so what the command exits with; nothing
ever looks at the message text to decide. Every error of the `generate_dump` command,
`inspect`, `watch`, `convert`, `scan` and `core-handler` exits 1. `generate_dump run`
exits like timeout(1): 125 when run itself fails (any DumpError that is not a
:class:`CommandNotRunnable`), 126 when the command cannot be run, 127 when it is not found.
"""


class DumpError(Exception):
    """A failure the user can act on; the message says what happened and what to do."""

    exit_status = 1


class BadInput(DumpError):
    """An argument, option value or input file the command cannot use."""


class TargetNotFound(DumpError):
    """No process with that PID."""


class TargetPermissionError(DumpError):
    """The process exists but may not be read (ptrace rules, another tracer, privileges)."""


class TargetGone(DumpError):
    """The process exited (or its PID was reused) while it was being dumped."""


class InvalidTarget(DumpError):
    """The PID names something that cannot be dumped (ourselves, a thread, a kernel thread,
    an unsupported architecture)."""


class OutputError(DumpError):
    """The output file or directory cannot be written."""


class NoSpaceLeft(OutputError):
    """The output's filesystem is full (watch stops dumping until there is space)."""


class Interrupted(DumpError):
    """The dumper was asked to stop (SIGINT, SIGTERM, SIGHUP)."""


class RunError(DumpError):
    """`generate_dump run` itself failed (timeout(1)'s 125)."""

    exit_status = 125


class CommandNotRunnable(RunError):
    """`generate_dump run`'s command exists but cannot be executed (timeout(1)'s 126)."""

    exit_status = 126


class CommandNotFound(CommandNotRunnable):
    """`generate_dump run`'s command does not exist (timeout(1)'s 127)."""

    exit_status = 127


def run_exit_status(exc: DumpError) -> int:
    """What `generate_dump run` exits with for ``exc``: any error that is not about the
    command itself is run's own failure."""
    return exc.exit_status if isinstance(exc, RunError) else RunError.exit_status


def bug_line(exc: BaseException) -> str:
    """A bug of ours as the one line users see instead of a traceback."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"internal error: {name}: {text} (please report)" if text \
        else f"internal error: {name} (please report)"
