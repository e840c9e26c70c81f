"""The machine: how many cores this process may use, CPU features, and the one device parser.

Every layer asks here, so a thread count or a device string means the same thing everywhere
(inference, decoding, training, Ray actors).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Tuple

from imgfeat_cli.common.errors import UsageError


def cpu_count() -> int:
    """Cores this process may use.

    ``OMP_NUM_THREADS`` wins when it was set before imgfeat was imported (it is how schedulers,
    containers and Ray actors say how many cores a process was given; the value paddle writes at its
    own import does not count), then the CPU affinity/cgroup mask, then ``os.cpu_count``. Threads
    beyond the allocation only fight each other: 4 threads in a 2-core actor ran 1.45x slower.
    """
    from imgfeat_cli.common.startup import OMP_NUM_THREADS_AT_START

    env = (OMP_NUM_THREADS_AT_START or "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def usable_threads(requested: Optional[int], what: str = "--threads",
                   note: Optional[Callable[[str], None]] = None) -> Optional[int]:
    """The one rule for a thread count a user gives for work on this machine (inference threads,
    decoding workers): more than the cores this process may use is lowered to them, with a note.
    Threads beyond the cores only wait for each other: on 2 cores ``embed --threads 256`` ran 4x
    slower, 1024 took 97 s instead of 5 and 10000 sat in engine selection for minutes. ``None``
    (the default) stays ``None``. Ray actors run elsewhere: their threads are checked against the
    cluster's nodes (``distributed.ray_plan``), not here."""
    cores = cpu_count()
    if requested is None or requested <= cores:
        return requested
    if note is not None:
        note(f"{what} {requested} is more than the {cores} cores this process may use: using {cores}")
    return cores


@lru_cache(maxsize=4)
def _cpuinfo(field: str) -> str:
    """The first ``field`` line of /proc/cpuinfo ('' where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == field:
            return line.split(":", 1)[1].strip()
    return ""


def cpu_flags() -> frozenset:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name (e.g. 'AMD EPYC'), or the architecture where /proc/cpuinfo has none."""
    import platform

    return _cpuinfo("model name") or platform.machine()


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (emulated bf16 is slower than fp32)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@dataclass(frozen=True)
class Device:
    """A parsed device string: ``cpu``, ``gpu`` (= ``gpu:0``), ``gpu:N`` or ``gpu:0,1,...``."""

    kind: str
    ids: Tuple[int, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    @property
    def first(self) -> int:
        """The GPU a single-device job runs on (0 for CPU)."""
        return self.ids[0] if self.ids else 0

    @property
    def single(self) -> str:
        """The string for one device: ``cpu`` or ``gpu:N`` (the first of several)."""
        return f"gpu:{self.first}" if self.is_gpu else "cpu"

    def __str__(self) -> str:
        return f"gpu:{','.join(map(str, self.ids))}" if self.is_gpu else "cpu"


def parse_device(text: Optional[str]) -> Device:
    """The one parser of device strings; ``None`` means CPU. Raises a usage error with the forms."""
    raw = (text or "cpu").strip().lower()
    if raw == "cpu":
        return Device("cpu")
    if raw == "gpu":
        return Device("gpu", (0,))
    if raw.startswith("gpu:"):
        parts = raw[4:].split(",")
        if parts and all(p.isdigit() for p in parts):
            return Device("gpu", tuple(int(p) for p in parts))
    raise UsageError(f"bad device {text!r}", hint="use cpu, gpu, gpu:N or gpu:0,1,...")


#: Images per forward pass when none is given. On CPU, 8 was the fastest end to end for every
#: backend and precision measured on the 2-core development machine (benchmarks/compare_paddlex.py:
#: batch 16 is 5-15% slower, batch 32 more); GPUs want larger batches.
DEFAULT_BATCH = {"cpu": 8, "gpu": 32}


def default_batch_size(device: Optional[str]) -> int:
    """The one place the default batch size is decided: by device kind."""
    return DEFAULT_BATCH[parse_device(device).kind]


def check_threads(threads: Optional[int]) -> None:
    """The one check of a requested thread count (``None``: the default, :func:`cpu_count`)."""
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise UsageError(f"threads must be >= 1, got {threads}")
