"""What every command that embeds images shares (embed, eval, index, search): the model flags as
config keys, the resolved config as a :class:`~imgfeat_cli.models.source.ModelSource` (every model
decision is made there), the per-image limits, stdin inputs, and the record of what produced an
output. Command modules import this, never each other."""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Set


def model_flags(model: Optional[str], model_dir: Optional[str], weights: Optional[str], device: Optional[str],
                batch_size: Optional[int] = None, backend: Optional[str] = None, precision: Optional[str] = None,
                threads: Optional[int] = None) -> Dict[str, Any]:
    """The config keys the model options set."""
    return {"Global.model": model, "Global.device": device, "Predict.model_dir": model_dir,
            "Predict.weights": weights, "Predict.batch_size": batch_size, "Predict.backend": backend,
            "Predict.precision": precision, "Predict.cpu_threads": threads}


def settle_threads(cfg: Dict[str, Any], warn: Callable[[str], None]) -> None:
    """``Predict.cpu_threads`` and ``Predict.num_workers`` within this machine's cores (the one
    rule, ``system.usable_threads``; said once each). Not for the Ray engine: its ``--threads`` is
    per actor, checked against the cluster's nodes."""
    from imgfeat_cli.common.system import usable_threads

    pred = cfg["Predict"]
    pred["cpu_threads"] = usable_threads(pred.get("cpu_threads"), "--threads", warn)
    pred["num_workers"] = usable_threads(pred.get("num_workers"), "--workers", warn)


def model_source(cfg: Dict[str, Any], explicit: Optional[Set[str]] = None,
                 warn: Optional[Callable[[str], None]] = None) -> Any:
    """The model the resolved config names. With ``explicit`` (the keys the user set, from
    ``config.resolve``): a registry name counts only when the user gave it, so a command may fall
    back to a model of its own (``search`` and ``index add``: the index's). With ``warn``, thread
    counts beyond this machine's cores are lowered first (:func:`settle_threads`)."""
    from imgfeat_cli.models.source import ModelSource

    if warn is not None:
        settle_threads(cfg, warn)
    source = ModelSource.from_config(cfg)
    if explicit is not None and "Global.model" not in explicit and source.kind == "official":
        source = source.replace(name=None)
    return source


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
