"""Write the synthetic snapshots and check what the real readers (Breakpad, rust-minidump,
LLDB) and the project's own reader see in them: exact thread ids, registers, module
addresses and identifiers, exception, soft errors and memory."""

from __future__ import annotations

import re

import pytest

from generate_dump.memsource import SnapshotMemory
from generate_dump.minidump import read_minidump, write_minidump
from generate_dump.minidump.codeview import code_id, debug_id
from generate_dump.snapshot import AMD64_GPR_NAMES, Arm64Context, ElfBuildId, PdbIdentity
from generate_dump.sources.minidump_file import read_minidump_snapshot

from readers import breakpad_bin, lldb_core, run, rust_dump, rust_stackwalk_json
from synthetic import (
    BUILD_ID,
    BUILD_ID_CODE_ID,
    BUILD_ID_DEBUG_ID,
    TEXT_BASE,
    amd64_snapshot,
    arm64_snapshot,
    as_read,
    copied,
)

AMD64_REGS = AMD64_GPR_NAMES + ("rip",)

# Each reader's register names -> the snapshot's (x5 and v5 are Arm64Context.x[5], .v[5]).
_AMD64 = {r: r for r in AMD64_REGS}
_X0_X28 = {f"x{n}": f"x{n}" for n in range(29)}
BREAKPAD_AMD64 = {**_AMD64, "eflags": "eflags", "cs": "cs", "ss": "ss", "mx_csr": "mxcsr"}
BREAKPAD_ARM64 = {**{f"iregs[{n}]": f"x{n}" for n in range(29)}, "iregs[29]": "fp",
                  "iregs[30]": "lr", "iregs[31]": "sp", "iregs[32]": "pc", "cpsr": "cpsr",
                  "float_save.fpsr": "fpsr"}
RUST_AMD64 = {**_AMD64, "eflags": "eflags", "mx_csr": "mxcsr"}
RUST_ARM64 = {**_X0_X28, "x29(fp)": "fp", "x30(lr)": "lr", "sp": "sp", "pc": "pc",
              "cpsr": "cpsr", "fpsr": "fpsr", "fpcr": "fpcr",
              **{f"d{n}": f"v{n}" for n in range(32)}}
LLDB_AMD64 = {**_AMD64, "rflags": "eflags", "cs": "cs", "ss": "ss"}
# cpsr is not compared: LLDB's minidump ARM64 register context reads cpsr after pc (at
# 0x110, where CONTEXT_ARM64 keeps v0), not at offset 4.
LLDB_ARM64 = {**_X0_X28, "fp": "fp", "lr": "lr", "sp": "sp", "pc": "pc"}


def _register(c, name: str) -> int:
    m = re.fullmatch(r"([xv])(\d+)", name)
    if m and isinstance(c, Arm64Context):
        return getattr(c, m[1])[int(m[2])]
    return getattr(c, name)


def _assert_registers(values, c, names: dict[str, str], tid: int) -> None:
    """Every register in ``names`` (reader's name -> snapshot's) as the reader shows it in
    ``values`` (hex text or int) equals the snapshot context's."""
    for key, reg in names.items():
        v = values[key]
        assert (_hexval(v) if isinstance(v, str) else v) == _register(c, reg), (tid, key)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    d = tmp_path_factory.mktemp("dumps")
    out = {}
    for name, snap in (("amd64", amd64_snapshot(with_exception=True)), ("arm64", arm64_snapshot())):
        path = d / f"{name}.dmp"
        with open(path, "wb") as f:
            write_minidump(snap, f)
        out[name] = (snap, path)
    return out


# -- helpers for the "dump"-style text that minidump_dump and minidump-stackwalk --dump print ---

_FIELD = re.compile(r"^  ([A-Za-z(][^=\n]*?)\s*= (.*)$", re.M)


def _fields(text: str) -> dict[str, str]:
    """``  name   = value`` lines; the name with spaces removed, the value's first token."""
    out = {}
    for k, v in _FIELD.findall(text):
        out.setdefault(re.sub(r"\s+", "", k), v.split(" ")[0] if not v.startswith('"') else v)
    return out


