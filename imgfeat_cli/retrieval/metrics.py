"""Retrieval metrics with PaddleClas semantics, computed exactly in memory-bounded blocks.

* Features are L2-normalised; similarity is the dot product of every query with every gallery item.
* Recall@k: share of queries whose k most similar gallery items include the query's label.
* AP: over the full ranked gallery, the mean of precision@rank at each relevant item; mAP is the
  mean AP over queries.
* Labels compare by :func:`label_key`: numbers by value, whatever their type (``1``, ``1.0``, ``"1"``
  and ``"01"`` are one label, as PaddleX's ``int(label)`` reads list files), other text as text.
* Queries with no same-label gallery item are left out of every metric (and counted); when no query
  at all can be scored the request is refused (a usage error), never reported as zeros.
* No self-exclusion by default (an image in both query and gallery matches itself, as upstream);
  ``exclude_same_path`` removes gallery items whose path equals the query's path.
* Ties are ranked by gallery order (a stable sort), so results are deterministic.

Upstream averages per block of 64 queries weighted by block size, which is inexact when some
queries have no match (a quirk); here every scored query counts once. Queries are processed in
blocks sized so that one block's similarity matrix stays around ``budget`` elements: a 100k x 100k
evaluation never materialises the full matrix.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Sequence, Union

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress


@dataclass
class RetrievalMetrics:
    recall: Dict[int, float]
    mAP: float
    num_queries: int
    num_scored: int
    num_gallery: int
    ks: List[int] = field(default_factory=list)
    report: Optional[str] = None  # the HTML report written with these figures, if any

    def metrics(self) -> Dict[str, float]:
        out = {f"recall{k}": self.recall[k] for k in self.ks}
        out["mAP"] = self.mAP
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"done_flag": True, "metrics": self.metrics(), "num_queries": self.num_queries,
                "num_scored": self.num_scored, "num_unscorable": self.num_queries - self.num_scored,
                "num_gallery": self.num_gallery, **({"report": self.report} if self.report else {})}


_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def label_key(value: Any) -> Union[int, float, str]:
    """The form a label is compared in: an integral number (``1``, ``1.0``, ``"1"``, ``" 01 "``)
    becomes that ``int``, another finite number a ``float``, other text itself without surrounding
    spaces. ``None``, booleans, lists, empty text and non-finite numbers raise ``ValueError``."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("label is empty")
        if _INT.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return text
        return label_key(number) if math.isfinite(number) else text
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"label {value!r} is neither a number nor text")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if not math.isfinite(value):
        raise ValueError(f"label {value} is not a finite number")
    return int(value) if float(value).is_integer() else float(value)


def _label_codes(query_labels: Sequence[Any], gallery_labels: Sequence[Any]) -> List[np.ndarray]:
    """Shared integer codes for both label lists (via :func:`label_key`)."""
    codes: Dict[Hashable, int] = {}
    out = []
    for name, labels in (("query", query_labels), ("gallery", gallery_labels)):
        arr = np.empty(len(labels), dtype=np.int64)
        for i, v in enumerate(labels):
            try:
                arr[i] = codes.setdefault(label_key(v), len(codes))
            except ValueError as exc:
                raise UsageError(f"{name} label {i} (0-based): {exc}", hint="labels are integers or text") from None
        out.append(arr)
    return out


def _examples(labels: Sequence[Any]) -> str:
    shown = sorted({repr(label_key(v)) for v in labels})
    return ", ".join(shown[:3]) + (" ..." if len(shown) > 3 else "")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(query: np.ndarray, query_labels: Sequence[Any], gallery: np.ndarray, gallery_labels: Sequence[Any],
             ks: Sequence[int] = (1, 5), query_paths: Optional[Sequence[str]] = None,
             gallery_paths: Optional[Sequence[str]] = None, exclude_same_path: bool = False,
             budget: int = 1 << 23, progress: ProgressFn = null_progress, collect: Optional[Any] = None
             ) -> RetrievalMetrics:
    """Recall@k and mAP of ``query`` against ``gallery`` (see module docstring). ``collect``, a
    :class:`~imgfeat_cli.retrieval.ranking.QueryRanking`, keeps the per-query results."""
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise UsageError(f"feature shapes do not fit: query {query.shape}, gallery {gallery.shape}",
                         hint="embed query and gallery with the same model")
    if len(query_labels) != len(query) or len(gallery_labels) != len(gallery):
        raise UsageError("each query and gallery feature needs exactly one label")
    if len(gallery) == 0:
        raise UsageError("the gallery is empty")
    if len(query) == 0:
        raise UsageError("there are no queries to score")
    if exclude_same_path and (query_paths is None or gallery_paths is None):
        raise UsageError("excluding identical paths needs the paths of queries and gallery items")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UsageError("recall k values must be >= 1")
    q_lab, g_lab = _label_codes(query_labels, gallery_labels)
    if len(q_lab) and not np.isin(q_lab, g_lab).any():
        raise UsageError(f"no query can be scored: no query label occurs in the gallery (query labels "
                         f"{_examples(query_labels)}; gallery labels {_examples(gallery_labels)})",
                         hint="query and gallery must share one label space")
    if collect is not None:
        collect.begin(query_labels, gallery_labels, query_paths, gallery_paths)
    q, g = _normalise(query), _normalise(gallery)
    n_g = len(g)
    g_index: Dict[str, List[int]] = {}
    if exclude_same_path:
        for j, p in enumerate(gallery_paths or []):
            g_index.setdefault(p, []).append(j)
    block = max(1, min(len(q) or 1, budget // n_g))
    hits = {k: 0 for k in ks}
    ap_sum, scored = 0.0, 0
    positions = np.arange(1, n_g + 1, dtype=np.float64)
    for start in range(0, len(q), block):
        sims = q[start:start + block] @ g.T
        labels = q_lab[start:start + block]
        excluded = None
        if exclude_same_path:  # only then is a block-sized mask worth allocating
            excluded = np.zeros(sims.shape, dtype=bool)
            for i, p in enumerate((query_paths or [])[start:start + block]):
                excluded[i, g_index.get(p, [])] = True
            sims[excluded] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        rel = g_lab[order] == labels[:, None]
        if excluded is not None:
            rel &= ~np.take_along_axis(excluded, order, axis=1)
        n_rel = rel.sum(axis=1)
        valid = n_rel > 0
        scored += int(valid.sum())
        for k in ks:
            hits[k] += int(rel[valid, :k].any(axis=1).sum())
        cum = np.cumsum(rel, axis=1)
        prec = np.where(rel, cum / positions, 0.0)
        ap = prec.sum(axis=1) / np.maximum(n_rel, 1)
        ap_sum += float(ap[valid].sum())
        if collect is not None:
            collect.block(start, sims, order, rel, valid, ap)
        progress("Scoring queries", min(start + block, len(q)), len(q))
    if len(q) and not scored:
        raise UsageError("no query can be scored: each query's only same-label gallery items have its own path",
                         hint="drop --exclude-same-path, or add other images of those labels to the gallery")
    recall = {k: (hits[k] / scored if scored else 0.0) for k in ks}
    return RetrievalMetrics(recall, ap_sum / scored if scored else 0.0, len(q), scored, n_g, ks)
