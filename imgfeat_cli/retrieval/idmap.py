"""Compact id -> text maps for an index's labels and input paths: numpy arrays, not Python dicts.

A Python ``dict`` of int ids to strings costs about 100 bytes per item (the int object, the hash
entry, a string object per path), and an index keeps two of them (labels, input paths): about 200
bytes per item, 600 MB at 3 x 10^6 items, more than the fast-scan codes of the vectors themselves.
Here the ids are one sorted ``int64`` array and the texts are either codes into the list of
distinct values (:class:`IdMap`, for labels: thousands of classes over millions of items, 12 bytes
per item) or offsets into one UTF-8 blob (:class:`PathMap`, for input paths: all distinct, 16
bytes plus the path's length per item).

Both are read-only :class:`collections.abc.Mapping` ``[int, str]`` (lookups by binary search,
iteration in id order), so code written for the dicts keeps working, plus the few changes an index
makes: :meth:`IdMap.add` a batch (ids above every id held: the fast path; anything else is merged,
a repeated id taking its new text, as a dict would) and :meth:`IdMap.remove` a set of ids. Texts
are stored with ``surrogatepass``: any Python string round-trips, including the lone surrogates
``os.fsdecode`` makes of non-UTF-8 file names.
"""
from __future__ import annotations

import operator
from collections import Counter
from collections.abc import ItemsView, Mapping, ValuesView
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

#: Ids and texts are decoded this many at a time when iterating (bounded temporary lists).
BATCH = 8192


class _Column:
    """A growable 1-d numpy array (capacity grows by half, or to a reserved size at once)."""

    def __init__(self, dtype: Any) -> None:
        self.buf, self.n = np.empty(0, dtype), 0

    def reserve(self, total: int) -> None:
        if total > len(self.buf):
            grown = np.empty(total, self.buf.dtype)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown

    def extend(self, values: np.ndarray) -> None:
        if self.n + len(values) > len(self.buf):
            self.reserve(max(self.n + len(values), len(self.buf) * 3 // 2, 1024))
        self.buf[self.n:self.n + len(values)] = values
        self.n += len(values)

    def view(self) -> np.ndarray:
        out = self.buf[:self.n]
        out.flags.writeable = False
        return out

    def keep(self, mask: np.ndarray) -> None:
        kept = self.buf[:self.n][mask]
        self.buf, self.n = kept, len(kept)


class _Codes:
    """Texts as int32 codes into the list of distinct texts (labels)."""

    def __init__(self) -> None:
        self.codes = _Column(np.int32)
        self.names: List[str] = []  # the distinct texts, by code
        self.code_of: Dict[str, int] = {}

    def reserve(self, total: int) -> None:
        self.codes.reserve(total)

    def extend(self, values: Sequence[str]) -> None:
        code_of, names = self.code_of, self.names
        codes = np.empty(len(values), np.int32)
        for pos, value in enumerate(values):
            code = code_of.get(value)
            if code is None:
                code = code_of[value] = len(names)
                names.append(value)
            codes[pos] = code
        self.codes.extend(codes)

    def one(self, pos: int) -> str:
        return self.names[int(self.codes.buf[pos])]

    def at(self, positions: np.ndarray) -> List[str]:
        names = self.names
        return [names[c] for c in self.codes.buf[positions].tolist()]

    def keep(self, mask: np.ndarray) -> None:
        self.codes.keep(mask)

    def find(self, value: str) -> np.ndarray:
        code = self.code_of.get(value)
        return np.flatnonzero(self.codes.view() == code) if code is not None else np.empty(0, np.int64)

    def counts(self) -> Dict[str, int]:
        counts = np.bincount(self.codes.view(), minlength=len(self.names))
        return {self.names[c]: int(counts[c]) for c in np.flatnonzero(counts).tolist()}


class _Blob:
    """Texts as UTF-8 (surrogatepass) slices of one bytearray, ``offsets[i]:offsets[i + 1]`` (paths)."""

    def __init__(self) -> None:
        self.offsets, self.blob = _Column(np.int64), bytearray()
        self.offsets.extend(np.zeros(1, np.int64))

    def reserve(self, total: int) -> None:
        self.offsets.reserve(total + 1)

    def extend(self, values: Sequence[str]) -> None:
        encoded = [v.encode("utf-8", "surrogatepass") for v in values]
        ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded))) + len(self.blob)
        self.blob += b"".join(encoded)
        self.offsets.extend(ends)

    def one(self, pos: int) -> str:
        offsets = self.offsets.buf
        return self.blob[int(offsets[pos]):int(offsets[pos + 1])].decode("utf-8", "surrogatepass")

    def at(self, positions: np.ndarray) -> List[str]:
        offsets, blob = self.offsets.buf, self.blob
        return [blob[a:b].decode("utf-8", "surrogatepass")
                for a, b in zip(offsets[positions].tolist(), offsets[positions + 1].tolist())]

    def keep(self, mask: np.ndarray) -> None:
        offsets = self.offsets.view()
        lengths = np.diff(offsets)
        self.blob = bytearray(np.frombuffer(self.blob, np.uint8)[np.repeat(mask, lengths)].tobytes())
        self.offsets = _Column(np.int64)
        self.offsets.extend(np.concatenate([[0], np.cumsum(lengths[mask])]))

    def find(self, value: str) -> np.ndarray:
        target = value.encode("utf-8", "surrogatepass")
        offsets = self.offsets.view()
        if not target:
            return np.flatnonzero(np.diff(offsets) == 0)
        found, at = [], self.blob.find(target)
        while at >= 0:  # bytes.find runs in C; a hit counts only where a whole text starts and ends
            pos = int(np.searchsorted(offsets, at, side="right")) - 1  # the text at ``at``: after empty ones
            if pos + 1 < len(offsets) and offsets[pos] == at and offsets[pos + 1] == at + len(target):
                found.append(pos)
            at = self.blob.find(target, at + 1)
        return np.asarray(found, np.int64)

    def counts(self) -> Dict[str, int]:
        return dict(Counter(self.at(np.arange(len(self.offsets.view()) - 1))))


