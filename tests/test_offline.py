"""Offline, every failure to fetch an official model names the same routes to a model (issue 21):
the quickstart's trained model, `imgfeat export`, a folder copied from a machine with internet and
IMGFEAT_BASE_URL; `train` names `-o Train.pretrain_weight_path=none`. Offline is IMGFEAT_OFFLINE=1
or a base URL on 127.0.0.1 where nothing listens."""
from __future__ import annotations

import socket

import pytest
from PIL import Image

from imgfeat_cli.models.hub import offline_hint

ROUTES = ("--model-dir DIR", "bash examples/quickstart.sh", "examples/output/inference",
          "imgfeat export --weights", "copied from a machine with internet", "IMGFEAT_BASE_URL")


@pytest.fixture(params=["IMGFEAT_OFFLINE", "unreachable"])
def offline(request, tmp_path, monkeypatch):
    """No network: either imgfeat is told so, or the mirror is a closed port on 127.0.0.1."""
    monkeypatch.setenv("IMGFEAT_HOME", str(tmp_path / "home"))  # nothing cached
    monkeypatch.delenv("IMGFEAT_OFFLINE", raising=False)
    if request.param == "IMGFEAT_OFFLINE":
        monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    else:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        monkeypatch.setenv("IMGFEAT_BASE_URL", f"http://127.0.0.1:{port}")
    return request.param


def _hint(res) -> str:
    hints = [line[len("Hint: "):] for line in res.stderr.splitlines() if line.startswith("Hint: ")]
    assert len(hints) == 1, res.stderr
    return hints[0]


def _photos(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "photos" / "a.jpg")
    return tmp_path / "photos"


@pytest.mark.parametrize("command", ["embed", "eval", "download"])
def test_every_failure_to_get_a_model_names_the_offline_routes_once(invoke, offline, tmp_path, synth_ds, command):
    args = {"embed": ("embed", _photos(tmp_path), "--out", tmp_path / "f.jsonl"),
            "eval": ("eval", "--dataset", synth_ds, "--model", "PP-ShiTuV2_rec", "--output", tmp_path / "ev"),
            "download": ("download", "model", "PP-ShiTuV2_rec")}[command]
    res = invoke(*args)
    assert res.exit_code == 1, res.output
    hint = _hint(res)
    assert offline_hint("PP-ShiTuV2_rec") in hint  # the one text, defined once in models/hub.py
    for route in ROUTES:
        assert hint.count(route) == 1, (route, hint)
    assert ("unset IMGFEAT_OFFLINE" in hint) == (offline == "IMGFEAT_OFFLINE")


def test_train_offline_names_training_from_random_initialisation(invoke, offline, tmp_path, synth_ds):
    res = invoke("train", "--dataset", synth_ds, "--output", tmp_path / "run", "-o", "Train.epochs_iters=1",
                 "-o", "Train.batch_size=8")
    assert res.exit_code == 1, res.output
    hint = _hint(res)
    assert "-o Train.pretrain_weight_path=none" in hint and hint.count("IMGFEAT_BASE_URL") == 1
    assert "imgfeat download model PP-ShiTuV2_rec --kind pretrained" in hint
    assert hint == offline_hint("PP-ShiTuV2_rec", "pretrained")
