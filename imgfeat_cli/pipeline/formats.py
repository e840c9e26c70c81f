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
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Set

import numpy as np

from imgfeat_cli.common.errors import UsageError

FORMATS = ("jsonl", "npy", "parquet")


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
