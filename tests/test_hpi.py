"""High-performance inference: every backend within the accuracy bar, refusals, auto selection."""
from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.models import backends as hpi
from conftest import make_photos, shared_path

FIXTURES = ["ppshituv2_rec_seed0", "clip_vit_base_tiny_seed0", "clip_vit_large_tiny_seed0"]


def _norm(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _copy_inference(name: str, dest: Path) -> Path:
    """A writable copy, so conversions never write into ../shared."""
    src = shared_path("fixtures", name, "inference")
    shutil.copytree(src, dest)
    for p in [dest, *dest.iterdir()]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dest


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGFEAT_HOME", str(tmp_path / "home"))


def _combos() -> list:
    out = [("paddle", "fp32"), ("onnxruntime", "fp32")]
    if hpi.native_bf16():
        out.append(("paddle", "bf16"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_backend_meets_the_accuracy_bar(tmp_path, fixture):
    from imgfeat_cli import create_model

    if not hpi.onnxruntime_available():
        pytest.skip("onnxruntime/paddle2onnx not installed (pip install -e '.[hpi]')")
    folder = _copy_inference(fixture, tmp_path / "inference")
    x = np.load(shared_path("fixtures", fixture, "input.npy"))
    ref = _norm(create_model(model_dir=str(folder)).runner(x))
    upstream = _norm(np.load(shared_path("fixtures", fixture, "features_inference.npy")))
    for backend, precision in _combos():
        model = create_model(model_dir=str(folder), backend=backend, precision=precision)
        assert model.precision == precision
        got = _norm(model.runner(x))
        bar = hpi.COSINE_BAR[precision]
        assert (got * ref).sum(1).min() >= bar, (backend, precision)
        assert (got * upstream).sum(1).min() >= bar, (backend, precision)
    assert list((folder / ".imgfeat").glob("model-*.onnx")), "the conversion is cached next to the folder"


def test_bf16_refused_without_native_support(monkeypatch, invoke, tmp_path):
    monkeypatch.setattr(hpi, "native_bf16", lambda: False)
    with pytest.raises(UsageError, match="no native bf16"):
        hpi.validate("paddle", "bf16", "cpu")
    folder = _copy_inference("ppshituv2_rec_seed0", tmp_path / "inference")
    make_photos(tmp_path / "img", [(32, 32)], seed=0)
    res = invoke("embed", tmp_path / "img", "--model-dir", folder, "--precision", "bf16", "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 2, res.output
    assert "no native bf16" in res.stderr and "--hpi" in res.stderr
    assert not (tmp_path / "f.jsonl").exists()
    # candidates for auto leave bf16 out instead of failing
    assert ("paddle", "bf16") not in [(c.backend, c.precision) for c in hpi.candidates("cpu")]


@pytest.mark.parametrize("backend, precision, needle", [
    ("paddle", "fp16", "fp16 is a GPU precision"),
    ("onnxruntime", "bf16", "bf16 runs on the paddle backend"),
    ("tensorrt", "fp32", "unknown backend 'tensorrt'"),
    ("paddle", "int4", "unknown precision 'int4'"),
])
def test_bad_combinations_are_refused(backend, precision, needle):
    with pytest.raises(UsageError, match=needle):
        hpi.validate(backend, precision, "cpu")


def test_missing_onnxruntime_says_how_to_install(monkeypatch):
    monkeypatch.setattr(hpi, "onnxruntime_available", lambda: False)
    with pytest.raises(UsageError) as err:
        hpi.validate("onnxruntime", "fp32", "cpu")
    assert "imgfeat[hpi]" in (err.value.hint or "")
    assert all(c.backend == "paddle" for c in hpi.candidates("cpu"))


def test_checkpoints_cannot_take_hpi_backends(tmp_path):
    from imgfeat_cli import create_model

    with pytest.raises(ModelError, match="inference folders, not .pdparams"):
        create_model("PP-ShiTuV2_rec", weights=str(tmp_path / "x.pdparams"), backend="onnxruntime")
    with pytest.raises(ModelError, match="unknown hpi_config keys: turbo"):
        create_model(model_dir=str(tmp_path), use_hpip=True, hpi_config={"turbo": True})


@pytest.mark.slow
def test_hpi_auto_picks_a_measured_backend_and_caches_the_choice(invoke, tmp_path, monkeypatch):
    folder = _copy_inference("ppshituv2_rec_seed0", tmp_path / "inference")
    images = shared_path("data", "drink_dataset_v1.0", "test_images")
    res = invoke("embed", images, "--model-dir", folder, "--out", tmp_path / "a.jsonl", "--hpi", "--json",
                 "-b", "4")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    memo = list((tmp_path / "home" / "hpi").glob("*.json"))
    assert len(memo) == 1
    measured = json.loads(memo[0].read_text())
    assert doc["precision"] == measured["precision"]
    assert {m["backend"] + " " + m["precision"] for m in measured["measurements"]} >= {"paddle fp32"}
    winner = [m for m in measured["measurements"] if m["within_bar"]]
    assert max(winner, key=lambda m: m["images_per_s"])["precision"] == measured["precision"]
    # the features agree with the default backend within the bar
    res = invoke("embed", images, "--model-dir", folder, "--out", tmp_path / "b.jsonl", "--json", "-b", "4")
    assert res.exit_code == 0, res.output
    a = {json.loads(ln)["input_path"]: json.loads(ln)["feature"] for ln in open(tmp_path / "a.jsonl")}
    b = {json.loads(ln)["input_path"]: json.loads(ln)["feature"] for ln in open(tmp_path / "b.jsonl")}
    cos = [float(np.dot(a[k], b[k])) for k in a]
    assert min(cos) >= hpi.COSINE_BAR[measured["precision"]]
    # a second run reads the cached decision instead of measuring again
    from imgfeat_cli import create_model

    def no_measuring(*a, **k):
        raise AssertionError("measured again despite the cached decision")

    monkeypatch.setattr(hpi, "measure", no_measuring)
    model = create_model(model_dir=str(folder), use_hpip=True, hpi_config={"batch_size": 4})
    assert model.precision == measured["precision"]


def test_read_only_model_folder_converts_into_the_cache(tmp_path):
    folder = _copy_inference("ppshituv2_rec_seed0", tmp_path / "inference")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        from imgfeat_cli.models.registry import find_inference_files

        prog, params = find_inference_files(folder)
        path = hpi.onnx_path(folder, prog, params)
        assert str(path).startswith(str(tmp_path / "home")) and path.name.startswith("model-")
    finally:
        folder.chmod(stat.S_IRWXU)
