"""The inference export each checkpoint carries, staged once per epoch.

Evaluation scores the export (paddle.inference), and that very folder is then moved into the
epoch's checkpoint, so the recorded score is what the saved ``inference/`` gets. An export is made
from a head-less copy of the model (the classifier is training-only) with the same code as
``imgfeat export``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List

from imgfeat_cli.models.registry import build_model

STAGED = ".staged-inference"


class StagedExport:
    def __init__(self, out: Path, model_name: str, arch: Dict[str, Any], ops: List[Dict[str, Any]]) -> None:
        self.path = out / STAGED
        self.model_name, self.arch, self.ops = model_name, arch, ops

    def clear(self) -> None:
        """Drop a stale export (e.g. left by a crashed run): it never stands for other weights."""
        shutil.rmtree(self.path, ignore_errors=True)

    def stage(self, model: Any) -> Path:
        """Export ``model``'s current weights to the staging folder."""
        from imgfeat_cli.models.export import export_layer

        self.clear()
        params = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
        layer = build_model(self.model_name, num_classes=None, arch=self.arch)
        layer.set_state_dict(params)
        export_layer(self.model_name, layer, str(self.path), self.ops)
        return self.path

    def place(self, model: Any, dest: Path) -> None:
        """Move the staged export (made now when none is staged) to ``dest``."""
        if not self.path.is_dir():
            self.stage(model)
        self.path.rename(dest)
