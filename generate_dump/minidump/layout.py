"""Declarative little-endian record layouts: a field list gives size, offsets, pack and unpack."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class Record:
    """A fixed-size record described by ``(name, struct-format)`` pairs, packed without padding.

    >>> R = Record("R", [("a", "I"), ("b", "Q")])
    >>> R.size, R.offset("b")
    (12, 4)
    """

    def __init__(self, name: str, fields: Iterable[tuple[str, str]]):
        self.name = name
        self.fields = tuple(fields)
        fmt = "<" + "".join(f for _, f in self.fields)
        self._struct = struct.Struct(fmt)
        self.size = self._struct.size
        self._offsets: dict[str, int] = {}
        self._counts: list[tuple[str, int]] = []  # name, number of struct items it takes
        pos = 0
        for fname, f in self.fields:
            self._offsets[fname] = pos
            pos += struct.calcsize("<" + f)
            items = len(struct.unpack("<" + f, bytes(struct.calcsize("<" + f))))
            self._counts.append((fname, items))
        self._has_arrays = any(items != 1 for _, items in self._counts)
        self._defaults = [(n, b"" if f.endswith("s") else 0) for n, f in self.fields]
        self._names = frozenset(self._offsets)

    def offset(self, field_name: str) -> int:
        return self._offsets[field_name]

    def pack(self, **values: Any) -> bytes:
        """Pack named values; missing fields are zero. Tuple-valued fields take sequences."""
        if not self._has_arrays and values.keys() <= self._names:
            # The common case, kept fast: the writer packs thousands of records.
            return self._struct.pack(*[values[n] if n in values else d
                                       for n, d in self._defaults])
        unknown = set(values) - set(self._offsets)
        if unknown:
            raise TypeError(f"{self.name}: unknown fields {sorted(unknown)}")
        flat: list[Any] = []
        for (fname, f), (_, items) in zip(self.fields, self._counts):
            v = values.get(fname)
            if items == 1:
                flat.append(v if v is not None else (b"" if f.endswith("s") else 0))
            else:
                seq = list(v) if v is not None else []
                flat.extend(seq + [0] * (items - len(seq)))
        return self._struct.pack(*flat)

    def unpack(self, data: ReadableBuffer, offset: int = 0) -> dict[str, Any]:
        raw = self._struct.unpack_from(data, offset)
        out: dict[str, Any] = {}
        i = 0
        for fname, items in self._counts:
            out[fname] = raw[i] if items == 1 else tuple(raw[i : i + items])
            i += items
        return out
