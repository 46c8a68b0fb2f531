"""Breakpad text symbol files (``dump_syms`` output): names, lines and STACK CFI.

Records used (addresses are hex, relative to the module's base address)::

    MODULE Linux x86_64 DEBUGID NAME
    FILE N PATH
    FUNC [m] ADDR SIZE PARAMSIZE NAME        followed by line records: ADDR SIZE LINE FILE
    PUBLIC [m] ADDR PARAMSIZE NAME
    STACK CFI INIT ADDR SIZE RULES           RULES: "REG: POSTFIX-EXPR ..." (.cfa, .ra, $rsp ...)
    STACK CFI ADDR RULES                     rule changes from ADDR on, within the last INIT

A name lookup takes the FUNC that contains the address, else the nearest PUBLIC at or
below it (Breakpad's own rule). Rules are postfix expressions over registers and
``.cfa`` with ``+ - * / % @`` (align) and ``^`` (dereference).
"""

from __future__ import annotations

import bisect
import os
import threading
from dataclasses import dataclass
from typing import Callable, Optional

MASK64 = (1 << 64) - 1


class SymFileError(ValueError):
    pass


@dataclass(frozen=True)
class SymHeader:
    os: str
    arch: str
    debug_id: str
    name: str


def read_header(path: str) -> Optional[SymHeader]:
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").split()
    except OSError:
        return None
    if len(first) < 5 or first[0] != "MODULE":
        return None
    return SymHeader(first[1], first[2], first[3].upper(), " ".join(first[4:]))


class BreakpadSymbols:
    def __init__(self, path: str):
        self.path = path
        header = read_header(path)
        if header is None:
            raise SymFileError(f"{path} is not a Breakpad symbol file (no MODULE line)")
        self.header = header
        self.files: dict[int, str] = {}
        funcs: list[tuple[int, int, str]] = []
        lines: list[tuple[int, int, int, int]] = []  # addr, size, line, file
        publics: dict[int, str] = {}
        cfi_init: list[tuple[int, int, str, list]] = []
        with open(path, "rb") as f:
            f.readline()
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    continue
                c = line[0]
                try:
                    if c in "0123456789abcdef":
                        p = line.split(" ", 3)
                        lines.append((int(p[0], 16), int(p[1], 16), int(p[2]), int(p[3])))
                    elif line.startswith("FUNC "):
                        p = line.split(" ")
                        i = 2 if p[1] == "m" else 1
                        rest = line.split(" ", i + 3)
                        funcs.append((int(rest[i], 16), int(rest[i + 1], 16),
                                      rest[i + 3] if len(rest) > i + 3 else ""))
                    elif line.startswith("PUBLIC "):
                        p = line.split(" ")
                        i = 2 if p[1] == "m" else 1
                        rest = line.split(" ", i + 2)
                        addr = int(rest[i], 16)
                        publics.setdefault(addr, rest[i + 2] if len(rest) > i + 2 else "")
                    elif line.startswith("STACK CFI INIT "):
                        p = line.split(" ", 5)
                        cfi_init.append((int(p[3], 16), int(p[4], 16), p[5] if len(p) > 5 else "", []))
                    elif line.startswith("STACK CFI "):
                        p = line.split(" ", 3)
                        if cfi_init:
                            cfi_init[-1][3].append((int(p[2], 16), p[3] if len(p) > 3 else ""))
                    elif line.startswith("FILE "):
                        p = line.split(" ", 2)
                        self.files[int(p[1])] = p[2] if len(p) > 2 else ""
                except (ValueError, IndexError):
                    continue  # one bad record does not spoil the file
        funcs.sort()
        self._func_starts = [fn[0] for fn in funcs]
        self._funcs = funcs
        lines.sort()
        self._line_starts = [l[0] for l in lines]
        self._lines = lines
        self._pub_addrs = sorted(publics)
        self._pub_names = [publics[a] for a in self._pub_addrs]
        cfi_init.sort(key=lambda r: r[0])
        self._cfi = cfi_init
        self._cfi_starts = [r[0] for r in cfi_init]
        self._rule_cache: dict[int, Optional[dict[str, str]]] = {}
        self._lock = threading.Lock()

    def has_names(self) -> bool:
        return bool(self._funcs or self._pub_addrs)

    def has_cfi(self) -> bool:
        return bool(self._cfi)

    def function(self, rel: int) -> Optional[tuple[str, int]]:
        """(name, start) relative address of the function at ``rel``."""
        func = None
        i = bisect.bisect_right(self._func_starts, rel) - 1
        if i >= 0:
            start, size, name = self._funcs[i]
            if start <= rel < start + max(size, 1):
                func = (name, start)
        if func is not None:
            return func
        j = bisect.bisect_right(self._pub_addrs, rel) - 1
        if j >= 0:
            pub_addr = self._pub_addrs[j]
            # A PUBLIC below the previous FUNC's start belongs to an earlier function.
            if i < 0 or pub_addr > self._funcs[i][0] or self._funcs[i][0] > rel:
                return self._pub_names[j], pub_addr
        return None

    def line(self, rel: int) -> Optional[tuple[str, int]]:
        i = bisect.bisect_right(self._line_starts, rel) - 1
        if i < 0:
            return None
        addr, size, line, fileno = self._lines[i]
        if not addr <= rel < addr + size:
            return None
        return self.files.get(fileno, "?"), line

    def cfi_rules(self, rel: int) -> Optional[dict[str, str]]:
        """Register -> postfix expression in force at ``rel``, or None."""
        with self._lock:
            if rel in self._rule_cache:
                return self._rule_cache[rel]
            i = bisect.bisect_right(self._cfi_starts, rel) - 1
            rules = None
            if i >= 0:
                start, size, init, deltas = self._cfi[i]
                if start <= rel < start + size:
                    rules = parse_rules(init)
                    for addr, text in deltas:
                        if addr > rel:
                            break
                        rules.update(parse_rules(text))
            if len(self._rule_cache) > 100_000:
                self._rule_cache.clear()
            self._rule_cache[rel] = rules
            return rules


