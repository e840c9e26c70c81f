"""Data-parallel training on several GPUs through Paddle's own launcher (``paddle.distributed.spawn``).

Each spawned process initialises the collective environment, trains its share of every epoch's
PK batches (see :mod:`imgfeat_cli.training.loop`) and synchronises gradients through
``paddle.DataParallel``. ``Train.batch_size`` is per GPU, as upstream. Rank 0 logs (plain lines on
stderr and train.log), evaluates and saves; the parent reads the result back from the output folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.training.trainer import RESULT_FILE, TrainMonitor, TrainOptions, TrainResult


class _StderrMonitor(TrainMonitor):
    def log(self, message: str, level: str = "epoch") -> None:
        if level != "step":
            print(message, file=sys.stderr, flush=True)


def _worker(opts: TrainOptions) -> None:
    import paddle.distributed as dist

    from imgfeat_cli.training.loop import train_process

    dist.init_parallel_env()
    try:
        train_process(opts, _StderrMonitor(), rank=dist.get_rank(), world=dist.get_world_size())
    except ImgfeatError as exc:
        print(f"Error (rank {dist.get_rank()}): {exc.message}" + (f"\nHint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None


def launch(opts: TrainOptions, gpu_ids: List[int], monitor: TrainMonitor) -> TrainResult:
    import paddle.distributed as dist

    monitor.log(f"launching {len(gpu_ids)} data-parallel processes on GPUs {','.join(map(str, gpu_ids))}")
    try:
        dist.spawn(_worker, args=(opts,), nprocs=len(gpu_ids), gpus=",".join(map(str, gpu_ids)))
    except Exception as exc:  # spawn re-raises a worker's failure as a generic exception
        raise ImgfeatError(f"data-parallel training failed: {str(exc).strip().splitlines()[-1][:300]}",
                           hint=f"see {Path(opts.output) / 'train.log'}; run with IMGFEAT_DEBUG=1 for details") from None
    doc = json.loads((Path(opts.output) / RESULT_FILE).read_text(encoding="utf-8"))
    run, history = doc.get("run", {}), doc.get("history", [])
    return TrainResult(doc["model_name"], opts.output, len(history), opts.epochs, run.get("steps_per_epoch", 0),
                       run.get("batch_size", 0), run.get("learning_rate", 0.0), run.get("num_classes", 0),
                       doc.get("best_epoch"), (doc.get("models", {}).get("best") or {}).get("score"), history,
                       float(sum(r.get("seconds", 0.0) for r in history)), None,
                       str(Path(opts.output) / "best_model"), str(Path(opts.output) / RESULT_FILE))
