"""Embedding on Ray Data: :class:`ImageEmbedder` (a ``map_batches`` callable class, one model per
actor) and :func:`embed_dataset` (a Dataset or paths/URIs in, the embedded Dataset out).

Rows carry their own outcome: ``input_path``, ``feature`` (fixed-size list, null when the input
failed) and ``error`` (null when fine), so one truncated JPEG costs its row, never the job. Images
are decoded by imgfeat (:func:`~imgfeat_cli.pipeline.inputs.load_rgb`, EXIF orientation applied),
not by Ray's ``read_images``, so the vectors equal ``imgfeat embed``'s.

What the defaults get right (each met while prototyping on Ray 2.60):

* a model cannot be pickled: each actor builds its own from a :class:`ModelPackage` (the
  inference folder's files travel through the object store, so nodes need no shared disk);
* actors reserve only part of the CPUs their threads use (:mod:`.ray_plan`): with whole
  CPUs the actors took every slot and Ray's read or write tasks starved, a silent hang
  (ray-project/ray#44687);
* each actor runs as many inference threads as it was given, not the node's core count (4 threads
  in each of two actors on 2 cores ran 1.45x slower);
* ``compute=ActorPoolStrategy(...)``, not the deprecated ``concurrency=``;
* an actor's stdout goes to its stderr, so ``print`` s in actors never reach the driver's stdout.

Ray is imported lazily: this module loads without the ``imgfeat[ray]`` extra.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from imgfeat_cli.common.errors import ImageDecodeError, UsageError
from imgfeat_cli.common.system import cpu_count, default_batch_size, parse_device
from imgfeat_cli.distributed.ray_plan import ActorPlan, cluster_plan
from imgfeat_cli.distributed.storage import Reader, is_uri, list_images
from imgfeat_cli.pipeline.batch import embed_rows
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.embedder import collect_inputs
from imgfeat_cli.pipeline.formats import parquet_schema
from imgfeat_cli.pipeline.inputs import InputItem, no_images

#: Columns an input batch may hold: the encoded image, then where it came from.
BYTES_COLUMN, PATH_COLUMNS = "bytes", ("input_path", "path")
OUTPUT_COLUMNS = ("input_path", "feature", "error")
#: With ``tag_node``: the id of the Ray node that embedded the row.
NODE_COLUMN = "_node"


def require_ray() -> Any:
    """The ``ray`` module, or a usage error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library comes with the [data] extra)
    except ImportError:
        raise UsageError("the Ray engine needs Ray Data, which is not installed",
                         hint='pip install "ray[data]>=2.51" (the ray extra)') from None
    return ray


@dataclass(frozen=True)
class ModelPackage:
    """Everything an actor needs to build the model: the recipe of
    :meth:`~imgfeat_cli.models.model.EmbeddingModel.from_recipe`, the folder's files (name ->
    bytes) and the model's identity (what outputs record)."""

    recipe: Dict[str, Any]
    files: Dict[str, bytes]
    identity: Dict[str, Any]

    def materialize(self) -> str:
        """The files as a folder on this node (once per node and model: a shared temp folder,
        published by an atomic rename so concurrent actors never see half a model)."""
        root = Path(tempfile.gettempdir()) / "imgfeat-ray-models"
        final = root / self.identity["sha256"]
        if final.is_dir():
            return str(final)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        for name, data in self.files.items():
            (staging / name).write_bytes(data)
        try:
            os.rename(staging, final)
        except OSError:  # another actor on this node published it first
            shutil.rmtree(staging, ignore_errors=True)
        return str(final)


def package_model(model: Any, device: Optional[str] = None, precision: Optional[str] = None) -> ModelPackage:
    """Pack a loaded inference-folder model for actors, to run on ``device`` at ``precision``
    (default: as loaded; the driver may load on CPU what the actors run on GPUs)."""
    from imgfeat_cli.models.files import find_inference_files

    if getattr(model, "recipe", None) is None:
        raise UsageError("the Ray engine runs inference folders, not .pdparams checkpoints",
                         hint="export the checkpoint first (imgfeat export) and pass --model-dir")
    folder = Path(model.recipe["model_dir"])
    files = {p.name: p.read_bytes() for p in (*find_inference_files(folder).files, folder / "inference.yml")}
    recipe = {**model.recipe, "name": model.name, "device": device or model.recipe["device"],
              "precision": precision or model.recipe["precision"]}
    return ModelPackage(recipe, files, {**model.identity, "precision": recipe["precision"]})


def driver_copy(source: Any) -> Any:
    """The request the driver loads to check, identify and ship a cluster's model: on CPU, one
    thread (actors run it with their own), fp32 when the actors run a GPU precision."""
    gpu = parse_device(source.device).is_gpu
    return source.replace(device="cpu", threads=1, precision="fp32" if gpu else source.precision)


