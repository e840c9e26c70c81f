"""PK sampler and recipe losses, against hand-computed values."""
from __future__ import annotations

from collections import Counter

import numpy as np
import paddle
import pytest

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.training.losses import label_smoothing_ce, triplet_angular_margin_loss
from imgfeat_cli.training.sampler import PKSampler


def test_pk_batches_have_p_labels_times_k():
    labels = [0] * 10 + [1] * 6 + [2] * 2 + [3] * 8
    s = PKSampler(labels, batch_size=8, k=4, seed=1)
    assert len(s) == 4  # ceil(26 / 8): PaddleClas's PKSampler with drop_last False (floor gave 3)
    for batch in s:
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 8 and len(counts) == 2 and set(counts.values()) == {4}
    # the class with 2 images is sampled with replacement when drawn: 4 slots from 2 distinct images
    small = [b for seed in range(30) for b in PKSampler(labels, 8, 4, seed=seed) if any(labels[i] == 2 for i in b)]
    assert small, "class 2 was never drawn in 30 epochs"
    for b in small:
        picks = [i for i in b if labels[i] == 2]
        assert len(picks) == 4 and set(picks) <= {16, 17}


def test_pk_sampler_resume_reproduces_batches():
    labels = list(np.repeat(np.arange(6), 5))
    a = PKSampler(labels, 8, seed=7)
    first = list(a)
    state = a.state_dict()
    second = list(a)
    b = PKSampler(labels, 8, seed=999)
    b.set_state_dict(state)
    assert list(b) == second and first != second


def test_pk_sampler_errors_name_the_numbers():
    with pytest.raises(UsageError, match=r"3 classes x 4 images per class = 12 < batch size 16"):
        PKSampler([0, 1, 2] * 4, batch_size=16)
    with pytest.raises(UsageError, match="batch size 10 is not a multiple of 4"):
        PKSampler([0, 1, 2] * 4, batch_size=10)


def test_triplet_angular_margin_loss_hand_computed():
    # 2-D unit features: a0 at 0 deg, a1 at 60 deg (label 0); b0 at 90 deg (label 1)
    ang = np.deg2rad([0.0, 60.0, 90.0])
    feats = paddle.to_tensor(np.stack([np.cos(ang), np.sin(ang)], 1).astype("float32") * 3.0)
    labels = paddle.to_tensor(np.array([0, 0, 1], dtype="int64"))
    loss = float(triplet_angular_margin_loss(feats, labels))
    c60, c90, c30 = 0.5, 0.0, np.cos(np.deg2rad(30))
    # per anchor: (s_ap, s_an): a0 (cos60, cos90), a1 (cos60, cos30), b0 (1 [self only], cos30)
    s_ap = np.array([c60, c60, 1.0])
    s_an = np.array([c90, c30, c30])
    expected = np.maximum(0, s_an - s_ap + 0.5).mean() + 0.1 * (np.maximum(0, 0.8 - s_ap).mean()
                                                               + np.maximum(0, s_an - 0.4).mean())
    assert loss == pytest.approx(expected, abs=1e-6)


def test_triplet_loss_is_zero_when_classes_are_separated():
    # a true hinge: well-separated classes give exactly 0 (upstream's quirk would give 0.1 * 1)
    feats = paddle.to_tensor(np.array([[1, 0], [1, 0.01], [-1, 0], [-1, 0.01]], "float32"))
    labels = paddle.to_tensor(np.array([0, 0, 1, 1], dtype="int64"))
    assert float(triplet_angular_margin_loss(feats, labels)) == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_ce():
    logits = paddle.to_tensor(np.array([[2.0, 0.0, -1.0]], "float32"))
    labels = paddle.to_tensor(np.array([0], dtype="int64"))
    p = np.exp([2.0, 0.0, -1.0])
    logp = np.log(p / p.sum())
    target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert float(label_smoothing_ce(logits, labels)) == pytest.approx(-(target * logp).sum(), abs=1e-6)


# --- the recipe, as PaddleClas runs it (issue 21: step-for-step comparison) --------------------------

def _lrs(epochs: int, warmup: int, steps: int, lr: float = 0.1) -> list:
    from imgfeat_cli.training.schedule import build_schedule, plan_schedule

    sched, out = build_schedule(lr, plan_schedule(epochs, warmup, steps)), []
    for _ in range(epochs * steps):
        out.append(sched())
        sched.step()
    return out


