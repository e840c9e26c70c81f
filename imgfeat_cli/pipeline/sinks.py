"""Incremental, resumable feature writers for ``embed``.

Both writers append to ``FILE.part`` (NPY: raw rows in ``FILE.part`` plus paths in
``FILE.paths.txt.part``), flushed after every batch, and publish with an atomic rename. On resume
the part files are read back, a torn final record is cut off, and the paths already written are
returned so the engine skips them. A finished output can be resumed too (it is copied to the part
file first, and stays in place until the new one replaces it).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Set

import numpy as np

from imgfeat_cli.common.errors import UsageError

FORMATS = ("jsonl", "npy")


def output_format(out: str, fmt: Optional[str]) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise UsageError(f"cannot tell the output format from {out!r}",
                     hint="name the file .jsonl or .npy, or pass --format jsonl|npy")


def paths_sidecar(out: Path) -> Path:
    """``feats.npy`` -> ``feats.paths.txt`` (the input paths, one per row, same order)."""
    return out.with_name(out.stem + ".paths.txt")


def _fsync(fh: IO[Any]) -> None:
    fh.flush()
    os.fsync(fh.fileno())


class _PartWriter:
    """What both writers share: the final path, its ``.part`` twin, and existence checks."""

    out: Path
    part_path: Path

    def exists(self) -> bool:
        return self.out.exists()

    def part_exists(self) -> bool:
        return self.part_path.exists()


class JsonlWriter(_PartWriter):
    """One JSON object per line: ``{"input_path": ..., "feature": [...]}``; floats are written in the
    shortest form that reads back to the identical float32 (or float16 with ``fp16``)."""

    def __init__(self, out: Path, fp16: bool = False) -> None:
        self.out = out
        self.part_path = out.with_name(out.name + ".part")
        self.dtype = np.float16 if fp16 else np.float32
        self.fh: Optional[IO[str]] = None

    def begin(self, resume: bool) -> Set[str]:
        done: Set[str] = set()
        if resume and not self.part_path.exists() and self.out.exists():
            shutil.copyfile(self.out, self.part_path)
        if resume and self.part_path.exists():
            good = 0
            with open(self.part_path, "rb") as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break
                    try:
                        rec = json.loads(raw)
                        done.add(rec["input_path"])
                    except (ValueError, KeyError, TypeError):
                        break
                    good += len(raw)
            with open(self.part_path, "r+b") as fh:
                fh.truncate(good)
            self.fh = open(self.part_path, "a", encoding="utf-8")
        else:
            self.fh = open(self.part_path, "w", encoding="utf-8")
        return done

    def write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        assert self.fh is not None
        rows = feats.astype(self.dtype, copy=False)
        lines = []
        for path, row in zip(paths, rows):
            lines.append('{"input_path": ' + json.dumps(path, ensure_ascii=False) + ', "feature": ['
                         + ", ".join(map(str, row)) + "]}\n")
        self.fh.write("".join(lines))
        self.fh.flush()

    def suspend(self) -> None:
        if self.fh is not None:
            _fsync(self.fh)
            self.fh.close()
            self.fh = None

    def finish(self) -> None:
        self.suspend()
        os.replace(self.part_path, self.out)


class NpyWriter(_PartWriter):
    """A ``(N, D)`` ``.npy`` array plus ``.paths.txt``; rows stream to disk and the header is
    written at the end, so memory stays constant."""

    def __init__(self, out: Path, fp16: bool = False) -> None:
        self.out = out
        self.paths_out = paths_sidecar(out)
        self.part_path = out.with_name(out.name + ".part")
        self.paths_part = self.paths_out.with_name(self.paths_out.name + ".part")
        self.dim_path = self.part_path.with_name(self.part_path.name + ".dim")  # row width, for resume
        self.dtype = np.dtype(np.float16 if fp16 else np.float32)
        self.rows = 0
        self.dim: Optional[int] = None
        self.fh: Optional[IO[bytes]] = None
        self.ph: Optional[IO[str]] = None

    def begin(self, resume: bool) -> Set[str]:
        if resume and not self.part_path.exists() and self.out.exists():
            self._unpack_finished()
        if not (resume and self.part_path.exists()):
            self.fh = open(self.part_path, "wb")
            self.ph = open(self.paths_part, "w", encoding="utf-8")
            return set()
        paths = []
        if self.paths_part.exists():
            with open(self.paths_part, "rb") as fh:
                paths = [ln.decode("utf-8").rstrip("\n") for ln in fh if ln.endswith(b"\n")]
        self.dim = int(self.dim_path.read_text()) if self.dim_path.exists() else None
        nbytes = self.part_path.stat().st_size
        rows_on_disk = nbytes // (self.dim * self.dtype.itemsize) if self.dim else 0
        keep = min(len(paths), rows_on_disk)
        with open(self.part_path, "r+b") as fh:
            fh.truncate(keep * (self.dim or 0) * self.dtype.itemsize)
        paths = paths[:keep]
        with open(self.paths_part, "w", encoding="utf-8") as ph:
            ph.write("".join(p + "\n" for p in paths))
        self.rows = keep
        self.fh = open(self.part_path, "ab")
        self.ph = open(self.paths_part, "a", encoding="utf-8")
        return set(paths)

    def _unpack_finished(self) -> None:
        arr = np.load(self.out, mmap_mode="r")
        if arr.dtype != self.dtype:
            raise UsageError(f"{self.out} holds {arr.dtype} features; resume with the same precision (--fp16 or not)")
        with open(self.part_path, "wb") as fh:
            for start in range(0, arr.shape[0], 4096):
                fh.write(np.ascontiguousarray(arr[start:start + 4096]).tobytes())
        self.dim_path.write_text(str(arr.shape[1]))
        shutil.copyfile(self.paths_out, self.paths_part)

    def write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        assert self.fh is not None and self.ph is not None
        if self.dim is None:
            self.dim = int(feats.shape[1])
            self.dim_path.write_text(str(self.dim))
        self.fh.write(np.ascontiguousarray(feats, dtype=self.dtype).tobytes())
        self.fh.flush()
        self.ph.write("".join(p.replace("\n", " ") + "\n" for p in paths))
        self.ph.flush()
        self.rows += len(paths)

    def suspend(self) -> None:
        for h in (self.fh, self.ph):
            if h is not None:
                _fsync(h)
                h.close()
        self.fh = self.ph = None

    def finish(self) -> None:
        self.suspend()
        from imgfeat_cli.common.fsutil import atomic_open

        with atomic_open(self.out, "wb") as out, open(self.part_path, "rb") as src:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.rows, self.dim or 0)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(self.paths_part, self.paths_out)
        self.part_path.unlink()
        if self.dim_path.exists():
            self.dim_path.unlink()


def open_writer(out: Path, fmt: str, fp16: bool = False) -> Any:
    return (JsonlWriter if fmt == "jsonl" else NpyWriter)(out, fp16)
