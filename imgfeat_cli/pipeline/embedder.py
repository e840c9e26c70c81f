"""The embedding pipeline: an :class:`Embedder` plans once, owns its workers, and writes batches of
features to a sink in input order.

Every consumer goes through it: ``imgfeat embed`` (:func:`imgfeat_cli.pipeline.job.run_job`), ``FeatureModel.predict``,
``eval``, ``index`` and ``search`` (:func:`embed_to_memory`). It decides the batch size (per device,
:func:`~imgfeat_cli.common.system.default_batch_size`), the drivers (decode threads in this process,
or inference streams in worker processes, :mod:`imgfeat_cli.pipeline.workers`) and what happens on
Ctrl-C (workers stopped, the sink keeps what is complete). Each input that fails is reported with
its reason and costs only itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count, default_batch_size, parse_device
from imgfeat_cli.pipeline.batch import BatchResult
from imgfeat_cli.imaging.codecwarnings import naming_codec_warnings
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.inputs import InputItem, expand
from imgfeat_cli.pipeline.memory import MemorySink
from imgfeat_cli.pipeline.workers import StreamPool, ThreadDriver

TASK = "Embedding"
#: Below this many images one process wins: each worker takes ~2 s to start. Measured on 2 cores
#: with ``imgfeat embed`` (PP-ShiTuV2, fp32): 1069 images 14.2 s either way, 4276 images 50.7 s
#: with two streams against 55.9 s in one process.
MIN_STREAM_IMAGES = 2048
#: Each replica holds its own paddle runtime and weights (a few hundred MB): auto stops here.
MAX_AUTO_STREAMS = 8


@dataclass(frozen=True)
class StreamPlan:
    """How a job runs: ``streams`` model replicas (1 = this process only), ``threads`` inference
    threads each, and whether this process's own model is one of the streams."""

    streams: int
    threads: int
    parent_joins: bool = False


