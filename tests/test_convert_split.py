"""`imgfeat convert` (LabelMe -> ShiTuRecDataset) and `imgfeat split`."""
from __future__ import annotations

import errno
import json
import os
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


# --------------------------------------------------------------- all or nothing, under failures

def _pool(root: Path, suffix: str = "") -> Counter:
    return Counter(l for s in ("train", "gallery", "query")
                   for l in (root / f"{s}.txt{suffix}").read_text().splitlines())


class _FullDisk:
    """``os.replace``/``os.fsync`` fail with ENOSPC from the k-th call on (only that call unless sticky)."""

    def __init__(self, monkeypatch, k: int, sticky: bool):
        self.k, self.sticky, self.calls, self.hit = k, sticky, 0, False
        for name in ("replace", "fsync"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, fn):
        def wrapper(*a, **kw):
            self.calls += 1
            if self.calls == self.k or (self.sticky and self.calls > self.k):
                self.hit = True
                raise OSError(errno.ENOSPC, "No space left on device")
            return fn(*a, **kw)
        return wrapper


@pytest.mark.parametrize("sticky", [False, True], ids=["one-failure", "disk-stays-full"])
def test_split_under_a_full_disk_loses_no_line_and_bak_is_a_complete_set(invoke, synth_ds, tmp_path, monkeypatch,
                                                                          sticky):
    """The issue's scenario: a failure after writing train.txt left gallery/query old, and the rerun
    then lost lines for good. Now every failure point leaves a state the rerun splits losslessly."""
    _split(invoke, synth_ds, 50, 30, 20)  # a first split, so .bak files exist
    pooled = _pool(synth_ds)
    failures = 0
    for k in range(1, 40):
        root = tmp_path / f"k{k}"
        shutil.copytree(synth_ds, root)
        with monkeypatch.context() as m:
            disk = _FullDisk(m, k, sticky)
            res = _split(invoke, root, 60, 20, 20)
        if not disk.hit:
            assert res.exit_code == 0
            break
        failures += res.exit_code != 0
        again = _split(invoke, root, 60, 20, 20)  # the rerun after the disk was freed
        assert again.exit_code == 0, (k, again.output)
        assert _pool(root) == pooled, k  # no line lost or duplicated
        assert _pool(root, ".bak") == pooled, k  # .bak holds one complete set
    assert failures >= 8


def test_split_refuses_when_a_list_or_bak_is_a_folder(invoke, synth_ds):
    before = _lists(synth_ds)
    (synth_ds / "query.txt.bak").mkdir()
    res = _split(invoke, synth_ds, 60, 20, 20)
    assert res.exit_code == 2 and "query.txt.bak exists and is not a file; nothing was changed" in res.stderr
    assert _lists(synth_ds) == before and not (synth_ds / "train.txt.bak").exists()


def test_split_refuses_gallery_labels_that_would_break_training(invoke, synth_ds):
    text = (synth_ds / "gallery.txt").read_text()
    (synth_ds / "gallery.txt").write_text(text.replace(" 1\n", " 4006381333931\n"))
    before = _lists(synth_ds)
    res = _split(invoke, synth_ds, 60, 20, 20)
    assert res.exit_code == 1 and "gallery.txt:" in res.stderr and "classifier" in res.stderr
    assert _lists(synth_ds) == before


def test_split_normalises_bom_crlf_and_spaces_and_keeps_the_originals(invoke, synth_ds):
    pooled = _pool(synth_ds)
    raw = {s: (synth_ds / f"{s}.txt").read_bytes() for s in ("train", "gallery", "query")}
    (synth_ds / "train.txt").write_bytes(b"\xef\xbb\xbf" + raw["train"].replace(b"\n", b" \r\n"))
    res = _split(invoke, synth_ds, 50, 30, 20)
    assert res.exit_code == 0, res.output
    assert _pool(synth_ds) == pooled
    assert (synth_ds / "train.txt.bak").read_bytes().startswith(b"\xef\xbb\xbf")


