"""Model registry (timm style): each name carries its architecture family (builder, checkpoint
reader, training recipe) and config, and each weight tag its URLs and pre-processing config.

``list_models()`` is public (re-exported from :mod:`imgfeat_cli`); models are loaded by
:mod:`imgfeat_cli.models.loader`. Importing this module does not import paddle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from imgfeat_cli.common.cache import base_url
from imgfeat_cli.common.errors import ModelError, UnknownModel

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


def _build_lcnetv2(num_classes: Optional[int], embedding_size: int, cfg: Mapping[str, Any]) -> Any:
    from imgfeat_cli.models.lcnetv2 import PPShiTuV2Rec

    return PPShiTuV2Rec(num_classes=num_classes, embedding_size=embedding_size, **cfg)


def _build_clip_vit(num_classes: Optional[int], embedding_size: int, cfg: Mapping[str, Any]) -> Any:
    from imgfeat_cli.models.vit import CLIPRec

    return CLIPRec(num_classes=num_classes, embedding_size=embedding_size, **cfg)


def _no_sizes(default: Mapping[str, Any], state: Mapping[str, Any]) -> Dict[str, Any]:
    return dict(default)


def _vit_sizes(default: Mapping[str, Any], state: Mapping[str, Any]) -> Dict[str, Any]:
    """ViT width, depth, patch and image size read from a checkpoint's shapes, so small or custom
    ViTs load without a config. Head count is not in the shapes: it defaults to width/64 (CLIP's
    head size) when the width differs from the registry's."""
    cfg: Dict[str, Any] = dict(default)
    if "backbone.cls_token" not in state:
        return cfg
    dim = int(state["backbone.cls_token"].shape[-1])
    patch = int(state["backbone.patch_embed.proj.weight"].shape[-1])
    tokens = int(state["backbone.pos_embed"].shape[1]) - 1
    depth = len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")})
    cfg.update(embed_dim=dim, patch_size=patch, depth=depth, img_size=int(round(tokens ** 0.5)) * patch)
    if dim != default["embed_dim"]:
        cfg["num_heads"] = max(1, dim // 64)
    return cfg


@dataclass(frozen=True)
class Family:
    """What models of one architecture share: how to build them and what their checkpoints say.

    ``recipe`` names the training recipe (:mod:`imgfeat_cli.training.recipe`); ``start_weights``
    is the official file training starts from (``pretrained`` whole model, or ``backbone`` only);
    ``sized_by_input`` means the architecture itself has an input size (a ViT's position
    embeddings), so a checkpoint fixes the pre-processing size.
    """

    name: str
    build: Callable[[Optional[int], int, Mapping[str, Any]], Any]
    sizes_from_state: Callable[[Mapping[str, Any], Mapping[str, Any]], Dict[str, Any]]
    recipe: str
    start_weights: str
    sized_by_input: bool


LCNETV2 = Family("lcnetv2_shitu", _build_lcnetv2, _no_sizes, "PP-ShiTuV2", "pretrained", False)
CLIP_VIT = Family("clip_vit", _build_clip_vit, _vit_sizes, "CLIP", "backbone", True)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: the architecture family and its config, the feature size, the
    pre-processing interpolation and the training defaults; ``pretrained_cfg`` gives each weight
    tag's files."""

    name: str
    family: Family
    arch_cfg: Mapping[str, Any]
    feature_dim: int
    interpolation: str
    train_defaults: Mapping[str, Any]
    published: Mapping[str, Any]

    def pretrained_cfg(self, tag: Optional[str] = None) -> PretrainedCfg:
        tag = tag or DEFAULT_TAG
        if tag not in TAGS:
            raise ModelError(f"unknown weight tag {tag!r} for {self.name}", hint=f"known tags: {', '.join(TAGS)}")
        base = base_url()
        backbone = None
        if self.family.start_weights == "backbone":
            backbone = f"{base}official_pretrained_model/{self.name}_backbone_LAION400M_pretrained.pdparams"
        return PretrainedCfg(
            tag=tag,
            inference_url=f"{base}official_inference_model/{tag}/{self.name}_infer.tar",
            pretrained_url=f"{base}official_pretrained_model/{self.name}_pretrained.pdparams",
            transform_ops=inference_ops(self.interpolation),
            backbone_url=backbone)

    def arch_from_state_dict(self, state: Mapping[str, Any]) -> Dict[str, Any]:
        """The architecture config that fits a checkpoint (sizes read from its shapes)."""
        return self.family.sizes_from_state(self.arch_cfg, state)

    def build(self, num_classes: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> Any:
        """The paddle layer (random init); ``arch`` overrides the registry's sizes."""
        return self.family.build(num_classes, self.feature_dim, {**self.arch_cfg, **(arch or {})})


_SPECS: Dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("PP-ShiTuV2_rec", LCNETV2, {"scale": 1.0, "depths": [2, 2, 6, 2]}, 512, "bilinear",
              {"batch_size": 128, "learning_rate": 0.01},
              {"recall1_aliproducts": 84.2, "size_mb": 16.3}),
    ModelSpec("PP-ShiTuV2_rec_CLIP_vit_base", CLIP_VIT,
              {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "keep_cls_token": False}, 512,
              "bicubic", {"batch_size": 32, "learning_rate": 0.001},
              {"recall1_aliproducts": 88.69, "size_mb": 306.6}),
    ModelSpec("PP-ShiTuV2_rec_CLIP_vit_large", CLIP_VIT,
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
        raise UnknownModel(f"unknown model {name!r}", hint=hint) from None


def build_model(name: str, num_classes: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> Any:
    """Build the paddle layer for ``name`` (random init). ``arch`` overrides the registry's sizes."""
    return get_spec(name).build(num_classes, arch)


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
