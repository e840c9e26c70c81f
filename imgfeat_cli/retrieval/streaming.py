"""Embedding galleries read in chunks, so an index of any size is built with bounded memory.

Sources: a folder of Parquet files (``imgfeat embed --engine ray``'s output, Spark's, pandas'; local
or on any pyarrow filesystem: ``s3://bucket/prefix/``), one ``.parquet``, a ``.npy`` (memory-mapped,
its ``.paths.txt`` beside it) or a ``.jsonl``. Each knows its row count and width before the first
chunk (Parquet footers, the ``.npy`` header, a line count) and can be read again and again: an
index is trained on a sample drawn from the whole gallery in one pass and filled in the next.

Rows the Ray engine wrote for failed inputs (an ``error`` value, no feature) are not features and
are skipped. NaN, infinite and all-zero vectors are refused with the file and row (or line), as
:func:`imgfeat_cli.pipeline.readers.read_features` does. Labels, in this order: ``--labels FILE``
(one per line, in row order), a ``label`` column, or, with ``Index.label_from``, each row's input
path (``path``) or the name of its folder (``folder``: the one-folder-per-class layout).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError, first_sentence, from_os_error
from imgfeat_cli.common.remote import is_uri
from imgfeat_cli.datasets.textio import read_label_lines
from imgfeat_cli.retrieval.parquetsource import open_parquet
from imgfeat_cli.retrieval.streamsource import CHUNK, LABEL_FROM, Source, checked

__all__ = ["ArraySource", "JsonlSource", "Source", "is_streamable", "open_npy", "open_jsonl", "open_parquet",
           "open_source"]


def is_streamable(spec: Any) -> bool:
    """Whether ``index build -g spec`` is an embeddings source read here (not images to embed)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = os.fspath(spec)
    if is_uri(text):
        return True
    path = Path(text)
    if path.is_dir():
        return not (path / "gallery.txt").is_file()
    return path.suffix.lower() in (".jsonl", ".npy", ".parquet")


# -- .npy (memory-mapped) and arrays ------------------------------------------------------------------

class ArraySource(Source):
    """A 2-d array (a memory-mapped ``.npy`` or an array in memory), with optional paths and labels."""

    def __init__(self, origin: str, array: np.ndarray, paths: Optional[List[Optional[str]]],
                 labels: Optional[List[str]] = None) -> None:
        super().__init__(origin, int(array.shape[0]), int(array.shape[1]), None, labels)
        self.array, self.paths = array, paths

    def _raw_chunks(self) -> Iterator[Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]]:
        for start in range(0, self.rows, CHUNK):
            stop = min(self.rows, start + CHUNK)
            feats = checked(self.array[start:stop], lambda r, s=start: f"{self.origin}: row {s + r + 1}")
            yield feats, None, self.paths[start:stop] if self.paths is not None else [None] * (stop - start)


def open_npy(path: Path) -> ArraySource:
    from imgfeat_cli.pipeline.formats import labels_sidecar, paths_sidecar

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        if not exc.errno:
            raise UsageError(f"{path} is not a readable numeric .npy file ({first_sentence(exc)})") from None
        exc.filename = exc.filename or str(path)
        raise from_os_error(exc) from None
    except (ValueError, EOFError) as exc:
        pickled = "pickled" in str(exc) or "Python objects" in str(exc)
        raise UsageError(f"{path} is not a readable numeric .npy file "
                         f"({'it holds pickled Python objects' if pickled else first_sentence(exc)})",
                         hint="save the vectors with numpy.save as a float array (imgfeat never unpickles: "
                         "it could run code)" if pickled else "re-create it with numpy.save") from None
    if arr.ndim != 2 or arr.dtype.kind not in "fiu" or not arr.shape[0] or not arr.shape[1]:
        raise UsageError(f"{path} holds a {arr.dtype} array of shape {arr.shape}; "
                         "expected (N, D) numbers, N > 0 and D > 0")
    side = paths_sidecar(path)
    paths = None
    if side.is_file():
        with open(side, "rb") as fh:
            paths = [os.fsdecode(ln.rstrip(b"\r")) for ln in fh.read().split(b"\n")[:-1]]
        if len(paths) != arr.shape[0]:
            raise UsageError(f"{side} lists {len(paths)} paths for {arr.shape[0]} rows of {path}")
    source = ArraySource(str(path), arr, paths)  # type: ignore[arg-type]
    tags = labels_sidecar(path)  # embed --labels wrote one label per row beside the array
    if tags.is_file():
        labels = tags.read_text(encoding="utf-8").split("\n")[:-1]
        if len(labels) != arr.shape[0]:
            raise UsageError(f"{tags} lists {len(labels)} labels for {arr.shape[0]} rows of {path}")
        source.labels = labels
    return source


