"""`imgfeat eval` from embedding files, from a dataset and a model, and on real embeddings."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path


def _write_jsonl(path: Path, feats, labels, paths=None) -> None:
    with open(path, "w") as fh:
        for i, (f, l) in enumerate(zip(feats, labels)):
            rec = {"input_path": paths[i] if paths else f"img{i}.jpg", "label": l, "feature": [float(v) for v in f]}
            fh.write(json.dumps(rec) + "\n")


def test_eval_from_jsonl_and_npy(invoke, tmp_path):
    g = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
    q = np.array([[1, 0.05], [0.1, 1]], np.float32)
    _write_jsonl(tmp_path / "g.jsonl", g, ["cat", "dog", "dog"])
    _write_jsonl(tmp_path / "q.jsonl", q, ["dog", "dog"])
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o",
                 "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    # q0 ranks cat, dog, dog -> r@1 0, AP (1/2 + 2/3)/2; q1 ranks dog(2), dog(1), cat -> r@1 1, AP 1
    assert doc["metrics"]["recall1"] == pytest.approx(0.5)
    assert doc["metrics"]["recall5"] == pytest.approx(1.0)
    assert doc["metrics"]["mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    saved = json.loads((tmp_path / "o" / "evaluate_result.json").read_text())
    assert saved["done_flag"] is True and saved["metrics"] == doc["metrics"]
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "q.npy", q)
    (tmp_path / "gl.txt").write_text("cat\ndog\ndog\n")
    (tmp_path / "ql.txt").write_text("dog\ndog\n")
    res = invoke("eval", "--query", tmp_path / "q.npy", "--gallery", tmp_path / "g.npy", "--query-labels",
                 tmp_path / "ql.txt", "--gallery-labels", tmp_path / "gl.txt", "--output", tmp_path / "o2", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"] == doc["metrics"]


def test_eval_errors(invoke, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"feature": [1, 0]}\n')
    res = invoke("eval", "--query", tmp_path / "bad.jsonl", "--gallery", tmp_path / "bad.jsonl")
    assert res.exit_code == 2 and "bad.jsonl:1: missing key 'label'" in res.stderr
    res = invoke("eval", "--query", tmp_path / "bad.jsonl")
    assert res.exit_code == 2 and "--query and --gallery go together" in res.stderr
    res = invoke("eval")
    assert res.exit_code == 2 and "nothing to evaluate" in res.stderr
    res = invoke("eval", "--query", tmp_path / "q.npy", "--gallery", tmp_path / "g.npy", "-o", "Evaluate.recall_k=[0]")
    assert res.exit_code == 2 and "Evaluate.recall_k.0" in res.stderr


def test_eval_dataset_with_model(invoke, synth_ds, model_dir, tmp_path):
    res = invoke("eval", "--dataset", synth_ds, "--model-dir", model_dir, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    n_query = len((synth_ds / "query.txt").read_text().splitlines())
    assert doc["num_queries"] == n_query and doc["num_scored"] == n_query
    assert 0.0 <= doc["metrics"]["mAP"] <= 1.0
    (synth_ds / "images" / "c00" / "000.jpg").write_bytes(b"")
    with open(synth_ds / "gallery.txt", "a") as fh:
        fh.write("images/c00/000.jpg 0\n")
    res = invoke("eval", "--dataset", synth_ds, "--model-dir", model_dir, "--output", tmp_path / "o")
    assert res.exit_code == 1 and "dataset images could not be read" in res.stderr and "zero-byte" in res.stderr


def test_eval_on_real_drink_embeddings(invoke, tmp_path):
    """987 official PP-ShiTuV2_rec features: first image of each class (with 2+ images) as query."""
    ref = shared_path("data", "drink_ppshituv2_reference")
    feats = np.load(ref / "features.npy")
    rows = [l.split("\t") for l in (ref / "ids.tsv").read_text(encoding="utf-8").splitlines()]
    by = defaultdict(list)
    for r, p, c in rows:
        by[c].append((int(r), p))
    q, g = [], []
    for c, items in by.items():
        for i, (r, p) in enumerate(items):
            (q if i == 0 and len(items) >= 2 else g).append((r, p, c))
    for name, part in (("q", q), ("g", g)):
        _write_jsonl(tmp_path / f"{name}.jsonl", feats[[r for r, _, _ in part]], [c for *_, c in part],
                     [p for _, p, _ in part])
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o",
                 "--json")
    doc = json.loads(res.stdout)
    assert doc["num_queries"] == 194 and doc["num_gallery"] == 793
    # brute force, independently of the engine
    qf, gf = feats[[r for r, _, _ in q]], feats[[r for r, _, _ in g]]
    gl = np.array([c for *_, c in g])
    top = np.argsort(-(qf @ gf.T), axis=1, kind="stable")
    r1 = np.mean([gl[top[i, 0]] == c for i, (*_, c) in enumerate(q)])
    assert doc["metrics"]["recall1"] == pytest.approx(r1)
    assert doc["metrics"]["recall1"] > 0.95  # real features retrieve their product
