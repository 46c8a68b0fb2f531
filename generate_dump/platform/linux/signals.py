"""Linux's signal facts that several parts need, by their Linux numbers (the same on
x86-64 and arm64), so that a core or a dump read on another system is judged alike."""

from __future__ import annotations

SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV = 3, 4, 5, 6, 7, 8, 11
SIGXCPU, SIGXFSZ, SIGSYS = 24, 25, 31

# Faults the kernel raises: with si_code > 0, si_addr is the faulting address (for a
# kill or raise the same bytes hold the sender's pid).
FAULT_SIGNALS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP})
FAULT_SIGNAL_NAMES = frozenset({"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP"})

# Signals whose default action ends the process with a core dump (signal(7)): a crash.
CRASH_SIGNALS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS,
                           SIGQUIT, SIGXCPU, SIGXFSZ})


def signal_name(number: int, default: str = "") -> str:
    """"SIGSEGV" for 11; ``default`` (else "SIG<number>") for a number with no name. Loads
    Python's signal module only when a name is wanted (`run` starts without it)."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return default or f"SIG{number}"
