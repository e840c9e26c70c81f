"""`imgfeat index build|add|remove|info` and `imgfeat search` on generated embeddings; PaddleX's
index layout both ways (reproduced here with faiss + yaml exactly as PaddleX's faisser.py writes and
reads it, so paddlex is not needed); brute-force parity; the error cases."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the test extra")

from imgfeat_cli.retrieval.index import Index  # noqa: E402


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_jsonl(path: Path, feats, labels=None, paths=None) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, f in enumerate(feats):
            rec = {"input_path": paths[i] if paths else f"img{i}.jpg", "feature": [float(v) for v in f]}
            if labels is not None:
                rec["label"] = labels[i]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def results(res) -> list:
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


# --- PaddleX's faisser.py, reproduced: IndexData.save / IndexData.load / FaissIndexer.__call__ -----
def paddlex_save(folder: Path, feats: np.ndarray, labels: list, index_type: str = "Flat", metric: str = "IP") -> None:
    factory = f"IVF{min(len(feats) // 8, 65536)},Flat" if index_type == "IVF" else index_type
    index = faiss.IndexIDMap2(faiss.index_factory(feats.shape[1], factory, faiss.METRIC_INNER_PRODUCT
                                                  if metric == "IP" else faiss.METRIC_L2))
    index.train(feats)
    ids = np.arange(len(feats)).astype(np.int64)
    index.add_with_ids(feats, ids)
    folder.mkdir(parents=True)
    faiss.write_index(index, str(folder / "vector.index"))
    info = {"index_type": index_type, "metric_type": metric, "id_map": {int(i): str(l) for i, l in zip(ids, labels)}}
    with open(folder / "id_map.yaml", "w", encoding="utf-8") as fh:
        yaml.dump(info, fh, default_flow_style=False, allow_unicode=True)


def paddlex_search(folder: Path, feats: np.ndarray, k: int, score_thres: float) -> list:
    with open(folder / "id_map.yaml", encoding="utf-8") as fh:
        info = yaml.load(fh, Loader=yaml.FullLoader)
    assert "id_map" in info and "metric_type" in info and "index_type" in info
    id_map = {np.int64(k): str(v) for k, v in info["id_map"].items()}
    index = faiss.read_index(str(folder / "vector.index"))
    assert index.ntotal == len(id_map)
    scores_list, ids_list = index.search(np.array(feats), k)
    preds = []
    for scores, ids in zip(scores_list, ids_list):
        preds.append({"score": [], "label": []})
        for score, i in zip(scores, ids):
            if i >= 0:
                preds[-1]["score"].append(score)
                preds[-1]["label"].append(id_map[i])
    for idx in np.where(scores_list[:, 0] < score_thres)[0]:
        preds[idx] = {"score": None, "label": None}
    return preds


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    g, q = unit(rng, 40), unit(rng, 7)
    labels = [f"class {i % 5}" for i in range(40)]  # labels with spaces
    write_jsonl(tmp_path / "g.jsonl", g, labels)
    write_jsonl(tmp_path / "q.jsonl", q, paths=[f"q{i}.jpg" for i in range(7)])
    return g, q, labels


def test_build_info_search_equal_brute_force(invoke, tmp_path, data):
    g, q, labels = data
    res = invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["added"] == 40 and doc["count"] == 40 and doc["dim"] == 16 and doc["index_type"] == "Flat"
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["id_map.yaml", "imgfeat_index.json", "vector.index"]
    info = json.loads(invoke("index", "info", tmp_path / "idx", "--json").stdout)
    assert info["count"] == 40 and info["metric_type"] == "IP" and info["labels"]["class 0"] == 8
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx", "-k", "4",
                         "--no-threshold"))
    sims = q @ g.T
    for i, r in enumerate(got):
        top = np.argsort(-sims[i])[:4]
        assert r["input_path"] == f"q{i}.jpg" and r["ids"] == top.tolist()
        assert r["labels"] == [labels[j] for j in top]
        assert r["scores"] == pytest.approx(sims[i, top].tolist(), abs=1e-5)


def test_l2_brute_force_and_threshold_direction(invoke, tmp_path, data):
    g, q, _ = data
    invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx", "--metric", "L2")
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx", "-k", "3",
                         "--no-threshold"))
    d2 = ((q[:, None, :] - g[None]) ** 2).sum(-1)
    for i, r in enumerate(got):
        assert r["ids"] == np.argsort(d2[i])[:3].tolist()
        assert r["scores"] == sorted(r["scores"])  # smaller is better
    best = d2.min(axis=1)
    cut = float(np.median(best))
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx",
                         "--threshold", str(cut)))
    assert [bool(r["labels"]) for r in got] == (best <= cut).tolist()  # close ones match, far ones do not


def test_ip_threshold_is_paddlex_rule(tmp_path, data):
    g, q, labels = data
    index = Index.create(16)
    index.add(g, labels)
    best = (q @ g.T).max(axis=1)
    cut = float(np.median(best))
    mine = index.search(q, 3, threshold=cut)
    paddlex_save(tmp_path / "px", g, labels)
    theirs = paddlex_search(tmp_path / "px", q, 3, cut)
    assert [r["labels"] or None for r in mine] == [t["label"] for t in theirs]


def test_add_skips_known_ids_continue_and_remove(invoke, tmp_path, data):
    g, _, labels = data
    write_jsonl(tmp_path / "part.jsonl", g[:30], labels[:30])
    invoke("index", "build", "-g", tmp_path / "part.jsonl", "--out", tmp_path / "idx")
    res = invoke("index", "add", "--index", tmp_path / "idx", "-g", tmp_path / "g.jsonl", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["added"] == 10 and doc["skipped_already_indexed"] == 30 and doc["count"] == 40
    index = Index.load(tmp_path / "idx")
    assert sorted(index.id_map) == list(range(40)) and index.paths[35] == "img35.jpg"
    assert (tmp_path / "idx.bak").is_dir() and Index.load(tmp_path / "idx.bak").count == 30  # last state kept
    res = invoke("index", "add", "--index", tmp_path / "idx", "-g", tmp_path / "g.jsonl", "--json")
    assert json.loads(res.stdout)["added"] == 0 and json.loads(res.stdout)["written"] is False
    (tmp_path / "ids.txt").write_text("3 whatever\n\n5\n")
    res = invoke("index", "remove", "--index", tmp_path / "idx", "--ids", "39,1", "--ids-file", tmp_path / "ids.txt",
                 "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["removed"] == 4
    res = invoke("index", "remove", "--index", tmp_path / "idx", "--label", "class 2", "--json")
    assert json.loads(res.stdout)["removed"] == 8
    res = invoke("index", "remove", "--index", tmp_path / "idx", "--path", "img0.jpg", "--json")
    assert json.loads(res.stdout)["count"] == 40 - 4 - 8 - 1
    write_jsonl(tmp_path / "new.jsonl", g[:1], ["again"], ["new.jpg"])
    invoke("index", "add", "--index", tmp_path / "idx", "-g", tmp_path / "new.jsonl")
    index = Index.load(tmp_path / "idx")
    assert index.id_map[40] == "again" and 39 not in index.id_map  # the removed newest id is not reused
    assert paddlex_search(tmp_path / "idx", g[:1], 1, 0.0)[0]["label"] == ["again"]


@pytest.mark.parametrize("codes", ["IVF", "x4fs", "RaBitQfs3"])
def test_removing_from_an_ivf_index_leaves_every_other_item_its_own_label(invoke, tmp_path, codes, monkeypatch):
    # faiss' id map does not renumber IVF lists on remove_ids: done by hand, twice in a row
    from imgfeat_cli.retrieval import autoindex

    n, dim = (1500, 32) if codes == "IVF" else (autoindex.MIN_TRAIN_ROWS, 128)  # RaBitQ codes are small from 128-d
    g = unit(np.random.default_rng(3), n, dim)
    write_jsonl(tmp_path / "g.jsonl", g, [f"item{i}" for i in range(n)])
    index_type, extra = codes, []
    if codes != "IVF":  # a compressed IVF (fast-scan PQ or RaBitQ codes, no re-ranking) chosen by auto
        monkeypatch.setattr(autoindex, "FLAT_MAX_ROWS", 0)
        monkeypatch.setattr(autoindex, "HNSW_MAX_ROWS", 0)
        fitting = [c for c in autoindex.candidates(n, dim) if c.factory.endswith(codes)]
        index_type, extra = "auto", ["--max-memory", str(fitting[0].bytes)]
    res = invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx", "--index-type", index_type,
                 *extra, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["factory"].startswith("IVF"), res.output
    assert json.loads(res.stdout)["factory"].endswith("Flat" if codes == "IVF" else codes)
    assert invoke("index", "remove", "--index", tmp_path / "idx", "--ids", "5,700").exit_code == 0
    assert invoke("index", "remove", "--index", tmp_path / "idx", "--ids", "6,1499").exit_code == 0
    index = Index.load(tmp_path / "idx")
    assert index.factory == json.loads(res.stdout)["factory"]  # read back from vector.index itself
    assert type(faiss.read_index(str(tmp_path / "idx" / "vector.index"))).__name__ == "IndexIDMap"  # 8 B an item
    faiss.extract_index_ivf(index.faiss_index).nprobe = 256  # every list: the item itself is found
    kept = [i for i in range(n) if i not in (5, 6, 700, 1499)]
    _, got = index.faiss_index.search(g[kept], 1)
    if codes == "IVF":  # exact codes: each item is its own nearest
        assert got[:, 0].tolist() == kept
    else:
        assert np.mean(got[:, 0] == np.array(kept)) > 0.9 and not set(got[:, 0].tolist()) & {5, 6, 700, 1499, -1}
    theirs = paddlex_search(tmp_path / "idx", g[kept[:50]], 1, 0.0)  # what PaddleX reads agrees
    assert [t["label"][0] for t in theirs] == [index.id_map[int(i)] for i in got[:50, 0]]


def test_an_ivf_index_after_paddlexs_remove_is_refused_not_mislabelled(invoke, tmp_path):
    g = unit(np.random.default_rng(4), 400, 16)
    paddlex_save(tmp_path / "px", g, [f"item{i}" for i in range(400)], "IVF")
    index = faiss.read_index(str(tmp_path / "px" / "vector.index"))
    index.remove_ids(np.array([3], dtype=np.int64))  # PaddleX's FaissBuilder.remove
    faiss.write_index(index, str(tmp_path / "px" / "vector.index"))
    doc = yaml.safe_load((tmp_path / "px" / "id_map.yaml").read_text())
    del doc["id_map"][3]
    (tmp_path / "px" / "id_map.yaml").write_text(yaml.safe_dump(doc))
    res = invoke("index", "info", tmp_path / "px")
    assert res.exit_code == 1 and "is damaged" in res.stderr and "wrong labels" in res.stderr, res.output
    assert "rebuild" in res.stderr and "Traceback" not in res.stderr


def test_paddlex_built_index_loads_searches_and_grows(invoke, tmp_path, data):
    g, q, labels = data
    paddlex_save(tmp_path / "px", g, labels, "HNSW32")
    info = json.loads(invoke("index", "info", tmp_path / "px", "--json").stdout)
    assert info["index_type"] == "HNSW32" and info["count"] == 40 and info["paths_known"] == 0
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "px", "-k", "5"))
    theirs = paddlex_search(tmp_path / "px", q, 5, 0.5)
    assert [r["labels"] or None for r in got] == [t["label"] for t in theirs]
    write_jsonl(tmp_path / "more.jsonl", g[:2], ["x", "y"], ["m0.jpg", "m1.jpg"])
    assert invoke("index", "add", "--index", tmp_path / "px", "-g", tmp_path / "more.jsonl").exit_code == 0
    assert sorted(paddlex_search(tmp_path / "px", g[:1], 2, 0.0)[0]["label"]) == ["class 0", "x"]  # a tie
    res = invoke("index", "remove", "--index", tmp_path / "px", "--ids", "1")
    assert res.exit_code == 2 and "HNSW32 indexes cannot remove" in res.stderr and "rebuild" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2  # error + hint


@pytest.mark.parametrize("index_type", ["Flat", "IVF", "HNSW32"])
def test_imgfeat_index_reads_in_paddlex(tmp_path, index_type):
    rng = np.random.default_rng(1)
    g, q = unit(rng, 1200, 8), unit(rng, 20, 8)
    labels = [f"标签 {i % 9}" for i in range(1200)]
    index = Index.create(8, index_type, "IP", len(g))
    index.train(g)
    index.add(g, labels)
    index.save(tmp_path / "idx")
    assert index.factory == {"IVF": "IVF30,Flat"}.get(index_type, index_type)
    theirs = paddlex_search(tmp_path / "idx", q, 5, 0.0)
    mine = Index.load(tmp_path / "idx").search(q, 5, threshold=0.0)
    assert [r["labels"] or None for r in mine] == [t["label"] for t in theirs]
    text = (tmp_path / "idx" / "id_map.yaml").read_text(encoding="utf-8")
    assert text.startswith("id_map:\n  0: 标签 0\n") and "index_type: " + index_type in text


def test_ivf_small_gallery_falls_back_to_flat(invoke, tmp_path, data):
    res = invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx", "--index-type", "IVF",
                 "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["index_type"] == "Flat"
    assert "built Flat instead" in json.loads(res.stdout)["notes"][0]


def test_legacy_paddleclas_layout_is_read_and_converted(invoke, tmp_path, data):
    g, q, _ = data
    folder = tmp_path / "legacy"
    paddlex_save(folder, g, ["x"] * 40)
    (folder / "id_map.yaml").unlink()
    docs = {np.int64(i): f"images/{i}.jpg\tclass {i % 5}" for i in range(40)}
    (folder / "id_map.pkl").write_bytes(pickle.dumps(docs))
    index = Index.load(folder)
    assert index.id_map[7] == "class 2" and index.paths[7] == "images/7.jpg"
    assert any("legacy" in n for n in index.notes)
    assert invoke("index", "remove", "--index", folder, "--ids", "0").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["id_map.yaml", "imgfeat_index.json", "vector.index"]
    assert paddlex_search(folder, g[7:8], 1, 0.0)[0]["label"] == ["class 2"]


def test_label_file_parsing(tmp_path):
    from imgfeat_cli.retrieval.gallery import read_gallery

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.txt").write_bytes("\ufeffa.jpg cat\r\nb/c d.jpg\tCoca Cola  \r\n\r\n  e.jpg   big dog\n"
                                             .encode("utf-8"))
    gal = read_gallery(str(tmp_path / "sub" / "g.txt"))
    assert gal.labels == ["cat", "Coca Cola", "big dog"]
    assert gal.sources == [str(tmp_path / "sub" / p) for p in ("a.jpg", "b/c d.jpg", "e.jpg")]
    gal = read_gallery(str(tmp_path / "sub" / "g.txt"), root=str(tmp_path))
    assert gal.sources[0] == str(tmp_path / "a.jpg") and gal.paths[0] == str(tmp_path / "a.jpg")


@pytest.mark.parametrize("label_txt,expected", [
    ("Coca Cola\n\u5143\u6c14\u68ee\u6797\n", ["Coca Cola", "\u5143\u6c14\u68ee\u6797", "Coca Cola"]),  # convert's label.txt
    ("\ufeffCoca Cola\r\n\u5143\u6c14\u68ee\u6797\r\n\r\n", ["Coca Cola", "\u5143\u6c14\u68ee\u6797", "Coca Cola"]),
    ("Coca Cola\n", ["0", "1", "0"]),  # does not name class 1: ids kept, nothing guessed
    ("dog\ndog\n", ["0", "1", "0"]),  # two classes, one name
    (None, ["0", "1", "0"]),  # no label.txt
    ("fifo", ["0", "1", "0"]),  # a FIFO must not hang the build
])
def test_a_dataset_gallery_is_labelled_with_its_class_names(tmp_path, label_txt, expected):
    """An index built from a dataset (what README's tour does after convert) answered "24" where
    the photos' folder said "Sprite": label.txt names each class id."""
    import os

    from imgfeat_cli.retrieval.gallery import read_gallery

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    for split in ("train", "gallery", "query"):
        (ds / f"{split}.txt").write_text("images/a.jpg 0\nimages/b.jpg 1\nimages/c.jpg 0\n")
    if label_txt == "fifo":
        os.mkfifo(ds / "label.txt")
    elif label_txt is not None:
        (ds / "label.txt").write_text(label_txt, encoding="utf-8")
    assert read_gallery(str(ds)).labels == expected


def test_class_names_apply_only_to_ascii_integer_labels():
    from imgfeat_cli.datasets.classnames import named_labels

    assert named_labels([0, 1, 0], ["cat", "dog"]) == ["cat", "dog", "cat"]
    assert named_labels(["0", "\u00b2"], ["cat", "dog", "fox"]) == ["0", "\u00b2"]  # '\u00b2'.isdigit(), int() fails
    assert named_labels(["0", "2"], ["cat", "dog"]) == ["0", "2"]


def test_atomic_save_keeps_old_state_on_failure(tmp_path, data, monkeypatch):
    g, _, labels = data
    index = Index.create(16)
    index.add(g, labels)
    index.save(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}
    index.add(g[:1], ["new"])
    import imgfeat_cli.retrieval.layout as layoutmod
    monkeypatch.setattr(layoutmod, "side_json", lambda idx: (_ for _ in ()).throw(OSError(28, "No space left")))
    from imgfeat_cli.common.errors import ImgfeatError

    with pytest.raises(ImgfeatError, match="No space left"):
        index.save(tmp_path / "idx")
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp folder left


def test_errors_are_one_line_with_exit_codes(invoke, tmp_path, data):
    g, _, labels = data
    idx = tmp_path / "idx"

    def err(*args, code, needle):
        res = invoke(*args)
        assert res.exit_code == code, res.output
        lines = res.stderr.strip().splitlines()
        assert lines[0].startswith("Error: ") and needle in lines[0] and "Traceback" not in res.stderr, res.stderr
        assert len(lines) <= 2

    err("index", "build", "-g", tmp_path / "nope.txt", "--out", idx, code=2, needle="does not exist")
    (tmp_path / "empty.txt").write_text("\n\n")
    err("index", "build", "-g", tmp_path / "empty.txt", "--out", idx, code=2, needle="is empty")
    (tmp_path / "bad.txt").write_text("a.jpg cat\nlonely.jpg\n")
    err("index", "build", "-g", tmp_path / "bad.txt", "--out", idx, code=2, needle="bad.txt:2:")
    assert not idx.exists()
    assert invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", idx).exit_code == 0
    err("index", "build", "-g", tmp_path / "g.jsonl", "--out", idx, code=2, needle="exists")
    err("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path, code=2, needle="not an index")
    write_jsonl(tmp_path / "wide.jsonl", unit(np.random.default_rng(3), 2, 8), ["a", "b"])
    err("index", "add", "--index", idx, "-g", tmp_path / "wide.jsonl", code=2, needle="dimension 8")
    err("search", "--embeddings", tmp_path / "wide.jsonl", "--index", idx, code=2, needle="dimension 8")
    err("index", "remove", "--index", idx, "--ids", "3,999", code=2, needle="not in the index: 999")
    err("index", "remove", "--index", idx, "--ids", "x", code=2, needle="not an integer")
    err("index", "remove", "--index", idx, "--label", "nobody", code=2, needle="no item labelled")
    err("index", "info", tmp_path / "missing", code=2, needle="does not exist")
    err("search", "--index", idx, code=2, needle="query images or --embeddings")
    # damaged folders: corrupt vector file, count mismatch, a missing file
    import shutil
    for name in ("corrupt", "count", "nomap"):
        shutil.copytree(idx, tmp_path / name)
    (tmp_path / "corrupt" / "vector.index").write_bytes(b"garbage" * 10)
    err("index", "info", tmp_path / "corrupt", code=1, needle="not a readable faiss index")
    doc = yaml.safe_load((tmp_path / "count" / "id_map.yaml").read_text())
    del doc["id_map"][5]
    (tmp_path / "count" / "id_map.yaml").write_text(yaml.safe_dump(doc))
    err("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "count", code=1, needle="40 vectors")
    (tmp_path / "nomap" / "id_map.yaml").unlink()
    err("index", "info", tmp_path / "nomap", code=1, needle="has no id_map.yaml")
    # an interrupted swap: the folder is gone, the backup is named
    (idx).rename(tmp_path / "idx.bak")
    res = invoke("index", "info", idx)
    assert res.exit_code == 2 and "idx.bak holds the last complete index" in res.stderr


def test_second_writer_is_refused(invoke, tmp_path, data):
    from imgfeat_cli.common import folders

    invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx")
    with folders.writer_lock(tmp_path / "idx"):
        res = invoke("index", "remove", "--index", tmp_path / "idx", "--ids", "1")
    assert res.exit_code == 2 and "another imgfeat process is writing" in res.stderr
    assert Index.load(tmp_path / "idx").count == 40


def test_npy_gallery_and_out_file(invoke, tmp_path, data):
    g, q, labels = data
    np.save(tmp_path / "g.npy", g)
    (tmp_path / "g.paths.txt").write_text("".join(f"img{i}.jpg\n" for i in range(40)))
    (tmp_path / "labels.txt").write_text("".join(f"{lab}\n" for lab in labels))
    res = invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "labels.txt", "--out",
                 tmp_path / "idx", "--index-type", "HNSW32")
    assert res.exit_code == 0, res.output
    np.save(tmp_path / "q.npy", q)
    res = invoke("search", "--embeddings", tmp_path / "q.npy", "--index", tmp_path / "idx", "--out",
                 tmp_path / "r.jsonl", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and len(doc["results"]) == 7 and doc["threshold"] == 0.5
    assert [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()] == doc["results"]


def test_recall1_from_search_equals_eval(invoke, tmp_path):
    rng = np.random.default_rng(5)
    centers = unit(rng, 12)
    lab_g, lab_q = rng.integers(0, 12, 120), rng.integers(0, 12, 30)
    g = centers[lab_g] + 1.2 * unit(rng, 120)
    q = centers[lab_q] + 1.2 * unit(rng, 30)
    g, q = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (g, q))
    write_jsonl(tmp_path / "g.jsonl", g, lab_g.tolist())
    write_jsonl(tmp_path / "q.jsonl", q, lab_q.tolist(), [f"q{i}.jpg" for i in range(30)])
    ev = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output",
                tmp_path / "o", "--json")
    recall1 = json.loads(ev.stdout)["metrics"]["recall1"]
    invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx")
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx", "-k", "1",
                         "--no-threshold"))
    mine = np.mean([r["labels"][0] == str(lab) for r, lab in zip(got, lab_q)])
    assert 0.2 < recall1 < 1.0 and mine == pytest.approx(recall1)


