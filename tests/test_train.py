"""``imgfeat train``: it learns, it resumes exactly, it checkpoints in PaddleX's layout, it fails clearly."""
from __future__ import annotations

import json
import os
import shlex
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


def _differing(a: Path, b: Path) -> list:
    """Names of the tensors that are not bit-identical in two .pdparams files."""
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    return [k for k in pa if not np.array_equal(pa[k], pb[k])]


REF_ARGS = ["--epochs", "3", *TINY, "-o", "Train.eval_interval=10", "--quiet"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> dict:
    """One uninterrupted 3-epoch run (epoch_1..3, latest, best_model evaluated at epoch 3) that
    resume tests compare against and failure tests try to destroy (on copies)."""
    from typer.testing import CliRunner

    from imgfeat_cli.cli.app import app

    base = tmp_path_factory.mktemp("ref")
    ds = base / "tiny"
    make_dataset(ds, num_classes=4, per_class=8, size=32, seed=3, distinct_colours=True)
    out = base / "run"
    res = CliRunner().invoke(app, ["train", "--dataset", str(ds), "--output", str(out), *REF_ARGS[:-1], "--json"])
    assert res.exit_code == 0, res.output
    return {"ds": ds, "out": out, "doc": json.loads(res.stdout)}


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: a run is intact when this does not change."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_run(ref: dict, dest: Path) -> Path:
    import shutil

    shutil.copytree(ref["out"], dest)
    return dest


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_train_from_random_init_learns_and_writes_paddlex_layout(invoke, tmp_path):
    """The loss falls: the last epoch's at least 0.2 below the first's. Measured (issue 21) on an
    AMD Zen 5 with AVX-512 (avx512f/bw/vl/vnni/bf16, 2 cores), paddle 3.3.1, opencv 5.1, as this run
    with Train.seed 0-7 (seeds 0 and 3 also on 1 thread: identical to 2 threads): the fall was
    0.49-1.05, so 0.2 keeps a margin of 2.4x. The earlier setting (6 epochs at lr 0.02, threshold
    0.2) fell by 0.16-0.69 over seeds 0-5, and the same 12 epochs at lr 0.02 by 0.08 for one seed.
    Held-out Recall@1 is no learning signal at this size: against the untrained network (whose
    random features already separate these colours: 0.46-0.75) the best epoch moved it by
    -0.42..+0.21 over the same seeds, so recall is held to consistency (what eval of the export
    reports) instead of a threshold."""
    ds = tmp_path / "ds"
    make_dataset(ds, num_classes=4, per_class=32, size=64, seed=0, distinct_colours=True)
    out = tmp_path / "run"
    res = invoke("train", "--dataset", ds, "--output", out, "--epochs", "12", "--json",
                 "-o", "Train.pretrain_weight_path=none", "-o", "Train.input_size=64", "-o", "Train.batch_size=16",
                 "-o", "Train.learning_rate=0.01", "-o", "Train.warmup_steps=1", "-o", "Train.eval_interval=6",
                 "-o", "Train.save_interval=6")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    hist = doc["history"]
    assert [h["epoch"] for h in hist] == list(range(1, 13))
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.2, [h["loss"] for h in hist]
    assert [bool(h.get("metrics")) for h in hist] == [e in (6, 12) for e in range(1, 13)]
    assert 0 <= doc["best_score"] <= 1

    # PaddleX layout and train_result.json shape
    for name in ("epoch_6", "epoch_12", "latest", "best_model"):
        for suffix in (".pdparams", ".pdopt", ".pdstates"):
            assert (out / name / f"{name}{suffix}").is_file(), (name, suffix)
        assert (out / name / "inference" / "inference.pdiparams").is_file()
    assert not (out / "epoch_1").exists()
    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] is True and result["model_name"] == "PP-ShiTuV2_rec"
    assert set(result["models"]) == {"best", "last_1", "last_2"}
    assert result["models"]["last_1"]["pdparams"] == "epoch_12/epoch_12.pdparams"
    assert result["models"]["best"]["score"] == doc["best_score"]
    for key in ("pdparams", "pdopt", "pdstates", "inference_config", "pdmodel", "pdiparams"):
        assert (out / result["models"]["best"][key]).is_file(), key
    cfg = (out / "config.yaml").read_text()
    assert "batch_size: 16" in cfg and "num_classes: 4" in cfg and "input_size: 64" in cfg
    log = (out / "train.log").read_text()
    assert "epoch 12/12 step 4/4" in log and "eval: recall1" in log

    # the exported best model scores what training measured, through paddle.inference
    res = invoke("eval", "--dataset", ds, "--model-dir", out / "best_model" / "inference", "--output",
                 tmp_path / "ev", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["recall1"] == pytest.approx(doc["best_score"], abs=1e-9)
    # and eval of the checkpoint gives that same figure, exactly: it scores the export made from it
    res = invoke("eval", "--dataset", ds, "--weights", out / "best_model" / "best_model.pdparams", "--output",
                 tmp_path / "ev2", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["recall1"] == doc["best_score"]


def test_ctrl_c_saves_latest_and_resume_reproduces_uninterrupted_run(invoke, ref, tmp_path):
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.run import run_train

    # interrupt run b with a real SIGINT in the middle of epoch 2 (steps per epoch: 16 images / 8 = 2)
    def ctrl_c(global_step: int) -> bool:
        if global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return False

    opts = TrainOptions(str(ref["ds"]), output=str(tmp_path / "b"), epochs=3, batch_size=8, learning_rate=0.02,
                        warmup_epochs=1, pretrain_weight_path="none", input_size=32, eval_interval=10)
    with pytest.raises(Interrupted, match="epoch 2, step 1 of 2") as interrupted:
        run_train(opts, stop=ctrl_c)
    hint = interrupted.value.hint or ""
    assert hint.startswith("continue with: imgfeat train ") and "config.yaml" in hint
    states = json.loads((tmp_path / "b" / "train_result.json").read_text())
    assert states["done_flag"] is False
    assert (tmp_path / "b" / "latest" / "latest.pdopt").is_file()

    # without --resume the folder is protected
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "b", *REF_ARGS)
    assert res.exit_code == 2 and "already holds a training run" in res.stderr and "--resume" in res.stderr

    # the hint's command, as printed, resumes with the run's own settings (no flag to repeat)
    res = invoke(*shlex.split(hint.split("imgfeat ", 1)[1]), "--quiet")
    assert res.exit_code == 0, res.output
    assert _differing(ref["out"] / "latest" / "latest.pdparams", tmp_path / "b" / "latest" / "latest.pdparams") == []
    assert "resuming from" in (tmp_path / "b" / "train.log").read_text()


def test_resume_after_an_epoch_boundary_is_exact(invoke, ref, tmp_path):
    """Interrupted right after epoch 1 (a Ctrl-C during its last step): the resumed run draws epoch
    2's batches, not epoch 1's again."""
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.run import run_train

    opts = TrainOptions(str(ref["ds"]), output=str(tmp_path / "e"), epochs=3, batch_size=8, learning_rate=0.02,
                        warmup_epochs=1, pretrain_weight_path="none", input_size=32, eval_interval=10)
    with pytest.raises(Interrupted, match="interrupted after epoch 1"):
        run_train(opts, stop=lambda global_step: global_step == 2)
    assert _differing(ref["out"] / "epoch_1" / "epoch_1.pdparams", tmp_path / "e" / "latest" / "latest.pdparams") == []
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "e", "--resume", *REF_ARGS)
    assert res.exit_code == 0, res.output
    assert _differing(ref["out"] / "latest" / "latest.pdparams", tmp_path / "e" / "latest" / "latest.pdparams") == []