def _thread_sections(text: str) -> list[str]:
    """The text of each ``thread[N]`` section, in order, cut before the next top-level section."""
    parts = re.split(r"^thread\[(\d+)\]$", text, flags=re.M)
    sections = []
    for i in range(1, len(parts), 2):
        assert int(parts[i]) == len(sections)
        body = re.split(r"^(?:Minidump|MDException|MDRawSystemInfo|thread_name\[)", parts[i + 1],
                        maxsplit=1, flags=re.M)[0]
        sections.append(body)
    return sections


def _module_sections(text: str) -> list[str]:
    parts = re.split(r"^module\[(\d+)\]$", text, flags=re.M)
    return [re.split(r"^(?:Minidump|MD(?!RawModule)|MINIDUMP_(?!MODULE))", parts[i + 1],
                     maxsplit=1, flags=re.M)[0]
            for i in range(1, len(parts), 2)]


def _hexval(s: str) -> int:
    return int(s, 16)


def _sections(text: str, kind: str, items) -> list:
    """(item, text of its ``kind[N]`` section) pairs; one section per item, in order."""
    sections = (_thread_sections if kind == "thread" else _module_sections)(text)
    assert len(sections) == len(items)
    return list(zip(items, sections))


def _assert_thread_fields(f: dict[str, str], t) -> None:
    assert _hexval(f["thread_id"]) == t.tid
    assert _hexval(f["stack.start_of_memory_range"]) == t.stack.start


def _assert_module_fields(f: dict[str, str], m) -> None:
    assert _hexval(f["base_of_image"]) == m.base
    assert _hexval(f["size_of_image"]) == m.size
    assert f["(code_file)"] == f'"{m.path}"'


# -- Breakpad minidump_dump ------------------------------------------------------------------

@pytest.fixture(scope="module")
def breakpad_out(dumps):
    # Run directly (not readers.minidump_dump) so the content tests below still check the
    # output when the exit status is wrong; the exit status has its own test.
    return {name: run([breakpad_bin("minidump_dump"), path]) for name, (_, path) in dumps.items()}


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_breakpad_minidump_dump_exits_0(breakpad_out, name):
    # minidump_dump counts every stream it fails to get as an error; a missing
    # MemoryInfoList is one of them (minidump_dump.cc: "minidump.GetMemoryInfoList() failed").
    r = breakpad_out[name]
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert r.returncode == 0, f"minidump_dump exit {r.returncode}: {errors}"
    assert not errors


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_breakpad_threads_and_registers(breakpad_out, dumps, name):
    snap, _ = dumps[name]
    text = breakpad_out[name].stdout
    assert re.search(rf"^  thread_count = {len(snap.threads)}$", text, re.M)
    for t, sec in _sections(text, "thread", snap.threads):
        f = _fields(sec)
        _assert_thread_fields(f, t)
        assert _hexval(f["teb"]) == t.thread_pointer
        assert _hexval(f["stack.memory.data_size"]) == len(t.stack.data)
        assert "\nStack\n0x" + t.stack.data[:64].hex() in sec
        if name == "amd64":
            assert _hexval(f["thread_context.data_size"]) == 1232
            assert _hexval(f["context_flags"]) == 0x10001F
            _assert_registers(f, t.context, BREAKPAD_AMD64, t.tid)
        else:
            assert _hexval(f["thread_context.data_size"]) == 912
            assert _hexval(f["context_flags"]) == 0x400007
            _assert_registers(f, t.context, BREAKPAD_ARM64, t.tid)


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_breakpad_thread_names(breakpad_out, dumps, name):
    snap, _ = dumps[name]
    text = breakpad_out[name].stdout
    named = [t for t in snap.threads if t.name]
    assert re.search(rf"^  thread_name_count = {len(named)}$", text, re.M)
    for t in named:
        assert re.search(rf"thread_id\s+= 0x{t.tid:x}\n.*\n\s+thread_name\s+= \"{re.escape(t.name)}\"", text), t


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_breakpad_modules(breakpad_out, dumps, name):
    snap, _ = dumps[name]
    text = breakpad_out[name].stdout
    assert re.search(rf"^  module_count = {len(snap.modules)}$", text, re.M)
    pairs = _sections(text, "module", snap.modules)
    for m, sec in pairs:
        f = _fields(sec)
        _assert_module_fields(f, m)
        assert f["(debug_identifier)"] == f'"{debug_id(m.identity)}"'
        if isinstance(m.identity, ElfBuildId):
            assert f["(cv_record).cv_signature"] == "0x4270454c"
            assert f["(code_identifier)"] == f'"{m.identity.build_id.hex()}"'
            assert f["(cv_record).build_id"] == m.identity.build_id.hex()
        else:
            assert f["(cv_record).cv_signature"] == "0x53445352"
            assert f["(cv_record).age"] == str(m.identity.age)
            assert f["(cv_record).pdb_file_name"] == f'"{m.identity.pdb_path}"'
    # The known build id: debug id and code id exactly as the reference says.
    first = _fields(pairs[0][1])
    assert first["(debug_identifier)"] == f'"{BUILD_ID_DEBUG_ID}"'
    assert first["(code_identifier)"] == f'"{BUILD_ID_CODE_ID}"'
    assert BUILD_ID_DEBUG_ID == "030201000504070608090A0B0C0D0E0F0"
    assert BUILD_ID_CODE_ID == "000102030405060708090a0b0c0d0e0f1011121314151617"