def test_warm_up_never_runs_a_step_at_learning_rate_0():
    # upstream's ramp lr * i / W one step earlier: lr * (i + 1) / W (its first update did nothing)
    assert _lrs(3, 1, 2)[:2] == pytest.approx([0.05, 0.1])
    one_step_epochs = _lrs(2, 5, 1)  # the newcomer's case: one step per epoch, warm-up 5 > 2 epochs
    assert min(one_step_epochs) > 0 and one_step_epochs == pytest.approx([0.05, 0.1])
    for epochs, warmup, steps in [(6, 1, 4), (4, 0, 2), (2, 1, 1), (1, 5, 1), (20, 5, 3)]:
        lrs = _lrs(epochs, warmup, steps)
        assert min(lrs) > 0, (epochs, warmup, steps, lrs)
        assert max(lrs) == pytest.approx(0.1)


def test_warm_up_as_long_as_the_run_climbs_over_the_whole_run_and_never_decays():
    from imgfeat_cli.training.schedule import plan_schedule

    lrs = _lrs(3, 5, 4)  # PaddleClas: warmup_epoch set to epochs, then a constant: no cosine
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.1 / 12)
    assert plan_schedule(3, 5, 4).describe(5) == (
        "warm-up over the whole run (3 epochs, 12 steps; Train.warmup_steps is 5), no decay")
    decayed = _lrs(6, 1, 4)  # warm-up 1 epoch, then cosine to (nearly) 0
    assert decayed[3] == pytest.approx(0.1) and decayed[4:] == sorted(decayed[4:], reverse=True)
    assert 0 < decayed[-1] < 0.001


class _Rng:
    """A Generator stand-in: no flip, no rotation, and the largest crop offset it is allowed."""

    def __init__(self) -> None:
        self.bounds = []

    def random(self) -> float:
        return 0.99

    def integers(self, low: int, high: int) -> int:
        self.bounds.append((low, high))
        return high - 1


def test_random_crop_offsets_run_0_to_21_inclusive_as_paddleclas_draws_them():
    from imgfeat_cli.training.augment import shitu_augment

    first, rest = shitu_augment(224)
    rng = _Rng()
    out = rest(first(np.full((300, 200, 3), 128, np.uint8)), rng)
    # padded to 244: random.randint(0, 244 - 224 + 1) upstream, i.e. 0..21; the one-pixel-short crop
    # at offset 21 is resized back to 224
    assert rng.bounds == [(0, 22), (0, 22)] and out.shape == (3, 224, 224)


def test_backbone_batchnorms_get_no_weight_decay_and_the_classifier_no_bias():
    from paddle.regularizer import L2Decay

    from imgfeat_cli.models.registry import build_model
    from imgfeat_cli.training.setup import align_with_paddleclas

    model = build_model("PP-ShiTuV2_rec", num_classes=3)
    exempt = align_with_paddleclas(model)
    names = {name for name, p in model.named_parameters()
             if isinstance(getattr(p, "regularizer", None), L2Decay) and p.regularizer._coeff == 0.0}
    assert exempt == len(names) > 0
    assert all(n.startswith("backbone.") and (".bn." in n or n.split(".")[-2] == "bn") for n in names)
    assert not any(n.startswith(("neck.", "head.")) for n in names)
    assert any(n.startswith("backbone.") and n.endswith("conv.weight") for n, _ in model.named_parameters()
               if n not in names)
    frozen = [n for n, p in model.named_parameters() if p.stop_gradient and not n.endswith(("_mean", "_variance"))]
    assert frozen == ["head.fc.bias"]


# --- memory and threads -----------------------------------------------------------------------------

