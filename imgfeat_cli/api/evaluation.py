"""``evaluate``: Recall@k and mAP from a dataset and a model, or from two embedding files.

A dataset is embedded through the pipeline (its gallery and query lists give the labels). A
``.pdparams`` checkpoint written by ``imgfeat train`` is scored through the inference folder
exported beside it when its digests prove it holds those very weights, and such a folder (given
itself, without an engine) with the engine training scored it with: the figure training recorded,
rather than another engine's or a dygraph pass whose float differences can flip near-tied queries
(an untrained model's features are all near-ties). Two
embedding files must come from one model (as their files record it) unless ``allow_other_model``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from imgfeat_cli.api.embedding import ModelLike, as_source
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.pipeline.predictor import FeatureModel
from imgfeat_cli.pipeline.readers import recorded_model
from imgfeat_cli.reports.spec import ReportSpec
from imgfeat_cli.retrieval import modelrecord
from imgfeat_cli.retrieval.metrics import RetrievalMetrics

Log = Callable[[str], None]


def evaluate(dataset: Optional[str] = None, model: ModelLike = None, *, query: Optional[str] = None,
             gallery: Optional[str] = None, query_labels: Optional[str] = None, gallery_labels: Optional[str] = None,
             ks: Sequence[int] = (1, 5), exclude_same_path: bool = False, allow_other_model: bool = False,
             report: Optional[ReportSpec] = None, progress: ProgressFn = null_progress,
             log: Log = lambda m: None) -> RetrievalMetrics:
    """Score retrieval: a ``dataset`` folder with ``model``, or ``query`` and ``gallery``
    embedding files (labels from their ``label`` column or from label files). With ``report``
    (a :class:`~imgfeat_cli.reports.spec.ReportSpec`), also write the HTML report; its path is
    ``metrics.report``. Example::

        from imgfeat_cli import ModelSource, evaluate
        m = evaluate("dataset/", ModelSource(model_dir="output/inference"))
        print(m.metrics())        # {"recall1": ..., "recall5": ..., "mAP": ...}
    """
    if (query or gallery) and dataset:
        raise UsageError("give either a dataset or query/gallery embeddings, not both")
    if not (query or gallery or dataset):
        raise UsageError("nothing to evaluate", hint="pass --dataset DIR, or --query Q --gallery G")
    from imgfeat_cli.reports.eval_report import EvalReport

    pages = EvalReport(report.folder, report.overwrite, report.rows, report.image_root or dataset, ks) \
        if report is not None else None  # the report folder is vetted before any work
    if query or gallery:
        metrics = _from_files(query, gallery, query_labels, gallery_labels, ks, exclude_same_path, allow_other_model,
                              progress, pages)
    else:
        from imgfeat_cli.retrieval.evaluate import eval_dataset

        loaded, batch = _dataset_model(model, log)
        metrics = eval_dataset(dataset, loaded, ks, exclude_same_path, batch, progress, pages)
    if pages is not None:
        metrics.report = str(pages.write(metrics))
    return metrics


def _dataset_model(model: ModelLike, log: Log) -> Any:
    """(loaded model, batch size) for a dataset evaluation (see the module docstring)."""
    if isinstance(model, FeatureModel):
        return model, None
    source = as_source(model)
    from imgfeat_cli.training.checkpoint import SCORING_BACKEND, exported_by_training, exported_inference

    if source.weights and not source.model_dir:
        twin = exported_inference(source.weights)
        if twin is not None:
            log(f"{source.weights} is a training checkpoint: scoring its exported model {twin} "
                "(the figure training recorded)")
            source = source.replace(model_dir=str(twin), weights=None, backend=SCORING_BACKEND)
    elif source.model_dir and source.backend is None and source.precision is None \
            and exported_by_training(source.model_dir):
        log(f"{source.model_dir} was exported by imgfeat train: scoring it with paddle.inference as training "
            "did (the figure training recorded; --backend to choose another engine)")
        source = source.replace(backend=SCORING_BACKEND)
    log(f"loading {source.label} ...")
    loaded = source.load(FeatureModel, log=log)
    log(f"model {loaded.name}: {loaded.backend} {loaded.precision} on {loaded.device}")
    return loaded, source.batch


def _from_files(query: Optional[str], gallery: Optional[str], query_labels: Optional[str],
                gallery_labels: Optional[str], ks: Sequence[int], exclude_same_path: bool, allow_other: bool,
                progress: ProgressFn, pages: Any = None) -> RetrievalMetrics:
    from imgfeat_cli.retrieval.embfiles import load_query_gallery
    from imgfeat_cli.retrieval.metrics import evaluate as score

    if not (query and gallery):
        raise UsageError("--query and --gallery go together")
    (qf, ql, qp), (gf, gl, gp) = load_query_gallery(query, gallery, query_labels, gallery_labels)
    modelrecord.check(recorded_model(Path(gallery)), recorded_model(Path(query)), f"the query vectors of {query}",
                      allow_other, what_of=f"the gallery vectors of {gallery}")
    if exclude_same_path and (qp is None or gp is None):
        raise UsageError("--exclude-same-path needs input paths in both embedding files")
    return score(qf, ql, gf, gl, ks, qp, gp, exclude_same_path, progress=progress, collect=pages)
