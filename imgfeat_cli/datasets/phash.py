"""Perceptual hashes that survive resizing, re-encoding and crops of up to 5%.

A 64-bit DCT hash (``imagehash.phash``: the signs of the lowest 8 x 8 frequencies of a 32 x 32
grey image) hardly changes when an image is resized or re-compressed, but a crop shifts and
rescales the content, and a copy cropped by 5% on each side lands 12 bits away on average (up to
20) on the drink photos, as far as distinct photos of one product. So each image is hashed whole
and at :data:`CROPS` (centred crops of 2.5% and 5% per side, 5% off one side or one corner): a copy
cropped like that matches one of its original's crop hashes (and the reverse: a gallery image that
is the cropped one matches the query's crops). Distances compare a whole-image hash with any hash of
the other image; see ``docs/reports.md`` for what this measured on real data.

The hash sees grey levels only: a red and a blue disc on pale backgrounds share it. So each hash
comes with the colours of its picture on a 4 x 4 grid, and a pair counts only where the colours
agree too (:data:`MAX_COLOUR_DIFF`): copies differ by at most 7 (mean absolute difference on 0-255)
even at JPEG quality 30, while among 480 synthetic shapes it drops all 283 hash matches (at 6 bits)
between distinct images.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from imgfeat_cli.common.errors import ImageDecodeError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.imaging.reduced import open_reduced

#: Bits per hash (imagehash's 8 x 8 DCT hash).
HASH_BITS = 64
#: The grey image is reduced to this many pixels per side before cropping and hashing (phash itself
#: works on 32 x 32; more detail would only cost decoding time).
HASH_SIDE = 128
#: Crops hashed besides the whole image: (left, top, right, bottom) as fractions of the size.
CROPS = ((0.025, 0.025, 0.975, 0.975), (0.05, 0.05, 0.95, 0.95),
         (0.05, 0.0, 1.0, 1.0), (0.0, 0.0, 0.95, 1.0), (0.0, 0.05, 1.0, 1.0), (0.0, 0.0, 1.0, 0.95),
         (0.05, 0.05, 1.0, 1.0), (0.0, 0.05, 0.95, 1.0), (0.05, 0.0, 1.0, 0.95), (0.0, 0.0, 0.95, 0.95))
#: Hashes per image: the whole image first, then the crops.
VARIANTS = 1 + len(CROPS)
#: Bytes of a packed hash, then of the 4 x 4 RGB colour grid, in each row of a signature.
HASH_BYTES = HASH_BITS // 8
GRID = 4
#: Largest mean absolute difference (0-255) of two colour grids of one picture.
MAX_COLOUR_DIFF = 8.0


def image_hashes(path: Path) -> np.ndarray:
    """The image's signature, ``(VARIANTS, HASH_BYTES + 48)`` uint8: per row (the whole image, then
    each crop) the packed 64-bit hash and the 4 x 4 RGB colour grid. Raises
    :class:`ImageDecodeError` when the file cannot be decoded."""
    import imagehash
    from PIL import Image

    rgb = open_reduced(path, HASH_SIDE)
    grey = rgb.convert("L")
    w, h = rgb.size
    boxes = [(0.0, 0.0, 1.0, 1.0), *CROPS]
    out = np.empty((VARIANTS, HASH_BYTES + GRID * GRID * 3), dtype=np.uint8)
    for i, (left, top, right, bottom) in enumerate(boxes):
        box = (round(left * w), round(top * h), round(right * w), round(bottom * h))
        out[i, :HASH_BYTES] = np.packbits(imagehash.phash(grey.crop(box)).hash.flatten())
        out[i, HASH_BYTES:] = np.asarray(rgb.crop(box).resize((GRID, GRID), Image.BOX)).reshape(-1)
    return out


def signature_distance(a: np.ndarray, b: np.ndarray, max_colour: float = MAX_COLOUR_DIFF) -> int:
    """The smallest hash distance between a whole-image row of one signature and any row of the
    other whose colour grids agree (:data:`MAX_COLOUR_DIFF`); ``HASH_BITS + 1`` when none do."""
    best = HASH_BITS + 1
    for x, y in ((a[:1], b), (a, b[:1])):
        bits = np.unpackbits(x[:, :HASH_BYTES] ^ y[:, :HASH_BYTES], axis=1).sum(axis=1)
        colour = np.abs(x[:, HASH_BYTES:].astype(np.int16) - y[:, HASH_BYTES:]).mean(axis=1)
        agree = bits[colour <= max_colour]
        if len(agree):
            best = min(best, int(agree.min()))
    return best


def _hash_or_none(path: Path) -> Optional[np.ndarray]:
    try:
        return image_hashes(path)
    except ImageDecodeError:
        return None  # ``check`` reports the file itself; it takes part in no pair


def hash_files(paths: Sequence[Path], workers: Optional[int] = None,
               progress: ProgressFn = null_progress) -> Dict[Path, Optional[np.ndarray]]:
    """:func:`image_hashes` of each path (``None`` for a file that does not decode), in parallel
    threads (Pillow and the DCT release the GIL)."""
    out: Dict[Path, Optional[np.ndarray]] = {}
    todo: List[Path] = list(dict.fromkeys(paths))
    progress("Hashing images", 0, len(todo))
    with ThreadPoolExecutor(max_workers=workers or cpu_count()) as pool:
        for i, (path, codes) in enumerate(zip(todo, pool.map(_hash_or_none, todo)), start=1):
            out[path] = codes
            if i % 64 == 0 or i == len(todo):
                progress("Hashing images", i, len(todo))
    return out
