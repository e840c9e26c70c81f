"""Inference streams (model replicas in worker processes): same output as one process, errors,
interruption, and the plan. Each worker imports paddle (~2 s), so the jobs here are small."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photos
from imgfeat_cli import create_model

from imgfeat_cli.pipeline import embedder
from imgfeat_cli import embed as run_embed
from imgfeat_cli.common.errors import Interrupted, ModelError, UsageError


@pytest.fixture
def photos(tmp_path) -> Path:
    root = make_photos(tmp_path / "photos", [(30 + i, 40) for i in range(22)], seed=2)
    (root / "p5.jpg").write_bytes((root / "p5.jpg").read_bytes()[:100])  # truncated
    return root


def _rows(out: Path) -> dict:
    return {r["input_path"]: r["feature"] for r in map(json.loads, out.read_text().splitlines())}


def test_streams_give_the_same_output_as_one_process(photos, model_dir, tmp_path):
    model = create_model(model_dir=model_dir, cpu_threads=1)
    one = run_embed([str(photos)], str(tmp_path / "one.jsonl"), model, batch_size=4, streams=1)
    two = run_embed([str(photos)], str(tmp_path / "two.jsonl"), model, batch_size=4, streams=3)
    assert one.streams == 1 and two.streams == 3  # the parent (1 thread, like the plan) + 2 workers
    assert two.embedded == one.embedded == 21 and two.failed == one.failed == 1
    lines_one = (tmp_path / "one.jsonl").read_text().splitlines()
    lines_two = (tmp_path / "two.jsonl").read_text().splitlines()
    assert [json.loads(l)["input_path"] for l in lines_two] == [json.loads(l)["input_path"] for l in lines_one]
    a, b = _rows(tmp_path / "one.jsonl"), _rows(tmp_path / "two.jsonl")
    for k in a:  # same batches, same predictor configuration: identical floats
        np.testing.assert_array_equal(np.float32(a[k]), np.float32(b[k]))
    errs = (tmp_path / "two.jsonl.errors.jsonl").read_text()
    assert "p5.jpg" in errs and "truncated" in errs


def test_persistent_streams_are_reused_and_closed(photos, model_dir, tmp_path):
    with create_model(model_dir=model_dir, cpu_threads=1) as model:
        model.start_streams(1)
        pool = model.stream_pool
        for name in ("a.npy", "b.npy"):
            res = run_embed([str(photos)], str(tmp_path / name), model, fmt="npy", batch_size=4)
            assert res.streams == 2 and model.stream_pool is pool
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
        alone = run_embed([str(photos)], str(tmp_path / "c.npy"), model, fmt="npy", batch_size=4, streams=1)
        assert alone.streams == 1 and model.stream_pool is pool  # --streams 1 bypasses the pool
        procs = list(pool.procs)
    assert model.stream_pool is None and all(not p.is_alive() for p in procs)


def test_a_stream_that_cannot_start_is_a_clear_error(photos, model_dir, tmp_path):
    model = create_model(model_dir=model_dir)
    model.recipe = dict(model.recipe, model_dir=str(tmp_path / "gone"))
    with pytest.raises(ModelError, match=r"inference stream \d could not start: .*gone"):  # either may fail first
        run_embed([str(photos)], str(tmp_path / "x.jsonl"), model, batch_size=4, streams=2)
    assert not (tmp_path / "x.jsonl").exists()


def test_interrupted_streams_resume_without_duplicates(photos, model_dir, tmp_path):
    model = create_model(model_dir=model_dir, cpu_threads=1)
    out = tmp_path / "f.jsonl"
    calls = {"n": 0}

    def stop() -> bool:  # checked once per written batch
        calls["n"] += 1
        return calls["n"] >= 2

    with pytest.raises(Interrupted):
        run_embed([str(photos)], str(out), model, batch_size=4, streams=2, stop=stop)
    res = run_embed([str(photos)], str(out), model, batch_size=4, streams=2, resume=True)
    assert res.already_done == 8 and res.embedded == 13 and res.failed == 1  # p5 is retried, fails again
    assert len(out.read_text().splitlines()) == 21 == len(_rows(out))


def test_plan(monkeypatch):
    plan, Plan = embedder.plan_streams, embedder.StreamPlan
    monkeypatch.setattr(embedder, "cpu_count", lambda: 2)
    assert plan(None, None, 10, "cpu") == Plan(1, 2)  # small job: one process
    assert plan(None, None, 5000, "cpu") == Plan(2, 1)
    assert plan(None, None, 5000, "cpu", parent_joins=True) == Plan(2, 1, True)
    assert plan(None, None, 5000, "gpu:0") == Plan(1, 2)
    assert plan(None, None, 5000, "cpu", rebuildable=False) == Plan(1, 2)
    assert plan(3, None, 10, "cpu") == Plan(3, 1)
    monkeypatch.setattr(embedder, "cpu_count", lambda: 16)
    assert plan(None, None, 5000, "cpu") == Plan(4, 4)
    monkeypatch.setattr(embedder, "cpu_count", lambda: 128)
    assert plan(None, None, 5000, "cpu") == Plan(8, 4)  # memory: at most 8 replicas
    with pytest.raises(UsageError, match="needs an inference folder on CPU"):
        plan(2, None, 10, "cpu", rebuildable=False)


def test_cli_streams(invoke, photos, model_dir, tmp_path):
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "c.jsonl", "-b", 4,
                 "--streams", 2, "--json")
    assert res.exit_code == 4, res.output  # one input skipped
    doc = json.loads(res.stdout)
    assert doc["streams"] == 2 and doc["embedded"] == 21
    bad = invoke("embed", photos, "--weights", tmp_path / "w.pdparams", "--model", "PP-ShiTuV2_rec",
                 "--out", tmp_path / "d.jsonl", "--streams", 2)
    assert bad.exit_code == 2 and "needs an inference folder on CPU" in bad.stderr
    plain = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "p.jsonl", "--json")
    assert json.loads(plain.stdout)["batch_size"] == 8 and json.loads(plain.stdout)["streams"] == 1  # CPU defaults
    zero = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "e.jsonl", "--streams", 0)
    assert zero.exit_code == 2 and "Predict.streams" in zero.stderr
