"""Where a model comes from and how it runs: every model decision, made once.

A :class:`ModelSource` is what the user named (a registry name, an inference folder or a
``.pdparams`` checkpoint) and how it should run (device, engine, precision, threads, batch size).
Every job that embeds images (``embed`` on this machine or on Ray, ``eval``, ``index``, ``search``,
the service) and the Python API (``create_model``) build one, so the rules are decided here and
nowhere else: a folder and a checkpoint are exclusive; a checkpoint runs on paddle fp32 only; a
cluster cannot run ``precision auto``; the default batch size follows the device
(:func:`imgfeat_cli.common.system.default_batch_size`). Breaking a rule is a usage error (exit 2)
whichever way the request came in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Type

from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.common.system import check_threads, default_batch_size, parse_device

#: PaddleX's ``hpi_config`` keys that imgfeat understands.
HPI_KEYS = ("backend", "precision", "cpu_threads", "batch_size", "backend_config")
_BACKENDS = ("paddle", "onnxruntime", "openvino", "auto")
_PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")


@dataclass(frozen=True)
class ModelSource:
    """A model request, validated when made. ``None`` means "the default" for every field."""

    name: Optional[str] = None  # registry name: the architecture of a checkpoint, or an official model
    model_dir: Optional[str] = None  # an inference folder (official, exported or quantized)
    weights: Optional[str] = None  # a .pdparams checkpoint, run in dygraph
    device: Optional[str] = None  # cpu, gpu, gpu:N
    backend: Optional[str] = None  # paddle, onnxruntime, openvino, auto; None: the fastest exact engine
    precision: Optional[str] = None  # fp32, bf16, fp16, int8, auto; None: fp32 (a quantized folder: int8)
    threads: Optional[int] = None  # inference threads; None: the cores this process may use
    batch_size: Optional[int] = None  # images per forward pass; None: by device
    tag: Optional[str] = None  # pretrained weights tag of an official model
    arch: Optional[Mapping[str, Any]] = dataclasses.field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.model_dir and self.weights:
            raise UsageError("a model folder and a checkpoint were both given; give one of them",
                             hint="--model-dir DIR (an inference folder) or --weights FILE.pdparams")
        if self.backend is not None and self.backend not in _BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}", hint=f"use one of {', '.join(_BACKENDS)}")
        if self.precision is not None and self.precision not in _PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}", hint=f"use one of {', '.join(_PRECISIONS)}")
        if self.weights and (self.backend not in (None, "paddle") or self.precision not in (None, "fp32")):
            raise UsageError("a .pdparams checkpoint runs on paddle fp32 only; other engines run inference folders",
                             hint="export it first (imgfeat export --weights W --out DIR) and use that folder")
        parse_device(self.device)
        check_threads(self.threads)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1):
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")

    # what it is ----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``folder``, ``checkpoint`` or ``official`` (a registry name, from the download cache)."""
        return "folder" if self.model_dir else "checkpoint" if self.weights else "official"

    @property
    def batch(self) -> int:
        """The batch size this source runs at: the one given, else the device's default."""
        return int(self.batch_size or default_batch_size(self.device))

    @property
    def rebuildable(self) -> bool:
        """Whether another process can load the same model from files (streams, Ray actors)."""
        return not self.weights

    @property
    def label(self) -> str:
        """How logs name it: the folder, the checkpoint or the registry name."""
        return str(self.model_dir or self.weights or self.name or "the default model")

    @property
    def given(self) -> bool:
        """Whether anything names a model (a folder, a checkpoint or a name): else the caller may
        choose one (an index's own model)."""
        return bool(self.model_dir or self.weights or self.name)

    def replace(self, **changes: Any) -> "ModelSource":
        return dataclasses.replace(self, **changes)

    def for_cluster(self) -> "ModelSource":
        """The same request as a Ray cluster runs it. Checkpoints cannot be shipped (export them);
        ``precision auto`` measures one machine's CPU and may pick what other nodes lack (bf16);
        GPU actors run paddle by default (the driver cannot measure a GPU it may not have)."""
        if self.weights:
            raise UsageError("the Ray engine runs inference folders, not .pdparams checkpoints",
                             hint="export the checkpoint first (imgfeat export) and pass --model-dir")
        if self.precision == "auto":
            raise UsageError("precision auto (--hpi) measures one machine's CPU, and a cluster's nodes may lack "
                             "what it picks (bf16)", hint="name --precision (fp32, or bf16 where every node has it)")
        if parse_device(self.device).is_gpu and self.backend in (None, "auto"):
            return self.replace(backend="paddle")
        return self

    # loading -------------------------------------------------------------------------------------
    def load(self, cls: Optional[Type[Any]] = None, log: Optional[Callable[[str], None]] = None,
             threads: Optional[int] = None) -> Any:
        """Load the model as ``cls`` (an :class:`~imgfeat_cli.models.model.EmbeddingModel`
        subclass; default that class). ``threads`` overrides :attr:`threads` (a stream's share)."""
        from imgfeat_cli.models.model import EmbeddingModel

        model = self._load(cls or EmbeddingModel, log, threads)
        model.request = self
        return model

    def _load(self, cls: Type[Any], log: Optional[Callable[[str], None]], threads: Optional[int]) -> Any:
        from imgfeat_cli.common.home import cache_dir
        from imgfeat_cli.models.registry import DEFAULT_TAG, get_spec, list_models

        cache_dir()  # engine decisions and converted graphs live there: an IMGFEAT_HOME that is a file fails now

        if self.weights:
            if self.name is None:
                raise UsageError("a checkpoint needs its architecture's name",
                                 hint=f"pass a model name ({', '.join(list_models())}) with the weights")
            from imgfeat_cli.common.threads import use_math_threads

            use_math_threads(threads or self.threads, "Predict.cpu_threads")  # a dygraph model runs on paddle's math threads
            return cls.from_checkpoint(get_spec(self.name), self.weights, device=self.device, tag=self.tag,
                                       arch=dict(self.arch or {}))
        folder = self.model_dir
        if not folder:
            if self.name is None:
                raise UsageError("no model given", hint=f"name one ({', '.join(list_models())}), a folder or weights")
            from imgfeat_cli.models.hub import ensure_inference_model

            folder = str(ensure_inference_model(get_spec(self.name), self.tag or DEFAULT_TAG, log=log))
        return cls.from_inference_dir(folder, name=self.name, device=self.device, cpu_threads=threads or self.threads,
                                      backend=self.backend, precision=self.precision, batch_size=self.batch, log=log)

    def fingerprint(self) -> Optional[Dict[str, Any]]:
        """The model's identity read from its files without loading it (``sha256`` and, for a
        folder made by ``imgfeat quantize``, the ``lineage`` it was quantized from), so a wrong
        model is refused before the seconds a load takes; ``None`` when the files are not at hand
        (an official model not downloaded yet)."""
        from pathlib import Path

        from imgfeat_cli.models.files import find_inference_files, model_hash
        from imgfeat_cli.models.preprocess import read_inference_yml

        if self.weights:
            path = Path(self.weights)
            return {"name": self.name, "sha256": model_hash(path)[:16]} if path.is_file() else None
        if not self.model_dir:
            if self.name is None:
                return None
            from imgfeat_cli.models.hub import inference_dir
            from imgfeat_cli.models.registry import DEFAULT_TAG

            folder = inference_dir(self.name, self.tag or DEFAULT_TAG)
            if not (folder / "inference.pdiparams").is_file():
                return None
        else:
            folder = Path(self.model_dir)
        doc = read_inference_yml(folder)
        quant = doc.get("Quantization")
        lineage = quant.get("source_sha256") if isinstance(quant, dict) else None
        found = {"name": self.name or (doc.get("Global") or {}).get("model_name") or folder.name,
                 "sha256": find_inference_files(folder).sha256()[:16]}
        return {**found, "lineage": str(lineage)[:16]} if lineage else found

    # building ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ModelSource":
        """The source a resolved command configuration names (``Global.model``/``device``,
        ``Predict.model_dir``/``weights``/``backend``/``precision``/``cpu_threads``/``batch_size``).
        ``Global.model`` is the architecture of a checkpoint, ignored beside a folder."""
        glob, pred = cfg["Global"], cfg.get("Predict", {})
        return cls(name=None if pred.get("model_dir") else glob.get("model"), model_dir=pred.get("model_dir"),
                   weights=pred.get("weights"), device=glob.get("device"), backend=pred.get("backend"),
                   precision=pred.get("precision"), threads=pred.get("cpu_threads"),
                   batch_size=pred.get("batch_size"))

    @classmethod
    def from_paddlex(cls, name: Optional[str] = None, model_dir: Optional[str] = None, weights: Optional[str] = None,
                     device: Optional[str] = None, *, use_hpip: bool = False,
                     hpi_config: Optional[Mapping[str, Any]] = None, **fields: Any) -> "ModelSource":
        """PaddleX's ``create_model`` arguments: ``use_hpip=True`` means ``auto`` for whatever
        ``hpi_config`` leaves open (bf16/fp16 included); its ``backend_config: {precision}`` is
        read as ``precision``. What stays open is the default (the fastest exact engine), unlike
        PaddleX, whose ``use_hpip=False`` means paddle."""
        hpi = dict(hpi_config or {})
        unknown = sorted(set(hpi) - set(HPI_KEYS))
        if unknown:
            raise ModelError(f"unknown hpi_config keys: {', '.join(unknown)}", hint=f"supported: {', '.join(HPI_KEYS)}")
        nested = hpi.pop("backend_config", None) or {}
        if "precision" in nested and "precision" not in hpi:
            hpi["precision"] = nested["precision"]
        auto = "auto" if use_hpip else None
        fields["backend"] = fields.get("backend") or hpi.get("backend") or auto
        fields["precision"] = fields.get("precision") or hpi.get("precision") or auto
        fields["threads"] = fields.get("threads") or hpi.get("cpu_threads")
        fields["batch_size"] = fields.get("batch_size") or hpi.get("batch_size")
        return cls(name=name, model_dir=model_dir, weights=weights, device=device, **fields)

    def describe(self) -> Dict[str, Any]:
        """The request as plain data (what a service reports, what logs show)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
