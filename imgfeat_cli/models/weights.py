"""Loading ``.pdparams`` into imgfeat's layers with a clear report of what did not fit."""
from __future__ import annotations

import warnings

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from imgfeat_cli.common import paths
from imgfeat_cli.common.errors import ModelError, UsageError


@dataclass
class LoadReport:
    loaded: int = 0
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, List[int], List[int]]] = field(default_factory=list)


def read_state_dict(path: str, what: str = "weights file") -> Dict[str, Any]:
    """The state dict in a ``.pdparams`` file. A path that names no file is a usage error (exit 2);
    a file that cannot be read or is damaged (truncated, not a paddle file) is a model error (exit 1)."""
    import paddle

    p = Path(path)
    why = paths.not_a_file(p)
    if why:
        hint = "pass a .pdparams file (e.g. imgfeat download model NAME --kind pretrained)"
        if p.is_dir() and (p / f"{p.name}.pdparams").is_file():
            hint = f"did you mean {p / (p.name + '.pdparams')}?"
        raise UsageError(f"{what} {path} {why}", hint=hint)
    try:
        state = paddle.load(str(p))
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # paddle raises assorted errors for truncated or non-pickle files
        raise ModelError(f"{what} {path} is not a readable .pdparams file: truncated or another format "
                         f"({exc.__class__.__name__})", hint="download or copy it again") from None
    if not isinstance(state, dict):
        raise ModelError(f"{what} {path} does not hold a state dict")
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def load_into(model: Any, state: Dict[str, Any], source: str, allow_missing_head: bool = True) -> LoadReport:
    """Copy ``state`` into ``model``. Backbone-only files (keys without ``backbone.``) are accepted.

    Missing or mis-shaped backbone/neck keys are errors naming the first few; ``head.*`` keys are
    optional both ways (inference needs no classifier, a new dataset needs a new one).
    """
    own = model.state_dict()
    if not any(k in own for k in state) and any(f"backbone.{k}" in own for k in state):
        state = {f"backbone.{k}": v for k, v in state.items()}
    report = LoadReport()
    to_load = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        want, got = list(own[key].shape), list(value.shape)
        if want != got:
            report.mismatched.append((key, got, want))
            continue
        to_load[key] = value
    report.missing = [k for k in own if k not in state]
    fatal_missing = [k for k in report.missing if not (allow_missing_head and k.startswith("head."))]
    fatal_mismatch = [m for m in report.mismatched if not m[0].startswith("head.")]
    if fatal_mismatch:
        k, got, want = fatal_mismatch[0]
        raise ModelError(f"{source}: {len(fatal_mismatch)} parameters have the wrong shape, e.g. {k} is {got}, "
                         f"the model needs {want}", hint="is this checkpoint for another model or size?")
    if fatal_missing and len(fatal_missing) == len([k for k in own if not k.startswith("head.")]):
        raise ModelError(f"{source}: no parameter name matches the model (e.g. {next(iter(state), '?')})",
                         hint="is this checkpoint for another model?")
    only_backbone = all(k.startswith("neck.") for k in fatal_missing)
    if fatal_missing and not only_backbone:
        shown = ", ".join(fatal_missing[:3])
        raise ModelError(f"{source}: {len(fatal_missing)} parameters are missing, e.g. {shown}",
                         hint="the checkpoint is incomplete or for another architecture")
    with warnings.catch_warnings():  # paddle's "Skip loading for head.fc.weight": said above, or not worth saying
        warnings.filterwarnings("ignore", message="Skip loading for")
        model.set_state_dict(to_load)
    report.loaded = len(to_load)
    return report


def nonfinite(params: Dict[str, Any]) -> List[str]:
    """Names of the tensors holding NaN or infinity (a diverged run's weights)."""
    import numpy as np

    return [k for k, v in params.items() if not np.isfinite(v.numpy() if hasattr(v, "numpy") else np.asarray(v)).all()]


def nonfinite_features(layer: Any, batch: Any) -> bool:
    """Whether ``layer`` (in eval mode) gives NaN or infinite features for ``batch``: huge but finite
    weights can still overflow."""
    import numpy as np
    import paddle

    training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            return not bool(np.isfinite(layer(batch).numpy()).all())
    finally:
        if training:
            layer.train()
