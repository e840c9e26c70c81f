"""`index build` from streamed galleries (Parquet folders as the Ray engine writes them, memory-mapped
.npy, .jsonl), `--index-type auto --max-memory`, the recall it measures and records, PaddleX reading
what it writes, and the hostile cases (bad sizes, empty or corrupt folders, NaN rows)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the test extra")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from test_index import paddlex_search, write_jsonl  # noqa: E402

DIM = 64


def clustered(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """Normalised vectors around n/20 centres (approximate indexes can work on them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ray_folder(folder: Path, feats: np.ndarray, rows_per_file: int = 2048, failed: int = 0, fp16: bool = True,
               labels: bool = False) -> list:
    """A folder laid out as `imgfeat embed --engine ray` writes it: part files, an error column
    (``failed`` extra rows with a reason and no feature), float16 features, hidden and _ files."""
    folder.mkdir(parents=True)
    paths = [f"/photos/c{i % 7}/{i}.jpg" for i in range(len(feats))]
    kind = pa.float16() if fp16 else pa.float32()
    for n, start in enumerate(range(0, max(1, len(feats)), rows_per_file)):
        part = feats[start:start + rows_per_file].astype(np.float16 if fp16 else np.float32)
        m = len(part)
        valid = [True] * m + [False] * (failed if n == 0 else 0)
        flat = np.concatenate([part.reshape(-1), np.zeros(DIM * (len(valid) - m), part.dtype)])
        feature = pa.FixedSizeListArray.from_arrays(pa.array(flat, kind), DIM, mask=pa.array([not v for v in valid]))
        cols = {"input_path": paths[start:start + m] + [f"/photos/bad{j}.jpg" for j in range(len(valid) - m)],
                "feature": feature, "error": [None] * m + ["truncated JPEG"] * (len(valid) - m)}
        if labels:
            cols["label"] = [f"L{i % 5}" for i in range(start, start + m)] + ["x"] * (len(valid) - m)
        pq.write_table(pa.table(cols), folder / f"part-run-{n:05d}.parquet")
    (folder / "_imgfeat.yaml").write_text("Output: {}\n")
    (folder / ".part-part-run-99999.parquet").write_bytes(b"half a file")
    return paths


def ok(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def one_line_error(res, code: int, needle: str) -> None:
    assert res.exit_code == code, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and needle in lines[0], res.stderr
    assert len(lines) <= 2 and "Traceback" not in res.stderr


def test_parquet_folder_streams_into_the_same_index_as_a_jsonl(invoke, tmp_path):
    feats = clustered(3000)
    paths = ray_folder(tmp_path / "feats", feats, rows_per_file=1000, failed=3, fp16=False)
    write_jsonl(tmp_path / "g.jsonl", feats, [p.split("/")[2] for p in paths], paths)
    a = ok(invoke("index", "build", "-g", tmp_path / "feats", "-o", "Index.label_from=folder", "--out", tmp_path / "a",
                  "--json"))
    b = ok(invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "b", "--json"))
    assert a["count"] == b["count"] == 3000 and a["factory"] == "Flat" and a["build"]["recall_at_10"] == 1.0
    assert (tmp_path / "a" / "id_map.yaml").read_text() == (tmp_path / "b" / "id_map.yaml").read_text()
    qa = paddlex_search(tmp_path / "a", feats[:50], 5, 0.5)
    assert qa == paddlex_search(tmp_path / "b", feats[:50], 5, 0.5)
    assert [q["label"][0] for q in qa] == [p.split("/")[2] for p in paths[:50]]
    info = ok(invoke("index", "info", tmp_path / "a", "--json"))
    assert info["paths_known"] == 3000 and info["labels"] == {f"c{i}": len(range(i, 3000, 7)) for i in range(7)}


def test_auto_within_a_budget_measures_and_records_recall(invoke, tmp_path):
    feats = clustered(12000, seed=1)
    ray_folder(tmp_path / "feats", feats, labels=True)
    from imgfeat_cli.retrieval.autoindex import estimate, nlist_for

    budget = estimate("IVF-PQ", 12000, DIM, nlist_for(12000), 32) + 1000  # below RaBitQ's
    res = invoke("index", "build", "-g", tmp_path / "feats", "--out", tmp_path / "idx", "--index-type", "auto",
                 "--max-memory", str(budget), "--json")
    doc = ok(res)
    assert doc["index_type"] == "IVF" and doc["factory"].endswith(",PQ64x4fs"), doc["factory"]
    assert "WARNING" not in res.stderr  # faiss' own k-means warnings (too few training points) stay away
    build = doc["build"]
    assert build["recall_queries"] == 500 and 0 < build["recall_at_10"] <= 1 and build["nprobe"] >= 1
    assert [build["nprobe"], build["recall_at_10"]] in build["tried"]
    # the tuned nprobe is stored in vector.index: PaddleX (which sets nothing) searches with it
    stored = faiss.extract_index_ivf(faiss.read_index(str(tmp_path / "idx" / "vector.index")))
    assert stored.nprobe == build["nprobe"]
    info = ok(invoke("index", "info", tmp_path / "idx", "--json"))
    assert info["build"]["recall_at_10"] == build["recall_at_10"] and info["factory"] == doc["factory"]
    text = invoke("index", "info", tmp_path / "idx")
    assert "recall@10" in text.stdout and "held-out" in text.stdout
    got = paddlex_search(tmp_path / "idx", feats[:20], 5, 0.0)
    assert all(g["label"] and len(g["label"]) == 5 for g in got)
    assert yaml.safe_load((tmp_path / "idx" / "id_map.yaml").read_text())["index_type"] == "IVF"
    assert ok(invoke("index", "remove", "--index", tmp_path / "idx", "--ids", "3", "--json"))["removed"] == 1
    # a re-ranked index: removal is refused before anything changes (faiss' refine stage cannot remove)
    budget = estimate("IVF-FS-SQ8", 12000, DIM, nlist_for(12000)) + 1000
    doc = ok(invoke("index", "build", "-g", tmp_path / "feats", "--out", tmp_path / "ref", "--index-type", "auto",
                    "--max-memory", str(budget), "--json"))
    assert doc["factory"].endswith(",Refine(SQ8)") and doc["build"]["recall_at_10"] > 0.5
    assert faiss.downcast_index(faiss.read_index(str(tmp_path / "ref" / "vector.index")).index).k_factor == 4
    one_line_error(invoke("index", "remove", "--index", tmp_path / "ref", "--ids", "3"), 2, "cannot remove items")


def test_without_rabitq_in_faiss_auto_falls_back_to_sq8(monkeypatch):
    from imgfeat_cli.retrieval import autoindex

    monkeypatch.setattr(autoindex, "rabitq_available", lambda: False)  # faiss before RaBitQfs<b>
    flat = autoindex.estimate("Flat", 10**6, 512)
    assert autoindex.choose(10**6, 512, int(flat / 3.7)).factory == "IVF1024,SQ8"
    assert autoindex.choose(10**6, 512, flat // 8).factory == "IVF1024,PQ256x4fs"
    assert not [c for c in autoindex.candidates(10**6, 512) if "RaBitQ" in c.factory]


def test_auto_choices_follow_the_budget():
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.retrieval.autoindex import FLAT_MAX_ROWS, choose, estimate, parse_size

    assert choose(50_000, 512, None).factory == "Flat"
    flat = estimate("Flat", 10**6, 512)
    assert choose(10**6, 512, flat * 2).factory == "IVF1024,PQ256x4fs,RFlat"  # re-ranked on exact vectors
    assert choose(10**6, 512, flat).factory == "IVF1024,PQ256x4fs,Refine(SQ8)"
    assert choose(10**6, 512, flat // 3).factory == "IVF1024,PQ256x4fs,Refine(SQ8)"
    assert choose(10**6, 512, flat // 4).factory == "IVF4096,RaBitQfs4"  # 4x the lists: measured
    assert choose(10**6, 512, flat // 8).factory == "IVF4096,RaBitQfs3"  # the budget
    assert choose(10**6, 512, flat // 12).factory == "IVF1024,PQ256x4fs"
    assert choose(2 * FLAT_MAX_ROWS, 512, None).factory == "HNSW32"
    for budget in (flat * 2, flat, flat // 3, flat // 4, flat // 8, flat // 12):
        assert choose(10**6, 512, budget).bytes <= budget
    with pytest.raises(UsageError, match="too small"):
        choose(10**6, 512, 10 << 20)
    assert parse_size("8GB") == 8 << 30 and parse_size("512m") == 512 << 20 and parse_size("1.5GiB") == 3 << 29
    assert parse_size(4096) == 4096
    for bad in ("lots", "-5GB", "0", "1e999", "", "8 XB", True):
        with pytest.raises(UsageError, match="max-memory"):
            parse_size(bad)


def test_npy_memory_mapped_and_jsonl_galleries(invoke, tmp_path):
    feats = clustered(1500, seed=2)
    np.save(tmp_path / "g.npy", feats.astype(np.float16))
    (tmp_path / "g.paths.txt").write_text("".join(f"/p/k{i % 3}/{i}.jpg\n" for i in range(1500)))
    (tmp_path / "labels.txt").write_text("".join(f"lab {i % 4}\n" for i in range(1500)))
    doc = ok(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "labels.txt", "--out",
                    tmp_path / "a", "--index-type", "IVF", "--json"))
    assert doc["index_type"] == "IVF" and doc["count"] == 1500 and 0 < doc["build"]["recall_at_10"] <= 1
    assert doc["build"]["nprobe"] == faiss.extract_index_ivf(faiss.read_index(str(tmp_path / "a" / "vector.index"))).nprobe
    doc = ok(invoke("index", "build", "-g", tmp_path / "g.npy", "-o", "Index.label_from=folder", "--out", tmp_path / "b",
                    "--index-type", "HNSW32", "--json"))
    assert doc["build"]["efSearch"] == 64 and ok(invoke("index", "info", tmp_path / "b", "--json"))["num_labels"] == 3
    one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--out", tmp_path / "c"), 2, "has no labels")
    (tmp_path / "short.txt").write_text("a\nb\n")
    one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "short.txt", "--out",
                          tmp_path / "c"), 2, "2 labels for 1500 features")
    os.mkfifo(tmp_path / "fifo")  # `--labels <(cut ...)` too: refused, never read (a FIFO can block forever)
    for where, says in ((tmp_path / "fifo", "is not a regular file"), (tmp_path, "is a folder"),
                        (tmp_path / "none.txt", "does not exist")):
        one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", where, "--out", tmp_path / "c"),
                       2, f"labels file {where} {says}")
    # a blank line among the labels would shift every later label onto the wrong row: refused with its line
    lines = [f"lab {i % 4}" for i in range(1500)]
    (tmp_path / "gap.txt").write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "gap.txt", "--out",
                          tmp_path / "c"), 2, "gap.txt:3: blank line among the labels")
    (tmp_path / "nul.txt").write_text("\n".join(lines[:4] + ["a\0b"] + lines[5:]) + "\n")
    one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "nul.txt", "--out",
                          tmp_path / "c"), 2, "nul.txt:5: the label holds a NUL byte")
    # only \n ends a line: U+2028 and a form feed belong to the label (str.splitlines would split there)
    odd = lines[:6] + ["left\u2028right", "form\x0cfeed"] + lines[8:]
    (tmp_path / "odd.txt").write_text("\r\n".join(odd) + "\r\n\n", encoding="utf-8")
    ok(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "odd.txt", "--out", tmp_path / "d",
              "--json"))
    held = yaml.safe_load((tmp_path / "d" / "id_map.yaml").read_text(encoding="utf-8"))["id_map"]
    assert [held[i] for i in (5, 6, 7, 8)] == [lines[5], "left\u2028right", "form\x0cfeed", lines[8]]
    for option in ("-g", "--labels", "--out"):  # `-g "$UNSET"` would have built from the current folder
        args = {"-g": tmp_path / "g.npy", "--labels": tmp_path / "labels.txt", "--out": tmp_path / "e", option: ""}
        one_line_error(invoke("index", "build", *[x for kv in args.items() for x in kv]), 2,
                       f"{'--gallery' if option == '-g' else option} is empty")
    one_line_error(invoke("index", "build", "-g", tmp_path / "g.npy", "--labels", tmp_path / "labels.txt", "--out",
                          tmp_path / "e", "--index-type", "IVF", "-o", "Index.ivf_nlist=64"), 2,
                   "Index.ivf_nlist=64 needs at least 2,496 gallery vectors")
    assert not (tmp_path / "e").exists()
    write_jsonl(tmp_path / "g.jsonl", feats[:300], [f"x{i % 3}" for i in range(300)])
    doc = ok(invoke("index", "build", "-g", tmp_path / "g.jsonl", "--out", tmp_path / "j", "--index-type", "auto",
                    "--json"))
    assert doc["factory"] == "Flat" and doc["build"]["recall_at_10"] == 1.0


