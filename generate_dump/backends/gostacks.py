"""Go's own record of where a goroutine's stack is, for stacks in Go's heap arena.

A fact of Go's runtime on linux/amd64, for every backend that reads a Linux process. There
the Go runtime keeps the running goroutine's ``g`` at -8(FS) (``settls``
in runtime/sys_linux_amd64.s sets FS to &m.tls[0]+8; with cgo, ``runtime.tlsg`` is the
initial-exec TLS slot just below the thread pointer too), and a ``g`` begins with its
stack bounds ``stack.lo, stack.hi`` (runtime/runtime2.go: ``type g struct { stack stack
...``, ``type stack struct { lo, hi uintptr }``). A thread on a goroutine stack, a g0
stack or a gsignal stack thus says exactly where its stack ends. Anything read here is
checked against the thread's SP before it is believed: a thread that is not Go's, or a
cgo binary whose TLS is laid out otherwise, keeps the generic rule (stacks.py).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

G_SLOT = 8  # the g pointer lies 8 bytes below the thread pointer
MAX_GO_STACK = 1 << 30  # runtime.maxstacksize on 64-bit systems


def go_stack_bounds(read_many: Callable[[Sequence[tuple[int, int]]], list],
                    threads: Sequence[tuple[int, int]]) -> list[Optional[tuple[int, int]]]:
    """For each (sp, thread pointer), Go's (stack.lo, stack.hi) when they hold the SP,
    else None. Two batched reads, whatever the number of threads."""
    slots = [(tp - G_SLOT, 8) if tp >= G_SLOT else (0, 0) for _, tp in threads]
    gs = [int.from_bytes(b[:8], "little") if len(b) >= 8 else 0 for b in read_many(slots)]
    records = read_many([(g, 16) if g else (0, 0) for g in gs])
    out: list[Optional[tuple[int, int]]] = []
    for (sp, _), raw in zip(threads, records):
        if len(raw) < 16:
            out.append(None)
            continue
        lo = int.from_bytes(raw[:8], "little")
        hi = int.from_bytes(raw[8:16], "little")
        out.append((lo, hi) if lo <= sp < hi and hi - lo <= MAX_GO_STACK else None)
    return out
