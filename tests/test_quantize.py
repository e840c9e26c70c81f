"""`imgfeat quantize`: an int8 folder that runs wherever a model folder does, its accuracy report,
the accuracy bar, and the hostile inputs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgfeat_cli import create_model
from imgfeat_cli.cli.app import app
from imgfeat_cli.common.locks import path_lock
from imgfeat_cli.datasets.synthetic import make_dataset
from imgfeat_cli.pipeline.embedder import embed_to_memory

pytestmark = pytest.mark.slow


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calib")
    make_dataset(root, num_classes=8, per_class=4, size=64, seed=3, distinct_colours=True)
    return root


@pytest.fixture(scope="module")
def quantized(model_dir, calib, tmp_path_factory) -> dict:
    """One quantized folder for the module (the bar lowered: the seeded model is not trained)."""
    out = tmp_path_factory.mktemp("q") / "int8"
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 24,
               "-o", "Quantize.min_mean_cosine=0.9", "--json")
    assert res.exit_code == 0, res.output
    return {"out": out, "doc": json.loads(res.stdout)}


def test_folder_and_report_hold_the_measured_cosines(quantized, model_dir):
    out, doc = quantized["out"], quantized["doc"]
    assert sorted(p.name for p in out.iterdir()) == ["inference.onnx", "inference.yml", "quantize_report.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp folder left beside --out"
    report = json.loads((out / "quantize_report.json").read_text())
    assert report["calibration_images"] == 12 and report["heldout_images"] == 12
    assert report["method"]["format"] == "QDQ" and report["method"]["per_channel"] is True
    # the first convolution (raw pixels in) stays float: the graph holds exactly one float Conv
    import onnx

    graph = onnx.load(str(out / "inference.onnx")).graph
    float_convs = [n.name for n in graph.node if n.op_type == "Conv"
                   and not any(i.endswith("_DequantizeLinear_Output") for i in n.input[1:2])]
    assert report["method"]["float_nodes"] == float_convs and len(float_convs) == 1
    # the report's cosines are what the two folders give on the held-out images
    held = report["heldout_paths"]
    fp32 = embed_to_memory(create_model(model_dir=model_dir), held).features
    int8 = embed_to_memory(create_model(model_dir=str(out)), held).features
    cos = (fp32 * int8).sum(axis=1)
    assert cos.min() == pytest.approx(report["heldout"]["cosine_min"], abs=1e-4)
    assert cos.mean() == pytest.approx(report["heldout"]["cosine_mean"], abs=1e-4)
    assert doc["heldout"] == report["heldout"] and 0.0 <= report["heldout"]["recall1_agreement"] <= 1.0
    assert report["heldout"]["cosine_mean"] < 1.0, "int8 changes the features a little"


def test_folder_runs_wherever_a_model_folder_does(quantized, synth_ds, tmp_path):
    out = quantized["out"]
    model = create_model(model_dir=str(out))
    assert model.precision == "int8" and model.backend.startswith("onnxruntime")
    onnx_sha = hashlib.sha256((out / "inference.onnx").read_bytes()).hexdigest()
    assert model.identity["sha256"] == onnx_sha[:16], "the output identity covers the ONNX graph"
    res = _run("embed", synth_ds / "images", "--model-dir", out, "--out", tmp_path / "f.jsonl", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["precision"] == "int8"
    res = _run("eval", "--dataset", synth_ds, "--model-dir", out, "--out", tmp_path / "ev", "--json")
    assert res.exit_code == 0, res.output
    res = _run("index", "build", "-g", synth_ds, "--out", tmp_path / "idx", "--model-dir", out, "--json")
    assert res.exit_code == 0, res.output
    query = synth_ds / (synth_ds / "query.txt").read_text().split()[0]
    res = _run("search", query, "--index", tmp_path / "idx", "--model-dir", out, "-k", "1", "--json")
    assert res.exit_code == 0, res.output
    res = _run("embed", synth_ds / "images", "--model-dir", out, "--out", tmp_path / "g.jsonl", "--backend", "paddle")
    assert res.exit_code == 2 and "runs on onnxruntime" in res.stderr
    res = _run("embed", synth_ds / "images", "--model-dir", out, "--out", tmp_path / "g.jsonl", "--precision", "fp32")
    assert res.exit_code == 2 and "is int8: it cannot run at fp32" in res.stderr


def test_int8_of_the_index_model_counts_as_the_same_model(quantized, model_dir, other_model_dir, synth_ds, tmp_path):
    """An index built with the fp32 folder is searched and grown with its int8 folder (quantize
    records its source: the same weights) and the other way round; another model is refused."""
    out = quantized["out"]
    fp32_index, int8_index = tmp_path / "fp32", tmp_path / "int8"
    assert _run("index", "build", "-g", synth_ds, "--out", fp32_index, "--model-dir", model_dir).exit_code == 0
    assert _run("index", "build", "-g", synth_ds, "--out", int8_index, "--model-dir", out).exit_code == 0
    query = synth_ds / (synth_ds / "query.txt").read_text().split()[0]
    for index, model in ((fp32_index, out), (int8_index, model_dir)):
        res = _run("search", query, "--index", index, "--model-dir", model, "-k", "1", "--json")
        assert res.exit_code == 0 and not json.loads(res.stdout)["warnings"], res.output
    (tmp_path / "more.txt").write_text(f"{query} q\n")
    res = _run("index", "add", "--index", fp32_index, "-g", tmp_path / "more.txt", "--model-dir", out, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 1, res.output
    res = _run("search", query, "--index", int8_index, "--model-dir", other_model_dir)
    assert res.exit_code == 2 and "not comparable" in res.stderr


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> str:
    from imgfeat_cli.models.export import export_seeded

    out = str(tmp_path_factory.mktemp("other") / "seed1")
    export_seeded("PP-ShiTuV2_rec", out, seed=1)
    return out


def test_below_the_bar_is_refused_unless_forced(model_dir, calib, tmp_path):
    out = tmp_path / "int8"
    args = ("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16,
            "-o", "Quantize.min_mean_cosine=1.0")
    res = _run(*args, "--json")
    assert res.exit_code == 3, res.output
    assert "below 1.0: nothing written" in res.stderr and "--force" in res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [], "nothing left behind"
    doc = json.loads(res.stdout)  # --json: still one document, saying nothing was written
    assert doc["written"] is False and doc["bar"]["passed"] is False and "heldout_paths" not in doc
    res = _run(*args, "--force", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bar"] == {"min_mean_cosine": 1.0, "passed": False, "forced": True}
    assert json.loads((out / "quantize_report.json").read_text())["bar"]["forced"] is True


def _bad_images(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(20):
        (folder / f"x{i}.jpg").write_text("not an image")
    return folder


@pytest.mark.parametrize("case, code, needle", [
    ("missing calib", 2, "does not exist"),
    ("empty calib", 2, "holds 0 image(s)"),
    ("non-images", 2, "calibration image(s) could be read"),
    ("not a model", 1, "is not an inference model folder"),
    ("out under a file", 2, "is a file, not a folder"),
    ("calib-count 0", 2, "Quantize.calib_count"),
    ("out inside the model", 2, "inside it"),
    ("out not empty", 2, "exists and is not empty"),
    ("onnx folder", 2, "already an ONNX folder"),
    ("model is a file", 2, "is a file, not a folder"),
    ("model missing", 2, "does not exist"),
    ("out holds the model", 2, "holds the model folder"),
    ("out is the calib folder", 2, "is the calibration folder"),
    ("out is busy", 2, "another imgfeat quantize is writing"),
])
def test_hostile_inputs_are_one_line_errors(case, code, needle, model_dir, calib, quantized, tmp_path):
    images, model, out, extra = calib / "images", model_dir, tmp_path / "out", []
    if case == "missing calib":
        images = tmp_path / "nope"
    elif case == "empty calib":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "non-images":
        images = _bad_images(tmp_path)
    elif case == "not a model":
        model = calib
    elif case == "out under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "calib-count 0":
        extra = ["--calib-count", "0"]
    elif case == "out inside the model":
        out = Path(model_dir) / "int8"
    elif case == "out not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "onnx folder":
        model = quantized["out"]
    elif case == "model is a file":
        model = Path(model_dir) / "inference.yml"
    elif case == "model missing":
        model = tmp_path / "no-such-model"
    elif case == "out holds the model":
        out = Path(model_dir).parent
        extra = ["--overwrite"]  # would move the model into OUT.bak, and the next --overwrite delete it
    elif case == "out is the calib folder":
        out, extra = images, ["--overwrite"]
    lock = path_lock(out, timeout=0)
    if case == "out is busy":  # another quantize is writing it
        lock.acquire()
    try:
        res = _run("quantize", model, "--calib", images, "--out", out, *extra)
    finally:
        lock.release()
    assert res.exit_code == code, res.output
    assert needle in res.stderr and "Traceback" not in res.output
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]) == 1
    if case == "out not empty":
        assert (out / "keep.txt").read_text() == "mine"
    elif case == "non-images":
        assert res.stderr.count("x1") == 1, "the failed image is named once"
    elif case not in ("out under a file", "out holds the model", "out is the calib folder"):
        assert not out.exists()


def test_ctrl_c_leaves_no_output(model_dir, calib, tmp_path, monkeypatch):
    from imgfeat_cli.models import quantize as q

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(q, "quantize_graph", interrupted)
    out = tmp_path / "int8"
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16)
    assert res.exit_code == 130 and res.stderr.strip().splitlines()[-1] == "Error: interrupted (Ctrl-C)"
    assert list(tmp_path.iterdir()) == []


def _spy_graph(monkeypatch, before):
    """Run ``before(dest)`` when quantize starts writing the int8 graph."""
    from imgfeat_cli.models import quantize as q

    real = q.quantize_graph

    def spy(src, dest, *a, **k):
        before(dest)
        return real(src, dest, *a, **k)

    monkeypatch.setattr(q, "quantize_graph", spy)


def test_an_out_made_meanwhile_is_kept(model_dir, calib, tmp_path, monkeypatch):
    """Another program makes --out while quantize runs: without --overwrite it stays theirs."""
    out = tmp_path / "int8"

    def make_theirs(dest):
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")

    _spy_graph(monkeypatch, make_theirs)
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16,
               "-o", "Quantize.min_mean_cosine=0.5", "--quiet")
    assert res.exit_code == 2 and "exists and is not empty" in res.stderr, res.output
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and sorted(tmp_path.iterdir()) == [out]


def test_a_full_disk_names_the_output_and_leaves_nothing(model_dir, calib, tmp_path, monkeypatch):
    import errno

    import onnxruntime.quantization as ortq

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ortq, "quantize_static", full)
    out = tmp_path / "int8"
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16)
    assert res.exit_code == 1, res.output
    assert f"no space left on the device holding {out}" in res.stderr and "report it" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_conversion_gives_a_hint_quantize_can_use(model_dir, calib, tmp_path, monkeypatch):
    from imgfeat_cli.common.errors import ModelError
    from imgfeat_cli.pipeline import quantize as pq

    def broken(files, log):
        raise ModelError(f"paddle2onnx could not convert {files.folder}: fancy_op", hint="use --backend paddle")

    monkeypatch.setattr(pq, "convert_to_onnx", broken)
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", tmp_path / "q", "--calib-count", 16)
    assert res.exit_code == 1 and "fancy_op" in res.stderr, res.output
    assert "--backend" not in res.stderr, "quantize has no --backend option"
    assert list(tmp_path.iterdir()) == []


def test_quiet_prints_the_output_folder(quantized, model_dir, calib, tmp_path):
    out = tmp_path / "int8"
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16,
               "-o", "Quantize.min_mean_cosine=0.5", "--quiet")
    assert res.exit_code == 0 and res.stdout == f"{out}\n" and res.stderr == "", res.output


def test_folders_left_by_a_killed_quantize_are_cleaned_by_the_next(model_dir, calib, tmp_path):
    """kill -9 while the int8 folder is being written leaves its hidden temp folder beside --out;
    the next run removes the ones provably abandoned (their process is gone) and no other."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    out = tmp_path / "int8"
    repo = Path(__file__).resolve().parents[1]
    args = ["quantize", model_dir, "--calib", calib / "images", "--out", out, "--calib-count", 16,
            "-o", "Quantize.min_mean_cosine=0"]
    proc = subprocess.Popen([sys.executable, "-m", "imgfeat_cli", *map(str, args)],
                            env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".int8.")] and proc.poll() is None:
        assert time.monotonic() < deadline, "the temp folder never appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".int8.")]
    assert len(left) == 1 and not out.exists()
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]
    others = [tmp_path / f".int8.{host}-{os.getpid()}.alive", tmp_path / ".int8.another-host-1.theirs"]
    for folder in others:  # a live writer's, another machine's: not provably abandoned
        folder.mkdir()
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".int8.")) == sorted(p.name for p in others)


