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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import ImgfeatError, ModelError, UsageError

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
    elif not any(p.with_name(p.name + s).exists() for s in SUFFIXES):
        what = "is not a folder or a .pdparams file" if p.exists() else "does not exist"
        raise UsageError(f"cannot resume from {path}: it {what}",
                         hint="point Train.resume_path at a checkpoint folder such as output/latest (or its .pdparams)")
    missing = [s for s in SUFFIXES if not p.with_name(p.name + s).is_file()]
    if missing:
        raise UsageError(f"cannot resume from {path}: {', '.join(p.name + s for s in missing)} not found",
                         hint="point Train.resume_path at a checkpoint folder such as output/latest (or its .pdparams)")
    return p


def load_checkpoint(prefix: Path) -> Dict[str, Any]:
    """The three files of a checkpoint; a damaged one is an error naming it."""
    loaded = {}
    for key, suffix in (("params", ".pdparams"), ("opt", ".pdopt"), ("states", ".pdstates")):
        loaded[key] = read_paddle_file(Path(str(prefix) + suffix), "checkpoint file")
    if not isinstance(loaded["states"], dict) or "epoch" not in loaded["states"]:
        raise ModelError(f"{prefix}.pdstates is not an imgfeat training state",
                         hint="resume from a checkpoint folder written by imgfeat train")
    return loaded


def read_paddle_file(path: Path, what: str) -> Any:
    import paddle

    try:
        return paddle.load(str(path))
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # paddle raises assorted errors for truncated or foreign files
        raise ModelError(f"{what} {path} is damaged or not a paddle file ({exc.__class__.__name__})",
                         hint="use another checkpoint (epoch_N/, latest/ or best_model/)") from None


def _digests(folder: Path, name: str) -> Dict[str, str]:
    from imgfeat_cli.common.download import sha256_file

    files = [folder / f"{name}.pdparams"] + sorted((folder / "inference").glob("*"))
    return {str(f.relative_to(folder)).replace(f"{name}.pdparams", "pdparams"): sha256_file(f)
            for f in files if f.is_file()}


#: The engine that scores a training export: paddle.inference, the reference engine (what PaddleX
#: runs). Training scores a new export at every evaluation; the default engine would measure the
#: candidates again (and convert to ONNX) for each new set of weights: 3-4 s per evaluation on 2
#: cores, more than scoring a small evaluation set takes. ``eval`` of a checkpoint scores its
#: export with this same engine, so it reproduces the recorded figure exactly.
SCORING_BACKEND = "paddle"


def exported_inference(weights: str) -> Optional[Path]:
    """The ``inference/`` folder exported from the very weights in ``weights`` when they come from an
    imgfeat training checkpoint (the ``.pdstates`` beside them records the digests of both); else None."""
    w = Path(weights)
    states_path, inf = w.with_suffix(".pdstates"), w.parent / "inference"
    if not (w.is_file() and states_path.is_file() and inf.is_dir()):
        return None
    try:
        states = read_paddle_file(states_path, "checkpoint state")
    except ModelError:
        return None
    recorded = states.get("digests") if isinstance(states, dict) else None
    if not isinstance(recorded, dict) or "pdparams" not in recorded:
        return None
    try:
        return inf if _digests(w.parent, w.stem) == recorded else None
    except OSError:  # a file that cannot be read proves nothing; whoever loads the model names it
        return None


def exported_by_training(model_dir: str) -> bool:
    """Whether ``model_dir`` is the ``inference/`` folder that a training checkpoint beside it (in
    its parent folder) was exported to, digests checked: the folder whose figure training recorded."""
    folder = Path(model_dir)
    if folder.name != "inference" or not folder.is_dir():
        return False
    return any(exported_inference(str(w)) is not None for w in sorted(folder.parent.glob("*.pdparams")))


def repair_swaps(output: Path) -> None:
    """Undo a checkpoint swap a killed process left half done (``.NAME.old`` without ``NAME``)."""
    for old in output.glob(".*.old"):
        dest = output / old.name[1:-len(".old")]
        if old.is_dir() and not dest.exists():
            old.rename(dest)
        elif old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


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


@contextmanager
def _assembling(output: Path, name: str) -> Iterator[Path]:
    """A temp folder that becomes ``output/name`` when the block succeeds; removed otherwise.
    Write errors name the checkpoint (the previous one is intact)."""
    tmp = fsutil.temp_dir(output / name)
    try:
        yield tmp
        _swap_in(tmp, output / name)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImgfeatError(f"cannot write checkpoint {output / name}: {exc.strerror or exc}",
                           hint="free disk space or fix permissions, then continue with --resume "
                                "(earlier checkpoints are intact)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(output: Path, name: str, params: Dict[str, Any], opt_state: Dict[str, Any],
                    states: Dict[str, Any], export: Optional[Callable[[Path], Any]] = None,
                    check: Callable[[], None] = lambda: None) -> Path:
    """Write ``output/name/`` atomically. ``export(dir)`` writes the inference folder into ``dir``;
    ``check()`` runs between files and may raise to abandon the checkpoint (a second Ctrl-C).
    The ``.pdstates`` is written last and records the digests of the weights and the export."""
    import paddle

    output.mkdir(parents=True, exist_ok=True)
    with _assembling(output, name) as tmp:
        paddle.save(params, str(tmp / f"{name}.pdparams"))
        check()
        paddle.save(opt_state, str(tmp / f"{name}.pdopt"))
        check()
        if export is not None:
            export(tmp / "inference")
            check()
        paddle.save({**states, "digests": _digests(tmp, name)}, str(tmp / f"{name}.pdstates"))
        check()
    return output / name


def copy_checkpoint(output: Path, src_name: str, name: str) -> Path:
    """Copy ``output/src_name`` to ``output/name`` (files renamed to the new name), atomically."""
    src = output / src_name
    with _assembling(output, name) as tmp:
        for suffix in SUFFIXES:
            shutil.copy2(src / f"{src_name}{suffix}", tmp / f"{name}{suffix}")
        if (src / "inference").is_dir():
            shutil.copytree(src / "inference", tmp / "inference")
    return output / name


def model_entry(output: Path, name: str, score: Optional[float]) -> Dict[str, Any]:
    """One ``models`` entry of ``train_result.json`` (paths relative to the output folder)."""
    inf = Path(name) / "inference"
    prog = "inference.json" if (output / inf / "inference.json").is_file() else "inference.pdmodel"
    return {"score": score, "pdparams": f"{name}/{name}.pdparams", "pdema": "", "pdopt": f"{name}/{name}.pdopt",
            "pdstates": f"{name}/{name}.pdstates", "inference_config": str(inf / "inference.yml"),
            "pdmodel": str(inf / prog), "pdiparams": str(inf / "inference.pdiparams")}
