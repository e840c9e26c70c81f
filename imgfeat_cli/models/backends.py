"""High-performance inference: backend and precision selection for inference folders.

Backends: ``paddle`` (``paddle.inference``; oneDNN on CPU, CUDA on GPU) and ``onnxruntime`` (the
folder converted once with paddle2onnx, cached next to it under ``.imgfeat/`` keyed by the model
files' sha256, or in the imgfeat cache when the folder is read-only). Precisions: ``fp32``;
``bf16`` on CPUs with native bf16 (``avx512_bf16``/``amx_bf16``) through oneDNN, refused elsewhere
rather than emulated slowly; ``fp16`` on GPUs.

``auto`` (``--hpi``, ``use_hpip=True``) measures every available combination on a calibration batch
at the requested batch size, keeps those whose L2-normalised features stay within the accuracy bar
of paddle fp32 (cosine >= 0.9999 for fp32 backends, >= 0.999 for bf16/fp16), and picks the fastest.
The decision is cached per model hash, device, threads and batch size, so only the first run pays.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import stat
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.cache import cache_root
from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import cpu_count, native_bf16, parse_device
from imgfeat_cli.models.registry import find_inference_files
from imgfeat_cli.models.runners import InferenceRunner

BACKENDS = ("paddle", "onnxruntime", "auto")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
COSINE_BAR = {"fp32": 0.9999, "bf16": 0.999, "fp16": 0.999}


@dataclass(frozen=True)
class HpiChoice:
    backend: str
    precision: str
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def _need_onnxruntime() -> None:
    if not onnxruntime_available():
        raise UsageError("the onnxruntime backend needs onnxruntime and paddle2onnx",
                         hint='pip install "imgfeat[hpi]" (or pip install onnxruntime paddle2onnx)')


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


def validate(backend: str, precision: str, device_kind: str) -> None:
    """Refuse combinations that cannot run well here, before any model is loaded."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if device_kind != "cpu":
            raise UsageError("bf16 is a CPU precision here", hint="use --precision fp16 on GPUs")
        if backend == "onnxruntime":
            raise UsageError("bf16 runs on the paddle backend (oneDNN)", hint="use --backend paddle --precision bf16")
        if not native_bf16():
            raise UsageError("this CPU has no native bf16 (avx512_bf16 or amx_bf16): bf16 would be emulated and slower",
                             hint="use --precision fp32, or --hpi to pick the fastest that is available")
    if precision == "fp16":
        if device_kind == "cpu":
            raise UsageError("fp16 is a GPU precision", hint="on CPU use bf16 (where supported) or fp32")
        if backend == "onnxruntime":
            raise UsageError("fp16 runs on the paddle backend", hint="use --backend paddle --precision fp16")
    if backend == "onnxruntime":
        _need_onnxruntime()


def candidates(device_kind: str) -> List[HpiChoice]:
    """Every combination worth measuring on this machine."""
    out = [HpiChoice("paddle", "fp32")]
    if device_kind == "cpu" and native_bf16():
        out.append(HpiChoice("paddle", "bf16"))
    if device_kind == "gpu":
        out.append(HpiChoice("paddle", "fp16"))
    if onnxruntime_available():
        out.append(HpiChoice("onnxruntime", "fp32"))
    return out


def onnx_path(model_dir: Path, prog: Path, params: Path) -> Path:
    """Where the converted model lives: next to the folder when writable, else in the cache."""
    key = model_hash(prog, params)[:16]
    local = model_dir / ".imgfeat" / f"model-{key}.onnx"
    # the owner-write bit as well as access(): root may write anywhere, but a folder marked
    # read-only (a shared model store, an unpacked official model) should stay untouched
    if local.is_file() or (os.access(model_dir, os.W_OK) and model_dir.stat().st_mode & stat.S_IWUSR):
        return local
    return cache_root() / "onnx" / f"model-{key}.onnx"


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """paddle2onnx and polygraphy print progress on both fds (C++ and Python); keep stdout clean
    for results and stderr for imgfeat's own messages, unless IMGFEAT_DEBUG is set."""
    if os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def convert_to_onnx(prog: Path, params: Path, dest: Path) -> Path:
    """paddle2onnx once; written under a temp name and renamed, so a crash leaves no half file."""
    if dest.is_file():
        return dest
    _need_onnxruntime()
    import paddle2onnx

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = fsutil.temp_file(dest, suffix=".part")
    os.close(fd)
    try:
        with _silenced():
            paddle2onnx.export(str(prog), str(params), str(tmp), opset_version=13, enable_onnx_checker=True,
                               verbose=False)
        os.replace(tmp, dest)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ModelError(f"paddle2onnx could not convert {prog.parent}: {str(exc).strip().splitlines()[-1][:200]}",
                         hint="use --backend paddle") from None
    return dest


