"""``imgfeat eval``: Recall@k and mAP from a dataset and a model, or from embedding files."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (ConfigOpt, DatasetOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt, Output,
                                     OutputDirOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import INPUT, ImgfeatCommand, examples, override_opt, shown_default

EXAMPLES = examples("imgfeat eval -d dataset/ --model-dir output/inference",
                    "imgfeat eval --query q.jsonl --gallery g.jsonl --k 1 --k 10 --json")


def _use_checkpoint_export(cfg: dict, out: Output) -> None:
    """``--weights`` of an imgfeat training checkpoint scores the inference/ exported beside it (when
    its digests prove it holds those very weights): the figure training recorded for it, rather
    than a dygraph pass whose float differences can flip near-tied queries."""
    from imgfeat_cli.training.checkpoint import exported_inference

    pred = cfg["Predict"]
    twin = exported_inference(pred["weights"]) if pred["weights"] and not pred["model_dir"] else None
    if twin is not None:
        out.log(f"{pred['weights']} is a training checkpoint: scoring its exported model {twin} "
                "(the figure training recorded)")
        pred["model_dir"], pred["weights"] = str(twin), None


def eval_(
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    model_dir: ModelDirOpt = None,
    weights: WeightsOpt = None,
    query: Annotated[Optional[str], typer.Option("--query", metavar="FILE", rich_help_panel=INPUT,
                                                 help="Query embeddings (.jsonl, .npy or .parquet).",
                                                 show_default=False)] = None,
    gallery: Annotated[Optional[str], typer.Option("--gallery", metavar="FILE", rich_help_panel=INPUT,
                                                   help="Gallery embeddings (.jsonl, .npy or .parquet).",
                                                   show_default=False)] = None,
    query_labels: Annotated[Optional[str], typer.Option("--query-labels", metavar="FILE", rich_help_panel=INPUT,
                                                        help="Labels for a .npy query file.",
                                                        show_default=False)] = None,
    gallery_labels: Annotated[Optional[str], typer.Option("--gallery-labels", metavar="FILE", rich_help_panel=INPUT,
                                                          help="Labels for a .npy gallery file.",
                                                          show_default=False)] = None,
    k: Annotated[Optional[List[int]], typer.Option("--k", metavar="K", help="Recall@k cut-off (repeatable).",
                                                   show_default=shown_default("Evaluate.recall_k"))] = None,
    exclude_same_path: Annotated[Optional[bool], typer.Option(
        "--exclude-same-path", help="Do not let a query match a gallery item with the same path.",
        show_default=False)] = None,
    device: DeviceOpt = None,
    output: OutputDirOpt = None,
    config: ConfigOpt = None, override: override_opt("Predict.batch_size=32") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score retrieval: Recall@k (share of queries with a same-label item in the top k) and mAP."""
    from imgfeat_cli.cli.loading import load_model
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.common.threads import use_math_threads
    from imgfeat_cli.retrieval.embfiles import load_query_gallery
    from imgfeat_cli.retrieval.evaluate import eval_dataset, write_result
    from imgfeat_cli.retrieval.metrics import evaluate

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("eval", config, override or [], {
        "Global.dataset_dir": dataset, "Global.model": model, "Global.device": device, "Global.output": output,
        "Predict.model_dir": model_dir, "Predict.weights": weights, "Evaluate.recall_k": k or None,
        "Evaluate.exclude_same_path": exclude_same_path}, note=out.note, output_option="--output")
    ev = cfg["Evaluate"]
    if (query or gallery) and cfg["Global"]["dataset_dir"]:
        raise UsageError("give either --dataset or --query/--gallery, not both")
    fsutil.check_output_dir(cfg["Global"]["output"])  # before embedding a dataset, not after
    with out.progress("items") as progress:
        if query or gallery:
            if not (query and gallery):
                raise UsageError("--query and --gallery go together")
            (qf, ql, qp), (gf, gl, gp) = load_query_gallery(query, gallery, query_labels, gallery_labels)
            if ev["exclude_same_path"] and (qp is None or gp is None):
                raise UsageError("--exclude-same-path needs input paths in both embedding files")
            metrics = evaluate(qf, ql, gf, gl, ev["recall_k"], qp, gp, ev["exclude_same_path"], progress=progress)
        elif cfg["Global"]["dataset_dir"]:
            use_math_threads(cfg["Predict"]["cpu_threads"], "Predict.cpu_threads")  # before paddle is imported
            _use_checkpoint_export(cfg, out)
            feature_model = load_model(cfg, out)
            metrics = eval_dataset(cfg["Global"]["dataset_dir"], feature_model, ev["recall_k"],
                                   ev["exclude_same_path"], cfg["Predict"]["batch_size"], progress)
        else:
            raise UsageError("nothing to evaluate", hint="pass --dataset DIR, or --query Q --gallery G")
    path = write_result(cfg["Global"]["output"], metrics)
    fsutil.write_text(Path(cfg["Global"]["output"]) / "config.eval.yaml", cfgmod.dump_yaml(cfg))
    table = Table(title=f"retrieval metrics ({metrics.num_scored} of {metrics.num_queries} queries scored, "
                        f"{metrics.num_gallery} gallery items)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.metrics().items():
        table.add_row(name, f"{value:.4f}")
    out.emit(metrics.to_dict(), table, essential=str(path))
    out.log(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("eval", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(eval_))
