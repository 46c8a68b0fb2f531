"""Capture a live 64-bit Windows process into a Snapshot: kernel32 and ntdll through ctypes.

Default (suspend): attach as a debugger (DebugActiveProcess), tell Windows not to kill the
target if we die (DebugSetProcessKillOnExit(FALSE)), and drain the debug events up to the
attach breakpoint. While that breakpoint event is pending every thread of the target is
frozen by the kernel, and nothing of it survives us: if the dumper dies, the kernel detaches
the debugger and the target runs on. No SuspendThread is used in this mode for exactly that
reason (a suspend count we leave behind would hang the target forever). The breakpoint is
raised by a thread that Windows injects for the attach (DbgUiRemoteBreakin); it is not one
of the program's threads, exists only while we are attached, and is left out of the dump.

Frozen, each thread's CONTEXT (CONTEXT_ALL: integer, control, segment, debug and the
512-byte FXSAVE area) is read with GetThreadContext, its TEB address with
NtQueryInformationThread, its stack bounds from the TEB (NT_TIB StackBase and StackLimit)
and the stack bytes from RSP to StackBase with ReadProcessMemory (Windows x64 has no red
zone: below RSP is garbage). Then the breakpoint event is continued and the debugger
detached (DebugActiveProcessStop). Modules, memory map, system facts and process times are
gathered after the target runs again, except for full dumps (``memory="full"``), which
keep it frozen until the file is written.

Fallbacks: a process that another debugger holds, or whose attach breakpoint does not come
in time (a held loader lock keeps the injected thread from running), is frozen by
suspending its threads one by one instead (SuspendThread, re-listing until no new thread
appears); the attach thread is recognized by its start address (ntdll!DbgUiRemoteBreakin)
and left out there too.

-r (no suspend): no debugger; one thread at a time is suspended (SuspendThread), copied
and resumed, over a Toolhelp32 thread list that is re-read until no new thread appears.

32-bit (WOW64) targets are refused with an explanation: their 32-bit contexts, TEBs and
module lists would need a second code path that nothing here can test.
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from ... import _testhooks
from ...errors import DumpError
from ...intervals import merge
from ...memory_presets import with_preset_memory
from ...snapshot import (
    MemoryRange,
    Snapshot,
    Thread,
)
from ..options import capture_now
from ..stacks import thread_stack
from . import convert as cv
from .freeze import (
    _capture_running,
    _freeze_with_debugger,
    _Frozen,
    _Hold,
    WindowsOptions,
)
from .process import _open_target, _Target
from .process_facts import _module_list, _process_facts, _regions_with_paths
from .threads import _signals_deferred


def _assemble(target: _Target, frozen: _Frozen) -> tuple[Snapshot, tuple[int, int]]:
    """The snapshot without extra memory, and the environment block's [start, end)."""
    from .system import system_info

    soft = list(frozen.soft_errors)
    main_tid = frozen.main_tid
    if not main_tid and frozen.threads:
        main_tid = min(frozen.threads, key=lambda r: (r.created or 1 << 64, r.tid)).tid
    order = {r.tid: i for i, r in enumerate(frozen.threads)}
    priority_class = target.w.GetPriorityClass(target.handle)
    threads = []
    for raw in sorted(frozen.threads, key=lambda r: (r.tid != main_tid, order[r.tid])):
        stack = thread_stack(raw.tid, raw.rsp, raw.stack_range, raw.stack, soft,
                             nowhere="is in no stack")
        threads.append(Thread(tid=raw.tid, context=cv.amd64_context(raw.context), stack=stack,
                              name=raw.name, thread_pointer=raw.teb,
                              suspend_count=raw.suspend_count, priority_class=priority_class,
                              priority=raw.priority))
    facts = _process_facts(target, soft)
    modules = _module_list(target, facts.image_base, soft)
    regions = _regions_with_paths(target, modules)
    # Small structures debuggers look for: every TEB and the PEB (kept with "referenced").
    structures = [MemoryRange(r.teb, r.teb_bytes) for r in frozen.threads if r.teb_bytes]
    structures += facts.memory
    snapshot = Snapshot(process=facts.process, system=system_info(), threads=tuple(threads),
                        modules=tuple(modules), memory=tuple(structures),
                        regions=tuple(regions), soft_errors=tuple(soft), time=frozen.time)
    return snapshot, facts.environment


def _add_memory(snapshot: Snapshot, target: _Target, options: WindowsOptions,
                environment: tuple[int, int]) -> Snapshot:
    """Extra memory by the chosen preset (memory_presets.py); a full dump holds every
    readable region. The environment block is left out of every preset unless
    --include-environment asked for it (then it is added whole)."""
    env_block: list[MemoryRange] = []
    secret: list[tuple[int, int]] = []
    if environment[1] > environment[0]:
        if options.include_environment:
            data = target.read(environment[0], environment[1] - environment[0])
            if data:
                env_block.append(MemoryRange(environment[0], data))
        else:
            secret.append(environment)
    return with_preset_memory(
        snapshot, options.memory, read=target.read,
        full_ranges=lambda: merge([(r.start, r.end) for r in snapshot.regions if r.readable]),
        max_referenced=options.max_referenced, on_short_read=options.on_short_read,
        keep_out=secret, always=env_block)


def _bindings():
    if sys.platform != "win32":
        raise DumpError("the windows backend works on Windows only")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise DumpError("generate_dump needs a 64-bit Python on Windows (this one is 32-bit)")
    from . import win32

    return win32


@contextmanager
def capture_session(pid: int, options: Optional[WindowsOptions] = None) -> Iterator[Snapshot]:
    """Snapshot the live process ``pid``; raises a DumpError subclass with a user message.

    The process is frozen only while registers and stacks are copied, except for
    ``memory="full"`` without ``-r``: then it stays frozen (the debugger stays attached)
    until the ``with`` block ends, because the snapshot's memory is read while the dump is
    written."""
    options = options or WindowsOptions()
    w = _bindings()
    target = _open_target(w, pid)
    hold = _Hold(w)
    keep_frozen = options.memory == "full" and options.suspend
    try:
        try:
            _testhooks.pause("opened")
            with _signals_deferred():
                try:
                    if options.suspend:
                        frozen = _freeze_with_debugger(target, options, hold)
                    else:
                        frozen = _capture_running(target)
                finally:
                    if not keep_frozen:
                        released = hold.release()
            if not keep_frozen:
                frozen.soft_errors.extend(released)
            if not frozen.threads or not target.alive():
                raise cv.gone_error(pid, target.name)
            snapshot, environment = _assemble(target, frozen)
            snapshot = _add_memory(snapshot, target, options, environment)
            if not target.alive():
                raise cv.gone_error(pid, target.name)
        except w.Win32Error as exc:
            if not target.alive():
                raise cv.gone_error(pid, target.name) from None
            raise DumpError(f"cannot dump process {pid} ({target.name}): {exc}") from None
        yield snapshot
    finally:
        with _signals_deferred():
            hold.release()
        target.close()


def capture(pid: int, options: Optional[WindowsOptions] = None) -> Snapshot:
    """Snapshot ``pid`` (everything copied before it returns; not for full dumps)."""
    return capture_now(capture_session, pid, options or WindowsOptions())
