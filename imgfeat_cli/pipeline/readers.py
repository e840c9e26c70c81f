"""Reading feature files back: imgfeat's own outputs (and files shaped like them) as one table.

:func:`read_features` serves ``eval``, ``index`` and ``search`` (``.jsonl``, ``.npy`` with its
``.paths.txt``, ``.parquet``); :func:`unpack_to_part` turns a finished output back into part files
so that ``embed --resume`` can add to it. Bad content is named by file and row, never guessed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, List, Optional

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.pipeline.formats import labels_sidecar, paths_sidecar


@dataclass
class FeatureTable:
    """Rows of a feature file: ``features`` (N, D) float32, ``paths`` (or ``None`` when the file
    has none), ``columns``: any other per-row values (e.g. ``label``), by name, and ``lines``:
    the file line of each row where that differs from the row number (JSONL with blank lines)."""

    features: np.ndarray
    paths: Optional[List[str]]
    columns: Dict[str, List[Any]] = field(default_factory=dict)
    lines: Optional[List[int]] = None
    #: the model that made the rows, as the file records it (``None``: not recorded): its identity
    #: and, under ``source``, where it came from
    model: Optional[Dict[str, Any]] = None

    def where(self, row: int) -> str:
        """How an error names row ``row`` (0-based): ``line N`` for JSONL, else ``row N``."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row {row + 1}"


def read_features(path: str) -> FeatureTable:
    """Read ``.jsonl``, ``.npy`` (+ ``.paths.txt`` when present) or ``.parquet`` features, or a
    folder of ``.parquet`` files (``imgfeat embed --engine ray``, Ray's or Spark's ``write_parquet``)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"feature file {path} does not exist")
    suffix = p.suffix.lower()
    if p.is_dir():
        table = _read_parquet_folder(p)
    elif not p.is_file():
        raise UsageError(f"feature file {path} is not a regular file")
    elif suffix == ".jsonl":
        table = _read_jsonl(p)
    elif suffix == ".npy":
        table = _read_npy(p)
    elif suffix == ".parquet":
        table = _read_parquet(p)
    else:
        raise UsageError(f"cannot read features from {path}", hint="use .jsonl, .npy or .parquet")
    _check_values(table, path)
    table.model = recorded_model(p)
    return table


def read_output_identity(config_file: Path) -> Optional[Dict[str, Any]]:
    """The ``Output`` section of a finished output's config file (``FILE.config.yaml``, a folder's
    ``_imgfeat.yaml``): format, dtype, dim, model; ``None`` if absent or unreadable."""
    import yaml

    try:
        doc = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    out = doc.get("Output") if isinstance(doc, dict) else None
    return out if isinstance(out, dict) else None


def recorded_model(p: Path) -> Optional[Dict[str, Any]]:
    """The model identity a feature file records: its config file's ``Output.model``, or for
    Parquet the schema metadata imgfeat writes (files made by other tools record none)."""
    config = p / "_imgfeat.yaml" if p.is_dir() else p.with_name(p.name + ".config.yaml")
    output = read_output_identity(config) or {}
    if not isinstance(output.get("model"), dict) and p.is_file() and p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            meta = json.loads((pq.read_schema(str(p)).metadata or {}).get(b"imgfeat", b"{}"))
        except (OSError, ValueError):
            return None
        output = meta if isinstance(meta, dict) else {}
    model = output.get("model")
    if not isinstance(model, dict):
        return None
    source = output.get("model_source")
    return {**model, "source": source} if isinstance(source, dict) else dict(model)


def _read_jsonl(p: Path) -> FeatureTable:
    feats: List[Any] = []
    paths: List[Optional[str]] = []
    extras: List[Dict[str, Any]] = []
    lines: List[int] = []
    with open(p, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
                vec = rec.pop("feature")
            except KeyError:
                raise UsageError(f"{p}:{no}: no \"feature\" key") from None
            except ValueError as exc:
                raise UsageError(f"{p}:{no}: not a JSON object ({str(exc)[:80]})") from None
            if not isinstance(vec, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vec):
                raise UsageError(f"{p}:{no}: \"feature\" must be a list of numbers")
            if feats and len(vec) != len(feats[0]):
                raise UsageError(f"{p}:{no}: {len(vec)} values, but line {lines[0]} has {len(feats[0])}")
            feats.append(vec)
            paths.append(rec.pop("input_path", None))
            extras.append(rec)
            lines.append(no)
    if not feats:
        raise UsageError(f"{p} holds no features")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused with their line below
        arr = np.asarray(feats, dtype=np.float32)
    columns = {key: [e.get(key) for e in extras] for key in dict.fromkeys(k for e in extras for k in e)}
    return FeatureTable(arr, paths if all(x is not None for x in paths) else None, columns, lines)  # type: ignore[arg-type]


def _read_npy(p: Path) -> FeatureTable:
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise UsageError(f"{p} is not a numeric .npy array ({str(exc)[:80]})") from None
    except (OSError, EOFError) as exc:
        raise UsageError(f"{p} is not a readable .npy file ({str(exc)[:80]})") from None
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise UsageError(f"{p} holds a {arr.dtype} array of shape {arr.shape}; expected (N, D) numbers")
    side = paths_sidecar(p)
    paths = None
    if side.is_file():
        with open(side, "rb") as fh:
            paths = [os.fsdecode(ln.rstrip(b"\r\n")) for ln in fh.read().split(b"\n")[:-1]] if side.stat().st_size else []
        if len(paths) != arr.shape[0]:
            raise UsageError(f"{side} lists {len(paths)} paths for {arr.shape[0]} rows of {p}")
    columns = {}
    tags = labels_sidecar(p)
    if tags.is_file():
        labels = tags.read_text(encoding="utf-8").split("\n")[:-1]
        if len(labels) != arr.shape[0]:
            raise UsageError(f"{tags} lists {len(labels)} labels for {arr.shape[0]} rows of {p}")
        columns["label"] = labels
    return FeatureTable(np.asarray(arr, dtype=np.float32), paths, columns)


def parquet_files(folder: Path) -> List[Path]:
    """The data files of a Parquet folder, sorted: ``*.parquet``, skipping names that start with
    ``.`` or ``_`` (files being written, metadata), as Ray, Spark and pyarrow do."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() == ".parquet" and f.is_file()
                  and not f.name.startswith((".", "_")))