class OrtRunner:
    """onnxruntime session over the converted folder (CUDA/TensorRT providers when present)."""

    def __init__(self, model_dir: Path, device: Optional[str], cpu_threads: Optional[int]) -> None:
        _need_onnxruntime()
        import onnxruntime as ort

        prog, params = find_inference_files(model_dir)
        path = convert_to_onnx(prog, params, onnx_path(model_dir, prog, params))
        dev = parse_device(device)
        kind, dev_id = dev.kind, dev.first
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cpu_threads or cpu_count()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers: List[Any] = ["CPUExecutionProvider"]
        if kind == "gpu":
            avail = ort.get_available_providers()
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
            if not gpu:
                raise ModelError("onnxruntime has no CUDA provider here", hint="pip install onnxruntime-gpu, or use --backend paddle")
            providers = [(p, {"device_id": dev_id}) for p in gpu] + providers
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = f"gpu:{dev_id}" if kind == "gpu" else "cpu"
        self.backend = f"onnxruntime ({self.session.get_providers()[0].replace('ExecutionProvider', '')})"
        self.precision = "fp32"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def make_runner(model_dir: Path, device: Optional[str], cpu_threads: Optional[int], choice: HpiChoice) -> Any:
    if choice.backend == "onnxruntime":
        return OrtRunner(model_dir, device, cpu_threads)
    return InferenceRunner(model_dir, device, cpu_threads, precision=choice.precision)


def _normalise(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def measure(runner: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, repeats: int = 3) -> Tuple[float, np.ndarray]:
    """(median seconds per batch after one warm-up run, the output)."""
    out = runner(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = runner(batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def calibration_batch(input_hw: Tuple[int, int], batch_size: int, seed: int = 0) -> np.ndarray:
    """A smooth, image-like normalised batch (noise alone is a poor proxy for bf16 error)."""
    h, w = input_hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    imgs = []
    for _ in range(batch_size):
        f = rng.uniform(0.01, 0.08, size=(3, 2))
        ph = rng.uniform(0, 6.3, size=3)
        chans = [np.sin(xx * f[c, 0] + ph[c]) * np.cos(yy * f[c, 1]) for c in range(3)]
        imgs.append(np.stack(chans) * 1.5 + rng.normal(0, 0.1, size=(3, h, w)).astype(np.float32))
    return np.stack(imgs).astype(np.float32)


def choose_auto(model_dir: Path, device: Optional[str], cpu_threads: Optional[int], batch_size: int,
                input_hw: Tuple[int, int], backend: str = "auto", precision: str = "auto",
                log: Callable[[str], None] = lambda m: None) -> Tuple[HpiChoice, Any]:
    """Measure the candidates (restricted by a fixed backend or precision) and return the fastest
    one within the accuracy bar, with its ready runner. Cached per model/device/threads/batch."""
    kind = parse_device(device).kind
    pool = [c for c in candidates(kind) if backend in ("auto", c.backend) and precision in ("auto", c.precision)]
    if not pool:
        raise UsageError(f"no available backend matches --backend {backend} --precision {precision} here")
    prog, params = find_inference_files(model_dir)
    key = hashlib.sha256(json.dumps([model_hash(prog, params), device or "cpu", cpu_threads or cpu_count(),
                                     batch_size, [c.label for c in pool]]).encode()).hexdigest()[:24]
    memo = cache_root() / "hpi" / f"{key}.json"
    if memo.is_file():
        doc = json.loads(memo.read_text(encoding="utf-8"))
        choice = HpiChoice(doc["backend"], doc["precision"], "cached measurement")
        return choice, make_runner(model_dir, device, cpu_threads, choice)
    batch = calibration_batch(input_hw, batch_size)
    reference: Optional[np.ndarray] = None
    results: List[Dict[str, Any]] = []
    best: Optional[Tuple[float, HpiChoice, Any]] = None
    for cand in [HpiChoice("paddle", "fp32")] + [c for c in pool if c != HpiChoice("paddle", "fp32")]:
        try:
            runner = make_runner(model_dir, device, cpu_threads, cand)
            secs, out = measure(runner, batch)
        except (ModelError, UsageError) as exc:
            log(f"hpi: {cand.label} unavailable: {exc.message}")
            continue
        if reference is None:
            reference = _normalise(out)
        cos = float((_normalise(out) * reference).sum(axis=1).min())
        ok = cos >= COSINE_BAR[cand.precision]
        results.append({"backend": cand.backend, "precision": cand.precision, "seconds": secs,
                        "images_per_s": batch_size / secs, "min_cosine": cos, "within_bar": ok})
        log(f"hpi: {cand.label}: {batch_size / secs:.1f} img/s, min cosine {cos:.6f}{'' if ok else ' (rejected)'}")
        if ok and cand in pool and (best is None or secs < best[0]):
            best = (secs, cand, runner)
    if best is None:
        raise ModelError("no backend met the accuracy bar", hint="use --backend paddle --precision fp32")
    choice = HpiChoice(best[1].backend, best[1].precision, f"fastest of {len(results)} measured")
    fsutil.write_json(memo, {"backend": choice.backend, "precision": choice.precision, "batch_size": batch_size,
                             "device": device or "cpu", "measurements": results})
    return choice, best[2]