def parse_rules(text: str) -> dict[str, str]:
    """"'.cfa: $rsp 8 + .ra: .cfa -8 + ^'" -> {'.cfa': '$rsp 8 +', '.ra': '.cfa -8 + ^'}."""
    out: dict[str, str] = {}
    reg = None
    expr: list[str] = []
    for tok in text.split():
        if tok.endswith(":"):
            if reg is not None:
                out[reg] = " ".join(expr)
            reg, expr = tok[:-1], []
        else:
            expr.append(tok)
    if reg is not None:
        out[reg] = " ".join(expr)
    return out


class PostfixError(ValueError):
    pass


def evaluate_postfix(expr: str, values: dict[str, int], read: Callable[[int], Optional[int]]) -> int:
    """Evaluate a Breakpad postfix expression; register names may carry a '$' or not."""
    stack: list[int] = []
    for tok in expr.split():
        if tok in ("+", "-", "*", "/", "%", "@"):
            if len(stack) < 2:
                raise PostfixError(f"stack underflow at {tok!r} in {expr!r}")
            b, a = stack.pop(), stack.pop()
            if tok == "+":
                v = a + b
            elif tok == "-":
                v = a - b
            elif tok == "*":
                v = a * b
            elif tok in ("/", "%"):
                if b == 0:
                    raise PostfixError("division by zero")
                v = a // b if tok == "/" else a % b
            else:  # align down
                if b <= 0:
                    raise PostfixError("bad alignment")
                v = a & ~(b - 1)
            stack.append(v & MASK64)
        elif tok == "^":
            if not stack:
                raise PostfixError("stack underflow at ^")
            addr = stack.pop()
            got = read(addr)
            if got is None:
                raise PostfixError(f"cannot read 0x{addr:x}")
            stack.append(got)
        else:
            try:
                stack.append(int(tok, 0) & MASK64)
                continue
            except ValueError:
                pass
            name = tok
            if name not in values and name.startswith("$"):
                name = name[1:]
            if name not in values:
                raise PostfixError(f"{tok} is not known")
            stack.append(values[name])
    if len(stack) != 1:
        raise PostfixError(f"{expr!r} leaves {len(stack)} values")
    return stack[0]


# -- store lookup and caching ---------------------------------------------------------------

_cache: dict[tuple, Optional[BreakpadSymbols]] = {}
_cache_lock = threading.Lock()


def open_symbols(path: str) -> Optional[BreakpadSymbols]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        syms: Optional[BreakpadSymbols] = BreakpadSymbols(path)
    except (OSError, SymFileError):
        syms = None
    with _cache_lock:
        if len(_cache) > 128:
            _cache.clear()
        _cache[key] = syms
    return syms
