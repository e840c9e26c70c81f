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
    assert len(s) == 26 // 8
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


def test_check_labels_refuses_absurd_class_counts(tmp_path):
    from imgfeat_cli.training.setup import check_labels

    entries = [_E(v, i + 1) for i, v in enumerate([0, 5, 999, 40000])]
    assert check_labels(entries, None, tmp_path) == 40001  # sparse: a warning elsewhere, not an error
    with pytest.raises(UsageError, match=r"\(2000000000\) asks for a classifier of 2000000001 classes, above") as err:
        check_labels([_E(0, 1), _E(2_000_000_000, 2)], None, tmp_path)
    assert "renumber the labels of train.txt to 0..1" in err.value.hint
    with pytest.raises(UsageError, match="Train.num_classes asks for a classifier of 5000000 classes"):
        check_labels(entries, 5_000_000, tmp_path)


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
