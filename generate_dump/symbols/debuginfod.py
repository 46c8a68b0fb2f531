"""A debuginfod client that reads the environment and shares the cache as elfutils does.

Environment (as libdebuginfod 0.188 reads it):

- ``DEBUGINFOD_URLS``: server URLs separated by spaces; unset or empty: no lookups and
  the cache is not read either.
- ``DEBUGINFOD_CACHE_PATH``: the cache folder; else ``~/.debuginfod_client_cache`` if
  it exists; else ``$XDG_CACHE_HOME/debuginfod_client``; else
  ``~/.cache/debuginfod_client``.
- ``DEBUGINFOD_TIMEOUT``: seconds without progress before a request fails (default 90).
- ``DEBUGINFOD_MAXSIZE``: largest file accepted, in bytes (default: our cap, 2 GiB).
- ``DEBUGINFOD_MAXTIME``: most seconds one download may take (default: no limit).

Cache layout, shared with gdb, eu-stack and debuginfod-find: ``CACHE/BUILDID/executable``
and ``CACHE/BUILDID/debuginfo`` (BUILDID in lower-case hex), folders 0700, files 0400 with
the server's Last-Modified as mtime, ``CACHE/cache_clean_interval_s`` holding the cleaning
interval (86400). An empty file at a target path is elfutils' negative cache entry (the
servers had nothing): honoured for ``CACHE/cache_miss_s`` seconds (default 600) and written
when every server answered 404. We never clean the cache; elfutils' clients do.

A downloaded file enters the cache only if its build id is the one asked for.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Optional, TypeVar

from . import session
from .cachefs import download_into
from .http import FetchError, get

DEFAULT_TIMEOUT = 90
DEFAULT_MAX_BYTES = 2 << 30
CACHE_CLEAN_INTERVAL_S = 86400
CACHE_MISS_S = 600
KINDS = ("executable", "debuginfo")


def server_urls(env=None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    return tuple(u.rstrip("/") for u in (env.get("DEBUGINFOD_URLS") or "").split() if u)


def cache_path(env=None) -> str:
    env = os.environ if env is None else env
    if env.get("DEBUGINFOD_CACHE_PATH"):
        return env["DEBUGINFOD_CACHE_PATH"]
    home = env.get("HOME") or os.path.expanduser("~")
    legacy = os.path.join(home, ".debuginfod_client_cache")
    if os.path.isdir(legacy):
        return legacy
    xdg = env.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "debuginfod_client")
    return os.path.join(home, ".cache", "debuginfod_client")


_D = TypeVar("_D", float, Optional[float])


def _number(env, name: str, default: _D) -> _D:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        session.warn(f"{name}={raw!r} is not a number; using "
                     f"{default if default is not None else 'no limit'}")
        return default
    return value if value > 0 else default


def _read_int_file(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or default)
    except (OSError, ValueError):
        return default


class DebuginfodClient:
    def __init__(self, urls: tuple[str, ...], cache: str, timeout: float,
                 max_bytes: int, max_time: Optional[float]):
        self.urls = urls
        self.cache = cache
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_time = max_time
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @classmethod
    def from_environment(cls, env=None) -> Optional["DebuginfodClient"]:
        env = os.environ if env is None else env
        urls = server_urls(env)
        if not urls:
            return None
        return cls(urls, cache_path(env), _number(env, "DEBUGINFOD_TIMEOUT", DEFAULT_TIMEOUT),
                   int(_number(env, "DEBUGINFOD_MAXSIZE", DEFAULT_MAX_BYTES)),
                   _number(env, "DEBUGINFOD_MAXTIME", None))

    def key(self) -> tuple:
        return (self.urls, os.path.abspath(self.cache))

    def _lock_for(self, path: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(path, threading.Lock())

    def cached(self, build_id: str, kind: str) -> tuple[Optional[str], bool]:
        """(path, negative): a cached file, or whether a fresh negative entry says none."""
        path = os.path.join(self.cache, build_id, kind)
        try:
            st = os.stat(path)
        except OSError:
            return None, False
        if st.st_size > 0:
            return path, False
        miss_s = _read_int_file(os.path.join(self.cache, "cache_miss_s"), CACHE_MISS_S)
        if time.time() - st.st_mtime < miss_s:
            return None, True
        try:
            os.unlink(path)  # stale negative entry: ask again
        except OSError:
            pass
        return None, False

    def find(self, build_id: bytes, kind: str, check) -> tuple[Optional[str], list[str]]:
        """The cached or downloaded ``kind`` file for ``build_id``: (path, rejected) where
        ``check(path)`` returns None for an acceptable file or the reason it is not, and
        ``rejected`` lists what servers sent that failed the check."""
        hexid = build_id.hex()
        target = os.path.join(self.cache, hexid, kind)
        rejected: list[str] = []
        with self._lock_for(target):
            path, negative = self.cached(hexid, kind)
            if path is not None or negative:
                return path, rejected
            self._init_cache()
            misses = 0
            for server in self.urls:
                if session.is_down(server):
                    continue
                url = f"{server}/buildid/{hexid}/{kind}"
                dl = session.deadline()
                if self.max_time is not None:
                    own = time.monotonic() + self.max_time
                    dl = own if dl is None else min(dl, own)
                try:
                    got, why = download_into(
                        self.cache, target,
                        functools.partial(get, url, timeout=self.timeout,
                                          max_bytes=self.max_bytes, magic=b"\x7fELF",
                                          deadline=dl),
                        check, what="debuginfod cache")
                except FetchError as exc:
                    session.fetch_failed(exc, server, url, kind="debuginfod",
                                         what="debuginfod server",
                                         limits="DEBUGINFOD_MAXTIME or the summaries' limit")
                    continue
                if got is not None:
                    return got, rejected
                if why is not None:
                    session.warn(f"debuginfod {url}: {why}; ignored")
                    rejected.append(f"{url} ({why})")
                    continue
                misses += 1
            if misses == len(self.urls):
                self._write_negative(target)
        return None, rejected

    def _init_cache(self) -> None:
        """The cache folder and its cleaning-interval file, as elfutils creates them."""
        try:
            os.makedirs(self.cache, exist_ok=True)
            interval = os.path.join(self.cache, "cache_clean_interval_s")
            if not os.path.exists(interval):
                fd = os.open(interval, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                with os.fdopen(fd, "w") as f:
                    f.write(str(CACHE_CLEAN_INTERVAL_S))
        except OSError:
            pass  # reported when a download cannot be stored

    def _write_negative(self, target: str) -> None:
        try:
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError:
            pass


_client_lock = threading.Lock()
_clients: dict[tuple, Optional[DebuginfodClient]] = {}


def client() -> Optional[DebuginfodClient]:
    """The client for the current environment (None when DEBUGINFOD_URLS is unset)."""
    env = os.environ
    key = tuple(env.get(k) for k in ("DEBUGINFOD_URLS", "DEBUGINFOD_CACHE_PATH",
                                     "DEBUGINFOD_TIMEOUT", "DEBUGINFOD_MAXSIZE",
                                     "DEBUGINFOD_MAXTIME", "XDG_CACHE_HOME", "HOME"))
    with _client_lock:
        if key not in _clients:
            _clients[key] = DebuginfodClient.from_environment(env)
        return _clients[key]


__all__ = ["DebuginfodClient", "KINDS", "cache_path", "client", "server_urls"]
