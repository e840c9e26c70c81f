"""``index build`` from a streamed gallery (:mod:`.streaming`): bounded memory at any size.

Memory: the index being built, one chunk, the id map (label and input path per item: numpy arrays,
:mod:`.idmap`), and for trained (IVF) indexes the training sample. The steps:

1. choose the index (``auto``: :func:`.autoindex.choose` for the row count, dimension and
   ``--max-memory``; else the named type) before reading a single vector;
2. one pass to draw the training sample and the held-out recall queries from random positions over
   the whole gallery (a folder sorted by class would bias a sample of its first rows) and to check
   every row (labels, NaN) before the slow part; skipped for ``Flat``, which is exact;
3. train the coarse quantizer (and codes) on the sample, then a second pass adds every chunk while
   the queries' exact neighbours are computed from the same chunks (:mod:`.recall`);
4. tune the search depth (IVF ``nprobe``, HNSW ``efSearch``) to the smallest reaching the target
   recall, store it in the index, and record the measured recall@10 (``index info`` shows it).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.retrieval import autoindex, recall
from imgfeat_cli.retrieval.idmap import IdMap
from imgfeat_cli.retrieval.index import INDEX_TYPES, MIN_IVF_VECTORS, Index, ivf_params
from imgfeat_cli.retrieval.layout import faiss_module
from imgfeat_cli.retrieval.streaming import Source

#: Training vectors per inverted list, for every IVF build (faiss wants at least 39; more costs
#: k-means time; memory: 4 bytes x dim each).
TRAIN_PER_LIST = 40


def plan(source: Source, index_type: str, max_memory: Optional[int], nlist: Optional[int]) -> autoindex.Choice:
    """The index to build, decided from the gallery's size alone."""
    n, d = source.rows, source.dim
    if index_type == "auto":
        return autoindex.choose(n, d, max_memory)
    if index_type not in INDEX_TYPES:
        raise UsageError(f"unknown index type {index_type!r}", hint=f"use one of {', '.join(INDEX_TYPES)}, auto")
    if index_type == "IVF" and n >= MIN_IVF_VECTORS:
        lists, _ = ivf_params(n, nlist)
        return autoindex.Choice(f"IVF{lists},Flat", "IVF", autoindex.estimate("IVF-Flat", n, d, lists), "named", lists)
    if index_type == "HNSW32":
        return autoindex.Choice("HNSW32", "HNSW32", autoindex.estimate("HNSW", n, d), "named")
    return autoindex.Choice("Flat", "Flat", autoindex.estimate("Flat", n, d), "named")


def _train_rows(choice: autoindex.Choice, n: int) -> int:
    if choice.family != "IVF":
        return 0
    compressed = "PQ" in choice.factory or "SQ" in choice.factory  # code books: 256 (16 for 4-bit) centroids
    return min(n, max(TRAIN_PER_LIST * choice.nlist, autoindex.MIN_TRAIN_ROWS if compressed else 0))


def _sample(source: Source, rows: np.ndarray, queries: np.ndarray, progress: ProgressFn) -> tuple:
    """One pass: the rows at ``rows`` and at ``queries`` (sorted positions), every chunk checked."""
    train = np.empty((len(rows), source.dim), np.float32)
    query = np.empty((len(queries), source.dim), np.float32)
    start = 0
    for feats, labels, _ in source.chunks():
        _check_labels(labels, source, start)
        stop = start + len(feats)
        for picked, out in ((rows, train), (queries, query)):
            lo, hi = np.searchsorted(picked, [start, stop])
            if hi > lo:
                out[lo:hi] = feats[picked[lo:hi] - start]
        start = stop
        progress("Sampling the gallery", start, source.rows)
    return train, query


def _check_labels(labels: Any, source: Source, start: int) -> None:
    missing = next((i for i, v in enumerate(labels or [None]) if v is None), None)
    if missing is not None:
        raise UsageError(f"{source.origin}: row {start + missing + 1} has no label",
                         hint="every row needs a label (or pass --labels FILE, or -o Index.label_from=folder)")


