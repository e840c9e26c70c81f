"""Shared test fixtures: the CLI runner, small synthetic datasets, and ../shared material.

Material from ../shared is read in place; tests that need it skip with the reason when absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgfeat_cli.cli.app import app
from imgfeat_cli.core.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGFEAT_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material {path} is absent (set IMGFEAT_SHARED to its folder)")
    return path


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