def test_breakpad_amd64_exception_memory_and_system(breakpad_out):
    text = breakpad_out["amd64"].stdout
    exc = text.split("\nMDException\n", 1)[1].split("\nMDRawSystemInfo\n", 1)[0]
    f = _fields(exc)
    assert _hexval(f["thread_id"]) == 1001
    assert _hexval(f["exception_record.exception_code"]) == 11
    assert _hexval(f["exception_record.exception_flags"]) == 1
    assert _hexval(f["exception_record.exception_address"]) == 0xDEAD
    assert f["thread_context.data_size"] == "1232"
    assert _hexval(f["rip"]) == TEXT_BASE + 0x1234 + 1  # thread 1001's context
    # The extra memory range, with its bytes.
    assert re.search(r"start_of_memory_range = 0x60000000\n\s+memory.data_size\s+= 0x64\n.*\nMemory\n0x"
                     + (b"HEAPMARKER" * 10).hex(), text)
    si = _fields(text.split("\nMDRawSystemInfo\n", 1)[1])
    assert si["processor_architecture"] == "0x9"
    assert si["platform_id"] == "0x8201"
    assert si["number_of_processors"] == "2"
    assert si["(csd_version)"] == '"Linux 6.1.0 #1 SMP x86_64"'
    assert re.search(r"^  size_of_info\s+= 832$", text, re.M)
    assert re.search(r"^  process_id\s+= 1000$", text, re.M)
    assert re.search(r"^  info_count = 2$", text, re.M)  # MemoryInfoList
    assert "\nStream MD_LINUX_MAPS:\n555555554000-555555559000 r-xp" in text


def test_breakpad_arm64_has_no_exception(breakpad_out):
    text = breakpad_out["arm64"].stdout
    assert "\nMDException\n" not in text
    assert re.search(r"processor_architecture\s+= 0xc \(arm64\)", text)


# -- rust-minidump --json ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rust_json(dumps):
    return {name: rust_stackwalk_json(path) for name, (_, path) in dumps.items()}


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_rust_json_threads_and_modules(rust_json, dumps, name):
    snap, _ = dumps[name]
    j = rust_json[name]
    assert j["status"] == "OK"
    assert j["pid"] == snap.process.pid
    assert j["system_info"]["cpu_arch"] == name
    assert j["system_info"]["os"] == "Linux"
    assert j["system_info"]["cpu_count"] == snap.system.cpu.count
    assert j["thread_count"] == len(snap.threads)
    assert [t["thread_id"] for t in j["threads"]] == [t.tid for t in snap.threads]
    assert [t["thread_name"] for t in j["threads"]] == [t.name for t in snap.threads]
    for t, jt in zip(snap.threads, j["threads"]):
        frame0 = jt["frames"][0]
        assert frame0["trust"] == "context"
        assert int(frame0["offset"], 16) == t.context.pc
        assert frame0["module"] == snap.modules[0].path.rsplit("/", 1)[-1]
    assert j["main_module"] == 0
    assert len(j["modules"]) == len(snap.modules)
    for m, jm in zip(snap.modules, j["modules"]):
        assert int(jm["base_addr"], 16) == m.base
        assert int(jm["end_addr"], 16) == m.base + m.size
        assert jm["debug_id"] == debug_id(m.identity)
        if isinstance(m.identity, ElfBuildId):
            assert jm["code_id"] == code_id(m.identity)
            assert jm["filename"] == m.path.rsplit("/", 1)[-1]
        else:
            assert isinstance(m.identity, PdbIdentity)
            assert jm["debug_file"] == m.identity.pdb_path
    assert j["modules"][0]["debug_id"] == BUILD_ID_DEBUG_ID
    assert j["modules"][0]["code_id"] == BUILD_ID_CODE_ID


