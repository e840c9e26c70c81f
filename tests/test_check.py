"""`imgfeat check`: happy path, report files, and every bad-input case with its code and exit status."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
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


# ----------------------------------------------------------------------- encodings and odd lines

def _check(root: Path, **kw):
    from imgfeat_cli.datasets.check import run_check
    return run_check(str(root), write_outputs=False, num_workers=1, **kw)


def _found(result, code):
    return [(p.file, p.line, p.severity, p.message) for p in result.problems if p.code == code]


def test_bom_crlf_and_spaces_around_lines_are_read_and_reported(synth_ds):
    train = (synth_ds / "train.txt").read_text().splitlines()
    (synth_ds / "train.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(train).encode() + b"\n")  # BOM
    gallery = (synth_ds / "gallery.txt").read_text().splitlines()
    (synth_ds / "gallery.txt").write_text("\r\n".join(gallery) + "\r\n", newline="")  # CRLF
    query = (synth_ds / "query.txt").read_text().splitlines()
    query[1] += "  "
    query[3] = " " + query[3] + "\t"
    (synth_ds / "query.txt").write_text("\n".join(query) + "\n")
    res = _check(synth_ds)
    assert res.check_pass, [p.to_dict() for p in res.problems if p.severity == "error"]
    assert len(res.splits["train"]) == len(train) and res.splits["train"][0].path == train[0].split()[0]
    assert not _found(res, "missing_image")  # the BOM used to make the first image "not exist"
    assert _found(res, "bom") == [("train.txt", 1, "warning", _found(res, "bom")[0][3])]
    assert "PaddleX" in _found(res, "bom")[0][3]
    assert [f[:3] for f in _found(res, "crlf")] == [("gallery.txt", None, "info")]
    (spaces,) = _found(res, "surrounding_spaces")
    assert spaces[:3] == ("query.txt", 2, "warning") and "lines 2, 4" in spaces[3]
    assert len(res.splits["query"]) == len(query)


def test_bytes_that_are_not_utf8_are_located_and_the_rest_still_checked(synth_ds):
    train = (synth_ds / "train.txt").read_bytes().splitlines()
    train.insert(2, "images/c00/\u4e2d.jpg 0".encode("gbk"))
    train.insert(5, b"images/caf\xe9.jpg 1")
    (synth_ds / "train.txt").write_bytes(b"\n".join(train) + b"\n")
    res = _check(synth_ds)
    (bad,) = _found(res, "not_utf8")
    assert bad[:3] == ("train.txt", 3, "error")
    assert "byte 0xd6 at line 3, column 12" in bad[3] and "lines 3, 6" in bad[3]
    assert len(res.splits["train"]) == len(train) - 2  # every other line still parsed


@pytest.mark.parametrize("label, code", [("2000000000", "label_out_of_range"), ("1000000", "label_out_of_range"),
                                         ("4006381333931", "label_out_of_range"), ("2e9", "non_integer_label"),
                                         ("1.0", "non_integer_label")])
def test_absurd_or_malformed_train_labels_fail_before_training(synth_ds, label, code):
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write(f"images/c00/000.jpg {label}\n")
    res = _check(synth_ds)
    n = len((synth_ds / "train.txt").read_text().splitlines())
    (found,) = [p for p in _found(res, code) if p[:3] == ("train.txt", n, "error")]
    assert ("classifier" if code == "label_out_of_range" else "class ids are 0, 1, 2") in found[3]
    assert not res.check_pass


def test_non_contiguous_labels_are_fine_and_very_sparse_ones_warn(synth_ds):
    text = (synth_ds / "train.txt").read_text()
    (synth_ds / "train.txt").write_text(text.replace(" 3\n", " 900\n"))  # a gap: fine
    res = _check(synth_ds)
    assert res.check_pass and not _found(res, "sparse_labels")
    (synth_ds / "train.txt").write_text(text.replace(" 3\n", " 999999\n"))  # 4 classes, 10^6 outputs
    res = _check(synth_ds)
    assert res.check_pass and _found(res, "sparse_labels")[0][2] == "warning"
    for split in ("gallery", "query"):  # gallery/query labels only need to match each other
        t = (synth_ds / f"{split}.txt").read_text()
        (synth_ds / f"{split}.txt").write_text(t.replace(" 1\n", " 4006381333931\n"))
    assert not _found(_check(synth_ds), "label_out_of_range")


def test_paths_with_spaces_get_the_rule_convert_applies(synth_ds):
    from imgfeat_cli.datasets.dataset import SPACE_RULE
    src = synth_ds / "images" / "c00" / "000.jpg"
    (synth_ds / "images" / "my cat.jpg").write_bytes(src.read_bytes())
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write("images/my cat.jpg 0\nimages/c00/000.jpg  0\n")
    res = _check(synth_ds)
    n = len((synth_ds / "train.txt").read_text().splitlines())
    (space,) = _found(res, "space_in_path")
    assert space[:3] == ("train.txt", n - 1, "error") and SPACE_RULE in space[3]
    assert any(p[1] == n and "several spaces in a row" in p[3] for p in _found(res, "malformed_line"))


def test_unscorable_queries_are_listed_each_with_file_and_line(invoke, synth_ds, tmp_path):
    query = (synth_ds / "query.txt").read_text().splitlines()
    query[1] = query[1].rsplit(" ", 1)[0] + " 77"
    query[3] = query[3].rsplit(" ", 1)[0] + " 78"
    (synth_ds / "query.txt").write_text("\n".join(query) + "\n")
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "--json")
    doc = json.loads(res.stdout)
    lost = [(p["file"], p["line"], p["severity"]) for p in doc["problems"] if p["code"] == "query_label_not_in_gallery"]
    assert lost == [("query.txt", 2, "warning"), ("query.txt", 4, "warning")]
    assert res.exit_code == 0
    table = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o").stdout
    assert "query.txt:2" in table and "query.txt:4" in table


def test_no_scorable_query_is_an_error_on_every_query(synth_ds):
    query = (synth_ds / "query.txt").read_text().splitlines()
    (synth_ds / "query.txt").write_text("".join(q.rsplit(" ", 1)[0] + " 50\n" for q in query))
    res = _check(synth_ds)
    lost = _found(res, "query_label_not_in_gallery")
    assert len(lost) == len(query) and {p[2] for p in lost} == {"error"} and not res.check_pass


def test_histogram_rows_name_the_class_sizes_they_hold():
    """A bucket's row says which sizes it holds: 3 (not "3-4") when every class there has 3 images."""
    from imgfeat_cli.cli.check import render_histogram
    for sizes, labels in [([3, 3], ["3"]), ([3, 4], ["3-4"]), ([5, 7, 1], ["1", "5-7"]),
                          ([2, 65, 200], ["2", "65-200"]), ([8], ["8"])]:
        table = render_histogram({"train": {str(i): s for i, s in enumerate(sizes)}})
        assert list(table.columns[1].cells) == labels, sizes


