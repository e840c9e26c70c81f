"""Gallery indexes in PaddleX's PP-ShiTuV2 format, plus what imgfeat keeps beside it.

An index is a folder with
* ``vector.index``: a faiss ``IndexIDMap`` around the factory index (``Flat``, ``IVF<n>,Flat``,
  ``HNSW32``, the compressed kinds of :mod:`.autoindex`), float32 vectors, metric ``IP`` (cosine on
  L2-normalised features) or ``L2`` (squared distances, smaller is better). PaddleX writes an
  ``IndexIDMap2``, whose extra id-to-position hash map (about 40 bytes per vector) serves only
  ``reconstruct``, which neither tool calls; each reads, appends to and removes from either;
* ``id_map.yaml``: ``{index_type, metric_type, id_map: {int id: str label}}``, written the way
  PaddleX's ``IndexData.save`` does, so its ``IndexData.load``/``FaissIndexer`` read it (in memory
  a compact :class:`.idmap.IdMap`, not a dict: millions of items cost megabytes, not gigabytes);
* ``imgfeat_index.json`` (:data:`SIDE_FILE`, never opened by PaddleX): the factory string, the
  model identity, the next id, and each id's input path and label. The label lets a reader tell
  which entries another tool (PaddleX's append/remove) has changed since; those lose their path.

The legacy PaddleClas layout (``id_map.pkl``: a pickled ``{int64: doc}``, doc being the gallery line
``path<TAB>label`` or, in older PaddleX, the label) is read through an unpickler that admits only
ints, strings and numpy scalars, and is converted to ``id_map.yaml`` on the next write.

PaddleX quirks handled here (see README "Retrieval"):
* IVF: PaddleX builds ``IVF{min(N//8, 65536)},Flat`` (8 training vectors per list, "IVF0" below 8
  vectors) and searches with faiss' default ``nprobe=1``. imgfeat sizes the lists from N
  (:func:`ivf_params`), stores an ``nprobe`` in the index (faiss serialises it, so PaddleX searches
  with it too) and builds Flat below :data:`MIN_IVF_VECTORS`, saying so.
* HNSW32: ``efSearch`` is stored too (faiss' default 16 loses recall); removal is refused with the
  alternative, before anything is touched.
* Ids are never reused: new ids start at ``max(max id + 1, the side file's next id)``, so removing
  the newest item does not hand its id to the next image (PaddleX restarts at max + 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from imgfeat_cli.common.errors import ConfigError, UsageError
from imgfeat_cli.retrieval import faissids, layout
from imgfeat_cli.retrieval.idmap import IdMap, PathMap
from imgfeat_cli.retrieval.autoindex import MIN_PER_LIST
from imgfeat_cli.retrieval.layout import faiss_module

INDEX_TYPES = ("Flat", "IVF", "HNSW32")
METRICS = ("IP", "L2")
#: IVF below this many vectors is built as Flat: k-means needs ~39 vectors per list, and a handful
#: of lists over a small gallery saves nothing over an exact scan.
MIN_IVF_VECTORS = 1000
#: HNSW search depth stored in the index (faiss' default is 16); see benchmarks/search.py.
HNSW_EF_SEARCH = 64


def accepts(metric_type: str, best: float, threshold: Optional[float]) -> bool:
    """PaddleX's rule: a query matches when its best score passes ``threshold``. For ``IP`` (a
    similarity) that is ``best >= threshold``, as PaddleX; for ``L2`` (a squared distance, smaller is
    better) ``best <= threshold``, where PaddleX compares the wrong way and drops the good matches."""
    if threshold is None:
        return True
    return best <= threshold if metric_type == "L2" else best >= threshold


def ivf_params(n: int, nlist: Optional[int] = None, nprobe: Optional[int] = None) -> tuple:
    """(nlist, nprobe) for an IVF index over ``n`` vectors: about 4*sqrt(n) lists with at least 39
    training vectors each, capped at 65536 as PaddleX does; probing 1/16 of the lists (at least 8)."""
    most = max(1, n // MIN_PER_LIST)
    if nlist is None:
        nlist = max(1, min(65536, int(4 * math.sqrt(n)), most))
    elif n and int(nlist) > most:  # faiss would warn (too few per list) or fail (more lists than rows)
        raise ConfigError(f"Index.ivf_nlist={nlist} needs at least {MIN_PER_LIST * int(nlist):,} gallery vectors to "
                          f"train its lists ({MIN_PER_LIST} per list); the gallery has {n:,}",
                          hint=f"use at most {most} lists here, or leave Index.ivf_nlist unset (about 4 x sqrt(N))")
    if nprobe is None:
        nprobe = max(8, nlist // 16)
    return int(nlist), int(min(nprobe, nlist))


@dataclass
class Index:
    """A loaded or new gallery index. ``id_map`` holds each id's label, ``paths`` the input path of
    the ids imgfeat added (read-only mappings; plain dicts given here are converted)."""

    faiss_index: Any
    id_map: IdMap
    metric_type: str = "IP"
    index_type: str = "Flat"
    paths: PathMap = field(default_factory=PathMap)
    model: Optional[Dict[str, Any]] = None
    next_id: int = 0
    factory: str = "Flat"
    notes: List[str] = field(default_factory=list)  # what the CLI should tell the user (warnings)
    model_notes: List[str] = field(default_factory=list)  # other models let in (--allow-other-model)
    build: Optional[Dict[str, Any]] = None  # how it was built: measured recall@10, search depth, budget
    report: Any = None  # what the last build/add/remove did (retrieval.builder.Report)

    def __post_init__(self) -> None:
        if not isinstance(self.id_map, IdMap):
            self.id_map = IdMap(self.id_map)
        if not isinstance(self.paths, PathMap):
            self.paths = PathMap(self.paths)

    # construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, index_type: str = "Flat", metric_type: str = "IP", expected: int = 0,
               nlist: Optional[int] = None, nprobe: Optional[int] = None, ef_search: Optional[int] = None,
               model: Optional[Dict[str, Any]] = None) -> "Index":
        """An empty index for ``dim``-d vectors; IVF is sized for ``expected`` vectors (train it)."""
        faiss = faiss_module()
        if index_type not in INDEX_TYPES:
            raise UsageError(f"unknown index type {index_type!r}", hint=f"use one of {', '.join(INDEX_TYPES)}")
        if metric_type not in METRICS:
            raise UsageError(f"unknown metric {metric_type!r}", hint=f"use one of {', '.join(METRICS)}")
        notes = []
        if index_type == "IVF" and expected < MIN_IVF_VECTORS:
            notes.append(f"IVF needs at least {MIN_IVF_VECTORS} gallery vectors to train its lists (got {expected}; "
                         "PaddleX would build the invalid 'IVF0' below 8); built Flat instead (exact, supports remove)")
            index_type = "Flat"
        factory = index_type
        if index_type == "IVF":
            nlist, nprobe = ivf_params(expected, nlist, nprobe)
            factory = f"IVF{nlist},Flat"
        metric = faiss.METRIC_INNER_PRODUCT if metric_type == "IP" else faiss.METRIC_L2
        inner = faiss.index_factory(int(dim), factory, metric)
        if index_type == "IVF":
            faiss.downcast_index(inner).nprobe = nprobe
        if index_type == "HNSW32":
            faiss.downcast_index(inner).hnsw.efSearch = int(ef_search or HNSW_EF_SEARCH)
        return cls(faiss.IndexIDMap(inner), IdMap(), metric_type, index_type, model=model, factory=factory, notes=notes)

    @classmethod
    def load(cls, folder: Any) -> "Index":
        """Read an index folder (imgfeat's, PaddleX's, or legacy PaddleClas)."""
        return layout.read_folder(cls, Path(folder))

    def save(self, folder: Any) -> Path:
        """Write the folder atomically (temp folder, then swap; the previous one stays as ``.bak``)."""
        return layout.write_folder(self, Path(folder))

    # properties ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    @property
    def count(self) -> int:
        return int(self.faiss_index.ntotal)

    def __len__(self) -> int:
        return self.count

    @property
    def needs_training(self) -> bool:
        return not self.faiss_index.is_trained

    def ids(self) -> np.ndarray:
        """Every id, ascending (a copy)."""
        return np.array(self.id_map.ids)

    def reserve(self, total: int) -> None:
        """Room for ``total`` items in the id maps at once (a build that knows its size)."""
        self.id_map.reserve(total)
        self.paths.reserve(total)

    def label_counts(self) -> Dict[str, int]:
        return dict(sorted(self.id_map.counts().items(), key=lambda kv: (-kv[1], kv[0])))

    def info(self) -> Dict[str, Any]:
        labels = self.label_counts()
        return {"index_type": self.index_type, "factory": self.factory, "metric_type": self.metric_type,
                "dim": self.dim, "count": self.count, "num_labels": len(labels),
                "labels": labels, "paths_known": len(self.paths), "next_id": self.next_id,
                "model": self.model, "model_notes": self.model_notes, "build": self.build}

    # operations ---------------------------------------------------------------------------------
    def check_features(self, feats: Any, what: str = "features") -> np.ndarray:
        """Float32 C-contiguous (n, dim) rows, finite; a one-line error otherwise."""
        arr = np.ascontiguousarray(feats, dtype=np.float32)
        if arr.ndim != 2:
            raise UsageError(f"{what} must be a 2-d array (n, dim), got shape {arr.shape}")
        if arr.shape[1] != self.dim:
            raise UsageError(f"{what} have dimension {arr.shape[1]}, the index holds {self.dim}-d vectors",
                             hint="use the model (and embeddings) the index was built with")
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise UsageError(f"{what}: row {int(np.argmax(bad))} holds NaN or infinity ({int(bad.sum())} such rows)")
        return arr

    def train(self, sample: np.ndarray) -> None:
        self.faiss_index.train(self.check_features(sample, "training vectors"))

    def add(self, feats: Any, labels: Sequence[Any], paths: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """Append vectors with their labels (and input paths); return the ids they got."""
        arr = self.check_features(feats, "gallery features")
        if len(labels) != len(arr) or (paths is not None and len(paths) != len(arr)):
            raise UsageError(f"{len(arr)} features but {len(labels)} labels"
                             + (f" and {len(paths)} paths" if paths is not None else ""))
        if self.needs_training:
            raise UsageError("the IVF index is not trained yet", hint="call train(sample) before add()")
        start = max(self.next_id, self.id_map.max_id() + 1)
        ids = np.arange(start, start + len(arr), dtype=np.int64)
        self.faiss_index.add_with_ids(arr, ids)
        self.id_map.add(ids, labels)
        if paths is not None:
            known = np.fromiter((p is not None for p in paths), bool, len(paths))
            self.paths.add(ids[known], [p for p in paths if p is not None])
        self.next_id = start + len(arr)
        return ids

    def resolve_ids(self, ids: Iterable[int] = (), label: Optional[str] = None,
                    path: Optional[str] = None) -> List[int]:
        """The ids selected by explicit ids, a label or an input path; unknown ones are an error."""
        wanted = sorted({int(i) for i in ids})
        unknown = [i for i in wanted if i not in self.id_map]
        if unknown:
            raise UsageError(f"{len(unknown)} id(s) not in the index: {', '.join(map(str, unknown[:10]))}"
                             + (" ..." if len(unknown) > 10 else ""), hint="see the ids with `imgfeat index info`")
        if label is not None:
            found = self.id_map.ids_with(label).tolist()
            if not found:
                raise UsageError(f"no item labelled {label!r} in the index")
            wanted += found
        if path is not None:
            found = self.paths.ids_with(path).tolist()
            if not found:
                raise UsageError(f"no item with input path {path!r} in the index",
                                 hint="paths are stored absolute for image galleries; see `imgfeat index info --json`")
            wanted += found
        return sorted(set(wanted))

    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids (Flat and IVF). HNSW cannot remove: refused before anything changes."""
        self.check_removable()
        ids = self.resolve_ids(ids)
        if not ids:
            return 0
        removed = faissids.remove(self.faiss_index, ids)  # not faiss' remove_ids: see faissids
        self.id_map.remove(ids)
        self.paths.remove(ids)
        self.next_id = max(self.next_id, max(ids) + 1)
        return removed

    def check_removable(self) -> None:
        if "Refine" in self.factory or "RFlat" in self.factory:
            raise UsageError(f"{self.factory} indexes cannot remove items (faiss' re-ranking stage cannot)",
                             hint="rebuild without those items (imgfeat index build), or build Flat/IVF indexes "
                                  "where items must be removable")
        if self.index_type == "HNSW32":
            raise UsageError("HNSW32 indexes cannot remove items (a faiss limitation, as in PaddleX)",
                             hint="rebuild without those items (imgfeat index build), or build Flat/IVF indexes "
                                  "where items must be removable")

    def search_arrays(self, feats: Any, k: int = 5) -> tuple:
        """faiss' (scores, ids), each (n, k), best first; ids of -1 pad when the index holds fewer than k."""
        if k < 1:
            raise UsageError(f"top-k must be >= 1, got {k}")
        arr = self.check_features(feats, "query features")
        return self.faiss_index.search(arr, int(k))

    def search(self, feats: Any, k: int = 5, threshold: Optional[float] = None) -> List[Dict[str, list]]:
        """One ``{"labels", "scores", "ids"}`` per query row, best first. With ``threshold`` a query
        whose best score is worse than it gets empty lists (PaddleX's rule, see :func:`accepts`)."""
        scores, ids = self.search_arrays(feats, k)
        out = []
        for row_scores, row_ids in zip(scores, ids):
            keep = row_ids >= 0
            row_scores, row_ids = row_scores[keep], row_ids[keep]
            if len(row_ids) and not accepts(self.metric_type, float(row_scores[0]), threshold):
                row_scores, row_ids = row_scores[:0], row_ids[:0]
            out.append({"labels": self.id_map.lookup(row_ids),
                        "scores": [float(str(s)) for s in row_scores],  # float32's shortest repr
                        "ids": [int(i) for i in row_ids]})
        return out

    def side_doc(self, items: bool = True) -> Dict[str, Any]:
        """What :data:`layout.SIDE_FILE` holds (``items=False``: all but the per-item list)."""
        doc = {"format": layout.SIDE_FORMAT, "dim": self.dim, "index_type": self.index_type,
                "metric_type": self.metric_type, "factory": self.factory, "model": self.model,
                "model_notes": self.model_notes,
                "next_id": max(self.next_id, self.id_map.max_id() + 1), "build": self.build}
        if items:
            doc["items"] = [[i, p, lab] for (i, lab), p in zip(self.id_map.items(), self.paths.lookup(self.id_map.ids))]
        return doc


__all__ = ["Index", "INDEX_TYPES", "METRICS", "MIN_IVF_VECTORS", "faiss_module", "ivf_params"]
