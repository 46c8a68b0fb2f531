"""Symbols from servers: Debian's real debuginfod, a Breakpad store over HTTP, bad servers.

The targets run from stripped copies (``objcopy --strip-all``, same build id); the
unstripped builds exist only behind the servers. Checked against local files, eu-stack
(elfutils) and gdb with the same debuginfod, Breakpad's minidump_stackwalk with the store
on disk, and rust-minidump's ``minidump-stackwalk --json`` for ``--format rust-minidump``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from checks import Symbols, expected_functions
from generate_dump.sources.minidump_file import read_minidump_snapshot
from live import Target, assert_running_untraced, compile_program, readelf_build_id, run_dumper
from readers import breakpad_dump_syms, rust_stackwalk_json
from test_inspect import assert_agrees, breakpad_walk

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux dumps")

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 3  # seconds, for the unreachable-server cases
ENV_DROP = ("DEBUGINFOD_URLS", "DEBUGINFOD_CACHE_PATH", "DEBUGINFOD_TIMEOUT",
            "DEBUGINFOD_MAXSIZE", "DEBUGINFOD_MAXTIME", "GENERATE_DUMP_SYMBOLS_CACHE",
            "GENERATE_DUMP_SYMBOLS_TIMEOUT", "http_proxy", "HTTP_PROXY", "https_proxy",
            "HTTPS_PROXY")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found: run scripts/install-test-deps"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def env(tmp_path: Path, **extra) -> dict:
    """A clean environment: no inherited debuginfod/proxy settings, private caches."""
    e = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    tmp_path.mkdir(parents=True, exist_ok=True)  # elfutils creates the cache, not its parent
    e["DEBUGINFOD_CACHE_PATH"] = str(tmp_path / "debuginfod-cache")
    e["GENERATE_DUMP_SYMBOLS_CACHE"] = str(tmp_path / "symbols-cache")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def inspect(args, environ, check=True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "generate_dump.inspect_dump", *map(str, args)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=environ, **kw)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


def inspect_json(args, environ) -> tuple[dict, str]:
    r = inspect(["--json", *args], environ)
    return json.loads(r.stdout), r.stderr


def frames(doc: dict) -> dict[int, list[tuple[str, str]]]:
    return {t["tid"]: [(f["module"] or "", f["function"] or "") for f in t["frames"]]
            for t in doc["threads"]}


def main_names(doc: dict, module: str = "threads") -> dict[int, list[str]]:
    return {t["tid"]: [f["function"] for f in t["frames"] if f["module"] == module]
            for t in doc["threads"]}


def warnings(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if ": warning: " in l]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_url() -> str:
    """A URL nobody listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


# -- servers -----------------------------------------------------------------------------------