# -- .jsonl --------------------------------------------------------------------------------------------

class JsonlSource(Source):
    """``{"feature": [...], "input_path": ..., "label": ...}`` per line, parsed a chunk at a time."""

    def __init__(self, path: Path, rows: int, dim: int, has_labels: bool) -> None:
        super().__init__(str(path), rows, dim)
        self.path, self.has_labels = path, has_labels

    def _raw_chunks(self) -> Iterator[Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]]:
        rows: List[Any] = []
        for no, rec in _jsonl_records(self.path, self.dim):
            rows.append((no, rec))
            if len(rows) == CHUNK:
                yield self._chunk(rows)
                rows = []
        if rows:
            yield self._chunk(rows)

    def _chunk(self, rows: List[Any]) -> Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]:
        with np.errstate(over="ignore"):
            feats = np.asarray([r["feature"] for _, r in rows], dtype=np.float32)
        feats = checked(feats, lambda i: f"{self.path}:{rows[i][0]}:")
        labels = [None if r.get("label") is None else str(r.get("label")) for _, r in rows] if self.has_labels else None
        return feats, labels, [r.get("input_path") for _, r in rows]


def _jsonl_records(path: Path, dim: int) -> Iterator[Tuple[int, Dict[str, Any]]]:
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                vec = rec["feature"]
            except (ValueError, TypeError, KeyError):
                raise UsageError(f"{path}:{no}: not a JSON object with a \"feature\" list") from None
            if not isinstance(vec, list) or len(vec) != dim or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in vec):
                raise UsageError(f"{path}:{no}: \"feature\" must be a list of {dim} numbers")
            yield no, rec


def open_jsonl(path: Path) -> JsonlSource:
    rows, first = 0, None
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                rows += 1
                if first is None:
                    try:
                        first = json.loads(raw)
                        dim = len(first["feature"])
                    except (ValueError, TypeError, KeyError):
                        raise UsageError(f"{path}: the first record is not a JSON object with a \"feature\" list") from None
    if not rows:
        raise UsageError(f"{path} holds no features")
    return JsonlSource(path, rows, dim, "label" in first)


# -- opening -----------------------------------------------------------------------------------------

def open_source(spec: str, labels_file: Optional[str] = None, label_from: str = "column") -> Source:
    """The streamed gallery ``spec`` with its labels settled (before any vector is read)."""
    if label_from not in LABEL_FROM:
        raise UsageError(f"Index.label_from must be one of {', '.join(LABEL_FROM)}, got {label_from!r}")
    path = Path(spec)
    if is_uri(spec) or path.is_dir() or path.suffix.lower() == ".parquet":
        if not is_uri(spec) and not path.exists():
            raise UsageError(f"gallery {spec} does not exist")
        source: Source = open_parquet(spec)
        has_labels = "label" in getattr(source, "columns", [])
    elif not path.exists():
        raise UsageError(f"gallery {spec} does not exist",
                         hint="pass a 'path label' list, a dataset folder, an embeddings file or a Parquet folder")
    elif not path.is_file():
        raise UsageError(f"gallery {spec} is not a regular file")
    elif path.suffix.lower() == ".npy":
        source = open_npy(path)
        has_labels = source.labels is not None
    else:
        source = open_jsonl(path)
        has_labels = source.has_labels  # type: ignore[attr-defined]
    source.label_from = label_from
    if labels_file:
        source.labels = read_label_lines(labels_file, source.rows, spec)
    elif label_from == "column" and not has_labels:
        raise UsageError(f"{spec} has no labels", hint="embeddings need a \"label\" per row, or --labels FILE (one "
                         "label per line), or -o Index.label_from=folder (the input's folder name) or =path")
    return source


def recorded(spec: str, source: Source) -> Optional[Dict[str, Any]]:
    """The model record of a streamed gallery: what its files say (the output's config file, or
    the Parquet metadata: the model's identity and where it came from), with the feature width."""
    from imgfeat_cli.common.remote import is_uri
    from imgfeat_cli.pipeline.readers import recorded_model

    found = None if is_uri(spec) else recorded_model(Path(spec))
    found = found or source.model
    return dict(found, dim=source.dim) if found else None
