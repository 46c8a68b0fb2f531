"""Line numbers from a code object's line table: each CPython version's own encoding.

* 3.9 ``co_lnotab``: (byte offset delta, signed line delta) pairs.
* 3.10 ``co_linetable``: (byte length, signed line delta, -128 = no line) pairs.
* 3.11+ ``co_linetable``: the location table, entries of one header byte (bit 7 set;
  code in bits 3-6, length-1 in code units in bits 0-2) followed by varints.

``address`` is a byte offset into the bytecode (instruction index * 2). None when the
table says the instruction has no line or the table is malformed.
"""

from __future__ import annotations

from typing import Optional


def line_for(minor: int, table: bytes, first_line: int, address: int) -> Optional[int]:
    if address < 0:
        return first_line
    try:
        if minor <= 9:
            return _lnotab(table, first_line, address)
        if minor == 10:
            return _linetable_310(table, first_line, address)
        return _locations(table, first_line, address // 2)
    except IndexError:
        return None


def _lnotab(table: bytes, line: int, address: int) -> int:
    addr = 0
    for i in range(0, len(table) - 1, 2):
        addr += table[i]
        if addr > address:
            break
        delta = table[i + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def _linetable_310(table: bytes, line: int, address: int) -> Optional[int]:
    end = 0
    for i in range(0, len(table) - 1, 2):
        start, end = end, end + table[i]
        delta = table[i + 1]
        if delta == 128:
            current = None
        else:
            line += delta - 256 if delta > 128 else delta
            current = line
        if start <= address < end:
            return current
    return None


def _varint(table: bytes, i: int) -> tuple[int, int]:
    b = table[i]
    i += 1
    value, shift = b & 63, 6
    while b & 64:
        b = table[i]
        i += 1
        value |= (b & 63) << shift
        shift += 6
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    v, i = _varint(table, i)
    return (-(v >> 1) if v & 1 else v >> 1), i


def _locations(table: bytes, line: int, index: int) -> Optional[int]:
    """3.11+: ``index`` is the instruction index (code units)."""
    at = 0
    i = 0
    n = len(table)
    while i < n:
        head = table[i]
        i += 1
        if not head & 0x80:
            return None  # out of step: malformed
        code = (head >> 3) & 15
        length = (head & 7) + 1
        current: Optional[int] = line
        if code == 15:
            current = None
        elif code == 14:
            delta, i = _svarint(table, i)
            line += delta
            current = line
            _, i = _varint(table, i)  # end line delta
            _, i = _varint(table, i)  # column + 1
            _, i = _varint(table, i)  # end column + 1
        elif code == 13:
            delta, i = _svarint(table, i)
            line += delta
            current = line
        elif code >= 10:
            line += code - 10
            current = line
            i += 2
        else:
            i += 1
        if at <= index < at + length:
            return current
        at += length
    return None
