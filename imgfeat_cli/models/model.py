"""A loaded feature model: pre-processing plus a runner, with what it takes to rebuild it.

:class:`EmbeddingModel` turns decoded RGB images into L2-normalised features. It knows nothing of
files, batching, workers or outputs: :mod:`imgfeat_cli.pipeline` drives it, and the public
``FeatureModel`` (PaddleX's ``predict``) extends it there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from imgfeat_cli.common.system import cpu_count, default_batch_size, parse_device
from imgfeat_cli.models import preprocess as pp
from imgfeat_cli.models.files import find_inference_files, model_hash
from imgfeat_cli.models.registry import ModelSpec
from imgfeat_cli.models.runners import DygraphRunner


def trained_input_size(weights: str) -> Optional[int]:
    """The input side a checkpoint was trained at, from the ``.pdstates`` that ``imgfeat train``
    writes beside it (``Train.input_size``), so evaluating or exporting a checkpoint trained at 64
    does not silently resize to 224."""
    states = Path(weights).with_suffix(".pdstates")
    if not states.is_file():
        return None
    import paddle

    try:
        doc = paddle.load(str(states))
    except Exception:  # an unreadable side file is not worth failing the load for
        return None
    size = doc.get("input_size") if isinstance(doc, dict) else None
    return int(size) if isinstance(size, int) else None


class EmbeddingModel:
    """A ready-to-run feature extractor over decoded images."""

    def __init__(self, name: str, runner: Any, preprocessor: pp.Preprocessor, transform_ops: Sequence[Dict[str, Any]],
                 source: str, layer: Any = None) -> None:
        self.name = name
        self.runner = runner
        self.preprocessor = preprocessor
        self.transform_ops = list(transform_ops)
        self.source = source
        self.layer = layer  # the dygraph layer when built from a checkpoint (export uses it)
        #: how to rebuild this model in another process (inference folders only)
        self.recipe: Optional[Dict[str, Any]] = None
        self.cpu_threads: Optional[int] = None  # CPU inference threads, when known
        #: the sha256 of the model this one was made from (``imgfeat quantize`` records it), if any
        self.lineage: Optional[str] = None
        self.request: Any = None  # the ModelSource it was loaded from, when it was

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, source={self.source!r}, backend={self.backend!r}, device={self.device!r})"

    @property
    def backend(self) -> str:
        return str(self.runner.backend)

    @property
    def device(self) -> str:
        return str(self.runner.device)

    @property
    def precision(self) -> str:
        return str(getattr(self.runner, "precision", "fp32"))

    @property
    def identity(self) -> Dict[str, Any]:
        """What an output records about the model that made it (a resume refuses another): the
        name, a hash of its files (so a moved copy of the same model is the same model), and the
        engine that ran it."""
        src = Path(self.source)
        sha = find_inference_files(src).sha256() if src.is_dir() else model_hash(src)
        ident = {"name": self.name, "sha256": sha[:16], "backend": self.backend, "precision": self.precision}
        if self.lineage:  # quantized from another model: the same weights as far as vectors go
            ident["lineage"] = self.lineage[:16]
        return ident

    def source_record(self) -> Dict[str, Any]:
        """Where the model came from: ``kind`` (folder, checkpoint, official), the location as
        given and resolved, and the weights tag of an official model. Outputs and indexes keep it
        so the same model can be loaded again (``search`` with an index's own model)."""
        import os

        request = self.request
        rec = {"kind": request.kind if request is not None else ("folder" if Path(self.source).is_dir() else "checkpoint"),
               "given": request.label if request is not None and request.given else str(self.source),
               "resolved": os.path.abspath(str(self.source))}
        if request is not None and request.tag:
            rec["tag"] = request.tag
        return rec

    def record(self, dim: Optional[int] = None) -> Dict[str, Any]:
        """Everything an index records about this model: its identity, lineage, source, feature
        width and pre-processing (see :mod:`imgfeat_cli.retrieval.modelrecord`)."""
        ident = self.identity
        return {**ident, "lineage": ident.get("lineage") or ident["sha256"], "source": self.source_record(),
                "dim": dim, "preprocess": list(self.transform_ops)}

    @classmethod
    def from_inference_dir(cls, model_dir: str, name: Optional[str] = None, device: Optional[str] = None,
                           cpu_threads: Optional[int] = None, resize_mode: str = "yml", backend: Optional[str] = None,
                           precision: Optional[str] = None, batch_size: Optional[int] = None,
                           log: Optional[Callable[[str], None]] = None) -> "EmbeddingModel":
        """``backend``/``precision`` as in :mod:`imgfeat_cli.models.engines` (``None``: the default,
        the fastest exact engine); ``auto`` in either measures the candidates at ``batch_size`` once
        per model and machine and keeps the fastest within the accuracy bar."""
        from imgfeat_cli.models import autoselect, engines

        path = Path(model_dir)
        files = find_inference_files(path)  # fail on a wrong folder before reading yml
        doc = pp.read_inference_yml(path)
        ops = doc["PreProcess"]["transform_ops"]
        model_name = name or (doc.get("Global") or {}).get("model_name") or path.name
        prep = pp.build(ops, resize_mode)
        native = engines.folder_precision(files, doc)
        backend, precision = engines.resolve(backend, precision, files, native)
        kind = parse_device(device).kind
        engines.validate(backend, precision, kind, files)
        engines.require_gpus(device, backend)
        say = log or autoselect.silent
        batch_size = batch_size or default_batch_size(device)
        if "auto" in (backend, precision):
            pool = [c for c in engines.candidates(kind, files, native)
                    if backend in ("auto", c.backend) and precision in ("auto", c.precision)]
            choice, runner = autoselect.choose(files, device, cpu_threads, batch_size, prep, pool, say)
        else:
            choice = engines.HpiChoice(backend, precision)
            runner = engines.make_runner(files, device, cpu_threads, choice, say)
        model = cls(str(model_name), runner, prep, ops, str(path))
        model.cpu_threads = cpu_threads or cpu_count()
        quant = doc.get("Quantization")
        model.lineage = str(quant["source_sha256"]) if isinstance(quant, dict) and quant.get("source_sha256") else None
        model.recipe = {"model_dir": str(path), "name": name, "device": device, "resize_mode": resize_mode,
                        "backend": choice.backend, "precision": choice.precision}
        return model

    @classmethod
    def from_recipe(cls, recipe: Dict[str, Any], cpu_threads: Optional[int] = None) -> "EmbeddingModel":
        """The same model again (another process, another thread count), backend already chosen."""
        return cls.from_inference_dir(recipe["model_dir"], name=recipe["name"], device=recipe["device"],
                                      cpu_threads=cpu_threads, resize_mode=recipe["resize_mode"],
                                      backend=recipe["backend"], precision=recipe["precision"])

    @classmethod
    def from_checkpoint(cls, spec: ModelSpec, weights: str, device: Optional[str] = None, tag: Optional[str] = None,
                        arch: Optional[Dict[str, Any]] = None, resize_mode: str = "yml") -> "EmbeddingModel":
        from imgfeat_cli.models.weights import load_into, read_state_dict

        state = read_state_dict(weights)
        cfg = {**spec.arch_from_state_dict(state), **(arch or {})}
        layer = spec.build(num_classes=None, arch=cfg)
        load_into(layer, state, weights)
        ops = list(spec.pretrained_cfg(tag).transform_ops)
        size = trained_input_size(weights) or (cfg.get("img_size") if spec.family.sized_by_input else None)
        if size and size != 224:
            ops[0] = {"ResizeImage": {**ops[0]["ResizeImage"], "size": [int(size)] * 2}}
        return cls(spec.name, DygraphRunner(layer, device), pp.build(ops, resize_mode), ops, weights, layer=layer)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run an ``NCHW`` float32 batch through the model; return L2-normalised features."""
        return pp.l2_normalize(self.runner(batch))

    @property
    def input_shape(self) -> Optional[tuple]:
        """``(3, h, w)`` when the pre-processing gives every image that shape, else ``None``."""
        return self.preprocessor.output_shape

