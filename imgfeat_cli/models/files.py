"""What makes a folder an inference model, and the hash that names its contents.

Two layouts are models: the official paddle one (``inference.json`` or ``inference.pdmodel`` with
``inference.pdiparams``) and an ONNX one (``inference.onnx``: what ``imgfeat quantize`` writes). Both
carry ``inference.yml`` for the pre-processing. Importing this module does not import paddle.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from imgfeat_cli.common.errors import ModelError, ModelPathError
from imgfeat_cli.models.filecheck import check_onnx_file, check_paddle_files

ONNX_FILE = "inference.onnx"


@dataclass(frozen=True)
class InferenceFiles:
    """The model files of one folder: a paddle program and its parameters, or an ONNX graph."""

    folder: Path
    program: Optional[Path] = None
    params: Optional[Path] = None
    onnx: Optional[Path] = None

    @property
    def is_onnx(self) -> bool:
        """An ONNX-only folder: it runs on onnxruntime, never on paddle."""
        return self.program is None

    @property
    def files(self) -> Tuple[Path, ...]:
        """The files whose bytes are the model (what :meth:`sha256` covers)."""
        return (self.onnx,) if self.program is None else (self.program, self.params)  # type: ignore[return-value]

    def sha256(self) -> str:
        return model_hash(*self.files)


def find_inference_files(model_dir: Path) -> InferenceFiles:
    """The model files of ``model_dir``: ``inference.json`` preferred over ``inference.pdmodel``, and
    ``inference.onnx`` when neither paddle program is there; a one-line error naming what is missing
    or damaged (:mod:`imgfeat_cli.models.filecheck`: checked before any native code reads them)."""
    model_dir = Path(model_dir)
    params = model_dir / "inference.pdiparams"
    for prog in (model_dir / "inference.json", model_dir / "inference.pdmodel"):
        if prog.is_file() and params.is_file():
            check_paddle_files(prog, params)
            return InferenceFiles(model_dir, prog, params)
    if (model_dir / ONNX_FILE).is_file():
        check_onnx_file(model_dir / ONNX_FILE)
        return InferenceFiles(model_dir, onnx=model_dir / ONNX_FILE)
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelPathError(f"model folder {model_dir} is a file, not a folder",
                         hint="pass the inference folder that holds it (an official *_infer.tar: unpack it first)")
    if not model_dir.is_dir():
        raise ModelPathError(f"model folder {model_dir} does not exist",
                         hint="pass an exported inference folder (imgfeat export) or an unpacked official *_infer.tar")
    missing = [] if params.is_file() else ["inference.pdiparams"]
    if not (model_dir / "inference.json").is_file() and not (model_dir / "inference.pdmodel").is_file():
        missing.append("inference.json (or inference.pdmodel)")
    raise ModelError(f"{model_dir} is not an inference model folder (missing {' and '.join(missing)})",
                     hint="expected inference.json (or inference.pdmodel), inference.pdiparams and inference.yml, "
                          f"or {ONNX_FILE} and inference.yml (imgfeat quantize)")


def model_hash(*files: Path) -> str:
    """sha256 over the model files' bytes (remembered per file state within a process)."""
    return _hash_files(tuple((str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=32)
def _hash_files(states: Tuple[Tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _, _ in states:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
