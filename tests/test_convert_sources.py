"""`imgfeat convert --from folders DIR` and `--from list FILE` (issue 21): the on-ramp from a folder of
photos or a `path label` list to a ShiTuRecDataset that `imgfeat check` passes, with hostile trees."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import shared_path

SPLITS = ("train", "gallery", "query")


def _jpg(path: Path, seed: int, size: int = 24) -> Path:
    """A small JPEG whose pixels differ with ``seed`` (distinct bytes, so no two images are equal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)).save(path, "JPEG")
    return path


def _classes(root: Path, sizes: dict, start: int = 0) -> Path:
    k = start
    for name, n in sizes.items():
        for i in range(n):
            k += 1
            _jpg(root / name / f"{i}.jpg", k)
    return root


def _lists(root: Path) -> dict:
    return {s: (root / f"{s}.txt").read_text(encoding="utf-8").splitlines() for s in SPLITS}


def _rows(root: Path) -> list:
    return [line.split(" ") for lines in _lists(root).values() for line in lines]


def _codes(doc: dict, key: str = "skipped") -> Counter:
    return Counter(p["code"] for p in doc[key])


def _check_passes(invoke, ds: Path, tmp_path: Path) -> None:
    res = invoke("check", "--dataset", ds, "--output", tmp_path / "check_out", "--quiet")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------------------- class folders

def test_folders_make_a_dataset_that_check_passes(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"cat": 6, "dog": 5, "my class": 4, "caf\u00e9 \u2615": 3, "bird": 1})
    _jpg(photos / "cat" / "nested" / "deeper" / "n.jpg", 99)  # nested: belongs to cat
    (photos / "cat" / "notes.txt").write_text("not an image")
    (photos / ".DS_Store").write_bytes(b"\0\0")
    (photos / "dog" / ".hidden.jpg").write_bytes(b"")  # hidden: passed over
    (photos / "empty").mkdir()
    _jpg(photos / "loose.jpg", 98)  # not in a class folder
    (photos / "dog" / "zero.jpg").write_bytes(b"")
    (photos / "dog" / "cut.jpg").write_bytes((photos / "dog" / "0.jpg").read_bytes()[:200])
    out = tmp_path / "ds"
    res = invoke("convert", "--from", "folders", photos, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "folders" and doc["classes"] == ["bird", "caf\u00e9 \u2615", "cat", "dog", "my class"]
    assert (out / "label.txt").read_text(encoding="utf-8") == "bird\ncaf\u00e9 \u2615\ncat\ndog\nmy class\n"
    assert _codes(doc) == {"empty_class": 1, "not_in_class_folder": 1, "undecodable_image": 2}
    assert {"nested_folder", "not_an_image", "renamed_image", "small_classes"} <= set(_codes(doc, "notes"))
    rows = _rows(out)
    assert Counter(label for _, label in rows) == {"0": 1, "1": 3, "2": 7, "3": 5, "4": 4}
    assert "images/cat/nested/deeper/n.jpg" in {p for p, _ in rows}
    assert "images/my_class/0.jpg" in {p for p, _ in rows}  # spaces cannot be listed: renamed
    for path, _ in rows:  # hard links: no bytes copied
        assert os.path.samefile(out / path, photos / path[len("images/"):].replace("my_class", "my class")
                                .replace("caf\u00e9_\u2615", "caf\u00e9 \u2615"))
    assert {p for p, _ in rows if p.endswith("0.jpg") and "bird" in p} <= {p for p, _ in rows}
    assert not (photos / "train.txt").exists()  # the photos are untouched
    _check_passes(invoke, out, tmp_path)


def test_folders_split_is_stratified_seeded_and_says_what_small_classes_get(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"10": 6, "2": 5, "1": 1, "3": 2})
    res = invoke("convert", "--from", "folders", photos, "--out", tmp_path / "a", "--json")
    doc = json.loads(res.stdout)
    assert doc["classes"] == ["1", "2", "3", "10"]  # numbers in numeric order: folder "2" is class 1
    small = [p for p in doc["notes"] if p["code"] == "small_classes"]
    assert len(small) == 1 and small[0]["message"].startswith("2 of 4 classes have too few images")
    assert "1 of them are in train only" in small[0]["message"]
    lists = _lists(tmp_path / "a")
    assert [l.split()[1] for l in lists["train"]].count("0") == 1 and "0" not in {l.split()[1] for l in
                                                                                  lists["gallery"] + lists["query"]}
    assert {l.split()[1] for l in lists["query"]} <= {l.split()[1] for l in lists["gallery"]}
    invoke("convert", "--from", "folders", photos, "--out", tmp_path / "b")
    assert _lists(tmp_path / "b") == lists  # same seed, same files
    invoke("convert", "--from", "folders", photos, "--out", tmp_path / "c", "-o", "CheckDataset.split.seed=5")
    assert _lists(tmp_path / "c") != lists


