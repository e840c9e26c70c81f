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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.remote import check_reachable, describe_error, is_uri, iter_files, resolve, uri_of

#: Rows per chunk read from a source.
CHUNK = 4096
LABEL_FROM = ("column", "folder", "path")

Chunk = Tuple[np.ndarray, List[str], List[Optional[str]]]


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
                labels = [_label_of(p, self.label_from, self.origin) for p in paths]
            if labels is not None and self.labels is None:
                labels = [shared.setdefault(v, v) if v is not None else None for v in labels]
            start += len(feats)
            yield feats, labels, paths  # type: ignore[misc]

    def _raw_chunks(self) -> Iterator[Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]]:
        raise NotImplementedError


def _label_of(path: Optional[str], how: str, origin: str) -> str:
    if not path:
        raise UsageError(f"{origin}: a row has no input path to take its label from (Index.label_from={how})",
                         hint="use --labels FILE or a label column")
    if how == "path":
        return path
    parent = path.replace("\\", "/").rstrip("/").rsplit("/", 2)
    return parent[-2] if len(parent) >= 2 and parent[-2] else path


def _checked(feats: np.ndarray, where: Callable[[int], str]) -> np.ndarray:
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(feats, dtype=np.float32)
    bad = bad_rows(arr)
    if bad:
        more = f" ({bad[2]} rows in this chunk)" if bad[2] > 1 else ""
        raise UsageError(f"{where(bad[0])} {bad[1]}{more}", hint="re-embed those inputs, or drop them from the gallery")
    return arr


# -- Parquet (a file or a folder, any filesystem) -----------------------------------------------------

@dataclass
class _ParquetFile:
    name: str  # user-facing
    path: str
    rows: int  # feature rows (failed rows excluded)


class ParquetSource(Source):
    """One Parquet file or a folder of them (names starting with ``.``/``_`` skipped)."""

    def __init__(self, origin: str, filesystem: Any, files: List[_ParquetFile], dim: int,
                 columns: Sequence[str], model: Optional[Dict[str, Any]]) -> None:
        super().__init__(origin, sum(f.rows for f in files), dim, model)
        self.fs, self.files, self.columns = filesystem, files, list(columns)

    def _raw_chunks(self) -> Iterator[Tuple[np.ndarray, Optional[List[str]], List[Optional[str]]]]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for f in self.files:
            seen = 0
            try:
                with self.fs.open_input_file(f.path) as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(batch_size=CHUNK, columns=self.columns):
                        if "error" in self.columns:
                            batch = batch.filter(pc.is_null(batch.column("error")))
                        feats = _feature_array(batch.column("feature"), self.dim, f.name, seen)
                        yield (_checked(feats, lambda r, s=seen: f"{f.name}: row {s + r + 1}"),
                               _strings(batch, "label"), _strings(batch, "input_path") or [None] * batch.num_rows)
                        seen += batch.num_rows
            except OSError as exc:
                raise describe_error(f.name, exc) from None
            except (ValueError, KeyError) as exc:  # ArrowInvalid: a damaged page, a file changed since listed
                raise UsageError(f"{f.name} is not a readable Parquet file ({str(exc)[:80]})",
                                 hint="re-create it, or move it out of the folder") from None
            _release_arrow_memory()


