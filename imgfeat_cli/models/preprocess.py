"""Pre-processing from ``inference.yml``, reproducing PaddleX's pixels.

Supported ops: ``ResizeImage`` (``size`` as int or [w, h], or ``resize_short``), ``NormalizeImage``
(``scale`` may be a string such as ``1.0/255.0``) and ``ToCHWImage``. Any other op is an error that
names it. Resizing uses OpenCV itself, so ``bilinear`` is exactly PaddleX's ``cv2.INTER_LINEAR``
(half-pixel centres, no antialiasing, fixed-point on uint8).

Quirk we do not copy: PaddleX ignores ``interpolation`` and always resizes bilinearly, even though
the CLIP models' yml asks for ``bicubic``. imgfeat honours the yml (``resize_mode="yml"``, the
default); ``resize_mode="paddlex"`` forces bilinear, to add vectors to a gallery PaddleX built.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

from imgfeat_cli.common.errors import ModelError

_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "linear": cv2.INTER_LINEAR,
           "bicubic": cv2.INTER_CUBIC, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
           "lanczos": cv2.INTER_LANCZOS4}
RESIZE_MODES = ("yml", "paddlex")


def parse_scale(value: Any) -> float:
    """``0.0039``, ``"1.0/255.0"`` or ``"1/255"`` -> float, without eval."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:/\s*([0-9.eE+-]+)\s*)?", str(value))
    if not m:
        raise ModelError(f"NormalizeImage.scale {value!r} is not a number or a fraction like 1.0/255.0")
    num = float(m.group(1))
    return num / float(m.group(2)) if m.group(2) else num


@dataclass(frozen=True)
class Preprocessor:
    """A compiled transform chain: uint8 RGB HxWx3 -> float32 CHW.

    The official chain (resize to a fixed size, normalise in HWC order, to CHW) also has a fused
    form, :meth:`into`: it writes ``x * alpha + beta`` straight from the transposed uint8 view into
    a caller's buffer (one batch row), in one pass instead of four (astype, ``*=``, ``+=``,
    transpose copy) and without the later ``np.stack``. It does the same float32 operations in
    the same order, so the result is bit-identical to the step-by-step chain (tested), and it is
    about 7x faster, which matters on machines where decoding competes with inference for cores.
    """

    steps: Tuple[Callable[[np.ndarray], np.ndarray], ...]
    input_size: Optional[Tuple[int, int]]  # (w, h) when fixed
    description: Tuple[str, ...]
    fused: Optional[Tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray]] = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb
        for step in self.steps:
            x = step(x)
        return x

    @property
    def output_shape(self) -> Optional[Tuple[int, int, int]]:
        """``(3, h, w)`` when every image comes out the same size (batches can be preallocated)."""
        if self.input_size is None:
            return None
        w, h = self.input_size
        return (3, h, w)

    def into(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """Pre-process ``rgb`` into ``out`` (float32, shape :attr:`output_shape`)."""
        if self.fused is None:
            out[...] = self(rgb)
            return
        resize, alpha, beta = self.fused
        np.multiply(resize(rgb).transpose(2, 0, 1), alpha, out=out)
        out += beta


def _resize_op(cfg: Mapping[str, Any], resize_mode: str) -> Tuple[Callable[[np.ndarray], np.ndarray], Optional[Tuple[int, int]], str]:
    interp_name = str(cfg.get("interpolation") or "bilinear").lower()
    if resize_mode == "paddlex":
        interp_name = "bilinear"
    if interp_name not in _INTERP:
        raise ModelError(f"ResizeImage.interpolation {interp_name!r} is not supported",
                         hint=f"use one of {', '.join(sorted(_INTERP))}")
    interp = _INTERP[interp_name]
    if cfg.get("resize_short") is not None:
        short = int(cfg["resize_short"])

        def resize_short(img: np.ndarray) -> np.ndarray:
            h, w = img.shape[:2]
            ratio = short / min(h, w)
            return cv2.resize(img, (int(round(w * ratio)), int(round(h * ratio))), interpolation=interp)
        return resize_short, None, f"ResizeImage(resize_short={short}, {interp_name})"
    size = cfg.get("size")
    if size is None:
        raise ModelError("ResizeImage needs size or resize_short")
    w, h = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))

    def resize(img: np.ndarray) -> np.ndarray:
        if img.shape[0] == h and img.shape[1] == w:
            return img
        return cv2.resize(img, (w, h), interpolation=interp)
    return resize, (w, h), f"ResizeImage({w}x{h}, {interp_name})"


