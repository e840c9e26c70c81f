"""Helpers of the `imgfeat serve` tests: a small gallery and its index, settings, real servers.

Real servers are `imgfeat serve` processes on 127.0.0.1 and a free port, started with `--json`:
the first stdout document says where they listen; `/readyz` says when they answer.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import requests

from imgfeat_cli.common import config as cfgmod
from imgfeat_cli.datasets.synthetic import make_dataset

ENTRY = "from imgfeat_cli.cli.entry import main; main()"


def make_gallery(root: Path) -> Path:
    """4 classes x 5 synthetic images under ``root/images/cNN/``; ``gallery.list`` names the first
    3 of each class (label ``cNN``), the other 2 are left for adding."""
    make_dataset(root, num_classes=4, per_class=5, size=48, seed=3)
    lines = [f"images/c{c:02d}/{i:03d}.jpg c{c:02d}" for c in range(4) for i in range(3)]
    (root / "gallery.list").write_text("\n".join(lines) + "\n")
    return root


def extra_images(ds: Path) -> List[Path]:
    """The images ``gallery.list`` leaves out."""
    return [ds / f"images/c{c:02d}/{i:03d}.jpg" for c in range(4) for i in (3, 4)]


def build(ds: Path, out: Path, model: Any) -> Path:
    from imgfeat_cli.retrieval.builder import build_index

    build_index(str(ds / "gallery.list"), str(out), model=model)
    return out


def copy_index(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def settings(model_dir: str, indexes: List[Path], data_dir: Path, **serve: Any) -> Any:
    """Checked settings as `imgfeat serve` would make them (Serve.* keys in ``serve``)."""
    from imgfeat_cli.serve.settings import from_config

    flags: Dict[str, Any] = {"Predict.model_dir": model_dir, "Serve.data_dir": str(data_dir)}
    flags.update({f"Serve.{k}": v for k, v in serve.items()})
    cfg = cfgmod.resolve("serve", None, [], flags)
    return from_config(cfg, [str(p) for p in indexes], lambda line: None)


@pytest.fixture(scope="session")
def serve_model(model_dir):
    """The seeded PP-ShiTuV2_rec, loaded as the server loads it (shared by the in-process apps)."""
    from imgfeat_cli.serve import backend

    return backend.load_model(settings(model_dir, [], Path("unused")).model, 8, lambda line: None)


@pytest.fixture(scope="session")
def template(tmp_path_factory, serve_model):
    root = tmp_path_factory.mktemp("serve-gallery")
    ds = make_gallery(root / "ds")
    return ds, build(ds, root / "idx", serve_model)


@pytest.fixture
def ds(template):
    """The gallery's images (read only)."""
    return template[0]


@pytest.fixture
def idx(template, tmp_path):
    """A fresh copy of the gallery's index (12 items, labels c00..c03), served as 'idx'."""
    return copy_index(template[1], tmp_path / "idx")


class LiveServer:
    """An `imgfeat serve` process; ``url`` once it listens."""

    def __init__(self, args: List[str], cwd: Path, timeout: float = 120.0) -> None:
        self.log = cwd / f"server-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen([sys.executable, "-c", ENTRY, "serve", "--port", "0", "--json", *args],
                                     stdout=subprocess.PIPE, stderr=open(self.log, "wb"), cwd=cwd, text=True)
        self.url = self._read_url(timeout)
        self.wait_ready(timeout)

    def _read_url(self, timeout: float) -> str:
        text, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"the server exited ({self.proc.wait()}): {self.stderr()}")
            text += line
            try:
                return json.loads(text)["url"]
            except ValueError:
                continue
        raise AssertionError(f"no URL within {timeout} s: {self.stderr()}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.stderr()}")
            time.sleep(0.1)
        raise AssertionError(f"not ready within {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)


def post_image(url: str, path: Path, token: Optional[str] = None, **fields: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with open(path, "rb") as fh:
        return requests.post(url, files=[("image", (path.name, fh.read(), "image/jpeg"))],
                             data={k: str(v) for k, v in fields.items()}, headers=headers, timeout=60)
