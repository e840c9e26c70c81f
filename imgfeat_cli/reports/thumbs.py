"""Thumbnails: one small JPEG per distinct image, made in parallel threads, never more than a cap.

A report asks for an image by its path (:meth:`Thumbnails.want`) as often as it likes; every path
gets one number, and :meth:`Thumbnails.make` decodes each distinct image once (reduced while
decoding, :func:`~imgfeat_cli.imaging.reduced.open_reduced`) and writes ``files/t/N.jpg``. The file
name never derives from the user's path, so no path, however odd, reaches a URL. An image that is
missing or does not decode gets no file but a reason, which the page shows as a marked placeholder.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from imgfeat_cli.common.errors import ImageDecodeError
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.imaging.reduced import open_reduced
from imgfeat_cli.reports.limits import MAX_THUMBNAILS, THUMB_QUALITY, THUMB_SIDE
from imgfeat_cli.reports.target import ASSETS

#: Sub-folder of ``files/`` holding the thumbnails.
THUMB_DIR = "t"


@dataclass(frozen=True)
class Thumb:
    """What the page shows for one image: ``src`` (a URL relative to the page) or, when there is no
    picture, ``missing`` (why: "file not found", "truncated file", "no path recorded"...)."""

    src: Optional[str]
    missing: Optional[str] = None


def _write(source: Path, dest: Path) -> Optional[str]:
    """Write the thumbnail; the reason it could not be made, else ``None``."""
    try:
        img = open_reduced(source, THUMB_SIDE)
    except ImageDecodeError as exc:
        text = str(exc)
        prefix = f"{os.fsdecode(source)}: "
        return text[len(prefix):] if text.startswith(prefix) else text
    img.save(dest, format="JPEG", quality=THUMB_QUALITY)
    return None


class Thumbnails:
    """The images one report shows (module doc)."""

    def __init__(self, limit: int = MAX_THUMBNAILS) -> None:
        self.limit = limit
        self._number: Dict[Path, int] = {}
        self._made: Dict[Path, Thumb] = {}

    def want(self, path: Optional[Path]) -> None:
        """Ask for ``path``'s thumbnail (``None``: the row has no image path)."""
        if path is not None and path not in self._number and len(self._number) < self.limit:
            self._number[path] = len(self._number)

    def make(self, folder: Path, workers: Optional[int] = None) -> None:
        """Write every wanted thumbnail under ``folder/files/t/`` in parallel threads."""
        out = folder / ASSETS / THUMB_DIR
        out.mkdir(parents=True, exist_ok=True)
        todo: List[Tuple[Path, int]] = [(p, n) for p, n in self._number.items() if p not in self._made]
        with ThreadPoolExecutor(max_workers=workers or cpu_count()) as pool:
            reasons = pool.map(lambda item: _write(item[0], out / f"{item[1]}.jpg"), todo)
            for (path, n), why in zip(todo, reasons):
                self._made[path] = Thumb(None, why) if why else Thumb(f"{ASSETS}/{THUMB_DIR}/{n}.jpg")

    def get(self, path: Optional[Path]) -> Thumb:
        """The thumbnail of ``path`` once made (a placeholder for no path or one over the cap)."""
        if path is None:
            return Thumb(None, "no image path recorded")
        return self._made.get(path, Thumb(None, "not shown (thumbnail cap reached)"))

    @property
    def count(self) -> int:
        return sum(1 for t in self._made.values() if t.src)


def locate(path: Optional[str], root: Optional[Path]) -> Optional[Path]:
    """The image file a recorded path names: absolute as it is, relative under ``root`` (the
    dataset folder, or ``--image-root``; the working folder when ``None``)."""
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p
