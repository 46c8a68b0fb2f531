"""Write a dump file safely: a 0600 temporary file beside the target, fsync, then rename.

A reader never sees a partial file under the final name, an existing file is replaced
atomically (never truncated in place), a symlink at the output path is refused rather
than followed, and the temporary file is removed on any failure or interruption.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .errors import OutputError


def check_output_path(path: str) -> str:
    """Validate ``path`` before any work is done; returns its absolute form."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path) or "."
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot use output {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(f"output {path} is a symbolic link; refusing to write through "
                              "it (give the real path)")
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"output {path} is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"output {path} exists and is not a regular file")
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {directory} is not writable")
    return path


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``path``, on failure it vanishes."""
    path = check_output_path(path)
    directory, base = os.path.split(path)
    tmp = None
    for n in range(100):
        candidate = os.path.join(directory, f".{base}.{os.getpid()}.{n}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create a file in {directory}: {exc.strerror}") from None
        tmp = candidate
        break
    if tmp is None:
        raise OutputError(f"cannot create a temporary file in {directory}")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise OutputError(f"no space left on the device to write {path}") from None
                raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        # Refuse to replace a symlink that appeared meanwhile.
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise OutputError(f"output {path} became a symbolic link; not replacing it")
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
