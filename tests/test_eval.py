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
    assert res.exit_code == 2 and "bad.jsonl has no labels" in res.stderr
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


# -------------------------------------------------------------------- hostile embedding files

G = np.array([[1, 0], [0, 1], [0.7, 0.7]], np.float32)


def _jsonl_lines(path: Path, lines) -> Path:
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


@pytest.mark.parametrize("lines, what", [
    ([{"feature": [1, 0], "label": 1}, '{"feature": [NaN, 0], "label": 1}'], ": line 2 holds NaN or infinity"),
    (['{"feature": [1, Infinity], "label": 1}'], ": line 1 holds NaN or infinity"),
    ([{"feature": [1e39, 0], "label": 1}], ": line 1 holds NaN or infinity"),  # beyond float32
    ([{"feature": [1, 0], "label": 1}, "", {"feature": [0, 0], "label": 1}], ": line 3 is all zeros"),
    ([{"feature": [1, 0], "label": 1}, {"feature": [1, 0, 3], "label": 1}], ":2: 3 values, but line 1 has 2"),
    ([{"feature": ["1", "0"], "label": 1}], ':1: "feature" must be a list of numbers'),
    ([{"feature": [True, 0], "label": 1}], ':1: "feature" must be a list of numbers'),
    ([{"feature": {"a": 1}, "label": 1}], ':1: "feature" must be a list of numbers'),
    ([{"feature": [[1, 0]], "label": 1}], ':1: "feature" must be a list of numbers'),
    ([{"feature": [1, 0], "label": None}], ": line 1 has no label"),
    ([{"feature": [1, 0], "label": 1}, {"feature": [1, 0]}], ": line 2 has no label"),
    ([{"feature": [1, 0], "label": [1]}], ": line 1: label [1] is neither a number nor text"),
    ([{"feature": [1, 0], "label": "  "}], ": line 1: label is empty"),
])
def test_bad_jsonl_rows_are_refused_with_file_and_row(invoke, tmp_path, lines, what):
    _write_jsonl(tmp_path / "g.jsonl", G, [1, 2, 1])
    bad = _jsonl_lines(tmp_path / "q.jsonl", lines)
    res = invoke("eval", "--query", bad, "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o")
    assert res.exit_code == 2, res.output
    first = res.stderr.splitlines()[0]
    assert first.startswith(f"Error: {bad}{what}"), first
    assert "unexpected" not in res.stderr and "Warning" not in res.stderr
    assert not (tmp_path / "o").exists()


def _npy_case(tmp_path: Path, case: str) -> Path:
    p = tmp_path / "g.npy"
    if case == "nan":
        np.save(p, np.array([[1, 0], [1, 1], [np.nan, 1]], np.float32))
    elif case == "inf64":
        np.save(p, np.array([[1, 0], [1e300, 1], [0, 1]]))
    elif case == "zero":
        np.save(p, np.array([[1, 0], [0, 0], [0, 1]], np.float32))
    elif case == "object":
        np.save(p, np.array([[1, 0], [1], [2]], dtype=object), allow_pickle=True)
    elif case == "strings":
        np.save(p, np.array([["a", "b"], ["c", "d"], ["e", "f"]]))
    elif case == "1d":
        np.save(p, np.array([1.0, 2.0, 3.0]))
    elif case == "not_npy":
        p.write_text("hello")
    elif case == "truncated":
        np.save(p, G)
        p.write_bytes(p.read_bytes()[:60])
    elif case == "sidecar":
        np.save(p, G)
        (tmp_path / "g.paths.txt").write_text("a.jpg\nb.jpg\n")
    return p


@pytest.mark.parametrize("case, what", [
    ("nan", "g.npy: row 3 holds NaN"), ("inf64", "g.npy: row 2 holds NaN"), ("zero", "g.npy: row 2 is all zeros"),
    ("object", "is not a numeric .npy array"), ("strings", "holds a <U1 array"),
    ("1d", "of shape (3,); expected (N, D) numbers"), ("not_npy", "is not a numeric .npy array"),
    ("truncated", "is not a numeric .npy array (EOF"), ("sidecar", "lists 2 paths for 3 rows"),
])
def test_bad_npy_files_are_refused_with_one_line(invoke, tmp_path, case, what):
    _write_jsonl(tmp_path / "q.jsonl", G[:1], [1])
    g = _npy_case(tmp_path, case)
    (tmp_path / "gl.txt").write_text("1\n2\n1\n")
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", g, "--gallery-labels", tmp_path / "gl.txt",
                 "--output", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert what in res.stderr.splitlines()[0] and "unexpected" not in res.stderr