def test_exact_neighbours_and_recall_are_right():
    from imgfeat_cli.retrieval.recall import ExactNeighbours, pick_rows

    x = clustered(700, seed=3)
    rows = pick_rows(700, 40, seed=1)
    assert len(set(rows.tolist())) == 40 and list(rows) == sorted(rows)
    assert not set(pick_rows(700, 100, seed=0, exclude=rows).tolist()) & set(rows.tolist())
    for metric in ("IP", "L2"):
        exact = ExactNeighbours(x[rows], rows, metric)
        for start in range(0, 700, 128):
            exact.add(x[start:start + 128], start)
        flat = faiss.IndexFlatIP(DIM) if metric == "IP" else faiss.IndexFlatL2(DIM)
        flat.add(x)
        _, want = flat.search(x[rows], 11)
        assert np.array_equal(exact.ids[:, 0], rows)  # each query finds itself first
        assert exact.recall(want) == 1.0
        assert exact.recall(np.full_like(want, -1)) == 0.0


def test_tuning_stops_where_recall_stops_growing():
    from imgfeat_cli.retrieval.recall import tune

    curve = {1: 0.5, 2: 0.7, 3: 0.8, 4: 0.85, 6: 0.88, 8: 0.89, 12: 0.891, 16: 0.8915, 24: 0.892, 32: 0.893}
    state = {}

    class Fake:
        q = np.zeros((3, 4), np.float32)

        def recall(self, found):
            return curve[state["depth"]]

    class Index:
        def search(self, q, k):
            return None, None

    def set_depth(d):
        state["depth"] = d

    got = tune(Index(), Fake(), sorted(curve), set_depth, 0.95)  # out of reach: stop at the plateau
    assert (got["depth"], got["recall_at_10"], state["depth"]) == (8, 0.89, 8)
    assert [d for d, _ in got["tried"]] == [1, 2, 3, 4, 6, 8, 12, 16]
    got = tune(Index(), Fake(), sorted(curve), set_depth, 0.8)
    assert (got["depth"], got["recall_at_10"], len(got["tried"])) == (3, 0.8, 3)


