"""The ``embed`` job: inputs -> a resumable feature file, with a summary of what happened."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from imgfeat_cli.common.errors import ImgfeatError, Interrupted, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.embedder import Embedder, StreamPlan
from imgfeat_cli.pipeline.inputs import InputItem
from imgfeat_cli.pipeline.sinks import FileSink


@dataclass
class EmbedResult:
    """The summary ``embed`` prints (``--json``: this document)."""

    output: str
    format: str
    model: str
    backend: str
    precision: str
    device: str
    batch_size: int
    total: int
    embedded: int
    already_done: int
    failed: int
    seconds: float
    errors_file: Optional[str]
    shard: Optional[str]
    streams: int
    files: List[str] = field(default_factory=list)
    engine: str = "local"

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["images_per_s"] = round(self.images_per_s, 3)
        d["seconds"] = round(self.seconds, 3)
        return d


class _Recorder:
    """The sink as the Embedder sees it: rows go to the file, failures are kept for the set."""

    def __init__(self, sink: FileSink) -> None:
        self.sink = sink
        self.errors: List[Tuple[str, str]] = []
        self.cannot_store = sink.cannot_store
        self.write = sink.write

    def error(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))


def embed_to_file(items: Sequence[InputItem], sink: FileSink, model: Any, batch_size: Optional[int] = None,
                  plan: Optional[StreamPlan] = None, decode_threads: Optional[int] = None,
                  limits: Limits = DEFAULT_LIMITS, progress: ProgressFn = null_progress,
                  stop: Optional[Callable[[], bool]] = None, shard: Optional[str] = None,
                  config: Optional[Dict[str, Any]] = None) -> EmbedResult:
    """Embed ``items`` with ``model`` into ``sink`` (a :class:`~imgfeat_cli.pipeline.sinks.FileSink`).

    Nothing is written when there is nothing to embed, and an existing output is replaced only
    by a complete successor that holds at least one vector. ``config`` is saved beside the output
    (``FILE.config.yaml``) with the ``Output`` record a resume checks.
    """
    if not items:
        raise UsageError("no images found in the inputs", hint="check the paths; extensions: jpg jpeg png bmp webp tif tiff gif")
    embedder = Embedder(model, batch_size, plan, decode_threads, limits, progress, stop)
    done = sink.open(model.identity)
    todo = [it for it in items if it.input_path not in done]
    already = len(items) - len(todo)
    recorder = _Recorder(sink)
    t0 = time.perf_counter()
    try:
        stats = embedder.run(todo, recorder, already)
    except KeyboardInterrupt:
        sink.suspend()
        raise Interrupted(f"interrupted; partial output kept in {sink.part_path}",
                          hint="rerun the same command with --resume to continue") from None
    except BaseException:
        sink.suspend()
        raise
    if stats.embedded + already == 0:
        sink.abandon()
        path, reason = recorder.errors[0]
        raise ImgfeatError(f"no image could be embedded ({len(recorder.errors)} failed; first: {reason})",
                           hint="nothing was written; check the inputs")
    try:
        files = sink.finish(recorder.errors, config)
    except BaseException:  # a full disk while publishing: the part files stay for --resume
        sink.suspend()
        raise
    return EmbedResult(str(sink.out), sink.fmt, model.name, model.backend, model.precision, model.device,
                       embedder.batch_size, len(items), stats.embedded, already, stats.failed,
                       time.perf_counter() - t0, str(sink.errors_file) if recorder.errors else None, shard,
                       stats.streams, files)


def run_embed(inputs: Sequence[Any], out: str, model: Any, fmt: Optional[str] = None, batch_size: Optional[int] = None,
              fp16: bool = False, resume: bool = False, overwrite: bool = False, shard: Optional[str] = None,
              num_workers: Optional[int] = None, progress: ProgressFn = null_progress,
              stop: Optional[Callable[[], bool]] = None, streams: Optional[int] = None,
              threads: Optional[int] = None, limits: Limits = DEFAULT_LIMITS) -> EmbedResult:
    """The ``embed`` command as one call: expand ``inputs``, keep one ``shard`` ("I/N"), plan the
    streams (``None`` = auto, or the model's started streams; ``1`` = this process) and embed into the file ``out``. The model
    itself is one of the streams when it runs with the per-stream thread count."""
    from imgfeat_cli.pipeline.embedder import collect_inputs, parse_shard, plan_streams

    sink = FileSink(out, fmt, fp16, resume, overwrite)
    sink.check()
    shard_t = parse_shard(shard)
    items = collect_inputs(inputs, shard_t)
    plan = plan_streams(streams, threads, len(items), getattr(model, "device", "cpu"),
                        rebuildable=getattr(model, "recipe", None) is not None)
    plan = StreamPlan(plan.streams, plan.threads, plan.streams > 1 and model.cpu_threads == plan.threads)
    started = streams is None and getattr(model, "stream_pool", None) is not None
    return embed_to_file(items, sink, model, batch_size, None if started else plan, num_workers, limits, progress, stop,
                         f"{shard_t[0]}/{shard_t[1]}" if shard_t else None)