def test_rust_json_amd64_crash_and_soft_errors(rust_json):
    j = rust_json["amd64"]
    ci = j["crash_info"]
    assert ci["type"].startswith("SIGSEGV")
    assert ci["type"] == "SIGSEGV / SEGV_MAPERR"
    assert int(ci["address"], 16) == 0xDEAD
    assert ci["crashing_thread"] == 1
    crashing = j["crashing_thread"]
    assert crashing["thread_id"] == 1001
    regs = crashing["frames"][0]["registers"]
    _assert_registers(regs, amd64_snapshot().threads[1].context, _AMD64, 1001)
    assert j["soft_errors"] == [
        {"kind": "memory-unreadable", "message": "region 0x1000 could not be read"}]
    assert j["system_info"]["cpu_info"] == "family 6 model 85 stepping 7"
    assert j["lsb_release"]["description"] == "Debian GNU/Linux 12 (bookworm)"
    assert j["linux_memory_map_count"] == 1


def test_rust_json_arm64_no_crash(rust_json):
    j = rust_json["arm64"]
    assert j["crash_info"]["type"] is None
    assert j["crash_info"]["address"] is None
    assert j["soft_errors"] is None  # no MozSoftErrors stream was written


# -- rust-minidump --dump ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rust_dump_out(dumps):
    return {name: rust_dump(path) for name, (_, path) in dumps.items()}


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_rust_dump_registers_of_every_thread(rust_dump_out, dumps, name):
    snap, _ = dumps[name]
    for t, sec in _sections(rust_dump_out[name], "thread", snap.threads):
        f = _fields(sec)
        _assert_thread_fields(f, t)
        if name == "amd64":
            assert "CONTEXT_AMD64" in sec
            _assert_registers(f, t.context, RUST_AMD64, t.tid)
            assert _hexval(f["context_flags"]) == 0x10001F
        else:
            assert "CONTEXT_ARM64" in sec
            _assert_registers(f, t.context, RUST_ARM64, t.tid)


def test_rust_dump_modules(rust_dump_out, dumps):
    snap, _ = dumps["amd64"]
    pairs = _sections(rust_dump_out["amd64"], "module", snap.modules)
    for m, sec in pairs:
        _assert_module_fields(_fields(sec), m)
    first = _fields(pairs[0][1])
    assert first["(code_identifier)"] == f'"{BUILD_ID_CODE_ID}"'
    assert first["(debug_identifier)"] == '"03020100-0504-0706-0809-0a0b0c0d0e0f"'


# -- LLDB -------------------------------------------------------------------------------------

def lldb_uuid(raw: bytes) -> str:
    """How LLDB prints a UUID: dashes before bytes 4, 6, 8, 10, then every 6 bytes."""
    out = []
    for i, b in enumerate(raw):
        if i in (4, 6, 8) or (i >= 10 and (i - 10) % 6 == 0):
            out.append("-")
        out.append(f"{b:02X}")
    return "".join(out)


def _lldb_uuid_for(identity) -> str:
    if isinstance(identity, ElfBuildId):
        return lldb_uuid(identity.build_id)
    return lldb_uuid(identity.guid + identity.age.to_bytes(4, "little"))


@pytest.fixture(scope="module")
def lldb_out(dumps):
    out = {}
    for name, (snap, path) in dumps.items():
        cmds = ["thread list", "image list", "register read"]
        for i in range(1, len(snap.threads) + 1):
            cmds += [f"thread select {i}", "register read"]
        out[name] = lldb_core(path, *cmds)
    return out


def _lldb_register_blocks(text: str) -> list[dict[str, int]]:
    blocks = text.split("(lldb) thread select ")[1:]
    out = []
    for b in blocks:
        regs = dict((k, int(v, 16)) for k, v in re.findall(r"^\s+(\w+) = (0x[0-9a-f]+)", b, re.M))
        out.append(regs)
    return out


