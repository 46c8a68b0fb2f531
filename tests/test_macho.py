"""Mach-O module identity (generate_dump.binfmt.macho) on real Mach-O files.

clang and ld64.lld build tests/programs/macho_main.c here for macOS and watchOS without any
Apple SDK (the program calls nothing, so nothing needs libSystem); llvm-lipo makes universal
files of them and dsymutil a dSYM. The UUIDs are checked against what llvm-dwarfdump prints,
the segment layout against llvm-otool, and the minidump identifiers against rust-minidump
and Breakpad. Malformed input is made by hand from a synthetic image and by mutating the
real ones: it must raise MachOError, never anything else, and never hang.

Tools (Debian bookworm-security: clang-22 lld-22 llvm-22) are looked up as NAME-22, then
NAME. A missing one skips the tests that need it, except under CI=true, where it fails.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from generate_dump.minidump import minidump_bytes
from generate_dump.sources.minidump_file import read_minidump_snapshot
from generate_dump.minidump.codeview import code_id, debug_id, decode_codeview, encode_codeview
from generate_dump.binfmt import macho
from generate_dump.binfmt.macho import MachOError
from generate_dump.snapshot import Arch, MachOUuid, Module, OS, PdbIdentity

from readers import breakpad_bin, run, rust_stackwalk_json
from synthetic import LIB_BASE, TEXT_BASE, arm64_snapshot

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "programs" / "macho_main.c"
TOOL_TIMEOUT = 120
LLVM_BIN = "/usr/lib/llvm-22/bin"
INSTALL_HINT = "apt-get install clang-22 lld-22 llvm-22 (scripts/install-test-deps)"

MACOS = ("-platform_version", "macos", "11.0", "11.0")
WATCHOS = ("-platform_version", "watchos", "7.0", "7.0")


# --- tools ----------------------------------------------------------------------------------


def _missing(message: str):
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the Mach-O tests)")
    pytest.skip(message)


def tool(name: str) -> str:
    search = os.pathsep.join(filter(None, (os.environ.get("PATH"), LLVM_BIN)))
    for candidate in (f"{name}-22", name):
        found = shutil.which(candidate, path=search)
        if found:
            return found
    _missing(f"{name}-22 (or {name}) not found: {INSTALL_HINT}")


def _run(*cmd) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       timeout=TOOL_TIMEOUT)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r.stdout


def dwarfdump_uuids(path: Path) -> dict[str, bytes]:
    """``llvm-dwarfdump --uuid``: lines ``UUID: XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX (arch) path``."""
    out = _run(tool("llvm-dwarfdump"), "--uuid", path)
    found = re.findall(r"^UUID: ([0-9A-F]{8}(?:-[0-9A-F]{4}){3}-[0-9A-F]{12}) \((\S+)\) ", out, re.M)
    assert found, out
    return {arch: bytes.fromhex(u.replace("-", "")) for u, arch in found}


def otool_layout(path: Path) -> tuple[dict[str, int], list[dict]]:
    """``llvm-otool -h -l``: the mach header's numbers and each segment's fields."""
    out = _run(tool("llvm-otool"), "-h", "-l", path)
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.split()[:2] == ["magic", "cputype"])
    magic, cputype, cpusubtype, _caps, filetype = lines[i + 1].split()[:5]
    header = {"magic": int(magic, 16), "cputype": int(cputype), "cpusubtype": int(cpusubtype),
              "filetype": int(filetype)}
    segments, cur = [], None
    for line in lines[i + 2:]:
        words = line.split()
        if words[:1] == ["cmd"]:
            cur = {} if words[1] in ("LC_SEGMENT", "LC_SEGMENT_64") else None
            if cur is not None:
                segments.append(cur)
        elif words[:1] in (["Section"], ["Load"]):
            cur = None
        elif cur is not None and len(words) == 2 and words[0] not in cur:
            cur[words[0]] = words[1]
    return header, [{"name": s["segname"], "vmaddr": int(s["vmaddr"], 16),
                     "vmsize": int(s["vmsize"], 16), "fileoff": int(s["fileoff"]),
                     "filesize": int(s["filesize"])} for s in segments]


# --- fixtures built by the real toolchain ----------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Thin arm64/x86_64/arm64_32 executables, an arm64 dylib and bundle, two fat files."""
    cc, ld, lipo = tool("clang"), tool("ld64.lld"), tool("llvm-lipo")
    d = tmp_path_factory.mktemp("macho")
    objs = {}
    for name, target in (("arm64", "arm64-apple-macos11"), ("x86_64", "x86_64-apple-macos11"),
                         ("arm64_32", "arm64_32-apple-watchos7")):
        objs[name] = d / f"{name}.o"
        _run(cc, "-target", target, "-O1", "-c", SOURCE, "-o", objs[name])
    lib_obj = d / "lib.o"
    _run(cc, "-target", "arm64-apple-macos11", "-O1", "-DVARIANT=2", "-c", SOURCE, "-o", lib_obj)
    out = {name: d / f"prog_{name}" for name in ("arm64", "x86_64", "arm64_32")}
    _run(ld, "-arch", "arm64", *MACOS, "-e", "_main", "-o", out["arm64"], objs["arm64"])
    _run(ld, "-arch", "x86_64", *MACOS, "-e", "_main", "-o", out["x86_64"], objs["x86_64"])
    _run(ld, "-arch", "arm64_32", *WATCHOS, "-e", "_main", "-o", out["arm64_32"], objs["arm64_32"])
    out["dylib"] = d / "libfixture.dylib"
    _run(ld, "-arch", "arm64", *MACOS, "-dylib", "-install_name", "/usr/local/lib/libfixture.dylib",
         "-current_version", "1.2.3", "-compatibility_version", "1.0.0", "-o", out["dylib"], lib_obj)
    out["bundle"] = d / "fixture.bundle"
    _run(ld, "-arch", "arm64", *MACOS, "-bundle", "-o", out["bundle"], objs["arm64"])
    out["fat"] = d / "prog_fat"
    _run(lipo, "-create", out["x86_64"], out["arm64"], "-output", out["fat"])
    out["fat64"] = d / "prog_fat64"
    _run(lipo, "-create", "-fat64", out["x86_64"], out["arm64"], "-output", out["fat64"])
    return out


