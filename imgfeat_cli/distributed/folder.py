"""An output folder of Parquet files (local or any pyarrow filesystem): what the Ray engine writes,
and any job whose ``--out`` is a folder or an object-store prefix.

Layout of ``DIR``:

* ``part-<run>-<n>.parquet``: rows of imgfeat's Parquet schema plus ``error``
  (:func:`~imgfeat_cli.pipeline.formats.parquet_schema` with ``with_error``), the model identity in
  the schema metadata. Each file is written under a hidden name and renamed when complete
  (object stores: copied, which is atomic per object), so readers and a resume only ever see
  complete files. Readers skip names starting with ``.`` or ``_``, as Ray, Spark and pyarrow do.
* ``_errors.jsonl``: ``{"input_path", "error"}`` per failed input, over the whole folder.
* ``_imgfeat.yaml``: the resolved config and an ``Output`` section (format, dtype, dim, model, rows).

Resume reads the ``input_path`` column of every complete file and skips those inputs (failed
ones included: their error rows are outcomes too); files made by another model or precision are
refused. ``--overwrite`` writes the new files into a hidden staging folder and replaces the old
ones only when the new set is complete. One writer per folder: a lock file on local disks (object
stores have none: give each job its own prefix).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from imgfeat_cli.common.version import __version__
from imgfeat_cli.common.errors import ImgfeatError, UsageError
from imgfeat_cli.common.locks import lock_open_file
from imgfeat_cli.common.remote import check_reachable, describe_error, iter_files, join, resolve
from imgfeat_cli.models.engines import same_features
from imgfeat_cli.pipeline.formats import json_path, parquet_cannot_store, parquet_schema
from imgfeat_cli.pipeline.sinks import labels_digest, show_value

ERRORS_FILE, CONFIG_FILE, LOCK_FILE = "_errors.jsonl", "_imgfeat.yaml", ".imgfeat.lock"


class ParquetFolder:
    """One resumable output folder (see the module docstring)."""

    layout = "folder"

    def __init__(self, location: str, dtype: Any, resume: bool = False, overwrite: bool = False,
                 rows_per_file: int = 2048, labels: Optional[Mapping[str, str]] = None) -> None:
        import numpy as np

        self.labels = labels  # input path -> label: every row carries one
        self.location = location
        self.fs, self.root = resolve(location)
        self.local = type(self.fs).__name__ == "LocalFileSystem"
        self.dtype = np.dtype(dtype)
        self.resume, self.overwrite = resume, overwrite
        self.rows_per_file = rows_per_file
        self.run = time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)
        self.dest = join(self.root, f".staging-{self.run}") if overwrite else self.root
        self.written: List[str] = []  # this run's complete files
        self.pending: List[Any] = []  # tables not yet in a file
        self.pending_rows = 0
        self.schema: Any = None
        self.identity: Dict[str, Any] = {}
        self.failed: List[Tuple[str, str]] = []  # failures before the width was known (no row yet)
        self._lock: Optional[IO[bytes]] = None
        self.created = False  # this run made the folder (removed again if it stays empty)

    def name(self, file: str) -> str:
        """The user-facing location of a file in the folder."""
        return self.location.rstrip("/") + "/" + file

    # before any work --------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse what can be refused before any work (no side effects)."""
        from pyarrow import fs

        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other", hint="pass one of them")
        try:
            info = self.fs.get_file_info(self.root) if self.local else check_reachable(self.location, self.fs, self.root)
            data = list(iter_files(self.fs, self.root, ".parquet")) if info.type == fs.FileType.Directory else []
        except OSError as exc:
            raise describe_error(f"--out {self.location}", exc) from None
        if info.type == fs.FileType.File:
            raise UsageError(f"--out {self.location} is a file; this output is a folder of Parquet files",
                             hint="name a folder, e.g. --out feats/")
        if data and not (self.resume or self.overwrite):
            raise UsageError(f"{self.location} already holds {len(data)} Parquet files",
                             hint="pass --resume to continue it or --overwrite to replace it")
        if self.local:
            _check_local_writable(Path(self.root))

    def open(self, identity: Dict[str, Any], model_source: Optional[Dict[str, Any]] = None) -> Set[str]:
        """Create and lock the folder, clear what crashed runs left, check a resume against the
        files' model, and return the inputs already done."""
        self.identity = {"model": identity, "labels": labels_digest(self.labels), "model_source": model_source}
        self.check()
        self.created = not self.fs.get_file_info(self.root).type.name == "Directory"
        try:
            self.fs.create_dir(self.root, recursive=True)
        except OSError as exc:
            raise UsageError(f"cannot create --out {self.location} ({exc.strerror or exc})") from None
        if self.local:
            self._lock = _lock_folder(self.root, self.location)
        self._clear_leftovers()
        if self.overwrite:
            self.fs.create_dir(self.dest, recursive=True)
        return self._done() if self.resume else set()

    def _clear_leftovers(self) -> None:
        from pyarrow import fs

        for info in self.fs.get_file_info(fs.FileSelector(self.root)):
            if info.base_name.startswith(".part-") and info.type == fs.FileType.File:
                self.fs.delete_file(info.path)
            elif info.base_name.startswith(".staging-") and info.type == fs.FileType.Directory:
                self.fs.delete_dir(info.path)

    def _done(self) -> Set[str]:
        import pyarrow.parquet as pq

        done: Set[str] = set()
        for info in iter_files(self.fs, self.root, ".parquet"):
            try:
                with self.fs.open_input_file(info.path) as fh:
                    pf = pq.ParquetFile(fh)
                    meta = json.loads((pf.schema_arrow.metadata or {}).get(b"imgfeat", b"{}"))
                    paths = pf.read(columns=["input_path"]).column(0).to_pylist()
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError(f"cannot resume: {self.name(info.base_name)} is not a readable imgfeat Parquet file "
                                 f"({str(exc)[:80]}); nothing was changed",
                                 hint="move it out of the folder, or pass --overwrite to start over") from None
            for key, mine in (("model", self.identity["model"]), ("dtype", self.dtype.name),
                              ("labels", self.identity["labels"])):
                same = same_features if key == "model" else (lambda a, b: a == b)
                if not same(meta.get(key), mine):
                    raise UsageError(f"cannot resume {self.location}: {info.base_name} was made with {key} "
                                     f"{show_value(meta.get(key))}, this run uses {show_value(mine)}; nothing was changed",
                                     hint="rerun with the same settings, or pass --overwrite to start over")
            done.update(paths)
        return done

    # while running (the verbs of imgfeat_cli.pipeline.job.Sink) --------------------------------
    def cannot_store(self, path: str) -> Optional[str]:
        if self.labels is not None and path not in self.labels:
            return "the labels list has no label for this image"
        return parquet_cannot_store(path)

    def _label_column(self, paths: Sequence[str]) -> Dict[str, Any]:
        import pyarrow as pa

        if self.labels is None:
            return {}
        return {"label": pa.array([self.labels.get(p) for p in paths], pa.string())}

    def write(self, paths: Sequence[str], feats: Any) -> None:
        """Rows that worked; a file is written every ``rows_per_file`` rows."""
        import numpy as np
        import pyarrow as pa

        feats = np.ascontiguousarray(feats, dtype=self.dtype)
        dim = int(feats.shape[1])
        values = pa.array(feats.reshape(-1))
        self._add(pa.table({"input_path": pa.array(list(paths), pa.string()),
                            "feature": pa.FixedSizeListArray.from_arrays(values, dim),
                            **self._label_column(paths), "error": pa.nulls(len(paths), pa.string())}), dim)

    def error(self, path: str, reason: str) -> None:
        """An input that failed: a row with its reason and no feature (a resume skips it too)."""
        import pyarrow as pa

        if self.schema is None:  # no row has told the width yet: keep it until one does
            self.failed.append((path, reason))
            return
        self._add(pa.table({"input_path": pa.array([path], pa.string()),
                            "feature": pa.nulls(1, self.schema.field("feature").type),
                            **self._label_column([path]), "error": pa.array([reason], pa.string())}), None)

    def _add(self, table: Any, dim: Optional[int]) -> None:
        if self.schema is None:
            self.schema = parquet_schema(dim, self.dtype, self.identity, with_error=True,
                                         with_label=self.labels is not None)
            self.identity["dim"] = dim
            early, self.failed = self.failed, []
            for path, reason in early:
                self.error(path, reason)
        self.pending.append(table.select(list(self.schema.names)).cast(self.schema))
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.rows_per_file:
            self.flush(self.rows_per_file)

    def flush(self, rows: Optional[int] = None) -> None:
        """Write ``rows`` (default all) of the pending rows as one complete file (hidden name,
        then renamed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending_rows:
            return
        table = pa.concat_tables(self.pending)
        rows = min(rows or table.num_rows, table.num_rows)
        name = f"part-{self.run}-{len(self.written):05d}.parquet"
        tmp = join(self.dest, f".part-{name}")
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table.slice(0, rows), out)
        self.fs.move(tmp, join(self.dest, name))
        self.written.append(name)
        rest = table.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    # at the end -------------------------------------------------------------------------------
    def finish(self, config: Dict[str, Any]) -> Tuple[List[str], Optional[str]]:
        """Publish this run (``--overwrite``: replace the old files now), then write the errors
        file (the folder's error rows, then failures that never became a row: no input of this run
        worked) and the config. Returns (this run's files and the config, the errors file or
        ``None``)."""
        self.flush()
        if self.overwrite:
            self._replace_old()
        rows, errors = self._scan()
        errors += self.failed
        errors_file = join(self.root, ERRORS_FILE)
        if errors:
            _write_atomic(self.fs, errors_file, "".join(
                '{"input_path": ' + json_path(p or "") + ', "error": ' + json.dumps(r, ensure_ascii=False) + "}\n"
                for p, r in errors).encode("utf-8"))
        elif self.fs.get_file_info(errors_file).is_file:
            self.fs.delete_file(errors_file)
        doc = dict(config)
        doc["Output"] = {"format": "parquet", "dtype": self.dtype.name, **self.identity,
                         "rows": rows, "imgfeat": __version__}
        _write_atomic(self.fs, join(self.root, CONFIG_FILE),
                      yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8"))
        self.release()
        files = [self.name(f) for f in self.written] + [self.name(CONFIG_FILE)]
        return files, self.name(ERRORS_FILE) if errors else None

    def suspend(self) -> str:
        """Keep this run's complete files for ``--resume`` (the rows already here are written as
        one more file) and release the lock; says what was kept."""
        try:
            self.flush()
        finally:
            self.release()
        return f"this run's complete files ({len(self.written)}) are kept in {self.location}"

    def _replace_old(self) -> None:
        from pyarrow import fs

        for info in iter_files(self.fs, self.root, ".parquet"):
            self.fs.delete_file(info.path)
        for info in self.fs.get_file_info(fs.FileSelector(self.dest)):
            self.fs.move(info.path, join(self.root, info.base_name))
        self.fs.delete_dir(self.dest)
        self.dest = self.root

    def _scan(self) -> Tuple[int, List[Tuple[str, str]]]:
        """Rows and ``(input_path, error)`` of the failed ones, over every file in the folder."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        rows, errors = 0, []
        for info in iter_files(self.fs, self.root, ".parquet"):
            with self.fs.open_input_file(info.path) as fh:
                table = pq.read_table(fh, columns=["input_path", "error"])
            rows += table.num_rows
            bad = table.filter(pc.is_valid(table.column("error")))
            errors += list(zip(bad.column("input_path").to_pylist(), bad.column("error").to_pylist()))
        return rows, errors

    def abandon(self) -> None:
        """Remove this run's files (nothing worth keeping was made); older files stay."""
        self.pending, self.pending_rows = [], 0
        for name in self.written:
            self.fs.delete_file(join(self.dest, name))
        if self.overwrite and self.fs.get_file_info(self.dest).type.name == "Directory":
            self.fs.delete_dir(self.dest)
        self.written = []
        self.release()

    def release(self) -> None:
        """Drop the lock (and its file); a folder this run created and left empty goes too."""
        from pyarrow import fs

        if self._lock is not None:
            with contextlib.suppress(FileNotFoundError):  # before unlocking: no one can take a stale file
                os.unlink(os.path.join(self.root, LOCK_FILE))
            self._lock.close()
            self._lock = None
        if self.created and not self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True)):
            self.fs.delete_dir(self.root)
            self.created = False


def _check_local_writable(folder: Path) -> None:
    """The folder, or the nearest existing folder above it, must be a folder we can write."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot write {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {folder}: {probe} is not writable", hint="choose another --out")


def _lock_folder(root: str, location: str) -> IO[bytes]:
    fh = open(os.path.join(root, LOCK_FILE), "a+b")
    try:
        lock_open_file(fh, Path(location))
    except BaseException:
        fh.close()
        raise
    return fh


def _write_atomic(filesystem: Any, path: str, data: bytes) -> None:
    head, _, base = path.rpartition("/")
    tmp = f"{head}/.part-{base}.{secrets.token_hex(3)}"
    try:
        with filesystem.open_output_stream(tmp) as out:
            out.write(data)
        filesystem.move(tmp, path)
    except OSError as exc:
        raise ImgfeatError(f"cannot write {path}: {exc}") from None
