"""Engines: every backend within the accuracy bar, the default (the fastest exact engine) and its
cached decision, the fallback to paddle, refusals. On the project-built models; the upstream
parity test alone reads ../shared."""
from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photos, shared_path
from imgfeat_cli import create_model
from imgfeat_cli.common.errors import ModelError, UsageError
from imgfeat_cli.models import autoselect, engines
from imgfeat_cli.models.files import find_inference_files
from imgfeat_cli.models.onnx import onnx_path
from imgfeat_cli.models.openvino import openvino_available

MODELS = ["PP-ShiTuV2_rec", "PP-ShiTuV2_rec_CLIP_vit_base", "PP-ShiTuV2_rec_CLIP_vit_large"]
needs_openvino = pytest.mark.skipif(not openvino_available(), reason='OpenVINO not installed (pip install "imgfeat[openvino]")')


def _norm(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _copy(src: str, dest: Path) -> Path:
    """A writable copy without earlier conversions, so each test sees a fresh folder."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".imgfeat"))
    for p in [dest, *dest.iterdir()]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dest


def _batch(model, n: int = 6) -> np.ndarray:
    """Image-like inputs through the model's own pre-processing."""
    return np.stack([model.preprocessor(img) for img in autoselect.sample_images(n, seed=3)])


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGFEAT_HOME", str(tmp_path / "home"))


def _fp32_engines() -> list:
    return ["paddle", "onnxruntime"] + (["openvino"] if openvino_available() else [])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_fp32_engine_meets_the_bar_and_features_vary(built_models, tmp_path, name):
    folder = _copy(built_models[name], tmp_path / "m")
    ref_model = create_model(model_dir=str(folder), backend="paddle")
    x = _batch(ref_model)
    ref = _norm(ref_model.runner(x))
    assert (ref @ ref.T)[np.triu_indices(len(x), 1)].min() < 0.999, "the fixture's features depend on the input"
    for backend in _fp32_engines():
        model = create_model(model_dir=str(folder), backend=backend, precision="fp32")
        assert model.precision == "fp32" and model.backend.startswith(backend.replace("paddle", "paddle-inference"))
        assert (_norm(model.runner(x)) * ref).sum(1).min() >= engines.COSINE_BAR["fp32"], backend
    assert list((folder / ".imgfeat").glob("model-*.onnx")), "the conversion is cached next to the folder"


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["ppshituv2_rec_seed0", "clip_vit_base_tiny_seed0"])
def test_every_engine_reproduces_upstream_features(tmp_path, fixture):
    """Upstream parity: the reference fixtures' own inference features, on every engine."""
    folder = _copy(str(shared_path("fixtures", fixture, "inference")), tmp_path / "inference")
    x = np.load(shared_path("fixtures", fixture, "input.npy"))
    upstream = _norm(np.load(shared_path("fixtures", fixture, "features_inference.npy")))
    for backend in _fp32_engines():
        got = _norm(create_model(model_dir=str(folder), backend=backend).runner(x))
        assert (got * upstream).sum(1).min() >= engines.COSINE_BAR["fp32"], backend


@pytest.mark.slow
def test_default_is_an_exact_engine_decided_once(built_models, tmp_path, monkeypatch):
    folder = _copy(built_models["PP-ShiTuV2_rec"], tmp_path / "m")
    said: list = []
    model = create_model(model_dir=str(folder), log=said.append, hpi_config={"batch_size": 4})
    assert model.precision == "fp32" and model.recipe["backend"] in ("paddle", "onnxruntime", "openvino")
    x = _batch(model)
    ref = _norm(create_model(model_dir=str(folder), backend="paddle").runner(x))
    assert (_norm(model.runner(x)) * ref).sum(1).min() >= engines.COSINE_BAR["fp32"]
    assert any("converting" in m for m in said), "the first conversion says so"
    memo = [json.loads(p.read_text()) for p in (tmp_path / "home" / "hpi").glob("*.json")]
    assert len(memo) == 1 and memo[0]["backend"] == model.recipe["backend"]
    measured = {m["backend"]: m for m in memo[0]["measurements"]}
    assert {"paddle", "onnxruntime"} <= set(measured)
    assert measured[memo[0]["backend"]]["min_cosine"] >= engines.COSINE_BAR["fp32"]

    def no_measuring(*a, **k):
        raise AssertionError("measured again despite the cached decision")

    monkeypatch.setattr(autoselect, "_measure", no_measuring)
    again = create_model(model_dir=str(folder), hpi_config={"batch_size": 4})
    assert again.recipe["backend"] == model.recipe["backend"]
    # another machine (CPU model) or library version is another decision
    monkeypatch.setattr(autoselect, "cpu_model", lambda: "Another CPU")
    with pytest.raises(AssertionError, match="measured again"):
        create_model(model_dir=str(folder), hpi_config={"batch_size": 4})


