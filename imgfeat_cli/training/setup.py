"""The parts of a run, each checked before the output folder is touched: devices, the dataset's
lists and labels, the PK batch plan, the model with its initial weights (a pretrained file, or the
checkpoint to resume), the optimiser with its schedule, and the training data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.common.system import cpu_count, parse_device
from imgfeat_cli.datasets.dataset import MAX_CLASSES, class_count_problems
from imgfeat_cli.models.registry import build_model, inference_ops
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training.data import TrainData, load_split
from imgfeat_cli.training.options import TrainOptions
from imgfeat_cli.training.recipe import Recipe, recipe_for
from imgfeat_cli.training.sampler import PKSampler

Log = Callable[[str], None]


def parse_devices(text: str) -> Tuple[str, List[int]]:
    """``cpu`` -> ("cpu", []); ``gpu`` -> ("gpu", [0]); ``gpu:0,1`` -> ("gpu", [0, 1])."""
    dev = parse_device(text)
    return dev.kind, list(dev.ids)


def check_device(opts: TrainOptions) -> Tuple[str, List[int]]:
    kind, ids = parse_devices(opts.device)
    if kind == "gpu":
        import paddle

        if not paddle.device.is_compiled_with_cuda():
            raise UsageError(f"device {opts.device} requested but this paddlepaddle build has no CUDA support",
                             hint="install paddlepaddle-gpu, or use -o Global.device=cpu")
        found = paddle.device.cuda.device_count()
        if max(ids) >= found:
            raise UsageError(f"device {opts.device} requested but {found} GPU(s) are visible")
    return kind, ids


def on_any_rank(flag: bool, world: int) -> bool:
    """``flag`` agreed by all ranks of a data-parallel run (one rank stopping alone would leave the
    others waiting in their next collective)."""
    if world == 1:
        return flag
    import paddle
    import paddle.distributed as dist

    votes = paddle.to_tensor([int(flag)], dtype="int32")
    dist.all_reduce(votes)
    return int(votes.numpy()[0]) > 0


def default_workers(opts: TrainOptions) -> int:
    return opts.num_workers or max(1, cpu_count())


def check_labels(entries: List[Any], num_classes: Optional[int], root: Path) -> int:
    """The class count: ``num_classes`` when given (checked against the labels), else max + 1.
    Refused before the model is built: a negative label, and a classifier above the dataset
    format's :data:`~imgfeat_cli.datasets.dataset.MAX_CLASSES` (label ids like 2000000000 would
    allocate terabytes; ``read_list`` already refuses such labels in train.txt)."""
    labels = [e.label for e in entries]
    low, high = min(labels), max(labels)
    if low < 0:
        bad = next(e for e in entries if e.label < 0)
        raise DatasetError(f"{root / 'train.txt'}:{bad.line}: label {bad.label} is negative",
                           hint="labels are class ids 0..N-1")
    if num_classes is not None and high >= num_classes:
        bad = next(e for e in entries if e.label >= num_classes)
        raise UsageError(f"Train.num_classes is {num_classes} but {root / 'train.txt'}:{bad.line} has label {bad.label}",
                         hint=f"set -o Train.num_classes={high + 1} or leave it unset (read from the dataset)")
    count = num_classes or high + 1
    if count > MAX_CLASSES:
        where = "Train.num_classes" if num_classes else f"the largest label in {root / 'train.txt'} ({high})"
        raise UsageError(f"{where} asks for a classifier of {count} classes, above the limit of {MAX_CLASSES}",
                         hint=f"renumber the labels of train.txt to 0..{len(set(labels)) - 1} (gallery/query labels "
                              "only need to match each other), or leave Train.num_classes unset")
    return count


def build_schedule(lr: float, epochs: int, warmup_epochs: int, steps: int, log: Log) -> Any:
    """Linear warm-up over ``warmup_epochs`` epochs, then cosine decay, stepped every iteration."""
    import paddle

    if warmup_epochs >= epochs:
        clamped = max(0, epochs - 1)
        log(f"warning: warm-up of {warmup_epochs} epochs >= {epochs} epochs; using {clamped}")
        warmup_epochs = clamped
    warm = warmup_epochs * steps
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=max(1, epochs * steps - warm), eta_min=0.0)
    if warm == 0:
        return cosine
    return paddle.optimizer.lr.LinearWarmup(cosine, warmup_steps=warm, start_lr=0.0, end_lr=lr)


def load_pretrained(model: Any, spec: Any, path: Optional[str], log: Log) -> Optional[str]:
    """Initial weights: ``none`` keeps the random initialisation, ``None`` the official ones (download
    cache), anything else is a ``.pdparams`` file that must fit the model."""
    from imgfeat_cli.models.weights import load_into, read_state_dict

    if path is not None and str(path).strip().lower() == "none":
        log("initialisation: random (Train.pretrain_weight_path=none)")
        return None
    if path is None:
        from imgfeat_cli.models.hub import ensure_model_file
        from imgfeat_cli.models.registry import DEFAULT_TAG

        path = str(ensure_model_file(spec, spec.family.start_weights, DEFAULT_TAG))
    report = load_into(model, read_state_dict(path, "Train.pretrain_weight_path"), path)
    skipped = [k for k, _, _ in report.mismatched] + report.missing
    log(f"initialisation: {report.loaded} tensors from {path}"
        + (f"; new (not loaded): {', '.join(sorted(set(skipped))[:4])}" if skipped else ""))
    return path


def check_resumable(prefix: Path, states: Dict[str, Any], want: Dict[str, Any]) -> None:
    """A resume with settings other than the checkpoint's is refused, not guessed."""
    diff = [f"{k} {states.get(k)!r} -> {v!r}" for k, v in want.items() if states.get(k) != v]
    if diff:
        run_config = prefix.parent.parent / "config.yaml"  # OUT/latest/latest -> OUT/config.yaml
        same = (f"imgfeat train -c {run_config} --resume uses the run's own settings"
                if run_config.is_file() else "resume with the checkpoint's settings")
        raise UsageError(f"cannot resume {prefix}: settings differ from the checkpoint ({'; '.join(diff)})",
                         hint=f"{same}, or start a new run in another --output")


