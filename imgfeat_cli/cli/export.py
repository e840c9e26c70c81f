"""``imgfeat export``: a .pdparams checkpoint -> an inference folder (official layout)."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt, shown_default

EXAMPLES = examples("imgfeat export --weights runs/shitu/best_model/best_model.pdparams --out shitu_inference",
                    "imgfeat export -w model.pdparams -m PP-ShiTuV2_rec_CLIP_vit_base --out clip_inference")


def export(
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", metavar="FILE",
                                                   help=".pdparams checkpoint (Export.weight_path).",
                                                   show_default=False)] = None,
    out_dir: Annotated[Optional[str], typer.Option(
        "--out", "-O", metavar="DIR", help="Inference folder to create.",
        show_default=f"{shown_default('Global.output')}/inference, under Global.output")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="NAME", help="Architecture.",
                                                 show_default=shown_default("Global.model"))] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder (kept as .bak).")] = False,
    config: ConfigOpt = None, override: override_opt("Global.output=runs/shitu") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-parameterise and export a checkpoint for paddle.inference, imgfeat embed and PaddleX."""
    from pathlib import Path

    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.common.interrupt import RunSignals
    from imgfeat_cli.common.threads import use_math_threads
    from imgfeat_cli.models.export import export_checkpoint

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("export", config, override or [], {"Export.weight_path": weights, "Global.model": model},
                         note=out.note, output_option="--out")
    src = cfg["Export"]["weight_path"]
    if not src:
        raise UsageError("no checkpoint given", hint="use --weights model.pdparams")
    dest = out_dir or str(Path(cfg["Global"]["output"]) / "inference")
    use_math_threads()  # before paddle is imported
    out.log(f"exporting {src} ({cfg['Global']['model']}) ...")
    with RunSignals().installed() as signals, signals.protected(abort_on_exit=False):
        res = export_checkpoint(cfg["Global"]["model"], src, dest, overwrite=overwrite, check=signals.check)
    fsutil.write_text(Path(dest) / "config.export.yaml", cfgmod.dump_yaml(cfg))
    table = Table(title=f"exported {res.model_name} to {res.model_dir}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for name, size in res.files.items():
        table.add_row(name, f"{size:,}")
    out.emit(res.to_dict(), table, essential=str(res.model_dir))


def register(app: typer.Typer) -> None:
    app.command("export", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(export))