@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_lldb_threads_modules_registers(lldb_out, dumps, name):
    snap, _ = dumps[name]
    text = lldb_out[name]
    arch = {"amd64": "x86_64", "arm64": "aarch64"}[name]
    assert f"Core file '{dumps[name][1]}' ({arch}) was loaded." in text
    assert f"Process {snap.process.pid} stopped" in text
    for n, t in enumerate(snap.threads, 1):
        assert re.search(rf"thread #{n}: tid = {t.tid}, 0x{t.context.pc:016x} ", text), t.tid
    for n, m in enumerate(snap.modules):
        line = f"[{n:3d}] {_lldb_uuid_for(m.identity)} 0x{m.base:016x} {m.path}"
        assert line in text, line
    blocks = _lldb_register_blocks(text)
    assert len(blocks) == len(snap.threads)
    for t, regs in zip(snap.threads, blocks):
        _assert_registers(regs, t.context, LLDB_AMD64 if name == "amd64" else LLDB_ARM64,
                          t.tid)


def test_lldb_uuid_of_known_build_id(lldb_out):
    assert "00010203-0405-0607-0809-0A0B0C0D0E0F-101112131415-1617" in lldb_out["amd64"]
    assert lldb_uuid(BUILD_ID) == "00010203-0405-0607-0809-0A0B0C0D0E0F-101112131415-1617"


def test_lldb_amd64_stop_reason(lldb_out):
    assert re.search(r"\* thread #2: tid = 1001, .*stop reason = signal SIGSEGV", lldb_out["amd64"])


# -- the project's reader ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["amd64", "arm64"])
def test_own_reader(dumps, name):
    snap, path = dumps[name]
    got = read_minidump_snapshot(path)
    mem = SnapshotMemory(got)
    assert got.time == snap.time
    assert got.system == snap.system
    assert [t.tid for t in got.threads] == [t.tid for t in snap.threads]
    for t, rt in zip(snap.threads, got.threads):
        assert rt.context == t.context
        assert rt.thread_pointer == t.thread_pointer
        assert rt.stack == t.stack
        assert rt.name == t.name
        assert mem.read(t.context.sp, 16) == t.stack.data[t.context.sp - t.stack.start:][:16]
    assert [(m.path, m.base, m.size) for m in got.modules] == [(m.path, m.base, m.size) for m in snap.modules]
    assert [m.identity for m in got.modules] == [m.identity for m in snap.modules]
    assert [m.is_main for m in got.modules] == [i == 0 for i in range(len(snap.modules))]
    assert debug_id(got.modules[0].identity) == BUILD_ID_DEBUG_ID
    assert code_id(got.modules[0].identity) == BUILD_ID_CODE_ID
    assert got.process.pid == snap.process.pid
    assert got.process == as_read(snap).process
    assert got.exception == snap.exception
    assert got.soft_errors == snap.soft_errors


def test_own_reader_amd64_memory_and_exception(dumps):
    snap, path = dumps["amd64"]
    got = read_minidump_snapshot(path)
    mem = SnapshotMemory(got)
    assert mem.read(0x60000000, 10) == b"HEAPMARKER"
    assert mem.read(0x60000000, 100) == b"HEAPMARKER" * 10
    assert mem.read(0x60000000 + 95, 10) == b"ARKER"  # short: runs past the captured range
    assert mem.read_exact(0x60000000 + 95, 10) is None
    assert mem.read(0x5000_0000, 1) == b""
    assert got.exception.thread_id == 1001 and got.exception.code == 11
    assert got.exception.address == 0xDEAD and got.exception.flags == 1
    # The file holds the crashing thread's registers twice: in its thread and the exception.
    md = read_minidump(path)
    assert md.exception_context == snap.threads[1].context == md.thread(1001).context
    assert got.linux.maps == snap.linux.maps
    assert got.linux.cmdline == b"/usr/bin/synthetic\0--flag\0"
    assert got.linux.environ is None
    assert got.linux.dso_debug == snap.linux.dso_debug
    assert len(got.regions) == 2 and got.regions[1].start == 0x60000000
    assert copied(got).memory == snap.memory
