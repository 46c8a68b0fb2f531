"""Read another process's memory in bulk: process_vm_readv, falling back to /proc/PID/mem.

Many ranges go out in one process_vm_readv call (up to IOV_MAX iovecs), so copying a
thousand stacks costs a handful of syscalls. The kernel stops at the first range it can't
read; the rest are retried one by one, and a range that still fails is read page by page
through /proc/PID/mem, keeping whatever is readable from its start.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
from typing import Any, Optional, Sequence

_libc = ctypes.CDLL(None, use_errno=True)
_IOV_MAX = 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


_process_vm_readv: Any  # the libc function; None on a libc without it
try:
    _process_vm_readv = _libc.process_vm_readv
    _process_vm_readv.restype = ctypes.c_ssize_t
    _process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                                  ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
except AttributeError:  # very old libc
    _process_vm_readv = None


class MemoryReader:
    """Reads memory of ``pid`` (any live thread id of the process works)."""

    def __init__(self, pid: int):
        self.pid = pid
        self._vm_ok = _process_vm_readv is not None
        self._mem_fd: Optional[int] = None

    def close(self) -> None:
        if self._mem_fd is not None:
            os.close(self._mem_fd)
            self._mem_fd = None

    def read_many(self, ranges: Sequence[tuple[int, int]], views: bool = False) -> list:
        """Read each (address, size); a result may be shorter than asked (unreadable tail).

        Everything lands in one buffer through as few process_vm_readv calls as possible.
        With ``views``, results are memoryviews into that buffer (no copy: for use while
        the target is frozen; turn them into bytes afterwards); else bytes.
        """
        results: list = [None] * len(ranges)
        if self._vm_ok and ranges:
            sizes = [max(0, size) for _, size in ranges]
            buf = ctypes.create_string_buffer(sum(sizes) or 1)
            base = ctypes.addressof(buf)
            local, remote = array.array("Q"), array.array("Q")
            offsets = []
            off = 0
            for (addr, _), size in zip(ranges, sizes):
                offsets.append(off)
                local.append(base + off)
                local.append(size)
                remote.append(addr)
                remote.append(size)
                off += size
            view = memoryview(buf).cast("B")
            for lo in range(0, len(ranges), _IOV_MAX):
                self._vm_batch(local, remote, sizes, lo, min(lo + _IOV_MAX, len(ranges)),
                               results)
                if not self._vm_ok:
                    break
            for i, ok in enumerate(results):
                if ok:
                    results[i] = view[offsets[i] : offsets[i] + sizes[i]]
                    if not views:
                        results[i] = bytes(results[i])
                else:
                    results[i] = None
        for i, r in enumerate(results):
            if r is None:
                results[i] = self._read_mem(*ranges[i])
        return results

    def read(self, address: int, size: int) -> bytes:
        return self.read_many([(address, size)])[0]

    def readinto(self, address: int, buf) -> int:
        """Fill the writable buffer ``buf`` (a ctypes buffer) from ``address``; returns
        how many bytes came (the readable prefix). For streaming big ranges: no new
        allocation per chunk."""
        size = ctypes.sizeof(buf)
        if self._vm_ok:
            iov = (ctypes.c_uint64 * 4)(ctypes.addressof(buf), size, address, size)
            got = _process_vm_readv(self.pid, ctypes.addressof(iov), 1,
                                    ctypes.addressof(iov) + 16, 1, 0)
            if got == size:
                return size
            if got < 0 and ctypes.get_errno() == errno.ESRCH:
                e = errno.ESRCH
                raise ProcessLookupError(e, os.strerror(e))
        data = self._read_mem(address, size)
        ctypes.memmove(buf, data, len(data))
        return len(data)

    def _vm_batch(self, local: array.array, remote: array.array, sizes: list[int], lo: int,
                  hi: int, done: list) -> None:
        """Read ranges lo..hi; mark ``done[i] = True`` for each one read whole."""
        local_base = local.buffer_info()[0]
        remote_base = remote.buffer_info()[0]
        while lo < hi:
            n = hi - lo
            got = _process_vm_readv(self.pid, local_base + 16 * lo, n, remote_base + 16 * lo, n, 0)
            if got < 0:
                e = ctypes.get_errno()
                if e == errno.ESRCH:
                    raise ProcessLookupError(e, os.strerror(e))
                if e in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                    self._vm_ok = False  # e.g. seccomp: use /proc/PID/mem from now on
                    return
                lo += 1  # the first range is unreadable: the fallback takes it
                continue
            j = lo
            while j < hi and got >= sizes[j]:
                done[j] = True
                got -= sizes[j]
                j += 1
            # Range j (if any) was cut short: the fallback reads what it can of it.
            lo = j + 1

    def _mem_fd_open(self) -> Optional[int]:
        if self._mem_fd is None:
            try:
                self._mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        return self._mem_fd

    def _read_mem(self, address: int, size: int) -> bytes:
        """Read through /proc/PID/mem, keeping the readable prefix of the range."""
        fd = self._mem_fd_open()
        if fd is None or size <= 0:
            return b""
        try:
            data = os.pread(fd, size, address)
            if len(data) == size:
                return data
        except OSError:
            data = b""
        # Page by page from where the fast read stopped.
        parts = [data]
        pos = address + len(data)
        end = address + size
        while pos < end:
            chunk = min(end, (pos // _PAGE + 1) * _PAGE) - pos
            try:
                got = os.pread(fd, chunk, pos)
            except OSError:
                break
            if not got:
                break
            parts.append(got)
            pos += len(got)
        return b"".join(parts)