def _read_parquet_folder(p: Path) -> FeatureTable:
    files = parquet_files(p)
    if not files:
        raise UsageError(f"{p} is a folder without .parquet files",
                         hint="pass a feature file (.jsonl, .npy, .parquet) or a folder of .parquet files")
    parts = [_read_parquet(f) for f in files]
    parts = [t for t in parts if t.features.shape[0]] or parts[:1]
    dims = {t.features.shape[1] for t in parts}
    if len(dims) > 1:
        raise UsageError(f"{p}: its files hold features of different lengths ({', '.join(map(str, sorted(dims)))})")
    paths = None if any(t.paths is None for t in parts) else [x for t in parts for x in t.paths or []]
    names = {name for t in parts for name in t.columns}
    columns = {name: [v for t in parts for v in t.columns.get(name, [None] * t.features.shape[0])] for name in names}
    return FeatureTable(np.concatenate([t.features for t in parts]), paths, columns)


def _read_parquet(p: Path) -> FeatureTable:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(p))
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"{p} is not a readable Parquet file ({str(exc)[:80]})") from None
    if "error" in table.column_names:  # the Ray engine's rows of inputs that failed: not features
        table = table.filter(pc.is_null(table.column("error"))).drop_columns(["error"])
    if "feature" not in table.column_names:
        raise UsageError(f"{p} has no \"feature\" column", hint=f"columns: {', '.join(table.column_names)}")
    col = table.column("feature").combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) and not pa.types.is_list(col.type):
        raise UsageError(f"{p}: \"feature\" is {col.type}, not a list of numbers")
    lengths = {len(v) for v in col.to_pylist()[:1]} if pa.types.is_list(col.type) else {col.type.list_size}
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    dim = lengths.pop() if lengths else 0
    if table.num_rows and flat.size != table.num_rows * dim:
        raise UsageError(f"{p}: \"feature\" rows have different lengths")
    feats = flat.reshape(table.num_rows, dim)
    paths = table.column("input_path").to_pylist() if "input_path" in table.column_names else None
    others = {name: table.column(name).to_pylist() for name in table.column_names if name not in ("feature", "input_path")}
    return FeatureTable(feats, paths, others)


def _check_values(table: FeatureTable, path: str) -> None:
    """Refuse rows no similarity can be computed from."""
    feats = table.features
    if feats.shape[0] == 0:
        raise UsageError(f"{path} holds no features")
    for mask, what in ((~np.isfinite(feats).all(axis=1), "holds NaN or infinity"), (~feats.any(axis=1), "is all zeros")):
        bad = np.flatnonzero(mask)
        if bad.size:
            name = table.where(int(bad[0]))
            more = f" ({bad.size} rows in all)" if bad.size > 1 else ""
            raise UsageError(f"{path}: {name} {what}{more}", hint="re-embed those inputs, or drop them")


def unpack_to_part(out: Path, fmt: str, dtype: np.dtype, fh: IO[bytes], part: Any, dim: Optional[int]) -> None:
    """Write a finished output's rows into an (empty, locked) part, so a resume can append."""
    if fmt == "jsonl":
        with open(out, "rb") as src:
            while chunk := src.read(1 << 20):
                fh.write(chunk)
    elif fmt == "npy":
        arr = np.load(out, mmap_mode="r", allow_pickle=False)
        if arr.dtype != dtype:
            raise UsageError(f"{out} holds {arr.dtype} features; resume with the same precision (--fp16 or not)")
        for start in range(0, arr.shape[0], 4096):
            fh.write(np.ascontiguousarray(arr[start:start + 4096]).tobytes())
        sidecars = [(paths_sidecar(out), part.paths_part)]
        if part.labeled:
            sidecars.append((labels_sidecar(out), part.labels_part))
        for side, side_part in sidecars:
            with open(side, "rb") as src, open(side_part, "wb") as dst:
                dst.write(src.read())
    else:
        import pyarrow.parquet as pq

        schema = None
        for batch in pq.ParquetFile(str(out)).iter_batches():
            if schema is None:
                schema = batch.schema
                fh.write(schema.serialize().to_pybytes())
            fh.write(batch.serialize().to_pybytes())
    fh.flush()
