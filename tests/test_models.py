"""Architectures, weight loading, export and the two execution paths, against the upstream
reference fixtures in ../shared/fixtures (skipped with a reason when absent)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from imgfeat_cli import create_model, list_models
from imgfeat_cli.common.errors import ModelError, UsageError

FIXTURES = [("ppshituv2_rec_seed0", "PP-ShiTuV2_rec", None),
            ("clip_vit_base_tiny_seed0", "PP-ShiTuV2_rec_CLIP_vit_base", {"num_heads": 2}),
            ("clip_vit_large_tiny_seed0", "PP-ShiTuV2_rec_CLIP_vit_large", {"num_heads": 2})]


def _close(got: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
    assert got.shape == ref.shape
    diff = float(np.abs(got - ref).max())
    assert diff <= atol, f"max abs diff {diff} > {atol}"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_registry_names_and_errors():
    assert list_models() == ["PP-ShiTuV2_rec", "PP-ShiTuV2_rec_CLIP_vit_base", "PP-ShiTuV2_rec_CLIP_vit_large"]
    with pytest.raises(ModelError, match="unknown model 'PP-ShiTuV2_recc'") as info:
        create_model("PP-ShiTuV2_recc", weights="x.pdparams")
    assert info.value.hint == "did you mean PP-ShiTuV2_rec?"


@pytest.mark.parametrize("fixture,name,arch", FIXTURES)
def test_state_dict_names_and_shapes_match_upstream(fixture, name, arch):
    from imgfeat_cli.models.registry import build_model
    spec_file = shared_path("spec", f"state_dict_{name}.tsv")
    model = build_model(name, num_classes=159)
    mine = {k: list(v.shape) for k, v in model.state_dict().items()}
    upstream = {}
    for line in spec_file.read_text().splitlines():
        key, shape = line.split("\t")[:2]
        upstream[key] = [int(s) for s in shape.strip("[]").split(",")]
    assert mine == upstream


@pytest.mark.parametrize("fixture,name,arch", FIXTURES)
def test_dygraph_checkpoint_reproduces_features_raw(fixture, name, arch):
    d = shared_path("fixtures", fixture)
    model = create_model(name, weights=str(d / "checkpoint.pdparams"), arch=arch)
    _close(model.runner(np.load(d / "input.npy")), np.load(d / "features_raw.npy"))


@pytest.mark.parametrize("fixture,name,arch", FIXTURES)
def test_fixture_inference_folder_reproduces_features_inference(fixture, name, arch):
    d = shared_path("fixtures", fixture)
    model = create_model(model_dir=str(d / "inference"), backend="paddle")  # as PaddleX runs it
    assert model.name == name and model.backend.startswith("paddle-inference")
    got, ref = model.runner(np.load(d / "input.npy")), np.load(d / "features_inference.npy")
    # oneDNN sums in another order than upstream's run: 2e-4 absolute on values up to ~80
    _close(got, ref, atol=2e-4)
    assert _cos(got, ref).min() > 0.999999


@pytest.mark.slow
@pytest.mark.parametrize("fixture,name,arch", FIXTURES)
def test_own_export_reproduces_features_raw(fixture, name, arch, tmp_path):
    from imgfeat_cli.models.export import export_checkpoint
    d = shared_path("fixtures", fixture)
    res = export_checkpoint(name, str(d / "checkpoint.pdparams"), str(tmp_path / "inf"), arch=arch)
    assert set(res.files) >= {"inference.json", "inference.pdiparams", "inference.yml"}
    model = create_model(model_dir=res.model_dir)
    got, ref = model.runner(np.load(d / "input.npy")), np.load(d / "features_raw.npy")
    _close(got, ref, atol=2e-4)
    assert _cos(got, ref).min() > 0.999999
    # the yml is the official format: PaddleX reads model_name and the ops from it
    import yaml
    doc = yaml.safe_load((tmp_path / "inf" / "inference.yml").read_text())
    assert doc["Global"]["model_name"] == name and doc["PostProcess"] == {"NormalizeFeatures": None}


def test_reparameterisation_preserves_output():
    import paddle
    from imgfeat_cli.models.registry import build_model
    paddle.seed(3)
    model = build_model("PP-ShiTuV2_rec")
    # random BN statistics, so folding BN into the convs is really exercised
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer._mean.set_value(paddle.randn(layer._mean.shape) * 0.1)
            layer._variance.set_value(paddle.rand(layer._variance.shape) + 0.5)
    model.eval()
    x = paddle.randn([2, 3, 96, 96])
    with paddle.no_grad():
        before = model(x).numpy()
        model.reparameterize()
        after = model(x).numpy()
    assert np.abs(before - after).max() <= 1e-4 * max(1.0, np.abs(before).max())


def test_weight_loading_reports_problems(tmp_path):
    import paddle
    from imgfeat_cli.models.registry import build_model
    vit = build_model("PP-ShiTuV2_rec_CLIP_vit_base", arch={"embed_dim": 64, "depth": 1, "num_heads": 2})
    path = tmp_path / "vit.pdparams"
    paddle.save(vit.state_dict(), str(path))
    with pytest.raises(ModelError, match="no parameter name matches the model"):
        create_model("PP-ShiTuV2_rec", weights=str(path))
    bad = build_model("PP-ShiTuV2_rec").state_dict()
    bad["backbone.last_conv.weight"] = paddle.zeros([256, 1024, 1, 1])
    paddle.save(bad, str(path))
    with pytest.raises(ModelError, match=r"wrong shape, e.g. backbone.last_conv.weight is \[256, 1024, 1, 1\]"):
        create_model("PP-ShiTuV2_rec", weights=str(path))
    partial = {k: v for k, v in build_model("PP-ShiTuV2_rec").state_dict().items() if "stages.3" not in k}
    paddle.save(partial, str(path))
    with pytest.raises(ModelError, match="parameters are missing, e.g. backbone.stages.3"):
        create_model("PP-ShiTuV2_rec", weights=str(path))
    (tmp_path / "junk.pdparams").write_text("not a pickle")
    with pytest.raises(ModelError, match="not a readable .pdparams"):
        create_model("PP-ShiTuV2_rec", weights=str(tmp_path / "junk.pdparams"))
    with pytest.raises(UsageError, match="does not exist"):
        create_model("PP-ShiTuV2_rec", weights=str(tmp_path / "none.pdparams"))


def test_model_dir_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_model(model_dir=str(tmp_path / "nope"))
    (tmp_path / "inference.pdiparams").write_bytes(b"")
    with pytest.raises(ModelError, match=r"missing inference.json \(or inference.pdmodel\)"):
        create_model(model_dir=str(tmp_path))


def test_paddles_start_up_noise_stays_off_the_terminal():
    """"No ccache found" (import paddle, in any process that imports imgfeat first: inference
    streams, training workers, Ray actors) reached the terminal."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", "import imgfeat_cli.common.system, paddle"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(repo), "PATH": "/nonexistent"}, timeout=300)
    assert proc.returncode == 0 and "ccache" not in proc.stderr, proc.stderr


def test_loading_weights_without_a_head_says_nothing_paddle_would_repeat(recwarn):
    """A checkpoint without the classifier (a backbone, another dataset's) into a model that has
    one: load_into reports it; paddle's "Skip loading for head.fc.weight" warning leaked."""
    from imgfeat_cli.models.registry import get_spec
    from imgfeat_cli.models.weights import load_into

    spec = get_spec("PP-ShiTuV2_rec")
    with_head = spec.build(num_classes=4)
    state = {k: v for k, v in spec.build(num_classes=None).state_dict().items()}
    report = load_into(with_head, state, "backbone.pdparams")
    assert any(k.startswith("head.") for k in report.missing)
    assert not [w for w in recwarn if "Skip loading" in str(w.message)]