def test_drink_reference_features_recall(invoke, tmp_path):
    """987 official PP-ShiTuV2_rec features: the first image of each class (with 2+) queries the rest."""
    from collections import defaultdict

    from conftest import shared_path

    ref = shared_path("data", "drink_ppshituv2_reference")
    feats = np.load(ref / "features.npy")
    by = defaultdict(list)
    for line in (ref / "ids.tsv").read_text(encoding="utf-8").splitlines():
        row, path, name = line.split("\t")
        by[name].append((int(row), path))
    q, g = [], []
    for name, items in by.items():
        for i, (row, path) in enumerate(items):
            (q if i == 0 and len(items) >= 2 else g).append((row, path, name))
    write_jsonl(tmp_path / "g.jsonl", feats[[r for r, _, _ in g]], [n for *_, n in g], [p for _, p, _ in g])
    write_jsonl(tmp_path / "q.jsonl", feats[[r for r, _, _ in q]], [n for *_, n in q], [p for _, p, _ in q])
    assert invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx").exit_code == 0
    got = results(invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx", "-k", "1",
                         "--no-threshold"))
    recall1 = np.mean([r["labels"][0] == n for r, (*_, n) in zip(got, q)])
    ev = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--output", tmp_path / "o",
                "--json")
    assert len(got) == 194 and recall1 == pytest.approx(json.loads(ev.stdout)["metrics"]["recall1"])
    assert recall1 > 0.95


