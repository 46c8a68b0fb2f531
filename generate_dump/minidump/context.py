"""CPU contexts: snapshot register sets <-> the minidump CONTEXT_* records."""

from __future__ import annotations

from typing import Callable

from ..snapshot import (
    AMD64_GPR_NAMES,
    Amd64Context,
    Arch,
    Arm64Context,
    CpuContext,
    X86Context,
)
from . import format as fmt

_AMD64_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss")
_DEBUG_NAMES = ("dr0", "dr1", "dr2", "dr3", "dr6", "dr7")
_X86_INTEGER = ("edi", "esi", "ebx", "edx", "ecx", "eax", "ebp", "eip", "esp", "eflags")

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1


class ContextError(ValueError):
    pass


def context_size(arch: Arch) -> int:
    return _RECORDS[arch].size


def encode_context(ctx: CpuContext) -> bytes:
    """Serialize a snapshot register set into its minidump CONTEXT record."""
    if isinstance(ctx, Amd64Context):
        return _encode_amd64(ctx)
    if isinstance(ctx, Arm64Context):
        return _encode_arm64(ctx)
    if isinstance(ctx, X86Context):
        return _encode_x86(ctx)
    raise ContextError(f"unsupported context type {type(ctx).__name__}")


def decode_context(arch: Arch, data: bytes, old_arm64: bool = False) -> CpuContext:
    """Decode a CONTEXT record; ``old_arm64`` for Breakpad's 796-byte arm64 layout."""
    if old_arm64:
        return _decode_arm64_old(data)
    record = _RECORDS[arch]
    if len(data) < record.size:
        raise ContextError(f"{record.name} needs {record.size} bytes, got {len(data)}")
    return _DECODERS[arch](record.unpack(data))


def _fixed(data: bytes | None, size: int, what: str) -> bytes:
    if data is None:
        return bytes(size)
    if len(data) != size:
        raise ContextError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def _encode_amd64(c: Amd64Context) -> bytes:
    flags = (fmt.CONTEXT_AMD64 | fmt.CONTEXT_CONTROL | fmt.CONTEXT_INTEGER
             | fmt.CONTEXT_SEGMENTS | fmt.CONTEXT_DEBUG_REGISTERS)
    if c.fxsave is not None:
        flags |= fmt.CONTEXT_FLOATING_POINT
    values = {name: getattr(c, name) & _MASK64 for name in AMD64_GPR_NAMES}
    values.update({name: getattr(c, name) & 0xFFFF for name in _AMD64_SEGMENTS})
    values.update(dict(zip(_DEBUG_NAMES, (d & _MASK64 for d in c.debug))))
    return fmt.CONTEXT_AMD64_RECORD.pack(
        context_flags=flags,
        mx_csr=c.mxcsr,
        eflags=c.eflags & _MASK32,
        rip=c.rip & _MASK64,
        fxsave=_fixed(c.fxsave, 512, "FXSAVE area"),
        **values,
    )


def _decode_amd64(v: dict) -> Amd64Context:
    has_fp = bool(v["context_flags"] & fmt.CONTEXT_FLOATING_POINT)
    return Amd64Context(
        **{name: v[name] for name in AMD64_GPR_NAMES + _AMD64_SEGMENTS},
        rip=v["rip"],
        eflags=v["eflags"],
        fxsave=v["fxsave"] if has_fp else None,
        debug=tuple(v[name] for name in _DEBUG_NAMES),
    )


def _encode_arm64(c: Arm64Context) -> bytes:
    if len(c.x) != 29:
        raise ContextError(f"ARM64 context needs x0..x28 (29 values), got {len(c.x)}")
    flags = fmt.CONTEXT_ARM64 | fmt.CONTEXT_CONTROL | fmt.CONTEXT_INTEGER
    vbytes = bytes(512)
    if c.v is not None:
        if len(c.v) != 32:
            raise ContextError(f"ARM64 context needs v0..v31 (32 values), got {len(c.v)}")
        flags |= fmt.CONTEXT_ARM64_FLOATING_POINT
        vbytes = b"".join((q & ((1 << 128) - 1)).to_bytes(16, "little") for q in c.v)
    return fmt.CONTEXT_ARM64_RECORD.pack(
        context_flags=flags,
        cpsr=c.cpsr & _MASK32,
        x=[r & _MASK64 for r in c.x],
        fp=c.fp & _MASK64,
        lr=c.lr & _MASK64,
        sp=c.sp & _MASK64,
        pc=c.pc & _MASK64,
        v=vbytes,
        fpcr=c.fpcr & _MASK32,
        fpsr=c.fpsr & _MASK32,
    )


