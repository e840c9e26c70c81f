"""Recall of an approximate index against exact search, measured while the index is built.

A few hundred gallery rows, drawn at random positions before the build and left out of the
quantizer's training sample, are the queries. Their exact neighbours are found by streaming every
chunk past them as it is added (a running top-k, so nothing is held but the queries), and the
built index is asked the same queries. Each query's own row is dropped from both answers, so the
figure is about the *other* items: recall@10 is the share of the exact 10 nearest others that the
index returns among its 10 (1.0 for an exact index).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

#: Queries drawn from the gallery to measure recall (fewer when the gallery is small).
RECALL_QUERIES = 500
K = 10
#: Recall gained by doubling the search depth below which more depth is not worth its time.
PLATEAU = 0.003


def query_count(rows: int) -> int:
    """Recall queries for a gallery of ``rows``: :data:`RECALL_QUERIES`, at most a tenth of it."""
    return max(1, min(RECALL_QUERIES, rows // 10))


def pick_rows(rows: int, count: int, seed: int = 0, exclude: Sequence[int] = ()) -> np.ndarray:
    """``count`` distinct sorted row positions out of ``rows`` (seeded), none in ``exclude``."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(rows), np.asarray(exclude, dtype=np.int64)) if len(exclude) else None
    size = rows if pool is None else len(pool)
    if size <= count:
        return np.sort(np.arange(rows) if pool is None else pool)
    picked = rng.choice(size, count, replace=False)
    return np.sort(picked if pool is None else pool[picked])


class ExactNeighbours:
    """Exact top-(k+1) of fixed queries over a stream of chunks (inner product, or squared L2)."""

    def __init__(self, queries: np.ndarray, query_ids: np.ndarray, metric: str, k: int = K) -> None:
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.metric, self.k = metric, k + 1
        n = len(self.q)
        self.scores = np.full((n, self.k), -np.inf if metric == "IP" else np.inf, dtype=np.float32)
        self.ids = np.full((n, self.k), -1, dtype=np.int64)

    def add(self, feats: np.ndarray, first_id: int) -> None:
        if not len(self.q):
            return
        sims = self.q @ feats.T
        if self.metric == "L2":
            sims = (self.q ** 2).sum(1)[:, None] - 2 * sims + (feats ** 2).sum(1)[None, :]
        ids = np.broadcast_to(np.arange(first_id, first_id + len(feats), dtype=np.int64), sims.shape)
        scores = np.concatenate([self.scores, sims], axis=1)
        all_ids = np.concatenate([self.ids, ids], axis=1)
        order = np.argsort(-scores if self.metric == "IP" else scores, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(all_ids, order, axis=1)

    def recall(self, found_ids: np.ndarray, k: int = K) -> float:
        """Mean share of each query's exact k nearest others found among the index's k nearest others."""
        if not len(self.q):
            return 1.0
        hits = []
        for qid, exact, got in zip(self.query_ids, self.ids, found_ids):
            want = [i for i in exact.tolist() if i != qid and i >= 0][:k]
            have = set([i for i in got.tolist() if i != qid and i >= 0][:k])
            hits.append(len(have.intersection(want)) / max(1, len(want)))
        return float(np.mean(hits))


def tune(index: Any, exact: ExactNeighbours, depths: Sequence[int], set_depth: Any, target: float) -> Dict[str, Any]:
    """Try search depths shallowest first; keep the first reaching ``target`` recall. When recall
    stops growing (under :data:`PLATEAU` from half the depth to the depth: the codes, not the
    search, limit it) keep the shallowest depth within :data:`PLATEAU` of the best, rather than
    scanning every list for nothing. Returns ``{"depth", "recall_at_10", "tried": [[depth, recall], ...]}``."""
    tried: List[List[float]] = []
    for depth in depths:
        set_depth(depth)
        _, found = index.search(exact.q, K + 1)
        rec = round(exact.recall(found), 4)
        tried.append([int(depth), rec])
        if rec >= target:
            break
        half = [r for d, r in tried if d <= depth / 2]
        if depth >= 8 and half and rec - half[-1] < PLATEAU:
            break
    if not tried:
        return {"depth": None, "recall_at_10": 1.0, "tried": []}
    if tried[-1][1] >= target:
        depth, rec = tried[-1]
    else:
        best = max(r for _, r in tried)
        depth, rec = next((d, r) for d, r in tried if r >= best - PLATEAU)
    set_depth(depth)
    return {"depth": int(depth), "recall_at_10": rec, "tried": tried}
