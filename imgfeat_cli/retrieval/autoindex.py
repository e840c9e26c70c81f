"""``--index-type auto``: the faiss index that fits a memory budget, and the search depth that keeps
its recall.

Why not autofaiss (clip-retrieval's chooser): its releases that support this project's numpy 2
do not exist (2.18.0 requires ``numpy<2``; pip falls back to 2.9.3 of 2022, which pins
``fsspec==2021.11.0``), and it writes indexes without PaddleX's id map. So the choice is made here,
on faiss' own ``index_factory``, best first among those that fit:

* ``Flat``: exact; chosen up to :data:`FLAT_MAX_ROWS` vectors when it fits (a scan of 10^5
  vectors is as fast as any approximate index, and items stay removable);
* ``HNSW32``: graph, fastest queries, but slow to build on few cores and cannot remove items:
  chosen up to :data:`HNSW_MAX_ROWS` vectors when it fits;
* ``IVF<n>,PQ<d/2>x4fs,RFlat``: inverted lists of 4-bit fast-scan codes (searched with SIMD
  lookups, tens of times faster than 8-bit PQ or SQ8 at the same size), the best candidates
  re-ranked on the exact vectors; then ``IVF<n>,Flat``;
* ``IVF<n>,PQ<d/2>x4fs,Refine(SQ8)`` (re-ranked on 1 byte per dimension);
* ``IVF<4n>,RaBitQfs<b>`` (b = 4, then 3 bits per dimension): RaBitQ codes, fast-scanned, whose
  distance estimates are accurate enough that no re-ranking is needed: at 10^6 vectors and an
  eighth of Flat's memory, recall@10 0.95 at 11x an exact scan's queries/s, where ``PQ256x4fs``
  stopped at 0.89 however deep it searched. They get four times the usual number of lists (the
  same recall at nprobe 32 of 4096 as at 128 of 1024, measured). Where faiss has them, they replace
  ``IVF<n>,SQ8``, which was larger and slower at the same recall; elsewhere ``SQ8`` stays;
* ``IVF<n>,PQ<m>x4fs``: fast-scan codes alone, the largest that fits (m/2 bytes per vector).

Re-ranked indexes cannot remove items (faiss' refine stage has no removal): rebuild instead.
Memory is estimated from the layout faiss keeps in RAM (codes, list ids, centroids, graph links,
the id map PaddleX's format wraps around it); see :func:`estimate`. After the build the search
depth (IVF ``nprobe``, HNSW ``efSearch``) is tuned on held-out queries (:mod:`.recall`) to the
smallest that reaches the target recall, and stored in ``vector.index``, so PaddleX searches with it.
"""
from __future__ import annotations

import functools
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
#: Per vector: the int64 id of faiss' ``IndexIDMap``, the wrapper imgfeat writes. PaddleX writes
#: ``IndexIDMap2``, which adds a hash map from id to position (about 40 bytes more per vector) that
#: only ``reconstruct`` uses, and neither PaddleX nor imgfeat calls it; both read either wrapper.
ID_MAP_BYTES = 8
#: faiss' k-means wants this many training vectors per centroid (it warns on stderr with fewer).
MIN_PER_LIST = 39
#: Compressed (IVF) indexes are offered from this many vectors on (faiss' k-means wants 39 training
#: vectors per centroid, and says so on stderr when it gets fewer).
MIN_TRAIN_ROWS = MIN_PER_LIST * 256
#: Candidates re-ranked per result by indexes with a refine stage (stored in the index).
REFINE_K_FACTOR = 4
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_HINT = "a number with B, KB, MB, GB, TB or PB (units of 1024), e.g. --max-memory 8GB, 512MB, 1.5G"


def parse_size(text: Any) -> int:
    """``"8GB"``, ``"512M"``, ``"1.5g"``, ``"2GiB"``, ``1000000`` -> bytes (units of 1024)."""
    if isinstance(text, bool):
        raise UsageError(f"--max-memory {text!r} is not a size", hint=_SIZE_HINT)
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise UsageError(f"--max-memory {str(text)[:40]!r} is not a size", hint=_SIZE_HINT)
        value, unit = float(m.group(1)), m.group(2).lower()
    size = value * 1024 ** " kmgtp".index(unit or " ")
    if not math.isfinite(size) or size < 1:
        raise UsageError(f"--max-memory {text!r} is not a positive size", hint="e.g. --max-memory 8GB")
    return int(size)


