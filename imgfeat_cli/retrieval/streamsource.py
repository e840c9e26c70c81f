"""The streamed gallery every source yields: ``(float32 features, labels, paths)`` chunks, checked
for NaN, infinite and all-zero rows, labelled from ``--labels``, a ``label`` column, or each row's
input path (``Index.label_from``). Sources: :mod:`.parquetsource` and :mod:`.streaming`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError

CHUNK = 4096
LABEL_FROM = ("column", "folder", "path")

Chunk = Tuple[np.ndarray, List[str], List[Optional[str]]]


def bad_rows(feats: np.ndarray) -> Optional[Tuple[int, str, int]]:
    """``(first bad row, what is wrong, how many)`` for NaN, infinite or all-zero rows, else ``None``."""
    for mask, what in ((~np.isfinite(feats).all(axis=1), "holds NaN or infinity"), (~feats.any(axis=1), "is all zeros")):
        bad = np.flatnonzero(mask)
        if bad.size:
            return int(bad[0]), what, int(bad.size)
    return None


@dataclass
class Source:
    """A gallery of vectors read in chunks. ``rows`` and ``dim`` are known before reading."""

    origin: str
    rows: int
    dim: int
    model: Optional[Dict[str, Any]] = None
    labels: Optional[List[str]] = None  # from --labels, in row order
    label_from: str = "column"
    notes: List[str] = field(default_factory=list)

    def chunks(self) -> Iterator[Chunk]:
        """``(float32 features, labels, paths)`` chunks over every row, in order (a new pass each call)."""
        start, shared = 0, {}  # one string object per distinct label: millions of items, thousands of labels
        for feats, labels, paths in self._raw_chunks():
            if self.labels is not None:
                labels = self.labels[start:start + len(feats)]
            elif self.label_from != "column":
                labels = [label_of(p, self.label_from, self.origin) for p in paths]
            if labels is not None and self.labels is None:
                labels = [shared.setdefault(v, v) if v is not None else None for v in labels]
            start += len(feats)
            yield feats, labels, paths  # type: ignore[misc]

    def _raw_chunks(self) -> Iterator[Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]]:
        raise NotImplementedError


def label_of(path: Optional[str], how: str, origin: str) -> str:
    if not path:
        raise UsageError(f"{origin}: a row has no input path to take its label from (Index.label_from={how})",
                         hint="use --labels FILE or a label column")
    if how == "path":
        return path
    parent = path.replace("\\", "/").rstrip("/").rsplit("/", 2)
    return parent[-2] if len(parent) >= 2 and parent[-2] else path


def checked(feats: np.ndarray, where: Callable[[int], str]) -> np.ndarray:
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(feats, dtype=np.float32)
    bad = bad_rows(arr)
    if bad:
        more = f" ({bad[2]} rows in this chunk)" if bad[2] > 1 else ""
        raise UsageError(f"{where(bad[0])} {bad[1]}{more}", hint="re-embed those inputs, or drop them from the gallery")
    return arr