THIN = ["arm64", "x86_64", "arm64_32", "dylib", "bundle"]
FILE_TYPES = {"arm64": macho.MH_EXECUTE, "x86_64": macho.MH_EXECUTE, "arm64_32": macho.MH_EXECUTE,
              "dylib": macho.MH_DYLIB, "bundle": macho.MH_BUNDLE}
ARCHES = {"arm64": "arm64", "x86_64": "x86_64", "arm64_32": "arm64_32", "dylib": "arm64",
          "bundle": "arm64"}


# --- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", THIN)
def test_thin_file_uuid_matches_dwarfdump(built, name):
    path = built[name]
    expected = dwarfdump_uuids(path)
    assert list(expected) == [ARCHES[name]]
    uuid = expected[ARCHES[name]]
    assert macho.file_uuids(path) == expected
    assert macho.file_uuid(path) == uuid
    assert macho.file_uuid(str(path), ARCHES[name]) == uuid
    data = path.read_bytes()
    assert macho.read_uuid(data) == uuid
    assert macho.uuids(data) == expected
    assert macho.identity(path) == MachOUuid(uuid)
    assert macho.identity(data) == MachOUuid(uuid)
    header, _ = otool_layout(path)
    assert header["magic"] == (macho.MH_MAGIC if name == "arm64_32" else macho.MH_MAGIC_64)
    assert macho.parse_header(data).file_type == header["filetype"] == FILE_TYPES[name]


def test_builds_have_distinct_uuids(built):
    ids = [macho.file_uuid(built[n]) for n in THIN]
    assert len(set(ids)) == len(ids), ids


def test_thin_file_other_arch_is_an_error(built):
    with pytest.raises(MachOError, match=r"no x86_64 image \(the file has arm64\)"):
        macho.file_uuid(built["arm64"], "x86_64")
    with pytest.raises(MachOError, match="prog_arm64"):  # the path is in the message
        macho.file_uuid(built["arm64"], Arch.AMD64)


