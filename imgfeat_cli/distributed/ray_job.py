"""``imgfeat embed --engine ray``: inputs -> a resumable folder of Parquet files, embedded by a pool
of Ray actors (:mod:`.ray_embed`), written by this process (:mod:`.folder`).

The driver lists the inputs, skips those already in the folder, and streams the actors' rows into
files as they come (so it alone needs to reach the output, and progress is exact). Ray itself stays
out of sight: its logs and progress bars only with ``verbose``, never on stdout.
"""
from __future__ import annotations

import logging
from collections import Counter
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from imgfeat_cli.common.errors import ImgfeatError, Interrupted
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.distributed.folder import CONFIG_FILE, ParquetFolder
from imgfeat_cli.distributed.stdio import ray_stdio
from imgfeat_cli.distributed.ray_embed import NODE_COLUMN, input_rows, map_embedder, package_model, require_ray
from imgfeat_cli.distributed.ray_plan import ActorPlan, cluster_plan
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.embedder import TASK
from imgfeat_cli.pipeline.formats import parquet_cannot_store
from imgfeat_cli.pipeline.inputs import InputItem
from imgfeat_cli.pipeline.job import EmbedResult


@dataclass
class RayEmbedResult(EmbedResult):
    """The ``embed`` summary, plus where and how Ray ran (``streams`` holds the actor count)."""

    threads: int = 0
    address: str = ""
    nodes: Dict[str, int] = field(default_factory=dict)  # Ray node id -> rows its actors embedded in this run


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


def embed_folder(items: Sequence[InputItem], folder: ParquetFolder, model: Any, settings: RaySettings,
                 device: Optional[str], precision: Optional[str], batch_size: Optional[int] = None, fp16: bool = False,
                 limits: Limits = DEFAULT_LIMITS, progress: ProgressFn = null_progress,
                 config: Optional[Dict[str, Any]] = None, shard: Optional[str] = None) -> RayEmbedResult:
    """Embed ``items`` into ``folder`` on the cluster. ``model``: the driver's copy (loaded on
    CPU) that is checked, identified and shipped to the actors, which run it on ``device``."""
    package = package_model(model, device or "cpu", precision)
    done = folder.open(package.identity)
    todo = [it for it in items if it.input_path not in done]
    already = len(items) - len(todo)
    unstorable = [(it.input_path, why) for it in todo if it.input_path and (why := parquet_cannot_store(it.input_path))]
    if unstorable:  # no Arrow string can carry such a name, not even into the actors: it fails here
        todo = [it for it in todo if not (it.input_path and parquet_cannot_store(it.input_path))]
    counts: Dict[str, Any] = {"embedded": 0, "failed": len(unstorable), "nodes": {}}
    first_error = [unstorable[0][1] if unstorable else ""]
    plan: Optional[ActorPlan] = None
    started = False
    t0 = time.perf_counter()
    try:
        if todo:
            with ray_stdio(settings.verbose):
                try:
                    started = connect(settings.address, settings.verbose)
                    plan = cluster_plan(device, settings.actors, settings.threads, batch_size)
                    _stream(todo, folder, package, plan, fp16, limits, progress, counts, first_error,
                            already + len(unstorable))
                finally:
                    if started:
                        require_ray().shutdown()
    except KeyboardInterrupt:
        folder.flush()  # the rows already here are complete: keep them
        folder.release()
        raise Interrupted(f"interrupted; this run's complete files ({len(folder.written)}) are kept in {folder.location}",
                          hint="rerun the same command with --resume to continue") from None
    except Exception as exc:
        if not type(exc).__module__.startswith("ray."):
            folder.release()
            raise
        folder.flush()  # what the actors returned before the failure is complete: keep it
        folder.release()
        raise ImgfeatError(f"the Ray job failed ({ray_reason(exc)}); this run's complete files "
                           f"({len(folder.written)}) are kept in {folder.location}",
                           hint="rerun the same command with --resume to continue; every node needs the same "
                                "imgfeat installed") from None
    except BaseException:
        folder.release()
        raise
    if counts["embedded"] == 0 and not done:
        folder.abandon()
        raise ImgfeatError(f"no image could be embedded ({counts['failed']} failed; first: {first_error[0]})",
                           hint="nothing was kept; check the inputs")
    files, _, errors_file = folder.finish(config or {}, unstorable)
    return RayEmbedResult(folder.location, "parquet", model.name, package.recipe["backend"], package.recipe["precision"],
                          device or "cpu",
                          plan.batch_size if plan else batch_size or 0, len(items), counts["embedded"],
                          already, counts["failed"], time.perf_counter() - t0, errors_file, shard,
                          plan.describe()["actors"] if plan else 0, files + [folder.name(CONFIG_FILE)],
                          engine="ray", threads=plan.threads if plan else 0,
                          address=settings.address or os.environ.get("RAY_ADDRESS") or "local",
                          nodes=dict(sorted(counts["nodes"].items())))


def ray_reason(exc: BaseException) -> str:
    """The root cause in a Ray exception's (long, coloured) text: its last ``SomeError: ...`` line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    causes = re.findall(r"^\s*((?:\w+\.)*\w+(?:Error|Exception): .+)$", text, re.MULTILINE)
    line = causes[-1].strip() if causes else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= 200 else line[:200] + "..."


def _stream(todo: Sequence[InputItem], folder: ParquetFolder, package: Any, plan: ActorPlan, fp16: bool,
            limits: Limits, progress: ProgressFn, counts: Dict[str, Any], first_error: List[str], already: int) -> None:
    """Run the pipeline and write its rows as they arrive, counting them (and keeping the first
    failure's reason)."""
    ray = require_ray()
    total = already + len(todo)
    progress(TASK, already, total)
    ds = ray.data.from_items(input_rows(todo))
    for table in map_embedder(ds, ray.put(package), plan, fp16, limits, tag_node=True).iter_batches(
            batch_format="pyarrow", batch_size=None):
        for node, rows in Counter(table.column(NODE_COLUMN).to_pylist()).items():
            counts["nodes"][node] = counts["nodes"].get(node, 0) + rows
        folder.add(table)
        errors = table.column("error").drop_null()
        failed = len(errors)
        if failed and not first_error[0]:
            first_error[0] = errors[0].as_py()
        counts["failed"] += failed
        counts["embedded"] += table.num_rows - failed
        progress(TASK, already + counts["embedded"] + counts["failed"], total)
