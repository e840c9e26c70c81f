"""Data-parallel training on several GPUs through Paddle's own launcher (``paddle.distributed.spawn``).

Each spawned process initialises the collective environment, trains its share of every epoch's
PK batches (see :mod:`imgfeat_cli.training.trainer`) and synchronises gradients through
``paddle.DataParallel``. ``Train.batch_size`` is per GPU, as upstream. Rank 0 logs (plain lines on
stderr and train.log), evaluates and saves; the parent reads the result back from the output folder.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.training.options import TrainMonitor, TrainOptions, TrainResult
from imgfeat_cli.training.reporting import read_result
from imgfeat_cli.training.trainer import Trainer


class _StderrMonitor(TrainMonitor):
    def log(self, message: str, level: str = "epoch") -> None:
        if level != "step":
            print(message, file=sys.stderr, flush=True)


def _worker(opts: TrainOptions) -> None:
    import paddle.distributed as dist

    dist.init_parallel_env()
    try:
        Trainer(opts, _StderrMonitor(), rank=dist.get_rank(), world=dist.get_world_size()).run()
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
    return read_result(opts.output, opts.epochs)