@pytest.mark.parametrize("name", ["fat", "fat64"])
def test_fat_file_uuids_match_dwarfdump(built, name):
    path = built[name]
    expected = dwarfdump_uuids(path)
    assert sorted(expected) == ["arm64", "x86_64"]
    assert macho.file_uuids(path) == expected
    # Each slice is the thin file, byte for byte, with the thin file's UUID.
    data = path.read_bytes()
    for s in macho.slices(data):
        thin = built[s.arch].read_bytes()
        assert data[s.offset : s.offset + s.size] == thin
        assert expected[s.arch] == macho.file_uuid(built[s.arch])
    assert (data[:4] == b"\xca\xfe\xba\xbf") == (name == "fat64")
    assert macho.file_uuid(path, "arm64") == expected["arm64"]
    assert macho.file_uuid(path, "x86_64") == expected["x86_64"]
    assert macho.file_uuid(path, Arch.AMD64) == expected["x86_64"]  # the project's arch names
    assert macho.file_uuid(path, Arch.ARM64) == expected["arm64"]
    assert macho.identity(path, "arm64") == MachOUuid(expected["arm64"])
    with pytest.raises(MachOError, match="x86_64, arm64: name the architecture"):
        macho.file_uuid(path)
    with pytest.raises(MachOError, match="no i386 image"):
        macho.file_uuid(path, "i386")
    with pytest.raises(MachOError, match="universal"):
        macho.read_uuid(data)


def test_fat_file_with_one_slice(built, tmp_path):
    one = tmp_path / "one"
    _run(tool("llvm-lipo"), "-create", built["x86_64"], "-output", one)
    assert one.read_bytes()[:4] == b"\xca\xfe\xba\xbe"
    assert macho.file_uuid(one) == dwarfdump_uuids(one)["x86_64"] == macho.file_uuid(built["x86_64"])


def test_dsym_has_the_executable_uuid(tmp_path):
    """dump_syms and symbol servers match a dSYM to the executable by this UUID."""
    cc, ld, dsymutil = tool("clang"), tool("ld64.lld"), tool("dsymutil")
    _run(cc, "-target", "arm64-apple-macos11", "-g", "-c", SOURCE, "-o", tmp_path / "g.o")
    exe = tmp_path / "prog"
    _run(ld, "-arch", "arm64", *MACOS, "-e", "_main", "-o", exe, tmp_path / "g.o")
    _run(dsymutil, exe, "-o", tmp_path / "prog.dSYM")
    dwarf = tmp_path / "prog.dSYM/Contents/Resources/DWARF/prog"
    assert macho.parse_header(dwarf.read_bytes()).file_type == macho.MH_DSYM
    assert macho.file_uuid(dwarf) == macho.file_uuid(exe) == dwarfdump_uuids(dwarf)["arm64"]


# --- images in memory -----------------------------------------------------------------------


class FakeMemory:
    """A process address space holding one image as dyld maps it: each segment's file bytes at
    its vmaddr plus the slide, zero-filled to vmsize. Placed from llvm-otool's segment table,
    not from the code under test. Unmapped reads raise OSError, like a real backend's."""

    def __init__(self, data: bytes, segments: list[dict], slide: int):
        self.regions = []
        for s in segments:
            if s["name"] == "__PAGEZERO" or not s["vmsize"]:
                continue
            raw = data[s["fileoff"] : s["fileoff"] + s["filesize"]]
            self.regions.append((s["vmaddr"] + slide, raw + bytes(s["vmsize"] - len(raw))))
        self.reads = []

    def read(self, addr: int, size: int) -> bytes:
        self.reads.append((addr, size))
        for start, raw in self.regions:
            if start <= addr < start + len(raw):
                return raw[addr - start : addr - start + size]
        raise OSError(f"unmapped address 0x{addr:x}")


BASES = {"arm64": 0x1_0452_8000, "x86_64": 0x1_0a3c_4000, "arm64_32": 0x0010_8000,
         "dylib": 0x1_9f0a_4000, "bundle": 0x1_0600_0000}


