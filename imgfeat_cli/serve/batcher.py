"""Micro-batching: concurrent requests share forward passes, and the queue in front is bounded.

Requests hand their pre-processed rows to :meth:`MicroBatcher.embed` and await their features. One
inference thread (off the event loop) takes the oldest waiting row and every row queued behind it,
up to ``max_batch``; while fewer are there and other requests are still being decoded (so more
rows are on their way) it waits for them, at most ``max_wait`` after the first. A lone request
therefore never waits, and a busy server fills its batches.

Admission is counted in images, from the moment a request starts decoding until its features are
back (:meth:`admit` / :meth:`release`): beyond ``queue_size`` a request is refused at once
(503 with Retry-After) instead of the queue and the latency growing without bound.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from imgfeat_cli.serve.errors import Overloaded

_STOP = object()


@dataclass
class _Row:
    array: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class MicroBatcher:
    """Groups rows into batches for ``run(batch) -> features`` on one inference thread."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_s: float,
                 queue_size: int, observe_batch: Callable[[int], None] = lambda n: None) -> None:
        self._run, self.max_batch, self.max_wait_s, self.queue_size = run, max_batch, max_wait_s, queue_size
        self._observe = observe_batch
        self._rows: "queue.Queue[Any]" = queue.Queue()
        self._lock = threading.Lock()
        self._admitted = 0  # images admitted and not yet answered
        self._decoding = 0  # of those, images still being decoded (rows on their way)
        self._thread = threading.Thread(target=self._serve, name="imgfeat-inference", daemon=True)
        self._thread.start()

    # admission -----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Images admitted and not answered yet (the queue depth metric)."""
        return self._admitted

    def admit(self, n: int) -> None:
        """Reserve room for ``n`` images about to be decoded, or refuse with :class:`Overloaded`."""
        with self._lock:
            if self._admitted + n > self.queue_size:
                raise Overloaded(f"the server is busy ({self._admitted} images queued, at most {self.queue_size})",
                                 hint="retry after the Retry-After delay")
            self._admitted += n
            self._decoding += n

    def decoded(self, n: int) -> None:
        """``n`` admitted images finished decoding (or failed to): no more rows to wait for."""
        with self._lock:
            self._decoding -= n

    def release(self, n: int) -> None:
        """``n`` admitted images are done (answered or failed)."""
        with self._lock:
            self._admitted -= n

    # work ----------------------------------------------------------------------------------------
    def put(self, row: np.ndarray, fut: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        """Queue one model input row (from any thread); ``fut`` gets its feature on ``loop``."""
        self._rows.put(_Row(row, fut, loop))

    async def embed(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Features of ``rows`` (model input rows), computed in shared batches."""
        loop = asyncio.get_running_loop()
        futures = []
        for row in rows:
            fut = loop.create_future()
            self.put(row, fut, loop)
            futures.append(fut)
        return np.stack(await asyncio.gather(*futures))

    def close(self) -> None:
        self._rows.put(_STOP)
        self._thread.join(timeout=10)

    def _collect(self, first: _Row) -> List[_Row]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._rows.get_nowait()
            except queue.Empty:
                wait = deadline - time.monotonic()
                if self._decoding <= 0 or wait <= 0:
                    break
                try:
                    item = self._rows.get(timeout=min(wait, 0.002))
                except queue.Empty:
                    continue
            if item is _STOP:
                self._rows.put(_STOP)
                break
            batch.append(item)
        return batch

    def _serve(self) -> None:
        while True:
            first = self._rows.get()
            if first is _STOP:
                return
            batch = self._collect(first)
            self._observe(len(batch))
            for group in _by_shape(batch):
                self._answer(group)

    def _answer(self, group: List[_Row]) -> None:
        try:
            feats = self._run(np.stack([r.array for r in group]))
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the error
            for r in group:
                r.loop.call_soon_threadsafe(fail, r.future, exc)
            return
        for r, feat in zip(group, feats):
            r.loop.call_soon_threadsafe(_done, r.future, feat)


def _by_shape(rows: List[_Row]) -> List[List[_Row]]:
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.array.shape, []).append(r)
    return list(groups.values())


def _done(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():  # the client may have gone away
        fut.set_result(value)


def fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def non_finite_rows(feats: np.ndarray) -> Optional[List[int]]:
    """Rows whose feature holds NaN or infinity (a broken model), or None."""
    bad = ~np.isfinite(feats).all(axis=1)
    return [int(i) for i in np.flatnonzero(bad)] if bad.any() else None
