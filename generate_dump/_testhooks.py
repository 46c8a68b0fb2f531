"""Opt-in pauses and failures for fault-injection tests.

GENERATE_DUMP_TEST_DELAY="phase=seconds,...": sleep at a phase. Phases: ``opened`` (target
checked, nothing traced yet), ``frozen`` (every thread stopped), ``writing`` (the temporary
output file is open).

GENERATE_DUMP_TEST_FAIL="phase,...": raise an unexpected error (a RuntimeError, i.e. a bug
of ours) at a phase, to prove that every stage fails cleanly. Phases: ``frozen`` (after
every thread stopped), ``stacks`` (while stacks are copied), ``modules`` (while modules
are gathered, after the release), ``writer`` (halfway through writing the file),
``run-start`` (`generate_dump run`, before its command is started).

Unset in normal use: each costs one environment lookup.
"""

from __future__ import annotations

import os
import time

ENV = "GENERATE_DUMP_TEST_DELAY"
FAIL_ENV = "GENERATE_DUMP_TEST_FAIL"


class InjectedFailure(RuntimeError):
    """The failure GENERATE_DUMP_TEST_FAIL asks for."""


def pause(phase: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == phase:
            time.sleep(float(seconds))


def fail(phase: str) -> None:
    spec = os.environ.get(FAIL_ENV)
    if spec and phase in (p.strip() for p in spec.split(",")):
        raise InjectedFailure(f"injected failure at {phase}")
