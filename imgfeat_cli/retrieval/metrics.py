"""Retrieval metrics with PaddleClas semantics, computed exactly in memory-bounded blocks.

* Features are L2-normalised; similarity is the dot product of every query with every gallery item.
* Recall@k: share of queries whose k most similar gallery items include the query's label.
* AP: over the full ranked gallery, the mean of precision@rank at each relevant item; mAP is the
  mean AP over queries.
* Queries with no same-label gallery item are left out of every metric (and counted).
* No self-exclusion by default (an image in both query and gallery matches itself, as upstream);
  ``exclude_same_path`` removes gallery items whose path equals the query's path.
* Ties are ranked by gallery order (a stable sort), so results are deterministic.

Upstream averages per block of 64 queries weighted by block size, which is inexact when some
queries have no match (a quirk); here every scored query counts once. Queries are processed in
blocks sized so that one block's similarity matrix stays around ``budget`` elements: a 100k x 100k
evaluation never materialises the full matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

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

    def metrics(self) -> Dict[str, float]:
        out = {f"recall{k}": self.recall[k] for k in self.ks}
        out["mAP"] = self.mAP
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"done_flag": True, "metrics": self.metrics(), "num_queries": self.num_queries,
                "num_scored": self.num_scored, "num_unscorable": self.num_queries - self.num_scored,
                "num_gallery": self.num_gallery}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(query: np.ndarray, query_labels: Sequence[Any], gallery: np.ndarray, gallery_labels: Sequence[Any],
             ks: Sequence[int] = (1, 5), query_paths: Optional[Sequence[str]] = None,
             gallery_paths: Optional[Sequence[str]] = None, exclude_same_path: bool = False,
             budget: int = 1 << 23, progress: ProgressFn = null_progress) -> RetrievalMetrics:
    """Recall@k and mAP of ``query`` against ``gallery`` (see module docstring)."""
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise UsageError(f"feature shapes do not fit: query {query.shape}, gallery {gallery.shape}")
    if len(query_labels) != len(query) or len(gallery_labels) != len(gallery):
        raise UsageError("each query and gallery feature needs exactly one label")
    if len(gallery) == 0:
        raise UsageError("the gallery is empty")
    if exclude_same_path and (query_paths is None or gallery_paths is None):
        raise UsageError("excluding identical paths needs the paths of queries and gallery items")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UsageError("recall k values must be >= 1")
    # Labels may be ints or strings: compare through shared integer codes.
    _, codes = np.unique(np.asarray([str(v) for v in list(query_labels) + list(gallery_labels)]), return_inverse=True)
    q_lab, g_lab = codes[: len(query)], codes[len(query):]
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
        ap_sum += float((prec.sum(axis=1)[valid] / n_rel[valid]).sum())
        progress("Scoring queries", min(start + block, len(q)), len(q))
    recall = {k: (hits[k] / scored if scored else 0.0) for k in ks}
    return RetrievalMetrics(recall, ap_sum / scored if scored else 0.0, len(q), scored, n_g, ks)
