"""Gallery sources for an index: label files, ShiTuRecDataset folders, precomputed embeddings.

* A label file holds ``path label`` lines, PaddleX's gallery list. Unlike PaddleX's
  ``line.strip().split(" ")`` a line splits once: at its first tab when it has one (PaddleClas'
  tab-separated lists, where paths may hold spaces), else at its first space, so labels may hold
  spaces. A UTF-8 BOM, CRLF line ends and blank lines are tolerated; a line without a label is an
  error naming ``file:line``. Paths are relative to ``root`` (default: the file's folder).
* A ShiTuRecDataset folder contributes its ``gallery.txt`` (paths inside the root), its integer
  labels named by its ``label.txt`` where that lists a name for each.
* Embedding files (``.jsonl``/``.parquet`` with a ``label`` per row, or any of them with a labels
  file, one label per line) carry vectors already; no model is needed.

Image galleries identify items by absolute path, so ``index add`` can skip what an index holds
whatever list or root names it; embedding files by their ``input_path`` column.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.datasets.textio import read_label_lines, split_labelled

EMBEDDING_SUFFIXES = (".jsonl", ".npy", ".parquet")
#: Gallery rows per add: images are embedded and vectors added this many at a time, so building or
#: growing an index needs memory for one chunk beyond the index itself.
CHUNK = 4096

Chunk = Tuple[np.ndarray, List[str], List[Optional[str]]]


@dataclass
class Gallery:
    """Labelled gallery items: images to embed (``sources``) or precomputed ``features``."""

    origin: str
    labels: List[str]
    paths: List[Optional[str]]
    sources: Optional[List[str]] = None
    features: Optional[np.ndarray] = None
    model: Optional[Dict[str, Any]] = None
    skipped_known: int = 0
    skipped_repeated: int = 0
    errors: List[Tuple[str, str]] = field(default_factory=list)  # (input path, reason)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> Optional[int]:
        return None if self.features is None else int(self.features.shape[1])

    def take(self, rows: Sequence[int]) -> "Gallery":
        rows = list(rows)
        return replace(self, labels=[self.labels[i] for i in rows], paths=[self.paths[i] for i in rows],
                       sources=None if self.sources is None else [self.sources[i] for i in rows],
                       features=None if self.features is None else self.features[rows])

    def without(self, known: Collection[str]) -> "Gallery":
        """Drop items whose path is in ``known`` (already indexed) or repeats an earlier row."""
        seen, rows, n_known, n_repeat = set(), [], 0, 0
        for i, p in enumerate(self.paths):
            if p is not None and p in known:
                n_known += 1
            elif p is not None and p in seen:
                n_repeat += 1
            else:
                rows.append(i)
                if p is not None:
                    seen.add(p)
        out = self.take(rows)
        out.skipped_known, out.skipped_repeated = self.skipped_known + n_known, self.skipped_repeated + n_repeat
        return out


def _decode_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise UsageError(f"{path} is not a text file (it holds NUL bytes)", hint="a gallery list has 'path label' lines")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})", hint="save the list as UTF-8") from None


def parse_label_lines(text: str, name: str) -> List[Tuple[int, str, str]]:
    """``(line number, path, label)`` for each non-blank line (see module docstring)."""
    rows = []
    for no, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        path, label = split_labelled(line)
        if not path or not label:
            raise UsageError(f"{name}:{no}: expected '<path> <label>' (space or tab separated), got {line[:100]!r}",
                             hint="every gallery line needs an image path and a label")
        rows.append((no, path, label))
    return rows


def read_label_file(path: Path, root: Optional[str] = None) -> Gallery:
    base = Path(root) if root else path.parent
    if root and not base.is_dir():
        raise UsageError(f"--root {root} is not a folder")
    rows = parse_label_lines(_decode_text(path), str(path))
    sources = [os.path.normpath(os.path.join(base, p)) for _, p, _ in rows]
    return Gallery(str(path), [lab for _, _, lab in rows], [os.path.abspath(s) for s in sources], sources=sources)


def read_label_list(path: str, root: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(path, label)`` of each line of a ``path label`` list, paths joined to ``root`` (default
    the list's folder). A missing or unreadable list is a one-line usage error."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"labels list {path} does not exist" if not p.exists() else f"labels list {path} is not a file",
                         hint="pass a 'path label' list (space or tab separated), e.g. a dataset's gallery.txt")
    gallery = read_label_file(p, root)
    return list(zip(gallery.sources, gallery.labels))


def read_dataset_gallery(folder: Path) -> Gallery:
    """A dataset's gallery, labelled with its class names where ``label.txt`` gives them."""
    from imgfeat_cli.datasets.classnames import class_names, named_labels
    from imgfeat_cli.retrieval.evaluate import split_paths

    sources, labels, _ = split_paths(folder, "gallery")
    return Gallery(str(folder / "gallery.txt"), named_labels(labels, class_names(folder)),
                   [os.path.abspath(s) for s in sources], sources=sources)


