"""``imgfeat split``: re-split train/gallery/query, seeded and stratified."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, DatasetOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt, shown_default
from imgfeat_cli.cli.render import counts_table

SPLIT = "CheckDataset.split"
EXAMPLES = examples("imgfeat split -d dataset/ --train 70 --gallery 20 --query 10",
                    "imgfeat split -d dataset/ --seed 7 --no-stratify --json")


def split(
    dataset: DatasetOpt = None,
    train: Annotated[Optional[float], typer.Option("--train", metavar="PERCENT", help="Train percent.",
                                                   show_default=shown_default(f"{SPLIT}.train_percent"))] = None,
    gallery: Annotated[Optional[float], typer.Option("--gallery", metavar="PERCENT", help="Gallery percent.",
                                                     show_default=shown_default(f"{SPLIT}.gallery_percent"))] = None,
    query: Annotated[Optional[float], typer.Option("--query", metavar="PERCENT", help="Query percent.",
                                                   show_default=shown_default(f"{SPLIT}.query_percent"))] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Shuffle seed.",
                                                show_default=shown_default(f"{SPLIT}.seed"))] = None,
    stratify: Annotated[Optional[bool], typer.Option(
        "--stratify/--no-stratify", help="Keep class proportions per split.",
        show_default=shown_default(f"{SPLIT}.stratify", bools=("stratify", "no-stratify")))] = None,
    config: ConfigOpt = None, override: override_opt(f"{SPLIT}.seed=7") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pool, de-duplicate and re-split the list files (old files kept as .bak). Percents must sum to 100."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.datasets.split import run_split

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("split", config, override or [], {
        "Global.dataset_dir": dataset, "CheckDataset.split.train_percent": train,
        "CheckDataset.split.gallery_percent": gallery, "CheckDataset.split.query_percent": query,
        "CheckDataset.split.seed": seed, "CheckDataset.split.stratify": stratify}, note=out.note)
    if not cfg["Global"]["dataset_dir"]:
        raise UsageError("no dataset given", hint="use --dataset DIR")
    sp = cfg["CheckDataset"]["split"]
    res = run_split(cfg["Global"]["dataset_dir"], (sp["train_percent"], sp["gallery_percent"], sp["query_percent"]),
                    sp["seed"], sp["stratify"])
    out.log(f"pooled {res.pooled} lines ({res.duplicates_removed} duplicates removed); "
            f"previous files kept as .bak")
    out.emit(res.to_dict(), counts_table(f"Re-split {res.dataset_path} (seed {res.seed})", res.counts))


def register(app: typer.Typer) -> None:
    app.command("split", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(split))
