"""A small, bounded HTTP GET for symbol files: the only network code of generate_dump.

Every download is bounded: a socket timeout (no byte for ``timeout`` seconds ends it), an
optional total time, a size cap (checked against Content-Length first, then while
reading), redirects only to the same scheme, host and port (at most 5), and a content check
on the first bytes (an ELF file starts with ``\\x7fELF``, a Breakpad file with ``MODULE``;
an HTML error page served with status 200 is refused). The body is written to a file the
caller gives, so huge files never sit in memory.

:class:`FetchError` says what went wrong and whether the whole server should be skipped for
the rest of the run (``server_down``: refused, unreachable, timed out, answering HTML).
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import BinaryIO, Optional

MAX_REDIRECTS = 5
CHUNK = 1 << 16
USER_AGENT = "generate_dump-symbols/1"


class FetchError(Exception):
    def __init__(self, message: str, server_down: bool = False, budget: bool = False):
        super().__init__(message)
        self.server_down = server_down
        self.budget = budget  # the caller's time budget ran out (not the server's fault)


@dataclass
class Response:
    size: int  # bytes written
    last_modified: Optional[float]  # from the Last-Modified header (epoch seconds)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme://host:port, at most MAX_REDIRECTS times."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old = urllib.parse.urlsplit(req.full_url)
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if (old.scheme, old.hostname, old.port) != (new.scheme, new.hostname, new.port):
            raise FetchError(f"redirects to another host ({new.scheme}://{new.netloc}), "
                             "which is not followed", server_down=True)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_SameHostRedirects())


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text


def get(url: str, out: BinaryIO, *, timeout: float, max_bytes: int,
        magic: Optional[bytes] = None, deadline: Optional[float] = None) -> Optional[Response]:
    """Download ``url`` into ``out``; None when the server says it has no such file (404/410).

    ``magic``: the bytes the body must start with. ``deadline``: a ``time.monotonic()``
    value after which the download is abandoned (as a timeout)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError("only http:// and https:// URLs are supported", server_down=True)
    if deadline is not None and time.monotonic() >= deadline:
        raise FetchError("time budget for symbol downloads used up", budget=True)
    if deadline is not None:
        timeout = max(0.05, min(timeout, deadline - time.monotonic()))
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    try:
        resp = _opener.open(req, timeout=timeout)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (404, 410):
            return None
        # 5xx: the server is broken; 4xx other than not-found: it does not speak this protocol.
        raise FetchError(f"HTTP {exc.code} {exc.reason}", server_down=exc.code >= 500 or
                         exc.code in (400, 401, 403)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(_describe(exc), server_down=True) from None
    with resp:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            raise FetchError("answered with an HTML page instead of a symbol file",
                             server_down=True)
        length = resp.headers.get("Content-Length")
        expected: Optional[int] = None
        if length is not None:
            try:
                expected = int(length)
            except ValueError:
                raise FetchError(f"malformed Content-Length {length!r}") from None
            if expected > max_bytes:
                raise FetchError(f"file of {expected} bytes exceeds the size cap of "
                                 f"{max_bytes} bytes")
        got = 0
        head = b""
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise FetchError("download took longer than allowed", budget=True)
            try:
                chunk = resp.read1(CHUNK)  # what arrived: the deadline is checked often
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise FetchError(f"download interrupted: {_describe(exc)}",
                                 server_down=isinstance(exc, (socket.timeout, TimeoutError)))
            if not chunk:
                break
            if magic is not None and len(head) < len(magic):
                head += chunk[: len(magic) - len(head)]
                if not magic.startswith(head):
                    html = chunk.lstrip()[:1] == b"<"
                    raise FetchError("answered with an HTML page" if html else
                                     "answered with something that is not a symbol file",
                                     server_down=html)
            got += len(chunk)
            if got > max_bytes:
                raise FetchError(f"file exceeds the size cap of {max_bytes} bytes")
            try:
                out.write(chunk)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot write the download: {exc.strerror}") from None
        if expected is not None and got != expected:
            raise FetchError(f"truncated download ({got} of {expected} bytes)")
        if magic is not None and not head.startswith(magic):
            raise FetchError("answered with an empty or short file" if got < len(magic)
                             else "answered with something that is not a symbol file")
        modified = None
        lm = resp.headers.get("Last-Modified")
        if lm:
            try:
                modified = email.utils.parsedate_to_datetime(lm).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                modified = None
        return Response(got, modified)
