"""Rows kept in memory: what ``predict``, ``eval``, ``index``, ``search`` and ``embed(out=None)`` get."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


class MemorySink:
    """Rows kept in memory, in input order: ``paths``, ``features`` (N, D) float32, ``errors``."""

    def __init__(self) -> None:
        self.paths: List[str] = []
        self._chunks: List[np.ndarray] = []
        self.errors: List[Tuple[str, str]] = []

    def cannot_store(self, path: str) -> Optional[str]:
        return None

    def write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        self.paths.extend(paths)
        self._chunks.append(feats)

    def error(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    @property
    def features(self) -> np.ndarray:
        if not self._chunks:
            return np.empty((0, 0), np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]