@pytest.mark.slow
def test_resume_path_from_any_epoch_checkpoint_is_exact(invoke, ref, tmp_path):
    """``-o Train.resume_path=OUT/epoch_N`` in the folder, .pdparams and prefix forms; also a
    checkpoint written before the sampler state was kept at epoch ends (``epoch_sampler: None``)."""
    import paddle

    want = ref["out"] / "latest" / "latest.pdparams"
    # the run's own folder: its later checkpoints would be replaced, so --overwrite is required
    out = _copy_run(ref, tmp_path / "same")
    res = invoke("train", "--dataset", ref["ds"], "--output", out, "-o", f"Train.resume_path={out / 'epoch_1'}",
                 *REF_ARGS)
    assert res.exit_code == 2 and "would replace its checkpoints" in res.stderr and "--overwrite" in res.stderr
    res = invoke("train", "--dataset", ref["ds"], "--output", out, "-o", f"Train.resume_path={out / 'epoch_1'}",
                 "--overwrite", *REF_ARGS)
    assert res.exit_code == 0, res.output
    assert _differing(want, out / "latest" / "latest.pdparams") == []
    assert not (out / ".previous-run").exists() and (out / "train.log.bak").is_file()

    # an old-style checkpoint, given as its .pdparams
    old = tmp_path / "old" / "epoch_2"
    import shutil

    shutil.copytree(ref["out"] / "epoch_2", old)
    states = paddle.load(str(old / "epoch_2.pdstates"))
    states.pop("digests")
    paddle.save({**states, "epoch_sampler": None}, str(old / "epoch_2.pdstates"))
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "o2",
                 "-o", f"Train.resume_path={old / 'epoch_2.pdparams'}", *REF_ARGS)
    assert res.exit_code == 0, res.output
    assert _differing(want, tmp_path / "o2" / "latest" / "latest.pdparams") == []

    # the prefix form
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "o3",
                 "-o", f"Train.resume_path={ref['out'] / 'epoch_2' / 'epoch_2'}", *REF_ARGS)
    assert res.exit_code == 0, res.output
    assert _differing(want, tmp_path / "o3" / "latest" / "latest.pdparams") == []


def test_resume_refuses_changed_settings(invoke, tiny_ds, tmp_path):
    out = tmp_path / "r"
    assert invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "1", *TINY, "--quiet").exit_code == 0
    res = invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "2", "--resume", *TINY,
                 "-o", "Train.batch_size=4", "--quiet")
    assert res.exit_code == 2
    assert "settings differ from the checkpoint (batch_size 8 -> 4)" in res.stderr
    assert f"imgfeat train -c {out / 'config.yaml'} --resume" in res.stderr


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
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.run import run_train

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


# --- --overwrite: validate everything first, keep the old run until the new one has a checkpoint ---

def _vit_weights(path: Path) -> Path:
    import paddle

    from imgfeat_cli.models.registry import build_model

    vit = build_model("PP-ShiTuV2_rec_CLIP_vit_base", arch={"embed_dim": 64, "depth": 1, "num_heads": 2})
    paddle.save(vit.state_dict(), str(path))
    return path


