"""Model registry (timm style): each name carries its architecture config, and each weight tag its
URLs and pre-processing config.

``list_models()`` and ``create_model()`` are the public entry points; both are re-exported from
:mod:`imgfeat_cli`. Importing this module does not import paddle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from imgfeat_cli.core.errors import ModelError

BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/"
DEFAULT_TAG = "paddle3.0.0"
TAGS = ("paddle3.0.0", "paddle3.0", "paddle3.0rc0", "paddle3.0b2", "paddle3.0b1")

_IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1.0 / 255.0}


def inference_ops(interpolation: str, size: int = 224) -> Tuple[Dict[str, Any], ...]:
    """The ``PreProcess.transform_ops`` of the official inference.yml files."""
    resize: Dict[str, Any] = {"size": [size, size], "interpolation": interpolation}
    if interpolation == "bilinear":
        resize.update(backend="cv2", return_numpy=False)
    return ({"ResizeImage": resize},
            {"NormalizeImage": {"channel_num": 3, "mean": _IMAGENET["mean"], "order": "hwc",
                                "scale": _IMAGENET["scale"], "std": _IMAGENET["std"]}},
            {"ToCHWImage": None})


@dataclass(frozen=True)
class PretrainedCfg:
    """One weight tag: where its files live and how its inputs are pre-processed."""

    tag: str
    inference_url: str
    pretrained_url: str
    transform_ops: Tuple[Dict[str, Any], ...]
    backbone_url: Optional[str] = None
    sha256: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # "lcnetv2_shitu" | "clip_vit"
    arch_cfg: Mapping[str, Any]
    feature_dim: int
    interpolation: str
    train_defaults: Mapping[str, Any]
    published: Mapping[str, Any]

    def pretrained_cfg(self, tag: Optional[str] = None) -> PretrainedCfg:
        tag = tag or DEFAULT_TAG
        if tag not in TAGS:
            raise ModelError(f"unknown weight tag {tag!r} for {self.name}", hint=f"known tags: {', '.join(TAGS)}")
        base = os.environ.get("IMGFEAT_BASE_URL", BASE_URL).rstrip("/") + "/"
        backbone = None
        if self.arch == "clip_vit":
            backbone = f"{base}official_pretrained_model/{self.name}_backbone_LAION400M_pretrained.pdparams"
        return PretrainedCfg(
            tag=tag,
            inference_url=f"{base}official_inference_model/{tag}/{self.name}_infer.tar",
            pretrained_url=f"{base}official_pretrained_model/{self.name}_pretrained.pdparams",
            transform_ops=inference_ops(self.interpolation),
            backbone_url=backbone)


_SPECS: Dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("PP-ShiTuV2_rec", "lcnetv2_shitu", {"scale": 1.0, "depths": [2, 2, 6, 2]}, 512, "bilinear",
              {"batch_size": 128, "learning_rate": 0.01},
              {"recall1_aliproducts": 84.2, "size_mb": 16.3}),
    ModelSpec("PP-ShiTuV2_rec_CLIP_vit_base", "clip_vit",
              {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "keep_cls_token": False}, 512,
              "bicubic", {"batch_size": 32, "learning_rate": 0.001},
              {"recall1_aliproducts": 88.69, "size_mb": 306.6}),
    ModelSpec("PP-ShiTuV2_rec_CLIP_vit_large", "clip_vit",
              {"patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16, "keep_cls_token": True}, 512,
              "bicubic", {"batch_size": 32, "learning_rate": 0.001},
              {"recall1_aliproducts": 91.03, "size_mb": 1050.0}),
)}


def list_models() -> List[str]:
    """Names of the models imgfeat knows."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_SPECS), n=1, cutoff=0.4)
        hint = f"did you mean {close[0]}?" if close else f"known models: {', '.join(_SPECS)}"
        raise ModelError(f"unknown model {name!r}", hint=hint) from None