def plan_streams(requested: Optional[int], threads: Optional[int], n_images: int, device: Optional[str] = None,
                 rebuildable: bool = True, parent_joins: bool = False) -> StreamPlan:
    """Decide the streams once. ``requested``: ``None`` = auto, ``1`` = in-process only.

    Auto uses streams only on CPU, for inference folders (``rebuildable``: a model another process
    can load) and jobs of at least :data:`MIN_STREAM_IMAGES` images, with :func:`replica_threads`
    threads per stream. Measured on
    2 cores only; ``--streams`` overrides. ``parent_joins``: the caller will load its model with the
    per-stream thread count, so it is one of the streams (the ``embed`` command does this).
    """
    cores = cpu_count()
    if requested is not None and requested < 1:
        raise UsageError(f"streams must be >= 1, got {requested}")
    if not rebuildable or parse_device(device).is_gpu:
        if requested not in (None, 1):
            raise UsageError("--streams needs an inference folder on CPU",
                             hint="use --model-dir or --model (not --weights), and --device cpu")
        return StreamPlan(1, threads or cores)
    if requested is None:
        if n_images < MIN_STREAM_IMAGES or cores < 2:
            return StreamPlan(1, threads or cores)
        per = threads or replica_threads(cores)
        return StreamPlan(max(1, min(MAX_AUTO_STREAMS, cores // per)), per, parent_joins)
    if requested == 1:
        return StreamPlan(1, threads or cores)
    return StreamPlan(requested, threads or max(1, cores // requested), parent_joins)


def replica_threads(cores: int) -> int:
    """Inference threads for each model replica (a stream, a Ray actor) on a machine of ``cores``:
    1 up to 3 cores, 2 up to 8, 4 beyond (small-batch CNN layers stop scaling at a few threads)."""
    return 1 if cores <= 3 else 2 if cores <= 8 else 4


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"I/N"`` with 0 <= I < N; ``None`` (no ``--shard``) is every input, but an empty text is a
    mistake (``--shard "$TASK_ID/32"`` with the variable unset), never "every input"."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"bad --shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad --shard {text!r}: need 0 <= I < N")
    return i, n


def shard_of(path: str, n: int) -> int:
    """The shard of ``path`` among ``n``: a well-mixed hash (BLAKE2b) of its bytes, so shards are
    balanced whatever the naming (CRC-32 mod N, being linear, put similar names together)."""
    digest = hashlib.blake2b(os.fsencode(path), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def collect_inputs(inputs: Sequence[Any], shard: Optional[Tuple[int, int]] = None) -> List[InputItem]:
    """Expand inputs (folders recursively, sorted), drop repeated paths, keep one shard."""
    seen: Set[str] = set()
    items: List[InputItem] = []
    for item in expand(list(inputs), strict=False):
        key = item.input_path
        if key is not None:
            if key in seen or (shard is not None and shard_of(key, shard[1]) != shard[0]):
                continue
            seen.add(key)
        items.append(item)
    return items


@dataclass
class RunStats:
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    streams: int = 1
    details: Dict[str, Any] = field(default_factory=dict)


class Embedder:
    """Embeds inputs with one model: batching, decode threads or inference streams, in order.

    ``model``: an :class:`~imgfeat_cli.models.model.EmbeddingModel` (or ``FeatureModel``, whose
    started streams are used). ``plan``: from :func:`plan_streams`; default one process.
    ``decode_threads``: threads decoding images in this process (default half the cores: decoding
    costs a fraction of a forward pass per image, so half keeps the model fed without starving
    the inference threads).
    """

    def __init__(self, model: Any, batch_size: Optional[int] = None, plan: Optional[StreamPlan] = None,
                 decode_threads: Optional[int] = None, limits: Limits = DEFAULT_LIMITS,
                 progress: ProgressFn = null_progress, stop: Optional[Callable[[], bool]] = None) -> None:
        self.model = model
        self.batch_size = batch_size or default_batch_size(getattr(model, "device", "cpu"))
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")
        self.explicit_plan = plan is not None
        self.plan = plan or StreamPlan(1, getattr(model, "cpu_threads", None) or cpu_count())
        self.decode_threads = decode_threads or max(1, cpu_count() // 2)
        self.limits, self.progress, self.stop = limits, progress, stop
        self.streams_used = 1

    @property
    def identity(self) -> Dict[str, Any]:
        """The model's identity, as outputs record it (a driver's verb: see :mod:`.job`)."""
        return self.model.identity

    @property
    def model_source(self) -> Dict[str, Any]:
        return self.model.source_record()

    @property
    def summary(self) -> Dict[str, Any]:
        """What a job result says about the engine that ran."""
        m = self.model
        return {"model": m.name, "backend": m.backend, "precision": m.precision, "device": m.device,
                "batch_size": self.batch_size}

    def _driver(self) -> Tuple[Any, bool]:
        """(driver, owned): the model's started streams (unless the plan says one process), a pool
        for this job, or threads."""
        own = getattr(self.model, "stream_pool", None)
        if own is not None and not (self.explicit_plan and self.plan.streams == 1):
            return own, False
        if self.plan.streams > 1:
            workers = self.plan.streams - (1 if self.plan.parent_joins else 0)
            return StreamPool(self.model, workers, self.plan.threads, self.plan.parent_joins, self.limits), True
        return ThreadDriver(self.model, self.decode_threads, self.limits), True

    def results(self, items: Sequence[InputItem],
                cannot_store: Callable[[str], Optional[str]] = lambda p: None) -> Iterator[Tuple[List[InputItem], BatchResult]]:
        """Each batch of ``items`` with its result, in input order. Inputs the sink cannot store
        (``cannot_store`` gives the reason) fail without being decoded."""
        items = [InputItem(it.source, it.input_path, cannot_store(it.input_path))
                 if it.error is None and it.input_path is not None and cannot_store(it.input_path) else it
                 for it in items]
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        driver, owned = self._driver()
        self.streams_used = getattr(driver, "streams", 1)
        finished = False
        # libjpeg's "Corrupt JPEG data" names its file when this process does all the decoding
        # (a stream worker's line could not be told from this process's own)
        named = naming_codec_warnings() if isinstance(driver, ThreadDriver) else contextlib.nullcontext()
        try:
            with named:
                for res in driver.results(enumerate(batches), self.batch_size, self.stop):
                    yield batches[res.batch_id], res
            finished = True
        finally:
            if isinstance(driver, StreamPool) and not finished:
                driver.terminate()  # Ctrl-C or an error: stop now, queued batches are dropped
                if getattr(self.model, "stream_pool", None) is driver:
                    self.model.stream_pool = None
            elif owned:
                driver.close()

    def run(self, items: Sequence[InputItem], sink: Any, already_done: int = 0) -> RunStats:
        """Embed ``items`` into ``sink`` (``write(paths, feats)`` and ``error(path, reason)``)."""
        stats = RunStats()
        total = already_done + len(items)
        t0 = time.perf_counter()
        self.progress(TASK, already_done, total)
        for batch, res in self.results(items, getattr(sink, "cannot_store", lambda p: None)):
            for row, reason in res.errors:
                sink.error(batch[row].input_path or "<array>", reason)
            if res.rows:
                sink.write([batch[r].input_path or "" for r in res.rows], res.feats)
            stats.embedded += len(res.rows)
            stats.failed += len(res.errors)
            self.progress(TASK, already_done + stats.embedded + stats.failed, total)
        stats.seconds = time.perf_counter() - t0
        stats.streams = self.streams_used
        return stats


def embed_to_memory(model: Any, inputs: Any, batch_size: Optional[int] = None, progress: Optional[ProgressFn] = None,
                    stop: Optional[Callable[[], bool]] = None, plan: Optional[StreamPlan] = None) -> MemorySink:
    """Embed ``inputs`` (anything :func:`~imgfeat_cli.pipeline.inputs.expand` takes) in memory:
    ``.paths``, ``.features`` (input order, the inputs that worked) and ``.errors``."""
    sink = MemorySink()
    items = inputs if isinstance(inputs, list) and all(isinstance(i, InputItem) for i in inputs) \
        else list(expand(inputs, strict=False))
    Embedder(model, batch_size, plan, progress=progress or null_progress, stop=stop).run(items, sink)
    return sink