def test_id_map_yaml_is_written_as_yaml_would_write_it():
    from imgfeat_cli.retrieval.idmap import IdMap
    from imgfeat_cli.retrieval.index import Index
    from imgfeat_cli.retrieval.layout import id_map_yaml

    odd = ["a", "green tea", "1", "001", "yes", "No", "null", "é中文", "x" * 100 + " y" * 30, "a: b", "- x", "'q'",
           '"dq"', "#c", "tab\there", "line\nbreak", "  lead", "trail ", "3.0", "1e5", "~", "@x", "%y", "\u2028",
           "\x85", "<<", "=", "2001-12-14", "0x1F", ".inf", "-", "a.b", "+1", "1_000", "0b101", "a/b.jpg", "12:30"]
    index = Index.create(4)
    labels = {i * 3: odd[i % len(odd)] for i in range(200)}
    index.id_map = IdMap(reversed(labels.items()))
    want = yaml.safe_dump({"index_type": "Flat", "metric_type": "IP", "id_map": labels},
                          default_flow_style=False, allow_unicode=True)
    assert "".join(id_map_yaml(index)) == want
    index.id_map = IdMap()
    assert "".join(id_map_yaml(index)) == yaml.safe_dump({"index_type": "Flat", "metric_type": "IP", "id_map": {}},
                                                         default_flow_style=False, allow_unicode=True)