def _break_dataset(ds: Path, tmp_path: Path) -> Path:
    import shutil

    bad = tmp_path / "bad_ds"
    shutil.copytree(ds, bad)
    with open(bad / "train.txt", "a", encoding="utf-8") as fh:
        fh.write("images/nothere.jpg 1\n")
    return bad


@pytest.mark.parametrize("failure, code, needle", [
    ("typo_weights", 2, "Train.pretrain_weight_path"),
    ("foreign_weights", 1, "no parameter name matches the model"),
    ("bad_dataset", 1, "image images/nothere.jpg does not exist"),
    ("bad_resume", 2, "cannot resume from"),
])
def test_overwrite_failing_before_training_leaves_the_old_run_untouched(invoke, ref, tmp_path, failure, code, needle):
    out = _copy_run(ref, tmp_path / "run")
    before = _snapshot(out)
    ds, extra = ref["ds"], []
    if failure == "typo_weights":
        extra = ["-o", f"Train.pretrain_weight_path={tmp_path / 'pretrianed.pdparams'}"]
    elif failure == "foreign_weights":
        extra = ["-o", f"Train.pretrain_weight_path={_vit_weights(tmp_path / 'vit.pdparams')}"]
    elif failure == "bad_dataset":
        ds = _break_dataset(ref["ds"], tmp_path)
    else:
        extra = ["-o", f"Train.resume_path={tmp_path / 'nowhere' / 'epoch_1'}"]
    res = invoke("train", "--dataset", ds, "--output", out, "--overwrite", *REF_ARGS, *extra)
    assert res.exit_code == code, res.output
    assert needle in _one_error_line(res.stderr)
    assert _snapshot(out) == before


def _nan_loss_at(monkeypatch, global_step: int) -> None:
    """Make the PP-ShiTuV2 loss NaN from the given step on (1-based, counted in this process)."""
    from imgfeat_cli.training import recipe

    real, calls = recipe._shitu_loss, [0]

    def loss(out, labels):
        calls[0] += 1
        total, parts = real(out, labels)
        return (total * float("nan"), parts) if calls[0] >= global_step else (total, parts)

    monkeypatch.setattr(recipe, "_shitu_loss", loss)


@pytest.mark.parametrize("failure", ["nan_loss", "ctrl_c_twice"])
def test_overwrite_failing_before_the_first_checkpoint_restores_the_old_run(invoke, ref, tmp_path, monkeypatch,
                                                                            failure):
    from imgfeat_cli.training.options import TrainingDiverged, TrainOptions
    from imgfeat_cli.training.run import run_train

    out = _copy_run(ref, tmp_path / "run")
    before = _snapshot(out)
    opts = TrainOptions(str(ref["ds"]), output=str(out), epochs=3, batch_size=8, learning_rate=0.02, warmup_epochs=1,
                        pretrain_weight_path="none", input_size=32, eval_interval=10, overwrite=True)
    if failure == "nan_loss":
        _nan_loss_at(monkeypatch, 2)
        with pytest.raises(TrainingDiverged, match="the loss is nan at epoch 1, step 2 of 2; nothing was saved"):
            run_train(opts)
    else:
        def ctrl_c_twice(global_step: int) -> bool:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            return False

        with pytest.raises(Interrupted, match="before its first checkpoint; the previous run is back in place"):
            run_train(opts, stop=ctrl_c_twice)
    assert _snapshot(out) == before


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(invoke, ref, tmp_path):
    out = _copy_run(ref, tmp_path / "run")
    old_log = (out / "train.log").read_text()
    res = invoke("train", "--dataset", ref["ds"], "--output", out, "--overwrite", *REF_ARGS[2:], "--epochs", "1")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "best_model", "config.yaml", "config.yaml.bak", "epoch_1", "latest", "train.log", "train.log.bak",
        "train_result.json", "train_result.json.bak"]
    assert (out / "train.log.bak").read_text() == old_log
    assert json.loads((out / "train_result.json").read_text())["done_flag"] is True


# --- non-finite losses and weights ------------------------------------------------------------------

def test_nan_loss_stops_training_without_saving_anything_from_it(invoke, tiny_ds, tmp_path, monkeypatch):
    out = tmp_path / "n"
    _nan_loss_at(monkeypatch, 3)  # epoch 2, step 1
    res = invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "2", *TINY)
    assert res.exit_code == 1, res.output
    line = _one_error_line(res.stderr)
    assert "training diverged: the loss is nan at epoch 2, step 1 of 2" in line
    assert f"the last complete checkpoint is {out / 'latest'} (after epoch 1)" in line
    import paddle

    assert paddle.load(str(out / "latest" / "latest.pdstates"))["epoch"] == 2  # epoch 1's, untouched
    assert not (out / "epoch_2").exists()
    for name in ("latest", "best_model", "epoch_1"):
        params = _params(out / name / f"{name}.pdparams")
        assert all(np.isfinite(v).all() for v in params.values())


