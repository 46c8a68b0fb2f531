"""The Windows backend (generate_dump.backends.windows) and PE identity (binfmt/pe.py).

Three layers:

* pure conversions and messages of the backend, on any platform;
* binfmt/pe.py on PE files that MinGW-w64 builds here (and on Wine's own DLLs), checked
  against pefile and ``x86_64-w64-mingw32-objdump -p``;
* end to end under Wine: tests/programs/win_threads.exe runs in the test prefix, the
  Windows CPython runs ``python.exe -m generate_dump PID -o OUT`` on it (this checkout on
  PYTHONPATH through Wine's Z: drive), and the dump is checked here on the Linux side with
  our reader, pefile, Toolhelp32 (the target's own helper modes), Breakpad's minidump_dump,
  rust-minidump and LLDB.

One Wine prefix, one target and one dump per mode are shared by the whole module (Wine
starts slowly). Missing tools skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from generate_dump.backends.windows import WindowsOptions, capture
from generate_dump.backends.windows import convert as cv
from generate_dump.errors import DumpError, InvalidTarget, TargetNotFound, TargetPermissionError
from generate_dump.memsource import SnapshotMemory
from generate_dump.minidump import format as fmt
from generate_dump.minidump import read_minidump
from generate_dump.minidump.codeview import debug_id
from generate_dump.minidump.context import encode_context
from generate_dump.binfmt import pe
from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.snapshot import (
    MemoryRegion, OS, PdbIdentity, RegionKind,
)
from readers import lldb_core, minidump_dump, run, rust_stackwalk_json
from wine import MINGW_GCC, WinTarget, compile_windows, mingw_or_skip, wine_or_skip

SECRET = "s3cr3t-" + "%08x" % random.Random(7).getrandbits(32)
EXTRA_THREADS = 2
THREAD_FUNCTIONS = {
    "main": "main_park",
    "sleeper": "park_in_sleep",
    "event-waiter": "park_in_event",
    "pipe-reader": "park_in_pipe",
    "cv-waiter": "park_in_condvar",
    "extra": "park_in_sleep",
}
VERSION_RC = """\
#include <winver.h>
1 VERSIONINFO
FILEVERSION 1,2,3,4
PRODUCTVERSION 5,6,7,8
FILEFLAGSMASK 0x3f
FILEFLAGS 0x2
FILEOS 0x40004
FILETYPE 0x1
FILESUBTYPE 0x0
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904b0"
    BEGIN
      VALUE "FileDescription", "generate_dump Windows test target"
      VALUE "FileVersion", "1.2.3.4"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