def test_hostile_galleries_and_sizes(invoke, tmp_path):
    feats = clustered(300, seed=4)
    ray_folder(tmp_path / "feats", feats, labels=True)
    out = tmp_path / "idx"
    base = ["index", "build", "-g", tmp_path / "feats", "--out", out]
    for bad in ("lots", "-1", "0", "12XB"):
        one_line_error(invoke(*base, "--index-type", "auto", "--max-memory", bad), 2, "--max-memory")
    one_line_error(invoke(*base, "--index-type", "auto", "--max-memory", "10KB"), 2, "too small")
    assert ok(invoke("index", "build", "-g", tmp_path / "feats", "--out", tmp_path / "pb", "--index-type", "auto",
                     "--max-memory", "1PB", "--json"))["factory"] == "Flat"
    one_line_error(invoke(*base, "--max-memory", "1GB"), 2, "goes with --index-type auto")
    one_line_error(invoke(*base, "-o", "Index.target_recall=2"), 2, "Index.target_recall")
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("index", "build", "-g", tmp_path / "empty", "--out", out), 2, "without .parquet files")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "part-0.parquet").write_bytes(b"PAR1 not really")
    one_line_error(invoke("index", "build", "-g", tmp_path / "corrupt", "--out", out), 2, "not a readable Parquet")
    # whatever is named *.parquet in the folder is read: one that cannot be is refused, never skipped
    for name, make in (("dangling", lambda f: os.symlink(tmp_path / "absent", f)), ("fifo", os.mkfifo),
                       ("folder", os.mkdir)):
        ray_folder(tmp_path / name, feats, labels=True)
        make(tmp_path / name / "b.parquet")
        says = {"dangling": "is a broken symlink", "fifo": "is not a regular file", "folder": "is a folder"}[name]
        one_line_error(invoke("index", "build", "-g", tmp_path / name, "--out", out), 2, f"b.parquet {says}")
    (tmp_path / "hidden").mkdir()
    pq.write_table(pa.table({"feature": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 8),
                             "label": ["a"]}), tmp_path / "hidden" / "_a.parquet")
    (tmp_path / "hidden" / "label=x").mkdir()
    one_line_error(invoke("index", "build", "-g", tmp_path / "hidden", "--out", out), 2,
                   "without .parquet files (hidden files are skipped: _a.parquet; sub-folders are not read: label=x)")
    np.save(tmp_path / "flat.npy", np.zeros((10, 0), np.float32))
    one_line_error(invoke("index", "build", "-g", tmp_path / "flat.npy", "--out", out), 2, "N > 0 and D > 0")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(invoke("index", "build", "-g", tmp_path / "objects.npy", "--out", out), 2,
                   "it holds pickled Python objects")
    ray_folder(tmp_path / "wide", clustered(10, dim=DIM))
    pq.write_table(pa.table({"feature": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 8),
                             "label": ["a"]}), tmp_path / "wide" / "zz.parquet")
    one_line_error(invoke("index", "build", "-g", tmp_path / "wide", "--out", out), 2, "different lengths")
    nan = feats.copy()
    nan[2345 % 300, 7] = np.nan
    ray_folder(tmp_path / "nan", nan, rows_per_file=100, labels=True)
    one_line_error(invoke("index", "build", "-g", tmp_path / "nan", "--out", out, "--index-type", "auto"), 2,
                   "part-run-00002.parquet: row 46 holds NaN or infinity")
    one_line_error(invoke("index", "build", "-g", tmp_path / "nan", "--out", out), 2, "row 46 holds NaN")
    ray_folder(tmp_path / "nolabels", feats)
    one_line_error(invoke("index", "build", "-g", tmp_path / "nolabels", "--out", out), 2, "has no labels")
    ray_folder(tmp_path / "allfailed", feats[:0], failed=4)
    one_line_error(invoke("index", "build", "-g", tmp_path / "allfailed", "--out", out), 2, "holds no features")
    assert not out.exists()
    one_line_error(invoke("index", "build", "-g", "s3://", "--out", out), 2, "not an S3 location")
    one_line_error(invoke("index", "build", "-g", "s3://UPPER_case/x/", "--out", out), 2, "not an S3 location")


