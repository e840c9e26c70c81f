"""Gallery indexes at scale: build time, peak memory, size, queries/s and recall@10 of Flat and of
``--index-type auto`` at memory budgets, built by streaming a float16 Parquet folder.

    python benchmarks/index_scale.py [--sizes 100000 1000000 3000000] [--budgets 8 2]
                                     [--data /tmp/imgfeat-scale] [--queries 1000] [--skip-flat-above 3000000]

Data: synthetic 512-d vectors shaped like image features (see :func:`Generator`): categories of
classes of items, each level a Gaussian with a power-law spectrum (variance of the i-th component
proportional to 1/i, as real PP-ShiTuV2 features decay: the top 64 of 512 components hold about 60%
of their variance), same-class cosine about 0.8 (the real drink gallery's nearest-neighbour median
is 0.78), L2-normalised, written once per size as a folder of Parquet files (float16, 65536 rows
each, ``input_path`` and ``label`` columns), as ``imgfeat embed --engine ray`` would leave it.

Each build runs in a fresh process through ``build_index`` (what ``imgfeat index build`` calls) and
writes the index folder; its peak RSS is that process's maximum resident set. Queries are 1000 new
vectors from the same distribution (not gallery rows); their exact top-10 come from a streamed exact
scan of the gallery, computed once per size and cached. queries/s: the 1000 queries as one batch,
at 1 and 2 faiss threads, median of 3 alternating rounds. Budgets are fractions of the Flat index's
estimated memory: ``--budgets 8 2`` builds auto at 1/8 and 1/2 of it (then Flat). recall@10 is the share of
the exact 10 nearest found among the 10 returned; 1-R@10 the share of queries whose exact nearest
neighbour is among them (faiss' usual "R@10").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

DIM, PER_CLASS, PER_CATEGORY, SPREAD, NOISE = 512, 10, 200, 0.6, 0.5
ROWS_PER_FILE = 65536


class Generator:
    """Reproducible clustered vectors: category centre + class offset (x SPREAD) + item noise (x NOISE),
    every term drawn with the same power-law covariance, then a common offset (real features share a
    mean direction: mean pairwise cosine about 0.07) and L2 normalisation."""

    def __init__(self, n: int, dim: int = DIM, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        scale = np.arange(1, dim + 1) ** -0.5
        scale /= np.sqrt((scale ** 2).sum())
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.basis = (basis * scale).astype(np.float32)
        mean = rng.standard_normal(dim)
        self.mean = (0.26 * mean / np.linalg.norm(mean)).astype(np.float32)
        cats = self._draw(rng, max(1, n // PER_CATEGORY))
        classes = max(1, n // PER_CLASS)
        self.centres = cats[rng.integers(0, len(cats), classes)] + SPREAD * self._draw(rng, classes)

    def _draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        return rng.standard_normal((m, self.basis.shape[0])).astype(np.float32) @ self.basis.T

    def chunk(self, start: int, m: int, stream: int = 1) -> tuple:
        """Rows ``start..start+m`` of stream ``stream`` (1: the gallery, 2: queries) and their classes."""
        rng = np.random.default_rng([stream, start])
        cls = rng.integers(0, len(self.centres), m)
        x = self.centres[cls] + self.mean + NOISE * self._draw(rng, m)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), cls


def make_gallery(folder: Path, n: int) -> None:
    """The Parquet folder for ``n`` rows (kept: a later run reuses it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (folder / "_done").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    gen = Generator(n)
    for start in range(0, n, ROWS_PER_FILE):
        name = folder / f"part-{start // ROWS_PER_FILE:05d}.parquet"
        if name.is_file():  # an interrupted run's complete files (each is renamed into place when written)
            continue
        m = min(ROWS_PER_FILE, n - start)
        x, cls = gen.chunk(start, m)
        feats = pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float16).reshape(-1)), DIM)
        paths = [f"s3://photos/c{c}/{start + i}.jpg" for i, c in enumerate(cls.tolist())]
        pq.write_table(pa.table({"input_path": paths, "feature": feats, "label": [f"c{c}" for c in cls.tolist()]}),
                       folder / ".writing.parquet")
        os.rename(folder / ".writing.parquet", name)
    (folder / "_done").write_text(str(n))