class Debuginfod:
    """Debian's debuginfod over a folder of unstripped builds, on 127.0.0.1."""

    def __init__(self, folder: Path, db: Path, build_ids: list[str]):
        need("debuginfod")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(["debuginfod", "-F", str(folder), "-p", str(self.port),
                                      "-d", str(db), "-t", "0", "-g", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        pending = list(build_ids)
        while pending:  # ready when its scan has indexed every build
            if self.proc.poll() is not None:
                raise RuntimeError(f"debuginfod exited: {self.proc.stderr.read()[-2000:]!r}")
            try:
                with urllib.request.urlopen(f"{self.url}/buildid/{pending[0]}/debuginfo",
                                            timeout=5) as r:
                    r.read()
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("debuginfod did not index the builds within 60 s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()


class HttpServer:
    """http.server on 127.0.0.1 in a thread, with ``handler`` (a BaseHTTPRequestHandler)."""

    def __init__(self, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


# -- fixtures ----------------------------------------------------------------------------------

class Builds:
    def __init__(self, root: Path):
        self.full = root / "unstripped"
        self.stripped = root / "stripped"
        self.full.mkdir()
        self.stripped.mkdir()
        compile_program("threads", self.full)
        compile_program("crashers", self.full, "-O0")
        self.ids = {}
        for name in ("threads", "crashers"):
            subprocess.run(["objcopy", "--strip-all", str(self.full / name),
                            str(self.stripped / name)], check=True)
            bid = readelf_build_id(str(self.full / name))
            assert bid and bid == readelf_build_id(str(self.stripped / name))
            self.ids[name] = bid
        out = subprocess.run(["nm", "--defined-only", str(self.full / "threads")],
                             capture_output=True, text=True, check=True).stdout
        self.threads_functions = {l.split()[2] for l in out.splitlines()
                                  if len(l.split()) == 3 and l.split()[1] in "tT"}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> Builds:
    need("objcopy")
    return Builds(tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="module")
def server(builds, tmp_path_factory):
    s = Debuginfod(builds.full, tmp_path_factory.mktemp("db") / "db.sqlite",
                   list(builds.ids.values()))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def live(builds, tmp_path_factory):
    """A running stripped threads target and a dump of it."""
    target = Target([builds.stripped / "threads"])
    try:
        dump = tmp_path_factory.mktemp("dump") / "threads.dmp"
        run_dumper(target.pid, "-o", dump)
        yield target, dump
    finally:
        target.close()


# -- debuginfod --------------------------------------------------------------------------------

def test_debuginfod_names_frames_as_local_files(builds, server, live, tmp_path):
    target, dump = live
    local, _ = inspect_json(["--symbols-path", builds.full, dump], env(tmp_path / "a"))
    remote, err = inspect_json([dump], env(tmp_path / "b", DEBUGINFOD_URLS=server.url))
    bare, _ = inspect_json([dump], env(tmp_path / "c"))
    assert not warnings(err), err
    assert frames(remote) == frames(local)
    names = main_names(remote)
    for tid, fn in expected_functions(target).items():
        assert fn in names[tid], (tid, names[tid])
    # Without the server the stripped module has no names: the server supplied them.
    assert all(not any(n) for n in main_names(bare).values()), main_names(bare)
    # The debug file sits in elfutils' layout, checked and read-only.
    bid = builds.ids["threads"]
    cached = tmp_path / "b" / "debuginfod-cache" / bid / "debuginfo"
    assert cached.read_bytes() == (builds.full / "threads").read_bytes()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o400
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700
    mod = next(m for m in remote["modules"] if m["name"] == "threads")
    assert mod["symbols"] == "ok" and str(cached) in mod["files"]


def _frames_by_thread(text: str, thread_re: str, frame_re: str, keep) -> dict[int, list[str]]:
    """Function names per thread from a debugger's backtraces: a line matching ``thread_re``
    (group 1, the tid) starts a thread, each ``frame_re`` match that ``keep`` accepts adds
    its group 1."""
    out: dict[int, list[str]] = {}
    tid = None
    for line in text.splitlines():
        m = re.match(thread_re, line)
        if m:
            tid = int(m.group(1))
            out[tid] = []
            continue
        m = re.match(frame_re, line)
        if m and tid is not None and keep(m):
            out[tid].append(m.group(1))
    return out


def _eu_stack(pid: int, environ: dict, binary: Path) -> dict[int, list[str]]:
    r = subprocess.run([need("eu-stack"), "-m", "-p", str(pid)], capture_output=True,
                       text=True, timeout=120, env=environ)
    out = _frames_by_thread(r.stdout, r"TID (\d+):", r"#\d+\s+0x[0-9a-f]+ (\S+) - (\S+)$",
                            lambda m: os.path.basename(m.group(2)) == binary.name)
    assert out, f"eu-stack printed no threads: {r.stdout} {r.stderr}"
    return out


def _gdb(pid: int, environ: dict, known: set[str]) -> dict[int, list[str]]:
    r = subprocess.run([need("gdb"), "-nx", "-p", str(pid), "-batch",
                        "-iex", "set debuginfod enabled on", "-ex", "thread apply all bt"],
                       capture_output=True, text=True, timeout=120, env=environ,
                       stdin=subprocess.DEVNULL)
    out = _frames_by_thread(r.stdout, r"Thread \d+ \(.*LWP (\d+)\)",
                            r"#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(", lambda m: m.group(1) in known)
    assert out, f"gdb printed no threads: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return out


def test_eu_stack_and_gdb_agree(builds, server, live, tmp_path):
    target, dump = live
    ours, _ = inspect_json([dump], env(tmp_path / "ours", DEBUGINFOD_URLS=server.url))
    ours_names = main_names(ours)
    eu = _eu_stack(target.pid, env(tmp_path / "eu", DEBUGINFOD_URLS=server.url),
                   builds.stripped / "threads")
    gdb = _gdb(target.pid, env(tmp_path / "gdb", DEBUGINFOD_URLS=server.url),
               builds.threads_functions)
    assert_running_untraced(target.pid)
    for tid, fn in expected_functions(target).items():
        assert fn in ours_names[tid]
        assert ours_names[tid] == eu[tid], (tid, ours_names[tid], eu[tid])
        # gdb's backtrace stops at main ("backtrace past-main" is off).
        upto = ours_names[tid][:ours_names[tid].index("main") + 1] \
            if "main" in ours_names[tid] else ours_names[tid]
        assert upto == gdb[tid], (tid, ours_names[tid], gdb[tid])


def test_cache_interoperates_with_elfutils(builds, live, tmp_path):
    """Our cache serves debuginfod-find and eu-stack with the server stopped; theirs us."""
    target, dump = live
    bid = builds.ids["threads"]
    srv = Debuginfod(builds.full, tmp_path / "db.sqlite", [bid])
    try:
        ours_env = env(tmp_path / "ours", DEBUGINFOD_URLS=srv.url)
        reference, _ = inspect_json([dump], ours_env)
        theirs_env = env(tmp_path / "theirs", DEBUGINFOD_URLS=srv.url)
        for kind in ("executable", "debuginfo"):
            r = subprocess.run([need("debuginfod-find"), kind, bid], capture_output=True,
                               text=True, timeout=60, env=theirs_env)
            assert r.returncode == 0, r.stderr
    finally:
        srv.stop()
    offline = srv.url  # nothing listens there any more
    # Ours -> elfutils.
    ours_env["DEBUGINFOD_URLS"] = offline
    r = subprocess.run([need("debuginfod-find"), "debuginfo", bid], capture_output=True,
                       text=True, timeout=60, env=ours_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "ours" / "debuginfod-cache" / bid / "debuginfo")
    eu = _eu_stack(target.pid, ours_env, builds.stripped / "threads")
    for tid, fn in expected_functions(target).items():
        assert fn in eu[tid], (tid, eu[tid])
    assert_running_untraced(target.pid)
    # elfutils -> ours.
    theirs_env["DEBUGINFOD_URLS"] = offline
    doc, err = inspect_json([dump], theirs_env)
    assert frames(doc) == frames(reference)
    assert not warnings(err), err  # no module needed the (stopped) server
    # Same file modes as elfutils writes.
    a = tmp_path / "ours" / "debuginfod-cache" / bid
    b = tmp_path / "theirs" / "debuginfod-cache" / bid
    assert stat.S_IMODE(a.stat().st_mode) == stat.S_IMODE(b.stat().st_mode)
    assert stat.S_IMODE((a / "debuginfo").stat().st_mode) == \
        stat.S_IMODE((b / "debuginfo").stat().st_mode)
    assert (a.parent / "cache_clean_interval_s").read_text().strip() == \
        (b.parent / "cache_clean_interval_s").read_text().strip()


def test_summaries_use_debuginfod(builds, server, tmp_path):
    """`run`'s crash summary names the stripped program's frames through DEBUGINFOD_URLS."""
    r = subprocess.run([sys.executable, "-m", "generate_dump", "run", "--output-dir",
                        str(tmp_path), "--", str(builds.stripped / "crashers"), "segv-thread"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=env(tmp_path, DEBUGINFOD_URLS=server.url))
    assert r.returncode == 139, r.stderr
    assert re.search(r"#0 0x[0-9a-f]+ crashers!crash_in_worker\+0x[0-9a-f]+", r.stderr), r.stderr
    assert "crashers!worker+" in r.stderr
    dump = next(tmp_path.glob("*.dmp"))
    code = ("import sys; from generate_dump.inspect_dump import summarize_file; "
            "print(summarize_file(sys.argv[1]))")
    r2 = subprocess.run([sys.executable, "-c", code, str(dump)], capture_output=True,
                        text=True, timeout=120, cwd=ROOT,
                        env=env(tmp_path / "again", DEBUGINFOD_URLS=server.url))
    assert r2.returncode == 0 and "crashers!crash_in_worker+" in r2.stdout, r2.stderr


# -- Breakpad symbol store over HTTP -----------------------------------------------------------

@pytest.fixture(scope="module")
def store(builds, live, tmp_path_factory):
    """A Breakpad store (dump_syms) for every module of the dump; the unstripped build for
    the program itself."""
    _, dump = live
    root = tmp_path_factory.mktemp("store")
    Symbols(root).add_modules_of(read_minidump_snapshot(dump))
    sym = breakpad_dump_syms(builds.full / "threads", root)  # replaces the stripped one
    return root, sym


def test_http_store_matches_minidump_stackwalk(store, live, tmp_path):
    target, dump = live
    root, sym = store
    srv = HttpServer(functools.partial(Quiet, directory=str(root)))
    try:
        doc, err = inspect_json(["--no-system-debug", "--symbols-url", srv.url + "/", dump],
                                env(tmp_path))
    finally:
        srv.close()
    assert not warnings(err), err
    bp = breakpad_walk(dump, root)
    assert_agrees(doc, bp, target)
    for tid, fn in expected_functions(target).items():
        assert fn in main_names(doc)[tid]
    # Cached in the store layout, byte for byte.
    rel = sym.relative_to(root)
    assert (tmp_path / "symbols-cache" / rel).read_bytes() == sym.read_bytes()
    # The cache alone serves the next run (no server at all now).
    again, err2 = inspect_json(["--no-system-debug", "--symbols-url", srv.url, dump],
                               env(tmp_path))
    assert frames(again) == frames(doc)
    assert not warnings(err2), err2


# -- --format rust-minidump --------------------------------------------------------------------

@pytest.fixture(scope="module")
def crash_dump(builds, tmp_path_factory):
    out = tmp_path_factory.mktemp("crash")
    r = subprocess.run([sys.executable, "-m", "generate_dump", "run", "--output-dir", str(out),
                        "--", str(builds.full / "crashers"), "segv-thread"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=env(out))
    assert r.returncode == 139, r.stderr
    dump = next(out.glob("*.dmp"))
    root = out / "store"
    root.mkdir()
    Symbols(root).add_modules_of(read_minidump_snapshot(dump))
    return dump, root


# loaded_symbols/missing_symbols are not compared: ours say whether a file with the
# module's build id was found (the ELF itself counts), rust-minidump's whether a symbol file
# was loaded.
MODULE_FIELDS = ("base_addr", "end_addr", "filename", "code_id", "debug_file", "debug_id",
                 "corrupt_symbols", "symbol_url", "version", "cert_subject")
FRAME_FIELDS = ("frame", "offset", "module", "module_offset", "function", "function_offset",
                "trust", "missing_symbols")


def _compare_frames(ours: list, theirs: list, where: str) -> int:
    """Fields of frames while both walks agree on the address; returns how many agreed."""
    n = 0
    for a, b in zip(ours, theirs):
        if a["offset"] != b["offset"]:
            break
        for k in FRAME_FIELDS:
            if k == "trust" and a["frame"] > 0:
                continue  # how a caller was found may differ (cfi vs scan); its address not
            assert a[k] == b[k], f"{where} frame {a['frame']} {k}: ours {a[k]!r}, " \
                                 f"rust-minidump {b[k]!r}"
        n += 1
    return n


def test_rust_minidump_format(crash_dump, tmp_path):
    dump, root = crash_dump
    r = inspect(["--format", "rust-minidump", "--no-system-debug", "--symbols-path", root,
                 dump], env(tmp_path))
    ours = json.loads(r.stdout)
    theirs = rust_stackwalk_json(dump, "--symbols-path", str(root))
    # Every key rust-minidump writes is there.
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    for k in ("pid", "thread_count", "main_module", "status"):
        assert ours[k] == theirs[k], k
    for k in ("cpu_arch", "cpu_count", "os", "os_ver", "cpu_info"):
        assert ours["system_info"][k] == theirs["system_info"][k], k
    for k in ("type", "address", "crashing_thread"):
        assert ours["crash_info"][k] == theirs["crash_info"][k], k
    assert ours["crash_info"]["type"] == "SIGSEGV / SEGV_MAPERR"
    assert len(ours["modules"]) == len(theirs["modules"])
    for a, b in zip(ours["modules"], theirs["modules"]):
        for k in MODULE_FIELDS:
            assert a[k] == b[k], f"module {b['filename']} {k}: ours {a[k]!r}, theirs {b[k]!r}"
    assert [(t["thread_id"], t["thread_name"]) for t in ours["threads"]] == \
        [(t["thread_id"], t["thread_name"]) for t in theirs["threads"]]
    for a, b in zip(ours["threads"], theirs["threads"]):
        assert _compare_frames(a["frames"], b["frames"], f"thread {a['thread_id']}") >= 1
    oc, tc = ours["crashing_thread"], theirs["crashing_thread"]
    for k in ("threads_index", "thread_id", "thread_name"):
        assert oc[k] == tc[k], k
    assert oc["frames"][0]["registers"] == tc["frames"][0]["registers"]
    agreed = _compare_frames(oc["frames"], tc["frames"], "crashing thread")
    assert agreed >= 2, (oc["frames"][:3], tc["frames"][:3])
    assert [f["function"] for f in oc["frames"][:2]] == ["crash_in_worker", "worker"]


# -- unreachable and bad servers ---------------------------------------------------------------

class Silent:
    """Accepts connections (the kernel's backlog) and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("how", ["refused", "silent"])
@pytest.mark.parametrize("kind", ["debuginfod", "symbols-url"])
def test_unreachable_server_costs_the_timeout_once(live, tmp_path, how, kind):
    _, dump = live
    silent = Silent() if how == "silent" else None
    url = silent.url if silent else dead_url()
    try:
        # --no-system-debug: every module (program, libc, ld.so) needs the server.
        if kind == "debuginfod":
            args, e = ["--no-system-debug", dump], env(tmp_path, DEBUGINFOD_URLS=url,
                                                         DEBUGINFOD_TIMEOUT=TIMEOUT)
        else:
            args, e = (["--no-system-debug", "--symbols-url", url, dump],
                       env(tmp_path, GENERATE_DUMP_SYMBOLS_TIMEOUT=TIMEOUT))
        start = time.monotonic()
        doc, err = inspect_json(args, e)
        elapsed = time.monotonic() - start
    finally:
        if silent:
            silent.close()
    assert elapsed < TIMEOUT * 1.5 + 2, f"{elapsed:.1f} s: the timeout was paid more than once"
    w = warnings(err)
    assert len(w) == 1 and url in w[0], err
    assert ("refused" if how == "refused" else "timed out") in w[0], w
    assert all(not any(n) for n in main_names(doc).values())
    assert doc["threads"] and all(t["frames"] for t in doc["threads"])


def test_summary_with_a_silent_server_is_bounded(live, tmp_path):
    _, dump = live
    silent = Silent()
    code = ("import sys; from generate_dump.inspect_dump import summarize_file; "
            "print(summarize_file(sys.argv[1]))")
    try:
        start = time.monotonic()
        r = subprocess.run([sys.executable, "-c", code, str(dump)], capture_output=True,
                           text=True, timeout=120, cwd=ROOT,
                           env=env(tmp_path, DEBUGINFOD_URLS=silent.url,
                                   DEBUGINFOD_TIMEOUT=TIMEOUT))
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert elapsed < TIMEOUT * 1.5 + 2, elapsed
    assert len(warnings(r.stderr)) == 1, r.stderr
    assert "Thread" in r.stdout or "threads" in r.stdout


class BadHandler(http.server.BaseHTTPRequestHandler):
    """Misbehaves as ``self.server.mode`` says, for every request."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        mode, payload = self.server.mode, self.server.payload
        if mode == "wrong-file":
            self._send(200, payload, "application/octet-stream")
        elif mode == "html":
            self._send(200, b"<!DOCTYPE html><html><body>Login required</body></html>",
                       "text/html; charset=utf-8")
        elif mode == "html-no-type":
            self._send(200, b"<html><body>Not found</body></html>", "application/octet-stream")
        elif mode == "garbage":
            self._send(200, os.urandom(5000), "application/octet-stream")
        elif mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload) * 2))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
        elif mode == "oversize":
            self._send(200, payload, "application/octet-stream")
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}"
                                         f"{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "same-host-redirect":  # allowed: the file is then served
            if self.path.startswith("/moved/"):
                self._send(200, payload, "application/octet-stream")
            else:
                self.send_response(301)
                self.send_header("Location", "/moved" + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
        elif mode == "trickle":  # never silent long enough to time out, never done
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                for i in range(0, len(payload), 64):
                    self.wfile.write(payload[i:i + 64])
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass
            self.close_connection = True
        elif mode == "record":  # a server with nothing, that remembers what was asked
            self.server.asked.append(self.path)
            self._send(404, b"not found", "text/plain")
        elif mode == "malformed":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\n\x7fELF")
            self.close_connection = True
        elif mode == "error":
            self._send(500, b"Internal Server Error", "text/plain")

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


BAD_MODES = ["wrong-file", "html", "html-no-type", "garbage", "truncated", "oversize",
             "redirect", "malformed", "error"]


@pytest.mark.parametrize("mode", BAD_MODES)
def test_bad_debuginfod_server(builds, live, tmp_path, mode):
    _, dump = live
    srv = HttpServer(BadHandler)
    srv.httpd.mode = mode
    # wrong-file: a real ELF file of another build (the crashers program).
    srv.httpd.payload = (builds.full / ("crashers" if mode == "wrong-file" else "threads")
                         ).read_bytes()
    extra = {"DEBUGINFOD_MAXSIZE": 4096} if mode == "oversize" else {}
    try:
        doc, err = inspect_json([dump], env(tmp_path, DEBUGINFOD_URLS=srv.url,
                                            DEBUGINFOD_TIMEOUT=TIMEOUT, **extra))
    finally:
        srv.close()
    assert warnings(err), f"no warning for {mode}: {err}"
    assert all(not any(n) for n in main_names(doc).values()), main_names(doc)
    cached = tmp_path / "debuginfod-cache" / builds.ids["threads"]
    assert not any(p.stat().st_size for p in cached.glob("*")) if cached.exists() else True
    mod = next(m for m in doc["modules"] if m["name"] == "threads")
    assert mod["files"] == [str(builds.stripped / "threads")], mod  # only the local file
    if mode == "wrong-file":
        assert builds.ids["crashers"] in err and builds.ids["crashers"] in str(mod["mismatched"])


@pytest.mark.parametrize("mode", ["wrong-file", "html", "truncated", "redirect"])
def test_bad_symbol_store(store, live, tmp_path, mode):
    _, dump = live
    root, sym = store
    srv = HttpServer(BadHandler)
    srv.httpd.mode = mode
    text = sym.read_bytes()
    if mode == "wrong-file":  # a .sym whose MODULE line names another build
        first, rest = text.split(b"\n", 1)
        parts = first.split()
        parts[3] = b"0" * len(parts[3])
        text = b" ".join(parts) + b"\n" + rest
    srv.httpd.payload = text
    try:
        doc, err = inspect_json(["--symbols-url", srv.url, dump], env(tmp_path))
    finally:
        srv.close()
    assert warnings(err), err
    assert all(not any(n) for n in main_names(doc).values()), main_names(doc)
    assert not (tmp_path / "symbols-cache" / sym.relative_to(root)).exists()


def test_unwritable_cache_still_names_frames(builds, server, live, tmp_path):
    target, dump = live
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache should be")
    doc, err = inspect_json([dump], env(tmp_path, DEBUGINFOD_URLS=server.url,
                                        DEBUGINFOD_CACHE_PATH=blocker / "cache"))
    w = warnings(err)
    assert len(w) == 1 and "cannot be written" in w[0], err
    for tid, fn in expected_functions(target).items():
        assert fn in main_names(doc)[tid]


def test_full_disk_cache(builds, server, live, tmp_path):
    """Writes beyond 4 KiB fail (RLIMIT_FSIZE, as on a full disk): a warning, no names, no
    partial file in the cache."""
    _, dump = live
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = inspect(["--json", dump], env(tmp_path, DEBUGINFOD_URLS=server.url),
                preexec_fn=limit)
    doc = json.loads(r.stdout)
    assert warnings(r.stderr), r.stderr
    assert all(not any(n) for n in main_names(doc).values())
    cached = tmp_path / "debuginfod-cache" / builds.ids["threads"]
    assert not cached.exists() or not [p for p in cached.iterdir() if p.stat().st_size]


def test_same_host_redirect_is_followed(builds, live, tmp_path):
    target, dump = live
    srv = HttpServer(BadHandler)
    srv.httpd.mode = "same-host-redirect"
    srv.httpd.payload = (builds.full / "threads").read_bytes()
    try:
        doc, err = inspect_json([dump], env(tmp_path, DEBUGINFOD_URLS=srv.url))
    finally:
        srv.close()
    assert not warnings(err), err
    for tid, fn in expected_functions(target).items():
        assert fn in main_names(doc)[tid]


def test_dead_server_beside_a_good_one(builds, server, live, tmp_path):
    """One warning for the dead server; the good one still names every frame."""
    target, dump = live
    dead = dead_url()
    doc, err = inspect_json(["--no-system-debug", dump],
                            env(tmp_path, DEBUGINFOD_URLS=f"{dead} {server.url}"))
    w = warnings(err)
    assert len(w) == 1 and dead in w[0], err
    for tid, fn in expected_functions(target).items():
        assert fn in main_names(doc)[tid]


def test_progress_line_only_at_a_terminal(builds, server, live, tmp_path):
    import pty

    _, dump = live
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "generate_dump.inspect_dump", str(dump)],
                           stdout=subprocess.PIPE, stderr=slave, timeout=300, cwd=ROOT,
                           env=env(tmp_path / "tty", DEBUGINFOD_URLS=server.url))
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert r.returncode == 0
    assert re.search(rb"fetching symbols: \d+/\d+", seen), seen
    assert b"fetching symbols" not in r.stdout
    piped = inspect([dump], env(tmp_path / "pipe", DEBUGINFOD_URLS=server.url))
    assert "fetching symbols" not in piped.stderr + piped.stdout


def test_bad_symbols_url_is_a_usage_error(live, tmp_path):
    _, dump = live
    r = inspect(["--symbols-url", "ftp://example.invalid/x", dump], env(tmp_path), check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "generate_dump inspect: error: --symbols-url ftp://example.invalid/x: give an "
        "http:// or https:// URL"]


def test_negative_cache_entries_interoperate(builds, server, live, tmp_path):
    """An empty cache file means "the servers had nothing" for 600 s, for elfutils and us."""
    target, dump = live
    e = env(tmp_path, DEBUGINFOD_URLS=server.url)
    cache = Path(e["DEBUGINFOD_CACHE_PATH"])
    # Ours: libc's debug file is not on the server (--no-system-debug makes us ask).
    doc, err = inspect_json(["--no-system-debug", dump], e)
    assert not warnings(err), err
    libc = next(m for m in doc["modules"] if m["name"].startswith("libc.so"))
    entry = cache / libc["code_id"] / "debuginfo"
    assert entry.is_file() and entry.stat().st_size == 0
    r = subprocess.run([need("debuginfod-find"), "debuginfo", libc["code_id"]],
                       capture_output=True, text=True, timeout=60, env=e)
    assert r.returncode != 0 and not r.stdout
    # Theirs (the same empty file) for a build the server has: neither asks again.
    bid = builds.ids["threads"]
    e = env(tmp_path / "second", DEBUGINFOD_URLS=server.url)
    cache = Path(e["DEBUGINFOD_CACHE_PATH"])
    cache.mkdir()
    (cache / bid).mkdir(mode=0o700)
    (cache / bid / "debuginfo").touch()
    r = subprocess.run([need("debuginfod-find"), "debuginfo", bid], capture_output=True,
                       text=True, timeout=60, env=e)
    assert r.returncode != 0 and not r.stdout
    doc, _ = inspect_json([dump], e)
    assert all(not any(n) for n in main_names(doc).values())
    # Once the entry is older than cache_miss_s, both ask the server again.
    old = time.time() - 700
    os.utime(cache / bid / "debuginfo", (old, old))
    doc, _ = inspect_json([dump], e)
    for tid, fn in expected_functions(target).items():
        assert fn in main_names(doc)[tid]


def test_slow_download_is_bounded_by_maxtime(builds, live, tmp_path):
    """DEBUGINFOD_MAXTIME bounds a download that trickles (each read within the timeout)."""
    _, dump = live
    srv = HttpServer(BadHandler)
    srv.httpd.mode = "trickle"
    srv.httpd.payload = (builds.full / "threads").read_bytes()
    maxtime = 2
    try:
        start = time.monotonic()
        doc, err = inspect_json([dump], env(tmp_path, DEBUGINFOD_URLS=srv.url,
                                            DEBUGINFOD_TIMEOUT=30, DEBUGINFOD_MAXTIME=maxtime))
        elapsed = time.monotonic() - start
    finally:
        srv.close()
    assert elapsed < maxtime * 1.5 + 2, elapsed
    w = warnings(err)
    assert len(w) == 1 and "time limit" in w[0], err
    assert all(not any(n) for n in main_names(doc).values())


def test_print_stacks_uses_debuginfod(builds, server, live, tmp_path):
    target, _ = live
    r = run_dumper(target.pid, "-o", tmp_path / "again.dmp", "--print-stacks",
                   env=env(tmp_path, DEBUGINFOD_URLS=server.url))
    assert "threads!park_in_nanosleep+" in r.stderr, r.stderr
    assert "threads!main_park+" in r.stderr, r.stderr
    assert_running_untraced(target.pid)


def test_module_file_gone_fetches_the_executable(builds, server, tmp_path):
    """A dump read where its program does not exist (another machine): the executable comes
    from the server, with its code (for CFI and call checks) and symbols."""
    gone = tmp_path / "gone"
    gone.mkdir()
    shutil.copy2(builds.stripped / "threads", gone / "threads")
    target = Target([gone / "threads"])
    try:
        expected = expected_functions(target)
        dump = tmp_path / "gone.dmp"
        run_dumper(target.pid, "-o", dump)
    finally:
        target.close()
    shutil.rmtree(gone)
    bare, _ = inspect_json([dump], env(tmp_path / "bare"))
    assert next(m for m in bare["modules"] if m["name"] == "threads")["symbols"] == "missing"
    doc, err = inspect_json([dump], env(tmp_path / "srv", DEBUGINFOD_URLS=server.url))
    assert not warnings(err), err
    for tid, fn in expected.items():
        assert fn in main_names(doc)[tid], (tid, main_names(doc)[tid])
    cache = tmp_path / "srv" / "debuginfod-cache" / builds.ids["threads"]
    assert (cache / "executable").read_bytes() == (builds.full / "threads").read_bytes()
    mod = next(m for m in doc["modules"] if m["name"] == "threads")
    assert mod["files"] == [str(cache / "executable")]


def test_debug_files_only_for_modules_in_stacks(live, tmp_path):
    _, dump = live
    srv = HttpServer(BadHandler)
    srv.httpd.mode = "record"
    srv.httpd.asked = []
    srv.httpd.payload = b""
    try:
        doc, err = inspect_json(["--no-system-debug", dump],
                                env(tmp_path, DEBUGINFOD_URLS=srv.url))
    finally:
        srv.close()
    assert not warnings(err), err
    in_stacks = {f["module"] for t in doc["threads"] for f in t["frames"] if f["module"]}
    ids = {m["code_id"]: m["name"] for m in doc["modules"]}
    asked = sorted(srv.httpd.asked)
    # Every module file is on this disk: only debug files, only for modules in a stack.
    assert asked == sorted(f"/buildid/{cid}/debuginfo" for cid, name in ids.items()
                           if name in in_stacks and name != "linux-vdso.so.1"), asked
    assert len(ids) > len(in_stacks)  # some modules were not asked about
