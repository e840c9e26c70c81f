"""Image decoding that is strict about broken and hostile files and faithful to PaddleX's pixels.

PaddleX reads with ``cv2.imread(path, IMREAD_COLOR)``: 8-bit, 3 channels, alpha dropped (not
composited), EXIF orientation applied, 16-bit scaled by 1/256.

A complete JPEG (it ends with its EOI marker) is decoded by OpenCV itself: the very reader PaddleX
uses, so the pixels are PaddleX's by definition, and about 1.5x faster than Pillow here (decoding is
most of the pre-processing cost). Everything else goes through Pillow, because it also reads GIF,
refuses truncated files (OpenCV may return a half-grey image for a truncated JPEG, which would
poison a gallery) and gives specific reasons for failures. The conversions below reproduce
OpenCV's results for every mode. Both release the GIL, so threads decode in parallel.

Hostile files are refused before they cost anything: only regular files are opened (a FIFO would
block forever, ``/dev/zero`` never ends), at most :data:`Limits.max_bytes` are read, and the image
header is read first so an image of more than :data:`Limits.max_pixels` pixels (a 1 MB PNG can
declare 20000 x 20000) is refused before any pixel is decoded.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgfeat_cli.common.errors import ImageDecodeError
from imgfeat_cli.imaging.codecwarnings import decoding


@dataclass(frozen=True)
class Limits:
    """What one input may cost. 128 MP is a 13000 x 10000 photo (about 400 MB of RGB pixels while
    it is resized); larger is almost always a mistake or an attack. Set per run through
    ``Predict.max_image_pixels`` / ``Predict.max_file_mb``."""

    max_pixels: int = 128_000_000
    max_bytes: int = 256 << 20


DEFAULT_LIMITS = Limits()
# imgfeat checks the pixel count itself (below) and reports it per file; Pillow's own bomb check
# would only warn between 1x and 2x its limit and spray DecompressionBombWarning on stderr.
Image.MAX_IMAGE_PIXELS = None
warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")  # EXIF and chunk warnings: the file is judged here

#: Extensions picked up when walking a directory (matched case-insensitively; upstream's list is
#: case-sensitive and misses .webp/.tif/.gif: a documented quirk we do not copy).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

_FORMAT_EXTS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "PNG": {".png"}, "BMP": {".bmp", ".dib"},
    "WEBP": {".webp"}, "TIFF": {".tif", ".tiff"}, "GIF": {".gif"}, "MPO": {".jpg", ".jpeg"},
}

Source = Union[str, os.PathLike, bytes]


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255:
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = (arr.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(arr8[:, :, None], 3, axis=2)
    if mode == "F":
        arr8 = np.asarray(img).clip(0, 255).astype(np.uint8)
        return np.repeat(arr8[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA/LA: alpha dropped, like IMREAD_COLOR; L/1/CMYK/YCbCr converted
    return np.asarray(img)


_CV2_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 converts while decoding


def _decode_complete_jpeg(data: bytes, label: str = "<bytes>") -> Optional[np.ndarray]:
    """OpenCV's decoding of a JPEG that starts with SOI and ends with EOI (``None`` otherwise, or
    when OpenCV cannot decode it, so that Pillow reports the reason). Entropy-coded data cannot
    contain FF D9, so a file cut short does not end with it. libjpeg's warnings name ``label``
    (:mod:`imgfeat_cli.imaging.codecwarnings`)."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    with decoding(label):
        if _CV2_RGB is not None:
            arr = cv2.imdecode(buf, _CV2_RGB)
        else:
            arr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if _CV2_RGB is None and arr is not None:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        return None
    return arr


def read_bounded(path: Union[str, os.PathLike], max_bytes: int) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` (else an error): never opens a FIFO,
    device or socket, so a hostile path cannot block or stream forever."""
    st = os.stat(path)  # follows symlinks, like open() would
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise ImageDecodeError(f"{os.fsdecode(path)}: is {kind}, not an image file")
    if st.st_size > max_bytes:
        raise ImageDecodeError(f"{os.fsdecode(path)}: {st.st_size / 2**20:.0f} MB is over the {max_bytes >> 20} MB limit per file",
                               hint="raise Predict.max_file_mb if this file is really an image")
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read it
        raise ImageDecodeError(f"{os.fsdecode(path)}: over the {max_bytes >> 20} MB limit per file")
    return data


def check_pixels(img: Image.Image, label: str, limits: Limits) -> None:
    """Refuse an image whose header claims more than ``limits.max_pixels``, before any pixel is decoded."""
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageDecodeError(f"{label}: {width} x {height} pixels is over the {limits.max_pixels / 1e6:.0f} MP limit",
                               hint="raise Predict.max_image_pixels if this image is meant to be embedded")


@contextmanager
def decode_errors(label: str) -> Iterator[None]:
    """What reading and decoding ``label`` may raise, as one :class:`ImageDecodeError` with the reason."""
    try:
        yield
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{label}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageDecodeError(f"{label}: permission denied") from None
    except MemoryError:
        raise ImageDecodeError(f"{label}: out of memory while decoding") from None
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{label}: {_decode_failure(exc)}") from None


def decode_image(source: Source, name: Optional[str] = None, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a file path or encoded bytes to an ``HxWx3`` uint8 **RGB** array.

    Raises :class:`ImageDecodeError` with a specific reason (empty, truncated, not an image, too
    large, not a regular file...).
    """
    label = name or (os.fsdecode(source) if not isinstance(source, bytes) else "<bytes>")
    with decode_errors(label):
        data = source if isinstance(source, bytes) else read_bounded(source, limits.max_bytes)
        if not data:
            raise ImageDecodeError(f"{label}: {'empty data' if isinstance(source, bytes) else 'zero-byte file'}")
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            check_pixels(img, label, limits)
            fast = _decode_complete_jpeg(data, label) if img.format in ("JPEG", "MPO") else None
            if fast is not None:
                return fast
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return np.ascontiguousarray(_to_rgb8(img))


_DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError)


def _decode_failure(exc: BaseException) -> str:
    """The user-facing reason for a Pillow decoding failure (shared by decode and probe)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, Image.DecompressionBombError):
        return f"refused, too many pixels ({exc})"
    if isinstance(exc, OSError) and exc.errno:  # the file system, not the codec
        return "symlink loop" if exc.errno == 40 else os.strerror(exc.errno).lower()
    text = str(exc) or exc.__class__.__name__
    return "truncated file" if "truncat" in text.lower() else f"cannot decode ({text})"


def probe_bytes(data: bytes) -> Tuple[Optional[str], Optional[str], Optional[Tuple[int, int]]]:
    """Fully decode encoded ``data``; return ``(error_reason, format, (width, height))``.

    Decoding (not just ``verify()``) is what catches truncated data. The reason is ``None`` when the
    image is fine. Taking bytes lets the caller hash the same read.
    """
    if not data:
        return "zero-byte file", None, None
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            if fmt == "JPEG":
                img.draft("RGB", (img.width // 8 or 1, img.height // 8 or 1))  # still reads every byte
            img.load()
            return None, fmt, img.size
    except _DECODE_ERRORS as exc:
        return _decode_failure(exc), None, None


def extension_matches(path: Union[str, os.PathLike], fmt: Optional[str]) -> bool:
    """Whether the file extension fits the decoded format (a PNG named .jpg does not)."""
    if fmt is None:
        return True
    return Path(path).suffix.lower() in _FORMAT_EXTS.get(fmt, {Path(path).suffix.lower()})
