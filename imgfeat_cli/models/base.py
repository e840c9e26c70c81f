"""The recognition-model shape both families share: backbone -> neck (the feature) -> head."""
from __future__ import annotations

from typing import Optional

import paddle
import paddle.nn as nn


class RecModel(nn.Layer):
    """Subclasses set ``backbone``, ``neck`` and ``head`` (``None`` for inference-only models).

    ``forward`` returns the un-normalised feature, which is what the exported model returns;
    ``forward_train`` adds the head's logits for the classification loss.
    """

    backbone: nn.Layer
    neck: nn.Layer
    head: Optional[nn.Layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.neck(self.backbone(x))

    def forward_train(self, x: paddle.Tensor, label: Optional[paddle.Tensor] = None) -> dict:
        feat = self.forward(x)
        out = {"features": feat}
        if self.head is not None:
            out["logits"] = self.head(feat, label)
        return out

    def reparameterize(self) -> None:
        """Fold training-time branches for export; a no-op where there are none (ViT)."""
