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
                    "find shots -name '*.jpg' | imgfeat embed - --out feats.jsonl --resume",
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
        rows.append(("ray", f"{res['streams']} actors x {res['threads']} threads on {res['address']}"))
        rows += [(f"node {node[:12]}", f"{count} rows") for node, count in (res.get("nodes") or {}).items()]
    else:
        rows.append(("streams", str(res["streams"])))
    if res.get("shard"):
        rows.append(("shard", res["shard"]))
    many = res.get("engine") == "ray" and len(res["files"]) > 4  # a cluster job may write thousands
    rows.append(("files", f"{len(res['files']) - 1} new Parquet files and {res['files'][-1]}" if many
                 else "\n".join(res["files"])))
    for k, v in rows:
        table.add_row(k, escape(v))
    return table


def embed(
    inputs: Annotated[Optional[List[str]], typer.Argument(
        metavar="IMAGES", help="Image files, folders (recursive), http(s) URLs, or - to read paths from stdin.",
        show_default=False)] = None,
    out_file: Annotated[Optional[str], typer.Option("--out", "-O", metavar="FILE", rich_help_panel=OUTPUT,
                                                    help="Output file: .jsonl, .npy or .parquet.",
                                                    show_default=False)] = None,
    model: ModelOpt = None,
    model_dir: ModelDirOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    batch_size: BatchSizeOpt = None,
    fmt: Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", rich_help_panel=OUTPUT,
                                               help="jsonl, npy or parquet.",
                                               show_default=shown_default("Predict.format", "from --out"))] = None,
    fp16: Annotated[bool, typer.Option("--fp16", rich_help_panel=OUTPUT, help="Store features as float16.")] = False,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel=OUTPUT,
                                         help="Skip inputs already in the output and continue.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT,
                                            help="Replace an existing output (once the new one is complete).")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", rich_help_panel=INPUT,
                                                 help="Embed only shard I of N of the inputs (1-based).",
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
        "--engine", metavar="NAME", rich_help_panel=RAY, help="local (this machine) or ray (a Ray cluster; --out is "
        "then a folder of Parquet files, local or s3://).", show_default=shown_default("Predict.engine"))] = None,
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
    from imgfeat_cli.cli.loading import limits, load_model, no_images, produced_by, with_stdin
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.common.remote import is_uri
    from imgfeat_cli.pipeline.embedder import collect_inputs, parse_shard, plan_streams
    from imgfeat_cli.pipeline.job import embed_to_file
    from imgfeat_cli.pipeline.sinks import FileSink

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("embed", config, override or [], {
        "Global.model": model, "Global.device": device, "Predict.model_dir": model_dir,
        "Predict.weights": weights, "Predict.batch_size": batch_size, "Predict.format": fmt,
        "Predict.fp16": fp16 or None, "Predict.num_workers": workers, "Predict.cpu_threads": threads,
        "Predict.streams": streams, "Predict.backend": backend or ("auto" if hpi else None),
        "Predict.precision": precision or ("auto" if hpi else None),
        "Predict.input": list(inputs) if inputs else None, "Predict.engine": engine,
        "Predict.ray_address": ray_address, "Predict.actors": actors}, note=out.note, output_option="--out/-O")
    pred = cfg["Predict"]
    sources = pred["input"] if isinstance(pred["input"], list) else ([pred["input"]] if pred["input"] else [])
    if not sources:
        raise UsageError("no inputs given", hint="e.g. imgfeat embed photos/ --out feats.jsonl")
    if not out_file:
        raise UsageError("no output file given", hint="use --out feats.jsonl (or .npy, .parquet)")
    if pred["engine"] == "ray":
        from imgfeat_cli.cli.embed_ray import embed_on_ray

        res = embed_on_ray(cfg, out, out_file, sources, shard, resume, overwrite, verbose)
        return _finish(out, res)
    if pred["ray_address"] or pred["actors"]:
        raise UsageError("--ray-address and --actors need --engine ray")
    if is_uri(out_file):  # the local engine writes local files only
        raise UsageError(f"--out {out_file}: the local engine writes local files",
                         hint="pass --engine ray to write a Parquet folder to object storage, or a local --out")
    sink = FileSink(out_file, pred["format"], pred["fp16"], resume, overwrite)
    sink.check()  # a wrong name or an existing output fails before anything is loaded
    shard_t = parse_shard(shard)
    items = collect_inputs(with_stdin(sources), shard_t)
    if not items:
        raise no_images(shard)
    plan = plan_streams(pred["streams"], pred["cpu_threads"], len(items), cfg["Global"]["device"],
                        rebuildable=not pred["weights"], parent_joins=True)
    feature_model = load_model(cfg, out, plan.threads if plan.streams > 1 else None)
    with out.progress("images") as progress:
        res = embed_to_file(items, sink, feature_model, pred["batch_size"], plan, pred["num_workers"], limits(cfg),
                            progress, shard=f"{shard_t[0]}/{shard_t[1]}" if shard_t else None,
                            config=produced_by(cfg))
    _finish(out, res)


def _finish(out: Output, res: Any) -> None:
    """Print the summary; exit 4 when some inputs failed."""
    from imgfeat_cli.common.errors import PartialFailure

    doc = res.to_dict()
    out.emit(doc, summary_table(doc), essential=str(doc["output"]))
    if res.failed:
        raise PartialFailure(f"{res.failed} of {res.total} inputs were skipped", res,
                             hint=f"reasons in {res.errors_file}")


def register(app: typer.Typer) -> None:
    app.command("embed", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(embed))
