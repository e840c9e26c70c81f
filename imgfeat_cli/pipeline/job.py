"""The embedding job's lifecycle, the same for every driver and every output.

A job is: open the output (lock it, check a resume against the model, read back what is done),
hand the rest to a driver (:class:`~imgfeat_cli.pipeline.embedder.Embedder` on this machine, or
the Ray driver of :mod:`imgfeat_cli.distributed`), then publish, or keep what is complete on
Ctrl-C, or drop this run's part when nothing at all could be embedded. The output is a
:class:`Sink` (a feature file, :class:`~imgfeat_cli.pipeline.sinks.FileSink`, or a folder of
Parquet files, :class:`~imgfeat_cli.distributed.folder.ParquetFolder`); the driver is anything
with :class:`Driver`'s verbs. Which ones a command uses is decided by
:func:`imgfeat_cli.api.embed`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError, Interrupted
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.inputs import InputItem

class Sink(Protocol):
    """Where a job's rows go. Implementations: ``FileSink`` (one ``.jsonl``/``.npy``/``.parquet``
    file set), ``ParquetFolder`` (a folder of Parquet files, local or an object store) and
    ``MemorySink`` (write/error only: no lifecycle)."""

    location: str  # how messages name the output
    layout: str  # "file" (one feature file and its sidecars) or "folder" (Parquet files)

    def check(self) -> None:
        """Refuse what can be refused before any work, changing nothing."""

    def open(self, identity: Dict[str, Any], model_source: Optional[Dict[str, Any]] = None) -> Set[str]:
        """Lock the output, refuse a resume made by another model (``identity``), record where
        the model came from (``model_source``), return the inputs done."""

    def cannot_store(self, path: str) -> Optional[str]:
        """Why this output cannot hold ``path`` as an input name (``None``: it can)."""

    def write(self, paths: Sequence[str], feats: np.ndarray) -> None:
        """Rows that worked, in input order."""

    def error(self, path: str, reason: str) -> None:
        """An input that failed, with its reason."""

    def suspend(self) -> str:
        """Keep what is complete for ``--resume``, release the lock; say what was kept."""

    def abandon(self) -> None:
        """Drop this run's rows (nothing worth keeping); an older output stays as it was."""

    def finish(self, config: Dict[str, Any]) -> Tuple[List[str], Optional[str]]:
        """Publish the complete output with ``config`` recorded beside it; return its files and
        the errors file (``None`` when nothing failed)."""


class Driver(Protocol):
    """Runs a model over inputs into a sink: :class:`~imgfeat_cli.pipeline.embedder.Embedder`
    (threads or inference streams here) or the Ray driver (actors on a cluster)."""

    identity: Dict[str, Any]  # the model's, as outputs record it
    model_source: Dict[str, Any]  # where the model came from (EmbeddingModel.source_record)
    summary: Dict[str, Any]  # model, backend, precision, device, batch_size (for the result)

    def run(self, items: Sequence[InputItem], sink: Any, already_done: int = 0) -> Any:
        """Embed ``items`` into ``sink``; return counts (``embedded``, ``failed``, ``streams``,
        ``details``)."""


class DriverFailed(ImgfeatError):
    """A driver's failure after which the output keeps what is complete (a Ray job whose actors
    died): :func:`run_job` says what was kept, and a ``--resume`` continues."""


@dataclass
class EmbedResult:
    """What an embedding job did (``embed --json`` prints this document)."""

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
    errors: List[Tuple[str, str]] = field(default_factory=list)  # the first few (input path, reason)
    layout: str = "file"  # or "folder": a folder of Parquet files
    details: Dict[str, Any] = field(default_factory=dict)  # the driver's own (Ray: actors, nodes...)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("details")
        d.update(self.details)
        d["errors"] = [{"input_path": p, "error": r} for p, r in self.errors]
        d["images_per_s"] = round(self.images_per_s, 3)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass(frozen=True)
class EmbedOptions:
    """How an embedding job runs and what it writes, beside the model (a
    :class:`~imgfeat_cli.models.source.ModelSource`). The defaults are the CLI's."""

    fmt: Optional[str] = None  # jsonl, npy, parquet; None: from the output's name (a folder: parquet)
    fp16: bool = False  # store float16
    resume: bool = False  # continue an output, skipping inputs it holds
    overwrite: bool = False  # replace an output once the new one is complete
    shard: Optional[str] = None  # "I/N": only shard I (0-based) of N
    labels: Optional[Mapping[str, str]] = None  # input path -> label: a "label" column
    labels_from: Optional[str] = None  # where the labels came from (recorded; a resume compares)
    streams: Optional[int] = None  # model replicas in worker processes (local engine)
    workers: Optional[int] = None  # decoding threads (local engine)
    limits: Limits = DEFAULT_LIMITS  # per-image pixel and byte limits
    engine: str = "local"  # local or ray
    ray_address: Optional[str] = None
    actors: Optional[int] = None
    verbose: bool = False  # Ray's own logs on stderr
    rows_per_file: int = 2048  # Parquet folders: rows per file
    config: Optional[Dict[str, Any]] = None  # the settings recorded beside the output

    @property
    def shard_text(self) -> Optional[str]:
        return self.shard or None


#: Reasons a job result lists (all of them are in the errors file).
ERRORS_SHOWN = 5


class _Counting:
    """The sink as the driver sees it: every failure is also kept (the first few, and how many)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.first_errors: List[Tuple[str, str]] = []
        self.cannot_store = sink.cannot_store
        self.write = sink.write

    def error(self, path: str, reason: str) -> None:
        if len(self.first_errors) < ERRORS_SHOWN:
            self.first_errors.append((path, reason))
        self.sink.error(path, reason)


def run_job(items: Sequence[InputItem], sink: Any, driver: Any, engine: str = "local",
            config: Optional[Dict[str, Any]] = None, shard: Optional[str] = None) -> EmbedResult:
    """Embed ``items`` through ``driver`` into ``sink`` (see the module docstring). Nothing is
    published when there is nothing to embed, and an existing output is replaced only by a
    complete successor holding at least one vector."""
    done = sink.open(driver.identity, driver.model_source)
    todo = [it for it in items if it.input_path not in done]
    already = len(items) - len(todo)
    counting = _Counting(sink)
    t0 = time.perf_counter()
    try:
        stats = driver.run(todo, counting, already)
    except KeyboardInterrupt:
        kept = sink.suspend()
        raise Interrupted(f"interrupted; {kept}", hint="rerun the same command with --resume to continue") from None
    except DriverFailed as exc:
        kept = sink.suspend()
        raise ImgfeatError(f"{exc.message}; {kept}", hint=exc.hint) from None
    except BaseException:
        sink.suspend()
        raise
    if stats.embedded + already == 0:
        sink.abandon()
        first = counting.first_errors[0][1] if counting.first_errors else "no input reached the model"
        raise ImgfeatError(f"no image could be embedded ({stats.failed} failed; first: {first})",
                           hint="nothing was written; check the inputs")
    try:
        files, errors_file = sink.finish(config or {})
    except BaseException:  # a full disk while publishing: the part files stay for --resume
        sink.suspend()
        raise
    s = driver.summary
    return EmbedResult(sink.location, getattr(sink, "fmt", "parquet"), s["model"], s["backend"], s["precision"],
                       s["device"], s["batch_size"], len(items), stats.embedded, already, stats.failed,
                       time.perf_counter() - t0, errors_file, shard, stats.streams, files, engine,
                       counting.first_errors, sink.layout, dict(getattr(stats, "details", {}) or {}))
