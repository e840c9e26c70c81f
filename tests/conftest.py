"""Shared test fixtures: the CLI runner, small synthetic datasets, models the project builds
itself (seeded random weights, exported once per session), and ../shared material.

Only upstream-parity tests use ../shared (read in place); they skip with the reason when absent.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgfeat_cli.cli.app import app
from imgfeat_cli.datasets.synthetic import make_dataset

# A shell without job control starts background commands (`bash .ci/run &`, nohup ... &) with
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler, in this process nor in the
# processes it starts: the Ctrl-C tests would test nothing. They are about a terminal's Ctrl-C, so the
# suite restores the default (an installed handler is reset to SIG_DFL across exec in child processes).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGFEAT_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material {path} is absent (set IMGFEAT_SHARED to its folder)")
    return path


#: Tiny ViT sizes (as the upstream tiny fixtures): the CLIP code paths at a fraction of the cost.
TINY_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """A cache of the session's own (converted models, engine decisions), never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGFEAT_HOME", str(tmp_path_factory.mktemp("imgfeat-home")))
        yield


@pytest.fixture(scope="session")
def built_models(tmp_path_factory) -> dict:
    """Inference folders exported by the project itself, seeded: PP-ShiTuV2_rec (the official
    architecture) and tiny CLIP ViT-B / ViT-L variants. Treat them as read only."""
    from imgfeat_cli.models.export import export_seeded

    root = tmp_path_factory.mktemp("models")
    out = {"PP-ShiTuV2_rec": str(root / "shitu")}
    export_seeded("PP-ShiTuV2_rec", out["PP-ShiTuV2_rec"], seed=0)
    for name, key in (("PP-ShiTuV2_rec_CLIP_vit_base", "clip_base"), ("PP-ShiTuV2_rec_CLIP_vit_large", "clip_large")):
        out[name] = str(root / key)
        export_seeded(name, out[name], seed=0, arch=TINY_VIT)
    return out


@pytest.fixture(scope="session")
def model_dir(built_models) -> str:
    """A PP-ShiTuV2_rec inference folder with seeded random weights (read only)."""
    return built_models["PP-ShiTuV2_rec"]


def make_photos(root: Path, sizes: list, seed: int, subdir_odd: bool = False) -> Path:
    """Small random JPEGs named p00.jpg...; odd ones in ``b/`` when ``subdir_odd``."""
    rng = np.random.default_rng(seed)
    (root / "b").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        sub = root / ("b" if subdir_odd and i % 2 else "")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(sub / f"p{i}.jpg")
    return root


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner):
    def _invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)
    return _invoke


@pytest.fixture
def synth_ds(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    make_dataset(root, num_classes=4, per_class=6, size=32, seed=1)
    return root
