"""An index knows its model: it records it, search and index add use it, and another model is
refused (exit 2, both named) unless --allow-other-model; embeddings files carry their model too;
embed --labels makes embed's own output an eval/index gallery; the model rules of ModelSource hold
on every path (local and Ray)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("faiss", reason="faiss-cpu is in the test extra")

from imgfeat_cli.retrieval.index import Index  # noqa: E402


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    """Another PP-ShiTuV2_rec (other seeded weights): 512-d like the first, but another space."""
    from imgfeat_cli.models.export import export_seeded

    out = str(tmp_path_factory.mktemp("other") / "shitu_seed1")
    export_seeded("PP-ShiTuV2_rec", out, seed=1)
    return out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """A 'path label' list of six small images in three classes."""
    from imgfeat_cli.datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("gal") / "ds"
    make_dataset(root, num_classes=3, per_class=4, size=32, seed=3)
    return root


@pytest.fixture
def index(invoke, gallery, model_dir, tmp_path) -> Path:
    out = tmp_path / "idx"
    res = invoke("index", "build", "-g", gallery, "--model-dir", model_dir, "--out", out, "--backend", "paddle")
    assert res.exit_code == 0, res.output
    return out


def _query(gallery: Path) -> str:
    """A gallery image: its best match is itself (score 1) when the models agree."""
    return str(gallery / (gallery / "gallery.txt").read_text().split()[0])


def _query_image(gallery: Path) -> str:
    """An image the gallery does not hold (a query split's)."""
    return str(gallery / (gallery / "query.txt").read_text().split()[0])


def _error(res) -> str:
    """The one error line (exit 2); the model is refused before it loads, so nothing is logged before."""
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and lines[0].startswith("Error: ") and "Traceback" not in res.stderr, res.output
    assert len(lines) == 2 and lines[1].startswith("Hint: "), res.stderr
    return lines[0]


def test_the_index_records_its_model(index, model_dir):
    rec = Index.load(index).model
    assert rec["name"] == "PP-ShiTuV2_rec" and rec["dim"] == 512 and len(rec["sha256"]) == 16
    assert rec["lineage"] == rec["sha256"] and rec["precision"] == "fp32"
    assert rec["source"] == {"kind": "folder", "given": model_dir, "resolved": str(Path(model_dir).resolve())}
    assert rec["preprocess"][0]["ResizeImage"]["size"] == [224, 224]


def test_search_and_add_without_model_flags_use_the_index_model(invoke, index, gallery, model_dir, tmp_path):
    query = _query(gallery)
    own = invoke("search", query, "--index", index, "--no-threshold", "-k", "1", "--backend", "paddle")
    named = invoke("search", query, "--index", index, "--no-threshold", "-k", "1", "--backend", "paddle",
                   "--model-dir", model_dir)
    assert own.exit_code == named.exit_code == 0, own.output
    assert "using the index's own model: PP-ShiTuV2_rec" in own.stderr and model_dir in own.stderr
    assert json.loads(own.stdout) == json.loads(named.stdout)
    assert json.loads(own.stdout)["scores"][0] > 0.9999  # the query is a gallery image: itself, same model
    new = _query_image(gallery)
    (tmp_path / "new.txt").write_text(f"{new} newclass\n")
    add = invoke("index", "add", "--index", index, "-g", tmp_path / "new.txt", "--json", "--backend", "paddle")
    assert add.exit_code == 0 and json.loads(add.stdout)["added"] == 1, add.output


def test_another_model_is_refused_naming_both(invoke, index, gallery, model_dir, other_model, tmp_path):
    query = _query(gallery)
    before = (index / "vector.index").read_bytes()
    line = _error(invoke("search", query, "--index", index, "--model-dir", other_model))
    assert other_model in line and model_dir in line and "not comparable" in line
    (tmp_path / "new.txt").write_text(f"{_query_image(gallery)} newclass\n")
    line = _error(invoke("index", "add", "--index", index, "-g", tmp_path / "new.txt", "--model-dir", other_model))
    assert other_model in line and model_dir in line
    assert (index / "vector.index").read_bytes() == before  # nothing was added
    # query vectors made by the other model, as their file records it
    emb = invoke("embed", query, "--model-dir", other_model, "--out", tmp_path / "q.parquet", "--backend", "paddle")
    assert emb.exit_code == 0, emb.output
    line = _error(invoke("search", "--embeddings", tmp_path / "q.parquet", "--index", index))
    assert "q.parquet" in line and other_model in line and model_dir in line


def test_allow_other_model_warns_and_records(invoke, index, gallery, other_model, tmp_path):
    query = _query(gallery)
    res = invoke("search", query, "--index", index, "--model-dir", other_model, "--allow-other-model", "--json")
    assert res.exit_code == 0, res.output
    assert "allowed by --allow-other-model" in json.loads(res.stdout)["warnings"][0]
    (tmp_path / "new.txt").write_text(f"{_query_image(gallery)} newclass\n")
    res = invoke("index", "add", "--index", index, "-g", tmp_path / "new.txt", "--model-dir", other_model,
                 "--allow-other-model")
    assert res.exit_code == 0 and "Warning:" in res.stderr and "allowed by --allow-other-model" in res.stderr
    notes = Index.load(index).model_notes
    assert len(notes) == 1 and other_model in notes[0]
    info = json.loads(invoke("index", "info", "--index", index, "--json").stdout)
    assert info["model_notes"] == notes


def test_embeddings_of_the_same_model_are_accepted(invoke, index, gallery, model_dir, tmp_path):
    query = _query(gallery)
    emb = invoke("embed", query, "--model-dir", model_dir, "--out", tmp_path / "q.jsonl", "--backend", "onnxruntime")
    assert emb.exit_code == 0, emb.output  # another exact engine: the same model
    res = invoke("search", "--embeddings", tmp_path / "q.jsonl", "--index", index, "--no-threshold", "-k", "1")
    assert res.exit_code == 0 and json.loads(res.stdout)["scores"][0] > 0.9999, res.output


def test_paddlex_built_index_is_searchable_with_a_note(invoke, index, gallery, model_dir):
    (index / "imgfeat_index.json").unlink()  # what PaddleX writes: vector.index + id_map.yaml only
    assert not (index / "imgfeat_index.json").exists() and Index.load(index).model is None
    res = invoke("search", _query(gallery), "--index", index, "--model-dir", model_dir, "--no-threshold", "-k", "1")
    assert res.exit_code == 0, res.output
    assert "Note: this index records no model" in res.stderr and "Error" not in res.stderr
    bare = invoke("index", "add", "--index", index, "-g", gallery / "gallery.txt")  # as before: the default model
    assert "records no model: using the default model PP-ShiTuV2_rec" in bare.stderr


def test_a_moved_model_folder_is_named(invoke, index, gallery, model_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    rec = json.loads((index / "imgfeat_index.json").read_text())
    rec["model"]["source"] = {"kind": "folder", "given": str(tmp_path / "gone"), "resolved": str(tmp_path / "gone")}
    (index / "imgfeat_index.json").write_text(json.dumps(rec))
    line = _error(invoke("search", _query(gallery), "--index", index))
    assert "gone" in line and "no longer exists" in line
    ok = invoke("search", _query(gallery), "--index", index, "--model-dir", moved, "--no-threshold")
    assert ok.exit_code == 0, ok.output  # the same files elsewhere: the same model


def test_embed_labels_make_an_eval_and_index_gallery(invoke, gallery, model_dir, tmp_path):
    outs = {}
    for split in ("gallery", "query"):
        for fmt in ("jsonl", "npy", "parquet"):
            out = tmp_path / f"{split}.{fmt}"
            # with IMAGES, only the images the list names (the others are left out, not failures);
            # without, the list's own images
            images = [gallery / "images"] if fmt != "npy" else []
            res = invoke("embed", *images, "--model-dir", model_dir, "--labels", gallery / f"{split}.txt",
                         "--out", out, "--backend", "paddle", "--json")
            assert res.exit_code == 0, res.output
            doc = json.loads(res.stdout)
            listed = len((gallery / f"{split}.txt").read_text().splitlines())
            assert doc["embedded"] == doc["total"] == listed and doc["errors"] == []
            outs[split, fmt] = out
    ev = invoke("eval", "--dataset", gallery, "--model-dir", model_dir, "--out", tmp_path / "e", "--json",
                "-o", "Predict.backend=paddle")
    want = json.loads(ev.stdout)["metrics"]
    for fmt in ("jsonl", "npy", "parquet"):
        got = invoke("eval", "--query", outs["query", fmt], "--gallery", outs["gallery", fmt], "--out",
                     tmp_path / f"e{fmt}", "--json")
        assert got.exit_code == 0, got.output
        assert json.loads(got.stdout)["metrics"] == pytest.approx(want)
        built = invoke("index", "build", "-g", outs["gallery", fmt], "--out", tmp_path / f"i{fmt}", "--json")
        n_gallery = len((gallery / "gallery.txt").read_text().splitlines())
        assert built.exit_code == 0 and json.loads(built.stdout)["added"] == n_gallery, built.output
        assert Index.load(tmp_path / f"i{fmt}").model["source"]["given"] == model_dir
    # a resume with other labels would mix two labellings: refused
    res = invoke("embed", gallery / "images", "--model-dir", model_dir, "--labels", gallery / "gallery.txt",
                 "--out", outs["query", "jsonl"], "--resume", "--backend", "paddle")
    assert res.exit_code == 2 and "labels" in res.stderr


def test_eval_refuses_query_and_gallery_of_two_models(invoke, gallery, model_dir, other_model, tmp_path):
    for name, model in (("q", model_dir), ("g", other_model)):
        split = "query" if name == "q" else "gallery"
        res = invoke("embed", "--model-dir", model, "--labels", gallery / f"{split}.txt",
                     "--out", tmp_path / f"{name}.jsonl", "--backend", "paddle")
        assert res.exit_code == 0, res.output
    line = _error(invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl",
                         "--out", tmp_path / "e"))
    assert model_dir in line and other_model in line
    ok = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl", "--out", tmp_path / "e",
                "--allow-other-model")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_model_rules_are_the_same_on_every_path(invoke, gallery, model_dir, tmp_path, engine):
    """A folder and a checkpoint together, or a checkpoint on a non-paddle engine: exit 2 whichever
    command or engine (they were checked three times with two error types)."""
    ckpt = tmp_path / "w.pdparams"
    ckpt.write_bytes(b"x")
    both = ["--model-dir", model_dir, "--weights", ckpt]
    onnx = ["--weights", ckpt, "--backend", "onnxruntime"]
    for flags in (both, onnx):
        cases = [["embed", gallery / "images", "--out", tmp_path / "o.jsonl", "--engine", engine, *flags]]
        if engine == "local":
            cases += [["search", _query(gallery), "--index", tmp_path, *flags],
                      ["index", "build", "-g", gallery, "--out", tmp_path / "i", *flags],
                      ["eval", "--dataset", gallery, "--out", tmp_path / "e", *flags]]
        for args in cases:
            line = _error(invoke(*args))
            assert ("both given" in line) if flags is both else ("paddle fp32 only" in line), (args, line)


