"""Errors with messages meant for the user: the CLI prints ``str(error)`` and exits 1."""


class DumpError(Exception):
    """A failure the user can act on; the message says what happened and what to do."""


class TargetNotFound(DumpError):
    pass


class TargetPermissionError(DumpError):
    pass


class TargetGone(DumpError):
    """The process exited (or its PID was reused) while it was being dumped."""


class InvalidTarget(DumpError):
    pass


class OutputError(DumpError):
    pass


class Interrupted(DumpError):
    """The dumper was asked to stop (SIGINT, SIGTERM, SIGHUP)."""
