"""Input expansion and loading, shared by ``model.predict`` and ``imgfeat embed``.

Accepted: file paths, directories (recursive, sorted, extensions case-insensitive), http(s) URLs,
ndarrays (BGR, as PaddleX takes them), ``{"img": ...}`` dicts and lists of any of these.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional

import numpy as np

from imgfeat_cli.common.errors import ImageDecodeError, UsageError
from imgfeat_cli.pipeline.decode import decode_image, is_image_path


@dataclass(frozen=True)
class InputItem:
    """One image to embed: ``source`` is a path, URL or ndarray; ``input_path`` is what results
    report (``None`` for arrays)."""

    source: Any
    input_path: Optional[str]


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def walk_images(folder: Path) -> List[str]:
    """Image files under ``folder``, recursively, in sorted order (stable across machines)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_path(f) and not f.startswith("."))
    return sorted(found)


def expand(inputs: Any, strict: bool = True) -> Iterator[InputItem]:
    """Yield :class:`InputItem` for every image in ``inputs`` (see module docstring).

    With ``strict`` a path that does not exist is an error; otherwise it is yielded and fails at
    load time (so ``embed`` can record it and carry on).
    """
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            yield from expand(item, strict)
        return
    if isinstance(inputs, InputItem):  # already expanded (the CLI collects once, then embeds)
        yield inputs
        return
    if isinstance(inputs, dict):
        if "img" not in inputs:
            raise UsageError("a dict input needs an 'img' key", hint='e.g. {"img": "photo.jpg"}')
        yield from expand(inputs["img"], strict)
        return
    if isinstance(inputs, np.ndarray):
        yield InputItem(inputs, None)
        return
    if isinstance(inputs, (str, os.PathLike)):
        text = os.fspath(inputs)
        if is_url(text):
            yield InputItem(text, text)
            return
        path = Path(text)
        if path.is_dir():
            for p in walk_images(path):
                yield InputItem(p, p)
            return
        if strict and not path.exists():
            raise UsageError(f"input {text} does not exist", hint="pass image files, folders or http(s) URLs")
        yield InputItem(text, text)
        return
    raise UsageError(f"unsupported input of type {type(inputs).__name__}",
                     hint="pass a path, a URL, a numpy array, a dict {'img': ...} or a list of these")


def fetch_url(url: str, timeout: float = 30.0) -> bytes:
    import requests

    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise ImageDecodeError(f"{url}: download failed ({exc.__class__.__name__})") from None
    if resp.status_code != 200:
        raise ImageDecodeError(f"{url}: HTTP {resp.status_code}")
    return resp.content


def load_rgb(item: InputItem) -> np.ndarray:
    """Decode one item to uint8 RGB ``HxWx3``. ndarrays are taken as BGR (PaddleX convention);
    a 2-D array is grayscale, 4 channels are BGRA (alpha dropped)."""
    src = item.source
    if isinstance(src, np.ndarray):
        arr = src
        if arr.dtype != np.uint8:
            raise ImageDecodeError(f"array input has dtype {arr.dtype}; expected uint8 BGR")
        if arr.ndim == 2:
            return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageDecodeError(f"array input has shape {arr.shape}; expected HxWx3 (BGR)")
        return np.ascontiguousarray(arr[:, :, 2::-1])
    text = str(src)
    if is_url(text):
        return decode_image(fetch_url(text), name=text)
    return decode_image(text)


def read_path_list(lines: Iterable[str]) -> List[str]:
    """Paths from a list (e.g. stdin for ``embed -``): one per line, blanks and ``#`` comments skipped."""
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]