def test_the_favourite_is_kept_unless_another_engine_is_clearly_faster(monkeypatch, model_dir):
    """The decision rule alone: round times are given, no clock is read."""
    fav, other = engines.HpiChoice("onnxruntime", "fp32"), engines.HpiChoice("paddle", "fp32")
    files = find_inference_files(Path(model_dir))

    class Fake:
        def __call__(self, batch):
            return np.ones((len(batch), 4), np.float32)

    monkeypatch.setattr(autoselect, "make_runner", lambda *a, **k: Fake())
    monkeypatch.setattr(autoselect, "_usable_pool", lambda files, pool, log: pool)
    for other_s, winner in ((0.95, fav), (0.70, other)):
        monkeypatch.setattr(autoselect, "_rounds", lambda live, batch, o=other_s: {
            fav: [1.0, 1.2, 1.0], other: [o, 1.2 * o, o]})
        choice, _, doc = autoselect._measure(files, None, 2, 2, lambda img: np.zeros((3, 8, 8), np.float32),
                                             [other, fav], lambda m: None)
        assert choice.key == winner.key and doc["favourite"] == "onnxruntime fp32"


@pytest.mark.slow
def test_default_falls_back_to_paddle_when_conversion_fails(built_models, tmp_path, monkeypatch, invoke):
    import imgfeat_cli.models.onnx as onnx  # the conversion runs in a child process: break it there

    monkeypatch.setattr(onnx, "_CONVERT", "raise RuntimeError(\"Oops: unsupported op 'fancy_op'\")")
    folder = _copy(built_models["PP-ShiTuV2_rec"], tmp_path / "m")
    make_photos(tmp_path / "img", [(40, 40)] * 3, seed=0)
    res = invoke("embed", tmp_path / "img", "--model-dir", folder, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 0, res.output
    assert "paddle-inference (oneDNN) fp32 on cpu" in res.stdout, "the summary names the engine that ran"
    lines = [ln for ln in res.stderr.splitlines() if "fancy_op" in ln]
    assert len(lines) == 1 and "paddle2onnx could not convert" in lines[0] and "running paddle instead" in lines[0]
    assert not (folder / ".imgfeat").exists(), "no half-converted file (nor an empty .imgfeat/) is left"
    with pytest.warns(RuntimeWarning, match="fancy_op"):
        assert create_model(model_dir=str(folder)).backend.startswith("paddle-inference")


def test_backend_paddle_converts_nothing(built_models, tmp_path):
    folder = _copy(built_models["PP-ShiTuV2_rec"], tmp_path / "m")
    model = create_model(model_dir=str(folder), backend="paddle")
    assert model.backend == "paddle-inference (oneDNN)" and model.precision == "fp32"
    assert not (folder / ".imgfeat").exists() and not (tmp_path / "home" / "hpi").exists()


def test_bf16_refused_without_native_support(monkeypatch, invoke, tmp_path, model_dir):
    monkeypatch.setattr(engines, "native_bf16", lambda: False)
    with pytest.raises(UsageError, match="no native bf16"):
        engines.validate("paddle", "bf16", "cpu")
    with pytest.raises(UsageError, match="no native bf16"):
        engines.validate("openvino", "bf16", "cpu")
    make_photos(tmp_path / "img", [(32, 32)], seed=0)
    res = invoke("embed", tmp_path / "img", "--model-dir", model_dir, "--precision", "bf16", "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 2, res.output
    assert "no native bf16" in res.stderr and "--hpi" in res.stderr
    assert not (tmp_path / "f.jsonl").exists()
    files = find_inference_files(Path(model_dir))
    assert all(c.precision != "bf16" for c in engines.candidates("cpu", files)), "auto leaves bf16 out"


@pytest.mark.parametrize("backend, precision, needle", [
    ("paddle", "fp16", "fp16 is a GPU precision"),
    ("onnxruntime", "bf16", "bf16 runs on the paddle .oneDNN. and openvino backends"),
    ("tensorrt", "fp32", "unknown backend 'tensorrt'"),
    ("paddle", "int4", "unknown precision 'int4'"),
])
def test_bad_combinations_are_refused(backend, precision, needle):
    with pytest.raises(UsageError, match=needle):
        engines.validate(backend, precision, "cpu")


def test_int8_needs_a_quantized_folder(model_dir):
    with pytest.raises(UsageError, match="int8 runs a folder made by imgfeat quantize"):
        create_model(model_dir=model_dir, precision="int8")


def test_missing_onnxruntime_says_how_to_install(monkeypatch, model_dir):
    from imgfeat_cli.models import onnx

    monkeypatch.setattr(onnx, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(engines, "onnxruntime_available", lambda: False)
    with pytest.raises(UsageError) as err:
        engines.validate("onnxruntime", "fp32", "cpu")
    assert "pip install onnxruntime paddle2onnx" in (err.value.hint or "")
    files = find_inference_files(Path(model_dir))
    assert {c.backend for c in engines.candidates("cpu", files)} <= {"paddle", "openvino"}


def test_checkpoints_cannot_take_hpi_backends(tmp_path):
    with pytest.raises(UsageError, match="checkpoint runs on paddle fp32 only") as exc:  # one rule, one type
        create_model("PP-ShiTuV2_rec", weights=str(tmp_path / "x.pdparams"), backend="onnxruntime")
    assert exc.value.exit_code == 2
    with pytest.raises(ModelError, match="unknown hpi_config keys: turbo"):
        create_model(model_dir=str(tmp_path), use_hpip=True, hpi_config={"turbo": True})


@pytest.mark.slow
def test_hpi_cli_auto_caches_and_agrees_with_paddle(invoke, tmp_path, built_models):
    folder = _copy(built_models["PP-ShiTuV2_rec"], tmp_path / "m")
    images = make_photos(tmp_path / "img", [(60, 50 + i) for i in range(5)], seed=2)
    res = invoke("embed", images, "--model-dir", folder, "--out", tmp_path / "a.jsonl", "--hpi", "--json", "-b", "4")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    memo = [json.loads(p.read_text()) for p in (tmp_path / "home" / "hpi").glob("*.json")]
    assert len(memo) == 1 and doc["precision"] == memo[0]["precision"]
    res = invoke("embed", images, "--model-dir", folder, "--out", tmp_path / "b.jsonl", "--json", "--backend", "paddle")
    assert res.exit_code == 0, res.output
    a = {json.loads(ln)["input_path"]: json.loads(ln)["feature"] for ln in open(tmp_path / "a.jsonl")}
    b = {json.loads(ln)["input_path"]: json.loads(ln)["feature"] for ln in open(tmp_path / "b.jsonl")}
    assert min(float(np.dot(a[k], b[k])) for k in a) >= engines.COSINE_BAR[memo[0]["precision"]]


def test_resume_may_switch_between_exact_engines_only(invoke, tmp_path, model_dir):
    images = make_photos(tmp_path / "img", [(40, 40)] * 3, seed=4)
    out = tmp_path / "f.jsonl"
    assert invoke("embed", images, "--model-dir", model_dir, "--out", out, "--backend", "paddle", "-q").exit_code == 0
    res = invoke("embed", images, "--model-dir", model_dir, "--out", out, "--backend", "onnxruntime", "--resume", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["already_done"] == 3, res.output
    stored = {"name": "PP-ShiTuV2_rec", "sha256": "x", "backend": "paddle-inference (oneDNN)", "precision": "fp32"}
    assert engines.same_features(stored, {**stored, "backend": "openvino (CPU)"})
    assert not engines.same_features(stored, {**stored, "precision": "bf16", "backend": "openvino (CPU)"})
    assert not engines.same_features(stored, {**stored, "sha256": "y"})


def test_read_only_model_folder_converts_into_the_cache(tmp_path, built_models):
    folder = _copy(built_models["PP-ShiTuV2_rec"], tmp_path / "m")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        path = onnx_path(find_inference_files(folder))
        assert str(path).startswith(str(tmp_path / "home")) and path.name.startswith("model-")
    finally:
        folder.chmod(stat.S_IRWXU)


@needs_openvino
def test_openvino_refuses_what_it_cannot_run(tmp_path, model_dir):
    with pytest.raises(UsageError, match="runs on CPU"):
        engines.validate("openvino", "fp32", "gpu")
    with pytest.raises(UsageError, match="fp16 runs on the paddle backend"):
        engines.validate("openvino", "fp16", "gpu")
    onnx_only = tmp_path / "q"
    onnx_only.mkdir()
    (onnx_only / "inference.onnx").write_bytes(b"not a graph")
    with pytest.raises(UsageError, match="runs on onnxruntime"):
        engines.validate("openvino", "fp32", "cpu", find_inference_files(onnx_only))


def test_openvino_missing_says_how_to_install(monkeypatch):
    from imgfeat_cli.models import openvino

    monkeypatch.setattr(openvino, "openvino_available", lambda: False)
    monkeypatch.setattr(engines, "need_openvino", openvino.need_openvino)
    with pytest.raises(UsageError) as err:
        engines.validate("openvino", "fp32", "cpu")
    assert "pip install openvino" in (err.value.hint or "")


@pytest.mark.parametrize("content", ["garbage{{", "", "[1, 2]", '{"backend": 5}', '"str"', "FIFO", "DIR"])
def test_a_broken_engine_memo_is_measured_again_never_trusted_or_waited_on(tmp_path, content):
    """A memo that is garbage, empty, the wrong shape, a folder, or a FIFO (whose read would block
    for ever) reads as no decision."""
    import os
    import threading

    memo = tmp_path / "memo.json"
    if content == "FIFO":
        os.mkfifo(memo)
    elif content == "DIR":
        memo.mkdir()
    else:
        memo.write_text(content)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(autoselect._read_memo(memo)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader before failing
        os.close(os.open(memo, os.O_WRONLY | os.O_NONBLOCK))
    assert got == [None]


def test_a_model_path_that_is_a_file_says_so(tmp_path):
    (tmp_path / "inference.pdiparams").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file, not a folder"):
        create_model(model_dir=str(tmp_path / "inference.pdiparams"))
