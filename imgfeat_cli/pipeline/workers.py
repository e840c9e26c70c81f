"""Inference streams: model replicas in worker processes, for CPU throughput.

Why processes: ``paddle.inference`` keeps the GIL for the whole forward pass, so decode threads in
the same process stall while the model runs, and one predictor spread over all cores pays OpenMP
synchronisation on every layer. Several single-threaded (or few-threaded) replicas, each decoding
its own batches, keep every core busy with useful work. On the 2-core development machine two
1-thread streams embed about 10% more images per second than one 2-thread predictor in fp32 and
about 15% in bf16, once started (``benchmarks/compare_paddlex.py --streams 2``).

How: each worker process (``spawn``, so no paddle/OpenMP state is forked) rebuilds the model from
its :attr:`~imgfeat_cli.models.model.EmbeddingModel.recipe` with the already-resolved backend and
precision, then takes batches of paths from one shared queue (so faster workers take more) and
sends back features and per-image errors through its own pipe. While the workers start (about 2 s:
importing paddle, building the predictor), the parent embeds batches itself; start-up still costs
about as much as streams gain on a thousand images, hence :data:`MIN_IMAGES`. Results are written in input order. Workers ignore Ctrl-C; the parent stops them.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError, ModelError, UsageError
from imgfeat_cli.pipeline.inputs import InputItem, load_rgb
from imgfeat_cli.common.system import cpu_count

#: Below this many images one process wins: each worker takes ~2 s to start. Measured on 2 cores
#: with ``imgfeat embed`` (PP-ShiTuV2, fp32): 1069 images 14.2 s either way, 4276 images 50.7 s
#: with two streams against 55.9 s in one process.
MIN_IMAGES = 2048
#: Each replica holds its own paddle runtime and weights (a few hundred MB): auto stops here.
MAX_AUTO_STREAMS = 8


@dataclass(frozen=True)
class StreamPlan:
    streams: int
    threads: int  # inference threads per stream


def plan(requested: Optional[int], threads: Optional[int], n_images: int, device: Optional[str] = None,
         rebuildable: bool = True) -> StreamPlan:
    """How many streams to run. ``requested``: ``None`` = auto, ``1`` = in-process only.

    Auto uses streams only on CPU, for inference folders (``rebuildable``: a model another process
    can load) and jobs of at least :data:`MIN_IMAGES` images: 1 thread per stream up to 3 cores, 2
    up to 8, 4 beyond (small-batch CNN layers stop scaling at a few threads). Measured on 2 cores
    only; ``--streams`` overrides.
    """
    cores = cpu_count()
    if requested is not None and requested < 1:
        raise UsageError(f"streams must be >= 1, got {requested}")
    if not rebuildable or not str(device or "cpu").startswith("cpu"):
        if requested not in (None, 1):
            raise UsageError("--streams needs an inference folder on CPU",
                             hint="use --model-dir or --model (not --weights), and --device cpu")
        return StreamPlan(1, threads or cores)
    if requested is None:
        if n_images < MIN_IMAGES or cores < 2:
            return StreamPlan(1, threads or cores)
        per = threads or (1 if cores <= 3 else 2 if cores <= 8 else 4)
        return StreamPlan(max(1, min(MAX_AUTO_STREAMS, cores // per)), per)
    return StreamPlan(requested, threads or max(1, cores // requested))


@dataclass
class BatchResult:
    """One embedded batch: the rows that succeeded, their features, and (row, reason) failures."""

    batch_id: int
    rows: List[int]
    feats: np.ndarray
    errors: List[Tuple[int, str]]


def row_jobs(model: Any, items: Sequence[InputItem]) -> Tuple[Optional[np.ndarray], List[Callable[[], Any]]]:
    """One decode job per item. With a fixed input shape each job writes its row of a fresh batch
    buffer (returned first); otherwise each returns its array and the buffer is ``None``."""
    shape = model.input_shape
    if shape is None:
        return None, [partial(preprocess, model, it) for it in items]
    buf = np.empty((len(items),) + tuple(shape), np.float32)
    return buf, [partial(preprocess_into, model, it, row) for it, row in zip(items, buf)]


def preprocess(model: Any, item: InputItem) -> np.ndarray:
    """Decode ``item`` and pre-process it for ``model``."""
    return model.preprocessor(load_rgb(item))


def preprocess_into(model: Any, item: InputItem, out: np.ndarray) -> None:
    """Decode and pre-process ``item`` into ``out`` (a row of a preallocated batch)."""
    model.preprocessor.into(load_rgb(item), out)


def assemble(model: Any, batch_id: int, buf: Optional[np.ndarray], outcomes: Sequence[Callable[[], Any]],
             after_each: Optional[Callable[[], None]] = None) -> BatchResult:
    """Collect each row's decode (``outcomes``: a job, or a future's ``result``), record the
    failures, then embed the rows that worked in one forward pass. ``after_each`` runs after every
    row (the caller's interruption check)."""
    rows: List[int] = []
    errors: List[Tuple[int, str]] = []
    arrays: List[np.ndarray] = []
    for row, outcome in enumerate(outcomes):
        try:
            arr = outcome()
        except ImgfeatError as exc:
            errors.append((row, exc.message))
        except Exception as exc:  # an unexpected decoder failure is still one bad file
            errors.append((row, f"{exc.__class__.__name__}: {exc}"))
        else:
            rows.append(row)
            if buf is None:
                arrays.append(arr)
        if after_each is not None:
            after_each()
    if not rows:
        return BatchResult(batch_id, rows, np.empty((0, 0), np.float32), errors)
    if buf is None:
        batch = np.stack(arrays)
    else:
        batch = buf if len(rows) == len(outcomes) else buf[rows]
    return BatchResult(batch_id, rows, model.embed_batch(batch), errors)


def embed_items(model: Any, batch_id: int, items: Sequence[InputItem]) -> BatchResult:
    """Decode, pre-process and embed one batch in this process (no threads)."""
    buf, jobs = row_jobs(model, items)
    return assemble(model, batch_id, buf, jobs)


def _worker(rank: int, recipe: Dict[str, Any], threads: int, tasks: Any, conn: Any) -> None:
    """Worker process body: build the replica, then embed batches until the ``None`` sentinel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    os.dup2(2, 1)  # stdout carries the parent's results: paddle's C++ chatter goes to stderr
    try:
        from imgfeat_cli.models.model import EmbeddingModel

        model = EmbeddingModel.from_recipe(recipe, cpu_threads=threads)
        if model.input_shape is not None:  # first run builds oneDNN primitives: do it before "ready"
            model.embed_batch(np.zeros((1,) + tuple(model.input_shape), np.float32))
    except ImgfeatError as exc:
        conn.send(("fatal", rank, exc.message))
        return
    except Exception as exc:
        conn.send(("fatal", rank, f"{exc.__class__.__name__}: {exc}"))
        return
    conn.send(("ready", rank, None))
    while True:
        task = tasks.get()
        if task is None:
            break
        batch_id, pairs = task
        res = embed_items(model, batch_id, [InputItem(src, path) for src, path in pairs])
        conn.send(("batch", rank, res))


class StreamPool:
    """Worker processes, each a stream; the parent embeds batches too: always when ``parent_joins``
    (its model already runs with the per-stream thread count), else only until the workers are
    ready."""

    def __init__(self, model: Any, workers: int, threads: int, parent_joins: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.model = model
        self.parent_joins = parent_joins
        self.threads = threads
        # a Queue, not a SimpleQueue: its feeder thread writes to the pipe, so a large task never
        # blocks the parent while a worker is blocked sending it a result (a deadlock)
        self.tasks = ctx.Queue()
        self.procs: List[Any] = []
        self.conns: List[Any] = []
        self.ready = 0
        for rank in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(rank, model.recipe, threads, self.tasks, writer),
                               name=f"imgfeat-stream-{rank}", daemon=True)
            proc.start()
            writer.close()
            self.procs.append(proc)
            self.conns.append(reader)

    def run(self, batches: Sequence[Sequence[InputItem]], on_result: Callable[[BatchResult], None],
            stop: Optional[Callable[[], bool]] = None) -> None:
        """Embed every batch; ``on_result`` gets each in batch order."""
        todo: Iterator[Tuple[int, Sequence[InputItem]]] = iter(enumerate(batches))
        pending: Dict[int, BatchResult] = {}
        next_out, queued, total = 0, 0, len(batches)
        exhausted = False

        def deliver(res: BatchResult) -> None:
            nonlocal next_out
            pending[res.batch_id] = res
            while next_out in pending:
                on_result(pending.pop(next_out))
                next_out += 1
                if stop is not None and stop():
                    raise KeyboardInterrupt

        while next_out < total:
            # keep two batches per ready worker queued, so none waits for the parent
            while not exhausted and queued < 2 * self.ready:
                nxt = next(todo, None)
                if nxt is None:
                    exhausted = True
                    break
                self.tasks.put((nxt[0], [(it.source, it.input_path) for it in nxt[1]]))
                queued += 1
            if (self.parent_joins or self.ready < len(self.procs)) and not exhausted:
                nxt = next(todo, None)  # the parent embeds one batch itself
                if nxt is None:
                    exhausted = True
                else:
                    deliver(embed_items(self.model, nxt[0], nxt[1]))
                timeout = 0.0
            else:
                timeout = 1.0
            for msg in self._poll(timeout):
                kind, rank, payload = msg
                if kind == "ready":
                    self.ready += 1
                elif kind == "batch":
                    queued -= 1
                    deliver(payload)
                else:
                    raise ModelError(f"inference stream {rank} could not start: {payload}",
                                     hint="run with --streams 1 to embed in one process")

    def _poll(self, timeout: float) -> List[Any]:
        live = [c for c in self.conns if not c.closed]
        ready = wait(live + [p.sentinel for p in self.procs], timeout)
        msgs = []
        for obj in ready:
            if obj in live:
                try:
                    msgs.append(obj.recv())
                except EOFError:
                    obj.close()
        if not msgs:  # workers only exit when close() tells them to: any earlier exit is a crash
            for rank, proc in enumerate(self.procs):
                if proc.exitcode is not None:
                    raise ModelError(f"inference stream {rank} died (exit code {proc.exitcode})",
                                     hint="rerun with --resume; with --streams 1 if it happens again")
        return msgs

    @property
    def streams(self) -> int:
        return len(self.procs) + (1 if self.parent_joins else 0)

    def close(self) -> None:
        """Stop the workers: sentinels first, then terminate any that do not exit promptly."""
        for proc in self.procs:
            if proc.is_alive():
                try:
                    self.tasks.put(None)
                except (OSError, ValueError):
                    break
        deadline = time.monotonic() + 2.0
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
        self._close_queue()

    def _close_queue(self) -> None:
        for conn in self.conns:
            conn.close()
        self.tasks.cancel_join_thread()  # queued tasks for dead workers must not block our exit
        self.tasks.close()

    def terminate(self) -> None:
        """Stop now (Ctrl-C, errors): queued batches are dropped, nothing of the user's is open."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(2.0)
            if proc.is_alive() and hasattr(os, "kill"):
                os.kill(proc.pid, signal.SIGKILL)
        self._close_queue()
