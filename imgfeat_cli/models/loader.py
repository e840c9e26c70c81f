"""Resolve what the user named (a registry name, an inference folder, a checkpoint) into a loaded
model, with PaddleX's ``use_hpip``/``hpi_config`` understood. The one place that decides which
files a model comes from."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Type

from imgfeat_cli.common.errors import ModelError
from imgfeat_cli.common.home import cache_dir
from imgfeat_cli.models.model import EmbeddingModel
from imgfeat_cli.models.registry import DEFAULT_TAG, get_spec, list_models

HPI_KEYS = ("backend", "precision", "cpu_threads", "batch_size", "backend_config")


def hpi_settings(use_hpip: bool, hpi_config: Optional[Mapping[str, Any]], backend: Optional[str],
                 precision: Optional[str]) -> Dict[str, Any]:
    """Merge PaddleX's ``use_hpip``/``hpi_config`` with imgfeat's ``backend``/``precision``.

    ``use_hpip=True`` means ``auto`` for whatever ``hpi_config`` leaves open (bf16/fp16 included);
    PaddleX's ``backend_config: {precision: ...}`` is read as ``precision``. What is still open is
    ``None``: the default of :mod:`imgfeat_cli.models.engines` (the fastest exact engine), unlike
    PaddleX, whose ``use_hpip=False`` means paddle."""
    cfg = dict(hpi_config or {})
    unknown = sorted(set(cfg) - set(HPI_KEYS))
    if unknown:
        raise ModelError(f"unknown hpi_config keys: {', '.join(unknown)}", hint=f"supported: {', '.join(HPI_KEYS)}")
    nested = cfg.pop("backend_config", None) or {}
    if "precision" in nested and "precision" not in cfg:
        cfg["precision"] = nested["precision"]
    auto = "auto" if use_hpip else None
    return {"backend": backend or cfg.get("backend") or auto,
            "precision": precision or cfg.get("precision") or auto,
            "cpu_threads": cfg.get("cpu_threads"), "batch_size": cfg.get("batch_size")}


def load_model(name: Optional[str] = None, model_dir: Optional[str] = None, weights: Optional[str] = None,
               device: Optional[str] = None, tag: Optional[str] = None, arch: Optional[Mapping[str, Any]] = None,
               cpu_threads: Optional[int] = None, use_hpip: bool = False,
               hpi_config: Optional[Mapping[str, Any]] = None, backend: Optional[str] = None,
               precision: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
               cls: Type[EmbeddingModel] = EmbeddingModel, batch_size: int = 8) -> Any:
    """Load a model as ``cls`` (see ``imgfeat_cli.create_model`` for the arguments)."""
    if model_dir and weights:
        raise ModelError("give either model_dir or weights, not both")
    cache_dir()  # engine decisions and converted graphs live there: an IMGFEAT_HOME that is a file fails now
    hpi = hpi_settings(use_hpip, hpi_config, backend, precision)
    threads = cpu_threads or hpi["cpu_threads"]
    if weights:
        if hpi["backend"] not in (None, "paddle") or hpi["precision"] not in (None, "fp32"):
            raise ModelError("high-performance backends run inference folders, not .pdparams checkpoints",
                             hint="export the checkpoint first (imgfeat export) and use model_dir / --model-dir")
        if name is None:
            raise ModelError("no model given", hint=f"pass a name ({', '.join(list_models())}) with weights")
        return cls.from_checkpoint(get_spec(name), weights, device=device, tag=tag, arch=dict(arch or {}))
    if not model_dir:
        if name is None:
            raise ModelError("no model given", hint=f"pass a name ({', '.join(list_models())}), model_dir or weights")
        from imgfeat_cli.models.hub import ensure_inference_model

        model_dir = str(ensure_inference_model(get_spec(name), tag or DEFAULT_TAG, log=log))
    return cls.from_inference_dir(model_dir, name=name, device=device, cpu_threads=threads,
                                  backend=hpi["backend"], precision=hpi["precision"],
                                  batch_size=int(hpi["batch_size"] or batch_size), log=log)
