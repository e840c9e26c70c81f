"""``export``: a dygraph model (checkpoint) -> an inference folder in the official layout.

The rep blocks are folded first (as upstream does), the program is traced with a dynamic batch
dimension and input name ``x`` (as in the official models), and ``inference.yml`` is written in the
official format, so the folder works with ``imgfeat embed --model-dir`` and with PaddleX. The folder
is assembled in a temp directory and renamed into place: a failed export leaves nothing behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import yaml

from imgfeat_cli.common import folders, fsutil, paths
from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.models import preprocess as pp


@dataclass
class ExportResult:
    model_name: str
    model_dir: str
    files: Dict[str, int]
    input_size: Sequence[int]

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def _input_size(ops: Sequence[Dict[str, Any]]) -> Sequence[int]:
    prep = pp.build(ops)
    if prep.input_size is None:
        return (-1, -1)
    w, h = prep.input_size
    return (h, w)


def check_destination(out_dir: str, overwrite: bool) -> Path:
    """The export folder, refused before any work when it cannot (or may not) be written."""
    dest = paths.check_output_dir(out_dir)
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise UsageError(f"output folder {dest} exists and is not empty",
                         hint="choose another --out or pass --overwrite (the old folder is kept as .bak)")
    folders.check_backup_free(dest)
    return dest


def export_layer(model_name: str, layer: Any, out_dir: str, transform_ops: Sequence[Dict[str, Any]],
                 overwrite: bool = False, check: Callable[[], None] = lambda: None) -> ExportResult:
    """Trace ``layer`` (whose ``forward`` returns the raw feature) into ``out_dir``. ``check()`` runs
    before the result is moved into place and may raise to abandon it (Ctrl-C)."""
    import paddle

    dest = check_destination(out_dir, overwrite)
    h, w = _input_size(transform_ops)
    layer.eval()
    if hasattr(layer, "reparameterize"):
        layer.reparameterize()
    with folders.replace_dir(dest) as tmp:  # the previous folder becomes .bak
        spec = [paddle.static.InputSpec([None, 3, None if h < 0 else h, None if w < 0 else w], "float32", name="x")]
        static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
        paddle.jit.save(static, str(tmp / "inference"))
        doc = pp.inference_yml(model_name, transform_ops)
        fsutil.write_text(tmp / "inference.yml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        if not (tmp / "inference.pdiparams").is_file():
            raise ModelError("paddle.jit.save wrote no inference.pdiparams", hint="check the paddlepaddle install")
        check()
    files = {p.name: p.stat().st_size for p in sorted(dest.iterdir()) if p.is_file()}
    return ExportResult(model_name, str(dest), files, (h, w))


def export_checkpoint(name: str, weights: str, out_dir: str, tag: Optional[str] = None,
                      arch: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                      check: Callable[[], None] = lambda: None) -> ExportResult:
    """Load ``weights`` for model ``name`` and export it; weights holding NaN or infinity are refused
    (the exported model would give NaN features for every image)."""
    from imgfeat_cli.models.model import EmbeddingModel
    from imgfeat_cli.models.registry import get_spec
    from imgfeat_cli.models.weights import nonfinite

    check_destination(out_dir, overwrite)
    model = EmbeddingModel.from_checkpoint(get_spec(name), weights, tag=tag, arch=arch)
    bad = nonfinite(model.layer.state_dict())
    if bad:
        raise ModelError(f"weights file {weights} holds NaN or infinity in {len(bad)} tensors (e.g. {bad[0]})",
                         hint="the training run diverged; export an earlier checkpoint")
    return export_layer(model.name, model.layer, out_dir, model.transform_ops, overwrite, check)


def export_seeded(name: str, out_dir: str, seed: int = 0, arch: Optional[Dict[str, Any]] = None,
                  input_size: int = 224) -> ExportResult:
    """Export model ``name`` with seeded random weights: the official architecture's compute and
    file layout with no download, for offline demos, tests and benchmarks (``arch`` shrinks it,
    e.g. a tiny ViT)."""
    import paddle

    from imgfeat_cli.models.registry import get_spec, inference_ops

    spec = get_spec(name)
    paddle.seed(seed)
    cfg = dict(arch or {})
    if spec.family.sized_by_input:
        cfg.setdefault("img_size", input_size)
    layer = spec.build(num_classes=None, arch=cfg)
    _fixture_weights(layer, seed)
    return export_layer(name, layer, out_dir, inference_ops(spec.interpolation, input_size))


def _fixture_weights(layer: Any, seed: int) -> None:
    """Weights shaped like a trained model's, as the upstream reference fixtures have them: convs
    He-normal with fan-in per group (a depthwise 3x3 starts at std sqrt(2/9)), BatchNorm statistics
    and shifts random (mean and bias ~ N(0, 0.1), variance ~ U(0.5, 1.5)). With paddle's default
    initialisation every image maps to nearly the same feature, which tests nothing."""
    import numpy as np
    import paddle

    rng = np.random.default_rng(seed)
    for sub in layer.sublayers():
        if isinstance(sub, paddle.nn.Conv2D):
            w = sub.weight
            fan_in = int(np.prod(w.shape[1:]))
            sub.weight.set_value(rng.normal(0.0, (2.0 / fan_in) ** 0.5, w.shape).astype("float32"))
        elif isinstance(sub, (paddle.nn.BatchNorm1D, paddle.nn.BatchNorm2D, paddle.nn.BatchNorm)):
            n = sub._mean.shape[0]
            for tensor, values in ((sub._mean, rng.normal(0.0, 0.1, n)), (sub._variance, rng.uniform(0.5, 1.5, n)),
                                   (sub.bias, rng.normal(0.0, 0.1, n))):
                if tensor is not None:
                    tensor.set_value(values.astype("float32"))
