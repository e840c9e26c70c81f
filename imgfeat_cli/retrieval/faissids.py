"""Removing items from an id-mapped faiss index without mislabelling the rest.

faiss' ``IndexIDMap``/``IndexIDMap2`` keep each item's id in a list indexed by the inner index's
position, and ``remove_ids`` compacts that list on the assumption that the inner index renumbers its
remaining items as ``IndexFlat`` does. An inverted-file index does not: its lists keep the old
positions. After one removal every later item answers with the id of its neighbour in the list, the
last ones with -1, and a second removal deletes the wrong vectors (faiss 1.15.1; PaddleX's
``FaissBuilder.remove`` calls exactly that on the IVF indexes it builds). So imgfeat removes through
the inner index by position and then renumbers the inverted lists itself (:func:`remove`), and a
read checks that an IVF index's lists are numbered as its id map is (:func:`check_numbering`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def inner_ivf(faiss_index: Any) -> Optional[Any]:
    """The inverted-file index inside an id-mapped index (through transforms), or ``None``."""
    import faiss

    try:
        return faiss.extract_index_ivf(faiss_index.index)
    except RuntimeError:
        return None


def _list_ids(ivf: Any, list_no: int) -> np.ndarray:
    """A writable view of one inverted list's stored positions (faiss owns the memory)."""
    import faiss

    size = ivf.invlists.list_size(list_no)
    return faiss.rev_swig_ptr(ivf.invlists.get_ids(list_no), size) if size else np.zeros(0, np.int64)


def stored_positions(ivf: Any) -> np.ndarray:
    """Every position stored in the inverted lists, in list order."""
    parts = [_list_ids(ivf, l).copy() for l in range(ivf.nlist)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def check_numbering(faiss_index: Any) -> Optional[str]:
    """Why an id-mapped IVF index's lists do not hold exactly the positions ``0..ntotal-1`` (as
    faiss' id map needs), or ``None`` when they do (and for every other kind of index)."""
    ivf = inner_ivf(faiss_index)
    if ivf is None:
        return None
    positions = stored_positions(ivf)
    expected = int(faiss_index.ntotal)
    if len(positions) == expected and np.array_equal(np.sort(positions), np.arange(expected)):
        return None
    beyond = int((positions >= expected).sum()) if len(positions) else 0
    return (f"its inverted lists hold {len(positions)} positions, {beyond} of them past the {expected} items the id "
            "map has: numbered as before a removal (faiss' id map does not renumber IVF lists; PaddleX's remove "
            "leaves an index so), so results would carry the wrong labels")


def remove(faiss_index: Any, ids: Sequence[int]) -> int:
    """Remove external ``ids`` from an id-mapped index; returns how many were removed."""
    import faiss

    stored = faiss.vector_to_array(faiss_index.id_map)
    gone = np.flatnonzero(np.isin(stored, np.asarray(ids, dtype=np.int64))).astype(np.int64)
    if not len(gone):
        return 0
    removed = int(faiss_index.index.remove_ids(faiss.IDSelectorBatch(len(gone), faiss.swig_ptr(gone))))
    ivf = inner_ivf(faiss_index)
    if ivf is not None:
        for list_no in range(ivf.nlist):
            view = _list_ids(ivf, list_no)
            view -= np.searchsorted(gone, view)  # each position moves down by the removed ones before it
        kind = ivf.direct_map.type
        if kind != faiss.DirectMap.NoMap:  # rebuilt from the renumbered lists (setting the same type is a no-op)
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)
            ivf.set_direct_map_type(kind)
    keep = np.delete(stored, gone)
    faiss.copy_array_to_vector(keep, faiss_index.id_map)
    faiss_index.ntotal = len(keep)
    if hasattr(faiss_index, "construct_rev_map"):
        faiss_index.construct_rev_map()
    return removed