def arch_from_state_dict(spec: ModelSpec, state: Mapping[str, Any]) -> Dict[str, Any]:
    """Sizes readable from a checkpoint (ViT width, depth, patch, image size; class count), so
    small or custom ViTs load without a config. Head count is not in the shapes: for a ViT it
    defaults to width/64 (CLIP's head size) unless given."""
    cfg: Dict[str, Any] = dict(spec.arch_cfg)
    if spec.arch == "clip_vit" and "backbone.cls_token" in state:
        dim = int(state["backbone.cls_token"].shape[-1])
        patch = int(state["backbone.patch_embed.proj.weight"].shape[-1])
        tokens = int(state["backbone.pos_embed"].shape[1]) - 1
        depth = len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")})
        cfg.update(embed_dim=dim, patch_size=patch, depth=depth, img_size=int(round(tokens ** 0.5)) * patch)
        if dim != spec.arch_cfg["embed_dim"]:
            cfg["num_heads"] = max(1, dim // 64)
    return cfg


def build_model(name: str, num_classes: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> Any:
    """Build the paddle layer for ``name`` (random init). ``arch`` overrides the registry's sizes."""
    spec = get_spec(name)
    cfg = {**spec.arch_cfg, **(arch or {})}
    if spec.arch == "lcnetv2_shitu":
        from imgfeat_cli.models.lcnetv2 import PPShiTuV2Rec

        return PPShiTuV2Rec(num_classes=num_classes, embedding_size=spec.feature_dim, **cfg)
    from imgfeat_cli.models.vit import CLIPRec

    return CLIPRec(num_classes=num_classes, embedding_size=spec.feature_dim, **cfg)


HPI_KEYS = ("backend", "precision", "cpu_threads", "batch_size", "backend_config")


def _hpi_settings(use_hpip: bool, hpi_config: Optional[Mapping[str, Any]], backend: Optional[str],
                  precision: Optional[str]) -> Dict[str, Any]:
    """Merge PaddleX's ``use_hpip``/``hpi_config`` with imgfeat's ``backend``/``precision``.

    ``use_hpip=True`` means ``auto`` for whatever ``hpi_config`` leaves open; PaddleX's
    ``backend_config: {precision: ...}`` is read as ``precision``."""
    cfg = dict(hpi_config or {})
    unknown = sorted(set(cfg) - set(HPI_KEYS))
    if unknown:
        raise ModelError(f"unknown hpi_config keys: {', '.join(unknown)}", hint=f"supported: {', '.join(HPI_KEYS)}")
    nested = cfg.pop("backend_config", None) or {}
    if "precision" in nested and "precision" not in cfg:
        cfg["precision"] = nested["precision"]
    auto = "auto" if use_hpip else None
    return {"backend": backend or cfg.get("backend") or auto or "paddle",
            "precision": precision or cfg.get("precision") or auto or "fp32",
            "cpu_threads": cfg.get("cpu_threads"), "batch_size": int(cfg.get("batch_size") or 16)}


def create_model(name: Optional[str] = None, model_dir: Optional[str] = None, weights: Optional[str] = None,
                 device: Optional[str] = None, tag: Optional[str] = None, arch: Optional[Mapping[str, Any]] = None,
                 cpu_threads: Optional[int] = None, use_hpip: bool = False,
                 hpi_config: Optional[Mapping[str, Any]] = None, backend: Optional[str] = None,
                 precision: Optional[str] = None, log: Optional[Callable[[str], None]] = None, **kwargs: Any) -> Any:
    """Create a feature model, PaddleX style.

    * ``model_dir``: an inference folder (official layout) run with ``paddle.inference``;
    * ``weights``: a ``.pdparams`` checkpoint run in dygraph (``name`` picks the architecture);
    * neither: the official inference model for ``name``, from the download cache (downloaded on
      first use unless ``IMGFEAT_OFFLINE=1``).

    High-performance inference (inference folders only): ``backend`` (``paddle``, ``onnxruntime``,
    ``auto``) and ``precision`` (``fp32``, ``bf16``, ``fp16``, ``auto``), or PaddleX's
    ``use_hpip=True`` with an optional ``hpi_config`` dict of the same keys (plus ``cpu_threads``
    and the ``batch_size`` that ``auto`` measures at). ``log`` receives the measurements of ``auto``.
    """
    from imgfeat_cli.models.api import FeatureModel

    if kwargs:
        raise TypeError(f"create_model() got unexpected arguments: {', '.join(sorted(kwargs))}")
    if model_dir and weights:
        raise ModelError("give either model_dir or weights, not both")
    hpi = _hpi_settings(use_hpip, hpi_config, backend, precision)
    threads = cpu_threads or hpi["cpu_threads"]
    if weights:
        if (hpi["backend"], hpi["precision"]) != ("paddle", "fp32"):
            raise ModelError("high-performance backends run inference folders, not .pdparams checkpoints",
                             hint="export the checkpoint first (imgfeat export) and use model_dir / --model-dir")
        if name is None:
            raise ModelError("no model given", hint=f"pass a name ({', '.join(_SPECS)}) with weights")
        return FeatureModel.from_checkpoint(get_spec(name), weights, device=device, tag=tag, arch=arch)
    if not model_dir:
        if name is None:
            raise ModelError("no model given", hint=f"pass a name ({', '.join(_SPECS)}), model_dir or weights")
        from imgfeat_cli.core.cache import ensure_inference_model

        model_dir = str(ensure_inference_model(get_spec(name), tag or DEFAULT_TAG))
    return FeatureModel.from_inference_dir(model_dir, name=name, device=device, cpu_threads=threads,
                                           backend=hpi["backend"], precision=hpi["precision"],
                                           batch_size=hpi["batch_size"], log=log)


def find_inference_files(model_dir: Path) -> Tuple[Path, Path]:
    """The program file (``inference.json`` preferred over ``inference.pdmodel``) and params."""
    params = model_dir / "inference.pdiparams"
    for prog in (model_dir / "inference.json", model_dir / "inference.pdmodel"):
        if prog.is_file() and params.is_file():
            return prog, params
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist",
                         hint="pass an exported inference folder (imgfeat export) or an unpacked official *_infer.tar")
    missing = [] if params.is_file() else ["inference.pdiparams"]
    if not (model_dir / "inference.json").is_file() and not (model_dir / "inference.pdmodel").is_file():
        missing.append("inference.json (or inference.pdmodel)")
    raise ModelError(f"{model_dir} is not an inference model folder (missing {' and '.join(missing)})",
                     hint="expected inference.json (or inference.pdmodel), inference.pdiparams and inference.yml")
