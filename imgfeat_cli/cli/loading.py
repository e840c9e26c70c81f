"""What every command that embeds images shares (embed on either engine, eval, index, search): the
one mapping from a resolved config to a model and pipeline settings, stdin inputs, and the record
of what produced an output."""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from imgfeat_cli.cli.common import Output
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.system import usable_threads


def settle_threads(cfg: Dict[str, Any], out: Output) -> None:
    """``Predict.cpu_threads`` and ``Predict.num_workers`` within this machine's cores
    (``system.usable_threads``; said once, whichever of the two is asked first)."""
    pred = cfg["Predict"]
    pred["cpu_threads"] = usable_threads(pred["cpu_threads"], "--threads", out.warn)
    pred["num_workers"] = usable_threads(pred.get("num_workers"), "--workers", out.warn)


def load_model(cfg: Dict[str, Any], out: Output, cpu_threads: Optional[int] = None) -> Any:
    """``Predict.model_dir`` / ``Predict.weights`` / ``Global.model`` (download cache) -> a model."""
    from imgfeat_cli.common.system import default_batch_size
    from imgfeat_cli.pipeline.predictor import create_model

    settle_threads(cfg, out)
    pred, glob = cfg["Predict"], cfg["Global"]
    if pred["model_dir"] and pred["weights"]:
        raise UsageError("give either --model-dir or --weights, not both")
    out.log(f"loading {pred['model_dir'] or pred['weights'] or glob['model']} ...")
    model = create_model(None if pred["model_dir"] else glob["model"], model_dir=pred["model_dir"],
                         weights=pred["weights"], device=glob["device"],
                         cpu_threads=cpu_threads or pred["cpu_threads"],
                         backend=pred["backend"], precision=pred["precision"],
                         hpi_config={"batch_size": pred["batch_size"] or default_batch_size(glob["device"])},
                         log=out.log)
    out.log(f"model {model.name}: {model.backend} {model.precision} on {model.device}")
    return model


def limits(cfg: Dict[str, Any]) -> Any:
    """The per-input limits of ``Predict.max_image_pixels`` / ``Predict.max_file_mb``."""
    from imgfeat_cli.imaging.decode import Limits

    pred = cfg["Predict"]
    return Limits(max_pixels=int(pred["max_image_pixels"]), max_bytes=int(pred["max_file_mb"]) << 20)


def produced_by(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The part of the resolved config that produced an embedding file (saved beside it)."""
    return {"Global": {k: cfg["Global"][k] for k in ("model", "device")}, "Predict": cfg["Predict"]}


def with_stdin(sources: List[str]) -> List[str]:
    """``-`` among the inputs: the paths listed on stdin."""
    from imgfeat_cli.pipeline.inputs import read_path_list

    return [s for s in sources if s != "-"] + read_path_list(sys.stdin) if "-" in sources else sources


def no_images(shard: Optional[str]) -> Exception:
    """The usage error for inputs that hold no image (or none in this shard)."""
    return UsageError("no images found in the inputs" + (f" for shard {shard}" if shard else ""),
                      hint="check the paths; extensions: jpg jpeg png bmp webp tif tiff gif")
