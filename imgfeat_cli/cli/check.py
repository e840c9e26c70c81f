"""``imgfeat check``: validate a ShiTuRecDataset and show a summary and a histogram."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (ConfigOpt, DatasetOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt, Output,
                                     OutDirOpt, OutputAliasOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt, shown_default
from imgfeat_cli.cli.reportopts import ReportOpt, ReportOverwriteOpt
from imgfeat_cli.common.errors import CheckFailed

EXAMPLES = examples("imgfeat check -d dataset/",
                    "imgfeat check -d dataset/ --out reports/ --json",
                    "imgfeat check -d dataset/ --near-duplicates --report check_report/",
                    "imgfeat check -d dataset/ --near-duplicates --model-dir output/inference --min-cosine 0.95")
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}
#: Problems of one code shown on the terminal; the rest are counted (all are in the report file).
SHOWN_PER_CODE = 20


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def count_text(value: Any) -> str:
    """A per-class count as a person writes it: the median of [1, 1] is 1, of [1, 2] 1.5."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def bucket_label(sizes: List[int]) -> str:
    """The row label for the class sizes one bucket holds: the range actually present (``3`` when
    every class in the 3..4 bucket has exactly 3 images, ``5-7`` when those in 5..8 have 5 to 7), so
    a label never claims a size no class has."""
    lo, hi = min(sizes), max(sizes)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def render_histogram(per_class: Dict[str, Dict[str, int]], width: int = 40) -> Table:
    """Terminal histogram: how many classes have 1, 2, 3-4, 5-8, ... images, per split."""
    buckets = [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 10**9)]
    table = Table(title="Images per class", box=None, show_header=True)
    table.add_column("split")
    table.add_column("images/class", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("")
    for split, counts in per_class.items():
        sizes = list(counts.values())
        hist = [[s for s in sizes if lo <= s <= hi] for lo, hi in buckets]
        top = max(map(len, hist), default=0) or 1
        for members in hist:
            if members:
                n = len(members)
                table.add_row(split, bucket_label(members), str(n), "█" * max(1, round(width * n / top)))
                split = ""
    return table


def render(result: Any) -> Group:
    summary = Table(title=f"ShiTuRecDataset {result.dataset_path}")
    for col in ("split", "images", "classes", "min/class", "median/class", "max/class"):
        summary.add_column(col, justify="left" if col == "split" else "right")
    for split, st in result.class_stats.items():
        summary.add_row(split, str(st["images"]), str(st["classes"]), str(st.get("min_per_class", "-")),
                        count_text(st.get("median_per_class", "-")), str(st.get("max_per_class", "-")))
    parts: list = [summary, render_histogram(result.images_per_class)]
    if result.problems:
        probs = Table(title="Problems")
        for col in ("severity", "where", "code", "message"):
            probs.add_column(col)
        shown: Counter = Counter()
        for p in result.problems:
            shown[p.code] += 1
            if shown[p.code] <= SHOWN_PER_CODE:
                where = f"{p.file}:{p.line}" if p.line else (p.file or "")
                probs.add_row(f"[{SEVERITY_STYLE[p.severity]}]{p.severity}[/]", escape(where), p.code, escape(p.message))
        for code, n in shown.items():
            if n > SHOWN_PER_CODE:
                probs.add_row("", "", code, f"... and {n - SHOWN_PER_CODE} more (all {n} in the report)")
        parts.append(probs)
    verdict = "[green]check passed[/green]" if result.check_pass else "[red]check failed[/red]"
    parts.append(f"{verdict}: {plural(result.counts('error'), 'error')}, {plural(result.counts('warning'), 'warning')}; "
                 f"report in {escape(str(result.output_dir))}/check_dataset_result.json")
    return Group(*parts)


def check(
    dataset: DatasetOpt = None,
    out_dir: OutDirOpt = None,
    output: OutputAliasOpt = None,
    report: ReportOpt = None, overwrite: ReportOverwriteOpt = False,
    near_duplicates: Annotated[Optional[bool], typer.Option(
        "--near-duplicates", help="Also look for near-duplicate images across splits and within the gallery "
        "(perceptual hashes; with a model, embedding similarity too).", show_default=False)] = None,
    hash_distance: Annotated[Optional[int], typer.Option(
        "--hash-distance", metavar="BITS", help="Near-duplicate when the perceptual hashes differ in at most "
        "this many of 64 bits.", show_default=shown_default("CheckDataset.near_duplicate_hash_distance"))] = None,
    min_cosine: Annotated[Optional[float], typer.Option(
        "--min-cosine", metavar="COS", help="Near-duplicate when the embeddings' cosine is at least this "
        "(with --model, --model-dir or --weights).",
        show_default=shown_default("CheckDataset.near_duplicate_min_cosine"))] = None,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    config: ConfigOpt = None, override: override_opt("CheckDataset.imbalance_ratio=20") = None,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Validate a ShiTuRecDataset: list files, images, leakage, class balance. Exit 3 when it fails."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil, paths
    from imgfeat_cli.cli.embedopts import model_source
    from imgfeat_cli.datasets.check import run_check
    from imgfeat_cli.datasets.neardup import NearDupOptions
    from imgfeat_cli.reports.check_report import CheckReport
    from imgfeat_cli.common.errors import UsageError

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("check", config, override or [],
                         {"Global.dataset_dir": dataset, "Global.output": out_dir or output, "Global.model": model,
                          "Global.device": device, "Predict.model_dir": model_dir, "Predict.weights": weights,
                          "CheckDataset.near_duplicates": near_duplicates,
                          "CheckDataset.near_duplicate_hash_distance": hash_distance,
                          "CheckDataset.near_duplicate_min_cosine": min_cosine},
                         note=out.note, output_option="--out/-O")
    if not cfg["Global"]["dataset_dir"]:
        raise UsageError("no dataset given", hint="use --dataset DIR (or Global.dataset_dir in -c/-o)")
    cd = cfg["CheckDataset"]
    paths.check_output_dir(cfg["Global"]["output"])  # before decoding every image, not after
    pages = CheckReport(report, overwrite) if report else None
    near = NearDupOptions(cd["near_duplicate_hash_distance"], cd["near_duplicate_min_cosine"], None,
                          cfg["Predict"]["batch_size"], cd["num_workers"]) if cd["near_duplicates"] else None
    if near is None and (model or model_dir or weights):
        raise UsageError("--model, --model-dir and --weights serve --near-duplicates only",
                         hint="add --near-duplicates to use embedding similarity as a second signal")
    if near is not None and (model or model_dir or weights or cfg["Predict"]["model_dir"]):
        near.model = model_source(cfg)  # loaded by the check when it has images to compare
    with out.progress("images") as progress:
        result = run_check(cfg["Global"]["dataset_dir"], cfg["Global"]["output"], cd["num_workers"],
                           cd["demo_samples"], cd["imbalance_ratio"], progress=progress, near_duplicates=near)
    fsutil.write_text(Path(cfg["Global"]["output"]) / "config.check.yaml", cfgmod.dump_yaml(cfg))
    if pages is not None:
        out.log(f"wrote report {pages.write(result)}")
    out.emit(result.to_dict(), render(result), essential=str(Path(result.output_dir) / "check_dataset_result.json"))
    if not result.check_pass:
        n = result.counts("error")
        raise CheckFailed(f"dataset {result.dataset_path} failed the check with {plural(n, 'error')}",
                          result, hint="see the problems above or in check_dataset_result.json")


def register(app: typer.Typer) -> None:
    app.command("check", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(check))
