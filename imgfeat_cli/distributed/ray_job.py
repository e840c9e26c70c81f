"""The Ray driver of an embedding job: inputs go to a pool of Ray actors (:mod:`.ray_embed`), their
rows come back to this process and go to the job's sink as they arrive (so only the driver needs
to reach the output, and progress is exact). The job's lifecycle (resume, Ctrl-C, publishing) is
:func:`imgfeat_cli.pipeline.job.run_job`'s, the same as on one machine.

Ray itself stays out of sight: its logs and progress bars only with ``verbose``, never on stdout.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.distributed.ray_embed import NODE_COLUMN, input_rows, map_embedder, package_model, require_ray
from imgfeat_cli.distributed.ray_plan import ActorPlan, cluster_plan
from imgfeat_cli.distributed.stdio import ray_stdio
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.embedder import TASK, RunStats
from imgfeat_cli.pipeline.job import DriverFailed
from imgfeat_cli.pipeline.inputs import InputItem


@dataclass(frozen=True)
class RaySettings:
    """What the command line says about the cluster."""

    address: Optional[str] = None
    actors: Optional[int] = None
    threads: Optional[int] = None
    verbose: bool = False


def connect(address: Optional[str], verbose: bool = False) -> bool:
    """Join the cluster at ``address`` (``None``: ``RAY_ADDRESS`` or a new local instance), quietly
    unless ``verbose``. Returns whether this call started Ray (so it shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI codes in forwarded actor logs
    check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)
    except Exception as exc:  # Ray raises bare Exceptions too (e.g. a node that timed out starting)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if address:
            raise ImgfeatError(f"cannot connect to Ray at {address}: {text[:200]}",
                               hint="check --ray-address (host:port of `ray start --head`, or ray://host:10001)") from None
        raise ImgfeatError(f"cannot start Ray on this machine: {text[:200]}",
                           hint="retry when the machine is less busy, or start it yourself (ray start --head) "
                                "and pass --ray-address") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True


def check_reachable(address: Optional[str], timeout: float = 5.0) -> None:
    """Fail at once when ``host:port`` (or ``ray://host:port``) does not answer: Ray itself retries
    an unreachable address for about 13 minutes (20 tries of ~40 s) before giving up."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", (address or "").strip())
    if not m:
        return  # None, "auto", "local": Ray decides
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        reason = (exc.strerror or str(exc) or exc.__class__.__name__).lower()
        raise ImgfeatError(f"cannot reach the Ray cluster at {address} ({reason})",
                           hint="start it with `ray start --head` and pass the address it prints "
                                "(host:6379, or ray://host:10001 for Ray Client)") from None


class RayDriver:
    """Embeds on a Ray cluster (the verbs of :class:`imgfeat_cli.pipeline.job.Driver`).

    ``model``: the driver's copy, loaded on CPU, that is checked, identified and shipped to the
    actors, which run it on ``device`` at ``precision``."""

    def __init__(self, model: Any, settings: RaySettings, device: Optional[str], precision: Optional[str],
                 batch_size: Optional[int] = None, fp16: bool = False, limits: Limits = DEFAULT_LIMITS,
                 progress: ProgressFn = null_progress) -> None:
        self.package = package_model(model, device or "cpu", precision)
        self.settings, self.device, self.batch_size = settings, device, batch_size
        self.fp16, self.limits, self.progress = fp16, limits, progress
        self.identity = self.package.identity
        self.model_source = model.source_record()
        self.plan: Optional[ActorPlan] = None
        self.nodes: Counter = Counter()  # Ray node id -> rows its actors embedded in this run
        self.summary = {"model": model.name, "backend": self.package.recipe["backend"],
                        "precision": self.package.recipe["precision"], "device": device or "cpu",
                        "batch_size": batch_size or 0}

    def run(self, items: Sequence[InputItem], sink: Any, already_done: int = 0) -> RunStats:
        stats = RunStats()
        todo = []
        for it in items:  # what the sink cannot hold fails here: it would not survive the trip either
            why = it.input_path and sink.cannot_store(it.input_path)
            if why:
                sink.error(it.input_path, why)
                stats.failed += 1
            else:
                todo.append(it)
        if todo:
            with ray_stdio(self.settings.verbose):
                started = connect(self.settings.address, self.settings.verbose)
                try:
                    self.plan = cluster_plan(self.device, self.settings.actors, self.settings.threads,
                                             self.batch_size)
                    self.summary["batch_size"] = self.plan.batch_size
                    self._stream(todo, sink, stats, already_done)
                finally:
                    if started:
                        require_ray().shutdown()
        stats.streams = self.plan.describe()["actors"] if self.plan else 0
        stats.details = {"threads": self.plan.threads if self.plan else 0,
                         "address": self.settings.address or os.environ.get("RAY_ADDRESS") or "local",
                         "nodes": dict(sorted(self.nodes.items()))}
        return stats

    def _stream(self, todo: Sequence[InputItem], sink: Any, stats: RunStats, already: int) -> None:
        """Run the actors and hand their rows to the sink as they arrive."""
        ray = require_ray()
        total = already + stats.failed + len(todo)
        self.progress(TASK, already + stats.failed, total)
        ds = ray.data.from_items(input_rows(todo))
        t0 = time.perf_counter()
        rows = map_embedder(ds, ray.put(self.package), self.plan, self.fp16, self.limits, tag_node=True)
        try:
            for table in rows.iter_batches(batch_format="pyarrow", batch_size=None):
                self.nodes.update(table.column(NODE_COLUMN).to_pylist())
                _to_sink(table, sink, stats)
                self.progress(TASK, already + stats.embedded + stats.failed, total)
        except Exception as exc:  # an actor that cannot start, a node lost for good: Ray's own errors
            if not type(exc).__module__.startswith("ray."):
                raise
            raise DriverFailed(f"the Ray job failed ({ray_reason(exc)})",
                               hint="rerun the same command with --resume to continue; every node needs the same "
                                    "imgfeat installed") from None
        stats.seconds = time.perf_counter() - t0


def _to_sink(table: Any, sink: Any, stats: RunStats) -> None:
    """One batch of actor rows (``input_path``, ``feature``, ``error``) as the sink's verbs."""
    import pyarrow.compute as pc

    paths = table.column("input_path").to_pylist()
    errors = table.column("error").to_pylist()
    ok = [i for i, e in enumerate(errors) if e is None]
    if ok:
        feature = table.column("feature").combine_chunks().take(ok)
        dim = feature.type.list_size
        feats = np.asarray(pc.list_flatten(feature).to_numpy(zero_copy_only=False)).reshape(len(ok), dim)
        sink.write([paths[i] for i in ok], feats)
    for path, reason in zip(paths, errors):
        if reason is not None:
            sink.error(path or "", reason)
    stats.embedded += len(ok)
    stats.failed += len(paths) - len(ok)


def ray_reason(exc: BaseException) -> str:
    """The root cause in a Ray exception's (long, coloured) text: its last ``SomeError: ...`` line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    causes = re.findall(r"^\s*((?:\w+\.)*\w+(?:Error|Exception): .+)$", text, re.MULTILINE)
    line = causes[-1].strip() if causes else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= 200 else line[:200] + "..."
