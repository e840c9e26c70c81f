"""``train``: metric-learning training of the feature models (PaddleClas GeneralRecognitionV2 recipe).

One loop for CPU, one GPU, and each rank of a data-parallel run. Design choices that matter to users:

* Exact resume. Everything random is a pure function of the run's seed and its position: the PK
  sampler's generator is saved at the start of each epoch, each sample's augmentation generator is
  derived from ``(seed, epoch, step, position)``, and paddle's generator (dropout) is re-seeded
  every step. So ``latest/`` holds all it takes for a resumed run to produce the weights an
  uninterrupted run would have produced, from an epoch end or from the middle of an epoch.
* Ctrl-C finishes the current step, writes ``latest/`` and exits 130; a second Ctrl-C aborts.
* Checkpoints are complete folders (weights, optimizer, states, exported ``inference/``), swapped
  in atomically, and ``train_result.json`` is rewritten after each epoch in the upstream shape.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.common.system import cpu_count, parse_device
from imgfeat_cli.training.checkpoint import resolve_resume

RESULT_FILE = "train_result.json"
LOG_FILE = "train.log"
CHECKPOINT_DIRS = ("latest", "best_model")


@dataclass
class TrainOptions:
    """Everything a run needs; the CLI fills it from the resolved config."""

    dataset_dir: str
    model_name: str = "PP-ShiTuV2_rec"
    output: str = "output"
    device: str = "cpu"
    num_classes: Optional[int] = None
    epochs: int = 20
    batch_size: Optional[int] = None  # None: the model's recipe default
    learning_rate: Optional[float] = None
    warmup_epochs: int = 5
    resume_path: Optional[str] = None
    resume: bool = False  # continue from <output>/latest when it exists
    overwrite: bool = False  # start again over a previous run in <output>
    pretrain_weight_path: Optional[str] = None  # None: official weights; "none": random init
    log_interval: int = 1
    eval_interval: int = 1
    save_interval: int = 1
    input_size: int = 224
    seed: int = 0
    num_workers: Optional[int] = None
    eval_batch_size: int = 32
    arch: Optional[Dict[str, Any]] = None
    config: Dict[str, Any] = field(default_factory=dict)  # resolved config, saved as config.yaml


@dataclass
class StepInfo:
    epoch: int
    epochs: int
    step: int
    steps: int
    global_step: int
    total_steps: int
    loss: float
    parts: Dict[str, float]
    lr: float
    images_per_s: float


class TrainMonitor:
    """Progress sink for the engine; the CLI subclasses it to draw bars. Defaults do nothing."""

    def step(self, info: StepInfo) -> None:
        """After every optimisation step."""

    def log(self, message: str, level: str = "epoch") -> None:
        """A log line (``level`` is ``step`` for per-step lines, else ``epoch``); already in train.log."""

    def progress(self, task: str, done: int, total: Optional[int]) -> None:
        """Evaluation progress (embedding gallery and query)."""


@dataclass
class TrainResult:
    model_name: str
    output: str
    epochs_done: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    learning_rate: float
    num_classes: int
    best_epoch: Optional[int]
    best_score: Optional[float]
    history: List[Dict[str, Any]]
    seconds: float
    resumed_from: Optional[str]
    best_model_dir: str
    train_result: str

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_devices(text: str) -> Tuple[str, List[int]]:
    """``cpu`` -> ("cpu", []); ``gpu`` -> ("gpu", [0]); ``gpu:0,1`` -> ("gpu", [0, 1])."""
    dev = parse_device(text)
    return dev.kind, list(dev.ids)


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; the second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self, monitor: TrainMonitor) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            monitor.log("interrupt: finishing this step and saving latest/ (Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def prepare_output(opts: TrainOptions) -> Optional[Path]:
    """Decide between a fresh run and a resume; returns the checkpoint prefix to resume from.

    A previous run in the output folder is never overwritten silently: ``--resume`` continues it,
    ``--overwrite`` starts again (its log and result are kept as ``.bak``).
    """
    out = Path(opts.output)
    if opts.resume_path:
        return resolve_resume(opts.resume_path)
    latest = out / "latest"
    if opts.resume:
        if latest.is_dir():
            return resolve_resume(str(latest))
        return None
    if latest.is_dir() and not opts.overwrite:
        raise UsageError(f"output folder {out} already holds a training run",
                         hint="pass --resume to continue it, --overwrite to start again, or choose another --output")
    if opts.overwrite and out.is_dir():
        import shutil

        for p in list(out.glob("epoch_*")) + [out / d for d in CHECKPOINT_DIRS]:
            if p.is_dir():
                shutil.rmtree(p)
        for name in (LOG_FILE, RESULT_FILE):
            fsutil.backup(out / name)
            (out / name).unlink(missing_ok=True)
    return None


def run_train(opts: TrainOptions, monitor: Optional[TrainMonitor] = None,
              stop: Optional[Callable[[int], bool]] = None) -> TrainResult:
    """Train, evaluate and checkpoint as configured. ``stop(global_step)`` returning True acts like
    Ctrl-C after that step (tests use it to interrupt a run at a chosen point)."""
    kind, ids = parse_devices(opts.device)
    if kind == "gpu":
        import paddle

        if not paddle.device.is_compiled_with_cuda():
            raise UsageError(f"device {opts.device} requested but this paddlepaddle build has no CUDA support",
                             hint="install paddlepaddle-gpu, or use -o Global.device=cpu")
        found = paddle.device.cuda.device_count()
        if max(ids) >= found:
            raise UsageError(f"device {opts.device} requested but {found} GPU(s) are visible")
    if len(ids) > 1:
        from imgfeat_cli.training.parallel import launch

        return launch(opts, ids, monitor or TrainMonitor())
    from imgfeat_cli.training.loop import train_process

    return train_process(opts, monitor or TrainMonitor(), stop=stop)


def default_workers(opts: TrainOptions) -> int:
    return opts.num_workers or max(1, cpu_count())


def check_labels(entries: List[Any], num_classes: Optional[int], root: Path) -> int:
    """The class count: ``num_classes`` when given (checked against the labels), else max + 1."""
    labels = [e.label for e in entries]
    low, high = min(labels), max(labels)
    if low < 0:
        bad = next(e for e in entries if e.label < 0)
        raise DatasetError(f"{root / 'train.txt'}:{bad.line}: label {bad.label} is negative",
                           hint="labels are class ids 0..N-1")
    if num_classes is not None and high >= num_classes:
        bad = next(e for e in entries if e.label >= num_classes)
        raise UsageError(f"Train.num_classes is {num_classes} but {root / 'train.txt'}:{bad.line} has label {bad.label}",
                         hint=f"set -o Train.num_classes={high + 1} or leave it unset (read from the dataset)")
    return num_classes or high + 1


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