def test_convert_under_a_full_disk_keeps_the_old_or_the_new_set(invoke, tmp_path, monkeypatch):
    from imgfeat_cli.common import filetxn
    names = ("train.txt", "gallery.txt", "query.txt", "label.txt")
    src = tmp_path / "src"
    _labelme(src, "paddlex", extra=False)
    assert invoke("convert", "--dataset", src).exit_code == 0
    (src / "annotations" / "0001.json").unlink()  # the next conversion differs
    old = {n: (src / n).read_text() for n in names}
    ref = tmp_path / "ref"
    shutil.copytree(src, ref)
    assert invoke("convert", "--dataset", ref).exit_code == 0
    new = {n: (ref / n).read_text() for n in names}
    assert new != old
    failures = 0
    for k in range(1, 40):
        root = tmp_path / f"k{k}"
        shutil.copytree(src, root)
        with monkeypatch.context() as m:
            disk = _FullDisk(m, k, sticky=True)
            res = invoke("convert", "--dataset", root)
        if not disk.hit:
            break
        failures += res.exit_code != 0
        filetxn.recover(root)  # what the next command reading the folder does
        assert {n: (root / n).read_text() for n in names} in (old, new), k
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")], k
    assert failures >= 8


# ---------------------------------------------------------- names, spaces, encodings in convert

def _img(path: Path, colour, size=24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)  # BMP: same size for every colour
    return path


