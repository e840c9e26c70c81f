"""``auto``: measure the candidate engines on this machine once, keep the fastest within the accuracy
bar, and remember the decision.

The decision is cached (``$IMGFEAT_HOME/hpi/``) per model files, machine (CPU model and flags),
library versions, device, threads, batch size and the candidates, so only the first run pays (a
few seconds for PP-ShiTuV2_rec). The measurement is built to survive a shared, noisy machine: the
input is image-like (drawn shapes through the model's own pre-processing, not noise), every
candidate runs twice per round in a rotated order, each engine's speed is its fastest run (other
processes only ever slow a run down, so the fastest is the least disturbed; medians moved by 30%
between runs on a loaded 2-core box), and the favourite
(:data:`~imgfeat_cli.models.engines.PREFERENCE`) is kept unless another engine is at least
:data:`MARGIN` faster.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
import warnings
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common import fsutil, paths
from imgfeat_cli.common.cache import cache_root
from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import cpu_count, cpu_flags, cpu_model, parse_device
from imgfeat_cli.models.engines import COSINE_BAR, PREFERENCE, HpiChoice, make_runner, needs_onnx
from imgfeat_cli.models.files import InferenceFiles
from imgfeat_cli.models.onnx import convert_to_onnx
from imgfeat_cli.models.preprocess import l2_normalize

#: Bump when the way decisions are made changes, so old decisions are measured again.
ALGORITHM = 2
ROUNDS, MIN_ROUNDS, BUDGET_S = 5, 3, 15.0
#: How much faster (fastest run against fastest run) an engine must be to replace the favourite.
MARGIN = 1.08
LIBRARIES = ("paddlepaddle", "paddlepaddle-gpu", "onnxruntime", "onnxruntime-gpu", "paddle2onnx", "openvino")

Log = Callable[[str], None]


def silent(message: str) -> None:
    """The log of callers that gave none."""


def sample_images(n: int, seed: int = 0, size: int = 256) -> List[np.ndarray]:
    """``n`` RGB uint8 images that look like photos to a network: a lit gradient, filled shapes,
    sensor noise and a slight blur (a bf16 or int8 error shows on these, not on noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for _ in range(n):
        img = rng.uniform(40, 215, 3) + (xx[..., None] * rng.uniform(-60, 60, 3) + yy[..., None] * rng.uniform(-60, 60, 3))
        img = img.astype(np.float32)
        for _ in range(int(rng.integers(3, 9))):
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            if rng.random() < 0.5:
                x1, y1 = (int(v) for v in rng.integers(0, size, 2))
                cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
            else:
                cv2.circle(img, (x0, y0), int(rng.integers(8, size // 3)), colour, -1)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        out.append(np.clip(cv2.GaussianBlur(img, (3, 3), 0), 0, 255).astype(np.uint8))
    return out


def _versions() -> Dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def decision_key(files: InferenceFiles, device: Optional[str], threads: int, batch_size: int,
                 pool: List[HpiChoice]) -> str:
    doc = [ALGORITHM, files.sha256(), str(parse_device(device)), threads, batch_size, [c.label for c in pool],
           cpu_model(), sorted(cpu_flags()), _versions()]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:24]


def _read_memo(path: Any) -> Optional[HpiChoice]:
    if paths.not_a_file(path) is not None:  # missing, or a FIFO whose read would block for ever
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return HpiChoice(str(doc["backend"]), str(doc["precision"]), str(doc.get("reason", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose(files: InferenceFiles, device: Optional[str], cpu_threads: Optional[int], batch_size: int,
           prep: Callable[[np.ndarray], np.ndarray], pool: List[HpiChoice], log: Log) -> Tuple[HpiChoice, Any]:
    """The engine to run (from the cache, or measured now) and its ready runner."""
    if not pool:
        raise UsageError("no available backend matches the requested backend and precision here")
    if len(pool) == 1:
        return HpiChoice(pool[0].backend, pool[0].precision, "the only engine"), \
            make_runner(files, device, cpu_threads, pool[0], log)
    threads = cpu_threads or cpu_count()
    memo = cache_root() / "hpi" / f"{decision_key(files, device, threads, batch_size, pool)}.json"
    cached = _read_memo(memo)
    if cached is not None and cached.key in {c.key for c in pool}:
        try:
            return cached, make_runner(files, device, cpu_threads, cached, log)
        except (ModelError, UsageError) as exc:
            log(f"the engine chosen earlier ({cached.label}) cannot load now ({exc.message}): measuring again")
    choice, runner, doc = _measure(files, device, cpu_threads, batch_size, prep, pool, log)
    if not doc:
        return choice, runner
    try:
        fsutil.write_json(memo, {**doc, "backend": choice.backend, "precision": choice.precision,
                                 "reason": choice.reason, "batch_size": batch_size, "threads": threads,
                                 "device": str(parse_device(device)), "cpu": cpu_model(), "versions": _versions()})
    except OSError as exc:
        log(f"cannot remember the engine decision in {memo.parent} ({exc.strerror or exc}): it is measured again next time")
    return choice, runner


def _usable_pool(files: InferenceFiles, pool: List[HpiChoice], log: Log) -> List[HpiChoice]:
    """Convert once up front; when that fails, say why in one line and keep the paddle engines
    (a Python ``RuntimeWarning`` when nobody listens to ``log``)."""
    if files.is_onnx or not any(needs_onnx(c) for c in pool):
        return pool
    try:
        convert_to_onnx(files, log)
    except (ModelError, UsageError) as exc:
        rest = [c for c in pool if not needs_onnx(c)]
        message = f"{exc.message}; running {rest[0].backend if rest else 'nothing'} instead"
        if log is silent:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        log(message)
        return rest
    return pool


def _measure(files: InferenceFiles, device: Optional[str], cpu_threads: Optional[int], batch_size: int,
             prep: Callable[[np.ndarray], np.ndarray], pool: List[HpiChoice],
             log: Log) -> Tuple[HpiChoice, Any, Dict[str, Any]]:
    usable = _usable_pool(files, pool, log)
    if len(usable) < len(pool):  # a failed conversion is not remembered: the next run tries again
        choice, runner = choose(files, device, cpu_threads, batch_size, prep, usable, log)
        return choice, runner, {}
    batch = np.stack([prep(img) for img in sample_images(batch_size)]).astype(np.float32)
    log(f"choosing the engine for {files.folder.name} at batch {batch_size}, threads {cpu_threads or cpu_count()} "
        f"(once per model and machine): {', '.join(c.label for c in pool)} ...")
    ref_choice = HpiChoice("onnxruntime", pool[0].precision) if files.is_onnx else HpiChoice("paddle", "fp32")
    live: Dict[HpiChoice, Any] = {}
    cosine: Dict[HpiChoice, float] = {}
    reference: Optional[np.ndarray] = None
    for cand in [ref_choice] + [c for c in pool if c != ref_choice]:
        try:
            runner = make_runner(files, device, cpu_threads, cand, log)
            out = runner(batch)
            runner(batch)  # the second run is warm (oneDNN primitives, OpenVINO's first inference)
        except (ModelError, UsageError) as exc:
            log(f"  {cand.label}: unavailable ({exc.message})")
            continue
        if reference is None:
            reference = l2_normalize(out)
        cosine[cand] = float((l2_normalize(out) * reference).sum(axis=1).min())
        if cosine[cand] < COSINE_BAR[cand.precision]:
            log(f"  {cand.label}: min cosine {cosine[cand]:.6f} to paddle fp32, below {COSINE_BAR[cand.precision]}: rejected")
        elif cand in pool:
            live[cand] = runner
    if not live:
        raise ModelError("no engine met the accuracy bar", hint="use --backend paddle --precision fp32")
    times = _rounds(live, batch)
    favourite = next((c for c in (HpiChoice(*k) for k in PREFERENCE) if c in live), next(iter(live)))
    fastest = {c: min(times[c]) for c in live}
    speedup = {c: fastest[favourite] / fastest[c] for c in live}
    best = max(live, key=lambda c: speedup[c])
    if speedup[best] < MARGIN:
        best = favourite
    for c in live:
        log(f"  {c.label}: {batch_size / fastest[c]:.1f} img/s, x{speedup[c]:.2f} of "
            f"{favourite.label}, min cosine {cosine[c]:.6f}{'  <- chosen' if c == best else ''}")
    reason = (f"{speedup[best]:.2f}x {favourite.label} (margin {MARGIN})" if best != favourite
              else f"no engine beat it by {MARGIN}x")
    doc = {"measurements": [{"backend": c.backend, "precision": c.precision, "min_cosine": cosine[c],
                             "within_bar": c in live, "images_per_s": batch_size / fastest[c] if c in live else None,
                             "images_per_s_median": batch_size / statistics.median(times[c]) if c in live else None,
                             "speedup": speedup.get(c)} for c in cosine],
           "runs": len(times[favourite]), "favourite": favourite.label}
    return HpiChoice(best.backend, best.precision, reason), live[best], doc


def _rounds(live: Dict[HpiChoice, Any], batch: np.ndarray) -> Dict[HpiChoice, List[float]]:
    """Seconds of every run of each engine: two back-to-back runs per round, engines in a rotated
    order; :data:`ROUNDS` rounds, or fewer (not below :data:`MIN_ROUNDS`) once :data:`BUDGET_S`
    seconds are spent."""
    names = list(live)
    times: Dict[HpiChoice, List[float]] = {c: [] for c in names}
    start = time.perf_counter()
    for r in range(ROUNDS):
        for c in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(2):
                t = time.perf_counter()
                live[c](batch)
                times[c].append(time.perf_counter() - t)
        if r + 1 >= MIN_ROUNDS and time.perf_counter() - start > BUDGET_S:
            break
    return times
