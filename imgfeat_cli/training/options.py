"""What a training run is given and what it reports: options, per-step figures, the monitor
contract and the result. Plain data, imported by every other training module (and by the CLI)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from imgfeat_cli.common.errors import ImgfeatError

RESULT_FILE = "train_result.json"
LOG_FILE = "train.log"


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
    cpu_threads: Optional[int] = None  # paddle's math threads; None: the cores this process may use
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
    batch_size: int = 0


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
    memory: Optional[Dict[str, Any]] = None  # estimate_bytes, available_bytes, cache_bytes, peak_rss_bytes (CPU)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class TrainingDiverged(ImgfeatError):
    """The loss (or a weight) became NaN or infinite; nothing from that point on was saved."""