@pytest.mark.parametrize("name", THIN)
def test_image_info_from_memory(built, name):
    path = built[name]
    header, segments = otool_layout(path)
    text = next(s for s in segments if s["name"] == "__TEXT")
    base = BASES[name]
    slide = base - text["vmaddr"]
    mem = FakeMemory(path.read_bytes(), segments, slide)
    img = macho.image_info(mem.read, base)

    assert img.uuid == dwarfdump_uuids(path)[ARCHES[name]]
    assert img.file_type == header["filetype"] == FILE_TYPES[name]
    assert img.cpu_type == header["cputype"]
    assert img.arch == ARCHES[name]
    assert img.is64 == (name != "arm64_32")
    assert img.base == base
    assert img.slide == slide
    assert img.size == text["vmsize"]
    mapped = [s for s in segments if s["name"] != "__PAGEZERO" and s["vmsize"]]
    assert img.span_start == min(s["vmaddr"] for s in mapped) + slide == base
    assert img.span_end == max(s["vmaddr"] + s["vmsize"] for s in mapped) + slide
    assert [(s.name, s.vmaddr, s.vmsize, s.fileoff, s.filesize) for s in img.segments] == [
        (s["name"], s["vmaddr"], s["vmsize"], s["fileoff"], s["filesize"]) for s in segments]
    assert {s.name for s in img.segments} >= {"__TEXT", "__DATA", "__LINKEDIT"}
    if name == "dylib":
        assert img.install_name == "/usr/local/lib/libfixture.dylib"
        assert img.current_version == (1 << 16) | (2 << 8) | 3
    else:
        assert img.install_name is None
    if FILE_TYPES[name] == macho.MH_EXECUTE:
        assert img.segments[0].name == "__PAGEZERO"
    # Only the header and the load commands are read, nothing else of the image.
    h = macho.parse_header(path.read_bytes())
    assert sum(n for _, n in mem.reads) <= 4 + h.size + h.sizeofcmds
    assert macho.identity(img) == MachOUuid(img.uuid)


def test_image_info_memory_ends_inside_the_load_commands(built):
    data = built["arm64"].read_bytes()
    base = 0x1_0000_0000
    h = macho.parse_header(data)
    cut = data[: h.size + h.sizeofcmds - 1]
    with pytest.raises(MachOError, match=r"image at 0x100000000: truncated load commands"):
        macho.image_info(lambda a, n: cut[a - base : a - base + n], base)


def test_image_info_read_failure_is_passed_through():
    def read(addr, size):
        raise OSError("unreadable")
    with pytest.raises(OSError, match="unreadable"):
        macho.image_info(read, 0x1000)


# --- identifiers in the minidump ------------------------------------------------------------


def dump_syms_id(uuid: bytes) -> str:
    """The id dump_syms prints for a Mach-O file: the UUID in hex, uppercase, and age 0."""
    return uuid.hex().upper() + "0"


@pytest.mark.parametrize("name", THIN + ["fat"])
def test_codeview_debug_id_is_the_dump_syms_id(built, name):
    path = built[name]
    for arch, uuid in dwarfdump_uuids(path).items():
        ident = macho.identity(path, arch)
        assert ident == MachOUuid(uuid)
        expected = dump_syms_id(uuid)
        assert debug_id(ident) == expected
        assert code_id(ident) == uuid.hex().upper()
        record = encode_codeview(ident, str(path))
        assert record[:4] == b"RSDS"
        decoded = decode_codeview(record)  # what any reader gets: a GUID, an age, a name
        assert isinstance(decoded, PdbIdentity)
        assert debug_id(decoded) == expected
        assert decoded.age == 0
        assert decoded.pdb_path == path.name


