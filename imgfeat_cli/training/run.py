"""Entry point of ``train``: one process (CPU or one GPU) or a data-parallel launch on several GPUs."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from imgfeat_cli.common.threads import use_math_threads
from imgfeat_cli.training.options import TrainMonitor, TrainOptions, TrainResult
from imgfeat_cli.training.setup import check_device
from imgfeat_cli.training.trainer import Trainer


def run_train(opts: TrainOptions, monitor: Optional[TrainMonitor] = None,
              stop: Optional[Callable[[int], bool]] = None) -> TrainResult:
    """Train, evaluate and checkpoint as configured. ``stop(global_step)`` returning True acts like
    Ctrl-C after that step (tests use it to interrupt a run at a chosen point)."""
    opts = replace(opts, cpu_threads=use_math_threads(opts.cpu_threads))  # before anything imports paddle
    _, ids = check_device(opts)
    if len(ids) > 1:
        from imgfeat_cli.training.parallel import launch

        return launch(opts, ids, monitor or TrainMonitor())
    return Trainer(opts, monitor, stop=stop).run()
