"""Every command, given an output location it cannot write and an input that is not there, answers
with one ``Error:`` line (and at most one ``Hint:`` line), no traceback, never "unexpected", and
the documented exit code: 2 when the request is wrong (a missing input, a path of the wrong kind,
an output refused before any work), 1 when an I/O failure is hit while working (issue 12)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from httpserver import Server
from imgfeat_cli.datasets.synthetic import make_dataset


def error_lines(res, codes=None) -> list:
    """Assert the error shape (one ``Error:`` line, at most one ``Hint:`` line, no traceback, no
    "unexpected", no rich box) and, when given, an allowed exit code; return the lines."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert codes is None or res.exit_code in codes, (res.exit_code, res.stderr, res.stdout)
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr, res.stderr
    assert not any(ch in res.stderr for ch in "╭│╰"), res.stderr
    assert 1 <= len(lines) <= 2 and lines[0].startswith("Error: "), res.stderr
    assert len(lines) == 1 or lines[1].startswith("Hint: "), res.stderr
    return lines


def one_error(res, codes) -> str:
    """``error_lines`` with an exit code in ``codes``; the Error line."""
    return error_lines(res, codes)[0]


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder in which nothing can be created, for whoever runs the tests: a folder
    without write permission, or for root (whom permissions do not stop) a sysfs folder."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/kernel")
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return folder
    os.close(fd)  # pragma: no cover - a writable /sys: nothing here can be made unwritable for root
    os.unlink(name)
    pytest.skip("running as root with a writable /sys: no unwritable folder available")


def make_labelme(folder: Path) -> Path:
    """A LabelMe classification folder: 8 images, two classes in flags.txt."""
    folder.mkdir(parents=True)
    (folder / "flags.txt").write_text("a\nb\n")
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 90, 200)).save(folder / f"{i}.jpg")
        (folder / f"{i}.json").write_text(json.dumps({"flags": {"a": i % 2 == 0, "b": i % 2 == 1}, "shapes": [],
                                                      "imagePath": f"{i}.jpg", "imageData": None}))
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, built_models):
    """Valid inputs for every command, built once: a dataset, a LabelMe folder, photos, embedding
    files, a checkpoint, an inference folder and a local HTTP server with one file."""
    import paddle

    from imgfeat_cli.models.registry import build_model

    root = tmp_path_factory.mktemp("inputs")
    make_dataset(root / "ds", num_classes=4, per_class=8, size=32, seed=3, distinct_colours=True)
    lm = make_labelme(root / "labelme")
    photos = root / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(photos / "x.jpg")
    rng = np.random.default_rng(0)
    for name in ("q", "g"):
        with open(root / f"{name}.jsonl", "w") as fh:
            for i in range(4):
                fh.write(json.dumps({"input_path": f"{i}.jpg", "label": i % 2,
                                     "feature": rng.standard_normal(8).tolist()}) + "\n")
    paddle.seed(0)
    paddle.save(build_model("PP-ShiTuV2_rec").state_dict(), str(root / "w.pdparams"))
    server = Server()
    server.add("/f.bin", b"x" * 1000)
    yield {"root": root, "ds": root / "ds", "labelme": lm, "photos": photos, "q": root / "q.jsonl",
           "g": root / "g.jsonl", "weights": root / "w.pdparams", "model_dir": built_models["PP-ShiTuV2_rec"],
           "url": server.url + "/f.bin", "missing_url": server.url + "/missing.bin"}
    server.close()


TRAIN = ["-o", "Train.pretrain_weight_path=none", "-o", "Train.input_size=32", "-o", "Train.batch_size=8",
         "-o", "Train.epochs_iters=1"]


def write_args(cmd: str, inp: dict, out: Path) -> list:
    """Arguments that make ``cmd`` write its output at ``out`` from valid inputs."""
    return {
        "check": ["check", "--dataset", inp["ds"], "--output", out],
        "convert": ["convert", "--dataset", inp["labelme"], "--out", out],
        "train": ["train", "--dataset", inp["ds"], "--output", out, *TRAIN],
        "eval": ["eval", "--query", inp["q"], "--gallery", inp["g"], "--output", out],
        "embed": ["embed", inp["photos"], "--model-dir", inp["model_dir"], "--out", out / "f.jsonl"],
        "export": ["export", "--weights", inp["weights"], "--out", out],
        "download url": ["download", "url", inp["url"], "--out", out / "f.bin"],
    }[cmd]


def missing_args(cmd: str, inp: dict, tmp: Path) -> list:
    """Arguments naming an input that does not exist."""
    gone = tmp / "does-not-exist"
    return {
        "check": ["check", "--dataset", gone, "--output", tmp / "o"],
        "convert": ["convert", "--dataset", gone, "--out", tmp / "o"],
        "split": ["split", "--dataset", gone],
        "train": ["train", "--dataset", gone, "--output", tmp / "o", *TRAIN],
        "eval": ["eval", "--query", gone / "q.jsonl", "--gallery", inp["g"], "--output", tmp / "o"],
        "embed": ["embed", gone / "x.jpg", "--model-dir", inp["model_dir"], "--out", tmp / "f.jsonl"],
        "export": ["export", "--weights", gone / "w.pdparams", "--out", tmp / "o"],
        "download url": ["download", "url", inp["missing_url"], "--out", tmp / "f.bin"],
    }[cmd]


WRITERS = ["check", "convert", "train", "eval", "embed", "export", "download url"]


@pytest.mark.parametrize("cmd", WRITERS)
def test_output_under_a_file(invoke, inputs, tmp_path, cmd):
    """A path whose folder is a regular file (ENOTDIR): refused in one line."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    one_error(invoke(*write_args(cmd, inputs, blocker / "out"), "--quiet"), (1, 2))


@pytest.mark.parametrize("cmd", WRITERS)
def test_output_in_an_unwritable_folder(invoke, inputs, tmp_path, cmd):
    """A folder the user may not write: refused (before work, 2) or failed (while writing, 1)."""
    folder = unwritable_folder(tmp_path)
    one_error(invoke(*write_args(cmd, inputs, folder / "imgfeat-out"), "--quiet"), (1, 2))


def test_split_of_a_dataset_it_cannot_rewrite(invoke, inputs, tmp_path):
    """split writes in place: a .bak that is a folder stops it with one line, the lists untouched."""
    ds = Path(shutil.copytree(inputs["ds"], tmp_path / "ds"))
    before = (ds / "train.txt").read_text()
    (ds / "train.txt.bak").mkdir()
    one_error(invoke("split", "--dataset", ds, "--quiet"), (1, 2))
    assert (ds / "train.txt").read_text() == before


#: Exit codes a missing input documents, where it is not 2: embed lists unreadable inputs in
#: FILE.errors.jsonl and exits 1 when nothing could be embedded (README, "embed").
MISSING_CODE = {"embed": 1}


@pytest.mark.parametrize("cmd", ["check", "convert", "split", "train", "eval", "embed", "export"])
def test_missing_input(invoke, inputs, tmp_path, cmd):
    line = one_error(invoke(*missing_args(cmd, inputs, tmp_path), "--quiet"), (MISSING_CODE.get(cmd, 2),))
    assert "does-not-exist" in line


def test_missing_download(invoke, inputs, tmp_path):
    """A URL that is not there is a network answer (exit 1), named in the line."""
    assert "HTTP 404" in one_error(invoke(*missing_args("download url", inputs, tmp_path), "--quiet"), (1,))
