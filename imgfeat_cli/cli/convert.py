"""``imgfeat convert``: LabelMe -> ShiTuRecDataset."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt
from imgfeat_cli.cli.split import counts_table

EXAMPLES = examples("imgfeat convert -d labelme_folder/",
                    "imgfeat convert -d labelme_folder/ --out dataset/ -o CheckDataset.split.seed=7")


def convert(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", metavar="DIR", help="LabelMe folder.",
                                                   show_default=False)] = None,
    from_: Annotated[str, typer.Option("--from", metavar="FORMAT", help="Source annotation format.")] = "labelme",
    out_dir: Annotated[Optional[str], typer.Option("--out", "-O", metavar="DIR", help="Write the dataset here (images "
                                                   "hard-linked) instead of in place.", show_default=False)] = None,
    config: ConfigOpt = None, override: override_opt("CheckDataset.split.seed=7") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert LabelMe classification flags into train/gallery/query lists (stratified, deterministic)."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.datasets.convert import run_convert
    from imgfeat_cli.common.errors import UsageError

    out = Output(json_, quiet)
    if from_.lower() != "labelme":
        raise UsageError(f"--from {from_!r} is not supported", hint="the supported source format is labelme")
    cfg = cfgmod.resolve("convert", config, override or [], {
        "Global.dataset_dir": dataset, "CheckDataset.convert.enable": True,
        "CheckDataset.convert.src_dataset_type": "LabelMe"}, note=out.note, output_option="--out")
    if not cfg["Global"]["dataset_dir"]:
        raise UsageError("no dataset given", hint="use --dataset DIR")
    sp = cfg["CheckDataset"]["split"]
    res = run_convert(cfg["Global"]["dataset_dir"], out_dir,
                      (sp["train_percent"], sp["gallery_percent"], sp["query_percent"]), sp["seed"])
    for p in res.skipped + res.notes:
        say = out.warn if p.severity == "warning" else out.log
        say(f"{p.file}: {p.message}" if p.file else p.message)
    out.log(f"{len(res.classes)} classes ({res.layout} layout); {len(res.skipped)} annotations skipped")
    out.emit(res.to_dict(), counts_table(f"Converted into {res.dataset_path}", res.counts),
             essential=str(res.dataset_path))


def register(app: typer.Typer) -> None:
    app.command("convert", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(convert))
