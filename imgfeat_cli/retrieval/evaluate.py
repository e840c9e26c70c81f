"""``eval``: retrieval metrics from precomputed embeddings or from a dataset and a model.

Embedding files are read (and vetted) by :mod:`imgfeat_cli.retrieval.embfiles`, whose
``load_embeddings`` and ``load_query_gallery`` are re-exported here. A dataset is embedded with the
``embed`` engine (parallel decoding, batched inference) and its gallery/query lists supply the labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from imgfeat_cli.common import fsutil
from imgfeat_cli.datasets.dataset import read_list, resolve_inside
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.retrieval.metrics import RetrievalMetrics, evaluate
from imgfeat_cli.common.progress import ProgressFn, null_progress

RESULT_FILE = "evaluate_result.json"


def split_paths(root: Path, split: str) -> Tuple[List[str], List[Any], List[str]]:
    """(full paths, labels, paths as listed) of one list file, refused when check would fail it."""
    lf = read_list(root, split)
    bad = [p for p in lf.problems if p.severity == "error"]
    if bad:
        raise DatasetError(f"{root / (bad[0].file or '')}:{bad[0].line or ''} {bad[0].message}",
                           hint=f"run `imgfeat check --dataset {root}`")
    full = []
    for e in lf.entries:
        path = resolve_inside(root, e.path)
        if path is None:
            raise DatasetError(f"{split}.txt:{e.line}: {e.path} points outside the dataset")
        full.append(str(path))
    return full, [e.label for e in lf.entries], [e.path for e in lf.entries]


def eval_dataset(dataset_dir: str, model: Any, ks: Sequence[int] = (1, 5), exclude_same_path: bool = False,
                 batch_size: Optional[int] = None, progress: ProgressFn = null_progress,
                 collect: Optional[Any] = None) -> RetrievalMetrics:
    """Embed the dataset's gallery and query lists with ``model`` (in memory, through the
    embedding pipeline: an image listed in both is embedded once) and score them. ``collect``: see
    :func:`~imgfeat_cli.retrieval.metrics.evaluate` (its paths are the listed ones, relative to the
    dataset folder)."""
    from imgfeat_cli.pipeline.embedder import embed_to_memory

    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist")
    g_full, g_labels, g_listed = split_paths(root, "gallery")
    q_full, q_labels, q_listed = split_paths(root, "query")
    for split, listed in (("gallery", g_full), ("query", q_full)):
        if not listed:  # before embedding anything: recall 0.0 of nothing would look like a result
            raise DatasetError(f"{root / split}.txt lists no images: there is nothing to score",
                               hint=f"fill {split}.txt (imgfeat split / imgfeat convert), then `imgfeat check "
                                    f"--dataset {root}`")
    unique = list(dict.fromkeys(g_full + q_full))
    got = embed_to_memory(model, unique, batch_size, progress)
    if got.errors:
        path, reason = got.errors[0]
        raise DatasetError(f"{len(got.errors)} dataset images could not be read; first: {reason}",
                           hint=f"run `imgfeat check --dataset {root}`")
    row = {p: i for i, p in enumerate(got.paths)}
    feats = got.features
    g = feats[[row[p] for p in g_full]]
    q = feats[[row[p] for p in q_full]]
    return evaluate(q, q_labels, g, g_labels, ks, q_listed, g_listed, exclude_same_path, progress=progress,
                    collect=collect)


def write_result(output_dir: str, metrics: RetrievalMetrics) -> Path:
    path = Path(output_dir) / RESULT_FILE
    fsutil.write_json(path, metrics.to_dict())
    return path
