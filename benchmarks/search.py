"""Build time, queries/s and recall@10 of imgfeat's Flat, IVF and HNSW32 gallery indexes.

    python benchmarks/search.py [--sizes 10000 100000 1000000] [--types Flat IVF HNSW32]
                                [--dim 512] [--queries 1000] [--skip 1000000:HNSW32]

Synthetic features shaped like real ones: L2-normalised 512-d vectors around 5,000 class centres
(a mixture, not uniform noise, on which no approximate index can work). Vectors are generated and
added chunk by chunk through the engine that `imgfeat index build` uses (retrieval.builder.fill),
so the process never holds the gallery twice: "RSS +" is the growth of resident memory during the
build, next to the size of the index itself. Recall@10 is measured against the exact Flat search
of the same gallery (overlap of the top-10 id sets). Queries are searched in one batch of
``--queries``; faiss uses every core it may (OMP_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Iterator, Tuple

import numpy as np

from imgfeat_cli.retrieval.builder import fill
from imgfeat_cli.retrieval.gallery import CHUNK
from imgfeat_cli.retrieval.index import Index

PER_CLASS = 20  # items per class, about what product galleries hold


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def vectors(n: int, dim: int, seed: int, centres: np.ndarray, noise: float = 2.0) -> Iterator[np.ndarray]:
    """``n`` normalised vectors in chunks of CHUNK, reproducible from ``seed``."""
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng([seed, start])
        m = min(CHUNK, n - start)
        x = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def index_bytes(index: Index) -> int:
    """The size ``vector.index`` would have (written to a counter, not to memory or disk)."""
    import faiss

    total = [0]

    def count(data: bytes) -> int:
        total[0] += len(data)
        return len(data)

    faiss.write_index(index.faiss_index, faiss.PyCallbackIOWriter(count))
    return total[0]


def build(kind: str, n: int, dim: int, centres: np.ndarray) -> Tuple[Index, float, float]:
    before = rss_mib()
    t0 = time.perf_counter()
    chunks = ((x, ["c"] * len(x), [None] * len(x)) for x in vectors(n, dim, 1, centres))
    index = fill(None, chunks, lambda d: Index.create(d, kind, "IP", n))
    return index, time.perf_counter() - t0, rss_mib() - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--types", nargs="+", default=["Flat", "IVF", "HNSW32"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--skip", nargs="*", default=[], help="SIZE:TYPE pairs not to run (e.g. 1000000:HNSW32)")
    args = ap.parse_args()
    print(f"{'N':>9} {'type':<14} {'build s':>8} {'queries/s':>10} {'recall@10':>9} {'index MiB':>9} {'RSS + MiB':>9}")
    for n in args.sizes:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((max(1, n // PER_CLASS), args.dim)).astype(np.float32) / np.sqrt(args.dim)
        queries = next(vectors(args.queries, args.dim, 2, centres))
        exact = None
        for kind in ["Flat"] + [t for t in args.types if t != "Flat"]:
            if f"{n}:{kind}" in args.skip:
                print(f"{n:>9} {kind:<14} skipped (--skip)")
                continue
            index, seconds, grew = build(kind, n, args.dim, centres)
            t0 = time.perf_counter()
            _, ids = index.search_arrays(queries, 10)
            qps = len(queries) / (time.perf_counter() - t0)
            if kind == "Flat":
                exact = ids
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)]) if exact is not None else float("nan")
            size = index_bytes(index) / 2**20
            if kind in args.types:
                print(f"{n:>9} {index.factory:<14} {seconds:>8.1f} {qps:>10.0f} {recall:>9.3f} {size:>9.0f} {grew:>9.0f}",
                      flush=True)
            del index


if __name__ == "__main__":
    main()