def _normalize_op(cfg: Mapping[str, Any]) -> Tuple[Callable[[np.ndarray], np.ndarray], str, Optional[Tuple[np.ndarray, np.ndarray]]]:
    scale = parse_scale(cfg.get("scale", 1.0 / 255.0))
    mean = [float(v) for v in cfg.get("mean", [0.485, 0.456, 0.406])]
    std = [float(v) for v in cfg.get("std", [0.229, 0.224, 0.225])]
    order = str(cfg.get("order") or "hwc").lower()
    if order not in ("hwc", "chw"):
        raise ModelError(f"NormalizeImage.order {order!r} is not supported", hint="use hwc or chw")
    # (x * scale - mean) / std == x * alpha + beta, the form PaddleX computes.
    alpha = np.asarray([scale / s for s in std], dtype=np.float32)
    beta = np.asarray([-m / s for m, s in zip(mean, std)], dtype=np.float32)
    shape = (1, 1, -1) if order == "hwc" else (-1, 1, 1)
    a, b = alpha.reshape(shape), beta.reshape(shape)

    def normalize(img: np.ndarray) -> np.ndarray:
        out = img.astype(np.float32)
        out *= a
        out += b
        return out
    fusable = (alpha.reshape(-1, 1, 1), beta.reshape(-1, 1, 1)) if order == "hwc" and alpha.size == 3 else None
    return normalize, f"NormalizeImage(scale={scale:.6g}, mean={mean}, std={std})", fusable


def _to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def build(transform_ops: Sequence[Mapping[str, Any]], resize_mode: str = "yml") -> Preprocessor:
    """Compile ``PreProcess.transform_ops`` into a :class:`Preprocessor`."""
    if resize_mode not in RESIZE_MODES:
        raise ModelError(f"resize mode {resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
    steps: List[Callable[[np.ndarray], np.ndarray]] = []
    desc: List[str] = []
    size: Optional[Tuple[int, int]] = None
    fusable: Optional[Tuple[np.ndarray, np.ndarray]] = None
    for op in transform_ops:
        if not isinstance(op, Mapping) or len(op) != 1:
            raise ModelError(f"malformed transform op {op!r}: expected a one-key mapping like {{ToCHWImage: null}}")
        name, cfg = next(iter(op.items()))
        cfg = cfg or {}
        if name == "ResizeImage":
            fn, size, text = _resize_op(cfg, resize_mode)
        elif name == "NormalizeImage":
            fn, text, fusable = _normalize_op(cfg)
        elif name == "ToCHWImage":
            fn, text = _to_chw, "ToCHWImage"
        else:
            raise ModelError(f"unsupported pre-processing op {name!r} in inference.yml",
                             hint="imgfeat supports ResizeImage, NormalizeImage and ToCHWImage")
        steps.append(fn)
        desc.append(text)
    if not any(d == "ToCHWImage" for d in desc):
        raise ModelError("inference.yml PreProcess has no ToCHWImage: the model expects NCHW input")
    names = [next(iter(op)) for op in transform_ops]
    fused = None
    if names == ["ResizeImage", "NormalizeImage", "ToCHWImage"] and size is not None and fusable is not None:
        fused = (steps[0], fusable[0], fusable[1])
    return Preprocessor(tuple(steps), size, tuple(desc), fused)


def read_inference_yml(model_dir: Path) -> Dict[str, Any]:
    path = model_dir / "inference.yml"
    if not path.is_file():
        raise ModelError(f"{path} not found", hint="an inference folder needs inference.yml (imgfeat export writes one)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path} is not valid YAML ({exc.__class__.__name__})") from None
    ops = (doc.get("PreProcess") or {}).get("transform_ops")
    if not isinstance(ops, list):
        raise ModelError(f"{path} has no PreProcess.transform_ops list")
    post = doc.get("PostProcess") or {}
    unknown = [k for k in post if k != "NormalizeFeatures"]
    if unknown:
        raise ModelError(f"unsupported post-processing op {unknown[0]!r} in {path}",
                         hint="imgfeat supports NormalizeFeatures")
    return doc


def inference_yml(model_name: str, transform_ops: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The document ``imgfeat export`` writes, in the official format."""
    return {"Global": {"model_name": model_name},
            "PreProcess": {"transform_ops": [dict(op) for op in transform_ops]},
            "PostProcess": {"NormalizeFeatures": None}}


def l2_normalize(feats: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return (feats / np.maximum(norms, 1e-12)).astype(np.float32)
