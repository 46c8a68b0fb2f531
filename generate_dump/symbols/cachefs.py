"""Putting a downloaded file into an on-disk cache without ever leaving a partial one there.

A download goes to a temporary file in the destination folder, is checked by the caller,
then renamed into place (read-only, mtime from the server's Last-Modified, as elfutils
does). A cache that cannot be written (read-only, full, not ours) is reported once and the
run goes on with a private temporary folder, removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from typing import BinaryIO, Callable, Optional

from . import session
from .http import FetchError, Response

_fallback: Optional[str] = None
_fallback_lock = threading.Lock()


def fallback_dir() -> Optional[str]:
    """A private folder for downloads when the cache cannot be written (this run only)."""
    global _fallback
    with _fallback_lock:
        if _fallback is None:
            try:
                _fallback = tempfile.mkdtemp(prefix="generate_dump-symbols-")
            except OSError:
                return None
            atexit.register(shutil.rmtree, _fallback, True)
        return _fallback


def download_into(root: str, final: str, fetch: Callable[[BinaryIO], Optional[Response]],
                  check: Callable[[str], Optional[str]], mode: int = 0o400,
                  what: str = "cache") -> tuple[Optional[str], Optional[str]]:
    """Download with ``fetch(file)`` into a temporary file beside ``final`` (a path under the
    cache folder ``root``), accept it if
    ``check(path)`` returns None (else it returns why not), then rename it to ``final``.

    Returns (path, None), (None, why-rejected) or (None, None) when the server has no such
    file. Raises FetchError for the server's failures; cache write problems are warned
    about here and the fallback folder is used."""
    folder = os.path.dirname(final)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", dir=folder)
    except OSError as exc:
        session.warn(f"{what} {root} cannot be written "
                     f"({exc.strerror or exc}); downloads are kept for this run only")
        alt = fallback_dir()
        if alt is None:
            return None, None
        rel = os.path.relpath(final, root)
        final = os.path.join(alt, rel)
        folder = os.path.dirname(final)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", dir=folder)
        except OSError as exc2:
            session.warn(f"cannot write downloaded symbols anywhere ({exc2.strerror or exc2})")
            return None, None
    keep = False
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                resp = fetch(f)
        except OSError as exc:  # writing failed (also when flushed at close): disk full
            session.warn(f"{what} {folder}: {exc.strerror or exc}; download dropped")
            return None, None
        if resp is None:
            return None, None
        why = check(tmp)
        if why is not None:
            return None, why
        try:
            os.chmod(tmp, mode)
            if resp.last_modified is not None:
                os.utime(tmp, (time.time(), resp.last_modified))
            os.replace(tmp, final)
        except OSError as exc:
            session.warn(f"{what} {folder}: {exc.strerror or exc}; download dropped")
            return None, None
        keep = True
        return final, None
    finally:
        if not keep:
            try:
                os.unlink(tmp)
            except OSError:
                pass


__all__ = ["FetchError", "download_into", "fallback_dir"]
