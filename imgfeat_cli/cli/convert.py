"""``imgfeat convert``: LabelMe, class sub-folders or a ``path label`` list -> ShiTuRecDataset."""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt
from imgfeat_cli.cli.render import counts_table

EXAMPLES = examples("imgfeat convert --from folders photos/ --out dataset/",
                    "imgfeat convert --from list gallery/drink_label.txt --out drink_ds/",
                    "imgfeat convert -d labelme_folder/",
                    "imgfeat convert -d labelme_folder/ --out labelme_ds/ -o CheckDataset.split.seed=7")
#: Problems of one kind printed on stderr; the rest are counted (all of them are in --json).
SHOWN_PER_CODE = 10


def _report(out: Output, res: Any) -> None:
    shown: Counter = Counter()
    for p in res.skipped + res.notes:
        shown[p.code] += 1
        if shown[p.code] <= SHOWN_PER_CODE:
            say = out.warn if p.severity == "warning" else out.log
            where = f"{p.file}:{p.line}: " if p.file and p.line else f"{p.file}: " if p.file else ""
            say(where + p.message)  # log and warn print text, never markup
    for code, n in shown.items():
        if n > SHOWN_PER_CODE:
            out.log(f"... and {n - SHOWN_PER_CODE} more {code} (all of them with --json)")
    images = sum(res.counts.values())
    out.log(f"{images} images in {len(res.classes)} classes ({res.layout}); "
            f"{sum(p.severity == 'warning' for p in res.skipped)} left out")


def convert(
    source: Annotated[Optional[str], typer.Argument(metavar="SOURCE", show_default=False,
                                                    help="The LabelMe folder, the folder of class sub-folders, or the "
                                                         "list file (same as --dataset).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", metavar="DIR", help="Same as SOURCE.",
                                                   show_default=False)] = None,
    from_: Annotated[Optional[str], typer.Option("--from", metavar="FORMAT",
                                                 help="labelme (flags), folders (SOURCE/<class>/<image>) or list "
                                                      "('path label' lines).", show_default="labelme")] = None,
    root: Annotated[Optional[str], typer.Option("--root", metavar="DIR", help="--from list: the folder listed paths "
                                                "are relative to.", show_default="the list's folder")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-O", metavar="DIR", help="Write the dataset here (images "
                                                   "hard-linked) instead of in place.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out (kept as .bak).")] = False,
    config: ConfigOpt = None, override: override_opt("CheckDataset.split.seed=7") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make a ShiTuRecDataset (train/gallery/query.txt, label.txt) from LabelMe flags, class folders or a
    'path label' list: images that do not decode are left out, the split is stratified and seeded."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.datasets.convert import run_convert

    out = Output(json_, quiet)
    if source and dataset and source != dataset:
        raise UsageError(f"two sources given: {source} and --dataset {dataset}", hint="give one of them")
    labelme = (from_ or "labelme").lower() == "labelme"
    cfg = cfgmod.resolve("convert", config, override or [], {
        "Global.dataset_dir": source or dataset, "CheckDataset.convert.enable": True,
        "CheckDataset.convert.src_dataset_type": "LabelMe" if labelme else None}, note=out.note, output_option="--out")
    if not cfg["Global"]["dataset_dir"]:
        raise UsageError("no source given", hint="e.g. imgfeat convert --from folders photos/ --out dataset/")
    sp = cfg["CheckDataset"]["split"]
    with out.progress("images") as progress:
        res = run_convert(cfg["Global"]["dataset_dir"], out_dir,
                          (sp["train_percent"], sp["gallery_percent"], sp["query_percent"]), sp["seed"],
                          from_.lower() if from_ else None, root, overwrite, progress)
    _report(out, res)
    out.emit(res.to_dict(), counts_table(f"Converted into {escape(res.dataset_path)}", res.counts),
             essential=str(res.dataset_path))


def register(app: typer.Typer) -> None:
    app.command("convert", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(convert))
