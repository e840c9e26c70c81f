"""Engines: which backend and precision may run a folder here, the default, and the runner factory.

Backends: ``paddle`` (``paddle.inference``; oneDNN on CPU, CUDA on GPU), ``onnxruntime`` (the folder
converted once with paddle2onnx, :mod:`imgfeat_cli.models.onnx`) and ``openvino`` (the same graph,
optional extra, :mod:`imgfeat_cli.models.openvino`). Precisions: ``fp32``; ``bf16`` on CPUs with
native bf16 (``avx512_bf16``/``amx_bf16``), refused elsewhere rather than emulated slowly; ``fp16``
on GPUs; ``int8`` is what a folder made by ``imgfeat quantize`` holds (onnxruntime only).

The default (:data:`DEFAULT_BACKEND`, :data:`DEFAULT_PRECISION`: the one place it is decided; the
schemas say ``null`` for it) is the fastest *exact* engine: ``auto`` among the fp32 engines, each
held to cosine >= 0.9999 of paddle fp32, measured once per model and machine
(:mod:`imgfeat_cli.models.autoselect`). ``auto`` precision also admits bf16/fp16 at 0.999.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.system import native_bf16, parse_device
from imgfeat_cli.models.files import InferenceFiles
from imgfeat_cli.models.onnx import OrtRunner, need_onnxruntime, onnxruntime_available, onnxruntime_gpu_available
from imgfeat_cli.models.openvino import OpenVinoRunner, need_openvino, openvino_available
from imgfeat_cli.models.runners import GPU_HINT, InferenceRunner, asks_for, paddle_gpu_problem

BACKENDS = ("paddle", "onnxruntime", "openvino", "auto")
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
#: No backend/precision given (CLI, config or Python API): the fastest exact engine.
DEFAULT_BACKEND = "auto"
DEFAULT_PRECISION = "fp32"
#: Cosine of L2-normalised features to paddle fp32 that an engine must reach to be chosen by ``auto``.
COSINE_BAR = {"fp32": 0.9999, "bf16": 0.999, "fp16": 0.999, "int8": 0.0}
#: The engine ``auto`` keeps unless another is clearly faster (first available, in this order):
#: onnxruntime fp32 was the fastest exact engine at every batch size for PP-ShiTuV2_rec on 2 cores.
PREFERENCE = (("onnxruntime", "fp32"), ("paddle", "fp32"), ("openvino", "fp32"))


@dataclass(frozen=True)
class HpiChoice:
    backend: str
    precision: str
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def key(self) -> Tuple[str, str]:
        return (self.backend, self.precision)


def folder_precision(files: InferenceFiles, yml: Mapping[str, Any]) -> Optional[str]:
    """The precision an ONNX folder was written in (``Quantization.precision`` of its inference.yml,
    else fp32); ``None`` for paddle folders, whose precision is chosen at load time."""
    if not files.is_onnx:
        return None
    quant = yml.get("Quantization") if isinstance(yml, Mapping) else None
    prec = quant.get("precision") if isinstance(quant, Mapping) else None
    return str(prec) if prec in PRECISIONS else "fp32"


def resolve(backend: Optional[str], precision: Optional[str], files: InferenceFiles,
            native: Optional[str]) -> Tuple[str, str]:
    """Fill in the defaults: an ONNX folder runs in its own precision, anything else at fp32."""
    backend = backend or DEFAULT_BACKEND
    if native is not None:
        if precision not in (None, "auto", native):
            raise UsageError(f"the model in {files.folder} is {native}: it cannot run at {precision}",
                             hint=f"omit --precision, or run its source folder for {precision}")
        return backend, native
    if precision == "int8":
        raise UsageError("int8 runs a folder made by imgfeat quantize", hint="imgfeat quantize MODEL_DIR --calib IMAGES --out DIR")
    return backend, precision or DEFAULT_PRECISION


def require_gpus(device: Optional[str], backend: str) -> None:
    """A device asking for GPUs no engine here can use is a usage error naming what is missing,
    before any engine is tried (it ended in "no engine met the accuracy bar")."""
    dev = parse_device(device)
    if not dev.is_gpu:
        return
    problem = paddle_gpu_problem(dev)
    if problem is None or (backend in ("auto", "onnxruntime") and onnxruntime_gpu_available()):
        return
    if backend != "paddle":
        problem += ", and onnxruntime has no CUDA provider"
    raise UsageError(f"device {device} asks for {asks_for(dev)}, but {problem}", hint=GPU_HINT)


def validate(backend: str, precision: str, device_kind: str, files: Optional[InferenceFiles] = None) -> None:
    """Refuse combinations that cannot run well here, before any model is loaded."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if files is not None and files.is_onnx and backend in ("paddle", "openvino"):
        raise UsageError(f"{files.folder} holds an ONNX model (imgfeat quantize): it runs on onnxruntime",
                         hint="omit --backend, or use --backend onnxruntime")
    if precision == "bf16":
        if device_kind != "cpu":
            raise UsageError("bf16 is a CPU precision here", hint="use --precision fp16 on GPUs")
        if backend == "onnxruntime":
            raise UsageError("bf16 runs on the paddle (oneDNN) and openvino backends",
                             hint="use --backend paddle --precision bf16")
        if not native_bf16():
            raise UsageError("this CPU has no native bf16 (avx512_bf16 or amx_bf16): bf16 would be emulated and slower",
                             hint="use --precision fp32, or --hpi to pick the fastest that is available")
    if precision == "fp16":
        if device_kind == "cpu":
            raise UsageError("fp16 is a GPU precision", hint="on CPU use bf16 (where supported) or fp32")
        if backend in ("onnxruntime", "openvino"):
            raise UsageError("fp16 runs on the paddle backend", hint="use --backend paddle --precision fp16")
    if backend == "onnxruntime":
        need_onnxruntime()
    if backend == "openvino":
        need_openvino()
        if device_kind != "cpu":
            raise UsageError("the openvino backend runs on CPU here", hint="use --backend paddle or onnxruntime on GPUs")


