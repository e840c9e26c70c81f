"""Parquet galleries: one file or a folder of them (``imgfeat embed --engine ray``'s output,
Spark's, pandas'), local or on any pyarrow filesystem (``s3://bucket/prefix/``), read a chunk at a
time. Rows the Ray engine wrote for failed inputs (an ``error``, no feature) are skipped."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError, first_sentence
from imgfeat_cli.common.remote import check_reachable, describe_error, is_uri, iter_files, resolve, uri_of
from imgfeat_cli.retrieval.streamsource import CHUNK, Source, checked

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
                        yield (checked(feats, lambda r, s=seen: f"{f.name}: row {s + r + 1}"),
                               _strings(batch, "label"), _strings(batch, "input_path") or [None] * batch.num_rows)
                        seen += batch.num_rows
            except OSError as exc:
                raise describe_error(f.name, exc) from None
            except (ValueError, KeyError) as exc:  # ArrowInvalid: a damaged page, a file changed since listed
                raise UsageError(f"{f.name} is not a readable Parquet file ({first_sentence(exc)})",
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


def _what_is_there(filesystem: Any, root: str) -> str:
    """What a folder without readable Parquet files holds instead, for the error: hidden Parquet files
    (``_``/``.``, skipped as Spark and pyarrow do) and sub-folders (partitions are not read)."""
    from pyarrow import fs as pafs

    entries = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    hidden = sorted(e.base_name for e in entries
                    if e.base_name.lower().endswith(".parquet") and e.base_name.startswith((".", "_")))
    folders = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)
    said = ([f"hidden files are skipped: {', '.join(hidden[:3])}"] if hidden else []) + \
        ([f"sub-folders are not read: {', '.join(folders[:3])}"] if folders else [])
    return f" ({'; '.join(said)})" if said else ""


def open_parquet(location: str) -> ParquetSource:
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem, root = resolve(location)
    info = check_reachable(location, filesystem, root) if is_uri(location) else filesystem.get_file_info(root)
    try:
        if info.type == pafs.FileType.Directory:
            infos = list(iter_files(filesystem, root, ".parquet"))
            if not infos:
                raise UsageError(f"{location} is a folder without .parquet files{_what_is_there(filesystem, root)}",
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
                raise UsageError(f"{name} is not a readable Parquet file ({first_sentence(exc)})",
                                 hint="move it out of the folder, or re-create it") from None
            except OSError as exc:  # this file's (unreadable, gone since listed), named as such
                raise describe_error(name, exc) from None
            if ok:
                dims.add(dim)
                files.append(_ParquetFile(name, i.path, ok))
                model = model or _model_of(meta)
                names = [c for c in ("feature", "label", "input_path", "error") if c in schema.names]
                columns = names if columns is None else [c for c in columns if c in names]
    except OSError as exc:
        raise describe_error(location, exc) from None
    if not files:
        raise UsageError(f"gallery {location} holds no features", hint="every row failed or the files are empty")
    if len(dims) > 1:
        raise UsageError(f"{location}: its files hold features of different lengths ({', '.join(map(str, sorted(dims)))})")
    return ParquetSource(location, filesystem, files, dims.pop(), columns or ["feature"], model)


def _model_of(meta: Any) -> Optional[Dict[str, Any]]:
    """The model an imgfeat Parquet file's metadata records: its identity, and where it came from."""
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict):
        return None
    source = meta.get("model_source")
    return {**model, "source": source} if isinstance(source, dict) else dict(model)
