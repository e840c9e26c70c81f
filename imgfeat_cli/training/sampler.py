"""PK batch sampler: P labels x K images per batch, the batches metric-learning losses need.

As upstream: labels are drawn without replacement within a batch with probability proportional to
class size; a class with fewer than K images is sampled with replacement. The generator is seeded
and its state can be saved and restored, so a resumed run draws the same batches as an
uninterrupted one.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from imgfeat_cli.common.errors import UsageError


class PKSampler:
    def __init__(self, labels: Sequence[int], batch_size: int, k: int = 4, seed: int = 0,
                 num_batches: Optional[int] = None) -> None:
        """``num_batches`` per epoch: ``ceil(len(labels) / batch_size)`` unless given (PaddleClas's
        ``drop_last: False``: the last, partial batch of an epoch is drawn full, as every PK batch is)."""
        if batch_size % k:
            raise UsageError(f"batch size {batch_size} is not a multiple of {k} images per class",
                             hint=f"use e.g. -o Train.batch_size={max(k, batch_size - batch_size % k)}")
        by_label: Dict[int, List[int]] = defaultdict(list)
        for i, lab in enumerate(labels):
            by_label[int(lab)].append(i)
        self.labels = sorted(by_label)
        self.index = {lab: np.asarray(by_label[lab]) for lab in self.labels}
        self.p = batch_size // k
        if len(self.labels) < self.p:
            raise UsageError(f"{len(self.labels)} classes x {k} images per class = {len(self.labels) * k} < batch size "
                             f"{batch_size}: a batch needs {self.p} different classes",
                             hint=f"lower -o Train.batch_size to at most {len(self.labels) * k}")
        sizes = np.asarray([len(self.index[lab]) for lab in self.labels], dtype=np.float64)
        self.prob = sizes / sizes.sum()
        self.k = k
        self.batch_size = batch_size
        self.num_batches = num_batches or max(1, math.ceil(len(labels) / batch_size))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        for _ in range(self.num_batches):
            chosen = self.rng.choice(len(self.labels), size=self.p, replace=False, p=self.prob)
            batch: List[int] = []
            for c in chosen:
                idx = self.index[self.labels[c]]
                batch.extend(int(i) for i in self.rng.choice(idx, size=self.k, replace=len(idx) < self.k))
            yield batch

    def state_dict(self) -> Dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def set_state_dict(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