def test_folders_in_place_lists_the_tree_and_refuses_unlistable_names(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"cat": 4, "dog": 4})
    res = invoke("convert", "--from", "folders", photos)
    assert res.exit_code == 0, res.output
    assert {p.split("/")[0] for p, _ in _rows(photos)} == {"cat", "dog"}
    first = _lists(photos)
    assert invoke("convert", "--from", "folders", photos).exit_code == 0  # the lists at the top are not images
    assert _lists(photos) == first and (photos / "train.txt.bak").is_file()
    _check_passes(invoke, photos, tmp_path)
    _classes(photos, {"sea lion": 2}, start=50)
    res = invoke("convert", "--from", "folders", photos)
    assert res.exit_code == 2 and "cannot be listed in place" in res.stderr and "--out" in res.stderr
    assert _lists(photos) == first  # nothing changed


def test_folders_hostile_tree_fifo_loops_escapes_and_odd_names(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"cat": 3, "dog": 3})
    outside = _classes(tmp_path / "outside", {"secret": 2}, start=20)
    os.mkfifo(photos / "cat" / "pipe.jpg")  # opening it would block forever
    os.symlink("..", photos / "cat" / "up")  # a loop back to the root
    os.symlink("self", photos / "dog" / "self")  # ELOOP
    os.symlink("nowhere.jpg", photos / "dog" / "broken.jpg")
    os.symlink(outside / "secret", photos / "leak")  # a class folder outside the root
    os.symlink(outside / "secret" / "0.jpg", photos / "dog" / "leak.jpg")
    os.symlink("cat", photos / "cat2")  # the same folder under a second name
    gbk = os.fsdecode("\u53ef\u4e50".encode("gbk"))  # a Chinese folder name written by a GBK tool
    _classes(photos, {gbk: 2, os.fsdecode(b"bad\xff\xfe"): 2}, start=40)
    (photos / "line\nbreak").mkdir()
    _jpg(photos / "line\nbreak" / "x.jpg", 60)
    out = tmp_path / "ds"
    res = invoke("convert", "--from", "folders", photos, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    codes = _codes(doc)
    assert codes["not_a_file"] == 1 and codes["path_escapes_root"] == 2 and codes["bad_class_name"] == 1
    assert codes["unreadable_entry"] == 2 and codes["repeated_folder"] == 2  # loop, broken; up, cat2
    assert "\u53ef\u4e50" in doc["classes"] and "bad\ufffd\ufffd" in doc["classes"]
    assert {p["code"] for p in doc["notes"]} >= {"name_not_utf8"}
    listed = {p for p, _ in _rows(out)}
    assert "images/\u53ef\u4e50/0.jpg" in listed and not any("secret" in p or "leak" in p for p in listed)
    assert len(listed) == 10
    _check_passes(invoke, out, tmp_path)
    res = invoke("convert", "--from", "folders", photos)  # in place, the GBK names cannot be listed
    assert res.exit_code == 2 and "not UTF-8" in res.stderr and not (photos / "train.txt").exists()


def test_folder_names_are_printed_as_text_not_markup(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"[/oops]": 3, "dog": 3})  # class "[" with nested "oops]/"
    (photos / "[bold]").mkdir()
    res = invoke("convert", "--from", "folders", photos, "--out", tmp_path / "[/ds]")
    assert res.exit_code == 0, res.output
    assert "class folder [bold] holds no images" in res.stderr and "[/oops]/0.jpg" in res.stderr
    assert "[/ds]" in res.stdout and (tmp_path / "[/ds]" / "label.txt").read_text() == "[\ndog\n"


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no-images"])
def test_folders_bad_sources_are_one_line_errors(invoke, tmp_path, case):
    src = tmp_path / "src"
    if case == "file":
        src.write_text("a.jpg cat\n")
    elif case == "empty":
        src.mkdir()
    elif case == "no-images":
        (src / "cat").mkdir(parents=True)
        (src / "cat" / "a.txt").write_text("x")
    res = invoke("convert", "--from", "folders", src, "--out", tmp_path / "out")
    want = {"missing": (2, "does not exist"), "file": (2, "is a file, not a folder"),
            "empty": (1, "no usable image"), "no-images": (1, "holds no images")}[case]
    assert res.exit_code == want[0] and want[1] in res.stderr, res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
    if case == "file":
        assert "--from list" in res.stderr