"""
DLL_SOURCE = """\
#include <windows.h>
__declspec(dllexport) int answer(void) { return 42; }
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved) { return TRUE; }
"""


# === pure conversions and messages (any platform) =========================================


def _regions(*spec) -> list[MemoryRegion]:
    return [MemoryRegion(start=a, size=b - a, readable=r, writable=r, executable=False)
            for a, b, r in spec]


def _teb(stack_base: int, stack_limit: int, dealloc: int = 0) -> bytes:
    teb = bytearray(cv.TEB_SIZE)
    struct.pack_into("<QQ", teb, cv.TEB_STACK_BASE, stack_base, stack_limit)
    struct.pack_into("<Q", teb, cv.TEB_DEALLOCATION_STACK, dealloc)
    return bytes(teb)


def test_stack_from_rsp_to_stack_base():
    teb = _teb(0x200000, 0x1F0000, 0x100000)
    assert cv.stack_bounds(0x1F8010, teb) == (0x1F8010, 0x200000)
    # Below StackLimit but inside the reservation (the guard page was just hit): still it.
    assert cv.stack_bounds(0x1EF000, teb) == (0x1EF000, 0x200000)


def test_stack_outside_the_teb_stack_uses_the_regions():
    teb = _teb(0x200000, 0x1F0000, 0x100000)
    regions = _regions((0x500000, 0x510000, True), (0x510000, 0x520000, True))
    # A fiber's stack: RSP-to-top of the mapping, no red zone below RSP.
    assert cv.stack_bounds(0x508000, teb, regions) == (0x508000, 0x520000)
    assert cv.stack_bounds(0x508000, b"", regions) == (0x508000, 0x520000)
    assert cv.stack_bounds(0x900000, teb, regions) is None
    assert cv.stack_bounds(0x900000, b"") is None


def test_stack_is_capped_for_readers():
    from generate_dump.backends.stacks import MAX_STACK

    teb = _teb(0x80000000, 0x1000)
    start, end = cv.stack_bounds(0x2000, teb)
    assert start == 0x2000 and end - start == MAX_STACK


def test_memory_regions():
    r = cv.memory_region(0x10000, 0x2000, cv.MEM_COMMIT, fmt.PAGE_EXECUTE_READ, cv.MEM_IMAGE)
    assert (r.readable, r.writable, r.executable, r.kind) == (True, False, True, RegionKind.IMAGE)
    r = cv.memory_region(0x10000, 0x1000, cv.MEM_COMMIT, fmt.PAGE_READWRITE | fmt.PAGE_GUARD,
                         cv.MEM_PRIVATE)
    assert (r.readable, r.writable, r.kind) == (False, False, RegionKind.PRIVATE)
    r = cv.memory_region(0, 0x1000, cv.MEM_COMMIT, fmt.PAGE_WRITECOPY, cv.MEM_MAPPED)
    assert (r.readable, r.writable, r.kind) == (True, True, RegionKind.MAPPED)
    assert cv.memory_region(0, 0x1000, 0x2000, fmt.PAGE_NOACCESS, cv.MEM_PRIVATE) is None  # reserved


def test_context_layout_is_the_sdk_one():
    """A CONTEXT laid out by the Windows SDK's offsets decodes to the right registers."""
    raw = bytearray(1232)
    struct.pack_into("<I", raw, 0x30, 0x10001F)
    struct.pack_into("<6H", raw, 0x38, 0x33, 0x2B, 0x2B, 0x53, 0x2B, 0x2B)
    struct.pack_into("<I", raw, 0x44, 0x246)
    for i in range(16):  # Rax..R15
        struct.pack_into("<Q", raw, 0x78 + 8 * i, 0x1000 + i)
    struct.pack_into("<Q", raw, 0xF8, 0x140001234)
    fx = bytes(range(256)) * 2
    raw[0x100:0x300] = fx
    ctx = cv.amd64_context(bytes(raw))
    assert (ctx.rax, ctx.rsp, ctx.r15, ctx.rip) == (0x1000, 0x1004, 0x100F, 0x140001234)
    assert (ctx.cs, ctx.ss, ctx.fs, ctx.eflags) == (0x33, 0x2B, 0x53, 0x246)
    assert ctx.fxsave == fx
    assert encode_context(ctx)[0x78:0x300] == bytes(raw[0x78:0x300])