def test_images_build_add_search_and_recall_equals_eval(invoke, synth_ds, model_dir, tmp_path):
    """A dataset folder and a label list of images, embedded with a seeded exported PP-ShiTuV2_rec."""
    ev = invoke("eval", "--dataset", synth_ds, "--model-dir", model_dir, "--output", tmp_path / "o", "--json")
    assert ev.exit_code == 0, ev.output
    res = invoke("index", "build", "-g", synth_ds, "--out", tmp_path / "idx", "--model-dir", model_dir, "--json")
    assert res.exit_code == 0, res.output
    n_gallery = len((synth_ds / "gallery.txt").read_text().split())
    assert json.loads(res.stdout)["added"] == n_gallery // 2
    assert Index.load(tmp_path / "idx").model["name"] == "PP-ShiTuV2_rec"
    query = [line.split(" ") for line in (synth_ds / "query.txt").read_text().splitlines()]
    got = results(invoke("search", *[synth_ds / p for p, _ in query], "--index", tmp_path / "idx",
                         "--model-dir", model_dir, "-k", "1", "--no-threshold"))
    assert [r["input_path"] for r in got] == [str(synth_ds / p) for p, _ in query]
    recall1 = np.mean([r["labels"][0] == lab for r, (_, lab) in zip(got, query)])
    assert recall1 == pytest.approx(json.loads(ev.stdout)["metrics"]["recall1"])
    # a label list over the same root: already indexed images are skipped, new ones (and a broken one) added
    lines = [f"{p} class {lab}" for p, lab in query[:2]] + [(synth_ds / "gallery.txt").read_text().split("\n")[0]]
    (synth_ds / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (synth_ds / "more.txt").write_text("\n".join(lines + ["broken.jpg class 9"]) + "\n")
    res = invoke("index", "add", "--index", tmp_path / "idx", "-g", synth_ds / "more.txt", "--model-dir", model_dir,
                 "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 4 and doc["added"] == 2 and doc["skipped_already_indexed"] == 1 and doc["failed"] == 1
    assert "broken.jpg" in doc["errors"][0]["input_path"] and "could not be embedded" in res.stderr
    assert Index.load(tmp_path / "idx").count == n_gallery // 2 + 2
    res = invoke("search", synth_ds / "broken.jpg", synth_ds / query[0][0], "--index", tmp_path / "idx",
                 "--model-dir", model_dir, "--no-threshold", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 4 and len(doc["results"]) == 1 and len(doc["results"][0]["ids"]) == 5
    assert doc["errors"][0]["input_path"].endswith("broken.jpg")


def test_a_closed_stdout_is_a_quiet_exit_141(tmp_path, data):
    """`imgfeat search ... | head -1`: the reader leaves early; no "Error: broken pipe" line."""
    import subprocess
    import sys

    from imgfeat_cli.common.errors import EXIT_BROKEN_PIPE

    cli = [sys.executable, "-m", "imgfeat_cli"]
    subprocess.run([*cli, "index", "build", "-g", str(tmp_path / "g.jsonl"), "--out", str(tmp_path / "idx"), "-q"],
                   check=True, capture_output=True)
    proc = subprocess.Popen([*cli, "search", "--embeddings", str(tmp_path / "q.jsonl"), "--index", str(tmp_path / "idx")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `head` does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE and "Error" not in err, err


def test_search_out_refuses_an_existing_file_without_overwrite(invoke, tmp_path, data):
    """search --out replaced a user's file; embed, index, export and quantize refuse without --overwrite."""
    assert invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "idx").exit_code == 0
    mine = tmp_path / "results.jsonl"
    mine.write_text("my notes\n")
    args = ("search", "--embeddings", tmp_path / "q.jsonl", "--index", tmp_path / "idx", "--out", mine)
    res = invoke(*args)
    assert res.exit_code == 2 and f"{mine} already exists" in res.stderr and "--overwrite" in res.stderr
    assert mine.read_text() == "my notes\n"
    res = invoke(*args, "--overwrite")
    assert res.exit_code == 0 and len(mine.read_text().splitlines()) == 7


@pytest.mark.parametrize("command", ["build", "add", "remove"])
def test_a_users_own_bak_folder_is_never_replaced(invoke, tmp_path, data, command):
    """An index write keeps the previous index as DIR.bak: a DIR.bak the user made themselves was
    replaced by it. It is refused (exit 2) before anything changes; imgfeat's own .bak is replaced
    as before."""
    g, _, labels = data
    idx, bak = tmp_path / "idx", tmp_path / "idx.bak"
    assert invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", idx).exit_code == 0
    bak.mkdir()
    (bak / "precious.txt").write_text("mine")
    write_jsonl(tmp_path / "more.jsonl", g[:2], ["new", "new"], paths=["n0.jpg", "n1.jpg"])
    run = {"build": ("index", "build", "-g", tmp_path / "g.jsonl", "--out", idx, "--overwrite"),
           "add": ("index", "add", "--index", idx, "-g", tmp_path / "more.jsonl"),
           "remove": ("index", "remove", "--index", idx, "--ids", "3")}[command]
    before = (idx / "id_map.yaml").read_bytes()
    res = invoke(*run)
    assert res.exit_code == 2 and f"{bak} exists and imgfeat did not make it" in res.stderr, res.stderr
    assert (bak / "precious.txt").read_text() == "mine" and (idx / "id_map.yaml").read_bytes() == before
    (bak / "precious.txt").unlink()
    bak.rmdir()
    for _ in range(2):  # imgfeat's own backup is replaced by the next one
        assert invoke(*run).exit_code == 0
        assert (bak / "vector.index").is_file()
        if command != "build":
            run = ("index", "build", "-g", tmp_path / "g.jsonl", "--out", idx, "--overwrite")


def test_a_missing_faiss_is_said_before_the_model_is_loaded(invoke, tmp_path, monkeypatch, synth_ds):
    import sys

    import imgfeat_cli.pipeline.predictor as predictor

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    monkeypatch.setattr(predictor, "create_model", lambda *a, **k: pytest.fail("the model was loaded first"))
    res = invoke("index", "build", "-g", synth_ds, "--out", tmp_path / "idx", "--model-dir", tmp_path / "m")
    assert res.exit_code == 1 and "faiss is not installed" in res.stderr and "pip install faiss-cpu" in res.stderr
    assert not (tmp_path / "idx").exists()
