"""Small decodes: an image reduced to a bounded size as cheaply as the format allows.

Reports need thumbnails and ``check --near-duplicates`` needs perceptual hashes; neither needs the
full pixels, so a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling through Pillow's
``draft``), which is several times faster than a full decode. The same guards as
:func:`imgfeat_cli.imaging.decode.decode_image` apply: only regular files, a size cap on the bytes
read, the pixel count checked from the header before any pixel is decoded, EXIF orientation applied,
and every failure an :class:`~imgfeat_cli.common.errors.ImageDecodeError` with a reason.
"""
from __future__ import annotations

import io
import os
from typing import Union

from PIL import Image, ImageOps

from imgfeat_cli.common.errors import ImageDecodeError
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits, check_pixels, decode_errors, read_bounded


def open_reduced(source: Union[str, "os.PathLike[str]"], max_side: int, mode: str = "RGB",
                 limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """``source`` decoded in ``mode`` (``RGB`` or ``L``), upright, no side longer than ``max_side``."""
    label = os.fsdecode(source)
    with decode_errors(label):
        data = read_bounded(source, limits.max_bytes)
        if not data:
            raise ImageDecodeError(f"{label}: zero-byte file")
        with Image.open(io.BytesIO(data)) as img:  # the header only, so far
            check_pixels(img, label, limits)
            if img.format in ("JPEG", "MPO"):
                img.draft(mode, (max_side, max_side))  # DCT scaling: never below max_side
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            small = (ImageOps.exif_transpose(img) or img).convert(mode)
        small.thumbnail((max_side, max_side))
        return small