def read_embeddings(path: Path, labels_file: Optional[str] = None) -> Gallery:
    """An embeddings gallery: labels from its ``label`` column, or one per line of ``labels_file``."""
    from imgfeat_cli.pipeline.readers import read_features

    table = read_features(str(path))
    n = len(table.features)
    if labels_file:
        labels = read_label_lines(labels_file, n, str(path))
    elif "label" in table.columns:
        labels = [str(v) for v in table.columns["label"]]
    else:
        raise UsageError(f"{path} has no labels", hint="embeddings need a \"label\" per row, or --labels FILE "
                         "(one label per line)")
    return Gallery(str(path), labels, list(table.paths) if table.paths else [None] * n, features=table.features,
                   model=table.model)


def read_gallery(spec: str, root: Optional[str] = None, labels_file: Optional[str] = None) -> Gallery:
    """Read a gallery given as a label file, a dataset folder or an embeddings file."""
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"gallery {spec} does not exist",
                         hint="pass a 'path label' list, a dataset folder (gallery.txt) or an embeddings file")
    if path.is_dir():
        if not (path / "gallery.txt").is_file():
            raise UsageError(f"folder {spec} has no gallery.txt (not a ShiTuRecDataset)",
                             hint="pass the gallery list file itself, e.g. --gallery gallery/drink_label.txt")
        gallery = read_dataset_gallery(path)
    elif not path.is_file():
        raise UsageError(f"gallery {spec} is not a regular file")
    elif path.suffix.lower() in EMBEDDING_SUFFIXES:
        gallery = read_embeddings(path, labels_file)
    else:
        gallery = read_label_file(path, root)
    if labels_file and gallery.features is None:
        raise UsageError("--labels goes with an embeddings gallery", hint="label files carry their own labels")
    if not len(gallery):
        raise UsageError(f"gallery {spec} is empty", hint="it needs at least one 'path label' line or embedding")
    return gallery


def vector_chunks(gallery: Gallery, model: Any = None, batch_size: Optional[int] = None,
                  progress: ProgressFn = null_progress, chunk: int = CHUNK) -> Iterator[Chunk]:
    """Yield ``(features, labels, paths)`` chunks: slices of precomputed vectors, or images embedded
    ``chunk`` at a time with ``model``. Images that fail go to ``gallery.errors``."""
    n = len(gallery)
    if gallery.features is not None:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            yield gallery.features[start:stop], gallery.labels[start:stop], gallery.paths[start:stop]
            progress("Adding vectors", stop, n)
        return
    if model is None:
        raise UsageError("this gallery lists images: a model is needed to embed them",
                         hint="pass --model NAME, --model-dir DIR or --weights FILE")
    from imgfeat_cli.retrieval.embedding import embed_sources

    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows, feats, errors = embed_sources(model, gallery.sources[start:stop], batch_size,
                                            lambda t, d, tot: progress("Embedding gallery", start + d, n))
        gallery.errors.extend(errors)
        if rows:
            yield feats, [gallery.labels[start + r] for r in rows], [gallery.paths[start + r] for r in rows]