def test_weights_that_overflow_are_never_evaluated_saved_or_exported(invoke, tiny_ds, tmp_path):
    # one step per epoch (16 images, batch 16) at an absurd rate: the loss of step 1 is finite, the
    # weights after it give infinite features; nothing may be evaluated or saved from them
    out = tmp_path / "o"
    res = invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "2", *TINY,
                 "-o", "Train.batch_size=16", "-o", "Train.learning_rate=1.0e+30", "-o", "Train.warmup_steps=0")
    assert res.exit_code == 1, res.output
    assert "training diverged:" in _one_error_line(res.stderr) and "after epoch 1" in res.stderr
    assert not (out / "latest").exists() and not (out / "best_model").exists()
    assert "eval:" not in (out / "train.log").read_text()


def test_export_refuses_weights_holding_nan(invoke, tmp_path):
    import paddle

    from imgfeat_cli.models.registry import build_model

    state = build_model("PP-ShiTuV2_rec").state_dict()
    key = next(iter(state))
    state[key] = paddle.full(state[key].shape, float("nan"))
    paddle.save(state, str(tmp_path / "nan.pdparams"))
    res = invoke("export", "--weights", tmp_path / "nan.pdparams", "--out", tmp_path / "inf")
    assert res.exit_code == 1, res.output
    assert "holds NaN or infinity in 1 tensors" in _one_error_line(res.stderr)
    assert not (tmp_path / "inf").exists()


# --- absurd label ranges -----------------------------------------------------------------------------

def test_absurd_label_ranges_are_refused_before_the_model_is_built(invoke, tiny_ds, tmp_path, monkeypatch):
    from imgfeat_cli.training import setup

    def no_model(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(setup, "build_model", no_model)
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY, "-o", "Train.num_classes=5000000")
    assert res.exit_code == 2, res.output
    assert "Train.num_classes asks for a classifier of 5000000 classes, above the limit" in _one_error_line(res.stderr)
    lines = (tiny_ds / "train.txt").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 2000000000"
    (tiny_ds / "train.txt").write_text("\n".join(lines) + "\n")
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY)
    assert res.exit_code == 1, res.output  # the dataset's list is wrong (imgfeat check says so too)
    line = _one_error_line(res.stderr)
    assert "train.txt:1: label 2000000000 would make a 2000000001-class classifier" in line and "renumber" in line
    assert not (tmp_path / "o").exists()


# --- Ctrl-C in a real process -----------------------------------------------------------------------

HOOKED_CLI = '''
import os, sys, time
hook = os.environ["IMGFEAT_TEST_HOOK"]
if hook == "setup":  # loading the initial weights takes a while
    import imgfeat_cli.models.weights as w
    real = w.read_state_dict
    def slow(*a, **k):
        print("@@HOOK", file=sys.stderr, flush=True)
        time.sleep(30)
        return real(*a, **k)
    w.read_state_dict = slow
elif hook == "save":  # announce the export of epoch 2's checkpoint (paddle.jit tracing follows)
    import imgfeat_cli.models.export as e
    real, calls = e.export_layer, [0]
    def marked(*a, **k):
        calls[0] += 1
        if calls[0] == 2:
            print("@@HOOK", file=sys.stderr, flush=True)
        return real(*a, **k)
    e.export_layer = marked
from imgfeat_cli.cli.entry import main
sys.argv = ["imgfeat"] + sys.argv[1:]
main()
'''


