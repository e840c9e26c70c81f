"""`imgfeat convert` (LabelMe -> ShiTuRecDataset) and `imgfeat split`."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import shared_path


def _labelme(root: Path, layout: str, n_per_class=(6, 5, 1), extra=True) -> None:
    names = ["cat", "dog", "bird"]
    if layout == "paddlex":
        (root / "images").mkdir(parents=True)
        (root / "annotations").mkdir()
        (root / "label.txt").write_text("\n".join(names) + "\n")
    else:
        (root / "sub").mkdir(parents=True)
        (root / "flags.txt").write_text("__ignore__\n" + "\n".join(names) + "\n")
    k = 0
    for ci, (name, n) in enumerate(zip(names, n_per_class)):
        for _ in range(n):
            k += 1
            flags = {"__ignore__": False, **{m: m == name for m in names}}
            _one(root, layout, f"{k:04d}", flags, colour=(40 * ci, 90, 200))
    if extra:
        _one(root, layout, "multi", {"cat": True, "dog": True, "bird": False})
        _one(root, layout, "none", {"cat": False, "dog": False, "bird": False})
        _one(root, layout, "ign", {"__ignore__": True, "cat": True})


def _one(root, layout, stem, flags, colour=(1, 2, 3)):
    if layout == "paddlex":
        img, ann, rel = root / "images" / f"{stem}.jpg", root / "annotations" / f"{stem}.json", f"../images/{stem}.jpg"
    else:
        img, ann, rel = root / "sub" / f"{stem}.jpg", root / "sub" / f"{stem}.json", f"{stem}.jpg"
    Image.new("RGB", (24, 24), colour).save(img)
    ann.write_text(json.dumps({"version": "5.4.1", "flags": flags, "shapes": [], "imagePath": rel,
                               "imageData": None, "imageHeight": 24, "imageWidth": 24}))


def _lists(root: Path):
    return {s: (root / f"{s}.txt").read_text().splitlines() for s in ("train", "gallery", "query")}


@pytest.mark.parametrize("layout", ["paddlex", "labelme"])
def test_convert_then_check_passes(invoke, tmp_path, layout):
    root = tmp_path / "lm"
    _labelme(root, layout)
    (root / "train.txt").write_text("old content\n")
    res = invoke("convert", "--dataset", root, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["classes"] == ["cat", "dog", "bird"] and doc["layout"] == layout
    skipped = {p["file"].rsplit("/", 1)[-1]: p["code"] for p in doc["skipped"] if p["file"].endswith(".json")}
    assert skipped == {"multi.json": "ambiguous_flags", "none.json": "no_flag", "ign.json": "ignored"}
    assert (root / "train.txt.bak").read_text() == "old content\n"
    lists = _lists(root)
    all_lines = [l for v in lists.values() for l in v]
    assert len(all_lines) == 12 and len(set(all_lines)) == 12  # no image twice
    assert Counter(l.split()[1] for l in all_lines) == {"0": 6, "1": 5, "2": 1}
    gallery_labels = {l.split()[1] for l in lists["gallery"]}
    assert {l.split()[1] for l in lists["query"]} <= gallery_labels
    again = invoke("convert", "--dataset", root, "--json")
    assert again.exit_code == 0 and _lists(root) == lists  # deterministic
    chk = invoke("check", "--dataset", root, "--output", tmp_path / "o", "--quiet")
    assert chk.exit_code == 0, chk.output


def test_convert_to_separate_folder(invoke, tmp_path):
    root = tmp_path / "lm"
    _labelme(root, "labelme", extra=False)
    out = tmp_path / "shitu"
    res = invoke("convert", "--dataset", root, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert not (root / "train.txt").exists()  # input untouched
    first = _lists(out)["train"][0].split()[0]
    assert first.startswith("images/sub/") and (out / first).is_file()
    assert invoke("check", "--dataset", out, "--output", tmp_path / "o", "-q").exit_code == 0


def test_convert_errors(invoke, tmp_path):
    res = invoke("convert", "--dataset", tmp_path / "nope")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = invoke("convert", "--dataset", tmp_path / "empty")
    assert res.exit_code == 1 and "no LabelMe .json annotations found" in res.stderr
    res = invoke("convert", "--dataset", tmp_path / "empty", "--from", "coco")
    assert res.exit_code == 2 and "--from 'coco' is not supported" in res.stderr


def test_convert_labelme_repository_example(invoke, tmp_path):
    src = shared_path("data", "labelme_classification")
    root = tmp_path / "lm"
    shutil.copytree(src, root)
    res = invoke("convert", "--dataset", root, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["classes"] == ["cat", "dog"]
    assert sum(doc["counts"].values()) == 2
    # two images, one per class: nothing can reach gallery/query, and convert says so
    assert any(p["code"] == "empty_split" for p in doc["skipped"])


def _split(invoke, root, *pct, extra=()):
    return invoke("split", "--dataset", root, "--train", pct[0], "--gallery", pct[1], "--query", pct[2], *extra)


def test_split_preserves_lines_and_is_deterministic(invoke, synth_ds):
    before = _lists(synth_ds)
    # a duplicate line and a file without a trailing newline
    (synth_ds / "train.txt").write_text("\n".join(before["train"] + [before["train"][0]]))
    res = _split(invoke, synth_ds, 60, 20, 20, extra=("--json",))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["duplicates_removed"] == 1 and doc["pooled"] == 25
    after = _lists(synth_ds)
    pooled_before = Counter(l for v in before.values() for l in v)
    assert Counter(l for v in after.values() for l in v) == pooled_before  # no line lost or invented
    assert (synth_ds / "train.txt.bak").read_text().endswith(before["train"][0])
    assert {l.split()[1] for l in after["query"]} <= {l.split()[1] for l in after["gallery"]}
    assert [len(after[s]) for s in ("train", "gallery", "query")] == [16, 4, 4]
    _split(invoke, synth_ds, 60, 20, 20)
    assert _lists(synth_ds) == after  # same seed, same files
    _split(invoke, synth_ds, 60, 20, 20, extra=("--seed", "5", "--no-stratify"))
    assert _lists(synth_ds) != after
    assert Counter(l for v in _lists(synth_ds).values() for l in v) == pooled_before


@pytest.mark.parametrize("pct,msg", [((50, 30, 30), "train + gallery + query = 110, must be 100"),
                                     ((100, 0, 0), "gallery and query percents must be greater than 0"),
                                     ((120, -10, -10), "got -10.0, expected number from 0 to 100")])
def test_split_bad_percents_touch_nothing(invoke, synth_ds, pct, msg):
    before = _lists(synth_ds)
    res = _split(invoke, synth_ds, *pct)
    assert res.exit_code == 2 and msg in res.stderr
    assert _lists(synth_ds) == before and not (synth_ds / "train.txt.bak").exists()


def test_split_malformed_line_touches_nothing(invoke, synth_ds):
    with open(synth_ds / "query.txt", "a") as fh:
        fh.write("images/x.jpg notanint\n")
    before = _lists(synth_ds)
    res = _split(invoke, synth_ds, 50, 30, 20)
    assert res.exit_code == 1
    assert "query.txt:" in res.stderr and "label 'notanint' is not an integer" in res.stderr
    assert _lists(synth_ds) == before


def test_split_missing_lists(invoke, tmp_path):
    res = _split(invoke, tmp_path, 50, 30, 20)
    assert res.exit_code == 1 and "no train.txt, gallery.txt or query.txt" in res.stderr
