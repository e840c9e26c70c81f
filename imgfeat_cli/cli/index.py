"""``imgfeat index build|add|remove|info``: gallery indexes in PaddleX's PP-ShiTuV2 format."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (AllowOtherOpt, BackendOpt, BatchSizeOpt, ConfigOpt, DeviceOpt, IndexDirOpt,
                                     JsonOpt, ModelDirOpt, ModelOpt, Output, PrecisionOpt, QuietOpt, WeightsOpt,
                                     handle_errors)
from imgfeat_cli.cli.helpdoc import (INPUT, OUTPUT, ImgfeatCommand, ImgfeatSubGroup, examples, override_opt,
                                     shown_default)

GalleryOpt = Annotated[str, typer.Option("--gallery", "-g", metavar="PATH", rich_help_panel=INPUT, show_default=False,
                                         help="A 'path label' list (space or tab; labels may hold spaces), a dataset "
                                         "folder (its gallery.txt), or embeddings (.jsonl/.npy/.parquet, a Parquet "
                                         "folder, s3://bucket/prefix/; labels from a label column or --labels).")]
RootOpt = Annotated[Optional[str], typer.Option("--root", metavar="DIR", rich_help_panel=INPUT,
                                                help="Folder the list's paths are relative to.",
                                                show_default="the list's folder")]
LabelsOpt = Annotated[Optional[str], typer.Option("--labels", metavar="FILE", rich_help_panel=INPUT,
                                                  help="Labels of an embeddings gallery, one per line.",
                                                  show_default=False)]

BUILD_EXAMPLES = ("imgfeat index build -g gallery/drink_label.txt --out drink_index --model PP-ShiTuV2_rec",
                  "imgfeat index build -g gallery.jsonl --out idx --index-type HNSW32",
                  "imgfeat index build -g s3://bucket/feats/ --labels labels.txt --out idx --index-type auto "
                  "--max-memory 4GB")
ADD_EXAMPLES = ("imgfeat index add --index drink_index -g new_items.txt",)
REMOVE_EXAMPLES = ("imgfeat index remove --index drink_index --ids 3,7",
                   "imgfeat index remove --index drink_index --label 'green tea'")
INFO_EXAMPLES = ("imgfeat index info --index drink_index --json", "imgfeat index info --index drink_index --ids")

index_app = typer.Typer(cls=ImgfeatSubGroup, help="Build and maintain gallery indexes (PaddleX PP-ShiTuV2 format: "
                        "vector.index + id_map.yaml).", no_args_is_help=True,
                        epilog=examples(*BUILD_EXAMPLES, *ADD_EXAMPLES, *REMOVE_EXAMPLES, *INFO_EXAMPLES),
                        context_settings={"help_option_names": ["-h", "--help"]})


def recall_text(build: Optional[Dict[str, Any]]) -> str:
    """The recall recorded at build time, with how it was measured."""
    if not build or build.get("recall_at_10") is None:
        return "not measured"
    depth = next((f", {k} {build[k]}" for k in ("nprobe", "efSearch") if build.get(k)), "")
    how = build.get("recall_note") or f"{build.get('recall_queries')} held-out queries vs exact search{depth}"
    return f"{build['recall_at_10']:.3f} ({how})"


def render_report(out: Output, index: Any) -> None:
    """The summary of build/add/remove, warnings for its notes, and exit 4 when inputs failed."""
    rep = index.report
    from imgfeat_cli.retrieval.modelrecord import UNCHECKED_NOTE

    for note in rep.notes:
        (out.note if note == UNCHECKED_NOTE else out.warn)(note)
    doc = {**rep.to_dict(), "index_type": index.index_type, "factory": index.factory,
           "metric_type": index.metric_type, "dim": index.dim, "count": index.count, "model": index.model,
           "build": index.build}
    table = Table(title=f"index {rep.action}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [("folder", str(rep.folder)), ("type", f"{_type(index.index_type, index.factory)}, {index.metric_type}"),
            ("dim", str(index.dim)), ("items", str(index.count))]
    rows += [("added", str(rep.added))] if rep.action != "remove" else [("removed", str(rep.removed))]
    if rep.skipped_known or rep.skipped_repeated:
        rows.append(("skipped", f"{rep.skipped_known} already indexed, {rep.skipped_repeated} repeated"))
    if rep.errors:
        rows.append(("failed", str(len(rep.errors))))
    if rep.action == "build" and index.build:
        rows.append(("recall@10", recall_text(index.build)))
    for k, v in rows:
        table.add_row(k, escape(v))
    out.emit(doc, table, essential=str(rep.folder))
    out.partial(len(rep.errors), len(rep.errors) + rep.added, "gallery images could not be embedded and were left "
                "out (fix them, then `imgfeat index add` the rest)", rep.errors)


def _type(index_type: str, factory: str) -> str:
    """An index type as people read it: ``Flat``, or ``IVF (IVF256,Flat)`` where the factory says more."""
    return index_type if factory == index_type else f"{index_type} ({factory})"


@index_app.command("build", cls=ImgfeatCommand, epilog=examples(*BUILD_EXAMPLES))
@handle_errors
def build(
    gallery: GalleryOpt,
    out_dir: Annotated[str, typer.Option("--out", "-O", metavar="DIR", rich_help_panel=OUTPUT,
                                         help="Index folder to write.", show_default=False)],
    root: RootOpt = None, labels: LabelsOpt = None,
    index_type: Annotated[Optional[str], typer.Option("--index-type", metavar="TYPE", rich_help_panel=OUTPUT,
                                                      help="Flat (exact), IVF, HNSW32, or auto (the best "
                                                      "that fits --max-memory, its recall measured).",
                                                      show_default=shown_default("Index.index_type"))] = None,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", metavar="SIZE", rich_help_panel=OUTPUT,
                                                      help="Memory budget of an auto index (8GB, 512MB).",
                                                      show_default="no limit")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", metavar="NAME", rich_help_panel=OUTPUT,
                                                  help="IP (cosine on normalised features) or L2.",
                                                  show_default=shown_default("Index.metric_type"))] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT,
                                            help="Rebuild an existing index (kept as .bak).")] = False,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    batch: BatchSizeOpt = None, backend: BackendOpt = None, precision: PrecisionOpt = None,
    config: ConfigOpt = None, override: override_opt("Index.ivf_nlist=256") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build an index from a gallery; images are embedded with the model options, which the index records."""
    from imgfeat_cli.api.retrieval import build_index
    from imgfeat_cli.cli.embedopts import model_flags, model_source
    from imgfeat_cli.common import config as cfgmod

    out = Output(json_, quiet)
    cfg = cfgmod.resolve("index", config, override or [], {
        **model_flags(model, model_dir, weights, device, batch, backend, precision),
        "Index.index_type": index_type, "Index.metric_type": metric, "Index.max_memory": max_memory},
        note=out.note, output_option="--out/-O")
    ix = cfg["Index"]
    with out.progress("items") as progress:
        index = build_index(gallery, out_dir, model_source(cfg, warn=out.warn), root=root, labels_file=labels,
                            index_type=ix["index_type"], metric_type=ix["metric_type"], nlist=ix["ivf_nlist"],
                            nprobe=ix["ivf_nprobe"], ef_search=ix["hnsw_ef_search"], overwrite=overwrite,
                            max_memory=ix["max_memory"], target_recall=ix["target_recall"],
                            label_from=ix["label_from"], progress=progress, log=out.log)
    render_report(out, index)