def _train_process(tmp_path: Path, hook: str, args: list):
    import subprocess
    import sys

    script = tmp_path / "hooked_cli.py"
    script.write_text(HOOKED_CLI)
    return subprocess.Popen([sys.executable, str(script), "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "IMGFEAT_TEST_HOOK": hook})


def _wait_for(proc, predicate, what: str, timeout: float = 120) -> None:
    import time

    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"never saw {what}: exit {proc.returncode}\n{err[-3000:]}")
        time.sleep(0.02)


def _stderr_marker(proc) -> None:
    """Read stderr up to the hook's marker line (the rest is read by communicate)."""
    for line in proc.stderr:
        if line.startswith("@@HOOK"):
            return
    raise AssertionError(f"the hook never ran (exit {proc.wait()})")


@pytest.mark.slow
def test_ctrl_c_during_setup_exits_130_and_leaves_the_replaced_run_intact(invoke, ref, tmp_path):
    out = _copy_run(ref, tmp_path / "run")
    before = _snapshot(out)
    weights = ref["out"] / "latest" / "latest.pdparams"
    proc = _train_process(tmp_path, "setup", ["--dataset", ref["ds"], "--output", out, "--overwrite", *REF_ARGS,
                                              "-o", f"Train.pretrain_weight_path={weights}"])
    _stderr_marker(proc)
    # meanwhile the folder is taken: a second train on it is refused
    res = invoke("train", "--dataset", ref["ds"], "--output", out, "--resume", *REF_ARGS)
    assert res.exit_code == 2 and "another imgfeat process is changing files in" in _one_error_line(res.stderr)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted during setup; nothing was written" in _one_error_line(err)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_latest_and_exits_130(ref, tmp_path):
    out = tmp_path / "run"
    proc = _train_process(tmp_path, "none", ["--dataset", ref["ds"], "--output", out, *REF_ARGS])
    log = out / "train.log"
    _wait_for(proc, lambda: log.is_file() and "epoch 2/3 step 1/2" in log.read_text(), "epoch 2 step 1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "training interrupted" in _one_error_line(err) and "--resume" in err
    assert json.loads((out / "train_result.json").read_text())["done_flag"] is False
    assert (out / "latest" / "latest.pdstates").is_file()


@pytest.mark.slow
def test_second_ctrl_c_while_saving_keeps_the_last_complete_checkpoint(ref, tmp_path):
    import paddle

    out = tmp_path / "run"
    proc = _train_process(tmp_path, "save", ["--dataset", ref["ds"], "--output", out, *REF_ARGS])
    _stderr_marker(proc)  # epoch 2's checkpoint is being exported now
    proc.send_signal(signal.SIGINT)
    import time

    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = _one_error_line(err)
    assert "training aborted after epoch 2" in line and f"{out / 'latest'} (after epoch 1)" in line
    assert paddle.load(str(out / "latest" / "latest.pdstates"))["epoch"] == 2  # saved after epoch 1
    assert _differing(out / "epoch_1" / "epoch_1.pdparams", out / "latest" / "latest.pdparams") == []
    # no epoch_2, no temp folder: the abandoned checkpoint left nothing behind
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "epoch_1", "latest", "train.log",
                                                      "train_result.json"]


# --- PaddleX keys that name an input; progress without a terminal ------------------------------------

def test_paddlex_input_keys_and_progress_lines_without_a_terminal(invoke, ref, tmp_path):
    """``Global.dataset_dir`` and ``Train.pretrain_weight_path`` (no --dataset), and, as stderr is not
    a terminal here, progress lines at ``Train.progress_interval`` (0: every step after the first)."""
    weights = ref["out"] / "epoch_3" / "epoch_3.pdparams"
    res = invoke("train", "-o", f"Global.dataset_dir={ref['ds']}", "--output", tmp_path / "o", "--epochs", "2",
                 *TINY[2:], "-o", f"Train.pretrain_weight_path={weights}", "-o", "Train.progress_interval=0",
                 "-o", "Train.eval_interval=10")
    assert res.exit_code == 0, res.output
    assert f"initialisation: 288 tensors from {weights}" in res.stderr
    steps = [ln for ln in res.stderr.splitlines() if ln.startswith("training: ")]
    assert [s.split(" steps")[0] for s in steps] == ["training: 2/4", "training: 3/4", "training: 4/4"], res.stderr
    assert "ETA " in steps[0] and "epoch 1/2, loss " in steps[0] and " lr " in steps[0] and "images/s" in steps[0]
    assert "done in" in steps[-1]
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "q", "--epochs", "2", *TINY, "--quiet",
                 "-o", "Train.progress_interval=0", "-o", "Train.eval_interval=10")
    assert res.exit_code == 0 and "training: " not in res.stderr


def test_export_takes_export_weight_path(invoke, ref, tmp_path):
    weights = ref["out"] / "best_model" / "best_model.pdparams"
    res = invoke("export", "-o", f"Export.weight_path={weights}", "--out", tmp_path / "inf")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "inf" / "inference.pdiparams").is_file()
    assert "size:\n      - 32" in (tmp_path / "inf" / "inference.yml").read_text()  # the training input size


# --- one checkpoint, one figure ------------------------------------------------------------------------

def test_eval_of_a_training_checkpoint_scores_its_export_and_gives_the_training_figure(invoke, ref, tmp_path):
    import shutil

    best = ref["out"] / "best_model" / "best_model.pdparams"
    res = invoke("eval", "--dataset", ref["ds"], "--weights", best, "--output", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    assert f"scoring its exported model {best.parent / 'inference'}" in res.stderr
    metrics = json.loads((tmp_path / "ev" / "evaluate_result.json").read_text())["metrics"]
    assert metrics["recall1"] == ref["doc"]["best_score"]
    assert metrics == ref["doc"]["history"][-1]["metrics"]

    # weights that are not the ones exported beside them run in dygraph (no claim about the export)
    other = tmp_path / "other"
    shutil.copytree(best.parent, other)
    shutil.copy(ref["out"] / "epoch_1" / "epoch_1.pdparams", other / "best_model.pdparams")
    res = invoke("eval", "--dataset", ref["ds"], "--weights", other / "best_model.pdparams", "--output", tmp_path / "e2")
    assert res.exit_code == 0, res.output
    assert "scoring its exported model" not in res.stderr


# --- hostile inputs -------------------------------------------------------------------------------------

def _hostile_path(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"hostile_{kind}.pdparams"
    if kind == "missing":
        pass
    elif kind == "folder":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "loop":
        os.symlink(p, p)
    elif kind == "truncated":
        import paddle

        from imgfeat_cli.models.registry import build_model

        paddle.save(build_model("PP-ShiTuV2_rec").state_dict(), str(p))
        p.write_bytes(p.read_bytes()[:5000])
    elif kind == "empty":
        p.write_bytes(b"")
    return p


HOSTILE_WEIGHTS = [("missing", 2, "does not exist"), ("folder", 2, "is a folder, not a file"),
                   ("fifo", 2, "is not a regular file"), ("loop", 2, "is a symlink loop"),
                   ("truncated", 1, "is not a readable .pdparams file"), ("empty", 1, "is not a readable .pdparams")]


@pytest.mark.parametrize("kind, code, needle", HOSTILE_WEIGHTS)
def test_train_hostile_pretrain_weights(invoke, tiny_ds, tmp_path, kind, code, needle):
    path = _hostile_path(tmp_path, kind)
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY[2:],
                 "-o", f"Train.pretrain_weight_path={path}")
    assert res.exit_code == code, res.output
    line = _one_error_line(res.stderr)
    assert needle in line and str(path) in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind, code, needle", HOSTILE_WEIGHTS)
def test_export_hostile_weights(invoke, tmp_path, kind, code, needle):
    path = _hostile_path(tmp_path, kind)
    res = invoke("export", "--weights", path, "--out", tmp_path / "inf")
    assert res.exit_code == code, res.output
    line = _one_error_line(res.stderr)
    assert needle in line and str(path) in line
    assert not (tmp_path / "inf").exists()


@pytest.mark.parametrize("kind, needle", [("fifo", "is not a regular file (a FIFO"), ("loop", "is a symlink loop"),
                                          ("folder", "is a folder"), ("dangling", "is a broken symlink"),
                                          ("empty", "is empty (0 bytes)")])
@pytest.mark.parametrize("split", ["train", "gallery"])
def test_train_hostile_dataset_images(invoke, tiny_ds, tmp_path, kind, needle, split):
    """Caught in setup, before anything is written, naming the list file and line (a zero-byte image
    used to go ahead: issue 22)."""
    img = tiny_ds / "images" / "odd.jpg"
    if kind == "fifo":
        os.mkfifo(img)
    elif kind == "loop":
        os.symlink(img, img)
    elif kind == "folder":
        img.mkdir()
    elif kind == "empty":
        img.write_bytes(b"")
    else:
        os.symlink(tiny_ds / "gone.jpg", img)
    lines = (tiny_ds / f"{split}.txt").read_text().splitlines()
    (tiny_ds / f"{split}.txt").write_text("\n".join(lines[:1] + ["images/odd.jpg 1"] + lines[1:]) + "\n")
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY)
    assert res.exit_code == 1, res.output
    assert f"{tiny_ds / (split + '.txt')}:2: image images/odd.jpg {needle}" in _one_error_line(res.stderr)
    assert not (tmp_path / "o").exists()