@pytest.fixture(scope="module")
def macos_dump(built, tmp_path_factory):
    """A synthetic arm64 snapshot (tests/synthetic.py) made macOS, whose modules are the
    built executable and dylib as image_info sees them in memory."""
    modules = []
    for name, base, is_main in (("arm64", TEXT_BASE, True), ("dylib", LIB_BASE, False)):
        path = built[name]
        _, segments = otool_layout(path)
        text = next(s for s in segments if s["name"] == "__TEXT")
        img = macho.image_info(FakeMemory(path.read_bytes(), segments, base - text["vmaddr"]).read,
                               base)
        modules.append(Module(f"/Applications/Fixture.app/Contents/MacOS/{path.name}"
                              if is_main else f"/usr/local/lib/{path.name}",
                              img.base, img.size, macho.identity(img), is_main=is_main))
    snap = arm64_snapshot()
    snap = dataclasses.replace(
        snap, modules=tuple(modules),
        system=dataclasses.replace(snap.system, os=OS.MACOS, os_major=11, os_minor=7,
                                   os_build=0, os_version="20G1427 Darwin 20.6.0"))
    # The threads' pcs (synthetic.py) must fall in the executable's __TEXT.
    assert all(modules[0].base <= t.context.pc < modules[0].end for t in snap.threads)
    path = tmp_path_factory.mktemp("macho-dump") / "macos.dmp"
    path.write_bytes(minidump_bytes(snap))
    return snap, path


def test_minidump_own_reader_sees_the_uuid(macos_dump):
    snap, path = macos_dump
    md = read_minidump_snapshot(path)
    assert md.system.os == OS.MACOS
    for m, got in zip(snap.modules, md.modules):
        assert debug_id(got.identity) == dump_syms_id(m.identity.uuid)


def test_minidump_rust_minidump_debug_id(macos_dump):
    snap, path = macos_dump
    j = rust_stackwalk_json(path)
    assert j["system_info"]["cpu_arch"] == "arm64"
    assert j["system_info"]["os"] == "Mac OS X"
    assert len(j["modules"]) == len(snap.modules)
    for m, jm in zip(snap.modules, j["modules"]):
        assert int(jm["base_addr"], 16) == m.base
        assert int(jm["end_addr"], 16) == m.end
        assert jm["debug_id"] == dump_syms_id(m.identity.uuid)
        assert jm["code_id"] == m.identity.uuid.hex()  # rust-minidump: the UUID, lowercase
        assert jm["debug_file"] == m.path.rsplit("/", 1)[-1]
    assert j["threads"][0]["frames"][0]["module"] == snap.modules[0].path.rsplit("/", 1)[-1]


def test_minidump_breakpad_debug_identifier(macos_dump):
    snap, path = macos_dump
    r = run([breakpad_bin("minidump_dump"), path])
    assert r.returncode == 0, r.stderr[-3000:]
    found = re.findall(r"^\s+\(debug_identifier\)\s+= \"([0-9A-F]+)\"$", r.stdout, re.M)
    assert found == [dump_syms_id(m.identity.uuid) for m in snap.modules], r.stdout[-3000:]
    assert re.search(r"platform_id\s+= 0x8101", r.stdout)


# --- synthetic and malformed images -----------------------------------------------------------

UUID = bytes.fromhex("00112233445566778899aabbccddeeff")


def _command(cmd: int, body: bytes) -> bytes:
    return struct.pack("<II", cmd, 8 + len(body)) + body


def _segment64(name: str, vmaddr: int, vmsize: int, fileoff: int = 0, filesize: int = 0) -> bytes:
    return _command(macho.LC_SEGMENT_64, struct.pack(
        "<16sQQQQiiII", name.encode(), vmaddr, vmsize, fileoff, filesize, 5, 5, 0, 0))


def _segment32(name: str, vmaddr: int, vmsize: int) -> bytes:
    return _command(macho.LC_SEGMENT, struct.pack(
        "<16sIIIIiiII", name.encode(), vmaddr, vmsize, 0, 0, 5, 5, 0, 0))


def synthetic(commands: list[bytes] | None = None, *, is64: bool = True,
              cpu: tuple[int, int] = (macho.CPU_TYPE_ARM64, 0), file_type: int = macho.MH_EXECUTE,
              ncmds: int | None = None, sizeofcmds: int | None = None, pad: int = 64) -> bytes:
    """A minimal little-endian image: __PAGEZERO, __TEXT and LC_UUID unless told otherwise."""
    if commands is None:
        if is64:
            commands = [_segment64("__PAGEZERO", 0, 1 << 32),
                        _segment64("__TEXT", 1 << 32, 0x4000, 0, 0x4000)]
        else:
            commands = [_segment32("__PAGEZERO", 0, 0x1000), _segment32("__TEXT", 0x1000, 0x1000)]
        commands.append(_command(macho.LC_UUID, UUID))
    cmds = b"".join(commands)
    header = struct.pack("<IIIIIII", macho.MH_MAGIC_64 if is64 else macho.MH_MAGIC, cpu[0], cpu[1],
                         file_type, len(commands) if ncmds is None else ncmds,
                         len(cmds) if sizeofcmds is None else sizeofcmds, 0)
    return header + (b"\0" * 4 if is64 else b"") + cmds + bytes(pad)


