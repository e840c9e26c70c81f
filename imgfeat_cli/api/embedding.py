"""``embed``: images -> L2-normalised features, in memory, into a resumable file or into a folder of
Parquet files, on this machine or on a Ray cluster: one entry point, one lifecycle
(:func:`imgfeat_cli.pipeline.job.run_job`), the driver and the sink chosen by the options.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.models.source import ModelSource
from imgfeat_cli.pipeline.embedder import Embedder, StreamPlan, collect_inputs, parse_shard, plan_streams
from imgfeat_cli.pipeline.inputs import InputItem, expand, no_images
from imgfeat_cli.pipeline.job import EmbedOptions, run_job
from imgfeat_cli.pipeline.predictor import FeatureModel
from imgfeat_cli.pipeline.memory import MemorySink
from imgfeat_cli.pipeline.sinks import FileSink

ModelLike = Union[ModelSource, FeatureModel, str, os.PathLike, None]

#: Output locations that are folders of Parquet files rather than one file.
URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "file://")


def embed(inputs: Any, out: Optional[str] = None, model: ModelLike = None, *, batch_size: Optional[int] = None,
          options: Optional[EmbedOptions] = None, progress: ProgressFn = null_progress,
          stop: Optional[Callable[[], bool]] = None, log: Optional[Callable[[str], None]] = None,
          **option_fields: Any) -> Any:
    """Embed ``inputs`` (paths, folders, URLs, arrays; ``s3://``/``gs://`` locations with
    ``engine="ray"``) with ``model`` (a :class:`ModelSource`, a model from ``create_model``, an
    inference folder, or ``None``: the default official model).

    * ``out=None``: in memory; returns a :class:`~imgfeat_cli.pipeline.memory.MemorySink`
      (``.paths``, ``.features`` (N, D), ``.errors``).
    * ``out="feats.jsonl"`` (or ``.npy``, ``.parquet``): a resumable file; ``out="feats/"``, an
      existing folder or an object-store prefix: a folder of Parquet files. Returns an
      :class:`~imgfeat_cli.pipeline.job.EmbedResult`.

    Options are :class:`~imgfeat_cli.pipeline.job.EmbedOptions` fields, given as ``options=`` or as
    keywords (``resume=True``, ``shard="0/4"``, ``engine="ray"``...). ``batch_size`` overrides the
    model's (default by device). Example::

        from imgfeat_cli import ModelSource, embed
        res = embed(["photos/"], "feats.parquet", ModelSource(model_dir="output/inference"), resume=True)
        print(res.embedded, res.errors_file)
    """
    opts = dataclasses.replace(options or EmbedOptions(), **option_fields)
    if opts.engine not in ("local", "ray"):
        raise UsageError(f"unknown engine {opts.engine!r}", hint="use local or ray")
    if out is None:
        return _in_memory(inputs, model, batch_size, opts, progress, stop, log)
    if opts.labels_from and opts.labels is None:
        opts = dataclasses.replace(opts, labels=read_labels(opts.labels_from))
    sink = open_sink(str(out), opts)
    sink.check()  # a wrong name or an existing output fails before anything is loaded
    if opts.labels is not None and not inputs:  # the list itself names the images
        inputs = list(opts.labels)
    items = _collect(inputs, opts)
    if opts.labels is not None:  # only the listed images, keyed by the paths as this run names them
        items, left_out = _listed(items, opts.labels)
        sink.labels = _labels_by_input(items, opts.labels)
        if left_out and log:
            log(f"{left_out} images the labels list does not name were left out")
        if not items:
            raise no_images(opts.shard)
    if opts.engine == "ray":
        driver = _ray_driver(model, batch_size, opts, progress, log)
    else:
        driver = _local_driver(model, batch_size, opts, len(items), progress, stop, log)
    return run_job(items, sink, driver, opts.engine, opts.config, opts.shard)


def open_sink(out: str, opts: EmbedOptions) -> Any:
    """The output ``out`` names: a folder of Parquet files (a trailing ``/``, an object-store URI,
    an existing folder, or a name without an extension and no other ``fmt``) or one feature file
    (``.jsonl``, ``.npy``, ``.parquet``)."""
    bare = not os.path.splitext(out.rstrip("/" + os.sep))[1] and opts.fmt in (None, "parquet")
    folder = out.endswith(("/", os.sep)) or out.startswith(URI_SCHEMES) or os.path.isdir(out) or bare
    if folder:
        if opts.fmt not in (None, "parquet"):
            raise UsageError(f"{out} is a folder of Parquet files, not {opts.fmt}",
                             hint="drop --format, or name a file (e.g. feats.jsonl)")
        from imgfeat_cli.distributed.folder import ParquetFolder

        return ParquetFolder(out, np.float16 if opts.fp16 else np.float32, opts.resume, opts.overwrite,
                             opts.rows_per_file, labels=opts.labels)
    return FileSink(out, opts.fmt, opts.fp16, opts.resume, opts.overwrite, labels=opts.labels)


def read_labels(path: str) -> Dict[str, str]:
    """``path label`` lines (a gallery list, a dataset's ``gallery.txt``/``query.txt``, a
    ``drink_label.txt``; space or tab separated, labels may hold spaces; paths relative to the
    list's folder) as {absolute path: label}."""
    from imgfeat_cli.retrieval.gallery import read_label_list

    listed = read_label_list(path)
    return {os.path.abspath(p): lab for p, lab in listed}


def _listed(items: List[InputItem], labels: Dict[str, str]) -> Tuple[List[InputItem], int]:
    """The items the labels name (all of them when a listed path is missing: that one fails with
    its reason), and how many others were left out."""
    keys = labels if all(os.path.isabs(k) for k in labels) else {os.path.abspath(k) for k in labels}
    kept = [it for it in items if it.input_path is None or os.path.abspath(it.input_path) in keys]
    return kept, len(items) - len(kept)


def _labels_by_input(items: Sequence[InputItem], labels: Dict[str, str]) -> Dict[str, str]:
    by_abs = labels if all(os.path.isabs(k) for k in labels) else {os.path.abspath(k): v for k, v in labels.items()}
    return {it.input_path: by_abs[os.path.abspath(it.input_path)] for it in items
            if it.input_path is not None and os.path.abspath(it.input_path) in by_abs}


def _collect(inputs: Any, opts: EmbedOptions) -> List[InputItem]:
    """The inputs as items (folders walked, repeats dropped, one shard kept); object-store
    locations are listed by the Ray engine only."""
    shard = parse_shard(opts.shard)
    sources = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    uris = [s for s in sources if isinstance(s, str) and s.startswith(URI_SCHEMES) and not s.startswith("file://")]
    if opts.engine == "ray":
        from imgfeat_cli.distributed.ray_embed import expand_locations

        items = expand_locations([os.fspath(s) for s in sources], shard)
    elif uris:
        raise UsageError(f"{uris[0]} is an object-store location, which the Ray engine reads",
                         hint="add --engine ray (pip install \"ray[data]>=2.51\"), or copy the images here")
    else:
        items = collect_inputs(sources, shard)
    if not items:
        raise no_images(opts.shard)
    return items


def as_source(model: ModelLike, batch_size: Optional[int] = None) -> ModelSource:
    """A :class:`ModelSource` for what the caller passed (a folder path means ``model_dir``)."""
    if model is None:
        source = ModelSource()
    elif isinstance(model, ModelSource):
        source = model
    elif isinstance(model, (str, os.PathLike)):
        source = ModelSource(model_dir=os.fspath(model))
    else:
        raise UsageError(f"cannot use {type(model).__name__} as a model",
                         hint="pass a ModelSource, a model from create_model(), or an inference folder")
    if not source.given:
        from imgfeat_cli.common.schemas import defaults

        source = source.replace(name=defaults("embed")["Global"]["model"])  # the one default: the schema's
    return source.replace(batch_size=batch_size) if batch_size else source


def _local_driver(model: ModelLike, batch_size: Optional[int], opts: EmbedOptions, n_items: int,
                  progress: ProgressFn, stop: Optional[Callable[[], bool]], log: Optional[Callable[[str], None]]) -> Embedder:
    """Threads or inference streams on this machine, planned once for ``n_items`` inputs."""
    if isinstance(model, FeatureModel):  # loaded by the caller: its own thread count decides who joins
        plan = plan_streams(opts.streams, None, n_items, model.device, rebuildable=model.recipe is not None)
        plan = StreamPlan(plan.streams, plan.threads, plan.streams > 1 and model.cpu_threads == plan.threads)
        started = opts.streams is None and model.stream_pool is not None
        return Embedder(model, batch_size, None if started else plan, opts.workers, opts.limits, progress, stop)
    source = as_source(model, batch_size)
    plan = plan_streams(opts.streams, source.threads, n_items, source.device, rebuildable=source.rebuildable,
                        parent_joins=True)
    if log:
        log(f"loading {source.label} ...")
    loaded = source.load(FeatureModel, log=log, threads=plan.threads if plan.streams > 1 else None)
    if log:
        log(f"model {loaded.name}: {loaded.backend} {loaded.precision} on {loaded.device}")
    return Embedder(loaded, source.batch, plan, opts.workers, opts.limits, progress, stop)


def _ray_driver(model: ModelLike, batch_size: Optional[int], opts: EmbedOptions, progress: ProgressFn,
                log: Optional[Callable[[str], None]]) -> Any:
    """Actors on a Ray cluster; the model is loaded here once (on CPU) to check and ship it."""
    from imgfeat_cli.distributed.ray_embed import driver_copy, require_ray
    from imgfeat_cli.distributed.ray_job import RayDriver, RaySettings, check_reachable

    if opts.streams not in (None, 1) or opts.workers:
        raise UsageError("--streams and --workers are for the local engine", hint="use --actors (and --threads per actor)")
    require_ray()
    check_reachable(opts.ray_address)  # a wrong address fails before the model loads
    if isinstance(model, FeatureModel):
        loaded, device, precision, batch, threads = model, model.device, model.precision, batch_size, None
    else:
        source = as_source(model, batch_size).for_cluster()
        if log:
            log(f"loading {source.label} ...")
        loaded = driver_copy(source).load(FeatureModel, log=log)
        device, precision, batch, threads = source.device, source.precision, source.batch, source.threads
    settings = RaySettings(opts.ray_address, opts.actors, threads, opts.verbose)
    if log:
        log(f"embedding on Ray ({opts.ray_address or 'RAY_ADDRESS or a local instance'})")
    return RayDriver(loaded, settings, device, precision, batch, opts.fp16, opts.limits, progress)


def _in_memory(inputs: Any, model: ModelLike, batch_size: Optional[int], opts: EmbedOptions, progress: ProgressFn,
               stop: Optional[Callable[[], bool]], log: Optional[Callable[[str], None]]) -> MemorySink:
    """Rows in memory, in input order (inputs that fail are in ``.errors``)."""
    if opts.engine != "local":
        raise UsageError("the Ray engine writes an output", hint="pass out= (a folder or an s3:// prefix)")
    sink = MemorySink()
    items = inputs if _all_items(inputs) else list(expand(inputs, strict=False))
    driver = _local_driver(model, batch_size, opts, len(items), progress, stop, log)
    driver.run(items, sink)
    return sink


def _all_items(inputs: Any) -> bool:
    return isinstance(inputs, list) and all(isinstance(i, InputItem) for i in inputs)