def test_check_reports_progress_through_the_callback(synth_ds):
    calls = []
    _check(synth_ds, progress=lambda task, done, total: calls.append((task, done, total)))
    tasks = {t for t, _, _ in calls}
    assert {"Finding images", "Decoding images"} <= tasks
    for task in tasks:
        last = [c for c in calls if c[0] == task][-1]
        assert last[1] == last[2] and last[2] > 0


def test_check_completes_an_interrupted_list_update_and_says_so(synth_ds):
    from imgfeat_cli.common import filetxn
    old = {s: (synth_ds / f"{s}.txt").read_text() for s in ("train", "gallery", "query")}
    new = {s: "".join(sorted(old[s].splitlines(keepends=True))) for s in old}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: dies after the journal and the first two renames
        real, calls = os.replace, [0]

        def dies(a, b):
            calls[0] += 1
            if calls[0] == 4:
                os._exit(9)
            real(a, b)

        os.replace = dies
        with filetxn.FileSet(synth_ds) as files:
            for s in old:
                files.stage_text(f"{s}.txt", new[s])
            files.commit()
        os._exit(0)
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 9
    assert (synth_ds / filetxn.JOURNAL).exists()
    res = _check(synth_ds)
    assert {p[0] for p in _found(res, "repaired_update")} == {"gallery.txt", "query.txt"}
    assert {s: (synth_ds / f"{s}.txt").read_text() for s in old} == new
    assert {s: (synth_ds / f"{s}.txt.bak").read_text() for s in old} == old


