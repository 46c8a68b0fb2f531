"""Opt-in pauses for fault-injection tests: GENERATE_DUMP_TEST_DELAY="phase=seconds,...".

Phases: ``opened`` (target checked, nothing traced yet), ``frozen`` (every thread stopped),
``writing`` (the temporary output file is open). Unset in normal use: costs one lookup.
"""

from __future__ import annotations

import os
import time

ENV = "GENERATE_DUMP_TEST_DELAY"


def pause(phase: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == phase:
            time.sleep(float(seconds))
