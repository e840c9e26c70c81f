"""ONNX: the paddle -> ONNX conversion (paddle2onnx, once per model, cached) and the onnxruntime runner.

The converted graph is cached next to the folder under ``.imgfeat/`` (keyed by the model files'
sha256), or in the imgfeat cache when the folder is read-only. onnxruntime and OpenVINO both run it;
an ONNX-only folder (``imgfeat quantize``) is run as it is. onnxruntime's optimised graph is never
saved: it is tied to the CPU's instruction set, so it is rebuilt when a session opens.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.cache import cache_root
from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import cpu_count, parse_device
from imgfeat_cli.models.files import InferenceFiles

#: opset 13: what paddle2onnx and PaddleX's own high-performance mode use for these models.
OPSET = 13


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def onnxruntime_gpu_available() -> bool:
    """Whether onnxruntime here has a GPU provider (the onnxruntime-gpu package)."""
    if not onnxruntime_available():
        return False
    import onnxruntime

    return bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers()))


def need_onnxruntime() -> None:
    if not onnxruntime_available():
        raise UsageError("the onnxruntime backend needs onnxruntime and paddle2onnx (imgfeat's own dependencies: "
                         "is the install broken?)", hint="pip install onnxruntime paddle2onnx, or use --backend paddle")


def onnx_path(files: InferenceFiles) -> Path:
    """Where the folder's ONNX graph is: its own, or the converted one (next to the folder when
    writable, else in the cache)."""
    if files.onnx is not None:
        return files.onnx
    key = files.sha256()[:16]
    local = files.folder / ".imgfeat" / f"model-{key}.onnx"
    # the owner-write bit as well as access(): root may write anywhere, but a folder marked
    # read-only (a shared model store, an unpacked official model) should stay untouched
    folder = files.folder
    if local.is_file() or (os.access(folder, os.W_OK) and folder.stat().st_mode & stat.S_IWUSR):
        return local
    return cache_root() / "onnx" / f"model-{key}.onnx"


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """paddle2onnx, polygraphy and the quantisation tools print progress on both fds (C++ and
    Python); keep stdout clean for results and stderr for imgfeat's own messages, unless
    IMGFEAT_DEBUG is set."""
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


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else exc.__class__.__name__)[:200]


def _discard(tmp: Path) -> None:
    """Remove a failed conversion's temp file, and its folder (``.imgfeat/``) when that is left empty."""
    tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        tmp.parent.rmdir()


#: The conversion, run in a child process: paddle2onnx is native code that aborts the whole
#: process (SIGABRT, exit 134; or exit 255) on programs it cannot read, so it must not be this one.
_CONVERT = ("import sys, warnings\n"
            "warnings.filterwarnings('ignore')\n"
            "import paddle2onnx\n"
            "paddle2onnx.export(sys.argv[1], sys.argv[2], sys.argv[3], opset_version=int(sys.argv[4]),\n"
            "                   enable_onnx_checker=True, verbose=False)\n")


def _child_failure(proc: "subprocess.CompletedProcess[str]") -> str:
    """Why the conversion child failed, in a few words: its error line, else how it ended."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr or "")
    errors = [ln.split("[ERROR]", 1)[1].strip() for ln in text.splitlines() if "[ERROR]" in ln]
    if errors:
        return errors[-1][:200]
    if proc.returncode < 0:
        try:
            return f"paddle2onnx crashed ({signal.Signals(-proc.returncode).name})"
        except ValueError:
            return f"paddle2onnx crashed (signal {-proc.returncode})"
    last = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (last[-1] if last else f"paddle2onnx exited with status {proc.returncode}")[:200]


def _export(files: InferenceFiles, tmp: Path) -> None:
    """Run paddle2onnx on the folder into ``tmp`` in a child process; raise :class:`ModelError`
    with its reason when it fails or crashes. Its chatter stays in the child (on stderr with
    IMGFEAT_DEBUG)."""
    debug = os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0")
    sys.stdout.flush()
    proc = subprocess.run([sys.executable, "-c", _CONVERT, str(files.program), str(files.params), str(tmp),
                           str(OPSET)], stdin=subprocess.DEVNULL, stdout=2 if debug else subprocess.DEVNULL,
                          stderr=None if debug else subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        raise ModelError(f"paddle2onnx could not convert {files.folder}: {_child_failure(proc)}",
                         hint="use --backend paddle")


def convert_to_onnx(files: InferenceFiles, log: Callable[[str], None] = lambda m: None) -> Path:
    """The folder's ONNX graph, converting with paddle2onnx the first time (in a child process,
    written under a temp name and renamed, so a crash or Ctrl-C leaves no half file and never ends
    this process). Raises :class:`ModelError` when the conversion fails."""
    dest = onnx_path(files)
    if dest.is_file():
        return dest
    need_onnxruntime()
    log(f"converting {files.folder} to ONNX (once; cached as {dest}) ...")
    t0 = time.perf_counter()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = fsutil.temp_file(dest, suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise ModelError(f"cannot convert {files.folder} to ONNX: {_last_line(exc)}", hint="use --backend paddle") from None
    try:
        _export(files, Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        _discard(Path(tmp))
        raise
    log(f"converted in {time.perf_counter() - t0:.1f} s")
    return dest


def ort_session(path: Path, threads: int, providers: Optional[List[Any]] = None) -> Any:
    """An onnxruntime session with every graph optimisation on (3x faster than the basic level
    for PP-ShiTuV2_rec), ``threads`` intra-op threads, and no spin-waiting between operators:
    spinning threads take the CPU from imgfeat's decode threads and from other processes. End to
    end on 2 cores (256 images, batch 8) it made no difference on a quiet machine (59.1 vs 59.7
    images/s) and cost 17% on a loaded one (25.3 vs 30.3)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
        raise ModelError(f"onnxruntime cannot load {path}: {_last_line(exc)}",
                         hint="re-create the folder (imgfeat quantize / imgfeat export)") from None


class OrtRunner:
    """onnxruntime session over the folder's ONNX graph (CUDA/TensorRT providers when present)."""

    def __init__(self, files: InferenceFiles, device: Optional[str], cpu_threads: Optional[int],
                 precision: str = "fp32", log: Callable[[str], None] = lambda m: None) -> None:
        need_onnxruntime()
        import onnxruntime as ort

        path = convert_to_onnx(files, log)
        dev = parse_device(device)
        providers: List[Any] = ["CPUExecutionProvider"]
        if dev.is_gpu:
            avail = ort.get_available_providers()
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
            if not gpu:
                raise ModelError("onnxruntime has no CUDA provider here", hint="pip install onnxruntime-gpu, or use --backend paddle")
            providers = [(p, {"device_id": dev.first}) for p in gpu] + providers
        self.session = ort_session(path, cpu_threads or cpu_count(), providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = dev.single
        self.backend = f"onnxruntime ({self.session.get_providers()[0].replace('ExecutionProvider', '')})"
        self.precision = precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