def test_out_is_vetted_before_any_work_and_replaced_only_with_overwrite(invoke, tmp_path, monkeypatch):
    photos = _classes(tmp_path / "photos", {"cat": 3, "dog": 3})
    out = tmp_path / "ds"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    res = invoke("convert", "--from", "folders", photos, "--out", out)
    assert res.exit_code == 2 and "exists and is not empty" in res.stderr and "--overwrite" in res.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    res = invoke("convert", "--from", "folders", photos, "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (out / "train.txt").is_file() and (tmp_path / "ds.bak" / "mine.txt").read_text() == "keep me"
    res = invoke("convert", "--from", "folders", photos, "--out", photos / "ds")
    assert res.exit_code == 2 and "inside the class folders' root" in res.stderr
    res = invoke("convert", "--from", "folders", photos, "--out", tmp_path, "--overwrite")
    assert res.exit_code == 2 and "holds the input" in res.stderr and (photos / "cat" / "0.jpg").is_file()
    (tmp_path / "empty").mkdir()
    assert invoke("convert", "--from", "folders", photos, "--out", tmp_path / "empty").exit_code == 0
    assert not (tmp_path / "empty.bak").exists()  # an empty folder is simply filled
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "f").write_text("x")
    monkeypatch.chdir(tmp_path / "here")
    assert invoke("convert", "--from", "folders", photos, "--out", ".", "--overwrite").exit_code == 0
    assert (tmp_path / "here.bak" / "f").is_file() and (tmp_path / "here" / "train.txt").is_file()