def _new_index(choice: autoindex.Choice, dim: int, rows: int, metric: str, nprobe: Optional[int], ef_search: Optional[int],
               model: Optional[Dict[str, Any]]) -> Index:
    faiss = faiss_module()
    inner = faiss.index_factory(int(dim), choice.factory, faiss.METRIC_INNER_PRODUCT if metric == "IP" else faiss.METRIC_L2)
    if choice.family == "Flat":
        # the codes vector would double as it grows (a peak of up to twice the index while it is
        # copied): take its final size once, then shrink the length back, keeping the capacity
        inner.codes.resize(rows * inner.code_size)
        inner.codes.resize(0)
    index = Index(faiss.IndexIDMap(inner), IdMap(), metric, choice.family, model=model, factory=choice.factory)
    index.reserve(rows)  # the id maps take their final size once, as the codes above
    if choice.family == "IVF":
        autoindex.set_depth(index.faiss_index, "IVF", nprobe or ivf_params(0, choice.nlist)[1])
        autoindex.set_refine(index.faiss_index)
    elif choice.family == "HNSW32":
        from imgfeat_cli.retrieval.index import HNSW_EF_SEARCH

        autoindex.set_depth(index.faiss_index, "HNSW32", ef_search or HNSW_EF_SEARCH)
    return index


def build_streamed(source: Source, index_type: str = "auto", metric_type: str = "IP", max_memory: Optional[int] = None,
                   target_recall: float = 0.95, nlist: Optional[int] = None, nprobe: Optional[int] = None,
                   ef_search: Optional[int] = None, model: Optional[Dict[str, Any]] = None,
                   progress: ProgressFn = null_progress) -> Index:
    """Build an index from ``source`` (module docstring); ``index.build`` records what was measured."""
    if metric_type not in ("IP", "L2"):
        raise UsageError(f"unknown metric {metric_type!r}", hint="use IP or L2")
    choice = plan(source, index_type, max_memory, nlist)
    n = source.rows
    if index_type == "IVF" and choice.family == "Flat":
        notes = [f"IVF needs at least {MIN_IVF_VECTORS} gallery vectors to train its lists (got {n}); built Flat "
                 "instead (exact, supports remove)"]
    else:
        notes = []
    queries = recall.pick_rows(n, recall.query_count(n), seed=1) if choice.family != "Flat" else np.empty(0, np.int64)
    want = _train_rows(choice, n)
    held_out = queries if n - len(queries) >= want else ()  # a small gallery trains on every row
    train_at = recall.pick_rows(n, want, seed=0, exclude=held_out) if choice.family == "IVF" else np.empty(0, np.int64)
    train, query = _sample(source, train_at, queries, progress) if len(queries) else (None, None)
    index = _new_index(choice, source.dim, n, metric_type, nprobe, ef_search, model or source.model)
    index.notes += notes
    if choice.family == "IVF":
        index.train(train)
    del train
    exact = recall.ExactNeighbours(query if query is not None else np.empty((0, source.dim), np.float32),
                                   queries, metric_type)
    added = 0
    for feats, labels, paths in source.chunks():
        _check_labels(labels, source, added)
        ids = index.add(feats, labels, paths)
        exact.add(feats, int(ids[0]))
        added += len(feats)
        progress("Adding vectors", added, n)
    fixed = (nprobe if choice.family == "IVF" else ef_search) if index_type == "auto" else \
        autoindex.get_depth(index.faiss_index, choice.family)  # a named type keeps its (configured) depth
    index.build = _measure(index, choice, exact, target_recall, fixed, max_memory)
    if index_type == "auto":
        index.build["chosen_because"] = choice.why
    return index


def _measure(index: Index, choice: autoindex.Choice, exact: recall.ExactNeighbours, target: float,
             fixed_depth: Optional[int], max_memory: Optional[int]) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"estimated_bytes": choice.bytes, "max_memory": max_memory}
    if choice.family == "Flat":
        return {**doc, "recall_at_10": 1.0, "recall_queries": 0, "recall_note": "exact search"}
    family = choice.family
    depths = [fixed_depth] if fixed_depth else autoindex.search_depths(family, choice.nlist)
    tuned = recall.tune(index.faiss_index, exact, depths,
                        lambda d: autoindex.set_depth(index.faiss_index, family, d), target)
    if tuned["recall_at_10"] < target and not fixed_depth:
        index.notes.append(f"recall@10 {tuned['recall_at_10']:.3f} is below the target {target} even at the deepest "
                           f"search; a larger --max-memory allows a more exact index")
    key = "nprobe" if family == "IVF" else "efSearch"
    return {**doc, "recall_at_10": tuned["recall_at_10"], "recall_queries": len(exact.q), key: tuned["depth"],
            "target_recall": target, "tried": tuned["tried"]}
