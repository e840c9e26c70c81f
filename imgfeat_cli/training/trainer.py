"""``train``: metric-learning training of the feature models (PaddleClas GeneralRecognitionV2 recipe).

One :class:`Trainer` for CPU, one GPU, and each rank of a data-parallel run (rank 0 alone logs,
evaluates and writes; every rank draws the same PK batches and trains on its share: rank r takes
batches r, r + W, ...). Its steps: ``setup`` (every input checked, nothing written), ``begin``
(the output folder), then per epoch ``run_epoch``, ``evaluate`` and ``checkpoint``.

* Exact resume. Everything random is a pure function of the run's seed and its position: the
  checkpoint holds the PK sampler's generator as of the start of its epoch, each sample's
  augmentation generator is derived from ``(seed, epoch, step, position)``, and paddle's generator
  (dropout) is re-seeded every step. So any checkpoint (``latest/``, ``epoch_N/``, mid-epoch or at
  an epoch end) resumes to the weights an uninterrupted run would have produced, bit for bit.
* Nothing lost: a run being replaced (``--overwrite``) is kept aside until the new run's first
  checkpoint (see :mod:`.workspace`); a NaN/inf loss stops the run before anything is saved from it,
  and weights are checked (finite, and finite features on a few images) once before each save.
* Saves cost no more than they must: ``epoch_N/`` every ``save_interval`` epochs and ``best_model/``
  when the score improves carry an ``inference/`` export (PaddleX's layout promises one there);
  ``latest/`` (what ``--resume`` continues) comes with them, or alone, without an export, when
  :data:`LATEST_EVERY_S` passed since the last save; the last epoch saves everything.
* Ctrl-C: see :mod:`imgfeat_cli.common.interrupt`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from imgfeat_cli.common import config as cfgmod
from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import Interrupted
from imgfeat_cli.common.interrupt import RunSignals
from imgfeat_cli.models.registry import get_spec
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training import setup
from imgfeat_cli.training.options import (LOG_FILE, RESULT_FILE, StepInfo, TrainingDiverged, TrainMonitor,
                                          TrainOptions, TrainResult)
from imgfeat_cli.training.exports import StagedExport
from imgfeat_cli.training.memory import peak_rss
from imgfeat_cli.training.reporting import EpochMeter, TrainLog, step_line, write_result
from imgfeat_cli.training.workspace import Workspace

#: ``latest/`` is also written at the end of an epoch when this long has passed since the last save
#: (when ``save_interval`` leaves epochs unsaved, a crash loses at most this much work).
LATEST_EVERY_S = 600.0
#: images of the last batch whose features must be finite before a save (eval mode: a few suffice)
PROBE_IMAGES = 4


class Trainer:
    def __init__(self, opts: TrainOptions, monitor: Optional[TrainMonitor] = None,
                 stop: Optional[Callable[[int], bool]] = None, rank: int = 0, world: int = 1) -> None:
        """``stop(global_step)`` returning True acts like Ctrl-C after that step (tests use it)."""
        self.opts, self.stop_at, self.rank, self.world = opts, stop, rank, world
        self.lead = rank == 0
        self.root, self.out = Path(opts.dataset_dir), Path(opts.output)
        self.log = TrainLog((monitor or TrainMonitor()) if self.lead else TrainMonitor())
        self.signals = RunSignals(self.log)
        self.workspace = Workspace(self.out)
        self.state: Dict[str, Any] = {"epoch": 1, "step": 0, "global_step": 0, "epoch_sampler": None,
                                      "history": [], "best_score": None, "best_epoch": None}
        self.resumed_from: Optional[str] = None
        self.saved_at: Optional[str] = None  # where the last complete checkpoint of this run stands
        self._probe: Any = None  # a few images of the last batch: their features must be finite before a save
        self._checked_at: Optional[int] = None  # the global step whose weights were last found finite
        self._saved_clock = time.monotonic()
        self.export: Any = None  # StagedExport, once the model is known
        self.started = time.perf_counter()

    # the run --------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        with self.signals.installed(), self.workspace:
            try:
                self.setup()
                with self.signals.protected():
                    self.begin()
                self.signals.graceful = True
                stopped = self.train()
            except BaseException as exc:
                with self.signals.protected(abort_on_exit=False):
                    self.workspace.restore()
                    if self.lead and self.export is not None:
                        self.export.clear()  # an export staged for a checkpoint that was not written
                if self._is_abort(exc):
                    raise self._aborted() from None
                raise
        if stopped is not None:
            raise stopped
        return self.result()

    def _is_abort(self, exc: BaseException) -> bool:
        """Ctrl-C, also when paddle's C++ code turned it into a SystemError."""
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            return True
        cause = exc.__cause__ or exc.__context__
        return isinstance(exc, SystemError) and (isinstance(cause, KeyboardInterrupt) or self.signals.aborted)

    def _aborted(self) -> Interrupted:
        if not self.signals.graceful:
            return Interrupted("training interrupted during setup; nothing was written")
        latest = self.out / "latest"
        if self.lead and self.saved_at and self.workspace.committed:
            return Interrupted(f"training aborted {self._position()}; the last complete checkpoint is {latest} "
                               f"({self.saved_at})", hint=self._resume_hint())
        return Interrupted(f"training aborted {self._position()}, before its first checkpoint"
                           + ("; the previous run is back in place" if self.workspace.restored else ""))

    def _position(self) -> str:
        epoch, step = self.state["epoch"], self.state["step"]
        return f"after epoch {epoch - 1}" if step == 0 and epoch > 1 else f"at epoch {epoch}, step {step}"

    def _resume_hint(self) -> str:
        # the run's config.yaml holds every setting it was started with: a resume must repeat them
        return f"continue with: imgfeat train -c {self.out / 'config.yaml'} --resume"

    # setup: everything checked, nothing written ----------------------------------------------------
    def setup(self) -> None:
        if self.world == 1:  # data-parallel ranks run on the GPU the launcher bound them to
            setup.check_device(self.opts)
        self.spec = get_spec(self.opts.model_name)
        prefix = self.workspace.plan(self.opts) if self.lead else None
        if self.world > 1:
            import paddle.distributed as dist

            holder = [str(prefix) if prefix else None]
            dist.broadcast_object_list(holder, src=0)
            prefix = Path(holder[0]) if holder[0] else None
        self.p = setup.prepare(self.opts, self.spec, prefix, self.world, self.log)
        self.export = StagedExport(self.out, self.spec.name, self.p.arch, self.p.ops)
        if prefix is not None:
            saved = self.p.saved_states or {}
            self.state.update({k: saved[k] for k in self.state if k in saved})
            self.resumed_from = str(prefix)
            if not self.workspace.replacing:  # continuing OUT/latest: it stays the last complete checkpoint
                self.saved_at = self._position()
            self.log(f"resuming from {prefix}: epoch {self.state['epoch']}, step {self.state['step']} "
                     f"of {self.p.steps}")

    def begin(self) -> None:
        """The output folder: a replaced run moved aside, train.log and config.yaml started."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.lead:
            return
        self.workspace.begin()
        self.log.open(self.out / LOG_FILE)
        fsutil.write_text(self.out / "config.yaml", cfgmod.dump_yaml(self._run_config()),
                          keep_backup=not self.workspace.replacing)
        self.export.clear()

    def _run_config(self) -> Dict[str, Any]:
        """The resolved config with the run's own settings filled in (also when started from Python
        with no config), so ``imgfeat train -c OUT/config.yaml --resume`` repeats them exactly."""
        o = self.opts
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in o.config.items()}
        cfg.setdefault("Global", {}).update(model=o.model_name, device=o.device,
                                            dataset_dir=str(Path(o.dataset_dir).resolve()), output=str(self.out.resolve()))
        cfg.setdefault("Train", {}).update(
            num_classes=self.p.num_classes, batch_size=self.p.batch_size, learning_rate=self.p.learning_rate,
            epochs_iters=o.epochs, warmup_steps=o.warmup_epochs, pretrain_weight_path=o.pretrain_weight_path,
            input_size=o.input_size, seed=o.seed, log_interval=o.log_interval, eval_interval=o.eval_interval,
            save_interval=o.save_interval, eval_batch_size=o.eval_batch_size, resume_path=None)
        return cfg

    # training ---------------------------------------------------------------------------------------
    def train(self) -> Optional[Interrupted]:
        """All remaining epochs; returns the Interrupted to raise after a graceful Ctrl-C."""
        opts = self.opts
        p, gpus = self.p, f" x {self.world} GPUs" if self.world > 1 else ""
        where = f"device {opts.device}" if p.memory is None else (
            f"{opts.cpu_threads} CPU threads, memory about {p.memory.estimate_bytes / 1e9:.1f} GB"
            + (f" of {p.memory.available_bytes / 1e9:.1f} GB available" if p.memory.available_bytes else "")
            + (" (freed memory kept)" if p.memory.keep_freed else ""))
        self.log(f"training {self.spec.name} on {len(p.entries)} images / {p.num_classes} classes: {opts.epochs} "
                 f"epochs x {p.steps} steps of {p.batch_size}{gpus}, lr {p.learning_rate}, "
                 f"{p.schedule_plan.describe(opts.warmup_epochs)}, input {opts.input_size}, {where}")
        if not self.p.can_eval:
            self.log("warning: the dataset has no gallery.txt and query.txt: no evaluation; best_model is the last "
                     "saved epoch")
        self.p.model.train()
        while self.state["epoch"] <= opts.epochs:
            epoch = self.state["epoch"]
            if not self.run_epoch():
                return self._stop_mid_epoch()
            self.end_epoch()
            if self.signals.stop_requested and epoch < opts.epochs:
                return Interrupted(f"training interrupted after epoch {epoch}", hint=self._resume_hint())
        return None

    def _epoch_batches(self) -> List[List[int]]:
        """This rank's batches of the current epoch, drawn from the sampler state the epoch starts with."""
        if self.state["epoch_sampler"] is None:  # a fresh run, or a checkpoint from before imgfeat 0.2
            for _ in range(self.state["epoch"] - 1):
                list(self.p.sampler)
            self.state["epoch_sampler"] = self.p.sampler.state_dict()
        else:
            self.p.sampler.set_state_dict(self.state["epoch_sampler"])
        return list(self.p.sampler)[self.rank::self.world][:self.p.steps]

    def run_epoch(self) -> bool:
        """The steps left in the current epoch; False when a stop was requested before its end."""
        epoch, batches = self.state["epoch"], self._epoch_batches()
        self.meter = EpochMeter(self.world)
        for step, images, labels in self.p.data.batches(batches, epoch, start=self.state["step"]):
            self.train_step(epoch, step, images, labels)
            if self.stop_at is not None and self.stop_at(self.state["global_step"]):
                self.signals.request_stop()
            if self.signals.stop_requested:
                break
        return self.state["step"] >= self.p.steps

    def train_step(self, epoch: int, step: int, images: Any, labels: Any) -> None:
        import paddle

        paddle.seed(self.opts.seed * 1_000_003 + self.state["global_step"])
        x, y = paddle.to_tensor(images), paddle.to_tensor(labels)
        self._probe = x[:PROBE_IMAGES] if self.lead else None
        loss, parts = self.p.recipe.loss(self.p.step_model(x, y), y)
        value = float(loss)
        if setup.on_any_rank(not math.isfinite(value), self.world):
            self._diverged(f"the loss is {value} at epoch {epoch}, step {step + 1} of {self.p.steps}")
        loss.backward()
        self.p.optimizer.step()
        self.p.optimizer.clear_grad()
        lr_now = self.p.optimizer.get_lr()
        self.p.schedule.step()
        self.state["step"], self.state["global_step"] = step + 1, self.state["global_step"] + 1
        values = {k: float(v) for k, v in parts.items()}
        self.meter.add(len(images), {"loss": value, **values}, lr_now)
        info = StepInfo(epoch, self.opts.epochs, step + 1, self.p.steps, self.state["global_step"],
                        self.opts.epochs * self.p.steps, value, values, lr_now, self.meter.images_per_s(),
                        self.p.batch_size)
        if self.lead:
            self.log.monitor.step(info)
            if (step + 1) % self.opts.log_interval == 0:
                self.log(step_line(info), level="step")

    def _diverged(self, what: str) -> None:
        kept = (f"the last complete checkpoint is {self.out / 'latest'} ({self.saved_at})" if self.saved_at
                else "nothing was saved from this run")
        raise TrainingDiverged(f"training diverged: {what}; {kept}",
                               hint=f"lower -o Train.learning_rate (it is {self.p.learning_rate}) or check the data")

    def _stop_mid_epoch(self) -> Interrupted:
        epoch, step = self.state["epoch"], self.state["step"]
        if self.lead:
            self.checkpoint(["latest"], done=False)
            self.log(f"interrupted at epoch {epoch} step {step}: saved {self.out / 'latest'}")
        return Interrupted(f"training interrupted at epoch {epoch}, step {step} of {self.p.steps}",
                           hint=self._resume_hint())

    def end_epoch(self) -> None:
        """Close the epoch: record it, evaluate when due, save what is due (see the module's notes)."""
        opts, epoch = self.opts, self.state["epoch"]
        last = epoch == opts.epochs
        record = self.meter.record(epoch, self.p.optimizer.get_lr())
        # the sampler has drawn this epoch's batches: its state now is where the next epoch starts
        self.state.update(epoch=epoch + 1, step=0, epoch_sampler=self.p.sampler.state_dict())
        due_eval = self.p.can_eval and (epoch % opts.eval_interval == 0 or last)
        due_save = epoch % opts.save_interval == 0 or last
        improved = False
        if self.lead and due_eval:
            improved = self.evaluate(epoch, record)
        elif self.lead and not self.p.can_eval and due_save:  # no evaluation: the best is the last saved
            self.state["best_epoch"], improved = epoch, True
        self.state["history"] = self.state["history"] + [record]
        if self.lead:
            names = ([f"epoch_{epoch}"] if due_save else []) + (["best_model"] if improved else [])
            if names or self.signals.stop_requested or time.monotonic() - self._saved_clock >= LATEST_EVERY_S:
                names.append("latest")
            if names:
                self.checkpoint(names, done=last)
            self.log(f"epoch {epoch}/{opts.epochs} done in {record['seconds']:.1f} s ({record['images_per_s']:.1f} "
                     f"img/s), loss {record.get('loss', float('nan')):.4f}"
                     + (f"; saved {', '.join(names)}" if names else ""))
        if self.world > 1:
            import paddle.distributed as dist

            dist.barrier()

    # evaluation and checkpoints --------------------------------------------------------------------
    def evaluate(self, epoch: int, record: Dict[str, Any]) -> bool:
        """Score the exported model with paddle.inference (:data:`checkpoint.SCORING_BACKEND`): several
        times faster than a dygraph pass, and the recorded score is exactly what ``eval --weights`` of
        the checkpoint (which scores that folder with that engine) gets. Returns whether recall1 improved."""
        from imgfeat_cli.models.model import EmbeddingModel
        from imgfeat_cli.retrieval.evaluate import eval_dataset

        self._check_weights(f"epoch {epoch}")
        with self.signals.protected():
            staged = self.export.stage(self.p.model)
        fm = EmbeddingModel.from_inference_dir(str(staged), name=self.spec.name, device=self.p.device,
                                               backend=ckpt.SCORING_BACKEND)
        try:
            metrics = eval_dataset(str(self.root), fm, (1, 5), False, self.opts.eval_batch_size,
                                   self.log.monitor.progress).metrics()
        finally:
            self.p.model.train()
        record["metrics"] = metrics
        st = self.state
        improved = st["best_score"] is None or metrics["recall1"] > st["best_score"]
        if improved:
            st["best_score"], st["best_epoch"] = metrics["recall1"], epoch
        self.log(f"epoch {epoch} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                 + (" (best)" if improved else f" (best {st['best_score']:.4f} at epoch {st['best_epoch']})"))
        return improved

    def _check_weights(self, where: str) -> None:
        """Weights, and the features they give on a few images of the last batch, must be finite
        before anything is evaluated, exported or saved; checked once per state of the weights."""
        from imgfeat_cli.models.weights import nonfinite, nonfinite_features

        if self._checked_at == self.state["global_step"]:
            return
        bad = nonfinite(self.p.model.state_dict())
        if bad:
            self._diverged(f"{len(bad)} weight tensors hold NaN or infinity after {where} (e.g. {bad[0]})")
        if self._probe is not None and nonfinite_features(self.p.model, self._probe):
            self._diverged(f"the model gives NaN or infinite features after {where}")
        self._checked_at = self.state["global_step"]

    def checkpoint(self, names: List[str], done: bool) -> None:
        """Save ``names[0]`` (copies for the rest) and train_result.json; Ctrl-C cannot tear them.
        ``names[0]`` carries an inference export unless it is ``latest`` mid-run."""
        self._check_weights(f"step {self.state['global_step']}")
        p = self.p
        states = {**self.state, "model_name": self.spec.name, "num_classes": p.num_classes,
                  "batch_size": p.batch_size, "input_size": self.opts.input_size, "seed": self.opts.seed,
                  "epochs": self.opts.epochs, "steps_per_epoch": p.steps}
        opt_state = ckpt.portable_optimizer_state(p.optimizer, p.model)
        with self.signals.protected():
            export = None if names[0] == "latest" and not done else (lambda dest: self.export.place(p.model, dest))
            ckpt.save_checkpoint(self.out, names[0], p.model.state_dict(), opt_state, states, export,
                                 check=self.signals.check)
            for other in names[1:]:
                self.signals.check()
                ckpt.copy_checkpoint(self.out, names[0], other)
            write_result(self.out, self.spec.name, self.state, done, self._run_info())
            self.workspace.commit()
            self.saved_at = self._position()
            self._saved_clock = time.monotonic()

    def _run_info(self) -> Dict[str, Any]:
        return {"epochs": self.opts.epochs, "steps_per_epoch": self.p.steps, "batch_size": self.p.batch_size,
                "learning_rate": self.p.learning_rate, "num_classes": self.p.num_classes, "devices": self.world,
                "cpu_threads": self.opts.cpu_threads, "memory": self._memory()}

    def _memory(self) -> Optional[Dict[str, Any]]:
        """The memory estimate, what was available, and the peak so far (CPU runs)."""
        if self.p.memory is None:
            return None
        self.p.memory.peak_rss_bytes = peak_rss()
        return self.p.memory.to_dict()

    def result(self) -> TrainResult:
        st = self.state
        return TrainResult(self.spec.name, str(self.out), st["epoch"] - 1, self.opts.epochs, self.p.steps,
                           self.p.batch_size, self.p.learning_rate, self.p.num_classes, st["best_epoch"],
                           st["best_score"], st["history"],
                           round(time.perf_counter() - self.started, 3), self.resumed_from,
                           str(self.out / "best_model"), str(self.out / RESULT_FILE), self._memory())
