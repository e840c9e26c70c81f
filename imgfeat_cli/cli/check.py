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

from imgfeat_cli.cli.common import ConfigOpt, DatasetOpt, JsonOpt, Output, OutputDirOpt, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt
from imgfeat_cli.common.errors import CheckFailed

EXAMPLES = examples("imgfeat check -d dataset/",
                    "imgfeat check -d dataset/ --output reports/ --json")
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
    output: OutputDirOpt = None,
    config: ConfigOpt = None, override: override_opt("CheckDataset.imbalance_ratio=20") = None,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Validate a ShiTuRecDataset: list files, images, leakage, class balance. Exit 3 when it fails."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil
    from imgfeat_cli.datasets.check import run_check
    from imgfeat_cli.common.errors import UsageError

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("check", config, override or [],
                         {"Global.dataset_dir": dataset, "Global.output": output}, note=out.note,
                         output_option="--output")
    if not cfg["Global"]["dataset_dir"]:
        raise UsageError("no dataset given", hint="use --dataset DIR (or Global.dataset_dir in -c/-o)")
    cd = cfg["CheckDataset"]
    fsutil.check_output_dir(cfg["Global"]["output"])  # before decoding every image, not after
    with out.progress("images") as progress:
        result = run_check(cfg["Global"]["dataset_dir"], cfg["Global"]["output"], cd["num_workers"],
                           cd["demo_samples"], cd["imbalance_ratio"], progress=progress)
    fsutil.write_text(Path(cfg["Global"]["output"]) / "config.check.yaml", cfgmod.dump_yaml(cfg))
    out.emit(result.to_dict(), render(result), essential=str(Path(result.output_dir) / "check_dataset_result.json"))
    if not result.check_pass:
        n = result.counts("error")
        raise CheckFailed(f"dataset {result.dataset_path} failed the check with {plural(n, 'error')}",
                          result, hint="see the problems above or in check_dataset_result.json")


def register(app: typer.Typer) -> None:
    app.command("check", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(check))
