"""``imgfeat embed --engine ray``: the command line's settings -> :mod:`imgfeat_cli.distributed`."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from imgfeat_cli.cli.common import Output
from imgfeat_cli.common.errors import UsageError


def embed_on_ray(cfg: Dict[str, Any], out: Output, out_dir: str, sources: List[str], shard: Optional[str],
                 resume: bool, overwrite: bool, verbose: bool) -> Any:
    """Check what can be checked here, load the model once on CPU (to validate and ship it), then
    embed on the cluster into the folder ``out_dir``."""
    import numpy as np

    from imgfeat_cli.cli.loading import limits, load_model, no_images, produced_by, with_stdin
    from imgfeat_cli.common.system import parse_device
    from imgfeat_cli.distributed.folder import ParquetFolder
    from imgfeat_cli.distributed.ray_embed import cluster_engine, expand_locations, require_ray
    from imgfeat_cli.distributed.ray_job import RaySettings, check_reachable, embed_folder
    from imgfeat_cli.pipeline.embedder import parse_shard

    pred, device = cfg["Predict"], cfg["Global"]["device"]
    if pred["format"] not in (None, "parquet"):
        raise UsageError(f"--engine ray writes a folder of Parquet files, not {pred['format']}",
                         hint="drop --format, or use --engine local")
    if pred["streams"] not in (None, 1) or pred["num_workers"]:
        raise UsageError("--streams and --workers are for --engine local", hint="use --actors (and --threads per actor)")
    if pred["weights"]:
        raise UsageError("--engine ray runs inference folders, not .pdparams checkpoints",
                         hint="export the checkpoint first (imgfeat export) and pass --model-dir")
    pred["backend"], pred["precision"] = cluster_engine(pred["backend"], pred["precision"], device)
    require_ray()
    folder = ParquetFolder(out_dir, np.float16 if pred["fp16"] else np.float32, resume, overwrite,
                           pred["rows_per_file"])
    folder.check()  # a wrong --out or --ray-address fails before anything is loaded or started
    check_reachable(pred["ray_address"])
    shard_t = parse_shard(shard)
    items = expand_locations(with_stdin(sources), shard_t)
    if not items:
        raise no_images(shard)
    on_cpu = copy.deepcopy(cfg)  # the driver's copy only checks and ships the model: always on CPU
    on_cpu["Global"]["device"] = "cpu"
    on_cpu["Predict"]["cpu_threads"] = None  # --threads is per actor, checked against the cluster's nodes
    if parse_device(device).is_gpu:
        on_cpu["Predict"]["precision"] = "fp32"
    model = load_model(on_cpu, out, cpu_threads=1)
    out.log(f"embedding {len(items)} inputs on Ray ({pred['ray_address'] or 'RAY_ADDRESS or a local instance'})")
    settings = RaySettings(pred["ray_address"], pred["actors"], pred["cpu_threads"], verbose)
    with out.progress("images") as progress:
        return embed_folder(items, folder, model, settings, device, pred["precision"], pred["batch_size"], pred["fp16"],
                            limits(cfg), progress, produced_by(cfg),
                            f"{shard_t[0]}/{shard_t[1]}" if shard_t else None)