def test_cpu_identity_from_cpuid():
    leaf0 = (0x16, int.from_bytes(b"Genu", "little"), int.from_bytes(b"ntel", "little"),
             int.from_bytes(b"ineI", "little"))
    leaf1 = (0x000806EC, 0, 0, 0xBFEBFBFF)  # family 6, model 0x8E, stepping 12
    cpu = cv.cpu_from_cpuid(8, leaf0, leaf1, (0, 0, 0, 0x2C100800), 2100)
    assert (cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("GenuineIntel", 6, 0x8E, 12)
    assert (cpu.version_information, cpu.feature_information) == (0x806EC, 0xBFEBFBFF)
    assert cpu.amd_extended_features == 0 and cpu.count == 8 and cpu.max_mhz == 2100
    same = cv.cpu_from_system_info(8, 6, 0x8E0C, "GenuineIntel", 2100)
    assert same.version_information == cpu.version_information
    amd = cv.cpu_from_cpuid(2, (0xD, int.from_bytes(b"Auth", "little"),
                                int.from_bytes(b"cAMD", "little"), int.from_bytes(b"enti", "little")),
                            (0x00A20F10, 0, 0, 0x178BFBFF), (0, 0, 0, 0x2FD3FBFF))
    assert (amd.vendor, amd.family, amd.model) == ("AuthenticAMD", 0x19, 0x21)
    assert amd.amd_extended_features == 0x2FD3FBFF


def test_filetimes_and_environment_block():
    assert cv.filetime_to_unix(cv.FILETIME_UNIX_EPOCH + 10_000_000 * 86400) == 86400
    assert cv.filetime_to_unix(0) == 0
    assert cv.filetime_seconds(25_000_000) == 2.5
    block = "A=1\0B=2\0\0".encode("utf-16-le")
    assert cv.environment_block(block + b"garbage!") == block


def test_messages_a_windows_user_can_act_on():
    e = cv.open_error(1234, cv.ERROR_INVALID_PARAMETER)
    assert isinstance(e, TargetNotFound) and "no process with PID 1234" in str(e)
    e = cv.open_error(1234, cv.ERROR_ACCESS_DENIED, "svc.exe")
    assert isinstance(e, TargetPermissionError)
    assert "Run as administrator" in str(e) and "SeDebugPrivilege" in str(e) and "svc.exe" in str(e)
    e = cv.open_error(700, cv.ERROR_ACCESS_DENIED, "MsMpEng.exe", protection_level=0x31)
    assert "protected process light (PPL), signer Antimalware" in str(e)
    e = cv.open_error(700, cv.ERROR_ACCESS_DENIED, "x.exe", have_debug_privilege=True)
    assert "even with SeDebugPrivilege" in str(e)
    assert "32-bit (WOW64)" in str(cv.wow64_error(88, "old.exe"))
    assert isinstance(cv.special_pid(4), InvalidTarget) and "kernel" in str(cv.special_pid(4))
    assert isinstance(cv.special_pid(0), InvalidTarget)
    assert cv.special_pid(8) is None
    assert "64-bit Python" in str(cv.debug_attach_error(5, cv.ERROR_NOT_SUPPORTED))


@pytest.mark.skipif(os.name == "nt", reason="checks the refusal on other platforms")
def test_backend_refuses_outside_windows():
    with pytest.raises(DumpError, match="Windows only"):
        capture(1, WindowsOptions())


# === binfmt/pe.py on real PE files =======================================================


@pytest.fixture(scope="module")
def pe_files(tmp_path_factory) -> dict[str, Path]:
    mingw_or_skip()
    d = tmp_path_factory.mktemp("pe")
    (d / "tiny_dll.c").write_text(DLL_SOURCE)
    (d / "plain.c").write_text("int main(void) { return 0; }\n")
    out = {
        "exe": compile_windows("win_threads", d, version_rc=VERSION_RC),
        "dll": compile_windows("tiny_dll", d, shared=True),
    }
    plain = d / "plain.exe"  # no --build-id: no debug directory, no CodeView record
    subprocess.run([MINGW_GCC, "-O2", "-o", str(plain), str(d / "plain.c")], check=True)
    out["plain"] = plain
    return out


def _wine_dlls() -> list[Path]:
    base = Path("/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")
    return [base / n for n in ("kernel32.dll", "ntdll.dll", "user32.dll", "msvcrt.dll")
            if (base / n).exists()]


def _pefile_view(path: Path) -> dict:
    """What pefile itself reads: RSDS fields, timestamp, sizes, VS_FIXEDFILEINFO."""
    import pefile

    p = pefile.PE(str(path))
    out = {"timestamp": p.FILE_HEADER.TimeDateStamp, "size": p.OPTIONAL_HEADER.SizeOfImage,
           "checksum": p.OPTIONAL_HEADER.CheckSum, "rsds": None, "version": None}
    for d in getattr(p, "DIRECTORY_ENTRY_DEBUG", []):
        e = d.entry
        if e is not None and getattr(e, "CvSignature", b"") == b"RSDS":
            guid = struct.pack("<IHH", e.Signature_Data1, e.Signature_Data2,
                               e.Signature_Data3) + e.Signature_Data4.to_bytes(1, "little") \
                + e.Signature_Data5.to_bytes(1, "little") + e.Signature_Data6
            out["rsds"] = (guid, e.Age, e.PdbFileName.rstrip(b"\0").decode())
    ffi = getattr(p, "VS_FIXEDFILEINFO", None)
    if ffi:
        f = ffi[0]
        out["version"] = (f.FileVersionMS >> 16, f.FileVersionMS & 0xFFFF,
                          f.FileVersionLS >> 16, f.FileVersionLS & 0xFFFF, f.FileType)
    mapped = p.get_memory_mapped_image()
    p.close()
    return out | {"mapped": mapped}


def _objdump_rsds(path: Path) -> tuple[str, int, str] | None:
    r = run(["x86_64-w64-mingw32-objdump", "-p", path])
    assert r.returncode == 0, r.stderr
    m = re.search(r"\(format RSDS signature ([0-9a-f]{32}) age (\d+) pdb (.*)\)", r.stdout)
    size = re.search(r"SizeOfImage\s+([0-9a-f]+)", r.stdout)
    assert size and int(size.group(1), 16) == _pefile_view(path)["size"]
    if not m:
        return None
    return m.group(1), int(m.group(2)), "" if m.group(3) == "(none)" else m.group(3)


def _check_against_pefile(path: Path, info: pe.PeInfo) -> None:
    ref = _pefile_view(path)
    assert (info.timestamp, info.size_of_image, info.checksum) == \
        (ref["timestamp"], ref["size"], ref["checksum"]), path
    if ref["rsds"] is None:
        assert info.pdb is None, path
    else:
        assert (info.pdb.guid, info.pdb.age, info.pdb.pdb_path) == ref["rsds"], path
    if ref["version"] is None:
        assert info.version is None, path
    else:
        v = info.version
        assert (*v.file_version, v.file_type) == ref["version"], path


@pytest.mark.parametrize("kind", ["exe", "dll", "plain"])
def test_pe_identity_of_mingw_files(pe_files, kind):
    path = pe_files[kind]
    info = pe.file_info(path)
    _check_against_pefile(path, info)
    objdump = _objdump_rsds(path)
    if kind == "plain":
        assert info.pdb is None and objdump is None
        return
    # objdump prints the GUID as dump_syms and symbol servers do: fields, then bytes.
    signature, age, pdb_path = objdump
    assert debug_id(info.pdb).lower() == signature + f"{age:x}"
    assert (info.pdb.age, info.pdb.pdb_path) == (age, pdb_path)
    assert info.pdb.pdb_path == path.with_suffix(".pdb").name
    assert info.is_dll == (kind == "dll")


def test_pe_version_resource(pe_files):
    v = pe.file_info(pe_files["exe"]).version
    assert v.file_version == (1, 2, 3, 4) and v.product_version == (5, 6, 7, 8)
    assert (v.flags, v.os, v.file_type) == (2, 0x40004, 1)


@pytest.mark.parametrize("kind", ["exe", "dll", "plain", "wine"])
def test_pe_identity_from_memory_equals_file(pe_files, kind):
    """image_info over the loader's layout (pefile maps it for us) sees what the file has."""
    paths = _wine_dlls() if kind == "wine" else [pe_files[kind]]
    if not paths:
        pytest.skip("no Wine DLLs to compare")
    for path in paths:
        mapped = _pefile_view(path)["mapped"]
        base = 0x7FF600000000
        mem = pe.image_info(lambda a, n: mapped[a - base : a - base + n], base)
        disk = pe.file_info(path)
        _check_against_pefile(path, mem)
        assert mem == disk, path


def test_module_info_prefers_memory_and_falls_back_to_the_file(pe_files):
    path = pe_files["exe"]
    mapped = bytearray(_pefile_view(path)["mapped"])
    base = 0x140000000

    def read(a, n):
        return bytes(mapped[a - base : a - base + n])

    info, source = pe.module_info(read, base, str(path))
    assert source == "memory" and info == pe.file_info(path)
    # Headers unreadable: everything from the file.
    info, source = pe.module_info(lambda a, n: b"", base, str(path))
    assert source == "file" and info == pe.file_info(path)
    # A CodeView entry whose data the loader did not map: the RSDS record from the file.
    h = pe.parse_headers(bytes(mapped[:4096]))
    rva, _ = h.directory(pe.DIRECTORY_DEBUG)
    struct.pack_into("<I", mapped, rva + 20, 0)  # AddressOfRawData
    assert pe.image_info(read, base).incomplete
    info, source = pe.module_info(read, base, str(path))
    assert source == "memory+file" and info.pdb == pe.file_info(path).pdb
    # No file either: what memory has, without an identity.
    info, source = pe.module_info(read, base, str(path) + ".missing")
    assert source == "memory" and info.pdb is None
    with pytest.raises(pe.PeError):
        pe.module_info(lambda a, n: b"MZ" + bytes(n - 2), base, None)


def test_pe_garbage_raises_pe_error_only(pe_files):
    rng = random.Random(1234)
    originals = [bytes(_pefile_view(p)["mapped"][:0x3000]) for p in pe_files.values()]
    for i in range(600):
        image = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(0, 0x400) if rng.random() < 0.8 else rng.randrange(len(image))
            image[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            del image[rng.randrange(len(image)):]
        data = bytes(image)
        try:
            pe.image_info(lambda a, n: data[a : a + n], 0)
        except pe.PeError:
            pass
    for data in (b"", b"MZ", b"MZ" + bytes(100), b"\x7fELF" + bytes(4092)):
        with pytest.raises(pe.PeError):
            pe.image_info(lambda a, n: data[a : a + n], 0)


# === end to end under Wine ================================================================


@pytest.fixture(scope="module")
def wine():
    return wine_or_skip()


@pytest.fixture(scope="module")
def win_bin(tmp_path_factory) -> Path:
    return compile_windows("win_threads", tmp_path_factory.mktemp("winbin"),
                           version_rc=VERSION_RC)


@pytest.fixture(scope="module")
def target(wine, win_bin):
    with WinTarget(wine, win_bin, EXTRA_THREADS, env={"SECRET_ENV": SECRET}) as t:
        yield t


@pytest.fixture(scope="module")
def dumps(wine, target, tmp_path_factory):
    """One dump per set of options, made on first use: options -> (path, stderr)."""
    out_dir = tmp_path_factory.mktemp("dumps")
    made: dict[tuple, tuple[Path, str]] = {}

    def get(*options: str) -> tuple[Path, str]:
        if options not in made:
            path = out_dir / f"dump{len(made)}.dmp"
            r = wine.generate_dump(target.pid, "-o", path, *options)
            assert r.returncode == 0, f"generate_dump {options} failed:\n{r.stdout}\n{r.stderr}"
            assert path.exists()
            made[options] = (path, r.stderr)
        return made[options]

    return get


@pytest.fixture(scope="module")
def toolhelp_threads(target) -> list[int]:
    return target.toolhelp_threads()


@pytest.fixture(scope="module")
def nm_functions(win_bin) -> list[tuple[int, str]]:
    r = run(["x86_64-w64-mingw32-nm", "-n", win_bin])
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "Tt" and not parts[2].startswith("."):
            out.append((int(parts[0], 16), parts[2]))
    return out


def _function_at(functions: list[tuple[int, str]], address: int) -> str | None:
    best = None
    for start, name in functions:
        if start > address:
            break
        best = name
    return best


def _stack_words(md, thread) -> list[int]:
    """The 8-byte aligned words of a thread's stack copy."""
    data = md.bytes_at(thread.stack)
    skip = -thread.stack.start % 8
    usable = (len(data) - skip) // 8 * 8
    return [w for (w,) in struct.iter_unpack("<Q", data[skip : skip + usable])]


def test_dump_and_the_target_runs_on(dumps, target):
    path, stderr = dumps()
    assert "wrote" in stderr
    assert target.ping() is not None, "the target does not answer after the dump"
    assert target.alive()


def test_threads_match_toolhelp(dumps, target, toolhelp_threads):
    md = read_minidump(dumps()[0])
    tids = [t.tid for t in md.threads]
    assert sorted(tids) == sorted(toolhelp_threads), "thread ids differ from Toolhelp32"
    assert len(tids) == 5 + EXTRA_THREADS  # the attach thread Windows injects is left out
    names = [md.thread_names.get(t) for t in tids]
    assert names[0] == "main", "the main thread comes first"
    assert sorted(names) == sorted(["main", "sleeper", "event-waiter", "pipe-reader",
                                    "cv-waiter"] + ["extra"] * EXTRA_THREADS)
    assert target.toolhelp_threads() == toolhelp_threads, "a thread was left behind"


def test_contexts_stacks_and_tebs(dumps, nm_functions):
    md = read_minidump(dumps()[0])
    mem = SnapshotMemory(read_minidump_snapshot(dumps()[0]))
    main_image = md.modules[0]
    for t in md.threads:
        c = t.context
        assert t.context_size == 1232
        assert c.fxsave is not None and len(c.fxsave) == 512
        assert c.mxcsr & 0xFFC0 == 0x1F80 & 0xFFC0  # exception masks as set by the OS
        assert c.cs == 0x33, hex(c.cs)
        # The stack is RSP (no red zone on Windows x64) up to the TEB's StackBase.
        teb = mem.read(t.teb, 0x18)
        assert len(teb) == 0x18, f"thread {t.tid}: TEB not in the dump"
        stack_base, stack_limit = struct.unpack_from("<QQ", teb, 8)
        assert t.stack.start == c.rsp and t.stack.end == stack_base, hex(t.tid)
        assert stack_limit <= c.rsp < stack_base
        assert any(m.base <= c.rip < m.end for m in md.modules), f"rip 0x{c.rip:x}"
        # The park function's return address is on the copied stack.
        found = {_function_at(nm_functions, w) for w in _stack_words(md, t)
                 if main_image.base <= w < main_image.end}
        expected = THREAD_FUNCTIONS[md.thread_names[t.tid]]
        assert expected in found, f"{md.thread_names[t.tid]}: {sorted(filter(None, found))}"


def test_modules_match_files_and_toolhelp(dumps, wine, target, win_bin):
    md = read_minidump(dumps()[0])
    main = md.modules[0]
    assert main.is_main and main.path.lower().endswith("\\win_threads.exe")
    assert isinstance(main.identity, PdbIdentity) and main.identity.pdb_path == "win_threads.pdb"
    assert main.version.file_version == (1, 2, 3, 4)
    compared = 0
    for m in md.modules:
        path = wine.to_unix(m.path)
        assert path is not None and path.exists(), m.path
        info = pe.file_info(path)
        ref = _pefile_view(path)
        assert (m.timestamp, m.size, m.checksum) == (ref["timestamp"], ref["size"],
                                                     ref["checksum"]), m.path
        expected = None if ref["rsds"] is None else PdbIdentity(*ref["rsds"])
        assert m.identity == expected, m.path
        assert m.version == info.version, m.path
        compared += 1
    assert compared >= 4
    assert main.identity == pe.file_info(win_bin).pdb
    toolhelp = target.toolhelp_modules()
    assert {m.base: m.size for m in md.modules} == {b: s for b, (s, _) in toolhelp.items()}
    assert {m.base: m.path.lower() for m in md.modules} == \
        {b: p.lower() for b, (_, p) in toolhelp.items()}


def test_system_misc_and_memory_info(dumps, wine, target):
    md = read_minidump(dumps()[0])
    si = md.system
    assert si.os == OS.WINDOWS and si.arch.value == "amd64"
    r = wine.run("cmd", "/c", "ver")
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", r.stdout)
    assert m, r.stdout
    assert (si.os_major, si.os_minor, si.os_build) == tuple(map(int, m.groups()))
    assert si.cpu.count == os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    vendor = re.search(r"vendor_id\s*:\s*(\S+)", cpuinfo)
    if vendor:
        assert si.cpu.vendor == vendor.group(1)
    assert md.misc["process_id"] == target.pid
    assert abs(md.misc["process_create_time"] - time.time()) < 3600
    kinds = {r.kind for r in md.regions}
    assert RegionKind.IMAGE in kinds and RegionKind.PRIVATE in kinds
    for m in md.modules:
        assert any(r.kind == RegionKind.IMAGE and r.start == m.base for r in md.regions), m.path
    for t in md.threads:
        assert any(r.start <= t.stack.start and t.stack.end <= r.end and r.readable
                   and r.writable and r.kind == RegionKind.PRIVATE for r in md.regions), t.tid


def test_breakpad_reads_every_stream(dumps):
    out = minidump_dump(dumps()[0])
    assert "MDRawSystemInfo" in out and "MDRawModule" in out


def test_rust_minidump_threads_modules_and_frame0(dumps):
    path = dumps()[0]
    md = read_minidump(path)
    doc = rust_stackwalk_json(path)
    assert doc["system_info"]["os"] == "Windows NT"
    assert [t["thread_id"] for t in doc["threads"]] == [t.tid for t in md.threads]
    for t, rt in zip(md.threads, doc["threads"]):
        assert rt["thread_name"] == md.thread_names[t.tid]
        frame0 = rt["frames"][0]
        assert int(frame0["offset"], 16) == t.context.rip
        assert frame0["trust"] == "context" and frame0["module"] is not None
    mods = {m["filename"]: m for m in doc["modules"]}
    assert mods["win_threads.exe"]["debug_id"] == debug_id(md.modules[0].identity)
    assert mods["win_threads.exe"]["debug_file"] == "win_threads.pdb"
    code_id = f"{md.modules[0].timestamp:08x}{md.modules[0].size:x}"
    assert mods["win_threads.exe"]["code_id"].lower() == code_id
    assert mods["win_threads.exe"]["version"] == "1.2.3.4"
    assert doc["main_module"] == 0
    assert {m.path.rsplit("\\", 1)[-1] for m in md.modules} == set(mods)


def test_lldb_threads_modules_and_frame0(dumps):
    path = dumps()[0]
    md = read_minidump(path)
    out = lldb_core(path, "thread list", "image list", "bt all")
    tids = [int(x, 16) for x in re.findall(r"thread #\d+: tid = (0x[0-9a-f]+)", out)]
    assert tids == [t.tid for t in md.threads]
    pcs = [int(x, 16) for x in re.findall(r"frame #0: (0x[0-9a-f]+)", out)]
    assert pcs == [t.context.rip for t in md.threads]
    guid = debug_id(md.modules[0].identity)[:32]
    uuid = "-".join((guid[:8], guid[8:12], guid[12:16], guid[16:20], guid[20:]))
    assert uuid in out and "win_threads.exe" in out
    for m in md.modules:
        assert m.path in out


def test_no_suspend_mode(dumps, target, toolhelp_threads):
    path, _ = dumps("-r")
    md = read_minidump(path)
    assert sorted(t.tid for t in md.threads) == sorted(toolhelp_threads)
    for t in md.threads:
        assert t.context_size == 1232 and t.stack.start == t.context.rsp
    minidump_dump(path)
    assert target.ping() is not None


def test_memory_presets(dumps, target):
    full, _ = dumps("--memory=full")
    stacks, _ = dumps("--memory=stacks")
    default = read_minidump(dumps()[0])
    md_full, md_stacks = read_minidump(full), read_minidump(stacks)
    assert md_full.memory64 and not md_stacks.memory64
    assert len(md_stacks.memory) == len(md_stacks.threads)  # stacks only
    assert len(default.memory) > len(default.threads)  # stacks, TEBs, PEB, referenced
    # Every module's headers are in a full dump, as the memory of a readable mapping.
    mem_full = SnapshotMemory(read_minidump_snapshot(full))
    for m in md_full.modules:
        assert mem_full.read(m.base, 2) == b"MZ", m.path
    minidump_dump(full)
    assert target.ping() is not None


def _secret_in(path: Path) -> dict[str, bool]:
    data = path.read_bytes()
    return {"utf-16": f"SECRET_ENV={SECRET}".encode("utf-16-le") in data,
            "utf-8": SECRET.encode() in data}


def _environment_block(path: Path) -> tuple[int, int]:
    """[start, end) of the process environment block, through TEB -> PEB -> parameters."""
    snap = read_minidump_snapshot(path)
    mem = SnapshotMemory(snap)

    def u64(address: int) -> int:
        data = mem.read(address, 8)
        assert len(data) == 8, f"0x{address:x} is not in the dump"
        return struct.unpack("<Q", data)[0]

    params = u64(u64(snap.threads[0].thread_pointer + 0x60) + 0x20)
    env = u64(params + 0x80)
    return env, env + u64(params + 0x3F0)


def test_environment_only_when_asked(dumps):
    assert _secret_in(dumps()[0]) == {"utf-16": False, "utf-8": False}
    assert _secret_in(dumps("--memory=stacks")[0]) == {"utf-16": False, "utf-8": False}
    # A full dump holds all memory but the process environment block. (Copies that the
    # program or its C runtime made stay: msvcrt keeps two in the heap; see README.)
    full = dumps("--memory=full")[0]
    md = read_minidump(full)
    start, end = _environment_block(full)
    assert end > start
    assert not any(d.start < end and start < d.end for d in md.all_memory())
    with_env = dumps("--include-environment")[0]
    assert _secret_in(with_env)["utf-16"]
    assert len(SnapshotMemory(read_minidump_snapshot(with_env)).read(start, end - start)) \
        == end - start


def test_explicit_backend(dumps):
    path, _ = dumps("--backend", "windows", "--memory=stacks")
    assert len(read_minidump(path).threads) == 5 + EXTRA_THREADS


def test_target_is_frozen_during_the_dump_and_survives_a_killed_dumper(wine, target, tmp_path):
    """The debugger stop freezes every thread; if the dumper dies then, the kernel (here
    wineserver) detaches it and, since kill-on-exit is off, the target runs on."""
    out = tmp_path / "never.dmp"
    dumper = wine.start_python("-m", "generate_dump", str(target.pid), "-o",
                               wine.to_windows(out),
                               env={"GENERATE_DUMP_TEST_DELAY": "frozen=120"})
    try:
        _wait_frozen(target, dumper)
        time.sleep(1)
        assert dumper.poll() is None
        dumper.send_signal(signal.SIGKILL)
        dumper.wait(timeout=30)
        # The unanswered ping is answered once the target runs again, then new ones too.
        assert target._line(30) is not None, "the target stayed frozen after the dumper died"
        assert target.ping() is not None
        assert target.alive()
        assert not out.exists()
    finally:
        if dumper.poll() is None:
            dumper.kill()
        dumper.communicate()


def _wait_frozen(target: WinTarget, dumper, timeout: float = 60) -> None:
    """Ping until a ping goes unanswered: the dumper holds the target frozen. The pending
    answer comes once it runs again (read it with target._line). A running target answers
    within milliseconds; 2.5 s of silence is a freeze, even on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "the target never froze"
        assert dumper.poll() is None, dumper.communicate()
        if target.ping(timeout=2.5) is None:
            return
        time.sleep(0.1)


def test_second_dump_while_another_debugger_holds_the_process(wine, target, toolhelp_threads,
                                                               tmp_path):
    """A process that is being debugged cannot take a second debugger: its threads are
    suspended one by one instead. The first debugger's attach thread is left out too."""
    first = wine.start_python("-m", "generate_dump", str(target.pid), "-o",
                              wine.to_windows(tmp_path / "first.dmp"), "--memory=stacks",
                              env={"GENERATE_DUMP_TEST_DELAY": "frozen=12"})
    try:
        _wait_frozen(target, first)
        r = wine.generate_dump(target.pid, "-o", tmp_path / "second.dmp", "--memory=stacks")
        assert r.returncode == 0, r.stderr
        assert "being debugged by another debugger" in r.stderr
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert target._line(30) is not None
    a, b = read_minidump(tmp_path / "first.dmp"), read_minidump(tmp_path / "second.dmp")
    assert sorted(t.tid for t in b.threads) == sorted(toolhelp_threads)
    assert [t.tid for t in a.threads] == [t.tid for t in b.threads]
    for ta, tb in zip(a.threads, b.threads):
        assert (ta.context.rip, ta.context.rsp) == (tb.context.rip, tb.context.rsp), ta.tid
    assert target.ping() is not None


FALLBACK_SCRIPT = r"""
import sys
from generate_dump.backends.windows import WindowsOptions, capture_session
from generate_dump.minidump.writer import write_minidump
with capture_session(int(sys.argv[1]), WindowsOptions(attach_timeout=0.0)) as snapshot:
    with open(sys.argv[2], "wb") as f:
        write_minidump(snapshot, f)
print(" ".join(e.kind for e in snapshot.soft_errors))
"""


def test_attach_breakpoint_timeout_falls_back_to_suspending(wine, target, toolhelp_threads,
                                                           tmp_path):
    """No attach breakpoint in time (a held loader lock can do that): threads are suspended
    one by one instead, and the attach thread is still recognized and left out."""
    out = tmp_path / "fallback.dmp"
    r = wine.run_python("-c", FALLBACK_SCRIPT, target.pid, wine.to_windows(out))
    assert r.returncode == 0, r.stderr
    assert "attach-timeout" in r.stdout.split()
    md = read_minidump(out)
    assert sorted(t.tid for t in md.threads) == sorted(toolhelp_threads)
    assert md.thread_names[md.threads[0].tid] == "main"
    minidump_dump(out)
    assert target.ping() is not None
    assert target.toolhelp_threads() == toolhelp_threads


@pytest.mark.parametrize("pid, message", [
    ("999996", "no process with PID 999996"),
    ("4", "kernel"),
    ("thread", "is a thread of process"),
])
def test_errors(wine, target, pid, message, tmp_path):
    if pid == "thread":
        pid = str(target.toolhelp_threads()[-1])
        message += f" {target.pid}, not a process"
    r = wine.generate_dump(pid, "-o", tmp_path / "x.dmp")
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("generate_dump: error: "), r.stderr
    assert message in lines[0]
    assert not (tmp_path / "x.dmp").exists()