@pytest.mark.parametrize("stage", ["decode", "link", "lists"])
@pytest.mark.parametrize("previous", [False, True], ids=["new-out", "overwrite"])
def test_ctrl_c_mid_convert_leaves_nothing_half_made(invoke, tmp_path, monkeypatch, stage, previous):
    from imgfeat_cli.datasets import convert_output

    photos = _classes(tmp_path / "photos", {"cat": 5, "dog": 5})
    out = tmp_path / "deep" / "er" / "ds"
    if previous:
        out.mkdir(parents=True)
        (out / "old.txt").write_text("the last complete state")
    calls = []

    def interrupt_on_third(real):
        def wrapper(*a, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(*a, **kw)
        return wrapper

    target = {"decode": "_decode_error", "link": "_place", "lists": "write_lists"}[stage]
    if stage == "lists":  # the list files are written last, after every image is linked
        monkeypatch.setattr(convert_output, target, lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    else:
        monkeypatch.setattr(convert_output, target, interrupt_on_third(getattr(convert_output, target)))
    res = invoke("convert", "--from", "folders", photos, "--out", out, *(["--overwrite"] if previous else []))
    assert res.exit_code == 130 and "interrupted" in res.stderr
    if previous:
        assert [p.name for p in out.iterdir()] == ["old.txt"] and not (out.parent / "ds.bak").exists()
        assert [p.name for p in out.parent.iterdir()] == ["ds"]
    else:
        assert not (tmp_path / "deep").exists()  # not even the parent folders it made
    assert sorted(p.name for p in tmp_path.iterdir()) == (["deep", "photos"] if previous else ["photos"])


# ----------------------------------------------------------------------------------- list files

def _drinkish(root: Path) -> Path:
    """Images in class-id folders and a PaddleClas-style list with the mess real lists have."""
    _classes(root, {"0": 4, "1": 4, "2": 3}, start=0)
    _jpg(root / "odd dir" / "a b.jpg", 70)
    _jpg(root / "odd dir" / "c.jpg", 71)
    outside = _jpg(root.parent / "outside.jpg", 72)
    os.symlink(outside, root / "2" / "link.jpg")
    lines = ["0/0.jpg\tCoca Cola", "0/1.jpg\tCoca Cola", "0/2.jpg\tCoca Cola ", "0/3.jpg\tCoca Cola",
             "1/0.jpg Sprite zero", "1/1.jpg Sprite zero", "  1/2.jpg   Sprite zero", "1/3.jpg\tSprite zero",
             "", "2/0.jpg\t\u51b0\u7ea2\u8336", "2/1.jpg\t\u51b0\u7ea2\u8336", "2/2.jpg\t\u51b0\u7ea2\u8336",
             "odd dir/a b.jpg\todd", "odd dir/c.jpg\todd", "odd dir/c.jpg\todd",  # a repeat
             "9/0.jpg\tmissing", "../outside.jpg\tescape", f"{outside}\tabsolute", "2/link.jpg\tsymlinked",
             "0/0.jpg", "2/2.jpg\tsomething else"]
    (root / "list.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    return root / "list.txt"


def test_list_with_tabs_spaces_bom_crlf_missing_and_escaping_paths(invoke, tmp_path):
    listing = _drinkish(tmp_path / "gallery")
    out = tmp_path / "ds"
    res = invoke("convert", "--from", "list", listing, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["classes"] == ["Coca Cola", "Sprite zero", "odd", "\u51b0\u7ea2\u8336"]
    where = {(p["code"], p["line"]) for p in doc["skipped"] if p["file"] == "list.txt"}
    assert where == {("missing_image", 16), ("path_escapes_root", 17), ("path_escapes_root", 18),
                     ("path_escapes_root", 19), ("malformed_line", 20)}
    assert _codes(doc)["conflicting_labels"] == 1 and _codes(doc)["duplicate_entry"] == 1  # 2/2.jpg; c.jpg
    assert "bom" in _codes(doc, "notes")
    rows = _rows(out)
    assert len(rows) == 12 and "images/odd_dir/a_b.jpg" in {p for p, _ in rows}
    _check_passes(invoke, out, tmp_path)
    res = invoke("convert", "--from", "list", listing)  # in place: the root is the list's folder
    assert res.exit_code == 2 and "cannot be listed in place" in res.stderr


def test_list_paths_relative_to_root_and_integer_labels_keep_their_ids(invoke, tmp_path):
    _classes(tmp_path / "imgs", {"a": 3, "b": 3})
    listing = tmp_path / "lists" / "all.txt"
    listing.parent.mkdir()
    listing.write_text("".join(f"{c}/{i}.jpg {n}\n" for n, c in ((1, "b"), (0, "a")) for i in range(3)))
    res = invoke("convert", "--from", "list", listing, "--root", tmp_path / "imgs", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["classes"] == ["0", "1"]
    assert {tuple(r) for r in _rows(tmp_path / "imgs")} >= {("a/0.jpg", "0"), ("b/0.jpg", "1")}  # in place: --root
    res = invoke("convert", "--from", "list", listing, "--json", "--out", tmp_path / "x")  # root: the list's folder
    assert res.exit_code == 1 and "does not exist" in res.stderr


def test_list_read_as_gbk_or_with_bad_bytes_says_so(invoke, tmp_path):
    _classes(tmp_path / "g", {"0": 2, "1": 2})
    text = "".join(f"{c}/{i}.jpg\t{name}\n" for c, name in (("0", "\u53ef\u4e50"), ("1", "\u96ea\u78a7"))
                   for i in range(2))
    (tmp_path / "g" / "gbk.txt").write_bytes(text.encode("gbk"))
    res = invoke("convert", "--from", "list", tmp_path / "g" / "gbk.txt", "--out", tmp_path / "a", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["classes"] == ["\u53ef\u4e50", "\u96ea\u78a7"]
    assert "read_as_gbk" in _codes(doc, "notes")
    (tmp_path / "g" / "bad.txt").write_bytes(text.encode("utf-8") + b"1/0.jpg \xff\xfe\x80\n")
    res = invoke("convert", "--from", "list", tmp_path / "g" / "bad.txt", "--out", tmp_path / "b", "--json")
    doc = json.loads(res.stdout)
    bad = [p for p in doc["skipped"] if p["code"] == "not_utf8"]
    assert res.exit_code == 0 and len(bad) == 1 and bad[0]["line"] == 5 and "byte 0xff" in bad[0]["message"]


@pytest.mark.parametrize("case", ["folder", "fifo", "missing", "binary", "nothing-usable"])
def test_list_bad_files_are_one_line_errors(invoke, tmp_path, case):
    src = tmp_path / "list.txt"
    if case == "folder":
        src.mkdir()
    elif case == "fifo":
        os.mkfifo(src)
    elif case == "binary":
        src.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    elif case == "nothing-usable":
        src.write_text("a.jpg cat\n../b.jpg dog\n")
    res = invoke("convert", "--from", "list", src, "--out", tmp_path / "out")
    want = {"folder": (2, "--from folders"), "fifo": (2, "not a regular file"), "missing": (2, "does not exist"),
            "binary": (2, "NUL bytes"), "nothing-usable": (1, "no usable image")}[case]
    assert res.exit_code == want[0] and want[1] in res.stderr, res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_unknown_format_and_two_sources_are_usage_errors(invoke, tmp_path):
    res = invoke("convert", "--from", "coco", tmp_path)
    assert res.exit_code == 2 and "use one of labelme, folders, list" in res.stderr
    res = invoke("convert", tmp_path / "a", "--dataset", tmp_path / "b")
    assert res.exit_code == 2 and "two sources given" in res.stderr


# --------------------------------------------------------------------------- check's pointer

def test_check_on_class_folders_says_which_command_makes_a_dataset(invoke, tmp_path):
    photos = _classes(tmp_path / "photos", {"cat": 2, "dog": 2})
    res = invoke("check", "--dataset", photos, "--out", tmp_path / "o", "--json")
    assert res.exit_code == 2 and not (tmp_path / "o").exists()  # not a dataset: nothing is written
    error = json.loads(res.stdout)["error"]
    assert f"imgfeat convert --from folders {photos} --out DS" in error["message"]


# ------------------------------------------------------------------ the real drink gallery

@pytest.mark.slow
@pytest.mark.parametrize("how", ["folders", "list"])
def test_real_drink_gallery_converts_both_ways_and_passes_check(invoke, tmp_path, how):
    gallery = shared_path("data", "drink_dataset_v1.0", "gallery")
    src = gallery if how == "folders" else gallery / "drink_label.txt"
    res = invoke("convert", "--from", how, src, "--out", tmp_path / "ds", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    images, classes = sum(doc["counts"].values()), len(doc["classes"])
    assert (images, classes) == ((1069, 213) if how == "folders" else (987, 196))
    if how == "list":  # the one listed path missing on disk
        assert [(p["code"], p["line"]) for p in doc["skipped"]] == [("missing_image", 988)]
    _check_passes(invoke, tmp_path / "ds", tmp_path)
