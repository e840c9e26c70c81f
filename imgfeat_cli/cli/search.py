"""``imgfeat search``: query images (or precomputed vectors) against a gallery index."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (AllowOtherOpt, BackendOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, JsonOpt,
                                     ModelDirOpt, ModelOpt, Output, PrecisionOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import INPUT, OUTPUT, ImgfeatCommand, examples, override_opt, shown_default
from imgfeat_cli.cli.reportopts import ImageRootOpt, ReportOpt, ReportRowsOpt
from imgfeat_cli.reports.limits import DEFAULT_QUERY_ROWS

EXAMPLES = examples("imgfeat search photo.jpg shelf/ --index drink_index --top-k 3",
                    "imgfeat search --embeddings queries.jsonl --index drink_index --out results.jsonl",
                    "imgfeat search photo.jpg --index drink_index --no-threshold --json",
                    "imgfeat search shelf/ --index drink_index --out shelf.jsonl --report search_report/")


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
    index_dir: Annotated[str, typer.Option("--index", "-i", metavar="DIR", rich_help_panel=INPUT,
                                           help="Index folder.", show_default=False)],
    inputs: Annotated[Optional[List[str]], typer.Argument(
        metavar="IMAGES", help="Query images, folders (recursive) or http(s) URLs.", show_default=False)] = None,
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
    report: ReportOpt = None, report_rows: ReportRowsOpt = DEFAULT_QUERY_ROWS,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT,
                                            help="Replace an existing --out file (once the new one is complete); let "
                                            "--report write into a folder holding other files (they are kept).")
                         ] = False,
    image_root: ImageRootOpt = None,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    batch: BatchSizeOpt = None, backend: BackendOpt = None, precision: PrecisionOpt = None,
    allow_other_model: AllowOtherOpt = False,
    config: ConfigOpt = None, override: override_opt("Search.top_k=10") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Search an index: one JSON line per query with its best matches.

    Each line is {"input_path", "labels", "scores", "ids"}, best first. Query images are embedded
    with the index's own model unless model options name one (which must be the same model, or
    --allow-other-model). Exit 4 when some query images could not be read."""
    from imgfeat_cli.api.retrieval import search as run_search
    from imgfeat_cli.cli.embedopts import model_flags, model_source
    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common import paths
    from imgfeat_cli.common.errors import ImgfeatError, UsageError
    from imgfeat_cli.reports.spec import ReportSpec
    from imgfeat_cli.retrieval.search import write_results

    out = Output(json_, quiet)
    explicit: set = set()
    cfg = cfgmod.resolve("search", config, override or [], {
        **model_flags(model, model_dir, weights, device, batch, backend, precision),
        "Search.top_k": top_k, "Search.threshold": threshold}, note=out.note, output_option="--out/-O",
        explicit=explicit)
    k, thr = cfg["Search"]["top_k"], None if no_threshold else cfg["Search"]["threshold"]
    if bool(inputs) == bool(embeddings):
        raise UsageError("give query images or --embeddings FILE (one of the two)",
                         hint="e.g. imgfeat search photo.jpg --index DIR")
    if out_file:
        paths.check_output_file(out_file, overwrite)  # before the index and the model are loaded
    with out.progress("queries") as progress:
        run = run_search(index_dir, list(inputs) if inputs else None, model_source(cfg, explicit, out.warn),
                         embeddings=embeddings, top_k=k, threshold=thr, allow_other_model=allow_other_model,
                         report=ReportSpec(report, overwrite, report_rows, image_root) if report else None,
                         progress=progress, log=out.log)
        for note in run.notes:
            out.note(note)
        for warning in run.warnings:
            out.warn(warning)
        doc: Dict[str, Any] = {"index": index_dir, "metric_type": run.index.metric_type, "top_k": k,
                               "threshold": thr, "warnings": run.warnings}
        if json_:
            doc["results"] = list(run.results)
            count = len(doc["results"])
            if out_file:
                write_results(out_file, doc["results"])
        elif out_file:
            count = write_results(out_file, run.results)
        else:
            count = _stdout_lines(run.results)
    doc["errors"] = [{"input_path": p, "error": e} for p, e in run.errors]
    page = run.finish()
    if page:
        doc["report"] = page
    if json_:
        out.json(doc)
    if out_file:
        out.log(f"wrote {count} results to {out_file}")
    if page:
        out.log(f"wrote report {page}")
    if run.errors and not count:
        raise ImgfeatError(f"no query image could be read ({len(run.errors)} failed; first: {run.errors[0][1]})")
    out.partial(len(run.errors), len(run.errors) + count, "query images could not be read and have no result",
                run.errors)


def register(app: typer.Typer) -> None:
    app.command("search", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(search))
