"""``search`` and the index verbs, each with the index's own model.

An index records the model that made its vectors (:mod:`imgfeat_cli.retrieval.modelrecord`). Here
that record is used: without a model, queries and new gallery images are embedded with the
index's own; with another model (or query vectors whose file names another), the job is refused
before any image is embedded, unless ``allow_other_model`` (then a warning, kept in the result and,
for ``add``, in the index). faiss is checked before any model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from imgfeat_cli.api.embedding import ModelLike, as_source
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.paths import refuse_empty
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.models.source import ModelSource
from imgfeat_cli.pipeline.inputs import expand, no_images
from imgfeat_cli.pipeline.predictor import FeatureModel
from imgfeat_cli.reports.spec import ReportSpec
from imgfeat_cli.retrieval import builder, layout, modelrecord
from imgfeat_cli.retrieval.index import Index

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


class LazyModel:
    """A model loaded on first use: a gallery of embeddings (or nothing new to add) never loads
    one, and faiss and the index are checked before the seconds a model takes."""

    def __init__(self, source: Callable[[], ModelSource], log: Log = _quiet) -> None:
        self._source, self._log, self._model = source, log, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._model is None:
            source = self._source()
            self._log(f"loading {source.label} ...")
            self._model = source.load(FeatureModel, log=self._log)
            self._log(f"model {self._model.name}: {self._model.backend} {self._model.precision} on {self._model.device}")
        return getattr(self._model, name)


def _model_for(model: ModelLike, record: Optional[Dict[str, Any]], log: Log, allow_other: bool = False,
               what: str = "the query vectors") -> Tuple[Any, int]:
    """(model to embed with, batch size): a loaded model as it is, else a lazy one for the source
    named, or the index's own when none is. A named model whose files show it is not the index's
    is refused here, before it loads."""
    if isinstance(model, FeatureModel):
        return model, model.request.batch if model.request is not None else 0
    given = model if isinstance(model, ModelSource) else (as_source(model) if model is not None else ModelSource())
    from imgfeat_cli.common.schemas import defaults

    def choose() -> ModelSource:  # the index's own model is chosen (and said) only when one is needed
        return modelrecord.source_for(record, given, log, default=defaults("index")["Global"]["model"])

    if given.given and record and not allow_other:
        ahead = given.fingerprint()
        if ahead is not None:
            ahead["source"] = {"given": given.label}
            modelrecord.check(record, ahead, what)
    return LazyModel(choose, log), given.batch


def build_index(gallery: Any, out: Optional[Any] = None, model: ModelLike = None, *,
                labels: Optional[Sequence[Any]] = None, paths: Optional[Sequence[Optional[str]]] = None,
                root: Optional[str] = None, labels_file: Optional[str] = None, index_type: str = "Flat",
                metric_type: str = "IP", nlist: Optional[int] = None, nprobe: Optional[int] = None,
                ef_search: Optional[int] = None, overwrite: bool = False, max_memory: Optional[str] = None,
                target_recall: Optional[float] = None, label_from: Optional[str] = None,
                progress: ProgressFn = null_progress, log: Log = _quiet) -> Index:
    """Build an index from a gallery (a ``path label`` list, a dataset folder, an embeddings file
    or a folder or ``s3://`` prefix of Parquet files, streamed, or an array with ``labels``); with
    ``out``, write it there (PaddleX's layout). Images are embedded with ``model`` (default: the
    default official model); the index records it. ``index_type="auto"`` picks the index that fits
    ``max_memory`` (e.g. ``"2GB"``) and tunes it to ``target_recall`` (measured, recorded).
    Example::

        from imgfeat_cli import ModelSource, build_index
        index = build_index("gallery/drink_label.txt", "drink_index", ModelSource(model_dir="inference"))
        print(index.count, index.report.errors)
    """
    refuse_empty(gallery=gallery, out=out, labels=labels_file, root=root)
    layout.faiss_module()  # a missing faiss is said before a model loads
    loaded, batch = _model_for(model, None, log)
    return builder.build_index(gallery, out, labels=labels, paths=paths, root=root, labels_file=labels_file,
                               model=loaded, index_type=index_type, metric_type=metric_type, nlist=nlist,
                               nprobe=nprobe, ef_search=ef_search, batch_size=batch or None, overwrite=overwrite,
                               max_memory=max_memory, target_recall=target_recall, label_from=label_from,
                               progress=progress)


def add_to_index(folder: Any, gallery: Any, model: ModelLike = None, *, labels: Optional[Sequence[Any]] = None,
                 paths: Optional[Sequence[Optional[str]]] = None, root: Optional[str] = None,
                 labels_file: Optional[str] = None, allow_other_model: bool = False,
                 progress: ProgressFn = null_progress, log: Log = _quiet) -> Index:
    """Add the gallery items the index does not hold yet, embedded with the index's own model
    (or ``model``, which must be the same unless ``allow_other_model``). Example::

        from imgfeat_cli import add_to_index
        index = add_to_index("drink_index", "new_items.txt")   # the model the index was built with
        print(index.report.added)
    """
    refuse_empty(index=folder, gallery=gallery, labels=labels_file, root=root)
    layout.faiss_module()
    loaded, batch = _model_for(model, layout.read_model_record(Path(folder)), log, allow_other_model,
                               "the new gallery vectors")
    return builder.add_to_index(folder, gallery, labels=labels, paths=paths, root=root, labels_file=labels_file,
                                model=loaded, batch_size=batch or None, progress=progress,
                                allow_other_model=allow_other_model)


def remove_from_index(folder: Any, ids: Sequence[int] = (), *, ids_file: Optional[str] = None,
                      label: Optional[str] = None, path: Optional[str] = None) -> Index:
    """Remove items by id, ids file, label or input path (Flat and IVF; HNSW is refused)."""
    layout.faiss_module()
    return builder.remove_from_index(folder, ids, ids_file=ids_file, label=label, path=path)


@dataclass
class SearchRun:
    """A search as it runs: ``results`` yields one dict per query (``input_path``, ``labels``,
    ``scores``, ``ids``, best first); ``errors`` fills with ``(input path, reason)`` of the query
    images that could not be read; ``warnings`` says what the caller should know."""

    index: Index
    top_k: int
    threshold: Optional[float]
    results: Iterator[Dict[str, Any]]
    errors: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # worth knowing, nothing to act on
    model: Optional[str] = None  # the model the queries were embedded with, in a few words
    pages: Any = None  # the HTML report being gathered (``report=``), written by finish()
    folder: Optional[str] = None  # the index folder, when the index was given as one

    def finish(self) -> Optional[str]:
        """Once ``results`` is consumed: write the HTML report, if one was asked for; its path."""
        if self.pages is None:
            return None
        settings = {"index": self.folder, "top_k": self.top_k, "threshold": self.threshold}
        return str(self.pages.write(self.index, settings, self.errors))


def search(index: Any, queries: Optional[Sequence[Any]] = None, model: ModelLike = None, *,
           embeddings: Optional[str] = None, top_k: Optional[int] = None, threshold: Any = "default",
           allow_other_model: bool = False, report: Optional[ReportSpec] = None, progress: ProgressFn = null_progress,
           log: Log = _quiet) -> SearchRun:
    """Search ``index`` (an :class:`Index` or its folder) with query images (embedded with the
    index's own model unless ``model`` is given) or with precomputed ``embeddings`` (a feature
    file). ``top_k`` and ``threshold`` default as in ``imgfeat search`` (5, and PaddleX's 0.5:
    a query whose best score is lower has no match); ``threshold=None`` keeps every top k. Example::

        from imgfeat_cli import search
        run = search("drink_index", ["shelf/"], top_k=3)
        for res in run.results:
            print(res["input_path"], res["labels"][:1], res["scores"][:1])
    """
    from imgfeat_cli.common.schemas import defaults
    from imgfeat_cli.retrieval.search import read_query_vectors, search_images, search_vectors

    preset = defaults("search")["Search"]  # the CLI's defaults: top 5, PaddleX's threshold 0.5
    top_k = preset["top_k"] if top_k is None else int(top_k)
    threshold = preset["threshold"] if threshold == "default" else threshold
    if (queries is None) == (embeddings is None):
        raise UsageError("give query images or an embeddings file (one of the two)",
                         hint="e.g. imgfeat search photo.jpg --index DIR")
    from imgfeat_cli.reports.search_report import SearchReport

    pages = SearchReport(report.folder, report.overwrite, report.rows, report.image_root) if report else None
    idx = index if isinstance(index, Index) else Index.load(index)
    run = SearchRun(idx, top_k, threshold, iter(()), warnings=list(idx.notes), notes=modelrecord.notes_for(idx.model),
                    pages=pages, folder=None if isinstance(index, Index) else str(index))
    if embeddings is not None:
        feats, paths, recorded = read_query_vectors(embeddings)
        idx.check_features(feats[:1], "query features")  # a dim mismatch fails before any result
        _check(idx, recorded, f"the query vectors of {embeddings}", allow_other_model, run)
        run.results = _watched(search_vectors(idx, feats, paths, top_k, threshold, progress), pages)
        return run
    items = [it.source for it in expand(list(queries or []))]
    if not items:
        raise no_images()
    loaded, batch = _model_for(model, idx.model, log, allow_other_model)
    _check(idx, loaded.record(idx.dim), "the query vectors", allow_other_model, run)
    run.model = modelrecord.describe(loaded.record(idx.dim))
    run.results = _watched(search_images(idx, loaded, items, top_k, threshold, run.errors, batch or None, progress),
                           pages)
    return run


def _watched(results: Iterator[Dict[str, Any]], pages: Any) -> Iterator[Dict[str, Any]]:
    return pages.watch(results) if pages is not None else results


def _check(index: Index, record: Optional[Dict[str, Any]], what: str, allow: bool, run: SearchRun) -> None:
    warning = modelrecord.check(index.model, record, what, allow)
    if warning:
        run.warnings.append(warning)


__all__ = ["LazyModel", "SearchRun", "add_to_index", "build_index", "remove_from_index", "search"]
