"""Gallery thumbnails for the search page: by item id, only from inside the gallery root.

The URL names an index and an item id, never a path. The path is the one the index recorded for
that id; it is resolved (symlinks included) and served only when it lies inside the index's gallery
root (the folder all its recorded paths share), so neither a crafted request nor an edited side
file can read anything else. The image is decoded with the server's byte and pixel limits,
shrunk to ``size`` pixels on its longest side and re-encoded as JPEG (only pixels leave, never the
file's bytes), and the result is kept in a small LRU cache keyed by path, size and mtime.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Optional, Tuple

import cv2
import numpy as np

from imgfeat_cli.imaging.decode import Limits, decode_image
from imgfeat_cli.serve import backend
from imgfeat_cli.serve.errors import HTTPError, NotFound
from imgfeat_cli.serve.indexes import Snapshot

#: Thumbnails kept in memory (a 160 px JPEG is about 5 KB).
CACHE_ENTRIES = 2048


class Forbidden(HTTPError):
    status, code = 403, "forbidden"


def inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def encode_jpeg(rgb: np.ndarray, size: Optional[int] = None, quality: int = 85) -> bytes:
    """JPEG bytes of ``rgb``, shrunk to ``size`` pixels on its longest side when larger."""
    h, w = rgb.shape[:2]
    if size and max(h, w) > size:
        scale = size / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise HTTPError("could not encode a JPEG")
    return buf.tobytes()


class Thumbnails:
    """Resized, cached gallery images (see the module docstring)."""

    def __init__(self, size: int, limits: Limits) -> None:
        self.size, self.limits = size, limits
        self._cache: "OrderedDict[Tuple, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def path_of(self, snap: Snapshot, item_id: int) -> str:
        """The resolved file of ``item_id``, checked to lie in the gallery root."""
        recorded = backend.index_paths(snap.index).get(item_id)
        if recorded is None:
            known = item_id in backend.index_labels(snap.index)
            raise NotFound(f"item {item_id} has no recorded image" if known else f"no item {item_id} in this index",
                           hint="items added over HTTP keep no image" if known else None)
        real = os.path.realpath(recorded)
        if not snap.gallery_root or not inside(real, snap.gallery_root):
            raise Forbidden(f"item {item_id}'s image lies outside the index's gallery root")
        return real

    def get(self, snap: Snapshot, item_id: int) -> bytes:
        path = self.path_of(snap, item_id)
        try:
            st = os.stat(path)
        except OSError:
            raise NotFound(f"item {item_id}'s image is gone from the gallery") from None
        key = (path, st.st_mtime_ns, st.st_size, self.size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = encode_jpeg(decode_image(path, limits=self.limits), self.size)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return data
