"""Progress when stderr is not a terminal (CI, nohup) and what --quiet leaves on stdout (issue 16).

The periodic lines are driven by a fake clock: no test sleeps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgfeat_cli.cli import progress as cli_progress
from imgfeat_cli.cli.common import Output
from imgfeat_cli.cli.progress import PeriodicLines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_and_a_final_line():
    clock, lines = Clock(), []
    report = PeriodicLines(lines.append, "images", interval=30, clock=clock)
    report("embedding", 0, 1000)
    for t, done in ((10, 100), (29, 290), (31, 310), (45, 450), (61, 610), (62, 620)):
        clock.now = 1000 + t
        report("embedding", done, 1000)
    assert lines == ["embedding: 310/1,000 images (31%), 10.0 images/s, ETA 1m09s",
                     "embedding: 610/1,000 images (61%), 10.0 images/s, ETA 39s"]
    clock.now = 1100
    report("embedding", 1000, 1000)
    report("embedding", 1000, 1000)  # engines may repeat the last call: one final line
    assert lines[2:] == ["embedding: 1,000/1,000 images (100%), 10.0 images/s, done in 1m40s"]


def test_short_work_prints_nothing():
    clock, lines = Clock(), []
    report = PeriodicLines(lines.append, "images", interval=30, clock=clock)
    report("check", 0, 50)
    clock.now += 5
    report("check", 50, 50)
    assert lines == []


def test_tasks_are_reported_separately_with_rate_from_where_they_started():
    clock, lines = Clock(), []
    report = PeriodicLines(lines.append, "bytes", interval=30, clock=clock)
    report("Downloading a.tar", 50 << 20, 150 << 20)  # resumed at 50 MB
    report("Downloading b.tar", 0, None)
    clock.now += 40
    report("Downloading a.tar", 90 << 20, 150 << 20)
    report("Downloading b.tar", 4 << 20, None)
    assert lines == ["Downloading a.tar: 90.0 MB/150.0 MB (60%), 1.0 MB/s, ETA 1m00s",
                     "Downloading b.tar: 4.0 MB, 102.4 KB/s, ETA unknown"]


def test_extra_fields_follow_the_numbers():
    clock, lines = Clock(), []
    report = PeriodicLines(lines.append, "steps", interval=30, clock=clock)
    report("training", 0, 100)
    clock.now += 3600
    report("training", 60, 100, "epoch 3/5, loss 1.234")
    assert lines == ["training: 60/100 steps (60%), 0.0 steps/s, ETA 40m00s, epoch 3/5, loss 1.234"]


@pytest.mark.parametrize("json_mode,quiet,expect_lines", [(False, False, True), (False, True, False),
                                                           (True, False, False)])
def test_output_progress_without_a_terminal(capsys, json_mode, quiet, expect_lines):
    clock = Clock()
    out = Output(json_mode=json_mode, quiet=quiet)
    assert not out.interactive  # pytest captures stderr: not a terminal
    with out.progress("images", interval=30, clock=clock) as update:
        update("embedding", 0, 10)
        clock.now += 31
        update("embedding", 5, 10)
        clock.now += 31
        update("embedding", 10, 10)
    err = capsys.readouterr().err
    assert (err.splitlines() == ["embedding: 5/10 images (50%), 0.2 images/s, ETA 31s",
                                 "embedding: 10/10 images (100%), 0.2 images/s, done in 1m02s"]) is expect_lines, err


@pytest.fixture
def every_update(monkeypatch):
    """A line for every progress update (interval 0), so a short command shows its lines."""
    monkeypatch.setattr(cli_progress, "LINE_INTERVAL", 0.0)


def test_commands_report_progress_lines_in_logs(invoke, synth_ds, model_dir, tmp_path, every_update):
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "c")
    assert res.exit_code == 0 and "Decoding images: " in res.stderr and " images/s, " in res.stderr
    res = invoke("embed", synth_ds / "images", "--model-dir", model_dir, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 0 and "images (" in res.stderr and "images/s" in res.stderr
    assert "done in" in res.stderr


@pytest.mark.slow
def test_train_reports_steps_loss_and_eta_in_logs(invoke, synth_ds, tmp_path, every_update):
    res = invoke("train", "--dataset", synth_ds, "--output", tmp_path / "t", "-o", "Train.pretrain_weight_path=none",
                 "-o", "Train.input_size=32", "-o", "Train.batch_size=8", "-o", "Train.epochs_iters=3")
    assert res.exit_code == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("training: ")]
    assert lines and all(" steps/s, " in line and ", loss " in line and ", lr " in line and "images/s" in line
                         for line in lines)
    assert any("ETA" in line for line in lines) and lines[-1].count("done in") == 1


def test_quiet_prints_only_the_essential_result(invoke, synth_ds, model_dir, tmp_path):
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "c", "--quiet")
    assert res.exit_code == 0 and res.stdout == f"{tmp_path / 'c' / 'check_dataset_result.json'}\n" and res.stderr == ""
    out = tmp_path / "f.jsonl"
    res = invoke("embed", synth_ds / "images", "--model-dir", model_dir, "--out", out, "--quiet")
    assert res.exit_code == 0 and res.stdout == f"{out}\n" and res.stderr == ""
    res = invoke("split", "--dataset", synth_ds, "--quiet")
    assert res.exit_code == 0 and res.stdout == "" and res.stderr == ""
    from test_ordinary_errors import make_labelme

    res = invoke("convert", "--dataset", make_labelme(tmp_path / "lm"), "--out", tmp_path / "conv", "--quiet")
    assert res.exit_code == 0 and res.stdout == f"{tmp_path / 'conv'}\n" and res.stderr == ""
    for args in (["check", "--dataset", synth_ds, "--output", tmp_path / "c"], ["split", "--dataset", synth_ds]):
        full = invoke(*args, "--json")
        assert json.loads(full.stdout)  # --json stays the full document


def test_quiet_eval_and_download_print_the_path(invoke, tmp_path):
    from httpserver import Server

    for name in ("q", "g"):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            for i in range(3):
                fh.write(json.dumps({"input_path": f"{i}.jpg", "label": i, "feature": [1.0, float(i)]}) + "\n")
    res = invoke("eval", "--query", tmp_path / "q.jsonl", "--gallery", tmp_path / "g.jsonl",
                 "--output", tmp_path / "e", "--quiet")
    assert res.exit_code == 0 and res.stdout == f"{tmp_path / 'e' / 'evaluate_result.json'}\n"
    server = Server()
    try:
        url = server.add("/f.bin", b"abc")
        res = invoke("download", "url", url, "--out", tmp_path / "f.bin", "--quiet")
        assert res.exit_code == 0 and res.stdout == f"{tmp_path / 'f.bin'}\n" and res.stderr == ""
    finally:
        server.close()
    assert Path(tmp_path / "f.bin").read_bytes() == b"abc"


def test_tqdm_helper_for_the_python_api(capsys):
    from imgfeat_cli.common.progress import null_progress, tqdm_progress

    with tqdm_progress() as update:
        update("Embedding", 0, 5)
        update("Embedding", 3, 5)
        update("Embedding", 5, 5)
        update("Scoring", 2, None)
    err = capsys.readouterr().err
    assert "Embedding" in err and "5/5" in err and "Scoring" in err
    with tqdm_progress(enabled=False) as update:
        assert update is null_progress
