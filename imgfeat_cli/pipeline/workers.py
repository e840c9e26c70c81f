"""The two drivers that turn batches of inputs into :class:`BatchResult` s, in input order.

* :class:`ThreadDriver` (one process): decode threads write pre-processed rows straight into
  preallocated batch buffers a few batches ahead, while this thread runs the model. Pillow,
  OpenCV and NumPy release the GIL, so decoding overlaps inference.
* :class:`StreamPool` (inference streams): model replicas in spawned worker processes, each
  decoding and embedding whole batches taken from one shared queue (faster workers take more);
  the parent embeds batches too while the workers start, and always when it is one of the
  streams. Why processes: ``paddle.inference`` holds the GIL for the whole forward pass, so decode
  threads stall while it runs, and one predictor spread over every core pays OpenMP
  synchronisation on each layer. On 2 cores two 1-thread streams embed ~10% (fp32) to ~15% (bf16)
  more images per second than one 2-thread predictor, once started (~2 s per worker).

Why not ``concurrent.futures.ProcessPoolExecutor``: before Python 3.14 it cannot terminate its
workers (Ctrl-C would wait for every queued batch), an initializer that fails surfaces only as
``BrokenProcessPool`` without its reason, and it has no per-worker "ready" signal, which the
schedule needs so that the parent works while workers start.

Workers never see Ctrl-C (SIGINT is blocked while they are spawned, so they inherit it blocked,
and ignored in their body); the parent stops them. Paddle's own SIGTERM handler is disabled in
them, so terminating one prints nothing (it could also deadlock inside malloc).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError, ModelError
from imgfeat_cli.pipeline.batch import BatchResult, assemble, embed_rows, row_jobs
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.inputs import InputItem

Batches = Iterable[Tuple[int, List[InputItem]]]
StopFn = Optional[Callable[[], bool]]


def _check(stop: StopFn) -> None:
    if stop is not None and stop():
        raise KeyboardInterrupt


class ThreadDriver:
    """One process: decode threads fill batch buffers ahead while this thread runs the model."""

    def __init__(self, model: Any, decode_threads: int, limits: Limits = DEFAULT_LIMITS) -> None:
        self.model, self.limits = model, limits
        self.pool = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix="imgfeat-decode")
        self.decode_threads = max(1, decode_threads)

    def results(self, batches: Batches, batch_size: int, stop: StopFn = None) -> Iterator[BatchResult]:
        # Batches are submitted ahead so the decode threads work while the model runs; each keeps
        # its preallocated buffer, so memory stays at a few batches whatever the number of images.
        ahead = max(2, -(-4 * self.decode_threads // max(1, batch_size)))
        window: Deque[Tuple[int, Optional[np.ndarray], List["Future[Any]"]]] = deque()
        try:
            for batch_id, items in batches:
                buf, jobs = row_jobs(self.model, items, self.limits)
                window.append((batch_id, buf, [self.pool.submit(job) for job in jobs]))
                if len(window) > ahead:
                    yield self._take(window.popleft(), stop)
            while window:
                yield self._take(window.popleft(), stop)
        finally:
            for _, _, futures in window:  # drop queued decodes of an abandoned run
                for fut in futures:
                    fut.cancel()

    def _take(self, slot: Tuple[int, Optional[np.ndarray], List["Future[Any]"]], stop: StopFn) -> BatchResult:
        batch_id, buf, futures = slot
        return assemble(self.model, buf, [f.result for f in futures], batch_id, lambda: _check(stop))

    def close(self) -> None:
        # running decodes write into buffers we own: wait for them, drop the queued ones
        self.pool.shutdown(wait=True, cancel_futures=True)


def _worker(rank: int, recipe: Dict[str, Any], threads: int, limits: Limits, tasks: Any, conn: Any) -> None:
    """Worker process body: build the replica, then embed batches until the ``None`` sentinel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    os.dup2(2, 1)  # stdout carries the parent's results: paddle's C++ chatter goes to stderr
    try:
        from imgfeat_cli.models.model import EmbeddingModel
        from imgfeat_cli.models.runners import quiet_paddle_signals

        quiet_paddle_signals()
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
        batch_id, triples = task
        conn.send(("batch", rank, embed_rows(model, [InputItem(*t) for t in triples], limits, batch_id)))


