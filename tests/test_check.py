"""`imgfeat check`: happy path, report files, and every bad-input case with its code and exit status."""
from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from conftest import shared_path
from imgfeat_cli.common.config import load_schema


def _codes(doc):
    return {(p["code"], p["severity"]) for p in doc["problems"]}


def test_check_passes_and_writes_reports(invoke, synth_ds, tmp_path):
    out = tmp_path / "out"
    res = invoke("check", "--dataset", synth_ds, "--output", out)
    assert res.exit_code == 0, res.output
    assert "check passed" in res.stdout and "Images per class" in res.stdout
    doc = json.loads((out / "check_dataset_result.json").read_text())
    assert doc["check_pass"] is True and doc["done_flag"] is True
    assert doc["attributes"]["train_samples"] == 12
    assert doc["attributes"]["gallery_samples"] + doc["attributes"]["query_samples"] == 12
    paths = doc["attributes"]["train_sample_paths"]
    assert len(paths) == 10 and len(set(paths)) == 10
    assert all((out / p).is_file() for p in paths)
    assert (out / "check_dataset" / "histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert doc["analysis"]["class_stats"]["gallery"]["classes"] == 4


def test_check_json_validates_against_schema(invoke, synth_ds, tmp_path):
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)  # stdout holds the one document and nothing else
    Draft202012Validator(load_schema("check_result")).validate(doc)


def _break(root: Path) -> None:
    imgs = root / "images"
    (imgs / "c00" / "000.jpg").write_bytes((imgs / "c00" / "000.jpg").read_bytes()[:200])  # truncated
    (imgs / "c00" / "001.jpg").write_bytes(b"")  # zero-byte
    (imgs / "c00" / "002.jpg").write_text("this is not an image")  # wrong content
    train = (root / "train.txt").read_text().splitlines()
    gallery = (root / "gallery.txt").read_text().splitlines()
    query = (root / "query.txt").read_text().splitlines()
    train += ["images/c00/000.jpg 0", "images/c00/001.jpg 0", "images/c00/002.jpg 0",
              "images/missing.jpg 1", "../outside.jpg 1", "/etc/passwd 1", "images/c01/000.jpg one",
              "images/with space.jpg 1", "images/c01/000.jpg\t1", "", train[0]]
    query += [gallery[0], "images/c03/000.jpg 99"]
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "query.txt").write_text("\n".join(query) + "\n")


def test_check_reports_every_problem(invoke, synth_ds, tmp_path):
    _break(synth_ds)
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 3
    assert res.stderr.startswith("Error: dataset") and "failed the check" in res.stderr
    doc = json.loads(res.stdout)
    Draft202012Validator(load_schema("check_result")).validate(doc)
    codes = _codes(doc)
    for expected in [("undecodable_image", "error"), ("missing_image", "error"), ("path_escapes_root", "error"),
                     ("non_integer_label", "error"), ("malformed_line", "error"), ("blank_line", "warning"),
                     ("duplicate_entry", "warning"), ("gallery_query_leak", "error"),
                     ("query_label_not_in_gallery", "warning")]:
        assert expected in codes, expected
    msgs = {p["message"] for p in doc["problems"]}
    assert "images/c00/000.jpg: truncated file" in msgs
    assert "images/c00/001.jpg: zero-byte file" in msgs
    assert "images/c00/002.jpg: not a recognised image format" in msgs
    lines = {(p["code"], p["file"], p["line"]) for p in doc["problems"]}
    assert ("non_integer_label", "train.txt", 19) in lines
    assert doc["check_pass"] is False


def test_check_missing_list_files_and_train_overlap(invoke, synth_ds, tmp_path):
    (synth_ds / "query.txt").unlink()
    gallery0 = (synth_ds / "gallery.txt").read_text().splitlines()[0]
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write(gallery0 + "\n")
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 3
    codes = _codes(json.loads(res.stdout))
    assert ("missing_list_file", "error") in codes and ("train_overlap", "warning") in codes


def test_check_warnings_do_not_fail(invoke, synth_ds, tmp_path):
    # single-image train class and a PNG named .jpg: reported, but the dataset still passes
    from PIL import Image
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(synth_ds / "images" / "png.jpg", format="PNG")
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write("images/png.jpg 7\n")
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.output
    codes = _codes(json.loads(res.stdout))
    assert ("single_image_class", "warning") in codes and ("extension_mismatch", "info") in codes


def test_check_no_dataset_dir(invoke, tmp_path):
    res = invoke("check", "--dataset", tmp_path / "nope")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    res = invoke("check")
    assert res.exit_code == 2 and "no dataset given" in res.stderr


def test_check_on_drink_gallery(invoke, tmp_path):
    """A ShiTuRecDataset built over the real drink gallery (listed paths that are missing on disk
    are real-world mess the check must report, not crash on)."""
    src = shared_path("data", "drink_dataset_v1.0")
    root = tmp_path / "drink"
    root.mkdir()
    (root / "gallery").symlink_to(src / "gallery")
    rows = [line.split("\t")[0] for line in (src / "gallery" / "drink_label.txt").read_text().splitlines() if line]
    entries = [f"gallery/{p} {p.split('/')[0]}" for p in rows]
    (root / "train.txt").write_text("\n".join(entries[::2]) + "\n")
    (root / "gallery.txt").write_text("\n".join(entries[1::4]) + "\n")
    (root / "query.txt").write_text("\n".join(entries[3::4]) + "\n")
    res = invoke("check", "--dataset", root, "--output", tmp_path / "o", "--json")
    doc = json.loads(res.stdout)
    assert doc["attributes"]["train_samples"] == len(entries[::2])
    assert res.exit_code in (0, 3)
    assert res.exit_code == (0 if doc["check_pass"] else 3)
    assert ("extension_mismatch", "info") in _codes(doc)  # RGBA PNGs named .jpg in the drink gallery