def test_progress_counts_the_images_there_are_and_follows_calibration(model_dir, calib, tmp_path):
    """The bar showed a total of 256 for 206 images and sat at "204/256" through calibration."""
    from imgfeat_cli.pipeline.quantize import TASK, quantize_model

    seen: dict = {}
    n = len(list((calib / "images").rglob("*.jpg")))
    res = quantize_model(model_dir, str(calib / "images"), str(tmp_path / "int8"), calib_count=256,
                         min_mean_cosine=0.0, progress=lambda task, done, total, extra="": seen.setdefault(
                             task, []).append((done, total)))
    assert n < 256 and seen[TASK][-1] == (n, n) and {t for _, t in seen[TASK]} == {n}
    calibrated = res.report["calibration_images"]
    assert seen["Calibrating"][0] == (0, calibrated) and seen["Calibrating"][-1] == (calibrated, calibrated)


def test_a_low_recall_agreement_is_a_warning_with_its_figure(quantized, model_dir, calib, tmp_path):
    """A recall@1 agreement of 0.324 passed without a word: below Quantize.warn_recall1_agreement
    the model is still written, with a warning saying what the figure means."""
    agreement = quantized["doc"]["heldout"]["recall1_agreement"]
    if agreement >= 1.0:
        pytest.skip("int8 kept every nearest neighbour of this model")
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", tmp_path / "int8", "--calib-count", 24,
               "-o", "Quantize.min_mean_cosine=0.9", "-o", "Quantize.warn_recall1_agreement=1")
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("Warning: recall@1 agreement")]
    assert len(warning) == 1 and f"{agreement:.3f}" in warning[0] and "nearest other image differs" in warning[0]
    res = _run("quantize", model_dir, "--calib", calib / "images", "--out", tmp_path / "int8b", "--calib-count", 24,
               "-o", "Quantize.min_mean_cosine=0.9", "-o", "Quantize.warn_recall1_agreement=0", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["warnings"] == [] and "Warning" not in res.stderr
