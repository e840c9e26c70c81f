"""Checkpoint folders in PaddleX's layout, written so an interruption never leaves a torn one.

``<output>/<name>/<name>.pdparams`` (weights), ``.pdopt`` (optimizer and LR-scheduler state),
``.pdstates`` (epoch, step, sampler state, metrics) and ``inference/`` (exported with the same code
as ``imgfeat export``). A folder is assembled under a temp name and renamed into place; the
previous one is removed only after the rename.

Optimizer state is stored under the model's structured parameter names (``backbone.stem.0.conv.weight``)
instead of paddle's process-global names (``conv2d_17.w_0``), which change with the number of
layers created before; so a checkpoint resumes in any process.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import UsageError

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")


def _param_names(model: Any) -> Dict[str, str]:
    """paddle name -> structured name."""
    return {p.name: k for k, p in model.named_parameters()}


def portable_optimizer_state(opt: Any, model: Any) -> Dict[str, Any]:
    names = _param_names(model)
    out: Dict[str, Any] = {}
    for key, value in opt.state_dict().items():
        if key == "LR_Scheduler" or key == "master_weights":
            out[key] = value
            continue
        owner = max((n for n in names if key.startswith(n + "_")), key=len, default=None)
        out[f"{names[owner]}::{key[len(owner) + 1:]}" if owner else key] = value
    return out


def restore_optimizer_state(opt: Any, model: Any, state: Dict[str, Any]) -> None:
    by_struct = {k: p.name for k, p in model.named_parameters()}
    native: Dict[str, Any] = {}
    for key, value in state.items():
        if "::" in key:
            struct, acc = key.split("::", 1)
            if struct not in by_struct:
                raise UsageError(f"the optimizer state names parameter {struct}, which this model lacks",
                                 hint="resume with the same model and settings the checkpoint was made with")
            native[f"{by_struct[struct]}_{acc}"] = value
        else:
            native[key] = value
    import warnings

    with warnings.catch_warnings():
        # LinearWarmup stores its inner schedule under an extra key, and paddle's base class warns
        # about that key although LinearWarmup.set_state_dict consumes it.
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        opt.set_state_dict(native)


def resolve_resume(path: str) -> Path:
    """``latest/``, ``latest/latest.pdparams`` or the prefix ``latest/latest`` -> the prefix path."""
    p = Path(path)
    if p.is_dir():
        p = p / p.name
    elif p.suffix in SUFFIXES:
        p = p.with_suffix("")
    missing = [s for s in SUFFIXES if not p.with_name(p.name + s).is_file()]
    if missing:
        raise UsageError(f"cannot resume from {path}: {', '.join(p.name + s for s in missing)} not found",
                         hint="point Train.resume_path at a checkpoint folder such as output/latest")
    return p


def load_checkpoint(prefix: Path) -> Dict[str, Any]:
    import paddle

    return {"params": paddle.load(str(prefix) + ".pdparams"), "opt": paddle.load(str(prefix) + ".pdopt"),
            "states": paddle.load(str(prefix) + ".pdstates")}


def _swap_in(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(output: Path, name: str, params: Dict[str, Any], opt_state: Dict[str, Any],
                    states: Dict[str, Any], export: Optional[Any] = None) -> Path:
    """Write ``output/name/`` atomically. ``export(dir)`` writes the inference folder into ``dir``."""
    import paddle

    output.mkdir(parents=True, exist_ok=True)
    dest = output / name
    tmp = fsutil.temp_dir(output / name)
    try:
        paddle.save(params, str(tmp / f"{name}.pdparams"))
        paddle.save(opt_state, str(tmp / f"{name}.pdopt"))
        paddle.save(states, str(tmp / f"{name}.pdstates"))
        if export is not None:
            export(tmp / "inference")
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def copy_checkpoint(output: Path, src_name: str, name: str) -> Path:
    """Copy ``output/src_name`` to ``output/name`` (files renamed to the new name), atomically."""
    src = output / src_name
    tmp = fsutil.temp_dir(output / name)
    try:
        for suffix in SUFFIXES:
            shutil.copy2(src / f"{src_name}{suffix}", tmp / f"{name}{suffix}")
        if (src / "inference").is_dir():
            shutil.copytree(src / "inference", tmp / "inference")
        _swap_in(tmp, output / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output / name


def model_entry(output: Path, name: str, score: Optional[float]) -> Dict[str, Any]:
    """One ``models`` entry of ``train_result.json`` (paths relative to the output folder)."""
    inf = Path(name) / "inference"
    prog = "inference.json" if (output / inf / "inference.json").is_file() else "inference.pdmodel"
    return {"score": score, "pdparams": f"{name}/{name}.pdparams", "pdema": "", "pdopt": f"{name}/{name}.pdopt",
            "pdstates": f"{name}/{name}.pdstates", "inference_config": str(inf / "inference.yml"),
            "pdmodel": str(inf / prog), "pdiparams": str(inf / "inference.pdiparams")}