def _decode_arm64(v: dict) -> Arm64Context:
    vregs = None
    if v["context_flags"] & fmt.CONTEXT_ARM64_FLOATING_POINT:
        raw = v["v"]
        vregs = tuple(int.from_bytes(raw[i : i + 16], "little") for i in range(0, 512, 16))
    return Arm64Context(
        x=tuple(v["x"]), fp=v["fp"], lr=v["lr"], sp=v["sp"], pc=v["pc"], cpsr=v["cpsr"],
        v=vregs, fpsr=v["fpsr"], fpcr=v["fpcr"],
    )


def _decode_arm64_old(data: bytes) -> Arm64Context:
    record = fmt.CONTEXT_ARM64_OLD_RECORD
    if len(data) < record.size:
        raise ContextError(f"{record.name} needs {record.size} bytes, got {len(data)}")
    v = record.unpack(data)
    x = v["iregs"]
    vregs = None
    if v["context_flags"] & fmt.CONTEXT_ARM64_OLD_FLOATING_POINT:
        raw = v["v"]
        vregs = tuple(int.from_bytes(raw[i : i + 16], "little") for i in range(0, 512, 16))
    return Arm64Context(x=tuple(x[:29]), fp=x[29], lr=x[30], sp=x[31], pc=v["pc"],
                        cpsr=v["cpsr"], v=vregs, fpsr=v["fpsr"], fpcr=v["fpcr"])


def _encode_x86(c: X86Context) -> bytes:
    flags = (fmt.CONTEXT_X86 | fmt.CONTEXT_CONTROL | fmt.CONTEXT_INTEGER
             | fmt.CONTEXT_SEGMENTS | fmt.CONTEXT_DEBUG_REGISTERS)
    if c.fsave is not None:
        flags |= fmt.CONTEXT_FLOATING_POINT
    if c.fxsave is not None:
        flags |= fmt.CONTEXT_EXTENDED_REGISTERS
    values = {name: getattr(c, name) & _MASK32 for name in _X86_INTEGER}
    values.update({name: getattr(c, name) & 0xFFFF for name in _AMD64_SEGMENTS})
    values.update(dict(zip(_DEBUG_NAMES, (d & _MASK32 for d in c.debug))))
    return fmt.CONTEXT_X86_RECORD.pack(
        context_flags=flags,
        float_save=_fixed(c.fsave, 112, "x86 FLOATING_SAVE_AREA"),
        extended_registers=_fixed(c.fxsave, 512, "x86 FXSAVE area"),
        **values,
    )


def _decode_x86(v: dict) -> X86Context:
    flags = v["context_flags"]
    return X86Context(
        **{name: v[name] for name in _X86_INTEGER + _AMD64_SEGMENTS},
        fsave=v["float_save"] if flags & fmt.CONTEXT_FLOATING_POINT else None,
        fxsave=v["extended_registers"] if flags & fmt.CONTEXT_EXTENDED_REGISTERS else None,
        debug=tuple(v[name] for name in _DEBUG_NAMES),
    )


_RECORDS = {
    Arch.AMD64: fmt.CONTEXT_AMD64_RECORD,
    Arch.ARM64: fmt.CONTEXT_ARM64_RECORD,
    Arch.X86: fmt.CONTEXT_X86_RECORD,
}
_DECODERS: dict[Arch, Callable[[dict], CpuContext]] = {
    Arch.AMD64: _decode_amd64, Arch.ARM64: _decode_arm64, Arch.X86: _decode_x86,
}
