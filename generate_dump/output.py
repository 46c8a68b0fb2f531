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
from typing import BinaryIO, Iterator, Optional

from .errors import NoSpaceLeft, OutputError


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


def _open_anonymous(directory: str) -> Optional[int]:
    """An unnamed 0600 file in ``directory`` (O_TMPFILE): if we die, it vanishes with us."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        # Read-write: --redact of a full dump edits the file before it is named.
        return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # the filesystem has no O_TMPFILE: use a named temporary file
        raise OutputError(f"cannot create a file in {directory}: {exc.strerror}") from None


def _open_named(directory: str, base: str) -> tuple[int, str]:
    for n in range(100):
        candidate = os.path.join(directory, f".{base}.{os.getpid()}.{n}.tmp")
        try:
            # O_CLOEXEC does not exist on Windows (Python's fds are non-inheritable anyway).
            fd = os.open(candidate, os.O_RDWR | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_BINARY", 0), 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create a file in {directory}: {exc.strerror}") from None
        return fd, candidate
    raise OutputError(f"cannot create a temporary file in {directory}")


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``path``, on failure it vanishes.

    The data goes to an unnamed file (O_TMPFILE) that is named only once it is complete
    and synced: linked as ``path`` when that name is free, else given a temporary name and
    renamed over ``path``; so even a SIGKILL while writing leaves nothing behind. Without O_TMPFILE a named 0600 temporary file is used
    and removed on every failure we survive.
    """
    path = check_output_path(path)
    directory, base = os.path.split(path)
    fd = _open_anonymous(directory)
    tmp: Optional[str] = None
    if fd is None:
        fd, tmp = _open_named(directory, base)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
                if tmp is None:
                    placed = _link_anonymous(f.fileno(), directory, base, final=True)
                    if placed is None:  # the name is taken: replace it through a rename
                        tmp = _link_anonymous(f.fileno(), directory, base)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise NoSpaceLeft(f"no space left on the device to write {path}") from None
                raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        if tmp is not None:
            # Refuse to replace a symlink that appeared meanwhile.
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    raise OutputError(f"output {path} became a symbolic link; not replacing it")
            except FileNotFoundError:
                pass
            os.replace(tmp, path)
            tmp = None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise NoSpaceLeft(f"no space left on the device to write {path}") from None
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _link_anonymous(fd: int, directory: str, base: str, final: bool = False) -> Optional[str]:
    """Give the finished O_TMPFILE file a temporary name in ``directory``; with ``final``,
    its own name ``base`` if that is free (linkat never replaces anything, a symlink
    included: so a new dump appears whole, with no temporary name that a SIGKILL between
    link and rename could leave behind), else None."""
    # Python calls linkat(..., AT_SYMLINK_FOLLOW) only when a dir fd is given.
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if final:
            try:
                os.link(f"/proc/self/fd/{fd}", base, dst_dir_fd=dir_fd, follow_symlinks=True)
            except FileExistsError:
                return None
            return os.path.join(directory, base)
        for n in range(100):
            name = f".{base}.{os.getpid()}.{n}.tmp"
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
            except FileExistsError:
                continue
            return os.path.join(directory, name)
    finally:
        os.close(dir_fd)
    raise OutputError(f"cannot name the output file in {directory}")


def write_snapshot(snapshot, path: str, options=None, progress=None, redact: bool = False) -> int:
    """Older name of :func:`generate_dump.session.write_dump` (``options``: WriteOptions)."""
    from .session import write_dump

    memory64 = bool(options is not None and options.memory64)
    return write_dump(snapshot, path, memory64=memory64, progress=progress, redact=redact)
