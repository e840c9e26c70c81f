"""Shared test fixtures: the CLI runner, small synthetic datasets, and ../shared material.

Material from ../shared is read in place; tests that need it skip with the reason when absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgfeat_cli.cli.app import app
from imgfeat_cli.datasets.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGFEAT_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material {path} is absent (set IMGFEAT_SHARED to its folder)")
    return path


@pytest.fixture(scope="module")
def model_dir() -> str:
    """The PP-ShiTuV2_rec reference fixture's inference folder (read only)."""
    return str(shared_path("fixtures", "ppshituv2_rec_seed0", "inference"))


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
