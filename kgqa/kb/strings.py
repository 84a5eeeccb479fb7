"""Many strings as one Arrow array (large_string: UTF-8 bytes cut by int64 offsets), so that 20M of
them are one buffer to map, sort or decode with numpy, not 20M Python objects.

`Strings` reads like a list of str (and finds a string in a sorted one by binary search);
`code_points` decodes all of them at once, for a vocabulary and for token ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Iterator

import numpy as np
import pyarrow as pa

STRING = pa.large_string()


def as_strings(values) -> pa.Array:
    """A large_string Arrow array of `values` (an Arrow array or a list of str), without nulls."""
    array = values if isinstance(values, pa.Array) else pa.array(list(values), type=STRING)
    array = array.cast(STRING) if array.type != STRING else array
    if array.null_count:
        raise ValueError("strings without nulls expected")
    return array


def parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets ([len + 1], int64) and the UTF-8 bytes of a large_string array, as numpy views."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)


class ItemView(Sequence):
    """A list-like view whose items are made when asked for (compares like a list): subclasses give
    __len__ and item(i)."""

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.item(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.item(i % len(self))

    def item(self, i: int):
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))


class Strings(ItemView):
    """A list-like view of a large_string array: strings[i] is a str, made when asked for."""

    def __init__(self, array):
        self.array = as_strings(array)
        self.offsets, self.data = parts(self.array)
        self.bytes = memoryview(self.data)

    def __len__(self) -> int:
        return len(self.array)

    def item(self, i: int) -> str:
        return str(self.bytes[self.offsets[i] : self.offsets[i + 1]], "utf-8")

    def __iter__(self) -> Iterator[str]:
        step = 1 << 16
        for start in range(0, len(self), step):
            yield from self.array.slice(start, step).to_pylist()

    def find(self, text: str) -> int | None:
        """The index of `text` in these strings, sorted (as a KB's tables are); None if absent."""
        lo, hi = 0, len(self)
        while lo < hi:  # bisect by hand: str order is code-point order, as the tables are sorted
            mid = (lo + hi) // 2
            if self.item(mid) < text:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self) and self.item(lo) == text else None


def code_points(array: pa.Array, chunk_bytes: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Every character of a large_string array as a code point (int32, all strings one after another)
    and each string's first character index ([len + 1]): UTF-8 decoded by lead-byte masks, a few MB
    of strings at a time."""
    offsets, data = parts(array)
    cuts = np.unique(np.concatenate([np.searchsorted(offsets, np.arange(offsets[0], offsets[-1], chunk_bytes)),
                                     [0, len(array)]]))
    points, starts = [], [np.zeros(1, dtype=np.int64)]
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        chunk = data[offsets[a] : offsets[b]]
        where = np.flatnonzero((chunk & 0xC0) != 0x80)  # lead bytes: one per character
        padded = np.concatenate([chunk, np.zeros(3, dtype=np.uint8)])
        b0, b1, b2, b3 = (padded[where + k].astype(np.int32) for k in range(4))
        points.append(np.where(b0 < 0x80, b0,
                      np.where(b0 < 0xE0, ((b0 & 0x1F) << 6) | (b1 & 0x3F),
                      np.where(b0 < 0xF0, ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F),
                               ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)))))
        starts.append(starts[-1][-1] + np.searchsorted(where, offsets[a + 1 : b + 1] - offsets[a]))
    return (np.concatenate(points) if points else np.zeros(0, dtype=np.int32)), np.concatenate(starts)
