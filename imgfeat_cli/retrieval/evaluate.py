"""``eval``: retrieval metrics from precomputed embeddings or from a dataset and a model.

Embedding files: ``.jsonl`` lines carrying ``feature`` and ``label`` (int or string; ``input_path``
optional), or ``.npy`` with a label file (one label per line) and the optional ``.paths.txt``
sidecar that ``embed`` writes. A dataset is embedded with the ``embed`` engine (parallel decoding,
batched inference) and its gallery/query lists supply the labels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common import fsutil
from imgfeat_cli.datasets.dataset import read_list, resolve_inside
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.retrieval.metrics import RetrievalMetrics, evaluate
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.pipeline.formats import paths_sidecar

RESULT_FILE = "evaluate_result.json"
Loaded = Tuple[np.ndarray, List[Any], Optional[List[str]]]


def load_embeddings(path: str, labels_path: Optional[str] = None) -> Loaded:
    """(features, labels, paths or None) from a ``.jsonl`` or ``.npy`` file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"embeddings file {path} does not exist")
    if p.suffix.lower() == ".jsonl":
        feats, labels, paths = [], [], []
        with open(p, encoding="utf-8") as fh:
            for no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    feats.append(rec["feature"])
                    labels.append(rec["label"])
                except (ValueError, KeyError, TypeError) as exc:
                    what = f"missing key {exc}" if isinstance(exc, KeyError) else "not a JSON object"
                    raise UsageError(f"{path}:{no}: {what}",
                                     hint="each line needs \"feature\" and \"label\" (add labels to embed output)") from None
                paths.append(rec.get("input_path"))
        if not feats:
            raise UsageError(f"{path} holds no embeddings")
        return np.asarray(feats, dtype=np.float32), labels, paths if all(paths) else None
    if p.suffix.lower() == ".npy":
        feats = np.load(p)
        if labels_path is None:
            raise UsageError(f"{path} has no labels", hint="pass the label file (one label per line)")
        labels = [ln.strip() for ln in Path(labels_path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        labels = [int(v) if v.lstrip("-").isdigit() else v for v in labels]
        sidecar = paths_sidecar(p)
        paths = sidecar.read_text(encoding="utf-8").splitlines() if sidecar.is_file() else None
        if len(labels) != len(feats):
            raise UsageError(f"{labels_path} has {len(labels)} labels for {len(feats)} features in {path}")
        return feats.astype(np.float32), labels, paths
    raise UsageError(f"cannot read embeddings from {path}", hint="use .jsonl or .npy")


def _split_paths(root: Path, split: str) -> Tuple[List[str], List[Any], List[str]]:
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
                 batch_size: Optional[int] = None, progress: ProgressFn = null_progress) -> RetrievalMetrics:
    """Embed the dataset's gallery and query lists with ``model`` (in memory, through the
    embedding pipeline: an image listed in both is embedded once) and score them."""
    from imgfeat_cli.pipeline.embedder import embed_to_memory

    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist")
    g_full, g_labels, g_listed = _split_paths(root, "gallery")
    q_full, q_labels, q_listed = _split_paths(root, "query")
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
    return evaluate(q, q_labels, g, g_labels, ks, q_listed, g_listed, exclude_same_path, progress=progress)


def write_result(output_dir: str, metrics: RetrievalMetrics) -> Path:
    path = Path(output_dir) / RESULT_FILE
    fsutil.write_json(path, metrics.to_dict())
    return path
