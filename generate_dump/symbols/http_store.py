"""Breakpad symbol stores over HTTP (``--symbols-url``), cached on disk.

A store answers ``URL/NAME/DEBUGID/NAME.sym`` (NAME: the debug file name, ``libfoo.so``;
for PE modules the PDB name ``foo.pdb`` with ``foo.sym``; DEBUGID: Breakpad's id with the
age appended), as rust-minidump's ``--symbols-url`` and Mozilla's Tecken/Socorro use.

Downloads are kept in ``$GENERATE_DUMP_SYMBOLS_CACHE`` (default
``$XDG_CACHE_HOME/generate_dump/symbols``, else ``~/.cache/generate_dump/symbols``) in
the same ``NAME/DEBUGID/NAME.sym`` layout, so that folder also works as a
``--symbols-path`` store for us and for Breakpad's and rust-minidump's stackwalkers. A
file is stored only when its ``MODULE`` line carries the debug id asked for.
``GENERATE_DUMP_SYMBOLS_TIMEOUT``: seconds without progress before a request fails
(default 30).
"""

from __future__ import annotations

import functools
import os
import threading
from urllib.parse import quote
from typing import Optional

from . import session
from .cachefs import download_into
from .http import FetchError, get

DEFAULT_TIMEOUT = 30
MAX_BYTES = 1 << 30  # a .sym of Firefox's libxul is ~400 MB


def cache_dir(env=None) -> str:
    env = os.environ if env is None else env
    if env.get("GENERATE_DUMP_SYMBOLS_CACHE"):
        return env["GENERATE_DUMP_SYMBOLS_CACHE"]
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "generate_dump", "symbols")


def _safe_part(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\\" not in part \
        and "\0" not in part


class SymbolStore:
    def __init__(self, urls: tuple[str, ...], cache: str, timeout: float = DEFAULT_TIMEOUT):
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.cache = cache
        self.timeout = timeout
        self._misses: set[tuple[str, str, str]] = set()
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def cached(self, folder: str, debug_id: str, filename: str) -> Optional[str]:
        path = os.path.join(self.cache, folder, debug_id, filename)
        return path if os.path.isfile(path) and os.path.getsize(path) > 0 else None

    def find(self, folder: str, debug_id: str, filename: str,
             check) -> tuple[Optional[str], Optional[str], list[str]]:
        """(path, url it came from or None if cached, rejected downloads)."""
        rejected: list[str] = []
        if not all(_safe_part(p) for p in (folder, debug_id, filename)):
            return None, None, rejected
        key = (folder, debug_id, filename)
        with self._lock:
            one = self._locks.setdefault(key, threading.Lock())
        with one:
            hit = self.cached(folder, debug_id, filename)
            if hit is not None:
                return hit, None, rejected
            if key in self._misses:
                return None, None, rejected
            target = os.path.join(self.cache, folder, debug_id, filename)
            for server in self.urls:
                if session.is_down(server):
                    continue
                url = f"{server}/{quote(folder)}/{quote(debug_id)}/{quote(filename)}"
                dl = session.deadline()
                try:
                    got, why = download_into(
                        self.cache, target,
                        functools.partial(get, url, timeout=self.timeout,
                                          max_bytes=MAX_BYTES, magic=b"MODULE ", deadline=dl),
                        check, mode=0o644, what="symbol cache")
                except FetchError as exc:
                    session.fetch_failed(exc, server, url, kind="symbol server",
                                         what="symbol server", limits="the summaries' limit")
                    continue
                if got is not None:
                    return got, url, rejected
                if why is not None:
                    session.warn(f"symbol server {url}: {why}; ignored")
                    rejected.append(f"{url} ({why})")
            self._misses.add(key)
        return None, None, rejected


_stores: dict[tuple, SymbolStore] = {}
_stores_lock = threading.Lock()


def store(urls: tuple[str, ...]) -> Optional[SymbolStore]:
    if not urls:
        return None
    cache = cache_dir()
    timeout: float = DEFAULT_TIMEOUT
    raw = os.environ.get("GENERATE_DUMP_SYMBOLS_TIMEOUT")
    if raw:
        try:
            timeout = float(raw) if float(raw) > 0 else DEFAULT_TIMEOUT
        except ValueError:
            pass
    key = (urls, cache, timeout)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = SymbolStore(urls, cache, timeout)
        return _stores[key]


def reset() -> None:
    with _stores_lock:
        _stores.clear()


__all__ = ["SymbolStore", "cache_dir", "store", "reset"]
