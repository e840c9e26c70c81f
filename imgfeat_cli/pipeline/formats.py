"""The three feature file formats: how rows are appended while a run is going, how an interrupted
run is read back for resume, how the finished file is produced, and how any of them is read.

* ``.jsonl``: one ``{"input_path": ..., "feature": [...]}`` per line; floats in the shortest form
  that reads back to the identical float32 (or float16). The part file *is* the final file.
* ``.npy``: an ``(N, D)`` array plus ``FILE.paths.txt`` (one input path per row). While running,
  raw rows go to ``FILE.part`` and paths to ``FILE.paths.txt.part``; the header is written at the
  end, so memory stays constant.
* ``.parquet``: columns ``input_path`` (string) and ``feature`` (fixed-size list of float32 or
  float16), the model identity in the schema metadata (key ``imgfeat``), readable by pandas, DuckDB,
  Spark and Ray. While running, record batches are appended to an Arrow IPC stream (``FILE.part``),
  which stays readable up to its last complete batch after a crash; the end converts it to Parquet
  row groups, streaming.

With labels (``embed --labels``) every row also carries its ``label``: a JSONL key (between
``input_path`` and ``feature``), a Parquet column, or ``FILE.labels.txt`` beside an ``.npy``
(one per row). ``eval``, ``index build`` and ``search --report`` read them back.

Any file name survives: JSONL escapes what is not UTF-8 (``\\udcXX``, read back to the same
name); ``.paths.txt`` holds the raw bytes of the name (like ``find`` prints them) and cannot hold a
newline; Parquet strings must be UTF-8. A name a format cannot store is refused for that one input
(:meth:`PartFile.cannot_store`), never written wrongly.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Set

import numpy as np

from imgfeat_cli.common.errors import UsageError

FORMATS = ("jsonl", "npy", "parquet")
ROW_GROUP = 65536  # rows per Parquet row group


def output_format(out: str, fmt: Optional[str]) -> str:
    """The format named by ``fmt`` or by the file extension."""
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise UsageError(f"cannot tell the output format from {out!r}",
                     hint="name the file .jsonl, .npy or .parquet, or pass --format")


def paths_sidecar(out: Path) -> Path:
    """``feats.npy`` -> ``feats.paths.txt`` (the input paths, one per row, same order)."""
    return out.with_name(out.stem + ".paths.txt")


def labels_sidecar(out: Path) -> Path:
    """``feats.npy`` -> ``feats.labels.txt`` (the labels, one per row, same order)."""
    return out.with_name(out.stem + ".labels.txt")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_path(path: str) -> str:
    """A path as a JSON string: readable UTF-8, with undecodable bytes escaped (lossless)."""
    return json.dumps(path, ensure_ascii=not _is_utf8(path))


class PartFile:
    """Rows of one output while its run is going (``FILE.part``), and the final file from them."""

    def __init__(self, out: Path, dtype: np.dtype, labeled: bool = False) -> None:
        self.out, self.dtype = out, np.dtype(dtype)
        self.part = out.with_name(out.name + ".part")
        self.rows = 0
        self.labeled = labeled  # rows carry a label (write() gets one per path)

    def extra_parts(self) -> List[Path]:
        """Part files besides :attr:`part` (removed with it)."""
        return []

    def cannot_store(self, path: str) -> Optional[str]:
        """Why this format cannot store ``path`` as an input name (``None`` when it can)."""
        return None

    def final_files(self) -> Dict[Path, Path]:
        """part file -> final file, for the publish step."""
        return {self.part: self.out}


class JsonlPart(PartFile):
    def open(self, fh: IO[bytes], resume: bool, dim: Optional[int]) -> Set[str]:
        """Read back a resumed part (cutting a torn last line), then append to ``fh``."""
        self.fh = fh
        done: Set[str] = set()
        if not resume:
            return done
        fh.seek(0)
        good = 0
        decoder = json.JSONDecoder()
        for no, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):  # the torn last record of an interrupted run
                break
            done.add(_parse_jsonl_record(raw, decoder, dim, self.part, no))
            good += len(raw)
            self.rows += 1
        fh.truncate(good)
        fh.seek(good)
        return done

    def write(self, paths: List[str], feats: np.ndarray, labels: Optional[List[str]] = None) -> None:
        rows = feats.astype(self.dtype, copy=False)
        tags = [', "label": ' + json.dumps(lab, ensure_ascii=False) for lab in labels] if labels else [""] * len(paths)
        text = "".join('{"input_path": ' + json_path(p) + t + ', "feature": [' + ", ".join(map(str, r)) + "]}\n"
                       for p, t, r in zip(paths, tags, rows))
        self.fh.write(text.encode("utf-8"))
        self.fh.flush()
        self.rows += len(paths)

    def finish(self) -> None:
        """The part is already the final content."""


def _parse_jsonl_record(raw: bytes, decoder: json.JSONDecoder, dim: Optional[int], part: Path, no: int) -> str:
    """The input path of one complete line written by :class:`JsonlPart` (else a usage error
    naming the line: anything but a torn last line means the file is not what it should be)."""
    text = raw.decode("utf-8", errors="replace")
    head, tail = '{"input_path": ', "]}\n"
    try:
        if not (text.startswith(head) and text.endswith(tail)):
            raise ValueError("not an imgfeat record")
        path, end = decoder.raw_decode(text, len(head))
        if isinstance(path, str) and text.startswith(', "label": ', end):
            label, end = decoder.raw_decode(text, end + len(', "label": '))
            if not isinstance(label, str):
                raise ValueError("its label is not a string")
        if not isinstance(path, str) or not text.startswith(', "feature": [', end):
            raise ValueError("not an imgfeat record")
        values = text[end + len(', "feature": ['):-len(tail)]
        if dim is not None and values.count(",") != dim - 1:
            raise ValueError(f"{values.count(',') + 1} values, expected {dim}")
    except ValueError as exc:
        raise UsageError(f"{part}:{no}: cannot resume: line {no} is damaged ({exc}); the file was left as it was",
                         hint="fix or delete that line, or pass --overwrite to start over") from None
    return path


class NpyPart(PartFile):
    def __init__(self, out: Path, dtype: np.dtype, labeled: bool = False) -> None:
        super().__init__(out, dtype, labeled)
        self.paths_out = paths_sidecar(out)
        self.paths_part = self.paths_out.with_name(self.paths_out.name + ".part")
        self.labels_out = labels_sidecar(out)
        self.labels_part = self.labels_out.with_name(self.labels_out.name + ".part")
        self.dim: Optional[int] = None

    def extra_parts(self) -> List[Path]:
        return [self.paths_part] + ([self.labels_part] if self.labeled else [])

    def cannot_store(self, path: str) -> Optional[str]:
        if "\n" in path or "\r" in path:
            return "the file name holds a line break, which FILE.paths.txt cannot store: use .jsonl or .parquet output"
        return None

    def open(self, fh: IO[bytes], resume: bool, dim: Optional[int]) -> Set[str]:
        self.fh, self.dim = fh, dim
        mode = "r+b" if resume and self.paths_part.exists() else "w+b"
        self.ph = open(self.paths_part, mode)
        self.lh = open(self.labels_part, "r+b" if mode == "r+b" and self.labels_part.exists() else "w+b") \
            if self.labeled else None
        if not resume:
            fh.truncate(0)
            return set()
        names = self.ph.read().split(b"\n")[:-1] if mode == "r+b" else []
        tags = self.lh.read().split(b"\n")[:-1] if self.lh is not None else names
        rowbytes = (dim or 0) * self.dtype.itemsize
        on_disk = os.fstat(fh.fileno()).st_size // rowbytes if rowbytes else 0
        keep = min(len(names), len(tags), on_disk)  # a batch cut in the middle: keep the rows that have all
        fh.truncate(keep * rowbytes)
        fh.seek(keep * rowbytes)
        for handle, lines in ((self.ph, names), (self.lh, tags)):
            if handle is not None:
                handle.seek(0)
                handle.truncate(0)
                handle.write(b"".join(n + b"\n" for n in lines[:keep]))
                handle.flush()
        self.rows = keep
        return {os.fsdecode(n) for n in names[:keep]}

    def write(self, paths: List[str], feats: np.ndarray, labels: Optional[List[str]] = None) -> None:
        self.dim = int(feats.shape[1])
        self.fh.write(np.ascontiguousarray(feats, dtype=self.dtype).tobytes())
        self.fh.flush()
        self.ph.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
        self.ph.flush()
        if self.lh is not None:
            self.lh.write(b"".join(" ".join(str(lab).split()).encode("utf-8") + b"\n" for lab in labels or []))
            self.lh.flush()
        self.rows += len(paths)

    def final_files(self) -> Dict[Path, Path]:
        labels = {self.labels_part: self.labels_out} if self.labeled else {}
        return {self.staged: self.out, self.paths_part: self.paths_out, **labels}

    def finish(self) -> None:
        """Write the ``.npy`` (header, then the rows streamed from the part) beside the part."""
        self.staged = self.out.with_name(self.out.name + ".part.npy")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, self.dim or 0)}
        with open(self.staged, "wb") as out, open(self.part, "rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        self.close()

    def close(self) -> None:
        for handle in (getattr(self, "ph", None), getattr(self, "lh", None)):
            if handle is not None and not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()


class ParquetPart(PartFile):
    def __init__(self, out: Path, dtype: np.dtype, metadata: Optional[Dict[str, Any]] = None,
                 labeled: bool = False) -> None:
        super().__init__(out, dtype, labeled)
        self.metadata = metadata or {}

    def cannot_store(self, path: str) -> Optional[str]:
        return parquet_cannot_store(path)

    def schema(self, dim: int) -> Any:
        return parquet_schema(dim, self.dtype, self.metadata, with_label=self.labeled)

    def open(self, fh: IO[bytes], resume: bool, dim: Optional[int]) -> Set[str]:
        import pyarrow as pa

        self.fh, self.dim = fh, dim
        done: Set[str] = set()
        good = 0
        if resume:
            fh.seek(0)
            try:
                reader = pa.ipc.open_stream(fh)
                good = fh.tell()
                for batch in reader:
                    done.update(batch.column(0).to_pylist())
                    self.rows += batch.num_rows
                    good = fh.tell()
            except (pa.ArrowInvalid, OSError, EOFError):  # the torn last batch of an interrupted run
                pass
        fh.truncate(good)
        fh.seek(good)
        return done

    def write(self, paths: List[str], feats: np.ndarray, labels: Optional[List[str]] = None) -> None:
        """Append one record batch message (the schema message first, into an empty part): the
        encapsulated IPC messages of ``serialize()`` are exactly what a stream writer emits, so a
        resumed part simply continues after its last complete batch."""
        import pyarrow as pa

        self.dim = int(feats.shape[1])
        schema = self.schema(self.dim)
        values = pa.array(np.ascontiguousarray(feats, dtype=self.dtype).reshape(-1))
        columns = [pa.array(paths, pa.string()), pa.FixedSizeListArray.from_arrays(values, self.dim)]
        if self.labeled:
            columns.append(pa.array(list(labels or []), pa.string()))
        batch = pa.record_batch(columns, schema=schema)
        if self.fh.tell() == 0:
            self.fh.write(schema.serialize().to_pybytes())
        self.fh.write(batch.serialize().to_pybytes())
        self.fh.flush()
        self.rows += len(paths)

    def final_files(self) -> Dict[Path, Path]:
        return {self.staged: self.out}

    def finish(self) -> None:
        """Convert the IPC stream to Parquet, batch by batch (row groups of :data:`ROW_GROUP`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.staged = self.out.with_name(self.out.name + ".part.parquet")
        self.fh.flush()
        schema = self.schema(self.dim or 0)
        with pq.ParquetWriter(str(self.staged), schema) as writer, open(self.part, "rb") as src:
            if os.fstat(src.fileno()).st_size:
                for batch in pa.ipc.open_stream(src):
                    writer.write_batch(batch, row_group_size=ROW_GROUP)
        with open(self.staged, "rb") as fh:
            os.fsync(fh.fileno())


def parquet_cannot_store(path: str) -> Optional[str]:
    """Why Parquet cannot store ``path`` as an input name (``None`` when it can)."""
    if not _is_utf8(path):
        return "the file name is not valid UTF-8, which Parquet strings cannot store: use .jsonl output"
    return None


def parquet_schema(dim: int, dtype: Any, metadata: Optional[Dict[str, Any]] = None, with_error: bool = False,
                   with_label: bool = False) -> Any:
    """imgfeat's Parquet schema: ``input_path`` string, ``feature`` fixed-size list of ``dim``.

    ``with_error`` adds an ``error`` string column (null when the row is fine; a failed row has a
    null ``feature``): the Ray engine keeps every input's outcome in its rows, since its workers
    cannot report failures any other way."""
    import pyarrow as pa

    value = pa.float16() if np.dtype(dtype) == np.float16 else pa.float32()
    meta = {"imgfeat": json.dumps({**(metadata or {}), "dim": dim, "dtype": np.dtype(dtype).name})}
    fields = [("input_path", pa.string()), ("feature", pa.list_(value, dim))]
    fields += [("label", pa.string())] if with_label else []
    return pa.schema(fields + ([("error", pa.string())] if with_error else []), metadata=meta)


def open_part(out: Path, fmt: str, dtype: Any, metadata: Optional[Dict[str, Any]] = None,
              labeled: bool = False) -> PartFile:
    if fmt == "jsonl":
        return JsonlPart(out, dtype, labeled)
    if fmt == "npy":
        return NpyPart(out, dtype, labeled)
    return ParquetPart(out, dtype, metadata, labeled)