def test_memory_estimate_refuses_what_does_not_fit_and_names_a_batch_that_does(monkeypatch):
    from imgfeat_cli.training import memory

    monkeypatch.setattr(memory, "available_memory", lambda: int(4e9))
    plan = memory.plan_memory("PP-ShiTuV2_rec", 16, 224, 100, 2 << 30, batch_chosen=False)
    assert plan.estimate_bytes < 4e9 * 0.9 and plan.available_bytes == int(4e9) and plan.cache_bytes >= 0
    with pytest.raises(UsageError, match=r"at batch 128, input 224 needs about \d+\.\d GB of memory; 4\.0 GB") as err:
        memory.plan_memory("PP-ShiTuV2_rec", 128, 224, 100, 2 << 30, batch_chosen=True)
    fits = int(err.value.hint.split("Train.batch_size=")[1].split()[0])
    assert fits % 4 == 0 and 4 <= fits < 128
    assert memory.estimate_peak("PP-ShiTuV2_rec", fits, 224, 100) <= 4e9 * 0.9
    assert memory.estimate_peak("PP-ShiTuV2_rec", fits + 4, 224, 100) > 4e9 * 0.9
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown (not Linux): never refused
    assert memory.plan_memory("PP-ShiTuV2_rec", 4096, 224, 100, 0, True).available_bytes is None


def test_available_memory_reads_this_machine():
    from imgfeat_cli.training.memory import available_memory, peak_rss

    avail = available_memory()
    assert avail is None or 0 < avail < 1 << 50
    assert peak_rss() > 10 << 20  # this process, with paddle loaded


def test_math_threads_are_set_before_paddle_is_imported_and_its_warning_is_kept_quiet():
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from imgfeat_cli.common.system import cpu_count\n"
            "from imgfeat_cli.common.threads import use_math_threads\n"
            "assert 'paddle' not in sys.modules\n"
            "n = use_math_threads(None)\n"
            "import ctypes, paddle\n"
            "omp = ctypes.CDLL(os.path.join(os.path.dirname(paddle.__file__), 'libs', 'libiomp5.so'))\n"
            "print(n, cpu_count(), os.environ['OMP_NUM_THREADS'], omp.omp_get_max_threads(), omp.kmp_get_blocktime())\n"
            "use_math_threads(1)\n"
            "print(omp.omp_get_max_threads())\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "KMP_BLOCKTIME")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.split("\n")[:2]
    n, cores, env_value, omp_threads, blocktime = first.split()
    assert n == cores == env_value == omp_threads and second == "1"
    assert blocktime == "1"  # ms an idle OpenMP thread spins (200 by default: it stole a shared core)
    assert "OMP_NUM_THREADS" not in res.stderr


def test_threads_beyond_the_cores_are_lowered_and_below_one_refused():
    from imgfeat_cli.common.system import cpu_count
    from imgfeat_cli.common.threads import resolve_threads

    notes = []
    assert resolve_threads(None) == cpu_count() and resolve_threads(1) == 1
    assert resolve_threads(cpu_count() + 7, "--threads", notes.append) == cpu_count()
    assert notes == [f"--threads {cpu_count() + 7} is more than the {cpu_count()} cores this process may use: "
                     f"using {cpu_count()}"]
    for bad in (0, -3):
        with pytest.raises(UsageError, match=f"--threads {bad} is not a thread count"):
            resolve_threads(bad)



