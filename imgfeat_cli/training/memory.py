"""Training memory on CPU: the peak a run will need, checked before it starts, and how freed memory
is kept for the next step.

The peak is dominated by the activations backward needs (about 46 MB per image for PP-ShiTuV2_rec
at 224 px); at PaddleX's batch of 128 that is 6-8 GB, enough to have an 8 GB laptop kill the run
half-way. So :func:`plan_memory` estimates the peak from the batch size and input side (figures
measured with ``benchmarks/train_speed.py``'s memory probe; see docs/training.md) and the run is
refused, with a batch size that fits, when the estimate exceeds the memory available now.

The decoded-image cache (see :mod:`.data`) only saves time: it gets what is left, up to its limit.

Freed memory kept (:func:`keep_freed_memory`): paddle's CPU allocator hands every tensor to glibc,
which serves the large ones with fresh ``mmap`` pages and unmaps them when freed, so each step
page-faults its activations in again (400k faults, 0.7 s of system time per step at batch 32; 2.2M
and 3.6 s at 64). Served from the heap and kept instead, a step costs 10% less CPU at batch 32 and
20% less at 64, for a higher peak (+17% at 32, +55% at 64, measured: docs/training.md). It is used
where it pays (16 images of 224 px per batch or more) and only when that higher peak still fits.
"""
from __future__ import annotations

import ctypes
import math
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from imgfeat_cli.common.errors import UsageError

GB = 1e9

#: (fixed bytes: paddle, the model, its gradients and optimiser state, evaluation and export;
#: activation bytes per image at 224 x 224), measured as the peak RSS of training steps at several
#: batch sizes (docs/training.md, "Memory"). Activations scale with the pixel count.
FOOTPRINT: Dict[str, Tuple[float, float]] = {
    "PP-ShiTuV2_rec": (1.2e9, 55e6),
    "PP-ShiTuV2_rec_CLIP_vit_base": (2.4e9, 120e6),
    "PP-ShiTuV2_rec_CLIP_vit_large": (6.0e9, 330e6),
}
#: the classifier (training only): weights, gradient and momentum, float32, per class
HEAD_BYTES_PER_CLASS = 3 * 4 * 512
#: memory the estimate leaves to the rest of the machine (and to its own error)
MARGIN = 0.1
#: the peak's growth when freed memory is kept (measured up to +55%), and the smallest batch (in
#: 224-px images) where keeping it pays (at 8 there are few faults to save)
KEEP_FREED_GROWTH = 0.6
KEEP_FREED_FROM = 16
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


@dataclass
class MemoryPlan:
    """The estimate for a run, what the machine had, and the peak measured (filled in at the end)."""

    estimate_bytes: int
    available_bytes: Optional[int]
    cache_bytes: int  # allowed for the decoded-image cache
    keep_freed: bool = False  # freed memory kept for the next step (see the module's notes)
    peak_rss_bytes: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def estimate_peak(model_name: str, batch_size: int, input_size: int, num_classes: int) -> int:
    """Peak resident memory of a CPU training run, without the decoded-image cache."""
    fixed, per_image = FOOTPRINT.get(model_name, FOOTPRINT["PP-ShiTuV2_rec"])
    scale = (input_size / 224.0) ** 2
    return int(fixed + per_image * scale * batch_size + HEAD_BYTES_PER_CLASS * num_classes)


def available_memory() -> Optional[int]:
    """Bytes this process can still get: the kernel's MemAvailable, lowered by a cgroup (container)
    limit when there is one. None where neither can be read (not Linux): nothing is refused then."""
    found = []
    meminfo = _read("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit and usage and limit.strip().isdigit() and usage.strip().isdigit():
            if int(limit) < 1 << 60:  # "no limit" reads as max or a huge number
                found.append(max(0, int(limit) - int(usage)))
            break
    return min(found) if found else None


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def plan_memory(model_name: str, batch_size: int, input_size: int, num_classes: int, cache_limit: int,
                batch_chosen: bool) -> MemoryPlan:
    """The estimate, refused when it does not fit (``batch_chosen``: the user set the batch size)."""
    need = estimate_peak(model_name, batch_size, input_size, num_classes)
    avail = available_memory()
    if avail is None:
        return MemoryPlan(need, None, cache_limit)
    usable = avail * (1 - MARGIN)
    if need > usable:
        raise UsageError(f"training {model_name} at batch {batch_size}, input {input_size} needs about "
                         f"{need / GB:.1f} GB of memory; {avail / GB:.1f} GB is available",
                         hint=_fitting_hint(model_name, batch_size, input_size, num_classes, usable, batch_chosen))
    keep = (batch_size * (input_size / 224.0) ** 2 >= KEEP_FREED_FROM and need * (1 + KEEP_FREED_GROWTH) <= usable)
    if keep:
        need = int(need * (1 + KEEP_FREED_GROWTH))
    return MemoryPlan(need, avail, int(max(0.0, min(cache_limit, (usable - need) / 2))), keep)


def keep_freed_memory() -> bool:
    """Have glibc serve large blocks from the heap and keep what is freed (no ``mmap``/``munmap`` per
    tensor, no trimming), for this process from now on. False where the C library has no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def _fitting_hint(model_name: str, batch_size: int, input_size: int, num_classes: int, usable: float,
                  batch_chosen: bool) -> str:
    fits = 0
    for bs in range(batch_size - batch_size % 4, 3, -4):
        if estimate_peak(model_name, bs, input_size, num_classes) <= usable:
            fits = bs
            break
    if fits:
        size = estimate_peak(model_name, fits, input_size, num_classes)
        return (f"use -o Train.batch_size={fits} (about {size / GB:.1f} GB)"
                + ("" if batch_chosen else " or free memory") + ", or a smaller -o Train.input_size")
    side = int(224 * math.sqrt(max(usable - estimate_peak(model_name, 0, input_size, num_classes), 0)
                               / (4 * FOOTPRINT.get(model_name, FOOTPRINT["PP-ShiTuV2_rec"])[1])))
    return (f"even batch 4 does not fit at input {input_size}: free memory, or use -o Train.batch_size=4 "
            f"with -o Train.input_size={max(32, side - side % 32)} or less")


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
