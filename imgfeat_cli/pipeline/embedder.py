"""``embed``: images -> feature vectors, streamed to JSONL or NPY.

Design points:

* A bounded pipeline: worker threads decode and pre-process images (Pillow, OpenCV and NumPy
  release the GIL) straight into preallocated batch buffers while the main thread runs batched
  inference. A few batches are in flight, so memory is constant in the number of images.
* Output is appended to ``FILE.part`` batch by batch and renamed to ``FILE`` at the end; an
  interrupted run leaves ``FILE.part`` and ``--resume`` continues from it (a torn last record is
  cut off). Inputs already present in the output are skipped.
* Failures (missing, unreadable, undecodable) never stop the run: each goes to
  ``FILE.errors.jsonl`` with its reason.
* ``shard=(i, n)`` keeps the inputs whose path hashes (CRC-32) to ``i`` modulo ``n``: a
  deterministic partition that needs no coordination and does not depend on listing order.
"""
from __future__ import annotations

import json
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.pipeline import workers as streams_mod
from imgfeat_cli.common.errors import Interrupted, UsageError
from imgfeat_cli.pipeline.inputs import InputItem, expand
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.pipeline.sinks import open_writer, output_format

TASK = "Embedding"


@dataclass
class EmbedResult:
    output: str
    format: str
    model: str
    backend: str
    device: str
    batch_size: int
    total: int
    embedded: int
    already_done: int
    failed: int
    seconds: float
    errors_file: Optional[str]
    shard: Optional[str]
    precision: str = "fp32"
    streams: int = 1

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_s"] = round(self.images_per_s, 3)
        d["seconds"] = round(self.seconds, 3)
        return d


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"I/N"`` with 0 <= I < N."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"bad --shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad --shard {text!r}: need 0 <= I < N")
    return i, n


def in_shard(key: str, shard: Optional[Tuple[int, int]]) -> bool:
    return shard is None or zlib.crc32(key.encode("utf-8")) % shard[1] == shard[0]


def collect_inputs(inputs: Sequence[Any], shard: Optional[Tuple[int, int]] = None) -> List[InputItem]:
    """Expand inputs (dirs recursively, sorted), drop repeated paths, apply the shard filter."""
    seen: Set[str] = set()
    items: List[InputItem] = []
    for item in expand(list(inputs), strict=False):
        key = item.input_path
        if key is None or key in seen or not in_shard(key, shard):
            continue
        seen.add(key)
        items.append(item)
    return items


@dataclass
class _Chunk:
    """One batch in flight: its items, the preallocated batch buffer the decode threads write their
    rows into (``None`` when image sizes vary), and one future per item."""

    items: List[InputItem]
    buf: Optional[np.ndarray]
    futures: List["Future[Any]"]


def _submit(pool: ThreadPoolExecutor, model: Any, items: List[InputItem]) -> _Chunk:
    buf, jobs = streams_mod.row_jobs(model, items)
    return _Chunk(items, buf, [pool.submit(job) for job in jobs])