def format_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def nlist_for(n: int, per_root: int = 1) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest ``per_root`` x sqrt(n), at least
    39 training vectors each (a power of two too), capped at 65536 as PaddleX does."""
    target = max(1.0, per_root * math.sqrt(n))
    nlist = 2 ** round(math.log2(target))
    trainable = 2 ** int(math.log2(n // MIN_PER_LIST)) if n >= MIN_PER_LIST else 1
    return int(max(1, min(65536, nlist, trainable)))


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


def rabitq_code_bytes(d: int, bits: int) -> int:
    """One RaBitQ code: ``bits`` per dimension and its correction factors (faiss 1.15: 8 bytes for
    1-bit codes, 20 with extra bits)."""
    return (d * bits + 7) // 8 + (8 if bits == 1 else 20)


def estimate(kind: str, n: int, d: int, nlist: int = 0, m: int = 0) -> int:
    """Bytes faiss holds in RAM for ``n`` ``d``-dim vectors in index ``kind`` (``m``: PQ bytes;
    for ``IVF-RaBitQ``, the bits per dimension)."""
    code = {"IVF-PQ": m, "IVF-FS-RFlat": d // 4, "IVF-FS-SQ8": d // 4,
            "IVF-RaBitQ": rabitq_code_bytes(d, m) if kind == "IVF-RaBitQ" else 0}.get(kind, 0)
    per = {"Flat": 4 * d, "HNSW": 4 * d + 2 * HNSW_M * 4 + 24, "IVF-Flat": 4 * d + 8, "IVF-SQ8": d + 8,
           "IVF-PQ": code + 8, "IVF-FS-RFlat": code + 8 + 4 * d, "IVF-FS-SQ8": code + 8 + d,
           "IVF-RaBitQ": code + 8}[kind]
    centroids = 4 * d * nlist
    fixed = {"IVF-Flat": centroids, "IVF-SQ8": centroids + 8 * d, "IVF-PQ": centroids + 4 * 16 * d,
             "IVF-FS-RFlat": centroids + 4 * 16 * d, "IVF-FS-SQ8": centroids + 4 * 16 * d + 8 * d,
             "IVF-RaBitQ": centroids}.get(kind, 0)
    if code:  # fast-scan codes are packed in blocks of 32 vectors per list: half a block spare on average
        fixed += nlist * 16 * code
    return n * (per + ID_MAP_BYTES) + fixed + (1 << 20)


@functools.lru_cache(maxsize=None)
def rabitq_available() -> bool:
    """Whether this faiss builds multi-bit RaBitQ fast-scan indexes (faiss 1.15.1 does; older
    releases know no ``RaBitQfs<b>``)."""
    import faiss

    try:
        faiss.index_factory(8, "IVF1,RaBitQfs3")
    except RuntimeError:
        return False
    return True


def candidates(n: int, d: int) -> List[Choice]:
    """Every index for ``n`` vectors, best first. Compressed codes use faiss' fast-scan PQ (4-bit
    codes searched with SIMD lookups, tens of times faster than 8-bit PQ at the same size); where
    memory allows, candidates are re-ranked on exact (``RFlat``) or 8-bit (``SQ8``) vectors."""
    nlist = nlist_for(n)
    ivf = f"IVF{nlist}"
    out = [Choice("Flat", "Flat", estimate("Flat", n, d), "exact search"),
           Choice(f"HNSW{HNSW_M}", "HNSW32", estimate("HNSW", n, d), "graph search, fastest queries")]
    if n < MIN_TRAIN_ROWS:
        return out
    fs = f"PQ{d // 2}x4fs" if d % 2 == 0 else None
    if fs:
        out.append(Choice(f"{ivf},{fs},RFlat", "IVF", estimate("IVF-FS-RFlat", n, d, nlist),
                          "inverted lists, fast-scan codes re-ranked on exact vectors", nlist))
    out.append(Choice(f"{ivf},Flat", "IVF", estimate("IVF-Flat", n, d, nlist), "inverted lists over exact vectors",
                      nlist))
    if fs:
        out.append(Choice(f"{ivf},{fs},Refine(SQ8)", "IVF", estimate("IVF-FS-SQ8", n, d, nlist),
                          "inverted lists, fast-scan codes re-ranked on 1 byte per dimension", nlist))
    if rabitq_available():
        many = nlist_for(n, per_root=4)
        out += [Choice(f"IVF{many},RaBitQfs{bits}", "IVF", estimate("IVF-RaBitQ", n, d, many, bits),
                       f"inverted lists, {bits}-bit RaBitQ fast-scan codes", many) for bits in (4, 3)]
    else:
        out.append(Choice(f"{ivf},SQ8", "IVF", estimate("IVF-SQ8", n, d, nlist), "inverted lists, 1 byte per dimension",
                          nlist))
    for m in (d, d // 2, d // 4, d // 8, d // 16, d // 32):
        if m >= 2 and m % 2 == 0 and d % m == 0:
            out.append(Choice(f"{ivf},PQ{m}x4fs", "IVF", estimate("IVF-PQ", n, d, nlist, m // 2),
                              f"inverted lists, {m // 2}-byte fast-scan product-quantized codes", nlist))
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


def set_refine(faiss_index: Any) -> None:
    """Re-rank :data:`REFINE_K_FACTOR` candidates per result where the index has a refine stage."""
    import faiss

    inner = faiss.downcast_index(faiss_index.index if hasattr(faiss_index, "id_map") else faiss_index)
    if isinstance(inner, faiss.IndexRefine):
        inner.k_factor = float(REFINE_K_FACTOR)


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
