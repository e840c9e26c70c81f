"""Runners: a callable that takes an ``NCHW`` float32 batch and returns the model's raw features.

Two paddle runners live here: an inference folder run by ``paddle.inference`` (oneDNN on CPU, CUDA
on GPU) and a dygraph layer (checkpoints, training-time evaluation). The onnxruntime and OpenVINO
runners live in :mod:`imgfeat_cli.models.onnx` and :mod:`imgfeat_cli.models.openvino`. Every runner has
``backend``, ``device`` and ``precision`` attributes that say what actually ran.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import Device, cpu_count, parse_device
from imgfeat_cli.models.files import find_inference_files


#: What to do when the device asks for GPUs this machine cannot give (PaddleX's own configs say
#: ``device: gpu:0,1,2,3``).
GPU_HINT = "use --device cpu (or Global.device: cpu in the config), or install paddlepaddle-gpu on a machine with GPUs"


def paddle_gpu_problem(dev: Device) -> Optional[str]:
    """Why paddle cannot run on ``dev``'s GPUs here (``None``: it can)."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return "this paddlepaddle build has no CUDA support (the CPU build)"
    found = paddle.device.cuda.device_count()
    if max(dev.ids) >= found:
        return f"{found} GPU(s) are visible"
    return None


def asks_for(dev: Device) -> str:
    return f"GPU {dev.ids[0]}" if len(dev.ids) == 1 else f"{len(dev.ids)} GPUs ({str(dev)})"


def require_device(device: Optional[str]) -> Device:
    """Parse ``device`` and check that this paddlepaddle build can use it (a usage error naming
    what the device asks for and what is missing, exit 2, before anything is loaded)."""
    dev = parse_device(device)
    if dev.is_gpu:
        problem = paddle_gpu_problem(dev)
        if problem:
            raise UsageError(f"device {device} asks for {asks_for(dev)}, but {problem}", hint=GPU_HINT)
    return dev


def quiet_paddle_signals() -> None:
    """Paddle installs C++ handlers for SIGINT/SIGTERM/SIGSEGV that print a multi-line C++ stack
    and can deadlock (they call malloc inside the handler). Python's own handling is what imgfeat
    wants: Ctrl-C is one line and exit 130, and a terminated worker just exits. Kept with
    ``IMGFEAT_DEBUG=1``, where a C++ stack on a crash is worth having."""
    if os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0"):
        return
    try:
        import paddle

        paddle.disable_signal_handler()
    except (ImportError, AttributeError):
        pass


@contextmanager
def paddle_stdout_muted() -> Iterator[None]:
    """Send file descriptor 1 to the void while paddle's C++ code runs: some passes print
    diagnostics with ``std::cout`` ("ReduceMeanCheckIfOneDNNSupport"), which would corrupt results
    and ``--json`` documents on stdout and clutter stderr. ``IMGFEAT_DEBUG=1`` sends them to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = 2 if os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0") else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(target, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        if target != 2:
            os.close(target)


class InferenceRunner:
    """``paddle.inference`` predictor for an exported folder."""

    def __init__(self, model_dir: Path, device: Optional[str] = None, cpu_threads: Optional[int] = None,
                 precision: str = "fp32") -> None:
        from paddle import inference as pi

        quiet_paddle_signals()
        files = find_inference_files(model_dir)
        if files.is_onnx:
            raise ModelError(f"{model_dir} holds an ONNX model ({files.onnx.name}), which paddle cannot run",
                             hint="run it with --backend onnxruntime (the default picks it)")
        dev = require_device(device)
        config = pi.Config(str(files.program), str(files.params))
        config.disable_glog_info()
        if dev.is_gpu:
            mode = pi.PrecisionType.Half if precision == "fp16" else pi.PrecisionType.Float32
            config.enable_use_gpu(256, dev.first, mode)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)
            config.set_cpu_math_library_num_threads(cpu_threads or cpu_count())
            if precision == "bf16":
                config.enable_mkldnn_bfloat16()
        try:
            with paddle_stdout_muted():
                self.predictor = pi.create_predictor(config)
        except Exception as exc:  # paddle raises many types for corrupt programs
            raise ModelError(f"cannot load the inference model in {model_dir}: {str(exc).strip().splitlines()[-1][:200]}",
                             hint="re-export it (imgfeat export) or re-download it") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output_name = self.predictor.get_output_names()[0]
        self.device = dev.single
        self.precision = precision
        self.backend = "paddle-inference" + (" (CUDA)" if dev.is_gpu else " (oneDNN)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        with paddle_stdout_muted():
            self.predictor.run()
        return self.predictor.get_output_handle(self.output_name).copy_to_cpu()


class DygraphRunner:
    """Eager-mode forward of a paddle layer (checkpoints, training-time evaluation)."""

    def __init__(self, layer: Any, device: Optional[str] = None) -> None:
        import paddle

        quiet_paddle_signals()
        dev = require_device(device)
        paddle.set_device(dev.single)
        self.layer = layer
        self.layer.eval()
        self.device = dev.single
        self.precision = "fp32"
        self.backend = "paddle-dygraph"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import paddle

        with paddle.no_grad():
            return self.layer(paddle.to_tensor(batch, dtype="float32")).numpy()
