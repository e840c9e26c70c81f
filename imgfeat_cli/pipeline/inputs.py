"""What to embed: expanding user inputs into :class:`InputItem` s, and loading one to RGB pixels.

Accepted: file paths, folders (recursive, sorted, extensions case-insensitive), http(s) URLs,
ndarrays (BGR, as PaddleX takes them), encoded image ``bytes``, ``{"img": ...}`` dicts and lists
of any of these.

Walking a folder is safe on hostile trees: a symlinked folder is entered at most once (by device
and inode), so a symlink loop cannot recurse forever; unreadable folders become one error entry
each instead of vanishing silently; FIFOs, sockets and devices that carry an image name are kept
as inputs so that decoding refuses them by name (see :mod:`imgfeat_cli.imaging.decode`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple

import numpy as np

from imgfeat_cli.common.errors import ImageDecodeError, UsageError
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, IMAGE_EXTENSIONS, Limits, decode_image, is_image_path


@dataclass(frozen=True)
class InputItem:
    """One image to embed: ``source`` is a path, URL, ndarray or bytes; ``input_path`` is what
    results report (``None`` for arrays). ``error`` marks an input already known to fail (an
    unreadable folder, a name the output cannot store), reported like a decoding failure."""

    source: Any
    input_path: Optional[str]
    error: Optional[str] = None


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def walk_images(folder: Path) -> List[str]:
    """Image files under ``folder``, recursively, sorted (stable across machines)."""
    return sorted(p for p, err in _walk(str(folder)) if err is None)


def walk_items(folder: str) -> List[InputItem]:
    """Image files under ``folder`` as items, sorted, with one error item per unreadable folder."""
    return [InputItem(p, p, err) for p, err in sorted(_walk(folder))]


def _walk(top: str) -> Iterator[Tuple[str, Optional[str]]]:
    """(path, None) per image-named entry and (folder, reason) per folder that cannot be listed.
    Hidden entries are skipped; each real folder is entered once whatever links lead to it."""
    seen: Set[Tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            yield folder, f"{folder}: cannot list folder ({os.strerror(exc.errno).lower() if exc.errno else exc})"
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:  # a symlink loop or a dangling link: let decoding name the reason
                is_dir = False
            if is_dir:
                stack.append(entry.path)
            elif is_image_path(entry.name):
                yield entry.path, None


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
    if isinstance(inputs, (bytes, bytearray)):
        yield InputItem(bytes(inputs), None)
        return
    if isinstance(inputs, (str, os.PathLike)):
        text = os.fspath(inputs)
        if is_url(text):
            yield InputItem(text, text)
            return
        if os.path.isdir(text):
            yield from walk_items(text)
            return
        if strict and not os.path.lexists(text):
            raise UsageError(f"input {text} does not exist", hint="pass image files, folders or http(s) URLs")
        yield InputItem(text, text)
        return
    raise UsageError(f"unsupported input of type {type(inputs).__name__}",
                     hint="pass a path, a URL, a numpy array, bytes, a dict {'img': ...} or a list of these")


def fetch_url(url: str, limits: Limits = DEFAULT_LIMITS, timeout: float = 30.0) -> bytes:
    """The body of ``url``, at most ``limits.max_bytes``."""
    import requests

    try:
        with requests.get(url, timeout=timeout, stream=True) as resp:
            if resp.status_code != 200:
                raise ImageDecodeError(f"{url}: HTTP {resp.status_code}")
            chunks, size = [], 0
            for chunk in resp.iter_content(1 << 16):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise ImageDecodeError(f"{url}: over the {limits.max_bytes >> 20} MB limit per file")
                chunks.append(chunk)
    except requests.RequestException as exc:
        raise ImageDecodeError(f"{url}: download failed ({exc.__class__.__name__})") from None
    return b"".join(chunks)


def load_rgb(item: InputItem, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode one item to uint8 RGB ``HxWx3``. ndarrays are taken as BGR (PaddleX convention);
    a 2-D array is grayscale, 4 channels are BGRA (alpha dropped)."""
    if item.error is not None:
        raise ImageDecodeError(item.error)
    src = item.source
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src)
    if isinstance(src, bytes):
        return decode_image(src, name=item.input_path or "<bytes>", limits=limits)
    text = os.fspath(src)
    if is_url(text):
        return decode_image(fetch_url(text, limits), name=text, limits=limits)
    return decode_image(text, limits=limits)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"array input has dtype {arr.dtype}; expected uint8 BGR")
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageDecodeError(f"array input has shape {arr.shape}; expected HxWx3 (BGR)")
    return np.ascontiguousarray(arr[:, :, 2::-1])


def read_path_list(lines: Iterable[str]) -> List[str]:
    """Paths from a list (e.g. stdin for ``embed -``): one per line, blanks and ``#`` comments
    skipped; a UTF-8 byte order mark before the first line (Windows editors, PowerShell) is not
    part of a path."""
    out = []
    for n, line in enumerate(lines):
        text = line.lstrip("\ufeff") if n == 0 else line
        if text.strip() and not text.lstrip().startswith("#"):
            out.append(text.strip())
    return out


def no_images(shard: Optional[str] = None) -> UsageError:
    """The one error for inputs that hold no image (or none in this shard)."""
    exts = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    return UsageError("no images found in the inputs" + (f" for shard {shard}" if shard else ""),
                      hint=f"check the paths; image extensions: {exts}")