def run_embed(inputs: Sequence[Any], out: str, model: Any, fmt: Optional[str] = None, batch_size: int = 8,
              fp16: bool = False, resume: bool = False, overwrite: bool = False, shard: Optional[str] = None,
              num_workers: Optional[int] = None, progress: ProgressFn = null_progress,
              stop: Optional[Callable[[], bool]] = None, streams: Optional[int] = None,
              threads: Optional[int] = None) -> EmbedResult:
    """Embed ``inputs`` with ``model`` (a :class:`~imgfeat_cli.models.model.EmbeddingModel`) into ``out``.

    ``streams``: model replicas in worker processes (:mod:`imgfeat_cli.pipeline.workers`); ``None``
    decides from the machine and the job size, ``1`` keeps everything in this process;
    ``threads``: inference threads per stream (``None``: from the plan).
    """
    if batch_size < 1:
        raise UsageError("batch size must be >= 1")
    fmt = output_format(out, fmt)
    shard_t = parse_shard(shard)
    out_path = Path(out)
    errors_path = out_path.with_name(out_path.name + ".errors.jsonl")
    writer = open_writer(out_path, fmt, fp16=fp16)
    if writer.exists() and not (resume or overwrite):
        raise UsageError(f"{out} already exists", hint="pass --resume to continue it or --overwrite to replace it")
    if writer.part_exists() and not (resume or overwrite):
        raise UsageError(f"an interrupted run left {writer.part_path}",
                         hint="pass --resume to continue it or --overwrite to start over")
    done = writer.begin(resume=resume)
    items = collect_inputs(inputs, shard_t)
    already = sum(1 for it in items if it.input_path in done)
    todo = [it for it in items if it.input_path not in done]
    total = len(items)
    errors: List[Dict[str, str]] = []
    embedded = 0
    t0 = time.perf_counter()
    progress(TASK, already, total)
    own_pool = getattr(model, "stream_pool", None) if streams != 1 else None
    sp = streams_mod.plan(streams, threads, len(todo), getattr(model, "device", "cpu"),
                          getattr(model, "recipe", None) is not None)

    def record(batch: List[InputItem], res: streams_mod.BatchResult) -> None:
        nonlocal embedded
        for row, reason in res.errors:
            errors.append({"input_path": batch[row].input_path or "", "error": reason})
        if res.rows:
            writer.write([batch[r].input_path or "" for r in res.rows], res.feats)
            embedded += len(res.rows)
        progress(TASK, already + embedded + len(errors), total)

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    pool: Any = None
    used_streams = 1
    try:
        if own_pool is not None or sp.streams > 1:
            # the model's own pool (FeatureModel.start_streams) or one for this job; a parent model
            # built with the per-stream thread count is one of the streams
            joins = getattr(model, "cpu_threads", None) == sp.threads
            pool = own_pool or streams_mod.StreamPool(model, sp.streams - 1 if joins else sp.streams,
                                                      sp.threads, joins)
            used_streams = pool.streams
            pool.run(batches, lambda res: record(batches[res.batch_id], res), stop)
        else:
            _threaded(model, batches, record, stop, num_workers)
    except KeyboardInterrupt:
        _stop(pool, model)
        writer.suspend()  # keep FILE.part for --resume
        _write_errors(errors_path, errors)
        raise Interrupted(f"interrupted after {embedded} new images; partial output kept in {writer.part_path}",
                          hint="rerun the same command with --resume to continue") from None
    except BaseException:
        _stop(pool, model)
        writer.suspend()
        _write_errors(errors_path, errors)
        raise
    if isinstance(pool, streams_mod.StreamPool) and pool is not own_pool:
        pool.close()
    seconds = time.perf_counter() - t0
    writer.finish()
    _write_errors(errors_path, errors)
    return EmbedResult(str(out_path), fmt, model.name, model.backend, model.device, batch_size, total, embedded,
                       already, len(errors), seconds, str(errors_path) if errors else None,
                       f"{shard_t[0]}/{shard_t[1]}" if shard_t else None, str(getattr(model, "precision", "fp32")),
                       used_streams)


def _threaded(model: Any, batches: List[List[InputItem]],
              record: Callable[[List[InputItem], streams_mod.BatchResult], None],
              stop: Optional[Callable[[], bool]], num_workers: Optional[int]) -> None:
    """One process: decode threads fill batch buffers ahead while the main thread runs the model."""
    # Decoding costs a fraction of a forward pass per image: half the cores keep the model fed
    # without starving the inference threads (measured in benchmarks/embed.py).
    workers = num_workers or max(1, cpu_count() // 2)
    # Batches are submitted ahead so the decode threads work while the model runs; each keeps its
    # preallocated buffer, so memory stays at a few batches whatever the number of images.
    ahead = max(2, -(-4 * workers // max(1, len(batches[0]) if batches else 1)))
    window: Deque[_Chunk] = deque()

    def check_stop() -> None:
        if stop is not None and stop():
            raise KeyboardInterrupt

    def take(chunk: _Chunk, batch_id: int) -> None:
        res = streams_mod.assemble(model, batch_id, chunk.buf, [f.result for f in chunk.futures], check_stop)
        record(chunk.items, res)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgfeat-decode")
    try:
        done = 0
        for items in batches:
            window.append(_submit(pool, model, items))
            if len(window) > ahead:
                take(window.popleft(), done)
                done += 1
        while window:
            take(window.popleft(), done)
            done += 1
    finally:
        # drop queued decodes and wait for running ones (they write into buffers we own)
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(pool: Any, model: Any) -> None:
    """Stop worker processes at once (their queued batches are dropped; resume redoes them)."""
    if isinstance(pool, streams_mod.StreamPool):
        pool.terminate()
        if getattr(model, "stream_pool", None) is pool:
            model.stream_pool = None


def _write_errors(path: Path, errors: List[Dict[str, str]]) -> None:
    """Replace the errors file with this run's failures (or remove a stale one)."""
    if errors:
        fsutil.write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))
    elif path.exists():
        path.unlink()
