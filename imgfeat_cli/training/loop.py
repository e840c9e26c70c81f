"""The training loop of one process (CPU, one GPU, or one rank of a data-parallel run).

Rank 0 alone logs, evaluates and writes checkpoints; every rank draws the same PK batches from the
same seeded sampler and trains on its own share of them (rank r takes batches r, r + W, ...).
"""
from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from imgfeat_cli.common import config as cfgmod
from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DatasetError, Interrupted, UsageError
from imgfeat_cli.models.registry import build_model, get_spec, inference_ops
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training.data import TrainData, load_split
from imgfeat_cli.training.recipe import recipe_for
from imgfeat_cli.training.sampler import PKSampler
from imgfeat_cli.training.trainer import (LOG_FILE, RESULT_FILE, StepInfo, Timer, TrainMonitor, TrainOptions,
                                          TrainResult, _StopFlag, check_labels, default_workers, parse_devices,
                                          prepare_output)


class _Log:
    """train.log (appended, so a resumed run continues it) plus the monitor."""

    def __init__(self, path: Optional[Path], monitor: TrainMonitor) -> None:
        self.path, self.monitor = path, monitor

    def __call__(self, message: str, level: str = "epoch") -> None:
        if self.path is not None:
            stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"[{stamp}] {message}\n")
        self.monitor.log(message, level)


def _build_schedule(lr: float, epochs: int, warmup_epochs: int, steps: int, log: _Log) -> Any:
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


def _load_pretrained(model: Any, spec: Any, path: Optional[str], log: _Log) -> Optional[str]:
    from imgfeat_cli.models.weights import load_into, read_state_dict

    if path is not None and str(path).strip().lower() == "none":
        log("initialisation: random (Train.pretrain_weight_path=none)")
        return None
    if path is None:
        from imgfeat_cli.models.hub import ensure_model_file
        from imgfeat_cli.models.registry import DEFAULT_TAG

        kind = spec.family.start_weights
        path = str(ensure_model_file(spec, kind, DEFAULT_TAG))
    report = load_into(model, read_state_dict(path), path)
    skipped = [k for k, _, _ in report.mismatched] + report.missing
    log(f"initialisation: {report.loaded} tensors from {path}"
        + (f"; new (not loaded): {', '.join(sorted(set(skipped))[:4])}" if skipped else ""))
    return path


def _train_step_layer(model: Any) -> Any:
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


