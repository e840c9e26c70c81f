"""``check --near-duplicates``: near-duplicate images across splits and within the gallery.

A resized, re-encoded or slightly cropped copy of a gallery image in the query split matches its
original and inflates recall; byte comparison (``duplicate_content``) misses it. Two signals:

* always, perceptual hashes (:mod:`imgfeat_cli.datasets.phash`): a pair whose Hamming distance is
  at most ``max_hash_distance`` (of 64 bits) where their colours agree;
* with a model, embedding similarity as a second signal: a pair whose cosine is at least
  ``min_cosine``. It also finds copies a hash misses (colour changes, larger crops).

A pair found by either signal is one ``near_duplicate_leak`` warning naming both list lines (the
query side, or the later gallery line, as ``file:line``; the other in ``related``), with both
figures. Pairs: gallery/query, train/query and gallery/gallery. Two entries of one file are left
to the path checks (``gallery_query_leak``, ``train_overlap``, ``duplicate_entry``), identical
gallery/query bytes to ``duplicate_content``.

Neighbours come from faiss (binary Hamming search for the hashes, inner product for the features)
as each image's :data:`MAX_PARTNERS` nearest, then cut at the thresholds: memory stays bounded when
thousands of images are identical (a range search would return every one of their pairs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.datasets.dataset import Entry, Problem
from imgfeat_cli.datasets.phash import HASH_BITS, HASH_BYTES, VARIANTS, hash_files, signature_distance

#: Partners listed per image (its nearest): a folder of identical images stays a bounded report.
MAX_PARTNERS = 5
#: The pairs examined: (the split whose images are compared, the split they are looked up in).
PAIRINGS = (("query", "gallery"), ("query", "train"), ("gallery", "gallery"))
CODE = "near_duplicate_leak"


@dataclass
class NearDupOptions:
    """How near is a duplicate; ``model`` (a ModelSource, or any model ``embed_to_memory`` takes) adds the embedding
    signal. A threshold left ``None`` is the schema's default (``CheckDataset.near_duplicate_*``):
    6 of 64 bits, which on the drink photos keeps every resized/re-encoded copy, 98-100% of the
    5%-cropped ones and no pair of distinct photos, and cosine 0.97, which PP-ShiTuV2 features of
    distinct photos of one product reached in 2 of 2175 drink pairs (docs/reports.md)."""

    max_hash_distance: Optional[int] = None
    min_cosine: Optional[float] = None
    model: Any = None
    batch_size: Optional[int] = None
    workers: Optional[int] = None

    def __post_init__(self) -> None:
        """Fill the defaults; refuse a missing faiss before any image is read."""
        from imgfeat_cli.common.schemas import defaults

        cd = defaults("check")["CheckDataset"]
        if self.max_hash_distance is None:
            self.max_hash_distance = int(cd["near_duplicate_hash_distance"])
        if self.min_cosine is None:
            self.min_cosine = float(cd["near_duplicate_min_cosine"])
        faiss_or_fail()


@dataclass(frozen=True)
class Side:
    split: str
    entry: Entry
    path: Path

    @property
    def where(self) -> Tuple[str, int]:
        return f"{self.split}.txt", self.entry.line


def faiss_or_fail() -> Any:
    try:
        import faiss
    except ImportError:
        raise UsageError("--near-duplicates needs faiss", hint="pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def _nearest(faiss: Any, base: np.ndarray, queries: np.ndarray, binary: bool) -> Tuple[np.ndarray, np.ndarray]:
    """faiss' ``(scores, ids)`` of each query's nearest base rows (enough to cover the variants of
    :data:`MAX_PARTNERS` + 1 images)."""
    k = min(len(base), (MAX_PARTNERS + 1) * (VARIANTS if binary else 1))
    index = faiss.IndexBinaryFlat(HASH_BITS) if binary else faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base))
    return index.search(np.ascontiguousarray(queries), k)


def _hash_pairs(faiss: Any, a: np.ndarray, b: np.ndarray, limit: int) -> Dict[Tuple[int, int], int]:
    """{(row of a, row of b): hash distance} of the signatures ``a`` and ``b`` (``(n, VARIANTS,
    bytes)``) within ``limit``: candidates from faiss on the hashes alone (whole image against any
    variant, both ways), kept where :func:`signature_distance` (colours agreeing) stays within it."""
    ha, hb = a[:, :, :HASH_BYTES], b[:, :, :HASH_BYTES]
    candidates = set()
    dist, ids = _nearest(faiss, hb.reshape(-1, HASH_BYTES), ha[:, 0], binary=True)
    for i in range(len(a)):
        candidates.update((i, int(j) // VARIANTS) for d, j in zip(dist[i], ids[i]) if j >= 0 and d <= limit)
    dist, ids = _nearest(faiss, hb[:, 0], ha.reshape(-1, HASH_BYTES), binary=True)
    for r in range(len(ids)):
        candidates.update((r // VARIANTS, int(j)) for d, j in zip(dist[r], ids[r]) if j >= 0 and d <= limit)
    out = {}
    for i, j in candidates:
        d = signature_distance(a[i], b[j])
        if d <= limit:
            out[(i, j)] = d
    return out


def _cosine_pairs(faiss: Any, a: np.ndarray, b: np.ndarray, floor: float) -> Dict[Tuple[int, int], float]:
    sims, ids = _nearest(faiss, b, a, binary=False)
    return {(i, int(j)): float(s) for i in range(len(a)) for s, j in zip(sims[i], ids[i]) if j >= 0 and s >= floor}


def _embed(paths: Sequence[Path], opts: NearDupOptions, progress: ProgressFn) -> Dict[Path, np.ndarray]:
    from imgfeat_cli.models.source import ModelSource
    from imgfeat_cli.pipeline.embedder import embed_to_memory

    model = opts.model.load() if isinstance(opts.model, ModelSource) else opts.model  # loaded only when needed
    got = embed_to_memory(model, [str(p) for p in paths], opts.batch_size, progress)
    feats = np.asarray(got.features, dtype=np.float32)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return {Path(p): feats[i] for i, p in enumerate(got.paths)}


def _problem(a: Side, b: Side, dist: int, cos: Optional[float]) -> Problem:
    """The warning for ``a`` (the query side, or the later gallery line), naming ``b``."""
    figures = f"hash distance {dist}/{HASH_BITS}" if dist <= HASH_BITS else "hash: colours differ"
    if cos is not None:
        figures += f", cosine {cos:.3f}"
    what = (f"{b.split} image {b.entry.path} ({b.where[0]}:{b.where[1]})" if a.split != b.split
            else f"{b.entry.path} ({b.where[0]}:{b.where[1]})")
    labels = "" if a.entry.label == b.entry.label else f"; labels differ: {a.entry.label} vs {b.entry.label}"
    return Problem(CODE, "warning", f"{a.split} image {a.entry.path} is a near-duplicate of {what} "
                   f"({figures}){labels}", a.where[0], a.where[1], related=(b.where,))


def _sides(splits: Dict[str, List[Entry]], resolved: Dict[Tuple[str, int], Optional[Path]],
           usable: Dict[Path, Any], split: str) -> List[Side]:
    out = []
    for e in splits.get(split, []):
        path = resolved.get((split, e.line))
        if path is not None and path in usable:
            out.append(Side(split, e, path))
    return out


def _pairs(faiss: Any, a: List[Side], b: List[Side], codes: Dict[Path, np.ndarray], feats: Dict[Path, np.ndarray],
           opts: NearDupOptions) -> Dict[Tuple[int, int], Optional[int]]:
    """{(row of a, row of b): hash distance, or None when only the embeddings found the pair}; a
    pair within one split is keyed (earlier row, later row)."""
    found: Dict[Tuple[int, int], Optional[int]] = {}

    def add(i: int, j: int, dist: Optional[int]) -> None:
        key = (min(i, j), max(i, j)) if a is b else (i, j)
        if found.get(key) is None:
            found[key] = dist

    for (i, j), d in _hash_pairs(faiss, np.stack([codes[s.path] for s in a]), np.stack([codes[s.path] for s in b]),
                                 opts.max_hash_distance).items():
        add(i, j, d)
    ia = [i for i, s in enumerate(a) if s.path in feats]
    ib = [j for j, s in enumerate(b) if s.path in feats]
    if ia and ib:
        for i, j in _cosine_pairs(faiss, np.stack([feats[a[i].path] for i in ia]),
                                  np.stack([feats[b[j].path] for j in ib]), opts.min_cosine):
            add(ia[i], ib[j], None)
    return found


def find_near_duplicates(splits: Dict[str, List[Entry]], resolved: Dict[Tuple[str, int], Optional[Path]],
                         digests: Dict[Path, Optional[str]], opts: NearDupOptions,
                         progress: ProgressFn = null_progress) -> List[Problem]:
    """One ``near_duplicate_leak`` per pair (module doc). ``resolved`` maps ``(split, line)`` to
    the image file; ``digests`` holds the images that decoded (with their content digest)."""
    faiss = faiss_or_fail()
    sides = {s: _sides(splits, resolved, digests, s) for s in ("train", "gallery", "query")}
    wanted = [side.path for split in sides.values() for side in split]
    codes = {p: c for p, c in hash_files(wanted, opts.workers, progress).items() if c is not None}
    feats = _embed(list(codes), opts, progress) if opts.model is not None and codes else {}
    problems: List[Problem] = []
    for left, right in PAIRINGS:
        a = [s for s in sides[left] if s.path in codes]
        b = a if left == right else [s for s in sides[right] if s.path in codes]
        if not a or not b:
            continue
        for (i, j), dist in sorted(_pairs(faiss, a, b, codes, feats, opts).items()):
            x, y = (b[j], a[i]) if a is b else (a[i], b[j])  # within a split: the later line names the earlier
            if x.path == y.path:
                continue  # one file listed twice: the path checks report it
            if {left, right} == {"gallery", "query"} and digests.get(x.path) and digests[x.path] == digests.get(y.path):
                continue  # identical bytes: duplicate_content
            cos = float(feats[x.path] @ feats[y.path]) if x.path in feats and y.path in feats else None
            problems.append(_problem(x, y, signature_distance(codes[x.path], codes[y.path]) if dist is None else dist, cos))
    return problems
