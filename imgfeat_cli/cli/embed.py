"""``imgfeat embed``: images -> feature vectors (JSONL, NPY or Parquet), resumable and shardable."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (BackendOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt,
                                     Output, PrecisionOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import (INPUT, MODEL, OUTPUT, PERFORMANCE, RAY, ImgfeatCommand, examples, override_opt,
                                     shown_default)

EXAMPLES = examples("imgfeat embed photos/ --out feats.parquet",
                    "find photos -name '*.jpg' | imgfeat embed - --out feats.jsonl --resume",
                    "imgfeat embed s3://bucket/photos/ --engine ray --ray-address head:6379 --out s3://bucket/feats/")


def summary_table(res: Dict[str, Any]) -> Table:
    table = Table(title="embed summary", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [("output", res["output"]), ("model", res["model"]),
            ("engine", f"{res['backend']} {res['precision']} on {res['device']}"),
            ("images", str(res["total"])), ("embedded now", str(res["embedded"])),
            ("already done", str(res["already_done"])), ("skipped (errors)", str(res["failed"])),
            ("seconds", f"{res['seconds']:.2f}"), ("images/s", f"{res['images_per_s']:.1f}"),
            ("batch size", str(res["batch_size"]))]
    if res.get("engine") == "ray":
        rows.append(("ray", f"{res['streams']} actors x {res.get('threads')} threads on {res.get('address')}"))
        rows += [(f"node {node[:12]}", f"{count} rows") for node, count in (res.get("nodes") or {}).items()]
    else:
        rows.append(("streams", str(res["streams"])))
    if res.get("shard"):
        rows.append(("shard", res["shard"]))
    many = res["layout"] == "folder" and len(res["files"]) > 4  # a folder may hold thousands
    rows.append(("files", f"{len(res['files']) - 1} new Parquet files and {res['files'][-1]}" if many
                 else "\n".join(res["files"])))
    for k, v in rows:
        table.add_row(k, escape(v))
    return table


def embed(
    out_file: Annotated[str, typer.Option("--out", "-O", metavar="FILE", rich_help_panel=OUTPUT,
                                          help="Output: a .jsonl, .npy or .parquet file, or a folder (ending in /, "
                                          "or s3://...) of Parquet files.", show_default=False)],
    inputs: Annotated[Optional[List[str]], typer.Argument(
        metavar="IMAGES", help="Image files, folders (recursive), http(s) URLs, or - to read paths from stdin "
        "(s3:// and gs:// locations with --engine ray).", show_default=False)] = None,
    model: ModelOpt = None,
    model_dir: ModelDirOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    batch_size: BatchSizeOpt = None,
    labels: Annotated[Optional[str], typer.Option(
        "--labels", metavar="FILE", rich_help_panel=INPUT, show_default=False,
        help="A 'path label' list (e.g. a dataset's gallery.txt): each row gets a label column, so eval and index "
        "build read the output as it is. Without IMAGES, the list's images are embedded; with IMAGES, only those "
        "the list names.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", rich_help_panel=OUTPUT,
                                               help="jsonl, npy or parquet.",
                                               show_default=shown_default("Predict.format", "from --out"))] = None,
    fp16: Annotated[bool, typer.Option("--fp16", rich_help_panel=OUTPUT, help="Store features as float16.")] = False,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel=OUTPUT,
                                         help="Skip inputs already in the output and continue.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT,
                                            help="Replace an existing output (once the new one is complete).")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", rich_help_panel=INPUT,
                                                 help="Embed only shard I of N of the inputs (0-based: 0/4 ... 3/4).",
                                                 show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", metavar="N", rich_help_panel=PERFORMANCE, help="Decoding threads.",
        show_default=shown_default("Predict.num_workers", "half the cores this process may use"))] = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = None,
    hpi: Annotated[bool, typer.Option("--hpi", rich_help_panel=MODEL,
                                      help="High-performance mode: --backend auto --precision auto.")] = False,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", metavar="N", rich_help_panel=PERFORMANCE, help="Inference threads, per stream.",
        show_default=shown_default("Predict.cpu_threads", "the cores this process may use, split between streams"))
    ] = None,
    streams: Annotated[Optional[int], typer.Option(
        "--streams", metavar="N", rich_help_panel=PERFORMANCE,
        help="Model replicas in worker processes (CPU); 1 = one process.",
        show_default=shown_default("Predict.streams", "auto: several for 2048+ images on multi-core CPUs"))] = None,
    engine: Annotated[Optional[str], typer.Option(
        "--engine", metavar="NAME", rich_help_panel=RAY, help="local (this machine) or ray (a Ray cluster).",
        show_default=shown_default("Predict.engine"))] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDRESS", rich_help_panel=RAY,
        help="Ray cluster to join, e.g. head:6379 or ray://head:10001.",
        show_default=shown_default("Predict.ray_address", "$RAY_ADDRESS, else a local instance"))] = None,
    actors: Annotated[Optional[int], typer.Option(
        "--actors", metavar="N", rich_help_panel=RAY, help="Model replicas on the Ray cluster.",
        show_default=shown_default("Predict.actors", "its CPUs / threads per actor, or its GPUs"))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=RAY,
                                          help="Show Ray's own logs and progress (on stderr).")] = False,
    config: ConfigOpt = None, override: override_opt("Predict.batch_size=32") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed images into L2-normalised feature vectors. Exit 4 when some inputs were skipped."""
    from imgfeat_cli.api.embedding import embed as run
    from imgfeat_cli.cli.embedopts import limits, model_flags, model_source, produced_by, with_stdin
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.pipeline.job import EmbedOptions

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("embed", config, override or [], {
        **model_flags(model, model_dir, weights, device, batch_size, backend or ("auto" if hpi else None),
                      precision or ("auto" if hpi else None), threads),
        "Predict.format": fmt, "Predict.fp16": fp16 or None, "Predict.num_workers": workers,
        "Predict.streams": streams, "Predict.input": list(inputs) if inputs else None, "Predict.engine": engine,
        "Predict.ray_address": ray_address, "Predict.actors": actors, "Predict.labels": labels},
        note=out.note, output_option="--out/-O")
    pred = cfg["Predict"]
    sources = pred["input"] if isinstance(pred["input"], list) else ([pred["input"]] if pred["input"] else [])
    if not sources and not pred["labels"]:
        raise UsageError("no inputs given", hint="e.g. imgfeat embed photos/ --out feats.jsonl")
    if pred["engine"] != "ray" and (pred["ray_address"] or pred["actors"]):
        raise UsageError("--ray-address and --actors need --engine ray")
    source = model_source(cfg, warn=out.warn if pred["engine"] != "ray" else None)  # threads settled first
    options = EmbedOptions(fmt=pred["format"], fp16=pred["fp16"], resume=resume, overwrite=overwrite, shard=shard,
                           labels_from=pred["labels"], streams=pred["streams"], workers=pred["num_workers"],
                           limits=limits(cfg), engine=pred["engine"], ray_address=pred["ray_address"],
                           actors=pred["actors"], verbose=verbose, rows_per_file=pred["rows_per_file"],
                           config=produced_by(cfg))
    with out.progress("images") as progress:
        res = run(with_stdin(sources), out_file, source, options=options, progress=progress, log=out.log)
    doc = res.to_dict()
    out.emit(doc, summary_table(doc), essential=str(doc["output"]))
    out.partial(res.failed, res.total, "inputs were skipped", res.errors, res.errors_file)


def register(app: typer.Typer) -> None:
    app.command("embed", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(embed))
