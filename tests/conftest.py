"""Session fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import Symbols
from live import compile_program


@pytest.fixture(scope="session")
def threads_bin(tmp_path_factory) -> Path:
    return compile_program("threads", tmp_path_factory.mktemp("bin"))


@pytest.fixture(scope="session")
def symbols(tmp_path_factory) -> Symbols:
    """A Breakpad symbol store, filled with dump_syms output as dumps need it."""
    return Symbols(tmp_path_factory.mktemp("symbols"))
