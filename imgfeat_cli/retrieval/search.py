"""``search``: query images or precomputed vectors against an index, one result per query.

A result is ``{"input_path", "labels", "scores", "ids"}``, best first; a query whose best score
fails the threshold gets empty lists (PaddleX's rule, in the right direction for L2: see
:func:`imgfeat_cli.retrieval.index.accepts`). Queries go to faiss in batches; images are embedded
a chunk at a time, so memory does not grow with the number of queries. Images that cannot be read
are reported per input (``errors``) and the others are still searched.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.retrieval.gallery import CHUNK
from imgfeat_cli.retrieval.index import Index

#: Query vectors per faiss call (and per progress update).
QUERY_BATCH = 1024

Result = Dict[str, Any]


def read_query_vectors(path: str) -> Tuple[np.ndarray, List[Optional[str]], Optional[Dict[str, Any]]]:
    """(features, input paths, the model the file records) from a ``.jsonl``, ``.npy`` (+
    ``.paths.txt``) or ``.parquet`` file or a folder of Parquet files."""
    from imgfeat_cli.pipeline.readers import read_features

    table = read_features(path)
    return table.features, list(table.paths) if table.paths else [None] * len(table.features), table.model


def search_vectors(index: Index, feats: np.ndarray, paths: Sequence[Optional[str]], k: int,
                   threshold: Optional[float], progress: ProgressFn = null_progress,
                   batch: int = QUERY_BATCH) -> Iterator[Result]:
    """Yield one result per row of ``feats`` (``input_path`` from ``paths``)."""
    n = len(feats)
    index.check_features(feats[:1], "query features")  # fail on a dim mismatch before any output
    for start in range(0, n, batch):
        for path, res in zip(paths[start:start + batch], index.search(feats[start:start + batch], k, threshold)):
            yield {"input_path": path, **res}
        progress("Searching", min(n, start + batch), n)


def search_images(index: Index, model: Any, inputs: Sequence[Any], k: int, threshold: Optional[float],
                  errors: List[Tuple[str, str]], batch_size: Optional[int] = None,
                  progress: ProgressFn = null_progress) -> Iterator[Result]:
    """Embed ``inputs`` (already expanded to files/URLs) chunk by chunk and yield their results;
    failures are appended to ``errors`` as ``(input path, reason)``."""
    from imgfeat_cli.retrieval.embedding import embed_sources

    n = len(inputs)
    for start in range(0, n, CHUNK):
        part = list(inputs[start:start + CHUNK])
        rows, feats, failed = embed_sources(model, part, batch_size,
                                            lambda t, d, tot: progress("Embedding queries", start + d, n))
        errors.extend(failed)
        if rows:
            yield from search_vectors(index, feats, [str(part[r]) for r in rows], k, threshold)


def write_results(path: str, results: Iterable[Result]) -> int:
    """Write results as JSONL atomically (all or nothing); return how many."""
    count = 0
    with fsutil.atomic_open(path, "w") as fh:
        for res in results:
            fh.write(json.dumps(res, ensure_ascii=False) + "\n")
            count += 1
    return count
