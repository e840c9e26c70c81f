"""The OpenVINO runner (optional: ``pip install "imgfeat[openvino]"``), on the converted ONNX graph.

OpenVINO is what PaddleX's own high-performance mode tries first for these models on x86 CPUs. It
cannot read paddle 3's ``inference.json``, so it runs the graph of :mod:`imgfeat_cli.models.onnx`.
Settings, measured on 2 cores: the ``LATENCY`` hint (one stream using every thread: 2x faster than
``THROUGHPUT`` with one request at a time), ``ENABLE_CPU_PINNING`` off (inference streams are
several processes that must not pin the same cores), ``INFERENCE_NUM_THREADS`` from imgfeat's own
thread count, and ``INFERENCE_PRECISION_HINT`` f32 or bf16 (bf16 only where the CPU computes it
natively; :mod:`imgfeat_cli.models.engines` refuses it elsewhere).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import cpu_count, parse_device
from imgfeat_cli.models.files import InferenceFiles
from imgfeat_cli.models.onnx import convert_to_onnx

HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def need_openvino() -> None:
    if not openvino_available():
        raise UsageError("the openvino backend needs OpenVINO", hint='pip install openvino')


class OpenVinoRunner:
    """A compiled OpenVINO model on CPU with one infer request (batches come one at a time)."""

    def __init__(self, files: InferenceFiles, device: Optional[str], cpu_threads: Optional[int],
                 precision: str = "fp32", log: Callable[[str], None] = lambda m: None) -> None:
        need_openvino()
        if parse_device(device).is_gpu:
            raise UsageError("the openvino backend runs on CPU here", hint="use --backend paddle or onnxruntime on GPUs")
        if files.is_onnx:
            # OpenVINO 2026.4 crashes the process (SIGSEGV) compiling int8 QDQ ViT graphs
            raise UsageError(f"{files.folder} holds an ONNX model (imgfeat quantize): it runs on onnxruntime",
                             hint="use --backend onnxruntime (the default picks it)")
        import openvino as ov

        path = convert_to_onnx(files, log)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision],
                  "INFERENCE_NUM_THREADS": int(cpu_threads or cpu_count()), "ENABLE_CPU_PINNING": False}
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            lines = str(exc).strip().splitlines()
            raise ModelError(f"OpenVINO cannot compile {path}: {(lines[-1] if lines else '')[:200]}",
                             hint="use --backend onnxruntime") from None
        self.request = self.compiled.create_infer_request()
        self.device = "cpu"
        self.backend = "openvino (CPU)"
        self.precision = precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, copy=True)