def _release_arrow_memory() -> None:
    """Give the decoded row groups of a file back to the system (Arrow's pool keeps them otherwise)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _strings(batch: Any, name: str) -> Optional[List[Any]]:
    if name not in batch.schema.names:
        return None
    values = batch.column(name).to_pylist()
    return [None if v is None else str(v) for v in values]


def _feature_array(col: Any, dim: int, name: str, seen: int) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.null_count:
        row = int(np.flatnonzero(np.asarray(col.is_null()))[0])
        raise UsageError(f"{name}: row {seen + row + 1} has no feature (null)", hint="re-embed that input, or drop it")
    if pa.types.is_fixed_size_list(col.type):
        flat = col.flatten()
    else:
        lengths = np.asarray(pc.list_value_length(col))
        wrong = np.flatnonzero(lengths != dim)
        if wrong.size:
            raise UsageError(f"{name}: row {seen + int(wrong[0]) + 1} has {lengths[wrong[0]]} values, not {dim}")
        flat = col.flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(len(col), dim)


def _parquet_dim(schema: Any, name: str) -> int:
    import pyarrow as pa

    if "feature" not in schema.names:
        raise UsageError(f"{name} has no \"feature\" column", hint=f"columns: {', '.join(schema.names)}")
    kind = schema.field("feature").type
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return -1  # known from the first row
    raise UsageError(f"{name}: \"feature\" is {kind}, not a list of numbers")


def _ok_rows(pf: Any, schema: Any) -> int:
    """Rows with a feature: all, less those with an ``error`` (from the statistics when present)."""
    meta = pf.metadata
    if "error" not in schema.names:
        return meta.num_rows
    col = schema.names.index("error")
    nulls = 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is None or not stats.has_null_count:
            return int(pf.read(columns=["error"]).column(0).null_count)
        nulls += stats.null_count
    return nulls


def open_parquet(location: str) -> ParquetSource:
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem, root = resolve(location)
    info = check_reachable(location, filesystem, root) if is_uri(location) else filesystem.get_file_info(root)
    try:
        if info.type == pafs.FileType.Directory:
            infos = list(iter_files(filesystem, root, ".parquet"))
            if not infos:
                raise UsageError(f"{location} is a folder without .parquet files",
                                 hint="pass a folder of Parquet files (imgfeat embed --engine ray writes one), "
                                      "or a .jsonl/.npy/.parquet file")
        elif info.type == pafs.FileType.NotFound:
            raise UsageError(f"gallery {location} does not exist")
        else:
            infos = [info]
        files, dims, model, columns = [], set(), None, None
        for i in infos:
            name = uri_of(location, i.path) if is_uri(location) else i.path
            try:
                with filesystem.open_input_file(i.path) as fh:
                    pf = pq.ParquetFile(fh)
                    schema = pf.schema_arrow
                    dim = _parquet_dim(schema, name)
                    if dim < 0:
                        first = pf.read_row_group(0, columns=["feature"]).column(0).drop_null()
                        dim = len(first[0]) if len(first) else 0
                    ok = _ok_rows(pf, schema)
                    meta = json.loads((schema.metadata or {}).get(b"imgfeat", b"{}") or b"{}")
            except (ValueError, KeyError, IndexError) as exc:  # ArrowInvalid: not Parquet, truncated
                raise UsageError(f"{name} is not a readable Parquet file ({str(exc)[:80]})",
                                 hint="move it out of the folder, or re-create it") from None
            if ok:
                dims.add(dim)
                files.append(_ParquetFile(name, i.path, ok))
                model = model or (meta.get("model") if isinstance(meta, dict) else None)
                names = [c for c in ("feature", "label", "input_path", "error") if c in schema.names]
                columns = names if columns is None else [c for c in columns if c in names]
    except OSError as exc:
        raise describe_error(location, exc) from None
    if not files:
        raise UsageError(f"gallery {location} holds no features", hint="every row failed or the files are empty")
    if len(dims) > 1:
        raise UsageError(f"{location}: its files hold features of different lengths ({', '.join(map(str, sorted(dims)))})")
    return ParquetSource(location, filesystem, files, dims.pop(), columns or ["feature"], model)


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
            feats = _checked(self.array[start:stop], lambda r, s=start: f"{self.origin}: row {s + r + 1}")
            yield feats, None, self.paths[start:stop] if self.paths is not None else [None] * (stop - start)


def open_npy(path: Path) -> ArraySource:
    from imgfeat_cli.pipeline.formats import paths_sidecar

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable numeric .npy file ({str(exc)[:80]})") from None
    if arr.ndim != 2 or arr.dtype.kind not in "fiu" or not arr.shape[0]:
        raise UsageError(f"{path} holds a {arr.dtype} array of shape {arr.shape}; expected (N, D) numbers, N > 0")
    side = paths_sidecar(path)
    paths = None
    if side.is_file():
        with open(side, "rb") as fh:
            paths = [os.fsdecode(ln.rstrip(b"\r")) for ln in fh.read().split(b"\n")[:-1]]
        if len(paths) != arr.shape[0]:
            raise UsageError(f"{side} lists {len(paths)} paths for {arr.shape[0]} rows of {path}")
    return ArraySource(str(path), arr, paths)  # type: ignore[arg-type]


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
        feats = _checked(feats, lambda i: f"{self.path}:{rows[i][0]}:")
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
        source, has_labels = open_npy(path), False
    else:
        source = open_jsonl(path)
        has_labels = source.has_labels  # type: ignore[attr-defined]
    source.label_from = label_from
    if labels_file:
        source.labels = read_labels(labels_file, source.rows, spec)
    elif label_from == "column" and not has_labels:
        raise UsageError(f"{spec} has no labels", hint="embeddings need a \"label\" per row, or --labels FILE (one "
                         "label per line), or -o Index.label_from=folder (the input's folder name) or =path")
    return source


def read_labels(labels_file: str, rows: int, spec: str) -> List[str]:
    """One label per non-blank line, as many as the gallery has feature rows."""
    p = Path(labels_file)
    if not p.is_file():
        raise UsageError(f"labels file {labels_file} {'is a folder' if p.is_dir() else 'does not exist'}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{labels_file} is not UTF-8 text (byte {exc.start})") from None
    labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(labels) != rows:
        raise UsageError(f"{labels_file} has {len(labels)} labels for {rows} features in {spec}",
                         hint="one label per feature row, in the gallery's row order")
    return labels
