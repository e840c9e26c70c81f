"""The part files of the two array formats (see :mod:`imgfeat_cli.pipeline.formats` for the
layout of each): ``.npy`` rows streamed raw beside their ``.paths.txt`` (and ``.labels.txt``),
the header written at the end; ``.parquet`` as an Arrow IPC stream, converted at the end. Also
:func:`open_part`, the one choice of part file by format (here, so ``formats`` never imports back)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Set

import numpy as np

from imgfeat_cli.pipeline.formats import (JsonlPart, PartFile, labels_sidecar, parquet_cannot_store,
                                          parquet_schema, paths_sidecar)

ROW_GROUP = 65536  # rows per Parquet row group


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


def open_part(out: Path, fmt: str, dtype: Any, metadata: Optional[Dict[str, Any]] = None,
              labeled: bool = False) -> PartFile:
    """The part file that a run appends rows of format ``fmt`` (jsonl, npy, parquet) to."""
    if fmt == "jsonl":
        return JsonlPart(out, dtype, labeled)
    if fmt == "npy":
        return NpyPart(out, dtype, labeled)
    return ParquetPart(out, dtype, metadata, labeled)