class IdMap(Mapping):
    """``{int id: label}`` in 12 bytes per item (see the module docstring)."""

    _store_type: Any = _Codes

    def __init__(self, items: Any = ()) -> None:
        self._ids, self._values = _Column(np.int64), self._store_type()
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        self.add([k for k, _ in pairs], [v for _, v in pairs])

    @classmethod
    def from_arrays(cls, ids: Any, values: Sequence[str]) -> "IdMap":
        """A map of ``ids[i] -> values[i]``; a repeated id keeps its last value (as a dict would)."""
        out = cls()
        out.add(ids, values)
        return out

    # Mapping ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._ids.n

    def __iter__(self) -> Iterator[int]:
        ids = self._ids.view()
        for start in range(0, len(ids), BATCH):
            yield from ids[start:start + BATCH].tolist()

    def _position(self, key: Any) -> int:
        """The position of ``key``, or -1 (non-integers and ids beyond int64 are simply absent)."""
        try:
            key = operator.index(key)
        except TypeError:
            return -1
        n, ids = self._ids.n, self._ids.buf
        if not n or not int(ids[0]) <= key <= int(ids[n - 1]):  # also keeps ids beyond int64 out
            return -1
        pos = int(ids[:n].searchsorted(key))
        return pos if ids[pos] == key else -1

    def __getitem__(self, key: Any) -> str:
        pos = self._position(key)
        if pos < 0:
            raise KeyError(key)
        return self._values.one(pos)

    def __contains__(self, key: Any) -> bool:
        return self._position(key) >= 0

    def get(self, key: Any, default: Any = None) -> Any:
        pos = self._position(key)
        return default if pos < 0 else self._values.one(pos)

    def items(self) -> "ItemsView":
        return _Items(self)

    def values(self) -> "ValuesView":
        return _Values(self)

    def __repr__(self) -> str:
        ids, texts = next(self.batches(3), ([], []))
        first = ", ".join(f"{k}: {v!r}" for k, v in zip(ids, texts))
        return f"{type(self).__name__}({len(self)} items{': ' + first + ', ...' if first else ''})"

    # beyond Mapping -----------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """The ids, ascending (a read-only view: copy it to keep it across changes)."""
        return self._ids.view()

    def batches(self, size: int = BATCH) -> Iterator[Tuple[List[int], List[str]]]:
        """``(ids, texts)`` in id order, ``size`` at a time (bounded temporary lists at any size)."""
        ids = self._ids.view()
        for start in range(0, len(ids), size):
            stop = min(len(ids), start + size)
            yield ids[start:stop].tolist(), self._values.at(np.arange(start, stop))

    def max_id(self, default: int = -1) -> int:
        return int(self._ids.buf[self._ids.n - 1]) if self._ids.n else default

    def lookup(self, ids: Any) -> List[Optional[str]]:
        """The text of each of ``ids`` (``None`` where absent), found in one vectorised search."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        held = self._ids.view()
        pos = np.minimum(np.searchsorted(held, ids), max(len(held) - 1, 0))
        hit = held[pos] == ids if len(held) else np.zeros(len(ids), bool)
        texts = iter(self._values.at(pos[hit]))
        return [next(texts) if h else None for h in hit.tolist()]

    def ids_with(self, value: str) -> np.ndarray:
        """The ids whose text is ``value``, ascending."""
        return self._ids.view()[self._values.find(value)]

    def counts(self) -> Dict[str, int]:
        """How many ids hold each text."""
        return self._values.counts()

    def reserve(self, total: int) -> None:
        """Make room for ``total`` items at once (a build that knows its size grows no arrays)."""
        self._ids.reserve(total)
        self._values.reserve(total)

    def add(self, ids: Any, values: Sequence[Any]) -> None:
        """Set ``ids[i] -> str(values[i])``. Ids above every id held are appended; others merge."""
        try:
            ids = np.asarray(ids, np.int64).reshape(-1)
        except OverflowError:
            raise ValueError("an id lies outside the 64-bit range faiss ids have") from None
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} ids but {len(values)} values")
        values = [v if isinstance(v, str) else str(v) for v in values]
        if not len(ids):
            return
        above = not len(self) or int(ids[0]) > self.max_id()
        if above and (len(ids) == 1 or bool((np.diff(ids) > 0).all())):
            self._ids.extend(ids)
            self._values.extend(values)
            return
        merged_ids = np.concatenate([self._ids.view(), ids])
        merged_values = self._values.at(np.arange(len(self))) + values
        order = np.argsort(merged_ids, kind="stable")
        ordered = merged_ids[order]
        last = np.append(ordered[1:] != ordered[:-1], True)  # the last of equal ids: the newest value
        order = order[last]
        self._ids, self._values = _Column(np.int64), self._store_type()
        self._ids.extend(merged_ids[order])
        self._values.extend([merged_values[i] for i in order.tolist()])

    def remove(self, ids: Iterable[int]) -> int:
        """Drop ``ids`` (absent ones are ignored); return how many were held."""
        drop = np.fromiter((i for i in map(int, ids) if -2 ** 63 <= i < 2 ** 63), np.int64)
        gone = np.isin(self._ids.view(), drop)
        removed = int(gone.sum())
        if removed:
            self._values.keep(~gone)
            self._ids.keep(~gone)
        return removed


class PathMap(IdMap):
    """``{int id: input path}``: every text distinct, so stored as one blob (module docstring)."""

    _store_type = _Blob


class _Items(ItemsView):
    def __iter__(self) -> Iterator[Tuple[int, str]]:
        for ids, values in self._mapping.batches():
            yield from zip(ids, values)


class _Values(ValuesView):
    def __iter__(self) -> Iterator[str]:
        for _, values in self._mapping.batches():
            yield from values

    def __contains__(self, value: Any) -> bool:
        return isinstance(value, str) and len(self._mapping.ids_with(value)) > 0


__all__ = ["IdMap", "PathMap"]
