"""Embedding files for ``eval``: read them, and refuse what would silently skew the metrics.

Accepted: ``.jsonl`` lines carrying ``feature`` and ``label`` (``input_path`` optional), and ``.npy``
2-D arrays with the optional ``.paths.txt`` sidecar ``embed`` writes. Labels come from the rows or,
for either format, from a label file (one label per line), which then wins. A feature that is not a
list of numbers, a ragged row, NaN, infinity or an all-zero vector (it has no direction, so every
similarity with it is meaningless) is an error naming the file and row. Labels are compared with
:func:`imgfeat_cli.retrieval.metrics.label_key` (``1``, ``1.0`` and ``"1"`` are one label).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.datasets import textio
from imgfeat_cli.pipeline.sinks import paths_sidecar
from imgfeat_cli.retrieval.metrics import label_key

Loaded = Tuple[np.ndarray, List[Any], Optional[List[str]]]
Where = Callable[[int], str]


def _bad_row(rows: List[Any]) -> Tuple[int, str]:
    """The first row that keeps ``rows`` from being a numeric matrix, and why."""
    width = len(rows[0]) if isinstance(rows[0], list) else None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            return i, f"feature is {json.dumps(row)[:40]}, not a list of numbers"
        odd = next((v for v in row if isinstance(v, bool) or not isinstance(v, (int, float))), None)
        if odd is not None:
            return i, f"feature holds {type(odd).__name__} {json.dumps(odd)[:40]}; expected numbers"
        if len(row) != width:
            return i, f"feature has {len(row)} values, the first row has {width} (ragged rows)"
    return 0, "features do not form a numeric matrix (numbers too large?)"


def _matrix(rows: List[Any], where: Where) -> np.ndarray:
    try:
        arr = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.dtype.kind not in "fiu" or arr.shape[1] == 0:
        i, why = _bad_row(rows)
        raise UsageError(f"{where(i)}: {why}", hint="each feature must be a list of numbers, all of one length")
    with np.errstate(over="ignore"):  # beyond float32's range: becomes inf, refused by check_vectors
        return arr.astype(np.float32)


def check_vectors(feats: np.ndarray, where: Where) -> None:
    """Refuse NaN, infinity (also float32 overflow) and all-zero rows, naming the first one."""
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"{where(i)}: feature holds NaN, infinity or a value beyond float32's range "
                         f"({int(bad.sum())} of {len(feats)} rows)",
                         hint="recompute these features; a broken model or input gives NaN")
    zero = ~feats.any(axis=1)
    if zero.any():
        i = int(np.argmax(zero))
        raise UsageError(f"{where(i)}: feature is all zeros ({int(zero.sum())} of {len(feats)} rows); it has no "
                         "direction, so no similarity with it means anything", hint="recompute or drop these rows")


def _key(value: Any, where: str) -> Any:
    try:
        return label_key(value)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}", hint="labels are integers or text") from None


def _read_jsonl(p: Path, need_labels: bool) -> Tuple[np.ndarray, Optional[List[Any]], Optional[List[str]]]:
    rows, labels, paths, lines = [], [], [], []
    dec = textio.read_decoded(p)
    if dec.bad_byte is not None:
        raise UsageError(f"{p}: {dec.describe_bad()}", hint="embedding files are UTF-8 JSON lines")
    for no, line in enumerate(dec.lines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rows.append(rec["feature"])
            if need_labels:
                labels.append(_key(rec["label"], f"{p}:{no}"))
        except (ValueError, KeyError, TypeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else "not a JSON object"
            raise UsageError(f"{p}:{no}: {what}",
                             hint="each line needs \"feature\" and \"label\" (or pass a label file)") from None
        if ("true" in line or "false" in line) and isinstance(rows[-1], list) and \
                any(isinstance(v, bool) for v in rows[-1]):  # numpy would read true as 1 next to numbers
            raise UsageError(f"{p}:{no}: feature holds bool; expected numbers",
                             hint="each feature must be a list of numbers, all of one length")
        paths.append(rec.get("input_path"))
        lines.append(no)
    if not rows:
        raise UsageError(f"{p} holds no embeddings")
    feats = _matrix(rows, lambda i: f"{p}:{lines[i]}")
    check_vectors(feats, lambda i: f"{p}:{lines[i]}")
    return feats, labels if need_labels else None, paths if all(paths) else None


def _read_npy(p: Path) -> Tuple[np.ndarray, Optional[List[str]]]:
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":
            raise UsageError(f"{p} is not a .npy file (it does not start with the NumPy header)",
                             hint="pass a file written by numpy.save or imgfeat embed")
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        why = "holds Python objects (ragged or mixed rows?)" if "allow_pickle" in str(exc) else f"is unreadable: {exc}"
        raise UsageError(f"{p} {why}; expected a 2-D array of numbers") from None
    except (OSError, EOFError) as exc:
        raise UsageError(f"{p} is not a readable .npy file: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "fiu" or arr.shape[1] == 0:
        shape = getattr(arr, "shape", None)
        raise UsageError(f"{p} holds a {getattr(arr, 'dtype', type(arr))} array of shape {shape}; "
                         "expected a 2-D array of numbers (rows x dims)")
    with np.errstate(over="ignore"):
        feats = arr.astype(np.float32)
    check_vectors(feats, lambda i: f"{p} row {i} (0-based)")
    sidecar = paths_sidecar(p)
    paths = textio.read_decoded(sidecar).lines() if sidecar.is_file() else None
    if paths is not None and len(paths) != len(feats):
        raise UsageError(f"{sidecar} has {len(paths)} paths for {len(feats)} rows in {p}",
                         hint="keep the .npy and its .paths.txt from the same embed run")
    return feats, paths


def read_label_file(labels_path: str, rows: int, features_path: Path) -> List[Any]:
    """One label per line; trailing blank lines are fine, a blank line among labels is not."""
    lp = Path(labels_path)
    if not lp.is_file():
        raise UsageError(f"label file {labels_path} {'is a folder' if lp.is_dir() else 'does not exist'}",
                         hint="pass a text file with one label per line, in the order of the features")
    dec = textio.read_decoded(lp)
    if dec.bad_byte is not None:
        raise UsageError(f"{lp}: {dec.describe_bad()}", hint="re-save the label file as UTF-8")
    lines = dec.lines()
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            raise UsageError(f"{lp}:{no}: blank line; every feature row needs a label",
                             hint="one label per line, no gaps")
        labels.append(_key(line, f"{lp}:{no}"))
    if len(labels) != rows:
        raise UsageError(f"{labels_path} has {len(labels)} labels for {rows} features in {features_path}")
    return labels


def load_embeddings(path: str, labels_path: Optional[str] = None) -> Loaded:
    """(features, labels, paths or None) from a ``.jsonl`` or ``.npy`` file (module doc)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"embeddings file {path} {'is a folder' if p.is_dir() else 'does not exist'}")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        feats, labels, paths = _read_jsonl(p, need_labels=labels_path is None)
    elif suffix == ".npy":
        if labels_path is None:
            raise UsageError(f"{path} has no labels", hint="pass the label file (one label per line)")
        feats, paths = _read_npy(p)
        labels = None
    else:
        raise UsageError(f"cannot read embeddings from {path}", hint="use .jsonl or .npy")
    if labels_path is not None:
        labels = read_label_file(labels_path, len(feats), p)
    assert labels is not None
    return feats, labels, paths


def load_query_gallery(query: str, gallery: str, query_labels: Optional[str] = None,
                       gallery_labels: Optional[str] = None) -> Tuple[Loaded, Loaded]:
    """Both files, checked to hold features of one dimension (one model)."""
    q = load_embeddings(query, query_labels)
    g = load_embeddings(gallery, gallery_labels)
    if q[0].shape[1] != g[0].shape[1]:
        raise UsageError(f"query features {query} have shape {q[0].shape}, gallery features {gallery} "
                         f"{g[0].shape}: the dimensions differ", hint="embed both with the same model")
    return q, g