def exact_truth(folder: Path, n: int, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 gallery ids of the queries (a streamed scan, cached beside the data)."""
    cache = folder / f"_truth_{len(queries)}.npy"
    if cache.is_file():
        return np.load(cache)
    from imgfeat_cli.retrieval.recall import ExactNeighbours
    from imgfeat_cli.retrieval.streaming import open_parquet

    exact = ExactNeighbours(queries, np.full(len(queries), -2), "IP", k=10)
    start = 0
    for feats, _, _ in open_parquet(str(folder))._raw_chunks():
        exact.add(feats, start)
        start += len(feats)
    np.save(cache, exact.ids[:, :10])
    return exact.ids[:, :10]


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, from fork)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def child(args: argparse.Namespace) -> None:
    """One build in this (fresh) process; prints one JSON line."""
    import faiss

    from imgfeat_cli.retrieval.builder import build_index

    t0 = time.perf_counter()
    index = build_index(args.gallery, args.out, index_type=args.index_type, max_memory=args.max_memory,
                        overwrite=True)
    build_s = time.perf_counter() - t0
    peak = peak_rss()
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    indexes = {"auto": index.faiss_index}
    if args.vs_flat and args.index_type != "Flat":  # exact search in the same rounds: a fair ratio on a busy box
        from imgfeat_cli.retrieval.streaming import open_parquet

        indexes["flat"] = faiss.IndexFlatIP(index.dim)
        for feats, _, _ in open_parquet(args.gallery)._raw_chunks():
            indexes["flat"].add(feats)
    qps: Dict[str, List[float]] = {f"{k}{t}": [] for k in indexes for t in (1, 2)}
    found = None
    for _ in range(3):
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            for name, searched in indexes.items():
                t = time.perf_counter()
                _, got = searched.search(queries, 10)
                qps[f"{name}{threads}"].append(len(queries) / (time.perf_counter() - t))
                found = got if name == "auto" else found
    rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), found.tolist())]))
    nn = float(np.mean([a[0] in set(b) for a, b in zip(truth.tolist(), found.tolist())]))
    print(json.dumps({"factory": index.factory, "build_s": build_s, "peak_rss": peak,
                      "index_bytes": os.path.getsize(Path(args.out) / "vector.index"),
                      "folder_bytes": sum(f.stat().st_size for f in Path(args.out).iterdir()),
                      "qps1": float(np.median(qps["auto1"])), "qps2": float(np.median(qps["auto2"])),
                      "flat_qps": {t: float(np.median(qps[f"flat{t}"])) for t in (1, 2) if f"flat{t}" in qps},
                      "recall": rec, "nn": nn,
                      "build": index.build}))


def run_one(gallery: Path, out: Path, kind: str, budget: int, qfile: Path, tfile: Path, vs_flat: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--gallery", str(gallery), "--out", str(out), "--index-type", kind,
           "--queries-file", str(qfile), "--truth-file", str(tfile)] + (["--max-memory", str(budget)] if budget else [])
    cmd += ["--vs-flat"] if vs_flat else []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + ".bak", ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    ap.add_argument("--budgets", type=float, nargs="+", default=[8, 2], help="auto budgets: Flat's memory / B")
    ap.add_argument("--data", default="/tmp/imgfeat-scale")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--skip-flat-above", type=int, default=3_000_000)
    ap.add_argument("--vs-flat-up-to", type=int, default=1_000_000,
                    help="up to this size, auto's queries/s alternate with an exact scan's in the same process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--vs-flat", action="store_true", help=argparse.SUPPRESS)
    for name in ("--gallery", "--out", "--index-type", "--max-memory", "--queries-file", "--truth-file"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.queries, args.truth = args.queries_file, args.truth_file
        child(args)
        return
    from imgfeat_cli.retrieval.autoindex import estimate, format_size

    data = Path(args.data)
    print(f"{'N':>9} {'index':<18} {'budget':>9} {'build s':>8} {'peak RSS':>9} {'index':>9} {'q/s 1t':>8} "
          f"{'q/s 2t':>8} {'recall@10':>9} {'1-R@10':>6}  tuned", flush=True)
    for n in args.sizes:
        gallery = data / f"gallery-{n}"
        t = time.perf_counter()
        make_gallery(gallery, n)
        gen = Generator(n)
        queries, _ = gen.chunk(0, args.queries, stream=2)
        qfile, tfile = data / f"queries-{n}.npy", gallery / f"_truth_{args.queries}.npy"
        np.save(qfile, queries)
        exact_truth(gallery, n, queries)
        print(f"# {n}: data and exact truth ready in {time.perf_counter() - t:.0f} s", flush=True)
        flat = estimate("Flat", n, DIM)
        runs = [("auto", int(flat / b)) for b in args.budgets]
        runs += [("Flat", 0)] if n <= args.skip_flat_above else []
        for kind, budget in runs:
            r = run_one(gallery, data / f"idx-{n}", kind, budget, qfile, tfile, n <= args.vs_flat_up_to)
            label = f"1/{flat / budget:.0f} Flat" if budget else "-"
            if "error" in r:
                print(f"{n:>9} {kind:<18} {label:>9} failed: {r['error']}", flush=True)
                continue
            b = r.get("build") or {}
            tuned = next((f"{k}={b[k]} (build-time recall {b.get('recall_at_10')})" for k in ("nprobe", "efSearch")
                          if b.get(k)), "")
            vs = r.get("flat_qps") or {}
            ratio = f" ({r['qps1'] / vs['1']:.1f}x / {r['qps2'] / vs['2']:.1f}x an exact scan's)" if vs else ""
            print(f"{n:>9} {r['factory']:<18} {label:>9} {r['build_s']:8.1f} {format_size(r['peak_rss']):>9} "
                  f"{format_size(r['index_bytes']):>9} {r['qps1']:8.0f} {r['qps2']:8.0f} {r['recall']:9.3f} {r['nn']:6.3f}  "
                  f"{tuned}{ratio}", flush=True)


if __name__ == "__main__":
    main()
