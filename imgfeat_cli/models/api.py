"""The PaddleX-style Python API: ``FeatureModel.predict`` and its result objects.

Two execution paths give the same features: an inference folder run by ``paddle.inference``
(oneDNN on CPU, CUDA with ``device="gpu:N"``), and a ``.pdparams`` checkpoint run in dygraph.
Both return the model's raw feature; :func:`l2_normalize` is the ``NormalizeFeatures`` step.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from imgfeat_cli.core import fsutil
from imgfeat_cli.core.errors import ModelError
from imgfeat_cli.core.inputs import InputItem, expand, load_rgb
from imgfeat_cli.core.progress import cpu_count
from imgfeat_cli.models import preprocess as pp
from imgfeat_cli.models.registry import ModelSpec, arch_from_state_dict, build_model, find_inference_files


def parse_device(device: Optional[str]) -> tuple:
    """``None``/``cpu`` -> ("cpu", 0); ``gpu``/``gpu:N`` -> ("gpu", N) after checking CUDA exists."""
    text = (device or "cpu").strip().lower()
    if text == "cpu":
        return "cpu", 0
    if text == "gpu" or text.startswith("gpu:"):
        ids = text[4:] if text.startswith("gpu:") else "0"
        first = ids.split(",")[0]
        if not first.isdigit():
            raise ModelError(f"bad device {device!r}", hint="use cpu, gpu or gpu:N")
        import paddle

        if not paddle.device.is_compiled_with_cuda():
            raise ModelError(f"device {device} requested but this paddlepaddle build has no CUDA support",
                             hint="install paddlepaddle-gpu, or use --device cpu")
        return "gpu", int(first)
    raise ModelError(f"bad device {device!r}", hint="use cpu, gpu or gpu:N")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Route file descriptor 1 to 2 while paddle's C++ code runs: some passes print diagnostics
    with ``std::cout`` ("ReduceMeanCheckIfOneDNNSupport"), which would corrupt results and
    ``--json`` documents on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class InferenceRunner:
    """``paddle.inference`` predictor for an exported folder."""

    def __init__(self, model_dir: Path, device: Optional[str] = None, cpu_threads: Optional[int] = None,
                 precision: str = "fp32") -> None:
        from paddle import inference as pi

        prog, params = find_inference_files(model_dir)
        kind, dev_id = parse_device(device)
        config = pi.Config(str(prog), str(params))
        config.disable_glog_info()
        if kind == "gpu":
            mode = pi.PrecisionType.Half if precision == "fp16" else pi.PrecisionType.Float32
            config.enable_use_gpu(256, dev_id, mode)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)
            config.set_cpu_math_library_num_threads(cpu_threads or cpu_count())
            if precision == "bf16":
                config.enable_mkldnn_bfloat16()
        try:
            with stdout_to_stderr():
                self.predictor = pi.create_predictor(config)
        except Exception as exc:  # paddle raises many types for corrupt programs
            raise ModelError(f"cannot load the inference model in {model_dir}: {str(exc).strip().splitlines()[-1][:200]}",
                             hint="re-export it (imgfeat export) or re-download it") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output_name = self.predictor.get_output_names()[0]
        self.device = f"{kind}:{dev_id}" if kind == "gpu" else "cpu"
        self.precision = precision
        self.backend = "paddle-inference" + (" (oneDNN)" if kind == "cpu" else " (CUDA)")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        with stdout_to_stderr():
            self.predictor.run()
        return self.predictor.get_output_handle(self.output_name).copy_to_cpu()


class DygraphRunner:
    """Eager-mode forward of a paddle layer (checkpoints, training-time evaluation)."""

    def __init__(self, layer: Any, device: Optional[str] = None) -> None:
        import paddle

        kind, dev_id = parse_device(device)
        paddle.set_device(f"gpu:{dev_id}" if kind == "gpu" else "cpu")
        self.layer = layer
        self.layer.eval()
        self.device = f"{kind}:{dev_id}" if kind == "gpu" else "cpu"
        self.precision = "fp32"
        self.backend = "paddle-dygraph"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import paddle

        with paddle.no_grad():
            return self.layer(paddle.to_tensor(batch, dtype="float32")).numpy()


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


class FeatureModel:
    """A ready-to-run feature extractor. Build it with :func:`imgfeat_cli.create_model`."""

    def __init__(self, name: str, runner: Any, preprocessor: pp.Preprocessor, transform_ops: Sequence[Dict[str, Any]],
                 source: str, layer: Any = None) -> None:
        self.name = name
        self.runner = runner
        self.preprocessor = preprocessor
        self.transform_ops = list(transform_ops)
        self.source = source
        self.layer = layer  # the dygraph layer when built from a checkpoint (export uses it)
        #: how to rebuild this model in another process (inference folders only; see core/streams)
        self.recipe: Optional[Dict[str, Any]] = None
        self.cpu_threads: Optional[int] = None  # CPU inference threads, when known
        self.stream_pool: Any = None  # worker replicas started by start_streams()

    def __repr__(self) -> str:
        return f"FeatureModel({self.name!r}, source={self.source!r}, backend={self.backend!r}, device={self.device!r})"

    @property
    def backend(self) -> str:
        return str(self.runner.backend)

    @property
    def device(self) -> str:
        return str(self.runner.device)

    @property
    def precision(self) -> str:
        return str(getattr(self.runner, "precision", "fp32"))

    @classmethod
    def from_inference_dir(cls, model_dir: str, name: Optional[str] = None, device: Optional[str] = None,
                           cpu_threads: Optional[int] = None, resize_mode: str = "yml", backend: str = "paddle",
                           precision: str = "fp32", batch_size: int = 16,
                           log: Optional[Any] = None) -> "FeatureModel":
        """``backend``/``precision`` as in :mod:`imgfeat_cli.models.backends`; ``auto`` in either
        measures the candidates at ``batch_size`` and keeps the fastest within the accuracy bar."""
        from imgfeat_cli.models import backends as hpi

        path = Path(model_dir)
        find_inference_files(path)  # fail on a wrong folder before reading yml
        doc = pp.read_inference_yml(path)
        ops = doc["PreProcess"]["transform_ops"]
        model_name = name or (doc.get("Global") or {}).get("model_name") or path.name
        prep = pp.build(ops, resize_mode)
        kind = parse_device(device)[0]
        hpi.validate(backend, precision, kind)
        if "auto" in (backend, precision):
            w, h = prep.input_size or (224, 224)
            choice, runner = hpi.choose_auto(path, device, cpu_threads, batch_size, (h, w), backend, precision,
                                             log or (lambda m: None))
        else:
            choice = hpi.HpiChoice(backend, precision)
            runner = hpi.make_runner(path, device, cpu_threads, choice)
        model = cls(str(model_name), runner, prep, ops, str(path))
        model.cpu_threads = cpu_threads or cpu_count()
        model.recipe = {"model_dir": str(path), "name": name, "device": device, "resize_mode": resize_mode,
                        "backend": choice.backend, "precision": choice.precision}
        return model

    @classmethod
    def from_recipe(cls, recipe: Dict[str, Any], cpu_threads: Optional[int] = None) -> "FeatureModel":
        """The same model again (another process, another thread count), backend already chosen."""
        return cls.from_inference_dir(recipe["model_dir"], name=recipe["name"], device=recipe["device"],
                                      cpu_threads=cpu_threads, resize_mode=recipe["resize_mode"],
                                      backend=recipe["backend"], precision=recipe["precision"])

    @classmethod
    def from_checkpoint(cls, spec: ModelSpec, weights: str, device: Optional[str] = None, tag: Optional[str] = None,
                        arch: Optional[Dict[str, Any]] = None, resize_mode: str = "yml") -> "FeatureModel":
        from imgfeat_cli.models.weights import load_into, read_state_dict

        state = read_state_dict(weights)
        cfg = {**arch_from_state_dict(spec, state), **(arch or {})}
        layer = build_model(spec.name, num_classes=None, arch=cfg)
        load_into(layer, state, weights)
        ops = list(spec.pretrained_cfg(tag).transform_ops)
        size = trained_input_size(weights) or (cfg.get("img_size") if spec.arch == "clip_vit" else None)
        if size and size != 224:
            ops[0] = {"ResizeImage": {**ops[0]["ResizeImage"], "size": [int(size)] * 2}}
        return cls(spec.name, DygraphRunner(layer, device), pp.build(ops, resize_mode), ops, weights, layer=layer)

    def start_streams(self, workers: int, threads: Optional[int] = None) -> None:
        """Start ``workers`` replica processes that ``imgfeat_cli.core.embed.run_embed`` keeps using
        until :meth:`close` (see :mod:`imgfeat_cli.core.streams`): worth it for repeated large jobs,
        since each replica takes about 2 s to start. The model itself joins in when it runs with
        ``threads`` inference threads."""
        from imgfeat_cli.core.streams import StreamPool

        if self.recipe is None:
            raise ModelError("streams need an inference folder", hint="export the checkpoint first (imgfeat export)")
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

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run an ``NCHW`` float32 batch through the model; return L2-normalised features."""
        return pp.l2_normalize(self.runner(batch))

    @property
    def input_shape(self) -> Optional[tuple]:
        """``(3, h, w)`` when the pre-processing gives every image that shape, else ``None``."""
        return self.preprocessor.output_shape

    def preprocess(self, item: InputItem) -> np.ndarray:
        return self.preprocessor(load_rgb(item))

    def preprocess_into(self, item: InputItem, out: np.ndarray) -> None:
        """Decode and pre-process ``item`` into ``out`` (a row of a preallocated batch)."""
        self.preprocessor.into(load_rgb(item), out)

    def predict(self, input: Any, batch_size: int = 1) -> Iterator[FeatureResult]:
        """Yield one :class:`FeatureResult` per image in ``input`` (see :mod:`imgfeat_cli.core.inputs`)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        batch: List[InputItem] = []
        for item in expand(input):
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, items: List[InputItem]) -> Iterator[FeatureResult]:
        from imgfeat_cli.core.streams import row_jobs

        buf, jobs = row_jobs(self, items)
        arrays = [job() for job in jobs]  # a bad input raises here, as in PaddleX
        feats = self.embed_batch(buf if buf is not None else np.stack(arrays))
        for it, f in zip(items, feats):
            yield FeatureResult(it.input_path, f)
