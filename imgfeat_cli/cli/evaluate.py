"""``imgfeat eval``: Recall@k and mAP from a dataset and a model, or from embedding files."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (AllowOtherOpt, BackendOpt, BatchSizeOpt, ConfigOpt, DatasetOpt, DeviceOpt,
                                     JsonOpt, ModelDirOpt, ModelOpt, OutDirOpt, Output, OutputAliasOpt, PrecisionOpt,
                                     QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import INPUT, ImgfeatCommand, examples, override_opt, shown_default
from imgfeat_cli.cli.reportopts import ImageRootOpt, ReportOpt, ReportOverwriteOpt, ReportRowsOpt
from imgfeat_cli.reports.limits import DEFAULT_QUERY_ROWS

EXAMPLES = examples("imgfeat eval -d dataset/ --model-dir output/inference --out eval_out/",
                    "imgfeat eval --query q.jsonl --gallery g.jsonl --k 1 --k 10 --json",
                    "imgfeat eval -d dataset/ --model-dir output/inference --report eval_report/")


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
    batch: BatchSizeOpt = None, backend: BackendOpt = None, precision: PrecisionOpt = None,
    allow_other_model: AllowOtherOpt = False,
    out_dir: OutDirOpt = None,
    output: OutputAliasOpt = None,
    report: ReportOpt = None, report_rows: ReportRowsOpt = DEFAULT_QUERY_ROWS, overwrite: ReportOverwriteOpt = False,
    image_root: ImageRootOpt = None,
    config: ConfigOpt = None, override: override_opt("Predict.batch_size=32") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score retrieval: Recall@k (share of queries with a same-label item in the top k) and mAP."""
    from imgfeat_cli.api.evaluation import evaluate
    from imgfeat_cli.cli.embedopts import model_flags, model_source
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil, paths
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.reports.spec import ReportSpec
    from imgfeat_cli.retrieval.evaluate import write_result

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("eval", config, override or [], {
        **model_flags(model, model_dir, weights, device, batch, backend, precision), "Global.dataset_dir": dataset,
        "Global.output": out_dir or output, "Evaluate.recall_k": k or None,
        "Evaluate.exclude_same_path": exclude_same_path}, note=out.note, output_option="--out/-O")
    ev, where = cfg["Evaluate"], cfg["Global"]["output"]
    paths.check_output_dir(where)  # before embedding a dataset, not after
    if report and not overwrite and Path(report).resolve() == Path(where).resolve():
        raise UsageError(f"--report {report} is the --out folder, which also receives evaluate_result.json",
                         hint="give the report a folder of its own, or pass --overwrite to share it (files are kept)")
    with out.progress("items") as progress:
        metrics = evaluate(cfg["Global"]["dataset_dir"], model_source(cfg, warn=out.warn), query=query, gallery=gallery,
                           query_labels=query_labels, gallery_labels=gallery_labels, ks=ev["recall_k"],
                           exclude_same_path=ev["exclude_same_path"], allow_other_model=allow_other_model,
                           report=ReportSpec(report, overwrite, report_rows, image_root) if report else None,
                           progress=progress, log=out.log)
    path = write_result(where, metrics)
    fsutil.write_text(Path(where) / "config.eval.yaml", cfgmod.dump_yaml(cfg))
    table = Table(title=f"retrieval metrics ({metrics.num_scored} of {metrics.num_queries} queries scored, "
                        f"{metrics.num_gallery} gallery items)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.metrics().items():
        table.add_row(name, f"{value:.4f}")
    out.emit(metrics.to_dict(), table, essential=str(path))
    out.log(f"wrote {path}" + (f" and the report {metrics.report}" if metrics.report else ""))


def register(app: typer.Typer) -> None:
    app.command("eval", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(eval_))
