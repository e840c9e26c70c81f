"""Where an embedding job's rows go when they go to a file: :class:`FileSink` (``embed``: JSONL,
NPY or Parquet, resumable; rows kept in memory go to :class:`~imgfeat_cli.pipeline.memory.MemorySink`).

A file output is a set of files that change together: ``FILE`` (and ``FILE.paths.txt`` for NPY),
``FILE.config.yaml`` (the settings that produced it, with an ``Output`` section naming the format,
dtype, dimension and model: what a resume must match) and ``FILE.errors.jsonl`` (inputs that
failed, when any did). While a run is going only ``FILE.part`` (+ ``FILE.part.meta.json``, + for NPY
``FILE.paths.txt.part``) change; the old output stays untouched until the new one is complete, then
the set is published sidecars first and ``FILE`` last. One writer per output: the run holds an
exclusive lock on ``FILE.part`` (on its open file, so no lock file is left behind), and a second run
on the same output fails at once.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import yaml

from imgfeat_cli.common.version import __version__
from imgfeat_cli.common import fsutil, paths
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.models.engines import same_features
from imgfeat_cli.common.locks import lock_open_file
from imgfeat_cli.pipeline.arrayparts import open_part
from imgfeat_cli.pipeline.formats import PartFile, json_path, output_format
from imgfeat_cli.pipeline.readers import read_output_identity


class FileSink:
    """One resumable output file set (see the module docstring)."""

    layout = "file"

    def __init__(self, out: str, fmt: Optional[str] = None, fp16: bool = False, resume: bool = False,
                 overwrite: bool = False, labels: Optional[Mapping[str, str]] = None) -> None:
        self.out = Path(out)
        self.labels = labels  # input path -> label: every row carries one
        self.fmt = output_format(out, fmt)
        self.dtype = np.dtype(np.float16 if fp16 else np.float32)
        self.resume, self.overwrite = resume, overwrite
        self.config_file = self.out.with_name(self.out.name + ".config.yaml")
        self.errors_file = self.out.with_name(self.out.name + ".errors.jsonl")
        self.part: Optional[PartFile] = None
        self.fh: Optional[IO[bytes]] = None
        self.identity: Dict[str, Any] = {}
        self.errors: List[Tuple[str, str]] = []

    @property
    def location(self) -> str:
        return str(self.out)

    @property
    def part_path(self) -> Path:
        return self.out.with_name(self.out.name + ".part")

    @property
    def meta_path(self) -> Path:
        return self.out.with_name(self.out.name + ".part.meta.json")

    def check(self) -> None:
        """Refuse what can be refused before any work (no side effects)."""
        if self.out.is_dir():
            raise UsageError(f"--out {self.out} is a folder", hint="name a file, e.g. feats.jsonl")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other", hint="pass one of them")
        if self.out.exists() and not (self.resume or self.overwrite):
            raise UsageError(f"{self.out} already exists", hint="pass --resume to continue it or --overwrite to replace it")
        if self.part_path.exists() and not (self.resume or self.overwrite):
            raise UsageError(f"an interrupted run left {self.part_path}",
                             hint="pass --resume to continue it or --overwrite to start over")
        paths.check_output_file(self.out)  # a folder in the way, an unwritable place, a name too long

    def open(self, identity: Dict[str, Any], model_source: Optional[Dict[str, Any]] = None) -> Set[str]:
        """Lock the output, check a resume against what produced it, and read back what is done.
        ``identity`` is the model's (name, files, backend, precision), compared on resume;
        ``model_source`` where it came from (recorded, not compared: a moved folder is the same
        model). Nothing is changed when the resume is refused."""
        self.check()
        self.identity = {"format": self.fmt, "dtype": self.dtype.name, "model": identity,
                         "labels": labels_digest(self.labels), "model_source": model_source}
        with _naming(self.part_path):
            return self._open()

    def _open(self) -> Set[str]:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        created = not self.part_path.exists()
        fh = open(self.part_path, "a+b")  # creates without truncating: lock first, decide after
        try:
            lock_open_file(fh, self.out)
            stored = self._stored_identity(created) if self.resume else None
            dim = self._check_resume(stored)
            self.part = open_part(self.out, self.fmt, self.dtype, self.identity, labeled=self.labels is not None)
            fh.seek(0)
            resuming = self.resume and (not created or self.out.exists())
            if resuming and created:  # continue a finished output: unpack it into the part files
                self._unpack_finished(fh)
            if not resuming:
                fh.truncate(0)
                fsutil.write_json(self.meta_path, self.identity)
            self.identity["dim"] = dim
            done = self.part.open(fh, resuming, dim)
        except BaseException:
            fh.close()
            if created:
                self.part_path.unlink(missing_ok=True)
            raise
        self.fh = fh
        return done

    def _stored_identity(self, created: bool) -> Optional[Dict[str, Any]]:
        if not created:
            try:
                return json.loads(self.meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
        if self.out.exists():
            return read_output_identity(self.config_file)
        return {}  # nothing to resume: a fresh start

    def _check_resume(self, stored: Optional[Dict[str, Any]]) -> Optional[int]:
        """The stored feature width when resuming; a usage error when the settings differ."""
        if not self.resume or stored == {}:
            return None
        what = self.part_path if self.part_path.exists() and self.meta_path.exists() else self.out
        if stored is None:
            raise UsageError(f"cannot resume {what}: the record of what produced it is missing",
                             hint="pass --overwrite to start over")
        for key in ("format", "dtype", "model", "labels"):
            same = same_features if key == "model" else (lambda a, b: a == b)
            if not same(stored.get(key), self.identity[key]):
                raise UsageError(f"cannot resume {what}: it was made with {key} {show_value(stored.get(key))}, "
                                 f"this run uses {show_value(self.identity[key])}; nothing was changed",
                                 hint="rerun with the same settings, or pass --overwrite to start over")
        dim = stored.get("dim")
        return int(dim) if isinstance(dim, int) else None

    def _unpack_finished(self, fh: IO[bytes]) -> None:
        from imgfeat_cli.pipeline.readers import unpack_to_part

        stored = read_output_identity(self.config_file) or {}
        unpack_to_part(self.out, self.fmt, self.dtype, fh, self.part, stored.get("dim"))
        fsutil.write_json(self.meta_path, {**self.identity, "dim": stored.get("dim")})

    def cannot_store(self, path: str) -> Optional[str]:
        assert self.part is not None
        if self.labels is not None and path not in self.labels:
            return "the labels list has no label for this image"
        return self.part.cannot_store(path)

    def write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        assert self.part is not None
        with _naming(self.part_path):
            self._write(paths, feats)

    def _write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        assert self.part is not None
        dim = int(feats.shape[1])
        if self.identity.get("dim") is None:
            self.identity["dim"] = dim
            fsutil.write_json(self.meta_path, self.identity)
        elif self.identity["dim"] != dim:
            raise UsageError(f"the model gives {dim}-d features but {self.out} holds {self.identity['dim']}-d ones",
                             hint="pass --overwrite to start over")
        labels = [self.labels[p] for p in paths] if self.labels is not None else None
        self.part.write(list(paths), feats, labels)

    def error(self, path: str, reason: str) -> None:
        """An input that failed (listed in ``FILE.errors.jsonl`` when the output is published)."""
        self.errors.append((path, reason))

    def suspend(self) -> str:
        """Keep the part files for ``--resume`` (Ctrl-C, errors) and release the lock; a final
        file being staged from them is dropped. Says what was kept."""
        staged = getattr(self.part, "staged", None)
        if staged is not None:
            Path(staged).unlink(missing_ok=True)
        if self.part is not None and hasattr(self.part, "close"):
            self.part.close()
        if self.fh is not None:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            self.fh = None
        return f"partial output kept in {self.part_path}"

    def abandon(self) -> None:
        """Drop this run's part files (nothing worth keeping); an older output stays as it was."""
        if self.part is not None and hasattr(self.part, "close"):
            self.part.close()
        for extra in ([] if self.part is None else self.part.extra_parts()) + [self.part_path, self.meta_path]:
            extra.unlink(missing_ok=True)
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def finish(self, config: Optional[Dict[str, Any]] = None) -> Tuple[List[str], Optional[str]]:
        """Publish the complete set; return the files it consists of and the errors file (``None``
        when nothing failed). On a failure (a full disk) the part files stay for ``--resume`` and
        the old output, if any, as it was."""
        with _naming(self.out):
            files = self._publish(self.errors, config)
        return files, str(self.errors_file) if self.errors else None

    def _publish(self, errors: Sequence[Tuple[str, str]], config: Optional[Dict[str, Any]]) -> List[str]:
        assert self.part is not None and self.fh is not None
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.part.finish()
        doc = dict(config or {})
        doc["Output"] = {**self.identity, "rows": self.part.rows, "imgfeat": __version__}
        fsutil.write_text(self.config_file, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        if errors:
            fsutil.write_text(self.errors_file, "".join('{"input_path": ' + json_path(p) + ', "error": '
                                                        + json.dumps(r, ensure_ascii=False) + "}\n"
                                                        for p, r in errors))
        else:
            self.errors_file.unlink(missing_ok=True)
        moves = self.part.final_files()
        main_src = next(src for src, dst in moves.items() if dst == self.out)
        for src, dst in moves.items():  # sidecars first, the main file last
            if dst != self.out:
                os.replace(src, dst)
        os.replace(main_src, self.out)
        for leftover in (self.part_path, self.meta_path):
            leftover.unlink(missing_ok=True)
        self.fh.close()
        self.fh = None
        files = [str(self.out)] + [str(d) for d in moves.values() if d != self.out] + [str(self.config_file)]
        return files + ([str(self.errors_file)] if errors else [])


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Name ``path`` in an OS error that names no file (a write on a full disk): the error table
    then says which output could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def labels_digest(labels: Optional[Mapping[str, str]]) -> Optional[str]:
    """What an output records of its labels (``None``: it has none): a resume with other labels
    would mix two labellings in one file, so it is refused like other settings."""
    if labels is None:
        return None
    import hashlib

    h = hashlib.sha256()
    for path in sorted(labels):
        h.update(os.fsencode(path) + b"\0" + str(labels[path]).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def show_value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:200] + "..."

