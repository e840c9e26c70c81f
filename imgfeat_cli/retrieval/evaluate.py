"""``eval``: retrieval metrics from precomputed embeddings or from a dataset and a model.

Embedding files are read (and vetted) by :mod:`imgfeat_cli.retrieval.embfiles`, whose
``load_embeddings`` and ``load_query_gallery`` are re-exported here. A dataset is embedded with the
``embed`` engine (parallel decoding, batched inference) and its gallery/query lists supply the labels.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.datasets.dataset import read_list, resolve_inside
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.retrieval.embfiles import Loaded, load_embeddings, load_query_gallery  # noqa: F401 (API)
from imgfeat_cli.retrieval.metrics import RetrievalMetrics, evaluate
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.pipeline.sinks import paths_sidecar

RESULT_FILE = "evaluate_result.json"


def _embed_split(root: Path, split: str, model: Any, workdir: Path, batch_size: int,
                 progress: ProgressFn) -> Loaded:
    from imgfeat_cli.pipeline.embedder import run_embed

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
    out = workdir / f"{split}.npy"
    res = run_embed(full, str(out), model, batch_size=batch_size, overwrite=True, progress=progress)
    if res.failed:
        raise DatasetError(f"{res.failed} {split} images could not be read (see {res.errors_file})",
                           hint=f"run `imgfeat check --dataset {root}`")
    by_path = dict(zip(paths_sidecar(out).read_text(encoding="utf-8").splitlines(), np.load(out)))
    feats = np.stack([by_path[p] for p in full])
    return feats, [e.label for e in lf.entries], [e.path for e in lf.entries]


def eval_dataset(dataset_dir: str, model: Any, ks: Sequence[int] = (1, 5), exclude_same_path: bool = False,
                 batch_size: int = 16, progress: ProgressFn = null_progress) -> RetrievalMetrics:
    """Embed the dataset's gallery and query lists with ``model`` and score them."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist")
    with tempfile.TemporaryDirectory(prefix="imgfeat-eval-") as tmp:
        g = _embed_split(root, "gallery", model, Path(tmp), batch_size, progress)
        q = _embed_split(root, "query", model, Path(tmp), batch_size, progress)
    return evaluate(q[0], q[1], g[0], g[1], ks, q[2], g[2], exclude_same_path, progress=progress)


def write_result(output_dir: str, metrics: RetrievalMetrics) -> Path:
    path = Path(output_dir) / RESULT_FILE
    fsutil.write_json(path, metrics.to_dict())
    return path