def test_public_api_names(tmp_path):
    import imgfeat_cli

    for name in imgfeat_cli.__all__:
        assert getattr(imgfeat_cli, name) is not None, name
    from imgfeat_cli import ImgfeatError, ModelSource, UsageError

    with pytest.raises(UsageError) as exc:
        ModelSource(model_dir="a", weights="b")
    assert isinstance(exc.value, ImgfeatError) and exc.value.exit_code == 2 and "--" not in str(exc.value)
    with pytest.raises(AttributeError):
        imgfeat_cli.not_a_name  # noqa: B018


def test_recorded_model_of_files(tmp_path, model_dir, gallery):
    from imgfeat_cli import ModelSource, embed, read_features

    res = embed([str(gallery / "images")], str(tmp_path / "f.npy"), ModelSource(model_dir=model_dir, backend="paddle"))
    table = read_features(str(tmp_path / "f.npy"))
    assert res.embedded == len(table.features) and table.model["name"] == "PP-ShiTuV2_rec"
    assert table.model["source"]["resolved"] == str(Path(model_dir).resolve())
    cfg = yaml.safe_load((tmp_path / "f.npy.config.yaml").read_text())
    assert cfg["Output"]["model"]["sha256"] == table.model["sha256"]
    mem = embed([str(gallery / "images")], None, ModelSource(model_dir=model_dir, backend="paddle"))
    np.testing.assert_array_equal(mem.features, np.load(tmp_path / "f.npy"))