def _node_id() -> Optional[str]:
    """The Ray node this process runs on (``None`` outside Ray)."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    except Exception:  # an old or partial Ray
        return None


def _is_actor() -> bool:
    ray = sys.modules.get("ray")
    try:
        return bool(ray and ray.is_initialized() and ray.get_runtime_context().get_actor_id())
    except Exception:  # an old or partial Ray: behave as outside an actor
        return False


class ImageEmbedder:
    """A ``map_batches`` callable class: one model per actor, batches of paths, URIs or bytes in,
    a :mod:`pyarrow` table of ``input_path``, ``feature``, ``error`` (then any other input column)
    out, one row per input row, in order.

    Input columns: ``bytes`` (encoded images, as ``ray.data.read_binary_files`` gives them) and/or
    ``path`` or ``input_path`` (a local path, a ``s3://`` or ``file://`` URI read with
    pyarrow, or an http(s) URL), read in the actor when there are no bytes; ``error`` (optional):
    a reason known beforehand, that row fails with it. Batches may be Arrow tables, pandas frames
    or dicts of arrays. The model comes from ``package`` (see :func:`package_model`; an
    ``ObjectRef`` is fine), else from ``model_dir`` or a registry name ``model`` on each node.
    ``cpu_threads``: default, the CPUs Ray gave this actor (``OMP_NUM_THREADS``).

    Example::

        ds.map_batches(ImageEmbedder, fn_constructor_kwargs={"model_dir": "/models/shitu"},
                       compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1, batch_size=8,
                       batch_format="pyarrow")
    """

    def __init__(self, model_dir: Optional[str] = None, *, model: Optional[str] = None,
                 package: Any = None, device: Optional[str] = None, backend: Optional[str] = None,
                 precision: Optional[str] = None, cpu_threads: Optional[int] = None, batch_size: Optional[int] = None,
                 fp16: bool = False, limits: Limits = DEFAULT_LIMITS, tag_node: bool = False) -> None:
        self.node = _node_id() if tag_node else None
        if _is_actor():  # actor prints would reach the driver's stdout (with ANSI colours)
            os.dup2(2, 1)
            sys.stdout = sys.stderr
        threads = cpu_threads or cpu_count()
        if package is not None and not isinstance(package, ModelPackage):
            package = require_ray().get(package)
        if package is not None:
            from imgfeat_cli.models.model import EmbeddingModel

            recipe = {**package.recipe, "model_dir": package.materialize(), "device": device or package.recipe["device"]}
            self.model = EmbeddingModel.from_recipe(recipe, cpu_threads=threads)
            identity = package.identity
        else:
            from imgfeat_cli.models.source import ModelSource

            self.model = ModelSource(model, model_dir, device=device, threads=threads, backend=backend,
                                     precision=precision, batch_size=batch_size).load()
            identity = self.model.identity
        self.batch_size = batch_size or default_batch_size(self.model.device)
        self.dtype = np.dtype(np.float16 if fp16 else np.float32)
        self.limits = limits
        probe = self.model.preprocessor(np.zeros((32, 32, 3), np.uint8))[None]
        self.dim = int(self.model.embed_batch(probe).shape[1])  # the output width, even for an all-failed batch
        self.schema = parquet_schema(self.dim, self.dtype, {"model": identity}, with_error=True)
        self.reader = Reader()
        self._io: Optional[ThreadPoolExecutor] = None

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        table = _as_table(batch)
        items = self._items(table)
        n = len(items)
        feats = np.zeros((n, self.dim), self.dtype)
        valid = np.zeros(n, bool)
        errors: List[Optional[str]] = [None] * n
        for start in range(0, n, self.batch_size):
            res = embed_rows(self.model, items[start:start + self.batch_size], self.limits)
            if res.rows:
                rows = [start + r for r in res.rows]
                feats[rows] = res.feats
                valid[rows] = True
            for row, reason in res.errors:
                errors[start + row] = reason
        values = pa.array(feats.reshape(-1))
        feature = pa.Array.from_buffers(self.schema.field("feature").type, n,
                                        [pa.py_buffer(np.packbits(valid, bitorder="little"))], null_count=int(n - valid.sum()),
                                        children=[values])
        extras = [c for c in table.column_names if c not in (BYTES_COLUMN, *PATH_COLUMNS, *OUTPUT_COLUMNS)]
        paths = pa.array([it.input_path for it in items], pa.string())
        schema = self.schema
        for name in extras:
            schema = schema.append(table.schema.field(name))
        arrays = [paths, feature, pa.array(errors, pa.string())] + [table.column(c) for c in extras]
        if self.node is not None:  # which node embedded each row (the driver counts, then drops it)
            schema = schema.append(pa.field(NODE_COLUMN, pa.string()))
            arrays.append(pa.array([self.node] * n, pa.string()))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _items(self, table: Any) -> List[InputItem]:
        names = table.column_names
        path_col = next((c for c in PATH_COLUMNS if c in names), None)
        if path_col is None and BYTES_COLUMN not in names:
            raise UsageError(f"a batch needs a 'path' (or 'input_path') or a 'bytes' column; it has {', '.join(names)}")
        n = table.num_rows
        paths = table.column(path_col).to_pylist() if path_col else [None] * n
        blobs = table.column(BYTES_COLUMN).to_pylist() if BYTES_COLUMN in names else [None] * n
        known = table.column("error").to_pylist() if "error" in names else [None] * n
        fetch = [i for i in range(n) if blobs[i] is None and known[i] is None and paths[i] and is_uri(paths[i])]
        if fetch:  # object stores answer slowly but in parallel
            self._io = self._io or ThreadPoolExecutor(8)
            for i, got in zip(fetch, self._io.map(self._fetch, [paths[i] for i in fetch])):
                blobs[i], known[i] = got
        items = []
        for path, blob, reason in zip(paths, blobs, known):
            if reason is not None:
                items.append(InputItem(None, path, reason))
            elif blob is not None:
                items.append(InputItem(bytes(blob), path))
            elif path is None:
                items.append(InputItem(None, None, "the row has neither bytes nor a path"))
            else:
                items.append(InputItem(path, path))
        return items

    def _fetch(self, uri: str) -> tuple:
        try:
            return self.reader.read(uri, self.limits.max_bytes), None
        except ImageDecodeError as exc:
            return None, exc.message


def _as_table(batch: Any) -> Any:
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):
        return pa.table({k: list(v) if isinstance(v, np.ndarray) and v.dtype == object else v for k, v in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)  # a pandas DataFrame


def input_rows(items: Sequence[InputItem]) -> List[Dict[str, Optional[str]]]:
    """``from_items`` rows for expanded inputs: the path, and the reason when it already failed."""
    return [{"path": it.input_path, "error": it.error} for it in items]


def expand_locations(sources: Sequence[str], shard: Optional[tuple] = None) -> List[InputItem]:
    """Local paths and folders (walked here) and URIs (listed through pyarrow) as items: sorted
    within each folder, repeats dropped, one ``shard`` kept; a location that cannot be listed is
    one failed item."""
    expanded: List[Any] = []
    for src in sources:
        if is_uri(src):
            found, failed = list_images(src)
            expanded += found + [InputItem(None, loc, reason) for loc, reason in failed]
        else:
            expanded.append(src)
    return collect_inputs(expanded, shard)


def map_embedder(ds: Any, package: Any, plan: ActorPlan, fp16: bool = False,
                 limits: Limits = DEFAULT_LIMITS, tag_node: bool = False) -> Any:
    """``ds.map_batches`` with :class:`ImageEmbedder` actors as ``plan`` says (``tag_node``: rows
    carry the id of the node that embedded them, in :data:`NODE_COLUMN`)."""
    ray = require_ray()
    ref = ray.put(package) if isinstance(package, ModelPackage) else package
    return ds.map_batches(ImageEmbedder, batch_size=plan.batch_size, batch_format="pyarrow", compute=plan.compute(),
                          num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None,
                          fn_constructor_kwargs={"package": ref, "cpu_threads": plan.threads,
                                                 "batch_size": plan.batch_size, "fp16": fp16, "limits": limits,
                                                 "tag_node": tag_node})


def embed_dataset(data: Any, model_dir: Optional[str] = None, *, model: Optional[str] = None,
                  device: Optional[str] = None, backend: Optional[str] = None, precision: Optional[str] = None,
                  actors: Optional[int] = None, threads: Optional[int] = None, batch_size: Optional[int] = None,
                  fp16: bool = False, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Embed a Ray Dataset (columns as :class:`ImageEmbedder` takes them), or paths, folders and
    URIs (listed here), into a Dataset of ``input_path``, ``feature``, ``error``. Lazy, as Ray
    Datasets are: ``write_parquet``, ``iter_batches`` or ``materialize`` run it.

    The model (``model_dir``, or a registry ``model`` name) is loaded once here on CPU to check it,
    then shipped to the actors. Actor pool: see :func:`~imgfeat_cli.distributed.ray_plan.plan_actors`. Connects with
    ``ray.init()`` (a local instance, or ``RAY_ADDRESS``) unless Ray is already initialised.
    """
    ray = require_ray()
    from imgfeat_cli.models.source import ModelSource

    source = ModelSource(model, model_dir, device=device, backend=backend, precision=precision,
                         batch_size=batch_size).for_cluster()
    package = package_model(driver_copy(source).load(), device or "cpu", source.precision)
    if not ray.is_initialized():
        ray.init()
    if not isinstance(data, ray.data.Dataset):
        sources = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(s) for s in data]
        items = expand_locations(sources)
        if not items:
            raise no_images()
        data = ray.data.from_items(input_rows(items))
    return map_embedder(data, package, cluster_plan(device, actors, threads, source.batch), fp16, limits)


__all__ = ["ImageEmbedder", "ModelPackage", "driver_copy", "embed_dataset", "package_model", "expand_locations", "map_embedder",
           "require_ray"]
