"""Per-query results of an evaluation: what a report shows beyond the three numbers.

:func:`imgfeat_cli.retrieval.metrics.evaluate` ranks the gallery for every query block by block;
given a :class:`QueryRanking` as ``collect``, it hands each block over, and the ranking keeps, per
query, the rank of its first correct match, its AP and its ``top_k`` best gallery items (ids and
scores). From those come the per-class figures, the most confused class pairs and the Recall@k
curve, with exactly the semantics of the metrics (same ranking, same ties, same exclusions):
``recall_curve()[k - 1]`` equals ``metrics.recall[k]``. Memory: ``top_k`` entries per query.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class ClassFigures:
    """One query label's figures: its scored queries, Recall@1, mean AP and the label its queries'
    wrong first matches carry most often (``None`` when every first match is right)."""

    label: Any
    queries: int
    recall1: float
    mean_ap: float
    confused_with: Optional[Any]
    confused_count: int


class QueryRanking:
    """Collects per-query results from :func:`~imgfeat_cli.retrieval.metrics.evaluate` (module doc)."""

    def __init__(self, top_k: int = 5) -> None:
        self.top_k = top_k
        self.query_labels: List[Any] = []
        self.gallery_labels: List[Any] = []
        self.query_paths: Optional[Sequence[str]] = None
        self.gallery_paths: Optional[Sequence[str]] = None
        self.first_hit = np.zeros(0, dtype=np.int64)
        self.ap = np.zeros(0)
        self.top_ids = np.zeros((0, 0), dtype=np.int64)
        self.top_scores = np.zeros((0, 0), dtype=np.float32)

    # called by evaluate() -----------------------------------------------------------------------
    def begin(self, query_labels: Sequence[Any], gallery_labels: Sequence[Any],
              query_paths: Optional[Sequence[str]], gallery_paths: Optional[Sequence[str]]) -> None:
        """The labels as :func:`~imgfeat_cli.retrieval.metrics.label_key` compares them, and the paths."""
        from imgfeat_cli.retrieval.metrics import label_key

        self.query_labels = [label_key(v) for v in query_labels]
        self.gallery_labels = [label_key(v) for v in gallery_labels]
        self.query_paths, self.gallery_paths = query_paths, gallery_paths
        n, k = len(query_labels), min(self.top_k, len(gallery_labels))
        self.first_hit = np.zeros(n, dtype=np.int64)
        self.ap = np.full(n, np.nan)
        self.top_ids = np.zeros((n, k), dtype=np.int64)
        self.top_scores = np.zeros((n, k), dtype=np.float32)

    def block(self, start: int, sims: np.ndarray, order: np.ndarray, rel: np.ndarray, valid: np.ndarray,
              ap: np.ndarray) -> None:
        """One block of queries: similarities, the ranked gallery ids, relevance in rank order,
        which queries are scored and their AP."""
        stop = start + len(order)
        k = self.top_ids.shape[1]
        self.top_ids[start:stop] = order[:, :k]
        self.top_scores[start:stop] = np.take_along_axis(sims, order[:, :k], axis=1)
        self.first_hit[start:stop] = np.where(valid, rel.argmax(axis=1) + 1, 0)
        self.ap[start:stop] = np.where(valid, ap, np.nan)

    # what a report reads ------------------------------------------------------------------------
    @property
    def scored(self) -> np.ndarray:
        """Indices of the queries that have a same-label gallery item."""
        return np.flatnonzero(self.first_hit > 0)

    def recall_curve(self, max_k: int) -> np.ndarray:
        """Recall@1..max_k over the scored queries."""
        hits = self.first_hit[self.scored]
        if not len(hits):
            return np.zeros(max_k)
        counts = np.bincount(np.minimum(hits, max_k + 1), minlength=max_k + 2)[1:max_k + 1]
        return np.cumsum(counts) / len(hits)

    def worst(self, n: int) -> List[int]:
        """The ``n`` scored queries whose first correct match ranks lowest (then lower AP, then
        list order): the ones to look at first."""
        idx = self.scored
        keys = np.lexsort((idx, self.ap[idx], -self.first_hit[idx]))
        return [int(i) for i in idx[keys[:n]]]

    def top1_label(self, q: int) -> Any:
        return self.gallery_labels[int(self.top_ids[q, 0])]

    def per_class(self) -> List[ClassFigures]:
        """Figures of every query label with scored queries, worst Recall@1 first."""
        groups: Dict[Any, List[int]] = defaultdict(list)
        for q in self.scored:
            groups[self.query_labels[q]].append(int(q))
        out = []
        for label, qs in groups.items():
            wrong = Counter(self.top1_label(q) for q in qs if self.first_hit[q] != 1)
            (other, count), = wrong.most_common(1) or [(None, 0)]
            out.append(ClassFigures(label, len(qs), float(np.mean(self.first_hit[qs] == 1)),
                                    float(np.mean(self.ap[qs])), other, count))
        out.sort(key=lambda c: (c.recall1, c.mean_ap, -c.queries, str(c.label)))
        return out

    def confused_pairs(self) -> List[Tuple[Any, Any, int, int]]:
        """(query label, label of the wrong first match, how often, that label's scored queries),
        most frequent first."""
        sizes = Counter(self.query_labels[q] for q in self.scored)
        pairs = Counter((self.query_labels[q], self.top1_label(q)) for q in self.scored if self.first_hit[q] != 1)
        return [(a, b, n, sizes[a]) for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))]
