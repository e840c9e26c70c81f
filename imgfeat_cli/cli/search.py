"""``imgfeat search``: query images (or precomputed vectors) against a gallery index."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Tuple

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (BackendOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt,
                                     Output, PrecisionOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import INPUT, OUTPUT, ImgfeatCommand, examples, override_opt, shown_default
from imgfeat_cli.cli.index import batch_size, lazy_model, model_flags

EXAMPLES = examples("imgfeat search photo.jpg shelf/ --index drink_index --top-k 3",
                    "imgfeat search --embeddings queries.jsonl --index drink_index --out results.jsonl",
                    "imgfeat search photo.jpg --index drink_index --no-threshold --json")


def _stdout_lines(results: Any) -> int:
    count = 0
    for res in results:
        sys.stdout.write(json.dumps(res, ensure_ascii=False) + "\n")
        count += 1
        if count % 256 == 0:
            sys.stdout.flush()
    sys.stdout.flush()
    return count


def search(
    inputs: Annotated[Optional[List[str]], typer.Argument(
        metavar="IMAGES", help="Query images, folders (recursive) or http(s) URLs.", show_default=False)] = None,
    index_dir: Annotated[str, typer.Option("--index", "-i", metavar="DIR", rich_help_panel=INPUT,
                                           help="Index folder.", show_default=False)] = "",
    embeddings: Annotated[Optional[str], typer.Option("--embeddings", "-e", metavar="FILE", rich_help_panel=INPUT,
                                                      help="Search precomputed query vectors (.jsonl, .npy or "
                                                      ".parquet) instead of images.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", metavar="N", rich_help_panel=OUTPUT,
                                                 help="Results per query.",
                                                 show_default=shown_default("Search.top_k"))] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", metavar="SCORE", rich_help_panel=OUTPUT,
        help="No match when the best score is worse (IP: below, L2: above).",
        show_default=shown_default("Search.threshold"))] = None,
    no_threshold: Annotated[bool, typer.Option("--no-threshold", rich_help_panel=OUTPUT,
                                               help="Keep every query's top k.")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", "-O", metavar="FILE", rich_help_panel=OUTPUT,
                                                    help="Write results here (JSONL) instead of stdout.",
                                                    show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT,
                                            help="Replace an existing --out file (once the new one is complete).")
                         ] = False,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    batch: BatchSizeOpt = None, backend: BackendOpt = None, precision: PrecisionOpt = None,
    config: ConfigOpt = None, override: override_opt("Search.top_k=10") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Search an index: one JSON line per query with its best matches.

    Each line is {"input_path", "labels", "scores", "ids"}, best first. Exit 4 when some query
    images could not be read."""
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import fsutil
    from imgfeat_cli.common.errors import ImgfeatError, PartialFailure, UsageError
    from imgfeat_cli.pipeline.inputs import expand
    from imgfeat_cli.retrieval.index import Index
    from imgfeat_cli.retrieval.search import read_query_vectors, search_images, search_vectors, write_results

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("search", config, override or [], {
        **model_flags(model, model_dir, weights, device, batch, backend, precision),
        "Search.top_k": top_k, "Search.threshold": threshold}, note=out.note, output_option="--out/-O")
    k, thr = cfg["Search"]["top_k"], None if no_threshold else cfg["Search"]["threshold"]
    if not index_dir:
        raise UsageError("no index given", hint="pass --index DIR (built with `imgfeat index build`)")
    if bool(inputs) == bool(embeddings):
        raise UsageError("give query images or --embeddings FILE (one of the two)",
                         hint="e.g. imgfeat search photo.jpg --index DIR")
    if out_file:
        fsutil.check_output_file(out_file, overwrite)  # before the index and the model are loaded
    index = Index.load(index_dir)
    for note in index.notes:
        out.warn(note)
    errors: List[Tuple[str, str]] = []
    with out.progress("queries") as progress:
        if embeddings:
            feats, paths = read_query_vectors(embeddings)
            results = search_vectors(index, feats, paths, k, thr, progress)
        else:
            items = [it.source for it in expand(list(inputs or []))]
            if not items:
                raise UsageError("no images found in the inputs")
            results = search_images(index, lazy_model(cfg, out), items, k, thr, errors, batch_size(cfg),
                                    progress)
        doc: Dict[str, Any] = {"index": index_dir, "metric_type": index.metric_type, "top_k": k,
                               "threshold": thr}
        if json_:
            doc["results"] = list(results)
            count = len(doc["results"])
            if out_file:
                write_results(out_file, doc["results"])
        elif out_file:
            count = write_results(out_file, results)
        else:
            count = _stdout_lines(results)
    doc["errors"] = [{"input_path": p, "error": e} for p, e in errors]
    if json_:
        out.json(doc)
    if out_file:
        out.log(f"wrote {count} results to {out_file}")
    for path, why in errors[:5]:
        out.warn(why if why.startswith(path) else f"{path}: {why}")
    if errors and not count:
        raise ImgfeatError(f"no query image could be read ({len(errors)} failed)")
    if errors:
        raise PartialFailure(f"{len(errors)} query images could not be read and have no result", doc)


def register(app: typer.Typer) -> None:
    app.command("search", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(search))