# --- evaluation lists: a run that cannot be scored is refused (issue 22) ------------------------------

@pytest.mark.parametrize("case, needle", [
    ("empty_query", "query.txt lists no images: evaluation would score nothing"),
    ("empty_gallery", "gallery.txt lists no images: evaluation would score nothing"),
    ("no_query", "query.txt does not exist, but gallery.txt does"),
    ("disjoint", "no label of"),
])
def test_train_refuses_evaluation_lists_that_would_score_nothing(invoke, tiny_ds, tmp_path, case, needle):
    if case.startswith("empty_"):
        (tiny_ds / f"{case[6:]}.txt").write_text("")
    elif case == "no_query":
        (tiny_ds / "query.txt").unlink()
    else:
        lines = (tiny_ds / "query.txt").read_text().splitlines()
        (tiny_ds / "query.txt").write_text("".join(ln.rsplit(" ", 1)[0] + " 3999\n" for ln in lines))
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY, "--json")
    assert res.exit_code == 2, res.output
    assert needle in _one_error_line(res.stderr)
    assert not (tmp_path / "o").exists()


def test_train_without_gallery_and_query_trains_without_evaluation(invoke, tiny_ds, tmp_path):
    for split in ("gallery", "query"):
        (tiny_ds / f"{split}.txt").unlink()
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "1", *TINY, "--json")
    assert res.exit_code == 0, res.output
    assert "no gallery.txt and query.txt: no evaluation; best_model is the last saved epoch" in \
        (tmp_path / "o" / "train.log").read_text()
    assert json.loads(res.stdout)["best_score"] is None and (tmp_path / "o" / "best_model").is_dir()


# --- issue 21/26: memory, batch size, warm-up, threads, saves -------------------------------------------

def test_train_refuses_a_run_that_cannot_fit_in_memory_before_anything_is_written(invoke, tiny_ds, tmp_path):
    # 16384 px: about 250 GB of activations per image, more than any machine has
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", *TINY, "-o", "Train.input_size=16384")
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.stderr)
    assert "training PP-ShiTuV2_rec at batch 8, input 16384 needs about" in line and "GB is available" in line
    assert "Hint: even batch 4 does not fit at input 16384" in res.stderr and "-o Train.input_size=" in res.stderr
    assert not (tmp_path / "o").exists()


def test_result_and_summary_report_the_memory_estimate_and_the_measured_peak(ref):
    mem = ref["doc"]["memory"]
    assert 0 < mem["estimate_bytes"] < mem["available_bytes"] and mem["peak_rss_bytes"] > 100e6
    assert json.loads((ref["out"] / "train_result.json").read_text())["run"]["memory"]["estimate_bytes"] == \
        mem["estimate_bytes"]
    from imgfeat_cli.cli.train import summary_table

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(summary_table(ref["doc"]))
    assert "GB peak (estimated " in console.export_text()


