"""What a run tells the world: ``train.log`` (with per-step lines), per-epoch figures and
``train_result.json`` in PaddleX's shape. (Progress lines on stderr are the CLI's: ``cli.progress``.)"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training.options import LOG_FILE, RESULT_FILE, StepInfo, TrainMonitor, TrainResult


class TrainLog:
    """Lines for ``train.log`` (appended, so a resumed run continues it) and the monitor.

    Lines logged before the output folder may be written (while the run is still being checked)
    are held back and written when :meth:`open` names the file."""

    def __init__(self, monitor: TrainMonitor) -> None:
        self.monitor = monitor
        self.path: Optional[Path] = None
        self._pending: List[str] = []

    def open(self, path: Optional[Path]) -> None:
        self.path = path
        pending, self._pending = self._pending, []
        if path is not None and pending:
            self._append(pending)

    def _append(self, lines: List[str]) -> None:
        assert self.path is not None
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)

    def __call__(self, message: str, level: str = "epoch") -> None:
        line = f"[{_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        if self.path is not None:
            self._append([line])
        else:
            self._pending.append(line)
        self.monitor.log(message, level)


class EpochMeter:
    """Images, steps and summed loss parts of one epoch (in this process), for its history record."""

    def __init__(self, world: int = 1) -> None:
        self.start, self.world = time.perf_counter(), world
        self.seen = self.steps = 0
        self.sums: Dict[str, float] = {}
        self.lr: Optional[float] = None  # the rate of the epoch's last step

    def add(self, images: int, values: Dict[str, float], lr: float) -> None:
        self.seen, self.steps, self.lr = self.seen + images, self.steps + 1, lr
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def images_per_s(self) -> float:
        return self.seen * self.world / max(time.perf_counter() - self.start, 1e-9)

    def record(self, epoch: int, lr: float) -> Dict[str, Any]:
        """``lr``: the rate when no step ran in this process (the meter's own otherwise)."""
        return {"epoch": epoch, "seconds": round(time.perf_counter() - self.start, 3),
                "images_per_s": round(self.images_per_s(), 2), "lr": self.lr if self.lr is not None else lr,
                **{k: round(v / max(1, self.steps), 6) for k, v in self.sums.items()}}


def step_line(info: StepInfo) -> str:
    return (f"epoch {info.epoch}/{info.epochs} step {info.step}/{info.steps} loss {info.loss:.4f} "
            + " ".join(f"{k} {v:.4f}" for k, v in info.parts.items())
            + f" lr {info.lr:.6f} {info.images_per_s:.1f} img/s")


def write_result(out: Path, model_name: str, state: Dict[str, Any], done: bool, run: Dict[str, Any]) -> None:
    """``train_result.json`` in PaddleX's shape: ``best`` and ``last_1``.. (newest saved epochs first)."""
    scores = {r["epoch"]: (r.get("metrics") or {}).get("recall1") for r in state["history"]}
    epochs = sorted((int(p.name.split("_", 1)[1]) for p in out.glob("epoch_*") if p.name.split("_", 1)[1].isdigit()),
                    reverse=True)
    models: Dict[str, Any] = {}
    for i, ep in enumerate(epochs[:5], start=1):
        models[f"last_{i}"] = ckpt.model_entry(out, f"epoch_{ep}", scores.get(ep))
    if (out / "best_model").is_dir():
        models["best"] = ckpt.model_entry(out, "best_model", state["best_score"])
    doc = {"model_name": model_name, "done_flag": done, "config": "config.yaml", "train_log": LOG_FILE,
           "visualdl_log": "", "label_dict": "", "models": models,
           "best_epoch": state["best_epoch"], "run": run, "history": state["history"]}
    fsutil.write_json(out / RESULT_FILE, doc)


def read_result(output: str, epochs: int) -> TrainResult:
    """The result of a run from its ``train_result.json`` (how the parent of a data-parallel run,
    which does not train itself, reports)."""
    import json

    doc = json.loads((Path(output) / RESULT_FILE).read_text(encoding="utf-8"))
    run, history = doc.get("run", {}), doc.get("history", [])
    return TrainResult(doc["model_name"], output, len(history), epochs, run.get("steps_per_epoch", 0),
                       run.get("batch_size", 0), run.get("learning_rate", 0.0), run.get("num_classes", 0),
                       doc.get("best_epoch"), (doc.get("models", {}).get("best") or {}).get("score"), history,
                       float(sum(r.get("seconds", 0.0) for r in history)), None,
                       str(Path(output) / "best_model"), str(Path(output) / RESULT_FILE))