def train_step_layer(model: Any) -> Any:
    """Wrap the model so ``forward(x, label)`` gives the training outputs: DataParallel only
    synchronises what goes through ``forward``."""
    import paddle.nn as nn

    class TrainStep(nn.Layer):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any, label: Any) -> Dict[str, Any]:
            return self.inner.forward_train(x, label)

    return TrainStep(model)


@dataclass
class RunParts:
    """What :func:`prepare` builds: everything a :class:`~imgfeat_cli.training.trainer.Trainer` trains with."""

    spec: Any
    entries: List[Any]
    can_eval: bool  # gallery.txt and query.txt list images
    num_classes: int
    batch_size: int
    learning_rate: float
    sampler: PKSampler
    steps: int  # per epoch, for this rank
    device: str
    arch: Dict[str, Any]
    model: Any
    recipe: Recipe
    ops: List[Dict[str, Any]]  # the inference pre-processing exported with each checkpoint
    schedule: Any = None
    optimizer: Any = None
    step_model: Any = None
    data: Optional[TrainData] = None
    saved_states: Optional[Dict[str, Any]] = None  # the .pdstates of the checkpoint resumed from


def _dataset(opts: TrainOptions, spec: Any, world: int, log: Log) -> Tuple[List[Any], bool, int, int, float, PKSampler, int]:
    root = Path(opts.dataset_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"dataset folder {root} {what}", hint="pass --dataset DIR (a ShiTuRecDataset)")
    entries = load_split(root, "train")
    if not entries:
        raise DatasetError(f"{root / 'train.txt'} lists no images")
    for problem in class_count_problems(entries, "train.txt"):  # errors were raised by load_split
        log(f"warning: {root / 'train.txt'}: {problem.message}")
    can_eval = bool(load_split(root, "gallery", required=False)) and bool(load_split(root, "query", required=False))
    num_classes = check_labels(entries, opts.num_classes, root)
    bs = opts.batch_size or int(spec.train_defaults["batch_size"])
    lr = opts.learning_rate or float(spec.train_defaults["learning_rate"])
    sampler = PKSampler([e.label for e in entries], bs, k=4, seed=opts.seed)
    steps = len(sampler) // world
    if steps == 0:
        raise UsageError(f"{len(entries)} training images make {len(sampler)} batches of {bs}, fewer than the "
                         f"{world} devices", hint="lower -o Train.batch_size or use fewer GPUs")
    return entries, can_eval, num_classes, bs, lr, sampler, steps


def prepare(opts: TrainOptions, spec: Any, prefix: Optional[Path], world: int, log: Log) -> RunParts:
    """Check the dataset, build the model (initial weights or the checkpoint ``prefix``), the optimiser
    and the data. Reads only: a failure here leaves the output folder as it was."""
    import paddle

    entries, can_eval, num_classes, bs, lr, sampler, steps = _dataset(opts, spec, world, log)
    if world > 1:
        device = paddle.device.get_device()  # the launcher has bound this rank to its GPU
    else:
        kind, ids = parse_devices(opts.device)
        device = f"gpu:{ids[0]}" if kind == "gpu" else "cpu"
        paddle.set_device(device)
    arch: Dict[str, Any] = dict(opts.arch or {})
    if spec.family.sized_by_input:
        arch.setdefault("img_size", opts.input_size)
    paddle.seed(opts.seed)
    model = build_model(spec.name, num_classes=num_classes, arch=arch)
    parts = RunParts(spec, entries, can_eval, num_classes, bs, lr, sampler, steps, device, arch, model,
                     recipe_for(spec.family.recipe, opts.input_size),
                     [dict(o) for o in inference_ops(spec.interpolation, opts.input_size)])
    saved = None
    if prefix is None:
        load_pretrained(model, spec, opts.pretrain_weight_path, log)
    else:
        saved = ckpt.load_checkpoint(prefix)
        check_resumable(prefix, saved["states"], {"model_name": spec.name, "num_classes": num_classes,
                                                  "batch_size": bs, "input_size": opts.input_size})
        model.set_state_dict(saved["params"])
        parts.saved_states = saved["states"]
    parts.schedule = build_schedule(lr, opts.epochs, opts.warmup_epochs, steps, log)
    parts.optimizer = paddle.optimizer.Momentum(learning_rate=parts.schedule, momentum=0.9,
                                                parameters=model.parameters(),
                                                weight_decay=paddle.regularizer.L2Decay(parts.recipe.weight_decay))
    if saved is not None:
        ckpt.restore_optimizer_state(parts.optimizer, model, saved["opt"])
    parts.step_model = train_step_layer(model)
    if world > 1:
        parts.step_model = paddle.DataParallel(parts.step_model)
    parts.data = TrainData(Path(opts.dataset_dir), entries, parts.recipe.first, parts.recipe.augment, opts.seed,
                           default_workers(opts))
    return parts
