"""Static int8 quantisation of a model's ONNX graph with onnxruntime, and how far it moved the features.

The recipe (measured for issue 14 on PP-ShiTuV2_rec, AVX2 CPU): ``quant_pre_process`` first (shape
inference and graph optimisation: BatchNorm folded into convolutions; it fails on some ViT graphs,
which are then quantised as they are), then ``quantize_static`` in QDQ format with per-channel int8
weights and uint8 activations, ``reduce_range`` off, MinMax calibration. Per-tensor or dynamic
quantisation wrecks the depthwise convolutions; S8S8 has no fast AVX2 kernel; Entropy and
Percentile calibration were no better. The first convolution stays in float: it sees the raw
normalised pixels, and on a PP-ShiTuV2_rec trained with ``imgfeat train`` quantising it alone moved
the held-out mean cosine to fp32 from 0.978 to 0.86 (min 0.93 to 0.003). The caller feeds pre-processed calibration batches and
held-out images; :func:`agreement` says how close the int8 features stay to fp32.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from imgfeat_cli.common.errors import ModelError, from_os_error
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.models.onnx import ort_session, silenced
from imgfeat_cli.models.preprocess import l2_normalize

CALIBRATING = "Calibrating"
#: Images per calibration / comparison batch (bounded memory: the calibrator keeps every
#: intermediate output of every batch until it computes the ranges).
CALIB_BATCH = 16
METHOD = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
          "weights": "int8", "activations": "uint8", "reduce_range": False, "calibration": "MinMax"}


def _batches(images: np.ndarray, size: int = CALIB_BATCH) -> Iterator[np.ndarray]:
    for i in range(0, len(images), size):
        yield np.ascontiguousarray(images[i:i + size], dtype=np.float32)


def _pre_process(src: Path, work: Path) -> Path:
    """``quant_pre_process`` into ``work`` (it leaves helper files beside its output); the input
    graph itself when it fails (some ViT graphs defeat its shape inference). Symbolic shape
    inference is skipped: it needs sympy and gave a bit-identical int8 PP-ShiTuV2_rec."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dest = work / "pre.onnx"
    try:
        with silenced():
            quant_pre_process(str(src), str(dest), skip_optimization=False, skip_onnx_shape=False,
                              skip_symbolic_shape=True)
    except Exception:  # the optimisation is a bonus: any failure falls back to the plain graph
        return src
    return dest if dest.is_file() else src


def first_conv(path: Path) -> List[str]:
    """The name of the graph's first convolution (kept in float), as a list for ``nodes_to_exclude``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return next(([n.name] for n in graph.node if n.op_type == "Conv" and n.name), [])


def quantize_graph(src: Path, dest: Path, calibration: np.ndarray, log: Callable[[str], None],
                   where: Optional[str] = None, progress: ProgressFn = null_progress) -> Dict[str, Any]:
    """Write the int8 graph of ``src`` (an fp32 ONNX graph) to ``dest``, calibrated on the
    pre-processed ``calibration`` images; return the method as recorded in the report. A disk
    error names ``where`` (the user's output folder; ``dest`` is often a temp file in it).
    ``progress`` follows the calibration (``Calibrating``: images run through the model)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name = ort_session(src, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = ({input_name: b} for b in _batches(calibration))
            self.done = 0

        def get_next(self) -> Any:
            batch = next(self.batches, None)  # asked for when the previous batch has run
            progress(CALIBRATING, self.done, len(calibration))
            if batch is not None:
                self.done += len(batch[input_name])
            return batch

    work = Path(tempfile.mkdtemp(prefix="imgfeat-quant-"))
    try:
        pre = _pre_process(src, work)
        keep_float = first_conv(pre)
        log(f"calibrating on {len(calibration)} images and quantizing ...")
        try:
            with silenced():
                quantize_static(str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # onnxruntime's quantiser raises many types
            if isinstance(exc, OSError) and exc.errno is not None:  # a full disk: what and where, not "report it"
                exc.filename = exc.filename or f"{where or dest} or the temp folder {tempfile.gettempdir()}"
                raise from_os_error(exc) from None
            lines = str(exc).strip().splitlines()
            raise ModelError(f"onnxruntime could not quantize {src}: {(lines[-1] if lines else exc.__class__.__name__)[:200]}",
                             hint="report it with IMGFEAT_DEBUG=1 output") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**METHOD, "pre_process": "quant_pre_process" if pre != src else "none", "float_nodes": keep_float,
            "calibration_images": int(len(calibration))}


def features(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """Raw features of ``images`` through the ONNX graph at ``path`` (onnxruntime, CPU)."""
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in _batches(images)])


def _top1(feats: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by inner product."""
    sims = feats @ feats.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def agreement(reference: np.ndarray, quantized: np.ndarray) -> Dict[str, float]:
    """Cosine of the L2-normalised int8 features to fp32 (min, mean) and recall@1 agreement: the
    share of images whose nearest other image (among these) is the same in both."""
    ref, got = l2_normalize(reference), l2_normalize(quantized)
    cos = (ref * got).sum(axis=1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "recall1_agreement": float((_top1(ref) == _top1(got)).mean())}


def split_heldout(n: int) -> List[int]:
    """(calibration count, held-out count) of ``n`` images: half held out, at most 128."""
    held = min(128, n // 2)
    return [n - held, held]