def train_process(opts: TrainOptions, monitor: TrainMonitor, stop: Optional[Callable[[int], bool]] = None,
                  rank: int = 0, world: int = 1) -> TrainResult:
    import paddle

    root, out = Path(opts.dataset_dir), Path(opts.output)
    if not root.is_dir():
        raise UsageError(f"dataset folder {root} does not exist", hint="pass --dataset DIR (a ShiTuRecDataset)")
    spec = get_spec(opts.model_name)
    entries = load_split(root, "train")
    if not entries:
        raise DatasetError(f"{root / 'train.txt'} lists no images")
    can_eval = bool(load_split(root, "gallery", required=False)) and bool(load_split(root, "query", required=False))
    num_classes = check_labels(entries, opts.num_classes, root)
    bs = opts.batch_size or int(spec.train_defaults["batch_size"])
    lr = opts.learning_rate or float(spec.train_defaults["learning_rate"])
    sampler = PKSampler([e.label for e in entries], bs, k=4, seed=opts.seed)
    steps = len(sampler) // world
    if steps == 0:
        raise UsageError(f"{len(entries)} training images make {len(sampler)} batches of {bs}, fewer than the "
                         f"{world} devices", hint="lower -o Train.batch_size or use fewer GPUs")
    prefix = prepare_output(opts) if rank == 0 else None
    if world > 1:
        import paddle.distributed as dist

        holder = [str(prefix) if prefix else None]
        dist.broadcast_object_list(holder, src=0)
        prefix = Path(holder[0]) if holder[0] else None
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / LOG_FILE if rank == 0 else None, monitor if rank == 0 else TrainMonitor())

    kind, ids = parse_devices(opts.device)
    if world > 1:
        device = paddle.device.get_device()  # the launcher has bound this rank to its GPU
    else:
        device = f"gpu:{ids[0]}" if kind == "gpu" else "cpu"
        paddle.set_device(device)
    arch: Dict[str, Any] = dict(opts.arch or {})
    if spec.family.sized_by_input:
        arch.setdefault("img_size", opts.input_size)
    paddle.seed(opts.seed)
    model = build_model(spec.name, num_classes=num_classes, arch=arch)
    recipe = recipe_for(spec.family.recipe, opts.input_size)
    ops = [dict(o) for o in inference_ops(spec.interpolation, opts.input_size)]

    state: Dict[str, Any] = {"epoch": 1, "step": 0, "global_step": 0, "epoch_sampler": None, "history": [],
                             "best_score": None, "best_epoch": None}
    resumed_from = None
    if prefix is None:
        _load_pretrained(model, spec, opts.pretrain_weight_path, log)
    else:
        saved = ckpt.load_checkpoint(prefix)
        st = saved["states"]
        want = {"model_name": spec.name, "num_classes": num_classes, "batch_size": bs, "input_size": opts.input_size}
        diff = [f"{k} {st.get(k)!r} -> {v!r}" for k, v in want.items() if st.get(k) != v]
        if diff:
            raise UsageError(f"cannot resume {prefix}: settings differ from the checkpoint ({'; '.join(diff)})",
                             hint="resume with the checkpoint's settings, or start a new run in another --output")
        model.set_state_dict(saved["params"])
        state.update({k: st[k] for k in state if k in st})
        resumed_from = str(prefix)
        log(f"resuming from {prefix}: epoch {state['epoch']}, step {state['step']} of {steps}")
    if rank == 0:
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in opts.config.items()}
        cfg.setdefault("Train", {}).update(num_classes=num_classes, batch_size=bs, learning_rate=lr)
        fsutil.write_text(out / "config.yaml", cfgmod.dump_yaml(cfg), keep_backup=prefix is not None)

    schedule = _build_schedule(lr, opts.epochs, opts.warmup_epochs, steps, log)
    optimizer = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=model.parameters(),
                                          weight_decay=paddle.regularizer.L2Decay(recipe.weight_decay))
    if prefix is not None:
        ckpt.restore_optimizer_state(optimizer, model, saved["opt"])
    step_model = _train_step_layer(model)
    if world > 1:
        step_model = paddle.DataParallel(step_model)
    data = TrainData(root, entries, recipe.first, recipe.augment, opts.seed, default_workers(opts))

    def states() -> Dict[str, Any]:
        return {**state, "model_name": spec.name, "num_classes": num_classes, "batch_size": bs,
                "input_size": opts.input_size, "seed": opts.seed, "epochs": opts.epochs}

    staged = out / ".staged-inference"  # this epoch's export: evaluated, then moved into the checkpoint
    if rank == 0:
        shutil.rmtree(staged, ignore_errors=True)  # left by a crashed run: never reuse a stale export

    def export_now() -> Path:
        from imgfeat_cli.models.export import export_layer

        shutil.rmtree(staged, ignore_errors=True)
        params = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
        layer = build_model(spec.name, num_classes=None, arch=arch)
        layer.set_state_dict(params)
        export_layer(spec.name, layer, str(staged), ops)
        return staged

    def place_export(dest: Path) -> None:
        if not staged.is_dir():
            export_now()
        shutil.move(str(staged), str(dest))

    def save(names: List[str]) -> None:
        ckpt.save_checkpoint(out, names[0], model.state_dict(), ckpt.portable_optimizer_state(optimizer, model),
                             states(), place_export)
        for other in names[1:]:
            ckpt.copy_checkpoint(out, names[0], other)

    def evaluate() -> Dict[str, float]:
        """Score the exported model (paddle.inference): several times faster than a dygraph pass,
        and the recorded score is exactly what the saved inference/ folder gets."""
        from imgfeat_cli.retrieval.evaluate import eval_dataset
        from imgfeat_cli.models.model import EmbeddingModel

        fm = EmbeddingModel.from_inference_dir(str(export_now()), name=spec.name, device=device)
        try:
            return eval_dataset(str(root), fm, (1, 5), False, opts.eval_batch_size, monitor.progress).metrics()
        finally:
            model.train()

    total = opts.epochs * steps
    run_info = {"epochs": opts.epochs, "steps_per_epoch": steps, "batch_size": bs, "learning_rate": lr,
                "num_classes": num_classes, "devices": world}
    log(f"training {spec.name} on {len(entries)} images / {num_classes} classes: {opts.epochs} epochs x {steps} "
        f"steps of {bs}{f' x {world} GPUs' if world > 1 else ''}, lr {lr}, warm-up {opts.warmup_epochs} epochs, "
        f"input {opts.input_size}, device {opts.device}")
    if not can_eval:
        log("warning: gallery.txt/query.txt missing or empty: no evaluation; best_model is the last epoch")
    flag, timer = _StopFlag(), Timer()
    model.train()
    with flag.installed(monitor):
        while state["epoch"] <= opts.epochs:
            epoch = state["epoch"]
            if state["step"] == 0 or state["epoch_sampler"] is None:
                state["epoch_sampler"] = sampler.state_dict()
            else:
                sampler.set_state_dict(state["epoch_sampler"])
            batches = list(sampler)[rank::world][:steps]
            ep_timer, seen, n_steps, sums = Timer(), 0, 0, {}
            interrupted = False
            for step, images, labels in data.batches(batches, epoch, start=state["step"]):
                paddle.seed(opts.seed * 1_000_003 + state["global_step"])
                x = paddle.to_tensor(images)
                y = paddle.to_tensor(labels)
                loss, parts = recipe.loss(step_model(x, y), y)
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                lr_now = optimizer.get_lr()
                schedule.step()
                state["step"], state["global_step"] = step + 1, state["global_step"] + 1
                seen += len(images)
                n_steps += 1
                values = {k: float(v) for k, v in parts.items()}
                for k, v in {"loss": float(loss), **values}.items():
                    sums[k] = sums.get(k, 0.0) + v
                info = StepInfo(epoch, opts.epochs, step + 1, steps, state["global_step"], total, float(loss), values,
                                lr_now, seen * world / max(ep_timer.seconds(), 1e-9))
                if rank == 0:
                    monitor.step(info)
                if rank == 0 and (step + 1) % opts.log_interval == 0:
                    log(f"epoch {epoch}/{opts.epochs} step {step + 1}/{steps} loss {info.loss:.4f} "
                        + " ".join(f"{k} {v:.4f}" for k, v in values.items())
                        + f" lr {lr_now:.6f} {info.images_per_s:.1f} img/s", level="step")
                if stop is not None and stop(state["global_step"]):
                    flag.requested = True
                if flag.requested:
                    interrupted = True
                    break
            if interrupted and state["step"] < steps:
                if rank == 0:
                    save(["latest"])
                    _write_result(out, spec.name, state, False, run_info)
                    log(f"interrupted at epoch {epoch} step {state['step']}: saved {out / 'latest'}")
                raise Interrupted(f"training interrupted at epoch {epoch}, step {state['step']} of {steps}",
                                  hint=f"continue with: imgfeat train --dataset {root} --output {out} --resume")
            record: Dict[str, Any] = {"epoch": epoch, "seconds": round(ep_timer.seconds(), 3),
                                      "images_per_s": round(seen * world / max(ep_timer.seconds(), 1e-9), 2),
                                      "lr": optimizer.get_lr(),
                                      **{k: round(v / max(1, n_steps), 6) for k, v in sums.items()}}
            state["epoch"], state["step"], state["epoch_sampler"] = epoch + 1, 0, None
            last = epoch == opts.epochs
            improved = False
            if rank == 0 and can_eval and (epoch % opts.eval_interval == 0 or last):
                metrics = evaluate()
                record["metrics"] = metrics
                if state["best_score"] is None or metrics["recall1"] > state["best_score"]:
                    state["best_score"], state["best_epoch"], improved = metrics["recall1"], epoch, True
                log(f"epoch {epoch} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    + (" (best)" if improved else f" (best {state['best_score']:.4f} at epoch {state['best_epoch']})"))
            elif rank == 0 and not can_eval:
                state["best_epoch"], improved = epoch, True
            state["history"] = state["history"] + [record]
            if rank == 0:
                names = ([f"epoch_{epoch}"] if epoch % opts.save_interval == 0 or last else []) + ["latest"]
                names += ["best_model"] if improved else []
                save(names)
                _write_result(out, spec.name, state, last, run_info)
                log(f"epoch {epoch}/{opts.epochs} done in {record['seconds']:.1f} s ({record['images_per_s']:.1f} img/s)"
                    f", loss {record.get('loss', float('nan')):.4f}; saved {', '.join(names)}")
            if world > 1:
                import paddle.distributed as dist

                dist.barrier()
            if flag.requested and not last:
                raise Interrupted(f"training interrupted after epoch {epoch}",
                                  hint=f"continue with: imgfeat train --dataset {root} --output {out} --resume")
    return TrainResult(spec.name, str(out), state["epoch"] - 1, opts.epochs, steps, bs, lr, num_classes,
                       state["best_epoch"], state["best_score"], state["history"], round(timer.seconds(), 3),
                       resumed_from, str(out / "best_model"), str(out / RESULT_FILE))


def _write_result(out: Path, model_name: str, state: Dict[str, Any], done: bool, run: Dict[str, Any]) -> None:
    """``train_result.json`` in PaddleX's shape: ``best`` and ``last_1``.. (newest saved epochs first)."""
    scores = {r["epoch"]: (r.get("metrics") or {}).get("recall1") for r in state["history"]}
    epochs = sorted((int(p.name.split("_", 1)[1]) for p in out.glob("epoch_*") if p.name.split("_", 1)[1].isdigit()),
                    reverse=True)
    models: Dict[str, Any] = {}
    for i, ep in enumerate(epochs[:5], start=1):
        models[f"last_{i}"] = ckpt.model_entry(out, f"epoch_{ep}", scores.get(ep))
    if (out / "best_model").is_dir():
        models["best"] = ckpt.model_entry(out, "best_model", state["best_score"])
    doc = {"model_name": model_name, "done_flag": done, "config": "config.yaml", "train_log": LOG_FILE,
           "visualdl_log": "", "label_dict": "", "models": models,
           "best_epoch": state["best_epoch"], "run": run, "history": state["history"]}
    fsutil.write_json(out / RESULT_FILE, doc)
