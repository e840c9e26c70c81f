"""Wall time of ``imgfeat eval --report`` on the 987 drink reference features, against plain ``eval``.

    python benchmarks/report_eval.py [--shared ../shared] [--runs 5] [--rows 50] [--workers N]

The reference features (PP-ShiTuV2_rec, 512-d) become query/gallery files as the eval tests build
them (the first image of each class with two or more images is a query: 194 queries, 793 gallery
items), their paths relative to the drink gallery (``--image-root``). Each run is the whole
command in a fresh process (start-up, reading 11 MB of JSON lines, scoring, and for the report the
thumbnails, the Recall@k figure and the page), with and without ``--report`` in turn, fresh report
folder each time; medians are printed. OMP_NUM_THREADS / taskset bound the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def write_inputs(shared: Path, out: Path) -> Path:
    ref = shared / "data" / "drink_ppshituv2_reference"
    feats = np.load(ref / "features.npy")
    by = defaultdict(list)
    for line in (ref / "ids.tsv").read_text(encoding="utf-8").splitlines():
        row, path, label = line.split("\t")
        by[label].append((int(row), path))
    parts = {"q": [], "g": []}
    for label, items in by.items():
        for i, (row, path) in enumerate(items):
            parts["q" if i == 0 and len(items) >= 2 else "g"].append((row, path, label))
    for name, rows in parts.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row, path, label in rows:
                fh.write(json.dumps({"input_path": path, "label": label, "feature": feats[row].tolist()},
                                    ensure_ascii=False) + "\n")
    return shared / "data" / "drink_dataset_v1.0" / "gallery"


def run(cmd: list) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imgfeat-report-bench-"))
    try:
        root = write_inputs(Path(args.shared), tmp)
        base = [sys.executable, "-m", "imgfeat_cli", "eval", "--query", str(tmp / "q.jsonl"),
                "--gallery", str(tmp / "g.jsonl"), "--output", str(tmp / "out")]
        times = {"eval": [], "eval --report": []}
        for i in range(args.runs):
            times["eval"].append(run(base))
            report = tmp / f"report{i}"
            times["eval --report"].append(run([*base, "--report", str(report), "--report-rows", str(args.rows),
                                               "--image-root", str(root)]))
        size = sum(f.stat().st_size for f in report.rglob("*") if f.is_file())
        thumbs = len(list((report / "files" / "t").iterdir()))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"drink reference features: 194 queries x 793 gallery, {cores} cores, {args.runs} runs each (medians)")
        for name, values in times.items():
            print(f"  {name:14s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, max {max(values):.2f})")
        extra = statistics.median(times["eval --report"]) - statistics.median(times["eval"])
        print(f"  the report adds {extra:.2f} s: {thumbs} thumbnails, {size / 2**20:.1f} MB in all")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
