"""``imgfeat quantize``: an inference folder -> an int8 ONNX inference folder with an accuracy report."""
from __future__ import annotations

from typing import Any, Dict, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, examples, override_opt, shown_default

EXAMPLES = examples("imgfeat quantize output/inference --calib photos/ --out output/inference_int8",
                    "imgfeat embed photos/ --model-dir output/inference_int8 --out feats.parquet")


def summary_table(doc: Dict[str, Any]) -> Table:
    held, bar = doc["heldout"], doc["bar"]
    table = Table(title=f"quantized {doc['model_name']} to {doc['out']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in (("calibration images", str(doc["calibration_images"])),
                       ("held-out images", str(doc["heldout_images"])),
                       ("cosine to fp32, mean", f"{held['cosine_mean']:.5f} (bar {bar['min_mean_cosine']})"),
                       ("cosine to fp32, min", f"{held['cosine_min']:.5f}"),
                       ("recall@1 agreement", f"{held['recall1_agreement']:.3f}"),
                       ("unreadable images", str(doc["unreadable_images"])),
                       ("seconds", f"{doc['seconds']:.1f}")):
        table.add_row(key, value)
    if bar["forced"]:
        table.add_row("note", "below the bar, written because of --force")
    return table


def quantize(
    model_dir: Annotated[str, typer.Argument(metavar="MODEL_DIR", help="Inference folder to quantize (exported "
                                             "or official).", show_default=False)],
    calib: Annotated[Optional[str], typer.Option("--calib", metavar="DIR", help="Folder of calibration images, "
                                                 "like the ones you will embed (recursive). Required, here or as "
                                                 "Quantize.calib in -c.", show_default=False)] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-O", metavar="DIR", help="Output folder for the int8 "
                                                   "model. Required, here or as Quantize.out in -c.",
                                                   show_default=False)] = None,
    calib_count: Annotated[Optional[int], typer.Option("--calib-count", metavar="N", help="Images to read from "
                                                       "--calib: half (at most 128) measure the result, the rest "
                                                       "calibrate.",
                                                       show_default=shown_default("Quantize.calib_count"))] = None,
    force: Annotated[bool, typer.Option("--force", help="Write the model even when it fails the accuracy bar "
                                        "(held-out mean cosine to fp32 >= Quantize.min_mean_cosine, "
                                        f"{shown_default('Quantize.min_mean_cosine')}).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder (kept as .bak).")] = False,
    config: ConfigOpt = None, override: override_opt("Quantize.calib_count=128") = None,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Quantize a model to int8 (onnxruntime static, per-channel), calibrated on your images.

    The folder runs wherever a model folder is accepted (embed --model-dir, eval, index, search).
    Exit 3 when the int8 features fall below the accuracy bar (nothing written; --force writes it
    anyway); Ctrl-C leaves --out untouched."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import CheckFailed, UsageError
    from imgfeat_cli.pipeline.quantize import QuantizeResult, quantize_model

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("quantize", config, override or [], {
        "Quantize.calib": calib, "Quantize.out": out_dir, "Quantize.calib_count": calib_count})
    qc = cfg["Quantize"]
    if not qc["calib"]:
        raise UsageError("no calibration images given", hint="use --calib FOLDER (100-300 images like yours)")
    if not qc["out"]:
        raise UsageError("no output folder given", hint="use --out DIR")
    try:
        with out.progress("images") as progress:
            res = quantize_model(model_dir, qc["calib"], qc["out"], qc["calib_count"], qc["min_mean_cosine"], force,
                                 overwrite, qc["seed"], out.log, progress,
                                 warn_recall1_agreement=qc["warn_recall1_agreement"])
    except CheckFailed as exc:  # below the bar: --json still gets its one document (written: false)
        if out.json_mode and isinstance(exc.result, QuantizeResult):
            out.json(_public(exc.result))
        raise
    doc = _public(res)
    out.emit(doc, summary_table(doc), essential=doc["out"])
    if doc["bar"]["forced"]:
        out.warn(f"written below the accuracy bar (mean cosine {doc['heldout']['cosine_mean']:.4f}) because of --force")
    for warning in res.warnings:
        out.warn(warning)


def _public(res: Any) -> Dict[str, Any]:
    """The result as printed: the report less its list of held-out paths (kept in the folder's report)."""
    doc = res.to_dict()
    doc.pop("heldout_paths", None)
    return doc


def register(app: typer.Typer) -> None:
    app.command("quantize", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(quantize))
