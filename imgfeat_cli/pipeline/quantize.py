"""``imgfeat quantize``: an inference folder -> an int8 ONNX inference folder, calibrated on the
user's images and measured on held-out ones.

The calibration images are decoded and pre-processed by the pipeline, exactly as ``embed`` would
feed them, shuffled with a fixed seed and split into a calibration set and a held-out set (half,
at most 128). The output folder (``inference.onnx``, ``inference.yml``, ``quantize_report.json``)
is assembled in a temp folder beside ``--out`` and renamed into place only when it passed the
accuracy bar (or ``force``): a refusal, an error or Ctrl-C leaves ``--out`` as it was.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import yaml

from imgfeat_cli.common import folders, fsutil, paths
from imgfeat_cli.common.errors import CheckFailed, ImgfeatError, ModelError, UsageError
from imgfeat_cli.common.locks import path_lock
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.models import quantize as q
from imgfeat_cli.models.files import ONNX_FILE, InferenceFiles, find_inference_files
from imgfeat_cli.models.model import EmbeddingModel
from imgfeat_cli.models.onnx import convert_to_onnx
from imgfeat_cli.pipeline.batch import preprocess
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS
from imgfeat_cli.pipeline.inputs import InputItem, expand, walk_items

#: 8 to calibrate on and 8 to measure on is the least that says anything.
MIN_IMAGES = 16
REPORT = "quantize_report.json"
TASK = "Reading calibration images"


@dataclass
class QuantizeResult:
    out: str
    report: Dict[str, Any]
    written: bool = True  # False: refused at the accuracy bar (the CheckFailed result)
    warnings: List[str] = field(default_factory=list)  # worth a look, though the bar was met

    def to_dict(self) -> Dict[str, Any]:
        return {"out": self.out, "written": self.written, **self.report, "warnings": self.warnings}


def agreement_warning(scores: Dict[str, float], n_held: int, least: Optional[float]) -> List[str]:
    """What a low recall@1 agreement means, in a line (the cosine bar can pass while a third of
    the images change their nearest neighbour: 0.324 passed without a word)."""
    got = scores["recall1_agreement"]
    if least is None or got >= least:
        return []
    return [f"recall@1 agreement {got:.3f} (below {least:g}): for {100 * (1 - got):.0f}% of the {n_held} held-out "
            "images the nearest other image differs between int8 and fp32, so int8 searches will often return "
            "other neighbours; calibrate on more images like yours (--calib-count) or compare both with imgfeat eval"]


def _check_out(src: Path, out: Path, calib: str, overwrite: bool) -> None:
    """Refuse an ``out`` that would swallow the inputs: ``--overwrite`` moves the old ``out`` to
    ``.bak`` and the next one deletes that, so ``out`` may neither be nor hold the model or the images."""
    paths.check_output_dir(out)
    dest = out.resolve()
    inputs = (("the model folder", "MODEL_DIR", src), ("the calibration folder", "--calib", Path(calib)))
    for what, flag, path in inputs:
        path = path.resolve()
        if dest == path or path in dest.parents:
            raise UsageError(f"--out {out} is {what} or inside it", hint=f"choose a folder outside {flag}")
        if dest in path.parents:
            raise UsageError(f"--out {out} holds {what} ({flag} {path})", hint=f"choose a folder outside {flag}")
    _check_empty(out, overwrite)


def _check_empty(out: Path, overwrite: bool) -> None:
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"output folder {out} exists and is not empty",
                         hint="choose another --out or pass --overwrite (the old folder is kept as .bak)")
    folders.check_backup_free(out)


def _images(calib: str, count: int, seed: int) -> List[InputItem]:
    """``count`` images of ``calib`` (a folder, recursively, or one image), in a seeded shuffle."""
    path = Path(calib)
    if not path.exists():
        raise UsageError(f"--calib {calib} does not exist", hint="pass a folder of images like the ones you will embed")
    items = walk_items(calib) if path.is_dir() else list(expand([calib], strict=False))
    items = [it for it in items if it.error is None]
    random.Random(seed).shuffle(items)
    if len(items) < MIN_IMAGES:
        raise UsageError(f"--calib {calib} holds {len(items)} image(s); quantizing needs at least {MIN_IMAGES}",
                         hint="pass a folder of 100-300 images like the ones you will embed")
    return items


def _preprocess(model: Any, items: List[InputItem], count: int,
                progress: ProgressFn) -> Tuple[np.ndarray, List[str], List[Tuple[str, str]]]:
    """The first ``count`` images that decode, pre-processed; their paths and the failures."""
    arrays: List[np.ndarray] = []
    paths: List[str] = []
    failed: List[Tuple[str, str]] = []
    for item in items:
        if len(arrays) == count:
            break
        try:
            arrays.append(preprocess(model, item, DEFAULT_LIMITS))
            paths.append(str(item.input_path))
        except ImgfeatError as exc:
            failed.append((str(item.input_path), exc.message))
        # of the images there are (206 of 256 asked for), those that read: the bar ends full
        progress(TASK, len(arrays), min(count, len(items) - len(failed)))
    if len(arrays) < MIN_IMAGES:
        example = ""
        if failed:  # a decode error names its file already
            path, reason = failed[0]
            example = f" ({len(failed)} failed, e.g. {reason if reason.startswith(path) else f'{path}: {reason}'})"
        raise UsageError(f"only {len(arrays)} calibration image(s) could be read{example}",
                         hint=f"quantizing needs at least {MIN_IMAGES} readable images")
    return np.stack(arrays).astype(np.float32), paths, failed


def quantize_model(model_dir: str, calib: str, out: str, calib_count: int = 256, min_mean_cosine: float = 0.995,
                   force: bool = False, overwrite: bool = False, seed: int = 0,
                   log: Callable[[str], None] = lambda m: None, progress: ProgressFn = null_progress,
                   warn_recall1_agreement: Optional[float] = None) -> QuantizeResult:
    """Quantize ``model_dir`` to int8 into ``out``; refuse (exit 3) when the held-out mean cosine to
    fp32 is below ``min_mean_cosine``, unless ``force``; a recall@1 agreement below
    ``warn_recall1_agreement`` is a warning in the result."""
    t0 = time.perf_counter()
    src, dest = Path(model_dir), Path(out)
    files = find_inference_files(src)
    if files.is_onnx:
        raise UsageError(f"{src} is already an ONNX folder (imgfeat quantize output?)",
                         hint="quantize the paddle inference folder it came from")
    if calib_count < MIN_IMAGES:
        raise UsageError(f"--calib-count {calib_count} is too small", hint=f"use at least {MIN_IMAGES}")
    _check_out(src, dest, calib, overwrite)
    with _one_writer(dest):
        items = _images(calib, calib_count, seed)
        model = EmbeddingModel.from_inference_dir(str(src), backend="paddle", log=log)  # pre-processing + checks
        fp32 = _fp32_graph(files, log)
        arrays, paths, failed = _preprocess(model, items, calib_count, progress)
        n_calib, n_held = q.split_heldout(len(arrays))
        held = arrays[n_calib:]
        with folders.replace_dir(dest) as tmp:
            method = q.quantize_graph(fp32, tmp / ONNX_FILE, arrays[:n_calib], log, where=str(dest), progress=progress)
            log(f"comparing int8 with fp32 on {n_held} held-out images ...")
            scores = q.agreement(q.features(fp32, held, cpu_count()), q.features(tmp / ONNX_FILE, held, cpu_count()))
            passed = scores["cosine_mean"] >= min_mean_cosine
            report = {"source": {"model_dir": str(src.resolve()), "sha256": files.sha256()},
                      "model_name": model.name, "method": method, "seed": seed,
                      "calibration_images": n_calib, "heldout_images": n_held, "unreadable_images": len(failed),
                      "heldout": scores,
                      "bar": {"min_mean_cosine": min_mean_cosine, "passed": passed, "forced": force and not passed},
                      "heldout_paths": paths[n_calib:], "seconds": round(time.perf_counter() - t0, 1)}
            if not passed and not force:
                raise CheckFailed(f"the int8 model's features have mean cosine {scores['cosine_mean']:.4f} (min "
                                  f"{scores['cosine_min']:.4f}) to fp32 on {n_held} held-out images, below "
                                  f"{min_mean_cosine}: nothing written", QuantizeResult(str(dest), report, False),
                                  hint="calibrate on more images like the ones you will embed (--calib-count), "
                                       "or pass --force to write it anyway")
            fsutil.write_json(tmp / REPORT, report)
            fsutil.write_text(tmp / "inference.yml",
                              yaml.safe_dump(_yml(src, report), sort_keys=False, allow_unicode=True))
            _check_empty(dest, overwrite)  # made meanwhile by someone else: theirs stays
    return QuantizeResult(str(dest), report, warnings=agreement_warning(scores, n_held, warn_recall1_agreement))


@contextlib.contextmanager
def _one_writer(dest: Path) -> Iterator[None]:
    """One quantize per ``--out`` at a time (a second one would replace the first's folder without
    --overwrite). The lock lives in the imgfeat cache; without a writable cache it runs unlocked
    and the emptiness check just before the rename still keeps a folder made meanwhile."""
    from filelock import Timeout

    try:
        lock = path_lock(dest, timeout=0)
        lock.acquire()
    except Timeout:
        raise UsageError(f"another imgfeat quantize is writing {dest}",
                         hint="wait for it to finish, or choose another --out") from None
    except (ImgfeatError, OSError):
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _fp32_graph(files: InferenceFiles, log: Callable[[str], None]) -> Path:
    """The model's fp32 ONNX graph; a failed conversion names what quantize needs (not --backend)."""
    try:
        return convert_to_onnx(files, log)
    except ModelError as exc:
        raise ModelError(exc.message, hint="quantize works on the ONNX graph (paddle2onnx): fix what the message "
                                           "names, or rerun with IMGFEAT_DEBUG=1 for details") from None


def _yml(src: Path, report: Dict[str, Any]) -> Dict[str, Any]:
    """The source's inference.yml (PaddleX reads the same pre-processing) plus what this folder is."""
    from imgfeat_cli.models.preprocess import read_inference_yml

    doc = dict(read_inference_yml(src))
    doc["Quantization"] = {"precision": "int8", "format": "onnx-qdq", "graph": ONNX_FILE, "report": REPORT,
                           "source_sha256": report["source"]["sha256"]}
    return doc
