"""``--index-type auto``: the faiss index that fits a memory budget, and the search depth that keeps
its recall.

Why not autofaiss (clip-retrieval's chooser): its releases that support this project's numpy 2
do not exist (2.18.0 requires ``numpy<2``; pip falls back to 2.9.3 of 2022, which pins
``fsspec==2021.11.0``), and it writes indexes without PaddleX's id map. So the choice is made here,
on faiss' own ``index_factory``, from four families, best first:

* ``Flat``: exact; chosen up to :data:`FLAT_MAX_ROWS` vectors when it fits (a scan of 10^5
  vectors is as fast as any approximate index, and items stay removable);
* ``HNSW32``: graph, fastest queries, but slow to build on few cores and cannot remove items:
  chosen up to :data:`HNSW_MAX_ROWS` vectors when it fits and IVF-Flat does not win;
* ``IVF<n>,Flat``: inverted lists over exact vectors, removable;
* ``IVF<n>,SQ8`` and ``IVF<n>,PQ<m>``: compressed codes (1 byte per dimension; ``m`` bytes per
  vector), the largest that fits.

Memory is estimated from the layout faiss keeps in RAM (codes, list ids, centroids, graph links,
the id map PaddleX's format wraps around it); see :func:`estimate`. After the build the search
depth (IVF ``nprobe``, HNSW ``efSearch``) is tuned on held-out queries (:mod:`.recall`) to the
smallest that reaches the target recall, and stored in ``vector.index``, so PaddleX searches with it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from imgfeat_cli.common.errors import UsageError

#: Up to this many vectors an exact scan answers fast enough (and keeps items removable).
FLAT_MAX_ROWS = 100_000
#: HNSW builds in O(N log N) with large constants: past this many vectors IVF is chosen instead.
HNSW_MAX_ROWS = 300_000
HNSW_M = 32
#: Per vector: the int64 id and the reverse map of faiss' ``IndexIDMap2`` (PaddleX's wrapper).
ID_MAP_BYTES = 8 + 40
#: PQ sizes tried, largest first (bytes per vector; each must divide the dimension).
#: Compressed (IVF) indexes train k-means with 256 centroids per code book: below this many vectors
#: faiss cannot train them well (and says so on stderr).
MIN_TRAIN_ROWS = 39 * 256
PQ_SIZES = (256, 192, 128, 96, 64, 48, 32, 24, 16, 8)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: Any) -> int:
    """``"8GB"``, ``"512M"``, ``"1.5g"``, ``"2GiB"``, ``1000000`` -> bytes (units of 1024)."""
    if isinstance(text, bool):
        raise UsageError(f"--max-memory {text!r} is not a size", hint="e.g. --max-memory 8GB, 512MB")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise UsageError(f"--max-memory {str(text)[:40]!r} is not a size", hint="e.g. --max-memory 8GB, 512MB, 1.5G")
        value, unit = float(m.group(1)), m.group(2).lower()
    size = value * 1024 ** " kmgt".index(unit or " ")
    if not math.isfinite(size) or size < 1:
        raise UsageError(f"--max-memory {text!r} is not a positive size", hint="e.g. --max-memory 8GB")
    return int(size)


def format_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest sqrt(n), at least 39 training
    vectors each, capped at 65536 as PaddleX does."""
    target = max(1.0, math.sqrt(n))
    nlist = 2 ** round(math.log2(target))
    return int(max(1, min(65536, nlist, n // 39)))


@dataclass(frozen=True)
class Choice:
    """A chosen index: the faiss factory string, its family (PaddleX's ``index_type`` name), the
    estimated bytes in RAM, and why."""

    factory: str
    family: str  # Flat, IVF or HNSW32 (what id_map.yaml says: PaddleX refuses removal from HNSW32)
    bytes: int
    why: str
    nlist: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"factory": self.factory, "estimated_bytes": self.bytes, "why": self.why}


def estimate(kind: str, n: int, d: int, nlist: int = 0, m: int = 0) -> int:
    """Bytes faiss holds in RAM for ``n`` ``d``-dim vectors in index ``kind``."""
    per = {"Flat": 4 * d, "HNSW": 4 * d + 2 * HNSW_M * 4 + 24, "IVF-Flat": 4 * d + 8, "IVF-SQ8": d + 8,
           "IVF-PQ": m + 8}[kind]
    fixed = {"IVF-Flat": 4 * d * nlist, "IVF-SQ8": 4 * d * nlist + 8 * d,
             "IVF-PQ": 4 * d * nlist + 4 * 256 * d}.get(kind, 0)
    return n * (per + ID_MAP_BYTES) + fixed + (1 << 20)


def candidates(n: int, d: int) -> List[Choice]:
    """Every family for ``n`` vectors, best first."""
    nlist = nlist_for(n)
    out = [Choice("Flat", "Flat", estimate("Flat", n, d), "exact search")]
    out.append(Choice(f"HNSW{HNSW_M}", "HNSW32", estimate("HNSW", n, d), "graph search, fastest queries"))
    if n >= MIN_TRAIN_ROWS:
        out.append(Choice(f"IVF{nlist},Flat", "IVF", estimate("IVF-Flat", n, d, nlist),
                          "inverted lists over exact vectors", nlist))
        out.append(Choice(f"IVF{nlist},SQ8", "IVF", estimate("IVF-SQ8", n, d, nlist),
                          "inverted lists, 1 byte per dimension", nlist))
        for m in (m for m in PQ_SIZES if d % m == 0 and m < d):
            out.append(Choice(f"IVF{nlist},PQ{m}", "IVF", estimate("IVF-PQ", n, d, nlist, m),
                              f"inverted lists, {m}-byte product-quantized codes", nlist))
    return out


def choose(n: int, d: int, max_memory: Optional[int]) -> Choice:
    """The best index for ``n`` vectors of ``d`` dims within ``max_memory`` bytes (``None``: no
    limit). Refuses, before any work, a budget no index fits."""
    options = candidates(n, d)
    fits = [c for c in options if max_memory is None or c.bytes <= max_memory]
    if not fits:
        smallest = min(options, key=lambda c: c.bytes)
        raise UsageError(f"--max-memory {format_size(max_memory or 0)} is too small for {n} vectors of {d} dims: "
                         f"the smallest index ({smallest.factory}) needs about {format_size(smallest.bytes)}",
                         hint="raise --max-memory, or shard the gallery into several indexes")
    flat = next((c for c in fits if c.family == "Flat"), None)
    hnsw = next((c for c in fits if c.family == "HNSW32"), None)
    if flat and n <= FLAT_MAX_ROWS:
        return flat
    if hnsw and n <= HNSW_MAX_ROWS:
        return hnsw
    for c in fits:
        if c.family == "IVF":
            return c
    return fits[0]  # too few vectors to train lists: Flat or HNSW


def search_depths(choice_family: str, nlist: int) -> List[int]:
    """The search depths tried, shallowest first: IVF ``nprobe``, HNSW ``efSearch``."""
    if choice_family == "HNSW32":
        return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    depths, p = [], 1
    while p < nlist:
        depths += [p, p + p // 2] if p >= 2 else [p]
        p *= 2
    return [x for x in depths if x < nlist] + [nlist]


def set_depth(faiss_index: Any, family: str, depth: int) -> None:
    """Store the search depth in the index (faiss serialises it: PaddleX searches with it too)."""
    import faiss

    inner = faiss.extract_index_ivf(faiss_index) if family == "IVF" else None
    if inner is not None:
        inner.nprobe = int(depth)
        return
    if family == "HNSW32":
        faiss.downcast_index(faiss_index.index if hasattr(faiss_index, "id_map") else faiss_index).hnsw.efSearch = int(depth)


def get_depth(faiss_index: Any, family: str) -> Optional[int]:
    import faiss

    try:
        if family == "IVF":
            return int(faiss.extract_index_ivf(faiss_index).nprobe)
        if family == "HNSW32":
            return int(faiss.downcast_index(faiss_index.index).hnsw.efSearch)
    except (RuntimeError, AttributeError):
        return None
    return None