def candidates(device_kind: str, files: InferenceFiles, native: Optional[str] = None) -> List[HpiChoice]:
    """Every combination worth measuring for this folder on this machine."""
    if native is not None:
        return [HpiChoice("onnxruntime", native)] if onnxruntime_available() else []
    cpu = device_kind == "cpu"
    out = [HpiChoice("paddle", "fp32")]
    if cpu and native_bf16():
        out.append(HpiChoice("paddle", "bf16"))
    if not cpu:
        out.append(HpiChoice("paddle", "fp16"))
    if onnxruntime_available():
        out.append(HpiChoice("onnxruntime", "fp32"))
    if cpu and openvino_available():
        out.append(HpiChoice("openvino", "fp32"))
        if native_bf16():
            out.append(HpiChoice("openvino", "bf16"))
    return out


def needs_onnx(choice: HpiChoice) -> bool:
    """Whether the engine runs the converted ONNX graph."""
    return choice.backend in ("onnxruntime", "openvino")


def same_features(stored: Any, current: Dict[str, Any]) -> bool:
    """Whether an output made by the ``stored`` identity may be continued by ``current``: the same
    name, files and precision. The engine may differ at fp32: exact engines agree to cosine >=
    ``COSINE_BAR['fp32']``, and the default's choice among them can change with a new measurement."""
    if not isinstance(stored, dict):
        return False
    keys = ("name", "sha256", "precision") if current.get("precision") == "fp32" else \
        tuple(k for k in current if k != "lineage")  # lineage follows from the files (sha256)
    return all(stored.get(k) == current.get(k) for k in keys)


def make_runner(files: InferenceFiles, device: Optional[str], cpu_threads: Optional[int], choice: HpiChoice,
                log: Callable[[str], None] = lambda m: None) -> Any:
    if choice.backend == "onnxruntime":
        return OrtRunner(files, device, cpu_threads, choice.precision, log)
    if choice.backend == "openvino":
        return OpenVinoRunner(files, device, cpu_threads, choice.precision, log)
    return InferenceRunner(files.folder, device, cpu_threads, precision=choice.precision)
