"""Loaded ELF modules of a Linux process, found from its mappings and its r_debug link map."""

from __future__ import annotations

from typing import Callable, Optional

from ...snapshot import DsoDebug, ElfBuildId, LinkMapEntry, Module, SoftError
from .procfs import Mapping

AT_ENTRY = 9
AT_SYSINFO_EHDR = 33


def module_name(path: str, soname: Optional[str]) -> str:
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    if not soname:
        return path
    d = path.rpartition("/")[0]
    return f"{d}/{soname}" if d else soname


def _file_for(pid: int, m: Mapping) -> list[str]:
    paths = [f"/proc/{pid}/map_files/{m.start:x}-{m.end:x}"]
    if m.path.startswith("/"):
        p = m.path[: -len(" (deleted)")] if m.path.endswith(" (deleted)") else m.path
        paths += [f"/proc/{pid}/root{p}", p]
    return paths


def modules_from_maps(pid: int, maps: list[Mapping], auxv: dict[int, int],
                      read: Callable[[int, int], bytes], soft: list[SoftError]) -> list[Module]:
    """Modules from the mappings: every readable file mapping at offset 0 that holds an ELF
    image, plus the vDSO; the main executable first."""
    from ...binfmt.elf import ElfError, file_identity, read_loaded_image

    entry = auxv.get(AT_ENTRY, 0)
    vdso = auxv.get(AT_SYSINFO_EHDR, 0)
    found: list[tuple[Module, int]] = []
    taken: list[tuple[int, int]] = []
    for m in maps:
        is_vdso = m.path == "[vdso]" or (vdso and m.start == vdso)
        if not m.readable or m.offset != 0 or not (m.inode or is_vdso):
            continue
        try:
            if read(m.start, 4) != b"\x7fELF":
                continue
            img = read_loaded_image(read, m.start, m.offset)
        except (ElfError, OSError, ValueError):
            continue
        if any(a < img.base + img.size and img.base < b for a, b in taken):
            continue  # an overlapping image (e.g. a file mapped twice): readers drop overlaps
        build_id, from_hash, soname = img.build_id, False, img.soname
        # The file is read (pyelftools: slow) only when memory lacks the build id.
        if build_id is None and not is_vdso:
            for candidate in ([] if is_vdso else _file_for(pid, m)):
                try:
                    fid = file_identity(candidate)
                except ElfError:
                    continue
                soname = soname or fid.soname
                if build_id is None:
                    if fid.build_id:
                        build_id = fid.build_id
                    elif fid.text_hash:
                        build_id, from_hash = fid.text_hash, True
                break
        if build_id is None:
            soft.append(SoftError("module-identity",
                                  f"no build id for {m.path or '[vdso]'} (file unreadable)"))
        is_main = bool(entry) and img.base <= entry < img.base + img.size
        path = m.path if m.path and not m.path.startswith("[") else ""
        name = module_name(path, soname) if path else (soname or "linux-vdso.so.1")
        module = Module(
            path=name, base=img.base, size=img.size,
            identity=ElfBuildId(build_id, from_hash) if build_id else None, is_main=is_main,
        )
        found.append((module, img.dynamic_addr))
        taken.append((img.base, img.base + img.size))
    modules = [mod for mod, _ in found]
    modules.sort(key=lambda mod: (not mod.is_main, mod.base))
    return modules


def dso_debug(read: Callable[[int, int], bytes], debug_addr: int, dynamic: bytes,
              dynamic_addr: int) -> Optional[DsoDebug]:
    """r_debug and the link_map chain (64-bit layouts); None when not available."""
    if not debug_addr:
        return None
    raw = read(debug_addr, 40)
    if len(raw) < 40:
        return None
    version = int.from_bytes(raw[0:4], "little")
    r_map = int.from_bytes(raw[8:16], "little")
    brk = int.from_bytes(raw[16:24], "little")
    ldbase = int.from_bytes(raw[32:40], "little")
    if version < 1:
        return None
    entries: list[LinkMapEntry] = []
    node, seen = r_map, set()
    while node and node not in seen and len(entries) < 4096:
        seen.add(node)
        lm = read(node, 40)
        if len(lm) < 40:
            break
        l_addr, l_name, l_ld, l_next = (int.from_bytes(lm[i : i + 8], "little") for i in (0, 8, 16, 24))
        name = read(l_name, 4096).split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if l_name else ""
        entries.append(LinkMapEntry(l_addr, name, l_ld))
        node = l_next
    return DsoDebug(version=version, brk=brk, ldbase=ldbase, dynamic_addr=dynamic_addr,
                    link_maps=tuple(entries), dynamic=dynamic)


def trim_dynamic(raw: bytes) -> bytes:
    """_DYNAMIC up to and including its DT_NULL entry."""
    for off in range(0, len(raw) - 15, 16):
        if int.from_bytes(raw[off : off + 8], "little") == 0:
            return raw[: off + 16]
    return raw


def main_dso_debug(read: Callable[[int, int], bytes],
                   main: Optional[Module]) -> Optional[DsoDebug]:
    """The DsoDebug stream's content: r_debug found through the main image's DT_DEBUG."""
    if main is None:
        return None
    from ...binfmt.elf import ElfError, read_loaded_image

    try:
        img = read_loaded_image(read, main.base)
        if not img.debug_addr:
            return None  # a static executable, or no dynamic linker yet
        dynamic = trim_dynamic(read(img.dynamic_addr, 4096)) if img.dynamic_addr else b""
        return dso_debug(read, img.debug_addr, dynamic, img.dynamic_addr)
    except (ElfError, OSError, ProcessLookupError):
        return None
