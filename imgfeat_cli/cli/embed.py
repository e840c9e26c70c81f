"""``imgfeat embed``: images -> feature vectors (JSONL or NPY), resumable and shardable."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (ConfigOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt, Output,
                                     OverrideOpt, QuietOpt, WeightsOpt, handle_errors)

#: Images per forward pass when --batch-size is not given. On CPU, 8 is the fastest end to end for
#: every backend and precision measured on the 2-core development machine (benchmarks/
#: compare_paddlex.py: batch 16 is 5-15% slower, batch 32 more); GPUs want larger batches.
DEFAULT_EMBED_BATCH = {"cpu": 8, "gpu": 32}


def default_batch(device: Optional[str]) -> int:
    return DEFAULT_EMBED_BATCH["gpu" if str(device or "cpu").startswith("gpu") else "cpu"]


def summary_table(res: dict) -> Table:
    table = Table(title="embed summary", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [("output", res["output"]), ("model", res["model"]),
            ("backend", f"{res['backend']} {res.get('precision', 'fp32')} on {res['device']}"),
            ("images", str(res["total"])), ("embedded now", str(res["embedded"])),
            ("already done", str(res["already_done"])), ("skipped (errors)", str(res["failed"])),
            ("seconds", f"{res['seconds']:.2f}"), ("images/s", f"{res['images_per_s']:.1f}"),
            ("batch size", str(res["batch_size"])), ("streams", str(res.get("streams", 1)))]
    if res.get("shard"):
        rows.append(("shard", res["shard"]))
    if res.get("errors_file"):
        rows.append(("errors", res["errors_file"]))
    for k, v in rows:
        table.add_row(k, escape(v))
    return table


def load_model(cfg: dict, out: Output, cpu_threads: Optional[int] = None) -> object:
    """Resolve --model-dir / --weights / --model NAME (download cache) into a FeatureModel."""
    from imgfeat_cli.pipeline.predictor import create_model

    pred, glob = cfg["Predict"], cfg["Global"]
    out.log(f"loading {pred['model_dir'] or pred['weights'] or glob['model']} ...")
    return create_model(None if pred["model_dir"] else glob["model"], model_dir=pred["model_dir"],
                        weights=pred["weights"], device=glob["device"], cpu_threads=cpu_threads or pred["cpu_threads"],
                        backend=pred.get("backend", "paddle"), precision=pred.get("precision", "fp32"),
                        hpi_config={"batch_size": pred["batch_size"] or default_batch(glob["device"])}, log=out.log)


def register(app: typer.Typer) -> None:
    @app.command("embed")
    @handle_errors
    def embed(
        inputs: Annotated[Optional[List[str]], typer.Argument(
            help="Image files, folders (recursive), http(s) URLs, or - to read paths from stdin.",
            show_default=False)] = None,
        out_file: Annotated[Optional[str], typer.Option("--out", "-O", help="Output file: .jsonl or .npy.",
                                                        show_default=False)] = None,
        model: ModelOpt = None,
        model_dir: ModelDirOpt = None,
        weights: WeightsOpt = None,
        device: DeviceOpt = None,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help=f"Images per forward pass "
                                                          f"[default: {DEFAULT_EMBED_BATCH['cpu']} on CPU, {DEFAULT_EMBED_BATCH['gpu']} "
                                                          "on GPU].", show_default=False)] = None,
        fmt: Annotated[Optional[str], typer.Option("--format", help="jsonl or npy [default: from --out].",
                                                   show_default=False)] = None,
        fp16: Annotated[bool, typer.Option("--fp16", help="Store features as float16.")] = False,
        resume: Annotated[bool, typer.Option("--resume", help="Skip inputs already in the output and continue.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
        shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: embed only this shard of the inputs.",
                                                     show_default=False)] = None,
        workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding threads [default: cores].",
                                                       show_default=False)] = None,
        backend: Annotated[Optional[str], typer.Option("--backend", help="paddle, onnxruntime or auto "
                                                       "[default: paddle].", show_default=False)] = None,
        precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16 (CPU), fp16 (GPU) or auto "
                                                         "[default: fp32].", show_default=False)] = None,
        hpi: Annotated[bool, typer.Option("--hpi", help="High-performance mode: --backend auto --precision auto.")] = False,
        threads: Annotated[Optional[int], typer.Option("--threads", help="Inference threads, per stream "
                                                       "[default: the cores this process may use, split "
                                                       "between streams].", show_default=False)] = None,
        streams: Annotated[Optional[int], typer.Option("--streams", help="Model replicas in worker processes (CPU) "
                                                       "[default: auto, several for 2048+ images on multi-core "
                                                       "CPUs]; 1 = one process.", show_default=False)] = None,
        config: ConfigOpt = None, override: OverrideOpt = None, json_: JsonOpt = False, quiet: QuietOpt = False,
    ) -> None:
        """Embed images into L2-normalised feature vectors. Exit 4 when some inputs were skipped."""
        from imgfeat_cli.common import config as cfgmod
        from imgfeat_cli.common import fsutil
        from imgfeat_cli.pipeline.embedder import collect_inputs, parse_shard, run_embed
        from imgfeat_cli.pipeline.workers import plan as streams_plan
        from imgfeat_cli.common.errors import ImgfeatError, PartialFailure, UsageError
        from imgfeat_cli.pipeline.inputs import read_path_list

        out = Output(json_, quiet)
        cfg = cfgmod.resolve("embed", config, override or [], {
            "Global.model": model, "Global.device": device, "Predict.model_dir": model_dir,
            "Predict.weights": weights, "Predict.batch_size": batch_size, "Predict.format": fmt,
            "Predict.fp16": fp16 or None, "Predict.num_workers": workers, "Predict.cpu_threads": threads,
            "Predict.streams": streams,
            "Predict.backend": backend or ("auto" if hpi else None),
            "Predict.precision": precision or ("auto" if hpi else None),
            "Predict.input": list(inputs) if inputs else None})
        pred = cfg["Predict"]
        sources = pred["input"] if isinstance(pred["input"], list) else ([pred["input"]] if pred["input"] else [])
        if not sources:
            raise UsageError("no inputs given", hint="e.g. imgfeat embed photos/ --out feats.jsonl")
        if "-" in sources:
            sources = [s for s in sources if s != "-"] + read_path_list(sys.stdin)
        if not out_file:
            raise UsageError("no output file given", hint="use --out feats.jsonl (or .npy)")
        if pred["model_dir"] and pred["weights"]:
            raise UsageError("give either --model-dir or --weights, not both")
        bs = pred["batch_size"] or default_batch(cfg["Global"]["device"])
        # plan the streams before loading, so the model here runs with the per-stream threads and
        # is one of them
        items = collect_inputs(sources, parse_shard(shard))  # walked once: run_embed takes the items
        plan = streams_plan(pred.get("streams"), pred["cpu_threads"], len(items), cfg["Global"]["device"],
                            rebuildable=not pred["weights"])
        feature_model = load_model(cfg, out, plan.threads if plan.streams > 1 else None)
        with out.progress("images") as progress:
            res = run_embed(items, out_file, feature_model, pred["format"], bs, pred["fp16"], resume, overwrite,
                            shard, pred["num_workers"], progress, streams=plan.streams, threads=plan.threads)
        fsutil.write_text(Path(out_file).with_name(Path(out_file).name + ".config.yaml"), cfgmod.dump_yaml(cfg))
        doc = res.to_dict()
        out.emit(doc, summary_table(doc))
        if res.total == 0:
            raise UsageError("no images found in the inputs", hint="check the paths; extensions: jpg jpeg png bmp webp tif gif")
        if res.failed and res.embedded + res.already_done == 0:
            raise ImgfeatError(f"no image could be embedded ({res.failed} failed)", hint=f"see {res.errors_file}")
        if res.failed:
            raise PartialFailure(f"{res.failed} of {res.total} inputs were skipped", res,
                                 hint=f"reasons in {res.errors_file}")
