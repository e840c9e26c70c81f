"""The training set: list file -> decoded, augmented, batched arrays, prepared on threads.

Decoding and the deterministic first transform (the recipe's initial resize) run once per image
and are kept in memory while they fit ``cache_bytes`` (a 224 x 224 image is 147 kB, so 10k images
take 1.5 GB): epochs after the first then cost only the random augmentations, which OpenCV runs
without holding the GIL. The next batch is prepared while the model trains on the current one.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common import paths
from imgfeat_cli.datasets.dataset import Entry, image_problem, read_list, resolve_inside
from imgfeat_cli.common.errors import DatasetError, ImageDecodeError
from imgfeat_cli.imaging.decode import decode_image
from imgfeat_cli.training.augment import Augment

DEFAULT_CACHE_BYTES = 2 << 30


def load_split(root: Path, split: str, required: bool = True) -> List[Entry]:
    """Valid entries of ``<root>/<split>.txt``; the first malformed line or missing image is an
    error naming file and line (``imgfeat check`` lists them all)."""
    lf = read_list(root, split)
    if not lf.exists:
        path = root / f"{split}.txt"
        if required or path.exists() or path.is_symlink():  # a folder or FIFO where the list belongs
            raise DatasetError(f"{path} {paths.not_a_file(path) or 'does not exist'}",
                               hint="a ShiTuRecDataset needs train.txt, gallery.txt and query.txt (see imgfeat check)")
        return []
    bad = [p for p in lf.problems if p.severity == "error"]
    if bad:
        raise DatasetError(f"{root / (bad[0].file or split + '.txt')}:{bad[0].line or ''}: {bad[0].message}",
                           hint=f"run `imgfeat check --dataset {root}` for the full list")
    for e in lf.entries:
        path = resolve_inside(root, e.path)
        what = "points outside the dataset" if path is None else unusable_file(path)
        if what:
            raise DatasetError(f"{root / (split + '.txt')}:{e.line}: image {e.path} {what}",
                               hint=f"run `imgfeat check --dataset {root}` for the full list")
    return lf.entries


def unusable_file(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as a training image, or None (checked before training starts)."""
    why = image_problem(path)
    if why is None and not os.access(path, os.R_OK):
        why = "cannot be read (permission denied)"
    if why is None and path.stat().st_size == 0:
        why = "is empty (0 bytes)"
    return why


def sample_rng(seed: int, epoch: int, step: int, position: int) -> np.random.Generator:
    """The generator for one sample's augmentations: a pure function of where it sits in training."""
    return np.random.default_rng([seed, epoch, step, position])


class TrainData:
    """Images and labels of one split with the recipe's augmentations."""

    def __init__(self, root: Path, entries: Sequence[Entry], labels: Sequence[int],
                 first: Optional[Callable[[np.ndarray], np.ndarray]], augment: Augment, seed: int, workers: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """``labels``: the training label of each entry (contiguous, see :func:`..plan.relabel`)."""
        self.root = root
        self.paths = [str(resolve_inside(root, e.path)) for e in entries]
        self.rel = [e.path for e in entries]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.first = first
        self.augment = augment
        self.seed = seed
        self.workers = max(1, workers)
        self.cache_bytes = cache_bytes if first is not None else 0
        self._cache: Dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        """Decoded image after the deterministic first step (from the cache when possible)."""
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        try:
            rgb = decode_image(self.paths[index])
        except ImageDecodeError as exc:
            raise DatasetError(f"training image {self.rel[index]} cannot be read: {exc.message}",
                               hint=f"run `imgfeat check --dataset {self.root}`") from None
        img = self.first(rgb) if self.first is not None else rgb
        if self._cached_bytes + img.nbytes <= self.cache_bytes:
            with self._lock:
                if index not in self._cache:
                    self._cache[index] = img
                    self._cached_bytes += img.nbytes
        return img

    def sample(self, index: int, epoch: int, step: int, position: int) -> np.ndarray:
        return self.augment(self.image(index), sample_rng(self.seed, epoch, step, position))

    def _batch(self, pool: ThreadPoolExecutor, indices: Sequence[int], epoch: int, step: int) -> Tuple[np.ndarray, np.ndarray]:
        arrays = list(pool.map(lambda a: self.sample(a[1], epoch, step, a[0]), enumerate(indices)))
        return np.stack(arrays), self.labels[np.asarray(indices)]

    def batches(self, batch_lists: Sequence[Sequence[int]], epoch: int,
                start: int = 0) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(step, images, labels)`` for ``batch_lists[start:]``, one batch prepared ahead."""
        if start >= len(batch_lists):
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="imgfeat-train") as pool, \
                ThreadPoolExecutor(max_workers=1) as ahead:
            pending: Future = ahead.submit(self._batch, pool, batch_lists[start], epoch, start)
            for step in range(start, len(batch_lists)):
                images, labels = pending.result()
                if step + 1 < len(batch_lists):
                    pending = ahead.submit(self._batch, pool, batch_lists[step + 1], epoch, step + 1)
                yield step, images, labels