def test_default_batch_on_cpu_fits_the_dataset_and_warm_up_never_runs_at_lr_0(invoke, tiny_ds, tmp_path):
    """No batch size given: the CPU default (32), lowered to what 16 images in 4 classes fill; the
    default warm-up (5 epochs) over a 1-epoch run warms up over the whole run, said once and right
    (it used to say "using 0" and then "warm-up 5 epochs", and train its one step at rate 0)."""
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "1", "--json",
                 "-o", "Train.pretrain_weight_path=none", "-o", "Train.input_size=32", "-o", "Train.log_interval=1")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["batch_size"] == 16 and doc["steps_per_epoch"] == 1
    log = (tmp_path / "o" / "train.log").read_text()
    assert "batch size 16: 16 images in 4 classes fill no batch of 32" in log
    assert "warm-up over the whole run (1 epochs, 1 steps; Train.warmup_steps is 5), no decay" in log
    assert "using" not in log and "warm-up 5 epochs" not in log
    assert " lr 0.010000 " in log  # the recipe's rate, on the only step


def test_steps_per_epoch_are_ceil_of_images_over_batch(invoke, tiny_ds, tmp_path):
    lines = (tiny_ds / "train.txt").read_text().splitlines()
    (tiny_ds / "train.txt").write_text("\n".join(lines + lines[:4]) + "\n")  # 20 images, batch 8
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "1", *TINY, "--json",
                 "-o", "Train.eval_interval=10")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["steps_per_epoch"] == 3  # ceil(20 / 8), as PaddleClas; 20 // 8 = 2 before


def test_threads_beyond_the_cores_are_lowered_below_one_refused_and_logged(invoke, tiny_ds, tmp_path):
    res = invoke("train", "--dataset", tiny_ds, "--out", tmp_path / "o", *TINY, "--threads", "0")
    assert res.exit_code == 2 and "Train.cpu_threads" in _one_error_line(res.stderr)
    res = invoke("train", "--dataset", tiny_ds, "--out", tmp_path / "o0", "--epochs", "1", *TINY,
                 "--threads", "100000", "-o", "Train.eval_interval=10")
    assert res.exit_code == 0 and "--threads 100000 is more than the" in res.stderr
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "1", *TINY, "--threads", "1",
                 "-o", "Train.eval_interval=10")
    assert res.exit_code == 0, res.output
    assert ", 1 CPU threads, memory about " in res.stderr
    assert "cpu_threads: 1" in (tmp_path / "o" / "config.yaml").read_text()


def test_weights_are_checked_on_a_few_images_once_per_saved_state(invoke, tiny_ds, tmp_path, monkeypatch):
    from imgfeat_cli.models import weights

    real, probes = weights.nonfinite_features, []

    def counted(layer, batch):
        probes.append(int(batch.shape[0]))
        return real(layer, batch)

    monkeypatch.setattr(weights, "nonfinite_features", counted)
    res = invoke("train", "--dataset", tiny_ds, "--output", tmp_path / "o", "--epochs", "2", *TINY)
    assert res.exit_code == 0, res.output
    assert probes == [4, 4]  # one per epoch end (evaluated and saved), 4 images (was 2 x 8 per epoch)


def test_latest_is_saved_without_an_export_between_save_intervals(tiny_ds, tmp_path, monkeypatch):
    """``latest/`` on the timer (set to 0 here) or a stop carries no inference/ export mid-run;
    epoch_N/ and best_model/ do, and the last epoch's latest/ too."""
    from imgfeat_cli.models import export
    from imgfeat_cli.training import trainer
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.run import run_train

    real, exports = export.export_layer, []
    monkeypatch.setattr(export, "export_layer", lambda *a, **k: exports.append(1) or real(*a, **k))
    monkeypatch.setattr(trainer, "LATEST_EVERY_S", 0.0)
    opts = TrainOptions(str(tiny_ds), output=str(tmp_path / "o"), epochs=3, batch_size=8, learning_rate=0.02,
                        warmup_epochs=1, pretrain_weight_path="none", input_size=32, eval_interval=10,
                        save_interval=10)
    with pytest.raises(Interrupted, match="interrupted after epoch 2"):
        run_train(opts, stop=lambda global_step: global_step == 4)
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "latest", "train.log", "train_result.json"]
    assert not (out / "latest" / "inference").exists() and exports == []
    run_train(TrainOptions(**{**opts.__dict__, "resume": True}))
    assert exports == [1]  # epoch 3: one export, copied to best_model/ and latest/
    for name in ("epoch_3", "best_model", "latest"):
        assert (out / name / "inference" / "inference.pdiparams").is_file(), name


def _read_only(folder: Path, monkeypatch) -> None:
    """A folder this process may not write: chmod, and (as root, who ignores modes) os.access says so."""
    import stat

    folder.mkdir(exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == folder and mode & os.W_OK
                            else real(p, mode, **k))


