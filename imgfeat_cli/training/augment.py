"""Training-time augmentations of the two recipes (spec section 7), on uint8 RGB arrays.

Every random choice comes from a ``numpy.random.Generator`` the caller passes in. The trainer
derives one generator per sample from ``(seed, epoch, step, position)``, so augmentations are the
same whatever the number of decoding threads and a resumed run sees exactly the pixels an
uninterrupted run would have seen.

PP-ShiTuV2_rec: resize to S x S (bilinear, cv2) -> horizontal flip p=0.5 -> zero pad 10 px -> random
S x S crop (offsets 0..21) -> random rotation in [-90, 90] degrees p=0.5 (bilinear, zero fill) -> resize S x S ->
normalise (ImageNet) -> CHW.

CLIP: random-resized crop S (scale 0.08-1, ratio 3/4-4/3, bicubic) -> flip p=0.5 -> RandAugment
(2 ops, magnitude 5, PIL's ImageOps/ImageEnhance do the pixel work) -> rotation p=0.3 -> normalise.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32) * 255.0

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def normalize_chw(rgb: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, ImageNet mean/std (as ``NormalizeImage`` + ``ToCHWImage``)."""
    x = (rgb.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize(rgb: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def rotate(rgb: np.ndarray, degrees: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Rotate about the centre, same canvas, zero fill (paddle's ``RandomRotation``, expand=False)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def shitu_augment(size: int) -> Tuple[Callable[[np.ndarray], np.ndarray], Augment]:
    """(deterministic first step, random rest) of the PP-ShiTuV2 recipe. The first step's output
    may be cached by the loader: it depends only on the image."""
    pad = 10

    def first(rgb: np.ndarray) -> np.ndarray:
        return resize(rgb, size)

    def rest(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = cv2.copyMakeBorder(np.ascontiguousarray(img), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        # offsets 0..pad*2+1 inclusive, as PaddleClas's RandCropImageV2 draws them (random.randint):
        # the largest one leaves a crop one pixel short, which the final resize restores
        y = int(rng.integers(0, img.shape[0] - size + 2))
        x = int(rng.integers(0, img.shape[1] - size + 2))
        img = img[y:y + size, x:x + size]
        if rng.random() < 0.5:
            img = rotate(np.ascontiguousarray(img), float(rng.uniform(-90.0, 90.0)))
        return normalize_chw(resize(np.ascontiguousarray(img), size))

    return first, rest


def random_resized_crop(rgb: np.ndarray, size: int, rng: np.random.Generator,
                        scale: Tuple[float, float] = (0.08, 1.0),
                        ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    h, w = rgb.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            return cv2.resize(rgb[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_CUBIC)
    side = min(h, w)  # fallback: centre crop, as torchvision/paddle do
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(rgb[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_CUBIC)


def _rand_augment_ops(magnitude: float) -> List[Callable[[Image.Image, np.random.Generator], Image.Image]]:
    """The RandAugment op set at one magnitude (0-10), each with a random sign where it has one."""
    m = magnitude / 10.0

    def sign(rng: np.random.Generator) -> float:
        return -1.0 if rng.random() < 0.5 else 1.0

    def affine(img: Image.Image, data: Tuple[float, ...]) -> Image.Image:
        return img.transform(img.size, Image.AFFINE, data, fillcolor=(128, 128, 128))

    return [
        lambda img, rng: affine(img, (1, 0.3 * m * sign(rng), 0, 0, 1, 0)),               # shearX
        lambda img, rng: affine(img, (1, 0, 0, 0.3 * m * sign(rng), 1, 0)),               # shearY
        lambda img, rng: affine(img, (1, 0, img.size[0] * 0.45 * m * sign(rng), 0, 1, 0)),  # translateX
        lambda img, rng: affine(img, (1, 0, 0, 0, 1, img.size[1] * 0.45 * m * sign(rng))),  # translateY
        lambda img, rng: img.rotate(30 * m * sign(rng), fillcolor=(128, 128, 128)),
        lambda img, rng: ImageEnhance.Color(img).enhance(1 + 0.9 * m * sign(rng)),
        lambda img, rng: ImageOps.posterize(img, max(1, int(8 - 4 * m))),
        lambda img, rng: ImageOps.solarize(img, int(256 - 256 * m)),
        lambda img, rng: ImageEnhance.Contrast(img).enhance(1 + 0.9 * m * sign(rng)),
        lambda img, rng: ImageEnhance.Sharpness(img).enhance(1 + 0.9 * m * sign(rng)),
        lambda img, rng: ImageEnhance.Brightness(img).enhance(1 + 0.9 * m * sign(rng)),
        lambda img, rng: ImageOps.autocontrast(img),
        lambda img, rng: ImageOps.equalize(img),
        lambda img, rng: ImageOps.invert(img),
    ]


def clip_augment(size: int, num_ops: int = 2, magnitude: float = 5.0,
                 rotate_prob: float = 0.3) -> Tuple[Optional[Callable[[np.ndarray], np.ndarray]], Augment]:
    """The CLIP recipe; nothing is cacheable (the first step is already random)."""
    ops = _rand_augment_ops(magnitude)

    def rest(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = random_resized_crop(rgb, size, rng)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        pil = Image.fromarray(np.ascontiguousarray(img))
        for i in rng.choice(len(ops), size=num_ops):
            pil = ops[int(i)](pil, rng)
        img = np.asarray(pil)
        if rng.random() < rotate_prob:
            img = rotate(np.ascontiguousarray(img), float(rng.uniform(-90.0, 90.0)))
        return normalize_chw(img)

    return None, rest