def test_a_list_file_that_is_a_folder_is_named(synth_ds):
    (synth_ds / "query.txt").unlink()
    (synth_ds / "query.txt").mkdir()
    (p,) = _found(_check(synth_ds), "missing_list_file")
    assert p[0] == "query.txt" and "is not a file" in p[3]


def test_hostile_image_paths_are_reported_not_crashed_on(synth_ds):
    imgs = synth_ds / "images"
    os.mkfifo(imgs / "fifo.jpg")
    (imgs / "loop1").symlink_to("loop2")
    (imgs / "loop2").symlink_to("loop1")
    (imgs / "dangling.jpg").symlink_to("gone.jpg")
    (imgs / "adir.jpg").mkdir()
    cases = {"images/a\0b.jpg": "contains a NUL byte", f"images/{'n' * 300}.jpg": "name too long",
             "images/fifo.jpg": "not a regular file", "images/loop1": "symlink loop",
             "images/dangling.jpg": "broken symlink", "images/adir.jpg": "is a folder",
             "images/c00/000.jpg/x.jpg": "a file stands where a folder"}
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write("".join(f"{p} 0\n" for p in cases))
    found = [p[3] for p in _found(_check(synth_ds), "missing_image")]
    for path, why in cases.items():
        assert any(why in m for m in found), (path, found)


def test_an_unusable_output_folder_is_refused_before_any_image_is_decoded(invoke, synth_ds, tmp_path, monkeypatch):
    import imgfeat_cli.datasets.check as check_mod
    monkeypatch.setattr(check_mod, "_probe", lambda p: pytest.fail("decoded before the output was checked"))
    (tmp_path / "afile").write_text("x")
    for out, what in ((tmp_path / "afile", "is a file, but a folder is expected"),
                      (tmp_path / "afile" / "sub", "afile is a file, not a folder")):
        res = invoke("check", "--dataset", synth_ds, "--output", out)
        assert res.exit_code == 2 and what in res.stderr and "unexpected" not in res.stderr


def test_many_problems_make_a_bounded_table_and_a_complete_report(invoke, synth_ds, tmp_path):
    """300k problems took 200 s to print: the terminal shows the first few of each code and counts
    the rest; the report file and --json keep every problem."""
    from imgfeat_cli.cli.check import SHOWN_PER_CODE

    n = SHOWN_PER_CODE + 57
    with open(synth_ds / "train.txt", "a") as fh:
        fh.write("".join(f"images/gone/{i}.jpg 0\n" for i in range(n)))
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o")
    assert res.exit_code == 3
    assert res.stdout.count("images/gone/") == SHOWN_PER_CODE
    squeezed = "".join(ch for ch in res.stdout if not ch.isspace() and ch != "│")  # table cells wrap
    assert f"...and57more(all{n}inthereport)" in squeezed
    doc = json.loads((tmp_path / "o" / "check_dataset_result.json").read_text())
    assert sum(p["code"] == "missing_image" for p in doc["problems"]) == n
    assert f"check failed: {n} errors, 0 warnings" in res.stdout


def test_a_folder_that_is_no_dataset_writes_nothing(invoke, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    res = invoke("check", "--dataset", photos)
    assert res.exit_code == 2 and "is not a ShiTuRecDataset: it holds none of train.txt" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no ./output


def test_counts_are_worded_as_counts(invoke, synth_ds, tmp_path):
    """"1 warning" (not "1 warnings"); a median of whole counts is printed whole ("1", not "1.0")."""
    lines = (synth_ds / "query.txt").read_text().splitlines()
    labels = sorted({ln.split()[1] for ln in lines})
    (synth_ds / "query.txt").write_text("".join(next(ln for ln in lines if ln.split()[1] == lab) + "\n"
                                                for lab in labels))
    (synth_ds / "train.txt").write_text((synth_ds / "train.txt").read_text() + lines[0] + "\n")
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o")
    assert res.exit_code == 0, res.stdout
    assert "0 errors, 1 warning;" in res.stdout
    query_row = next(ln for ln in res.stdout.splitlines() if "│ query" in ln)
    assert [c.strip() for c in query_row.split("│")[2:7]] == [str(len(labels)), str(len(labels)), "1", "1", "1"]