@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_train_and_export_refuse_unusable_outputs_before_any_work(invoke, ref, tmp_path, monkeypatch, where):
    if where == "read_only":
        _read_only(tmp_path / "ro", monkeypatch)
        out, needle = tmp_path / "ro" / "run", "is not writable"
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
        needle = "is a file"
    try:
        res = invoke("train", "--dataset", ref["ds"], "--output", out, *REF_ARGS)
        assert res.exit_code == 2, res.output
        assert needle in _one_error_line(res.stderr)
        res = invoke("export", "--weights", ref["out"] / "latest" / "latest.pdparams", "--out", out)
        assert res.exit_code == 2, res.output
        assert needle in _one_error_line(res.stderr)
    finally:
        (tmp_path / "ro").exists() and (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("kind, code, needle", [
    ("missing", 2, "it does not exist"), ("file", 2, "is not a folder or a .pdparams file"),
    ("truncated", 1, "is damaged or not a paddle file"), ("foreign", 1, "is not an imgfeat training state")])
def test_train_hostile_resume_paths(invoke, ref, tmp_path, kind, code, needle):
    import shutil

    ck = tmp_path / "ck" / "epoch_1"
    if kind == "missing":
        given = tmp_path / "nope"
    elif kind == "file":
        given = tmp_path / "notes.txt"
        given.write_text("x")
    else:
        shutil.copytree(ref["out"] / "epoch_1", ck)
        victim = ck / ("epoch_1.pdopt" if kind == "truncated" else "epoch_1.pdstates")
        if kind == "truncated":
            victim.write_bytes(victim.read_bytes()[:100])
        else:
            import paddle

            paddle.save({"something": 1}, str(victim))
        given = ck
    res = invoke("train", "--dataset", ref["ds"], "--output", tmp_path / "o", *REF_ARGS,
                 "-o", f"Train.resume_path={given}")
    assert res.exit_code == code, res.output
    assert needle in _one_error_line(res.stderr)
    assert not (tmp_path / "o").exists()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(invoke, tiny_ds, tmp_path, monkeypatch):
    import errno

    import paddle

    real = paddle.save

    def save(obj, path, *a, **k):
        if "epoch_2" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(obj, path, *a, **k)

    monkeypatch.setattr(paddle, "save", save)
    out = tmp_path / "o"
    res = invoke("train", "--dataset", tiny_ds, "--output", out, "--epochs", "2", *TINY)
    assert res.exit_code == 1, res.output
    assert f"cannot write checkpoint {out / 'epoch_2'}: No space left on device" in _one_error_line(res.stderr)
    monkeypatch.undo()
    assert paddle.load(str(out / "latest" / "latest.pdstates"))["epoch"] == 2  # epoch 1's, intact
    assert sorted(p.name for p in out.iterdir()) == ["best_model", "config.yaml", "epoch_1", "latest", "train.log",
                                                      "train_result.json"]


@pytest.mark.parametrize("kind, needle", [("fifo", "is not a regular file (a FIFO"), ("folder", "is a folder")])
def test_train_hostile_list_files(invoke, tiny_ds, tmp_path, kind, needle):
    for split in ("train", "query"):  # a required list and an optional one
        ds = tmp_path / f"{split}_{kind}"
        import shutil

        shutil.copytree(tiny_ds, ds)
        (ds / f"{split}.txt").unlink()
        os.mkfifo(ds / f"{split}.txt") if kind == "fifo" else (ds / f"{split}.txt").mkdir()
        res = invoke("train", "--dataset", ds, "--output", tmp_path / "o", *TINY)
        assert res.exit_code == 1, res.output
        assert f"{split}.txt {needle}" in _one_error_line(res.stderr)


def test_evaluations_score_with_paddle_inference_and_measure_no_engines(invoke, tiny_ds, tmp_path, monkeypatch):
    """Each evaluation scores a new export; with the default engine every one of them measured the
    candidate engines again (an ONNX conversion and timed rounds: 3-4 s per evaluation on 2 cores).
    Training and ``eval --weights`` of its checkpoint both score with paddle.inference instead."""
    from imgfeat_cli.models import autoselect

    measured = []
    real = autoselect._measure
    monkeypatch.setattr(autoselect, "_measure", lambda *a, **k: measured.append(1) or real(*a, **k))
    res = invoke("train", "--dataset", tiny_ds, "--out", tmp_path / "o", "--epochs", "2", "--json", *TINY)
    assert res.exit_code == 0, res.output
    best = json.loads(res.stdout)["best_score"]
    res = invoke("eval", "--dataset", tiny_ds, "--weights", tmp_path / "o" / "best_model" / "best_model.pdparams",
                 "--out", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    assert ": paddle-inference" in res.stderr, res.stderr
    assert json.loads((tmp_path / "ev" / "evaluate_result.json").read_text())["metrics"]["recall1"] == best
    # the exported folder itself, as README's tour scores it: the same engine, the same figure
    res = invoke("eval", "--dataset", tiny_ds, "--model-dir", tmp_path / "o" / "best_model" / "inference",
                 "--out", tmp_path / "ev2")
    assert res.exit_code == 0, res.output
    assert "exported by imgfeat train" in res.stderr and ": paddle-inference" in res.stderr, res.stderr
    assert json.loads((tmp_path / "ev2" / "evaluate_result.json").read_text())["metrics"]["recall1"] == best
    assert measured == []


def test_an_unreadable_export_is_not_taken_for_a_training_export(tmp_path, monkeypatch):
    """Telling a training export apart hashes its files; one that cannot be read (permissions, a
    file vanishing) means "not proven", never a traceback before the model loader can name it."""
    from imgfeat_cli.training import checkpoint

    (tmp_path / "best_model" / "inference").mkdir(parents=True)
    (tmp_path / "best_model" / "best_model.pdparams").write_bytes(b"w")
    (tmp_path / "best_model" / "best_model.pdstates").write_bytes(b"s")
    monkeypatch.setattr(checkpoint, "read_paddle_file", lambda *a: {"digests": {"pdparams": "x"}})

    def unreadable(*a):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "_digests", unreadable)
    assert checkpoint.exported_inference(str(tmp_path / "best_model" / "best_model.pdparams")) is None
    assert checkpoint.exported_by_training(str(tmp_path / "best_model" / "inference")) is False