#: A Python with paddlex installed (e.g. a separate venv: pip install paddlex==3.7.2 paddlepaddle faiss-cpu).
PADDLEX_PYTHON = os.environ.get("IMGFEAT_PADDLEX_PYTHON")
PADDLEX_SEARCH = """
import json, sys, numpy as np
from paddlex.inference.pipelines.components.faisser import FaissIndexer
out = {}
for folder in sys.argv[2:]:
    indexer = FaissIndexer(folder)
    preds = indexer(np.load(sys.argv[1]), score_thres=0.0, hamming_radius=0, topk=5)
    out[folder] = [[str(l) for l in p["label"]] for p in preds]
print(json.dumps(out))
"""


@pytest.mark.skipif(not PADDLEX_PYTHON, reason="set IMGFEAT_PADDLEX_PYTHON to a Python with paddlex installed")
def test_paddlex_faissindexer_reads_every_auto_index(invoke, tmp_path, monkeypatch):
    import subprocess

    from imgfeat_cli.retrieval import autoindex

    monkeypatch.setattr(autoindex, "FLAT_MAX_ROWS", 0)  # so that each budget gets its own compressed index
    monkeypatch.setattr(autoindex, "HNSW_MAX_ROWS", 0)
    feats = clustered(12000, seed=6)
    ray_folder(tmp_path / "feats", feats, labels=True)
    np.save(tmp_path / "q.npy", feats[:30])
    builds = [["--index-type", kind] for kind in ("Flat", "IVF", "HNSW32")]
    builds += [["--index-type", "auto", "--max-memory", str(c.bytes)] for c in autoindex.candidates(12000, DIM)[2:]]
    folders, factories = [], set()
    for n, args in enumerate(builds):
        res = invoke("index", "build", "-g", tmp_path / "feats", "--out", tmp_path / f"i{n}", *args, "--json")
        assert res.exit_code == 0, res.output
        factories.add(json.loads(res.stdout)["factory"])
        folders.append(str(tmp_path / f"i{n}"))
    assert {"Flat", "HNSW32", "IVF128,PQ32x4fs,RFlat", "IVF128,PQ32x4fs,Refine(SQ8)", "IVF256,RaBitQfs4",
            "IVF256,RaBitQfs3", "IVF128,PQ64x4fs"} <= factories, factories
    proc = subprocess.run([PADDLEX_PYTHON, "-c", PADDLEX_SEARCH, str(tmp_path / "q.npy"), *folders],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder in folders:
        mine = [r["label"] for r in paddlex_search(Path(folder), feats[:30], 5, 0.0)]
        assert got[folder] == mine, folder
