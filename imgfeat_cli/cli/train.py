"""``imgfeat train``: metric-learning training with evaluation, checkpoints and exact resume."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (ConfigOpt, DatasetOpt, DeviceOpt, JsonOpt, ModelOpt, Output, OutDirOpt, OutputAliasOpt,
                                     QuietOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import OUTPUT, PERFORMANCE, ImgfeatCommand, examples, override_opt, shown_default

EXAMPLES = examples("imgfeat train -d dataset/ --epochs 10 --out runs/shitu",
                    "imgfeat train -d dataset/ --out runs/shitu --resume",
                    "imgfeat train -c train.yaml -o Train.learning_rate=0.005 --device gpu")


def _monitor(out: Output, bar: Any, lines: Any = None) -> Any:
    """A TrainMonitor that drives one rich bar (steps of the whole run) and prints epoch lines;
    without a terminal, ``lines`` (``Output.progress``) gets the steps for periodic lines."""
    from imgfeat_cli.training.options import StepInfo, TrainMonitor

    class CliMonitor(TrainMonitor):
        task = None

        def step(self, info: StepInfo) -> None:
            if bar is None:
                if lines is not None:
                    lines("training", info.global_step, info.total_steps,
                          f"epoch {info.epoch}/{info.epochs}, loss {info.loss:.3f}, lr {info.lr:.2e}, "
                          f"{info.images_per_s:.1f} images/s")
                return
            parts = " ".join(f"{k} {v:.3f}" for k, v in info.parts.items())
            desc = f"epoch {info.epoch}/{info.epochs} step {info.step}/{info.steps}"
            stats = f"loss {info.loss:.3f} ({parts}) lr {info.lr:.2e} {info.images_per_s:.1f} img/s"
            if self.task is None:
                self.task = bar.add_task(desc, total=info.total_steps, stats=stats)
            bar.update(self.task, completed=info.global_step, description=desc, stats=stats)

        def log(self, message: str, level: str = "epoch") -> None:
            if level == "step":
                return
            if bar is not None:
                bar.console.print(escape(message))
            else:
                out.log(escape(message))

        def progress(self, task: str, done: int, total: Optional[int]) -> None:
            if bar is not None and self.task is not None:
                bar.update(self.task, stats=f"evaluating: {task} {done}/{total or '?'}")

    return CliMonitor()


def summary_table(res: dict) -> Table:
    table = Table(title=f"trained {res['model_name']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    best = "n/a (no gallery/query)" if res["best_score"] is None else f"{res['best_score']:.4f} (epoch {res['best_epoch']})"
    last = res["history"][-1] if res["history"] else {}
    rows = [("output", res["output"]), ("epochs", f"{res['epochs_done']}/{res['epochs']} x {res['steps_per_epoch']} steps"),
            ("batch size / lr", f"{res['batch_size']} / {res['learning_rate']}"), ("classes", str(res["num_classes"])),
            ("best recall1", best), ("last loss", f"{last.get('loss', float('nan')):.4f}"),
            ("seconds", f"{res['seconds']:.1f}"), *_memory_row(res.get("memory")),
            ("best model", res["best_model_dir"]),
            ("result", res["train_result"])]
    if res.get("resumed_from"):
        rows.insert(1, ("resumed from", res["resumed_from"]))
    for k, v in rows:
        table.add_row(k, escape(v))
    return table


def _memory_row(mem: Optional[dict]) -> list:
    if not mem:
        return []
    peak = f"{mem['peak_rss_bytes'] / 1e9:.1f} GB peak" if mem.get("peak_rss_bytes") else "peak unknown"
    return [("memory", f"{peak} (estimated {mem['estimate_bytes'] / 1e9:.1f} GB)")]


def train(
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    out_dir: OutDirOpt = None,
    output: OutputAliasOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", metavar="N", help="Epochs to train "
                                                  "(Train.epochs_iters).",
                                                  show_default=shown_default("Train.epochs_iters"))] = None,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel=OUTPUT, help="Continue the run in --out "
                                         "from latest/ (start fresh if there is none).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT, help="Start again over a "
                                            "previous run in --out (kept until the new run's first "
                                            "checkpoint).")] = False,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", metavar="N", rich_help_panel=PERFORMANCE, help="CPU threads for paddle's math (Train.cpu_threads).",
        show_default=shown_default("Train.cpu_threads", "the cores this process may use"))] = None,
    config: ConfigOpt = None, override: override_opt("Train.batch_size=64") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a feature model on a ShiTuRecDataset (PK batches, recipe losses, cosine LR).

    Evaluates on query/gallery every Train.eval_interval epochs, keeps best_model/ by recall1,
    saves epoch_N/ and latest/ with an exported inference/. Ctrl-C saves latest/ and exits 130
    (again: abort, the last complete checkpoint intact); --resume continues exactly where it
    stopped, -o Train.resume_path=OUT/epoch_N from any checkpoint. A NaN loss stops the run (exit 1).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.common.system import usable_threads
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.run import run_train

    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other")
    out = Output(json_, quiet)
    cfg = cfgmod.resolve("train", config, override or [], {
        "Global.dataset_dir": dataset, "Global.model": model, "Global.device": device,
        "Global.output": out_dir or output, "Train.epochs_iters": epochs, "Train.cpu_threads": threads},
        note=out.note, output_option="--out/-O")
    cfg["Global"]["mode"] = "train"
    glob, tr = cfg["Global"], cfg["Train"]
    tr["cpu_threads"] = usable_threads(tr["cpu_threads"], "--threads", out.warn)
    if not glob["dataset_dir"]:
        raise UsageError("no dataset given", hint="use --dataset DIR (a ShiTuRecDataset)")
    opts = TrainOptions(
        dataset_dir=glob["dataset_dir"], model_name=glob["model"], output=glob["output"], device=glob["device"],
        num_classes=tr["num_classes"], epochs=tr["epochs_iters"], batch_size=tr["batch_size"],
        learning_rate=tr["learning_rate"], warmup_epochs=tr["warmup_steps"], resume_path=tr["resume_path"],
        resume=resume, overwrite=overwrite, pretrain_weight_path=tr["pretrain_weight_path"],
        log_interval=tr["log_interval"], eval_interval=tr["eval_interval"], save_interval=tr["save_interval"],
        input_size=tr["input_size"], seed=tr["seed"], num_workers=tr["num_workers"],
        eval_batch_size=tr["eval_batch_size"], cpu_threads=tr["cpu_threads"], config=cfg)
    if out.interactive:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=out.err) as bar:
            res = run_train(opts, _monitor(out, bar))
    else:
        with out.progress("steps", interval=tr["progress_interval"]) as lines:
            res = run_train(opts, _monitor(out, None, lines))
    doc = res.to_dict()
    out.emit(doc, summary_table(doc), essential=str(doc["output"]))


def register(app: typer.Typer) -> None:
    app.command("train", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(train))
