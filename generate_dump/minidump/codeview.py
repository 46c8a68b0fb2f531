"""CodeView records that identify a module: Breakpad's 'BpEL' for ELF, 'RSDS' for PE and Mach-O."""

from __future__ import annotations

import struct

from ..snapshot import ElfBuildId, MachOUuid, ModuleIdentity, PdbIdentity
from . import format as fmt


class CodeViewError(ValueError):
    pass


def encode_codeview(identity: ModuleIdentity, module_path: str = "") -> bytes:
    if isinstance(identity, ElfBuildId):
        return struct.pack("<I", fmt.CV_SIGNATURE_ELF) + identity.build_id
    if isinstance(identity, PdbIdentity):
        if len(identity.guid) != 16:
            raise CodeViewError(f"a PDB GUID is 16 bytes, got {len(identity.guid)}")
        return (struct.pack("<I", fmt.CV_SIGNATURE_RSDS) + identity.guid
                + struct.pack("<I", identity.age) + identity.pdb_path.encode("utf-8") + b"\0")
    if isinstance(identity, MachOUuid):
        if len(identity.uuid) != 16:
            raise CodeViewError(f"a Mach-O UUID is 16 bytes, got {len(identity.uuid)}")
        # Readers print the GUID as u32/u16/u16 little-endian fields: store the canonical
        # big-endian UUID byte-swapped per field so the printed id equals the UUID.
        u = identity.uuid
        guid = u[3::-1] + u[5:3:-1] + u[7:5:-1] + u[8:]
        name = module_path.rsplit("/", 1)[-1]
        return struct.pack("<I", fmt.CV_SIGNATURE_RSDS) + guid + struct.pack("<I", 0) + name.encode() + b"\0"
    raise CodeViewError(f"unsupported identity {type(identity).__name__}")


def decode_codeview(data: bytes) -> ModuleIdentity:
    """Parse a CodeView record. RSDS comes back as a PdbIdentity (Mach-O cannot be told apart)."""
    if len(data) < 4:
        raise CodeViewError(f"CodeView record of {len(data)} bytes is too short")
    (sig,) = struct.unpack_from("<I", data)
    if sig == fmt.CV_SIGNATURE_ELF:
        return ElfBuildId(bytes(data[4:]))
    if sig == fmt.CV_SIGNATURE_RSDS:
        if len(data) < 24:
            raise CodeViewError(f"RSDS record of {len(data)} bytes is too short")
        guid = bytes(data[4:20])
        (age,) = struct.unpack_from("<I", data, 20)
        pdb = bytes(data[24:]).split(b"\0", 1)[0].decode("utf-8", "replace")
        return PdbIdentity(guid, age, pdb)
    raise CodeViewError(f"unknown CodeView signature 0x{sig:08x}")


def debug_id(identity: ModuleIdentity) -> str:
    """The id symbol servers and readers use: GUID fields as printed, uppercase, plus the age."""
    if isinstance(identity, ElfBuildId):
        raw = (identity.build_id + bytes(16))[:16]
        age = 0
    elif isinstance(identity, PdbIdentity):
        raw, age = identity.guid, identity.age
    else:
        return identity.uuid.hex().upper() + "0"
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08X}{b:04X}{c:04X}{raw[8:].hex().upper()}{age:X}"


def code_id(identity: ModuleIdentity) -> str:
    if isinstance(identity, ElfBuildId):
        return identity.build_id.hex()
    if isinstance(identity, MachOUuid):
        return identity.uuid.hex().upper()
    return ""