@index_app.command("add", cls=ImgfeatCommand, epilog=examples(*ADD_EXAMPLES))
@handle_errors
def add(
    index_dir: IndexDirOpt,
    gallery: GalleryOpt, root: RootOpt = None, labels: LabelsOpt = None,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    batch: BatchSizeOpt = None, backend: BackendOpt = None, precision: PrecisionOpt = None,
    allow_other_model: AllowOtherOpt = False,
    config: ConfigOpt = None, override: override_opt("Predict.backend=paddle") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add the gallery items the index does not hold yet (ids continue; only new images are embedded).

    New images are embedded with the index's own model unless model options name one, which must
    be the same model (or --allow-other-model)."""
    from imgfeat_cli.api.retrieval import add_to_index
    from imgfeat_cli.cli.embedopts import model_flags, model_source
    from imgfeat_cli.common import config as cfgmod

    out = Output(json_, quiet)
    explicit: set = set()
    cfg = cfgmod.resolve("index", config, override or [],
                         model_flags(model, model_dir, weights, device, batch, backend, precision), note=out.note,
                         explicit=explicit)
    with out.progress("items") as progress:
        index = add_to_index(index_dir, gallery, model_source(cfg, explicit, out.warn), root=root, labels_file=labels,
                             allow_other_model=allow_other_model, progress=progress, log=out.log)
    render_report(out, index)


def parse_ids(text: Optional[str]) -> List[int]:
    from imgfeat_cli.common.errors import UsageError

    ids = []
    for part in (text or "").replace(" ", ",").split(","):
        if part.strip():
            try:
                ids.append(int(part))
            except ValueError:
                raise UsageError(f"--ids: {part.strip()!r} is not an integer id", hint="e.g. --ids 3,7,12") from None
    return ids


@index_app.command("remove", cls=ImgfeatCommand, epilog=examples(*REMOVE_EXAMPLES))
@handle_errors
def remove(
    index_dir: IndexDirOpt,
    ids: Annotated[Optional[str], typer.Option("--ids", metavar="IDS", help="Comma-separated ids.",
                                               show_default=False)] = None,
    ids_file: Annotated[Optional[str], typer.Option("--ids-file", metavar="FILE", help="File whose lines start "
                                                    "with an id.", show_default=False)] = None,
    label: Annotated[Optional[str], typer.Option("--label", metavar="LABEL", help="Remove every item with this "
                                                 "label.", show_default=False)] = None,
    path: Annotated[Optional[str], typer.Option("--path", metavar="PATH", help="Remove the item(s) added from this "
                                                "input path.", show_default=False)] = None,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Remove items (Flat and IVF indexes; HNSW32 cannot remove). `imgfeat index info --ids` lists them."""
    from imgfeat_cli.api.retrieval import remove_from_index

    out = Output(json_, quiet)
    render_report(out, remove_from_index(index_dir, parse_ids(ids), ids_file=ids_file, label=label, path=path))


@index_app.command("info", cls=ImgfeatCommand, epilog=examples(*INFO_EXAMPLES))
@handle_errors
def info(
    index_dir: Annotated[Optional[str], typer.Option("--index", "-i", metavar="DIR", help="Index folder. Required.",
                                                     show_default=False)] = None,
    folder: Annotated[Optional[str], typer.Argument(metavar="DIR", hidden=True, show_default=False)] = None,
    ids: Annotated[bool, typer.Option("--ids", help="List every item: id, label and input path.")] = False,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Show an index: type, metric, dim, count, labels, the model it was built with (and with --ids its items)."""
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.retrieval.index import Index
    from imgfeat_cli.retrieval.modelrecord import describe

    out = Output(json_, quiet)
    where = index_dir or folder
    if not where or (index_dir and folder and index_dir != folder):
        raise UsageError("name one index folder", hint="imgfeat index info --index DIR")
    index = Index.load(where)
    for note in index.notes:
        out.warn(note)
    doc = {"folder": where, **index.info()}
    if ids:
        doc["items"] = [{"id": i, "label": label, "input_path": index.paths.get(i)}
                        for i, label in sorted(index.id_map.items())]
    table = Table(title=f"index {where}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    labels = doc["labels"]
    shown = ", ".join(f"{k} ({v})" for k, v in list(labels.items())[:10]) + (" ..." if len(labels) > 10 else "")
    for k, v in (("type", _type(doc["index_type"], doc["factory"])), ("metric", doc["metric_type"]),
                 ("dim", doc["dim"]), ("items", doc["count"]), ("labels", f"{doc['num_labels']}: {shown}"),
                 ("input paths known", doc["paths_known"]), ("next id", doc["next_id"]),
                 ("model", describe(doc["model"]) if doc["model"] else "not recorded (cannot be checked)"),
                 ("recall@10", recall_text(doc["build"]))):
        table.add_row(k, escape(str(v)))
    for note in doc["model_notes"]:
        table.add_row("other model", escape(note))
    out.emit(doc, _with_items(table, doc.get("items")))


def _with_items(summary: Table, items: Optional[List[Dict[str, Any]]]) -> Any:
    """The summary, and below it the items table (``--ids``)."""
    if items is None:
        return summary
    from rich.console import Group

    rows = Table(title="items", show_header=True)
    for col in ("id", "label", "input path"):
        rows.add_column(col)
    for item in items:
        rows.add_row(str(item["id"]), escape(item["label"]), escape(item["input_path"] or "-"))
    return Group(summary, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