class StreamPool:
    """Worker processes, each a stream; the parent embeds batches too: always when ``parent_joins``
    (its model already runs with the per-stream thread count), else only until the workers are
    ready. A pool can serve many jobs (``FeatureModel.start_streams``) until :meth:`close`."""

    def __init__(self, model: Any, workers: int, threads: int, parent_joins: bool = False,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if model.recipe is None:
            raise ModelError("inference streams need an inference folder", hint="export the checkpoint first (imgfeat export)")
        ctx = mp.get_context("spawn")
        self.model, self.parent_joins, self.threads, self.limits = model, parent_joins, threads, limits
        # a Queue, not a SimpleQueue: its feeder thread writes to the pipe, so a large task never
        # blocks the parent while a worker is blocked sending it a result (a deadlock)
        self.tasks = ctx.Queue()
        self.procs: List[Any] = []
        self.conns: List[Any] = []
        self.ready = 0
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:  # children inherit the mask across exec: Ctrl-C never reaches them
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for rank in range(workers):
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(rank, model.recipe, threads, limits, self.tasks, writer),
                                   name=f"imgfeat-stream-{rank}", daemon=True)
                proc.start()
                writer.close()
                self.procs.append(proc)
                self.conns.append(reader)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    @property
    def streams(self) -> int:
        return len(self.procs) + (1 if self.parent_joins else 0)

    def results(self, batches: Batches, batch_size: int, stop: StopFn = None) -> Iterator[BatchResult]:
        """Embed every batch; yield the results in batch order."""
        todo = iter(batches)
        pending: Dict[int, BatchResult] = {}
        order: Deque[int] = deque()  # batch ids handed out, in input order
        queued, exhausted = 0, False
        while not exhausted or order:
            while not exhausted and queued < 2 * max(1, self.ready):  # two per ready worker
                nxt = next(todo, None)
                if nxt is None:
                    exhausted = True
                    break
                order.append(nxt[0])
                self.tasks.put((nxt[0], [(it.source, it.input_path, it.error) for it in nxt[1]]))
                queued += 1
            if (self.parent_joins or self.ready < len(self.procs)) and not exhausted:
                nxt = next(todo, None)  # the parent embeds one batch itself
                if nxt is None:
                    exhausted = True
                else:
                    order.append(nxt[0])
                    pending[nxt[0]] = embed_rows(self.model, nxt[1], self.limits, nxt[0])
            parent_works = (self.parent_joins or self.ready < len(self.procs)) and not exhausted
            for kind, rank, payload in self._poll(0.0 if parent_works or not order else 0.5):
                if kind == "ready":
                    self.ready += 1
                elif kind == "batch":
                    queued -= 1
                    pending[payload.batch_id] = payload
                else:
                    raise ModelError(f"inference stream {rank} could not start: {payload}",
                                     hint="run with --streams 1 to embed in one process")
            while order and order[0] in pending:
                yield pending.pop(order.popleft())
                _check(stop)

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
        self.terminate()

    def terminate(self) -> None:
        """Stop now (Ctrl-C, errors): queued batches are dropped. Workers hold nothing of the
        user's (the parent writes every file), so they are killed outright: a SIGTERM that lands
        while a worker is still importing paddle meets paddle's own handler, which prints a
        "FatalError" banner."""
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join(2.0)
        for conn in self.conns:
            conn.close()
        self.tasks.cancel_join_thread()  # queued tasks for dead workers must not block our exit
        self.tasks.close()
        self.procs = []
        self.conns = []

