"""``imgfeat train``: it learns, it resumes exactly, it checkpoints in PaddleX's layout, it fails clearly."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from imgfeat_cli.common.errors import Interrupted
from imgfeat_cli.datasets.synthetic import make_dataset

TINY = ["-o", "Train.pretrain_weight_path=none", "-o", "Train.input_size=32", "-o", "Train.batch_size=8",
        "-o", "Train.warmup_steps=1", "-o", "Train.learning_rate=0.02"]


@pytest.fixture
def tiny_ds(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    make_dataset(root, num_classes=4, per_class=8, size=32, seed=3, distinct_colours=True)
    return root


def _params(path: Path) -> dict:
    import paddle

    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def _untrained_recall1(dataset: Path, size: int) -> float:
    import paddle

    from imgfeat_cli.retrieval.evaluate import eval_dataset
    from imgfeat_cli.models import preprocess as pp
    from imgfeat_cli.models.runners import DygraphRunner
    from imgfeat_cli.pipeline.predictor import FeatureModel
    from imgfeat_cli.models.registry import build_model, inference_ops

    paddle.seed(0)
    ops = list(inference_ops("bilinear", size))
    layer = build_model("PP-ShiTuV2_rec")
    fm = FeatureModel("PP-ShiTuV2_rec", DygraphRunner(layer), pp.build(ops), ops, "untrained")
    return eval_dataset(str(dataset), fm, (1,), batch_size=32).metrics()["recall1"]


@pytest.mark.slow
def test_train_from_random_init_learns_and_writes_paddlex_layout(invoke, tmp_path):
    ds = tmp_path / "ds"
    make_dataset(ds, num_classes=4, per_class=32, size=64, seed=0, distinct_colours=True)
    out = tmp_path / "run"
    res = invoke("train", "--dataset", ds, "--output", out, "--epochs", "6", "--json",
                 "-o", "Train.pretrain_weight_path=none", "-o", "Train.input_size=64", "-o", "Train.batch_size=16",
                 "-o", "Train.learning_rate=0.02", "-o", "Train.warmup_steps=1", "-o", "Train.eval_interval=3",
                 "-o", "Train.save_interval=3")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    hist = doc["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.2, [h["loss"] for h in hist]
    assert [bool(h.get("metrics")) for h in hist] == [False, False, True, False, False, True]
    untrained = _untrained_recall1(ds, 64)
    assert doc["best_score"] >= untrained + 0.3, (untrained, doc["best_score"])

    # PaddleX layout and train_result.json shape
    for name in ("epoch_3", "epoch_6", "latest", "best_model"):
        for suffix in (".pdparams", ".pdopt", ".pdstates"):
            assert (out / name / f"{name}{suffix}").is_file(), (name, suffix)
        assert (out / name / "inference" / "inference.pdiparams").is_file()
    assert not (out / "epoch_1").exists()
    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] is True and result["model_name"] == "PP-ShiTuV2_rec"
    assert set(result["models"]) == {"best", "last_1", "last_2"}
    assert result["models"]["last_1"]["pdparams"] == "epoch_6/epoch_6.pdparams"
    assert result["models"]["best"]["score"] == doc["best_score"]
    for key in ("pdparams", "pdopt", "pdstates", "inference_config", "pdmodel", "pdiparams"):
        assert (out / result["models"]["best"][key]).is_file(), key
    cfg = (out / "config.yaml").read_text()
    assert "batch_size: 16" in cfg and "num_classes: 4" in cfg and "input_size: 64" in cfg
    log = (out / "train.log").read_text()
    assert "epoch 6/6 step 4/4" in log and "eval: recall1" in log

    # the exported best model scores what training measured, through paddle.inference
    res = invoke("eval", "--dataset", ds, "--model-dir", out / "best_model" / "inference", "--output",
                 tmp_path / "ev", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["recall1"] == pytest.approx(doc["best_score"], abs=1e-9)
    # and the checkpoint, run in dygraph, picks its training input size from the .pdstates
    res = invoke("eval", "--dataset", ds, "--weights", out / "best_model" / "best_model.pdparams", "--output",
                 tmp_path / "ev2", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["recall1"] == pytest.approx(doc["best_score"], abs=1 / 24 + 1e-9)


def test_ctrl_c_saves_latest_and_resume_reproduces_uninterrupted_run(invoke, tiny_ds, tmp_path):
    from imgfeat_cli.training.trainer import TrainOptions, run_train

    args = ["--epochs", "3", *TINY, "-o", "Train.eval_interval=10", "--quiet"]
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "a", *args)
    assert res.exit_code == 0, res.output

    # interrupt run b with a real SIGINT in the middle of epoch 2 (steps per epoch: 16 images / 8 = 2)
    def ctrl_c(global_step: int) -> bool:
        if global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return False

    opts = TrainOptions(str(tiny_ds), output=str(tmp_path / "b"), epochs=3, batch_size=8, learning_rate=0.02,
                        warmup_epochs=1, pretrain_weight_path="none", input_size=32, eval_interval=10)
    with pytest.raises(Interrupted, match="epoch 2, step 1 of 2"):
        run_train(opts, stop=ctrl_c)
    states = json.loads((tmp_path / "b" / "train_result.json").read_text())
    assert states["done_flag"] is False
    assert (tmp_path / "b" / "latest" / "latest.pdopt").is_file()

    # without --resume the folder is protected
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "b", *args)
    assert res.exit_code == 2 and "already holds a training run" in res.stderr and "--resume" in res.stderr

    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "b", "--resume", *args)
    assert res.exit_code == 0, res.output
    a, b = _params(tmp_path / "a" / "latest" / "latest.pdparams"), _params(tmp_path / "b" / "latest" / "latest.pdparams")
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0
    assert "resuming from" in (tmp_path / "b" / "train.log").read_text()


def test_resume_refuses_changed_settings(invoke, tiny_ds, tmp_path):
    out = tmp_path / "r"
    assert invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "1", *TINY, "--quiet").exit_code == 0
    res = invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "2", "--resume", *TINY,
                 "-o", "Train.batch_size=4", "--quiet")
    assert res.exit_code == 2
    assert "settings differ from the checkpoint (batch_size 8 -> 4)" in res.stderr


@pytest.mark.parametrize("extra, needle", [
    (["-o", "Train.batch_size=32"], "4 classes x 4 images per class = 16 < batch size 32"),
    (["-o", "Train.batch_size=10"], "batch size 10 is not a multiple of 4"),
    (["-o", "Train.num_classes=3"], "Train.num_classes is 3 but"),
    (["-o", "Train.epoch=3"], "did you mean Train.epochs_iters?"),
    (["-o", "Global.device=gpu:7"], "gpu:7"),
])
def test_train_usage_errors_exit_2(invoke, tiny_ds, tmp_path, extra, needle):
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "1", *TINY, *extra)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "o" / "latest").exists()


def test_train_dataset_errors(invoke, tiny_ds, tmp_path):
    res = invoke("train", "--dataset", tmp_path / "missing", "--output", tmp_path / "o")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    lines = (tiny_ds / "train.txt").read_text().splitlines()
    (tiny_ds / "train.txt").write_text("\n".join(lines + ["images/nothere.jpg 1"]) + "\n")
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY)
    assert res.exit_code == 1
    assert f"train.txt:{len(lines) + 1}: image images/nothere.jpg does not exist" in res.stderr


@pytest.mark.slow
def test_clip_recipe_trains_and_exports(tiny_ds, tmp_path):
    from imgfeat_cli.training.trainer import TrainOptions, run_train

    opts = TrainOptions(str(tiny_ds), model_name="PP-ShiTuV2_rec_CLIP_vit_base", output=str(tmp_path / "c"), epochs=1,
                        batch_size=8, learning_rate=0.001, warmup_epochs=0, pretrain_weight_path="none",
                        input_size=32, arch={"embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 16})
    res = run_train(opts)
    assert set(res.history[0]) >= {"loss", "arcface_ce", "metrics"}
    assert np.isfinite(res.history[0]["loss"])
    assert (tmp_path / "c" / "best_model" / "inference" / "inference.yml").is_file()
    from imgfeat_cli.pipeline.predictor import create_model

    model = create_model(model_dir=str(tmp_path / "c" / "best_model" / "inference"))
    feats = [r["res"]["feature"] for r in model.predict(str(tiny_ds / "images"), batch_size=4)]
    assert len(feats) == 32 and feats[0].shape == (512,)


def _cuda_count() -> int:
    import paddle

    return paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["gpu:0", "gpu:0,1"])
def test_train_on_gpu(invoke, tiny_ds, tmp_path, devices):
    need = len(devices.split(":")[1].split(","))
    have = _cuda_count()
    if have < need:
        pytest.skip(f"needs {need} CUDA GPU(s) and a paddlepaddle-gpu build; this machine has {have}")
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "g", "--epochs", "2", "--device", devices,
                 *TINY, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["epochs_done"] == 2 and (tmp_path / "g" / "best_model" / "inference" / "inference.pdiparams").is_file()


def test_resume_path_accepts_folder_file_or_prefix(tmp_path):
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.training.checkpoint import resolve_resume

    ck = tmp_path / "latest"
    ck.mkdir()
    for suffix in (".pdparams", ".pdopt", ".pdstates"):
        (ck / f"latest{suffix}").write_bytes(b"x")
    for given in (ck, ck / "latest.pdparams", ck / "latest"):
        assert resolve_resume(str(given)) == ck / "latest"
    (ck / "latest.pdopt").unlink()
    with pytest.raises(UsageError, match="latest.pdopt not found"):
        resolve_resume(str(ck))
