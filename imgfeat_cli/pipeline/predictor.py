"""The PaddleX-style Python API: ``create_model(...)`` and ``FeatureModel.predict``.

``FeatureModel`` is the loaded model of :mod:`imgfeat_cli.models` plus the pipeline: ``predict``
yields PaddleX-shaped results, and ``start_streams``/``close`` keep worker processes for repeated
large jobs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import ImageDecodeError
from imgfeat_cli.common.progress import tqdm_progress
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.models.model import EmbeddingModel
from imgfeat_cli.models.source import ModelSource
from imgfeat_cli.pipeline.embedder import Embedder
from imgfeat_cli.pipeline.inputs import expand
from imgfeat_cli.pipeline.workers import StreamPool


class FeatureResult(dict):
    """One image's result: ``{"res": {"input_path", "page_index", "feature"}}`` (PaddleX shape)."""

    def __init__(self, input_path: Optional[str], feature: np.ndarray) -> None:
        super().__init__(res={"input_path": input_path, "page_index": None, "feature": feature})

    @property
    def json(self) -> Dict[str, Any]:
        """The result with lists instead of arrays, ready for ``json.dumps``."""
        res = dict(self["res"])
        res["feature"] = [float(v) for v in np.asarray(res["feature"], dtype=np.float32)]
        return {"res": res}

    def print(self, format_json: bool = True, indent: int = 4, ensure_ascii: bool = False) -> None:
        print(json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii) if format_json else str(self.json))

    def save_to_json(self, save_path: str, indent: int = 4, ensure_ascii: bool = False) -> str:
        """A ``.json`` path writes that file; anything else is a folder and gets ``<stem>_res.json``."""
        target = Path(save_path)
        if target.suffix.lower() != ".json":
            src = self["res"]["input_path"]
            stem = Path(src.split("?")[0]).stem if src else "ndarray"
            target = target / f"{stem}_res.json"
        fsutil.write_text(target, json.dumps(self.json["res"], indent=indent, ensure_ascii=ensure_ascii) + "\n")
        return str(target)


class FeatureModel(EmbeddingModel):
    """A ready-to-run feature extractor. Build it with :func:`imgfeat_cli.create_model`."""

    stream_pool: Any = None  # worker replicas started by start_streams()

    def start_streams(self, workers: int, threads: Optional[int] = None) -> None:
        """Start ``workers`` replica processes that later jobs keep using until :meth:`close`
        (see :mod:`imgfeat_cli.pipeline.workers`): worth it for repeated large jobs, since each
        replica takes about 2 s to start. This model embeds batches too when it runs with the
        same number of inference threads as each replica (``threads``, default its own)."""
        self.close()
        per = threads or self.cpu_threads or cpu_count()
        self.stream_pool = StreamPool(self, workers, per, parent_joins=self.cpu_threads == per)

    def close(self) -> None:
        """Stop the replica processes, if any."""
        if self.stream_pool is not None:
            self.stream_pool.close()
            self.stream_pool = None

    def __enter__(self) -> "FeatureModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def predict(self, input: Any, batch_size: int = 1, progress: bool = False) -> Iterator[FeatureResult]:
        """Yield one :class:`FeatureResult` per image in ``input`` (see
        :mod:`imgfeat_cli.pipeline.inputs`), in order. As in PaddleX, an input that cannot be read
        raises (:class:`~imgfeat_cli.common.errors.ImageDecodeError`) when its turn comes.
        ``progress=True`` shows a ``tqdm`` bar (a widget in notebooks) over the images."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        items = list(expand(input))
        with tqdm_progress(progress) as report:
            done = 0
            for batch, res in Embedder(self, batch_size).results(items):
                feats = dict(zip(res.rows, res.feats))
                failed = dict(res.errors)
                for row, item in enumerate(batch):
                    if row in failed:
                        raise ImageDecodeError(failed[row])
                    yield FeatureResult(item.input_path, feats[row])
                done += len(batch)
                report("predict", done, len(items))


def create_model(name: Optional[str] = None, model_dir: Optional[str] = None, weights: Optional[str] = None,
                 device: Optional[str] = None, tag: Optional[str] = None, arch: Optional[Mapping[str, Any]] = None,
                 cpu_threads: Optional[int] = None, use_hpip: bool = False,
                 hpi_config: Optional[Mapping[str, Any]] = None, backend: Optional[str] = None,
                 precision: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
                 **kwargs: Any) -> FeatureModel:
    """Create a feature model, PaddleX style.

    * ``model_dir``: an inference folder (official layout) run with ``paddle.inference``;
    * ``weights``: a ``.pdparams`` checkpoint run in dygraph (``name`` picks the architecture);
    * neither: the official inference model for ``name``, from the download cache (downloaded on
      first use unless ``IMGFEAT_OFFLINE=1``).

    High-performance inference (inference folders only): ``backend`` (``paddle``, ``onnxruntime``,
    ``auto``) and ``precision`` (``fp32``, ``bf16``, ``fp16``, ``auto``), or PaddleX's
    ``use_hpip=True`` with an optional ``hpi_config`` dict of the same keys (plus ``cpu_threads``
    and the ``batch_size`` that ``auto`` measures at). ``log`` receives the measurements of ``auto``.
    """
    if kwargs:
        raise TypeError(f"create_model() got unexpected arguments: {', '.join(sorted(kwargs))}")
    source = ModelSource.from_paddlex(name, model_dir, weights, device, use_hpip=use_hpip, hpi_config=hpi_config,
                                      tag=tag, arch=arch, threads=cpu_threads, backend=backend, precision=precision)
    return source.load(FeatureModel, log=log)
