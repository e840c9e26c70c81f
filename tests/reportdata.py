"""Small inputs for the report tests (tests/test_reports.py, tests/test_reports_browser.py).

Gallery: two A, two B, two C (one C item sits between B and A), its last image missing on disk.
Queries: A (first match right), B (its first match is the C item: the worst query), C, and D (no
gallery image: unscorable).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

G = [([1, 0, 0], "A", "g/a0.png"), ([0.9, 0.1, 0], "A", "g/a1.png"), ([0, 1, 0], "B", "g/b0.png"),
     ([0.1, 0.9, 0], "B", "g/b1.png"), ([0, 0, 1], "C", "g/c0.png"), ([0.6, 0.8, 0], "C", "g/gone.png")]
Q = [([1, 0.05, 0], "A", "q/a.png"), ([0.62, 0.78, 0.02], "B", "q/b.png"), ([0, 0.1, 1], "C", "q/c.png"),
     ([0.5, 0.5, 0.5], "D", "q/d.png")]


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize((96, 72)).save(path)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"input_path": p, "label": lab, "feature": f}) + "\n" for f, lab, p in rows))
    return path


def make_embeddings(folder: Path, gallery=G, queries=Q):
    """(q.jsonl, g.jsonl, image root) under ``folder``; every image but ``gone`` exists."""
    root = folder / "imgs"
    for i, (_, _, p) in enumerate(list(gallery) + list(queries)):
        if "gone" not in p:
            photo(root / p, i)
    return write_jsonl(folder / "q.jsonl", queries), write_jsonl(folder / "g.jsonl", gallery), root
