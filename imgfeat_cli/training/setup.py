"""The parts of a run, each checked before the output folder is touched: devices, the dataset's
plan (:mod:`.plan`), the memory it needs (:mod:`.memory`), the model with its initial weights (a
pretrained file, or the checkpoint to resume), the optimiser with its schedule, and the training data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.system import cpu_count, parse_device
from imgfeat_cli.models.registry import build_model, inference_ops
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training.data import DEFAULT_CACHE_BYTES, TrainData
from imgfeat_cli.training.memory import MemoryPlan, keep_freed_memory, plan_memory
from imgfeat_cli.training.options import TrainOptions
from imgfeat_cli.training.plan import DatasetPlan, plan_dataset
from imgfeat_cli.training.recipe import Recipe, recipe_for
from imgfeat_cli.training.schedule import SchedulePlan, build_schedule, plan_schedule

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
    if "steps_per_epoch" in want and "steps_per_epoch" not in states:
        raise UsageError(f"cannot resume {prefix}: it was written by an earlier imgfeat, whose epochs had "
                         "N // batch steps (now ceil(N / batch), as PaddleClas) and whose warm-up started at 0",
                         hint=f"start a new run (-o Train.pretrain_weight_path={prefix}.pdparams keeps its weights)")
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


def align_with_paddleclas(model: Any) -> int:
    """What PaddleX's PP-ShiTuV2_rec config declares on parameters: backbone BatchNorm scales and
    shifts get no weight decay (``ConvBNLayer``'s ``L2Decay(0.0)``; the neck's BatchNorm keeps the
    global decay), and the classifier has no bias (``bias_attr: False``; imgfeat's model keeps a
    ``head.fc.bias`` for the official checkpoints' layout, held here at its value, 0 for a new head).
    Returns how many tensors were exempted from decay."""
    import paddle.nn as nn
    from paddle.regularizer import L2Decay

    exempt = 0
    for _, layer in model.backbone.named_sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            for param in (layer.weight, layer.bias):
                param.regularizer = L2Decay(0.0)
                exempt += 1
    if model.head is not None and model.head.fc.bias is not None:
        model.head.fc.bias.stop_gradient = True
    return exempt


def make_optimizer(model: Any, recipe: Recipe, schedule: Any) -> Any:
    """The recipe's optimiser: Momentum 0.9 with L2 decay, as PaddleClas builds it (for PP-ShiTuV2
    with the parameter settings of :func:`align_with_paddleclas`)."""
    import paddle

    if recipe.family == "PP-ShiTuV2":
        align_with_paddleclas(model)
    trained = [p for p in model.parameters() if not p.stop_gradient]
    return paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=trained,
                                     weight_decay=paddle.regularizer.L2Decay(recipe.weight_decay))


@dataclass
class RunParts:
    """What :func:`prepare` builds: everything a :class:`~imgfeat_cli.training.trainer.Trainer` trains with."""

    spec: Any
    dataset: DatasetPlan
    learning_rate: float
    memory: Optional[MemoryPlan]  # CPU runs
    schedule_plan: SchedulePlan
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

    # the dataset plan's figures, as the trainer reads them
    entries = property(lambda self: self.dataset.entries)
    can_eval = property(lambda self: self.dataset.can_eval)
    num_classes = property(lambda self: self.dataset.num_classes)
    batch_size = property(lambda self: self.dataset.batch_size)
    sampler = property(lambda self: self.dataset.sampler)
    steps = property(lambda self: self.dataset.steps)


def _device(opts: TrainOptions, world: int) -> str:
    import paddle

    if world > 1:
        return paddle.device.get_device()  # the launcher has bound this rank to its GPU
    kind, ids = parse_devices(opts.device)
    device = f"gpu:{ids[0]}" if kind == "gpu" else "cpu"
    paddle.set_device(device)
    return device


def prepare(opts: TrainOptions, spec: Any, prefix: Optional[Path], world: int, log: Log) -> RunParts:
    """Check the dataset and the memory, build the model (initial weights or the checkpoint
    ``prefix``), the optimiser and the data. Reads only: a failure here leaves the output folder as it was."""
    import paddle

    on_gpu = parse_device(opts.device).is_gpu
    dataset = plan_dataset(opts, int(spec.train_defaults["batch_size"]), on_gpu, world, log)
    memory = None if on_gpu else plan_memory(spec.name, dataset.batch_size, opts.input_size, dataset.num_classes,
                                             DEFAULT_CACHE_BYTES, dataset.batch_chosen)
    if memory is not None and memory.keep_freed:
        memory.keep_freed = keep_freed_memory()
    lr = opts.learning_rate or float(spec.train_defaults["learning_rate"])
    device = _device(opts, world)
    arch: Dict[str, Any] = dict(opts.arch or {})
    if spec.family.sized_by_input:
        arch.setdefault("img_size", opts.input_size)
    paddle.seed(opts.seed)
    model = build_model(spec.name, num_classes=dataset.num_classes, arch=arch)
    parts = RunParts(spec, dataset, lr, memory, plan_schedule(opts.epochs, opts.warmup_epochs, dataset.steps),
                     device, arch, model, recipe_for(spec.family.recipe, opts.input_size),
                     [dict(o) for o in inference_ops(spec.interpolation, opts.input_size)])
    saved = None
    if prefix is None:
        load_pretrained(model, spec, opts.pretrain_weight_path, log)
    else:
        saved = ckpt.load_checkpoint(prefix)
        check_resumable(prefix, saved["states"], {"model_name": spec.name, "num_classes": dataset.num_classes,
                                                  "batch_size": dataset.batch_size, "input_size": opts.input_size})
        check_resumable(prefix, saved["states"], {"steps_per_epoch": dataset.steps})  # the data changed
        model.set_state_dict(saved["params"])
        parts.saved_states = saved["states"]
    parts.schedule = build_schedule(lr, parts.schedule_plan)
    parts.optimizer = make_optimizer(model, parts.recipe, parts.schedule)
    if saved is not None:
        ckpt.restore_optimizer_state(parts.optimizer, model, saved["opt"])
    parts.step_model = train_step_layer(model)
    if world > 1:
        parts.step_model = paddle.DataParallel(parts.step_model)
    parts.data = TrainData(Path(opts.dataset_dir), dataset.entries, dataset.labels, parts.recipe.first,
                           parts.recipe.augment, opts.seed, default_workers(opts),
                           memory.cache_bytes if memory else DEFAULT_CACHE_BYTES)
    return parts