def fat(images: list[tuple[tuple[int, int], bytes]], *, is64: bool = False,
        count: int | None = None) -> bytes:
    entry = 32 if is64 else 20
    offset = 8 + len(images) * entry
    table, body = b"", b""
    for (cputype, subtype), image in images:
        offset = (offset + 15) & ~15
        start = offset
        if is64:
            table += struct.pack(">IIQQII", cputype, subtype, start, len(image), 4, 0)
        else:
            table += struct.pack(">IIIII", cputype, subtype, start, len(image), 4)
        offset += len(image)
        body = body.ljust(start - 8 - len(images) * entry, b"\0") + image
    magic = macho.FAT_MAGIC_64 if is64 else macho.FAT_MAGIC
    return struct.pack(">II", magic, len(images) if count is None else count) + table + body


def memory_of(data: bytes, base: int = 0x1_0000_0000):
    return lambda addr, size: data[addr - base : addr - base + size]


def test_synthetic_image_parses():
    data = synthetic()
    assert macho.read_uuid(data) == UUID
    img = macho.image_info(memory_of(data), 0x1_0000_0000)
    assert (img.uuid, img.size, img.slide, img.file_type) == (UUID, 0x4000, 0, macho.MH_EXECUTE)
    img = macho.image_info(memory_of(data, 0x1_2340_0000), 0x1_2340_0000)
    assert img.slide == 0x2340_0000 and img.span_end == 0x1_2340_4000
    assert macho.read_uuid(synthetic([_segment64("__TEXT", 0, 0x1000)])) is None


def test_synthetic_32bit_i386_and_fat():
    i386 = synthetic(is64=False, cpu=(macho.CPU_TYPE_X86, 3))
    assert macho.uuids(i386) == {"i386": UUID}
    img = macho.image_info(memory_of(i386, 0x1000), 0x1000)
    assert (img.is64, img.arch, img.size, img.span_start, img.span_end) == (False, "i386", 0x1000,
                                                                            0x1000, 0x2000)
    arm = synthetic(cpu=(macho.CPU_TYPE_ARM64, 0))
    for is64 in (False, True):
        data = fat([((macho.CPU_TYPE_X86, 3), i386), ((macho.CPU_TYPE_ARM64, 0), arm)], is64=is64)
        assert macho.uuids(data) == {"i386": UUID, "arm64": UUID}
        assert macho.uuid_for_arch(data, Arch.X86) == UUID


@pytest.mark.parametrize("cpu, name", [
    ((macho.CPU_TYPE_ARM64, 0), "arm64"),
    ((macho.CPU_TYPE_ARM64, 0x80000002), "arm64e"),  # pointer-auth ABI bits in the high byte
    ((macho.CPU_TYPE_X86_64, 0x80000003), "x86_64"),  # CPU_SUBTYPE_LIB64
    ((macho.CPU_TYPE_X86_64, 8), "x86_64h"),
    ((macho.CPU_TYPE_X86, 3), "i386"),
    ((macho.CPU_TYPE_ARM64_32, 1), "arm64_32"),
    ((macho.CPU_TYPE_ARM, 9), "armv7"),
    ((0x1234, 5), "cputype-0x1234-0x5"),
])
def test_arch_names(cpu, name):
    assert macho.arch_name(*cpu) == name
    assert list(macho.uuids(synthetic(cpu=cpu))) == [name]


def test_arm64e_and_arm64_slices_are_told_apart(built):
    """A real arm64 image relabelled arm64e (lld links arm64e objects as plain arm64)."""
    arm64 = built["arm64"].read_bytes()
    arm64e = arm64[:8] + struct.pack("<I", 0x80000002) + arm64[12:]
    data = fat([((macho.CPU_TYPE_ARM64, 0), arm64), ((macho.CPU_TYPE_ARM64, 0x80000002), arm64e)])
    uuid = macho.read_uuid(arm64)
    assert macho.uuids(data) == {"arm64": uuid, "arm64e": uuid}
    assert macho.slices(data)[1].arch == "arm64e"