@pytest.mark.parametrize("batch,stride,kernel", [(5, 1, 3), (8, 2, 5), (1, 1, 3)])
def test_depthwise_training_convs_cut_over_threads_give_paddles_results(monkeypatch, batch, stride, kernel):
    """The cut layer against paddle's own on the same weights: outputs and input gradients
    identical, weight gradients equal to a sum in another order; the cut really ran (a batch of 1
    and eval mode use paddle's layer)."""
    from imgfeat_cli.common import threads
    from imgfeat_cli.models import batchsplit

    monkeypatch.setattr(threads, "_math_threads", 2)
    cuts = []
    real_pool = batchsplit._pool
    monkeypatch.setattr(batchsplit, "_pool", lambda n: cuts.append(n) or real_pool(n))
    paddle.seed(3)
    cut = batchsplit.DepthwiseConv2D(6, 6, kernel, stride, padding=kernel // 2, groups=6, bias_attr=False)
    ref = paddle.nn.Conv2D(6, 6, kernel, stride, padding=kernel // 2, groups=6, bias_attr=False)
    ref.weight.set_value(cut.weight)
    x = paddle.randn([batch, 6, 11, 11])
    results = []
    for layer in (cut, ref):
        xx = x.detach()
        xx.stop_gradient = False
        y = layer(xx)
        (y * y).sum().backward()
        results.append((y.numpy(), xx.grad.numpy(), layer.weight.grad.numpy()))
    assert cuts == ([] if batch == 1 else [2, 2])  # forward and backward, one slice per thread
    (y_cut, gx_cut, gw_cut), (y_ref, gx_ref, gw_ref) = results
    assert np.array_equal(y_cut, y_ref) and np.array_equal(gx_cut, gx_ref)
    np.testing.assert_allclose(gw_cut, gw_ref, rtol=1e-5, atol=1e-6)
    cut.eval()
    cuts.clear()
    assert np.array_equal(cut(x).numpy(), ref(x).numpy()) and cuts == []


# --- the training package's shape ----------------------------------------------------------------

def _training_imports() -> dict:
    """module -> training modules it imports (at any depth of the file: lazy imports count too)."""
    import ast
    from pathlib import Path

    import imgfeat_cli.training as pkg

    folder = Path(pkg.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps |= {n.split(".")[2] for n in names if n.startswith("imgfeat_cli.training.") and n.count(".") >= 2}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("imgfeat_cli.training.")}
        graph[path.stem] = {d for d in deps if (folder / f"{d}.py").is_file()} - {path.stem}
    return graph


def test_training_modules_import_each_other_without_cycles():
    graph = _training_imports()
    assert "trainer" in graph and "run" in graph
    done, visiting = set(), []

    def visit(node: str) -> None:
        if node in visiting:
            raise AssertionError(f"import cycle: {' -> '.join(visiting[visiting.index(node):] + [node])}")
        if node in done:
            return
        visiting.append(node)
        for dep in sorted(graph[node]):
            visit(dep)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


# --- progress lines without a terminal -----------------------------------------------------------

def _info(global_step: int, steps: int = 4, epochs: int = 3):
    from imgfeat_cli.training.options import StepInfo

    epoch, step = (global_step - 1) // steps + 1, (global_step - 1) % steps + 1
    return StepInfo(epoch, epochs, step, steps, global_step, steps * epochs, 2.5, {"ce": 1.5}, 0.01, 12.0, 8)


def test_train_progress_lines_without_a_terminal_every_interval_with_eta():
    from imgfeat_cli.cli.progress import PeriodicLines
    from imgfeat_cli.cli.train import _monitor

    now, lines = [100.0], []
    monitor = _monitor(None, None, PeriodicLines(lines.append, "steps", interval=30, clock=lambda: now[0]))
    for g in range(1, 13):  # 12 steps, 10 s each
        monitor.step(_info(g))
        now[0] += 10.0
    assert lines == [
        "training: 4/12 steps (33%), 0.1 steps/s, ETA 1m20s, epoch 1/3, loss 2.500, lr 1.00e-02, 12.0 images/s",
        "training: 7/12 steps (58%), 0.1 steps/s, ETA 50s, epoch 2/3, loss 2.500, lr 1.00e-02, 12.0 images/s",
        "training: 10/12 steps (83%), 0.1 steps/s, ETA 20s, epoch 3/3, loss 2.500, lr 1.00e-02, 12.0 images/s",
        "training: 12/12 steps (100%), 0.1 steps/s, done in 1m50s, epoch 3/3, loss 2.500, lr 1.00e-02, 12.0 images/s"]


# --- label ranges ----------------------------------------------------------------------------------

class _E:
    def __init__(self, label: int, line: int) -> None:
        self.label, self.line = label, line


def test_labels_are_made_contiguous_and_class_counts_checked(tmp_path):
    from imgfeat_cli.training.plan import relabel

    # PaddleClas's relabel: True (sorted ids -> 0..C-1): the classifier gets 4 outputs, not 40001
    entries = [_E(v, i + 1) for i, v in enumerate([40000, 0, 5, 999, 5])]
    assert relabel(entries, None, tmp_path) == [3, 0, 1, 2, 1]
    assert relabel([_E(0, 1), _E(2_000_000_000, 2)], None, tmp_path) == [0, 1]
    assert relabel(entries, 10, tmp_path) == [3, 0, 1, 2, 1]  # a larger head is allowed (PaddleX's class_num)
    with pytest.raises(UsageError, match="Train.num_classes is 3 but .* has 4 classes"):
        relabel(entries, 3, tmp_path)
    with pytest.raises(UsageError, match="Train.num_classes asks for a classifier of 5000000 classes"):
        relabel(entries, 5_000_000, tmp_path)


# --- the output folder of a run ----------------------------------------------------------------------

def _old_run(out):
    for name in ("latest", "best_model", "epoch_1"):
        (out / name).mkdir(parents=True)
        (out / name / f"{name}.pdparams").write_bytes(b"old " + name.encode())
    (out / "train.log").write_text("old log\n")
    (out / "config.yaml").write_text("old: 1\n")
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_workspace_keeps_the_replaced_run_until_commit_and_restores_it_on_failure(tmp_path):
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.workspace import Workspace

    out = tmp_path / "run"
    before = _old_run(out)
    with Workspace(out) as ws, pytest.raises(UsageError, match="already holds a training run"):
        ws.plan(TrainOptions("ds", output=str(out)))
    with Workspace(out) as ws:
        assert ws.plan(TrainOptions("ds", output=str(out), overwrite=True)) is None
        ws.begin()
        assert not (out / "latest").exists() and (out / ".previous-run" / "latest").is_dir()
        (out / "train.log").write_text("new log\n")  # what the new run wrote before failing
        ws.restore()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (out / "train.log").read_text() == "old log\n"

    with Workspace(out) as ws:
        ws.plan(TrainOptions("ds", output=str(out), overwrite=True))
        ws.begin()
        (out / "latest").mkdir()
        ws.commit()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml.bak", "latest", "train.log.bak"]
    assert (out / "train.log.bak").read_text() == "old log\n"


def test_workspace_repairs_what_a_killed_process_left(tmp_path):
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.workspace import Workspace

    def plan(**kw):
        with Workspace(out) as ws:
            return ws.plan(TrainOptions("ds", output=str(out), **kw))

    out = tmp_path / "run"
    before = _old_run(out)
    with Workspace(out) as ws:
        ws.plan(TrainOptions("ds", output=str(out), overwrite=True))
        ws.begin()
        (out / "config.yaml").write_text("new: 1\n")  # killed here: no checkpoint of the new run
    with pytest.raises(UsageError, match="already holds a training run"):
        plan()  # the next run finds the old one back
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before

    # killed after committing (the old run's files not yet moved to .bak): finished off
    with Workspace(out) as ws:
        ws.plan(TrainOptions("ds", output=str(out), overwrite=True))
        ws.begin()
        (out / "latest").mkdir()
        (out / ".previous-run").rename(out / ".previous-run.done")
    plan(overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml.bak", "latest", "train.log.bak"]

    # a checkpoint swap cut between its two renames
    (out / "latest").rename(out / ".latest.old")
    plan(overwrite=True)
    assert (out / "latest").is_dir() and not (out / ".latest.old").exists()


def test_workspace_refuses_outputs_it_cannot_use(tmp_path):
    from imgfeat_cli.training.options import TrainOptions
    from imgfeat_cli.training.workspace import Workspace

    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "is a file, not a folder")):
        with Workspace(out) as ws, pytest.raises(UsageError, match=needle):
            ws.plan(TrainOptions("ds", output=str(out)))
    assert (tmp_path / "file").read_text() == "x"


# --- Ctrl-C handling -------------------------------------------------------------------------------------

def test_run_signals_defer_an_abort_inside_protected_sections():
    import os
    import signal

    from imgfeat_cli.common.interrupt import RunSignals

    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    logged = []
    with RunSignals(logged.append).installed() as sig:
        with pytest.raises(KeyboardInterrupt):  # setup: at once
            ctrl_c()
    with RunSignals(logged.append).installed() as sig:
        sig.graceful = True
        ctrl_c()  # first: a request, no exception
        assert sig.stop_requested and not sig.aborted and "Ctrl-C again to abort" in logged[-1]
        reached = []
        with pytest.raises(KeyboardInterrupt):
            with sig.protected():
                ctrl_c()  # second, inside: deferred to the next safe point
                reached.append("after the signal")
                sig.check()
                reached.append("after check")
        assert reached == ["after the signal"]
    with RunSignals().installed() as sig:
        with pytest.raises(KeyboardInterrupt):  # deferred to the end of the section
            with sig.protected():
                ctrl_c()
                reached.append("end of section")
        assert reached[-1] == "end of section"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