def _ann(path: Path, image_rel: str, cls: str, classes=("cat", "dog")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = {c: c == cls for c in classes}
    path.write_text(json.dumps({"version": "5", "flags": flags, "shapes": [], "imagePath": image_rel}))


def test_convert_out_gives_same_named_different_images_distinct_files(invoke, tmp_path):
    """x.bmp in images/ and in the root both map to images/x.bmp; same size, different pixels."""
    root = tmp_path / "lm"
    (root / "flags.txt").parent.mkdir(parents=True)
    (root / "flags.txt").write_text("cat\ndog\n")
    a = _img(root / "images" / "x.bmp", (255, 0, 0))
    b = _img(root / "x.bmp", (0, 0, 255))
    _img(root / "y.bmp", (9, 9, 9))
    e = _img(root / "images" / "y.bmp", (9, 9, 9))  # same bytes as y.bmp: one file is enough
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    _ann(root / "a.json", "images/x.bmp", "cat")
    _ann(root / "b.json", "x.bmp", "dog")
    _ann(root / "d.json", "y.bmp", "cat")
    _ann(root / "e.json", "images/y.bmp", "dog")
    out = tmp_path / "out"
    res = invoke("convert", "--dataset", root, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    rows = [l.split() for v in _lists(out).values() for l in v]
    by_path = {}
    for path, label in rows:
        by_path.setdefault(path, set()).add(label)
    x_files = sorted(p for p in by_path if p.startswith("images/x"))
    assert len(x_files) == 2  # two different pictures, two files
    contents = {(out / p).read_bytes() for p in x_files}
    assert contents == {a.read_bytes(), b.read_bytes()}
    assert by_path["images/y.bmp"] == {"0", "1"} and (out / "images/y.bmp").read_bytes() == e.read_bytes()
    notes = json.loads(res.stdout)["notes"]
    assert sum(n["code"] == "renamed_image" for n in notes) == 1
    again = invoke("convert", "--dataset", root, "--out", out)  # an existing --out is not merged into
    assert again.exit_code == 2 and "exists and is not empty" in again.stderr
    again = invoke("convert", "--dataset", root, "--out", out, "--overwrite")  # replaced: same result
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out.bak" / "train.txt").is_file()
    assert sorted(l.split()[0] for v in _lists(out).values() for l in v) == sorted(p for p, _ in rows)


@pytest.mark.parametrize("image_path", ["../outside.jpg", "../../etc/outside.jpg", "..\\outside.jpg",
                                        "images/../../outside.jpg", "ABSOLUTE"])
@pytest.mark.parametrize("in_place", [False, True])
def test_convert_never_takes_an_image_from_outside_the_dataset(invoke, tmp_path, image_path, in_place):
    """An imagePath that leaves the dataset folder is refused as check refuses it
    (path_escapes_root): the annotation is skipped, nothing outside is linked or listed."""
    root = tmp_path / "lm"
    (root / "flags.txt").parent.mkdir(parents=True)
    (root / "flags.txt").write_text("cat\ndog\n")
    outside = _img(tmp_path / "outside.jpg", (1, 2, 3))
    for i, cls in enumerate(["cat", "cat", "dog", "dog"]):
        _img(root / f"{cls}{i}.bmp", (i * 40, 0, 0))
        _ann(root / f"{cls}{i}.json", f"{cls}{i}.bmp", cls)
    _ann(root / "evil.json", str(outside) if image_path == "ABSOLUTE" else image_path, "cat")
    out = root if in_place else tmp_path / "out"
    res = invoke("convert", "--dataset", root, *([] if in_place else ["--out", out]), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    escaped = [p for p in doc["skipped"] if p["code"] == "path_escapes_root"]
    assert len(escaped) == 1 and escaped[0]["file"] == "evil.json", doc["skipped"]
    listed = [l.split()[0] for v in _lists(out).values() for l in v]
    assert len(listed) == 4 and not any("outside" in p for p in listed)
    assert outside.stat().st_nlink == 1  # never hard-linked into the dataset


def test_convert_renames_spaces_with_out_and_refuses_in_place(invoke, tmp_path):
    from imgfeat_cli.datasets.dataset import SPACE_RULE
    root = tmp_path / "lm"
    for i, cls in enumerate(["cat", "cat", "dog", "dog", "cat", "dog"]):
        name = f"my {cls} {i}.png" if i < 2 else f"{cls}\t{i}.png" if i == 2 else f"{cls}{i}.png"
        _img(root / "sub dir" / name, (30 * i, 0, 0))
        _ann(root / "sub dir" / f"{i}.json", name, cls)
    res = invoke("convert", "--dataset", root)
    assert res.exit_code == 2 and "cannot be listed in place" in res.stderr and SPACE_RULE in res.stderr
    assert "sub dir/" in res.stderr and not (root / "train.txt").exists()  # nothing written
    out = tmp_path / "out"
    res = invoke("convert", "--dataset", root, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    listed = [l.split(" ")[0] for v in _lists(out).values() for l in v]
    assert "images/sub_dir/my_cat_0.png" in listed and "images/sub_dir/dog_2.png" in listed
    assert all(len(l.split(" ")) == 2 for v in _lists(out).values() for l in v)
    assert invoke("check", "--dataset", out, "--output", tmp_path / "o", "-q").exit_code == 0


def _flags_dataset(root: Path, flags: bytes, classes=("cat", "dog")) -> None:
    root.mkdir(parents=True)
    (root / "flags.txt").write_bytes(flags)
    for i in range(4):
        cls = classes[i % 2]
        _img(root / f"{i}.png", (60 * i, 10, 10))
        _ann(root / f"{i}.json", f"{i}.png", cls, classes)


def test_convert_reads_flags_with_bom_crlf_and_spaces(invoke, tmp_path):
    for i, flags in enumerate([b"\xef\xbb\xbf__ignore__\r\ncat  \r\ndog\r\n", b"__ignore__\ncat\t\n\n dog\n"]):
        root = tmp_path / f"lm{i}"
        _flags_dataset(root, flags)
        res = invoke("convert", "--dataset", root, "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["classes"] == ["cat", "dog"]
        assert (root / "label.txt").read_text() == "cat\ndog\n"


def test_convert_reads_gbk_flags_and_json_as_paddlex_does_and_says_so(invoke, tmp_path):
    classes = ("\u732b", "\u72d7")  # cat, dog in Chinese
    root = tmp_path / "lm"
    _flags_dataset(root, ("__ignore__\n" + "\n".join(classes) + "\n").encode("gbk"), classes)
    ann = root / "0.json"
    ann.write_bytes(ann.read_text(encoding="utf-8").encode("gbk"))  # json.dumps escapes: still ASCII
    ann.write_bytes(json.dumps(json.loads(ann.read_bytes()), ensure_ascii=False).encode("gbk"))
    (root / "1.json").write_bytes(b"\xef\xbb\xbf" + (root / "1.json").read_bytes())  # BOM in JSON
    res = invoke("convert", "--dataset", root, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["classes"] == list(classes) and sum(doc["counts"].values()) == 4
    gbk = {(n["file"], n["code"]) for n in doc["notes"] if n["code"] != "small_classes"}
    assert gbk == {("flags.txt", "read_as_gbk"), ("0.json", "read_as_gbk")}
    assert (root / "label.txt").read_text(encoding="utf-8") == "\n".join(classes) + "\n"


def test_convert_names_the_byte_when_flags_or_json_are_neither_utf8_nor_gbk(invoke, tmp_path):
    root = tmp_path / "lm"
    _flags_dataset(root, b"__ignore__\ncat\ndog\x80\n")
    res = invoke("convert", "--dataset", root)
    assert res.exit_code == 1 and "flags.txt: not UTF-8 text: byte 0x80 at line 3, column 4" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2  # Error + Hint
    (root / "flags.txt").write_text("cat\ndog\n")
    (root / "2.json").write_bytes(b'{"flags": {"cat": true}, "imagePath": "2.png", "x": "\x80"}')
    res = invoke("convert", "--dataset", root, "--json")
    assert res.exit_code == 0
    skipped = {p["file"]: p for p in json.loads(res.stdout)["skipped"]}
    assert skipped["2.json"]["code"] == "not_utf8" and "byte 0x80 at line 1, column 54" in skipped["2.json"]["message"]


def test_unwritable_or_file_valued_outputs_are_refused_before_work(invoke, synth_ds, tmp_path, monkeypatch):
    root = tmp_path / "lm"
    _labelme(root, "labelme", extra=False)
    (tmp_path / "afile").write_text("x")
    res = invoke("convert", "--dataset", root, "--out", tmp_path / "afile")
    assert res.exit_code == 2 and "is a file, but a folder is expected" in res.stderr
    res = invoke("convert", "--dataset", root, "--out", tmp_path / "afile" / "out")
    assert res.exit_code == 2 and "afile is a file, not a folder" in res.stderr
    before = _lists(synth_ds)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == synth_ds and m & os.W_OK else real(p, m))
    res = _split(invoke, synth_ds, 60, 20, 20)  # a read-only dataset folder (as a non-root user sees it)
    assert res.exit_code == 2 and f"output folder {synth_ds} is not writable" in res.stderr
    res = invoke("convert", "--dataset", root)
    assert res.exit_code == 0  # root itself is writable
    assert _lists(synth_ds) == before


@pytest.mark.parametrize("at, expect", [(5, "old"), (9, "new")], ids=["while-staging", "while-switching"])
def test_split_ctrl_c_exits_130_with_a_complete_set(invoke, synth_ds, monkeypatch, at, expect):
    before = _lists(synth_ds)
    pooled = _pool(synth_ds)
    calls = [0]
    real_replace, real_fsync = os.replace, os.fsync

    def hit(fn):
        def wrapper(*a):
            calls[0] += 1
            if calls[0] == at:
                raise KeyboardInterrupt
            return fn(*a)
        return wrapper

    monkeypatch.setattr(os, "replace", hit(real_replace))
    monkeypatch.setattr(os, "fsync", hit(real_fsync))
    res = _split(invoke, synth_ds, 60, 20, 20)
    monkeypatch.undo()
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert (_lists(synth_ds) == before) == (expect == "old")
    assert _pool(synth_ds) == pooled
    assert not [p.name for p in synth_ds.iterdir() if p.name.startswith(".")]