def _patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


FIRST_CMD = 32  # load commands of a 64-bit image start after the 32-byte header

MALFORMED = {
    "empty": (b"", "truncated Mach-O header"),
    "three bytes": (b"\xcf\xfa\xed", "truncated Mach-O header"),
    "header cut": (synthetic()[:20], "truncated Mach-O header: 20 of 32"),
    "bad magic": (b"\x7fELF" + bytes(60), "not a Mach-O image"),
    "big-endian": (struct.pack(">I", macho.MH_MAGIC_64) + synthetic()[4:], "big-endian"),
    "big-endian 32": (struct.pack(">I", macho.MH_MAGIC) + synthetic()[4:], "big-endian"),
    "ncmds huge": (synthetic(ncmds=0xFFFFFFFF), "ncmds 4294967295 cannot fit"),
    "sizeofcmds huge": (synthetic(sizeofcmds=0xFFFFFFF0), "implausible sizeofcmds"),
    "sizeofcmds past data": (synthetic(sizeofcmds=4096), "run past the end of the image"),
    "cmdsize 0": (_patch(synthetic(), FIRST_CMD + 4, "<I", 0), "has cmdsize 0, less than 8"),
    "cmdsize 4": (_patch(synthetic(), FIRST_CMD + 4, "<I", 4), "has cmdsize 4, less than 8"),
    "cmdsize past sizeofcmds": (_patch(synthetic(), FIRST_CMD + 4, "<I", 0x10000),
                                "runs past sizeofcmds"),
    "ncmds more than present": (synthetic(ncmds=4), "load command 3 of 4 .* runs past sizeofcmds"),
    "uuid cmdsize small": (synthetic([_command(macho.LC_UUID, UUID[:8])]), "LC_UUID cmdsize 16"),
    "two uuids": (synthetic([_command(macho.LC_UUID, UUID)] * 2), "a second LC_UUID"),
    "segment too small": (synthetic([_command(macho.LC_SEGMENT_64, bytes(16))]),
                          "segment command cmdsize 24 is less than 72"),
    "sections overflow": (synthetic([_patch(_segment64("__TEXT", 0, 0x1000), 64, "<I", 1000)]),
                          "1000 sections do not fit"),
    "32-bit segment in 64-bit": (synthetic([_segment32("__TEXT", 0, 0x1000)]),
                                 "32-bit segment command in a 64-bit image"),
    "dylib name outside": (synthetic([_command(macho.LC_ID_DYLIB, struct.pack("<IIII", 200, 0, 0, 0))],
                                     file_type=macho.MH_DYLIB), "name offset 200"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_image(case):
    data, message = MALFORMED[case]
    with pytest.raises(MachOError, match=message):
        macho.read_uuid(data)
    with pytest.raises(MachOError, match=message):
        macho.uuids(data)
    if case == "sizeofcmds past data":
        # Memory has no "end of the file": the read callback's short read is the limit.
        message = "truncated load commands"
    with pytest.raises(MachOError, match=f"image at 0x100000000: .*{message}"):
        macho.image_info(memory_of(data), 0x1_0000_0000)


def test_malformed_file_names_the_path(tmp_path):
    p = tmp_path / "broken.dylib"
    p.write_bytes(MALFORMED["cmdsize 0"][0])
    with pytest.raises(MachOError, match=r"broken\.dylib: load command 0 of 3 .*cmdsize 0"):
        macho.file_uuids(p)


@pytest.mark.parametrize("data, message", [
    (synthetic(file_type=1), "file type 1 is not a loadable image"),
    (synthetic([_segment64("__DATA", 0, 0x1000)]), "no __TEXT segment"),
    (synthetic([_segment64("__TEXT", 0, 0x1000)] * 2), "more than one __TEXT"),
    (synthetic([_segment64("__TEXT", 0, 0)]), "__TEXT segment is empty"),
    (synthetic([_segment64("__TEXT", 1 << 32, 0x1000), _segment64("__DATA", (1 << 64) - 16, 0x1000)]),
     "outside the 64-bit address space"),
])
def test_image_info_rejects(data, message):
    with pytest.raises(MachOError, match=message):
        macho.image_info(memory_of(data), 0x1_0000_0000)


ARM = synthetic()
GOOD_FAT = fat([((macho.CPU_TYPE_ARM64, 0), ARM)])
MALFORMED_FAT = {
    "header only magic": (GOOD_FAT[:6], "truncated universal header"),
    "no slices": (fat([]), "no slices"),
    "java class": (struct.pack(">IHH", macho.FAT_MAGIC, 0, 52) + bytes(64), "Java class file"),
    "table past end": (fat([], count=3), "table runs past the end"),
    "slice past end": (GOOD_FAT[:-10], r"slice 0 \(arm64\) .* is not inside the file"),
    "slice offset huge": (_patch(GOOD_FAT, 16, ">I", 0xFFFFFF00), "is not inside the file"),
    "slice offset in header": (_patch(GOOD_FAT, 16, ">I", 4), "is not inside the file"),
    "fat64 slice past end": (_patch(fat([((macho.CPU_TYPE_ARM64, 0), ARM)], is64=True),
                                    16, ">Q", 1 << 40), "is not inside the file"),
    "two arm64": (fat([((macho.CPU_TYPE_ARM64, 0), ARM)] * 2), "two arm64 slices"),
    "slice is not its arch": (fat([((macho.CPU_TYPE_X86_64, 3), ARM)]),
                              "the x86_64 slice holds an image for arm64"),
    "slice garbage": (fat([((macho.CPU_TYPE_ARM64, 0), b"\0" * 64)]), "not a Mach-O image"),
    "slice too small": (fat([((macho.CPU_TYPE_ARM64, 0), ARM[:16])]), "16 bytes is too small"),
}


@pytest.mark.parametrize("case", list(MALFORMED_FAT))
def test_malformed_fat(case, tmp_path):
    data, message = MALFORMED_FAT[case]
    with pytest.raises(MachOError, match=message):
        macho.uuids(data)
    p = tmp_path / "fat"
    p.write_bytes(data)
    with pytest.raises(MachOError, match=message):
        macho.file_uuids(p)
    with pytest.raises(MachOError, match=message):
        macho.file_uuid(p, "x86_64" if case == "slice is not its arch" else "arm64")


def _only_macho_errors(data: bytes, base: int = 0x1_0000_0000):
    for fn in (macho.read_uuid, macho.uuids, macho.slices):
        try:
            fn(data)
        except MachOError:
            pass
    try:
        macho.image_info(memory_of(data, base), base)
    except MachOError:
        pass


def _mutations(data: bytes, region: int, seed: int, count: int):
    """Every byte of the first ``region`` bytes set to 0x00, 0xff and 0x80, then random
    multi-byte corruptions, then every truncation of that region."""
    for i in range(region):
        for v in (0x00, 0xFF, 0x80):
            yield data[:i] + bytes([v]) + data[i + 1:]
    rng = random.Random(seed)
    for _ in range(count):
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(region)] = rng.randrange(256)
        yield bytes(out)
    for n in range(region):
        yield data[:n]


def test_mutations_of_a_synthetic_image_raise_only_macho_error():
    for data in _mutations(synthetic(), 140, 1, 3000):
        _only_macho_errors(data)
    for data in _mutations(fat([((macho.CPU_TYPE_ARM64, 0), ARM)], is64=True), 96, 2, 2000):
        _only_macho_errors(data)


@pytest.mark.parametrize("name", ["arm64", "arm64_32", "dylib", "fat"])
def test_mutations_of_real_files_raise_only_macho_error(built, name):
    data = built[name].read_bytes()
    if name == "fat":  # the universal header; the slices are the thin files, mutated above
        region = 8 + len(macho.slices(data)) * macho.FAT_ARCH_SIZE
    else:
        h = macho.parse_header(data)
        region = h.size + h.sizeofcmds
    for mutated in _mutations(data, region, 3, 1000):
        _only_macho_errors(mutated)
