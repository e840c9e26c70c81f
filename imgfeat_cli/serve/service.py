"""The service behind the routes: images in, features, matches and index changes out.

HTTP shapes (native or PaddleX) are the routes' business; this class does the work for both:
decoding in a bounded thread pool, features through the micro-batcher, searches on an index
snapshot in the pool (off the event loop), index writes through :mod:`imgfeat_cli.serve.indexes`.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.serve import backend
from imgfeat_cli.serve.batcher import MicroBatcher, fail, non_finite_rows
from imgfeat_cli.serve.errors import BadRequest
from imgfeat_cli.serve.indexes import Registry, Snapshot
from imgfeat_cli.serve.inputs import from_text
from imgfeat_cli.serve.metrics import Metrics
from imgfeat_cli.serve.settings import Settings
from imgfeat_cli.serve.thumbs import Thumbnails

#: Searches comparing at most this many (query, gallery) pairs run on the event loop (a Flat scan
#: of 20k 512-d vectors takes about a millisecond); bigger ones go to a thread, off the loop.
INLINE_SEARCH_ROWS = 20_000

#: An image as a request carries it: uploaded bytes, or a JSON string (base64 data or a URL).
Source = Union[bytes, str]


@dataclass
class Embedded:
    """Features of a request's images, with their sizes (and pixels when asked for)."""

    feats: np.ndarray
    sizes: List[Tuple[int, int]]
    pixels: List[Optional[np.ndarray]]


class Service:
    """Model, batcher, pools and indexes of one server process."""

    def __init__(self, settings: Settings, model: Any, warn: Callable[[str], None]) -> None:
        self.settings, self.model = settings, model
        self.identity = backend.model_identity(model)
        self.metrics = Metrics()
        self.pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="imgfeat-decode")
        self.batcher = MicroBatcher(lambda batch: backend.embed(model, batch), settings.max_batch,
                                    settings.max_wait_ms / 1000.0, settings.queue_size, self.metrics.batch.observe)
        self.registry = Registry(dict((n, Path(f)) for n, f in settings.indexes), Path(settings.data_dir),
                                 self.identity, settings.allow_other_model)
        self.registry.open_all(warn)
        self.thumbs = Thumbnails(settings.thumb_size, settings.limits)
        for name in self.registry.names():
            self.observe_index(name, self.registry.get(name).snapshot)

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # helpers -------------------------------------------------------------------------------------
    def observe_index(self, name: str, snap: Snapshot) -> None:
        self.metrics.index_items.labels(name).set(backend.index_count(snap.index))
        self.metrics.index_generation.labels(name).set(snap.generation)

    async def in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _prepare(self, source: Source, name: str, keep: bool) -> Tuple[np.ndarray, Tuple[int, int], Any]:
        s = self.settings
        data = source if isinstance(source, bytes) else from_text(source, name, s.allow_url, s.limits.max_bytes,
                                                                  s.url_timeout_s)
        return backend.prepare(self.model, data, name, s.limits, keep)

    # work ----------------------------------------------------------------------------------------
    async def embed(self, sources: Sequence[Source], keep_pixels: bool = False) -> Embedded:
        """Features of ``sources`` (in order); any image that fails fails the request, named."""
        n = len(sources)
        if not n:
            raise BadRequest("no image in the request")
        if n > self.settings.max_images:
            raise BadRequest(f"{n} images in one request; at most {self.settings.max_images}",
                             hint="split the request (or raise Serve.max_images)")
        self.batcher.admit(n)
        self.metrics.queue.inc(n)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in sources]
        extras: List[Any] = [None] * n
        try:
            for i, src in enumerate(sources):
                self.pool.submit(self._decode_to_batcher, src, i, keep_pixels, futures[i], loop, extras)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            self.batcher.release(n)
            self.metrics.queue.dec(n)
        for out in outcomes:
            if isinstance(out, BaseException):
                raise out
        feats = np.stack(outcomes)
        bad = non_finite_rows(feats)
        if bad:
            raise ImgfeatError(f"the model produced a non-finite feature for image {bad[0]}",
                               hint="the model's weights are broken")
        return Embedded(feats, [e[0] for e in extras], [e[1] for e in extras])

    def _decode_to_batcher(self, source: Source, i: int, keep: bool, fut: asyncio.Future,
                           loop: asyncio.AbstractEventLoop, extras: List[Any]) -> None:
        """(A decode thread.) Decode image ``i`` and queue its row for the model straight from
        here, so a request costs one trip back to the event loop, when its feature is ready."""
        try:
            row, size, pixels = self._prepare(source, f"image {i}", keep)
            extras[i] = (size, pixels)
            self.batcher.put(row, fut, loop)
        except BaseException as exc:  # noqa: BLE001 - the request gets it
            loop.call_soon_threadsafe(fail, fut, exc)
        finally:
            self.batcher.decoded(1)

    async def embed_all(self, sources: Sequence[Source]) -> np.ndarray:
        """Features of any number of images (index builds and adds), ``max_images`` at a time."""
        step = self.settings.max_images
        parts = [(await self.embed(sources[i:i + step])).feats for i in range(0, len(sources), step)]
        if not parts:
            raise BadRequest("no image in the request")
        return np.concatenate(parts)

    async def search(self, name: str, sources: Sequence[Source], k: int, threshold: Optional[float],
                     keep_pixels: bool = False) -> Tuple[Snapshot, List[Dict[str, Any]], Embedded]:
        """Matches of each image in index ``name`` (one snapshot for the whole request)."""
        live = self.registry.get(name)
        emb = await self.embed(sources, keep_pixels)
        snap = live.snapshot
        if backend.index_count(snap.index) * len(emb.feats) <= INLINE_SEARCH_ROWS:  # well under a millisecond
            results = backend.search(snap.index, emb.feats, k, threshold)
        else:
            results = await self.in_pool(backend.search, snap.index, emb.feats, k, threshold)
        return snap, results, emb

    async def add(self, name: str, sources: Sequence[Source], labels: Sequence[str]) -> Tuple[Snapshot, List[int]]:
        """Embed ``sources`` and add them with ``labels``: the new snapshot and the ids given."""
        self.registry.get(name)  # an unknown index fails before anything is embedded
        feats = await self.embed_all(sources)
        return await self._update(name, lambda folder: backend.add_to_index(folder, feats, labels))

    async def remove(self, name: str, ids: Sequence[int], label: Optional[str] = None) -> Tuple[Snapshot, int]:
        """Remove ids and/or a label's items: the new snapshot and how many went."""
        return await self._update(name, lambda folder: backend.remove_from_index(folder, ids, label))

    async def _update(self, name: str, change: Callable[[Path], Tuple[Any, Any]]) -> Tuple[Snapshot, Any]:
        snap, outcome = await self.in_pool(self.registry.get(name).update, change)
        self.observe_index(name, snap)
        return snap, outcome

    async def build(self, sources: Sequence[Source], labels: Sequence[str]) -> Tuple[str, Snapshot]:
        """A new index under the data folder (PaddleX's ``/shitu-index-build``)."""
        feats = await self.embed_all(sources)
        name, snap = await self.in_pool(
            self.registry.create, lambda folder: backend.build_index(folder, feats, labels, self.identity))
        self.observe_index(name, snap)
        return name, snap

    async def thumbnail(self, name: str, item_id: int) -> bytes:
        snap = self.registry.get(name).snapshot
        return await self.in_pool(self.thumbs.get, snap, item_id)
