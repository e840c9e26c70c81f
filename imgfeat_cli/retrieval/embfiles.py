"""Embedding files for ``eval``: features with their labels, refused when they would skew the metrics.

Features are read by :func:`imgfeat_cli.pipeline.readers.read_features` (``.jsonl``, ``.npy`` with
its ``.paths.txt``, ``.parquet``), which refuses non-numeric, ragged, NaN, infinite and all-zero
rows by file and row. Labels come from a label file (one per line, in row order), which wins, or
from the rows' ``label`` field. They are compared by
:func:`imgfeat_cli.retrieval.metrics.label_key` (``1``, ``1.0`` and ``"1"`` are one label); a
label that is no label (null, a list, empty text) is refused by file and row or line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.datasets import textio
from imgfeat_cli.pipeline.readers import read_features
from imgfeat_cli.retrieval.metrics import label_key

Loaded = Tuple[np.ndarray, List[Any], Optional[List[str]]]


def _key(value: Any, where: str) -> Any:
    try:
        return label_key(value)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}", hint="labels are integers or text") from None


def read_label_file(labels_path: str, rows: int, features_path: str) -> List[Any]:
    """One label per line (the one labels reader), each an integer or text as ``label_key`` makes it."""
    lines = textio.read_label_lines(labels_path, rows, features_path)
    return [_key(line, f"{labels_path}:{no}") for no, line in enumerate(lines, start=1)]


def load_embeddings(path: str, labels_path: Optional[str] = None) -> Loaded:
    """(features, labels, paths or None) of one embedding file (module doc)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"embeddings file {path} is a folder", hint="pass a .jsonl, .npy or .parquet file")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, which the reader refuses
        table = read_features(path)
    if labels_path is not None:
        return table.features, read_label_file(labels_path, len(table.features), path), table.paths
    values = table.columns.get("label")
    if values is None:
        raise UsageError(f"{path} has no labels",
                         hint="pass the label file (one label per line), or add a \"label\" field to each row")
    missing = next((i for i, v in enumerate(values) if v is None), None)
    if missing is not None:
        raise UsageError(f"{path}: {table.where(missing)} has no label",
                         hint="every row needs a \"label\" (or pass a label file)")
    return table.features, [_key(v, f"{path}: {table.where(i)}") for i, v in enumerate(values)], table.paths


def load_query_gallery(query: str, gallery: str, query_labels: Optional[str] = None,
                       gallery_labels: Optional[str] = None) -> Tuple[Loaded, Loaded]:
    """Both files, checked to hold features of one dimension (one model)."""
    q = load_embeddings(query, query_labels)
    g = load_embeddings(gallery, gallery_labels)
    if q[0].shape[1] != g[0].shape[1]:
        raise UsageError(f"query features {query} have shape {q[0].shape}, gallery features {gallery} "
                         f"{g[0].shape}: the dimensions differ", hint="embed both with the same model")
    return q, g
