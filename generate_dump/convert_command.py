"""``generate_dump convert INPUT -o OUTPUT``: an ELF core (plain or zstd/lz4/xz compressed)
becomes a minidump, and a minidump becomes an ELF core. The direction follows the input's
magic bytes; the output is written atomically (nothing is left behind on failure).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import click

from .errors import BadInput

if TYPE_CHECKING:
    from .snapshot import Snapshot

PROG = "generate_dump"
_CORE_MAGICS = (b"\x7fELF", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18", b"\xfd7zXZ\x00")


class ConvertError(BadInput):
    """The input cannot be converted (unreadable, empty, not a core or minidump)."""


def input_kind(path: str) -> str:
    """"core" or "minidump", from the first bytes of ``path``."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(b"MDMP"):
        return "minidump"
    if any(head.startswith(m) for m in _CORE_MAGICS):
        return "core"
    if not head:
        raise ConvertError(f"{path} is empty: neither a core file nor a minidump")
    raise ConvertError(f"{path} is neither an ELF core file nor a minidump "
                       "(unknown magic bytes)")


def core_to_minidump(source, output: str, *, memory: str = "referenced",
                     max_referenced: int = 8 << 20, include_environment: bool = False,
                     live_pid: Optional[int] = None, temp_dir: Optional[str] = None,
                     deadline: Optional[float] = None, keep_core: Optional[str] = None,
                     dump_time: Optional[int] = None, progress=None,
                     redact: bool = False) -> tuple[Snapshot, int]:
    """Convert; returns (snapshot, minidump size). ``source`` is a path, a binary file
    (a pipe is spooled first) or an open CoreFile (left open). ``keep_core``: also keep
    the core under this path. ``redact``: as --redact (the kept core is not redacted)."""
    from .output import atomic_output, check_output_path
    from .session import write_dump
    from .sources.core import snapshot_from_core
    from .sources.corefile import CoreFile, CoreFileError, open_core

    check_output_path(output)
    owned = not isinstance(source, CoreFile)
    core = open_core(source, temp_dir, deadline) if owned else source
    try:
        if keep_core:
            _keep(core, keep_core)
        short: list[tuple[int, int]] = []
        snap = snapshot_from_core(core, memory=memory, max_referenced=max_referenced,
                                  include_environment=include_environment, live_pid=live_pid,
                                  dump_time=dump_time, on_short_read=lambda a, n: short.append((a, n)))
        if redact:
            from .redact import redact_snapshot

            snap, _ = redact_snapshot(snap)
        with atomic_output(output) as out:
            size = write_dump(snap, out, memory64=memory == "full", progress=progress)
            if short:  # the core shrank under us: no partial output
                raise CoreFileError(f"{core.name} is truncated: memory at 0x{short[0][0]:x} "
                                    "could not be read")
        return snap, size
    finally:
        if owned:
            core.close()


def _keep(core, path: str) -> None:
    """Copy the (spooled or decompressed) core to ``path`` atomically."""
    from .output import atomic_output

    with atomic_output(path) as out:
        pos = 0
        while True:
            chunk = os.pread(core.fd, 4 << 20, pos)
            if not chunk:
                break
            out.write(chunk)
            pos += len(chunk)


def minidump_to_core(path: str, output: str, progress=None,
                     redact: bool = False) -> tuple[Snapshot, int]:
    from .output import atomic_output, check_output_path
    from .sinks.core_writer import write_core
    from .sources.minidump_file import read_minidump_snapshot

    check_output_path(output)
    snap = read_minidump_snapshot(path)
    if redact:
        from .redact import redact_snapshot

        snap, _ = redact_snapshot(snap)
    with atomic_output(output) as out:
        size = write_core(snap, out, progress)
    return snap, size


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", metavar="FILE", required=True,
              help="Where to write the converted file.")
@click.option("--to", "to", type=click.Choice(["auto", "minidump", "core"]), default="auto",
              show_default=True,
              help="Output format; auto converts a core into a minidump and a minidump "
                   "into a core.")
@click.option("--memory", type=click.Choice(["stacks", "referenced", "full"]),
              default="referenced", show_default=True,
              help="Core -> minidump: how much of the core's memory to keep (full = "
                   "everything the core holds).")
@click.option("--max-referenced", default="8M", show_default=True, metavar="SIZE",
              help="Budget for --memory=referenced.")
@click.option("--include-environment", is_flag=True,
              help="Core -> minidump: keep the environment strings on the main stack "
                   "(blanked by default: environments often hold secrets).")
@click.option("--redact", is_flag=True,
              help="Make the output safe to upload: stacks and referenced memory keep only "
                   "pointers, secrets in other memory are overwritten, command line and "
                   "thread names are masked (see `generate_dump scan`).")
def convert_command(input_path: str, output: str, to: str, memory: str, max_referenced: str,
                    include_environment: bool, redact: bool) -> None:
    """Convert an ELF core file (from the kernel, gcore or coredumpctl, also zstd/lz4/xz
    compressed) into a minidump, or a minidump into an ELF core file that gdb and LLDB
    open. Exit status 0 on success, 1 on failure (no output file is left)."""
    from .cli import parse_size

    kind = input_kind(input_path)
    target = to if to != "auto" else ("minidump" if kind == "core" else "core")
    if target == kind:
        raise ConvertError(f"{input_path} is already a {kind}")
    if kind == "core":
        snap, size = core_to_minidump(input_path, output, memory=memory,
                                      max_referenced=parse_size(max_referenced),
                                      include_environment=include_environment, redact=redact)
    else:
        snap, size = minidump_to_core(input_path, output, redact=redact)
    from .cli import _summarize_soft_errors

    _summarize_soft_errors(snap.soft_errors)
    click.echo(f"{PROG}: wrote {os.path.abspath(output)} ({target}, {len(snap.threads)} "
               f"threads, {len(snap.modules)} modules, {size // 1024} KiB)", err=True)