def test_label_file_problems_are_one_line_usage_errors(invoke, tmp_path):
    np.save(tmp_path / "g.npy", G)
    _write_jsonl(tmp_path / "q.jsonl", G[:1], [1])
    for i, (content, what) in enumerate([
            (None, "labels file {} does not exist"), ("dir", "labels file {} is a folder"),
            (b"1\n\n2\n1\n", "{}:2: blank line"), (b"caf\xe9\n2\n1\n", "{}: not UTF-8 text: byte 0xe9 at line 1, column 4"),
            (b"1\n2\n", "{} has 2 labels for 3 features"), (b"1\n2\x00\n1\n", "{}:2: the label holds a NUL byte"),
            (b"1\n2\n1\n4\n", "{} has 4 labels for 3 features")]):
        labels = tmp_path / f"gl{i}.txt"
        if content == "dir":
            labels.mkdir()
        elif content is not None:
            labels.write_bytes(content)
        res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.npy", "--gallery-labels",
                     labels, "--output", tmp_path / "o")
        assert res.exit_code == 2, res.output
        assert what.format(labels) in res.stderr.splitlines()[0]
        assert "unexpected" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2


def test_query_and_gallery_dimensions_must_agree(invoke, tmp_path):
    _write_jsonl(tmp_path / "g.jsonl", G, [1, 2, 1])
    _write_jsonl(tmp_path / "q.jsonl", np.ones((2, 3), np.float32), [1, 2])
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl")
    assert res.exit_code == 2
    assert "shape (2, 3)" in res.stderr and "(3, 2)" in res.stderr and "q.jsonl" in res.stderr


@pytest.mark.parametrize("q_labels, g_labels", [([1.0, 2.0], [1, 2, 1]), (["1", " 2 "], [1, 2, 1]),
                                                ([1, 2], ["01", "2", "1.0"]), ([1.5, "b"], ["1.50", "b", "x"])])
def test_labels_of_different_types_match_by_value(invoke, tmp_path, q_labels, g_labels):
    _write_jsonl(tmp_path / "g.jsonl", G, g_labels)
    _write_jsonl(tmp_path / "q.jsonl", G[:2], q_labels)
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output",
                 tmp_path / "o", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_scored"] == 2


def test_no_scorable_query_is_a_usage_error_not_zeros(invoke, tmp_path):
    _write_jsonl(tmp_path / "g.jsonl", G, ["cat", "dog", "cat"])
    _write_jsonl(tmp_path / "q.jsonl", G[:2], [1, 2])
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o")
    assert res.exit_code == 2 and "no query can be scored" in res.stderr
    assert "'cat'" in res.stderr and not (tmp_path / "o" / "evaluate_result.json").exists()


def test_jsonl_without_labels_takes_them_from_a_label_file(invoke, tmp_path):
    for name, feats in (("q", G[:2]), ("g", G)):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            for i, f in enumerate(feats):
                fh.write(json.dumps({"input_path": f"{name}{i}.jpg", "feature": f.tolist()}) + "\n")
    (tmp_path / "ql.txt").write_text("a\nb\n")
    (tmp_path / "gl.txt").write_text("a\nb\na\n")
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--query-labels",
                 tmp_path / "ql.txt", "--gallery-labels", tmp_path / "gl.txt", "--output", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_scored"] == 2


def test_eval_refuses_a_file_valued_output_before_loading(invoke, tmp_path):
    _write_jsonl(tmp_path / "g.jsonl", G, [1, 2, 1])
    (tmp_path / "o").write_text("x")
    res = invoke("eval", "--query", tmp_path / "g.jsonl", "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o")
    assert res.exit_code == 2 and "is a file, but a folder is expected" in res.stderr


def test_eval_reads_parquet_labels_and_normalises_them(invoke, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(name, feats, labels):
        col = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(feats, np.float32).ravel()), 2)
        pq.write_table(pa.table({"input_path": [f"{name}{i}.jpg" for i in range(len(feats))], "feature": col,
                                 "label": labels}), tmp_path / f"{name}.parquet")

    write("g", G, [1.0, 2.0, 1.0])  # float labels, as a dataframe round trip leaves them
    write("q", G[:2], ["1", "2"])
    res = invoke("eval", "--query", tmp_path / "q.parquet", "--gallery", tmp_path / "g.parquet", "--output",
                 tmp_path / "o", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_scored"] == 2
    write("z", np.array([[1, 0], [0, 0]]), [1, 2])
    res = invoke("eval", "--query", tmp_path / "z.parquet", "--gallery", tmp_path / "g.parquet")
    assert res.exit_code == 2 and "z.parquet: row 2 is all zeros" in res.stderr


@pytest.mark.parametrize("split", ["query", "gallery"])
def test_eval_refuses_a_dataset_with_an_empty_split(invoke, synth_ds, model_dir, tmp_path, split):
    """An empty query.txt gave done_flag true and recall 0.0 (exit 0): nothing was scored, so it is
    refused before any image is embedded, as an empty embeddings file is."""
    (synth_ds / f"{split}.txt").write_text("")
    res = invoke("eval", "--dataset", synth_ds, "--model-dir", model_dir, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 1, res.stderr
    assert f"{split}.txt lists no images" in json.loads(res.stdout)["error"]["message"]
    assert not (tmp_path / "o" / "evaluate_result.json").exists()
