"""Losses of the PP-ShiTuV2_rec recipe.

``triplet_angular_margin_loss``: on L2-normalised features with the similarity matrix, the hardest
positive is the least similar same-label item and the hardest negative the most similar other-label
item; the loss is ``mean(max(0, s_an - s_ap + 0.5)) + 0.1 * (mean(max(0, 0.8 - s_ap)) +
mean(max(0, s_an - 0.4)))``. Upstream's anchor-negative term yields 1 instead of 0 when it is not
positive (a quirk that adds a constant and blocks no gradient, but misreports the loss); here every
term is a true hinge.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F


def triplet_angular_margin_loss(features: paddle.Tensor, labels: paddle.Tensor, margin: float = 0.5,
                                ap_value: float = 0.8, an_value: float = 0.4,
                                feature_weight: float = 0.1) -> paddle.Tensor:
    x = F.normalize(features, axis=1)
    sim = paddle.matmul(x, x, transpose_y=True)
    lab = labels.reshape([-1, 1])
    is_pos = paddle.equal(lab, lab.t()).astype(sim.dtype)
    is_neg = 1.0 - is_pos
    # hardest positive: min over positives (non-positives pushed above any similarity)
    s_ap = paddle.min(sim * is_pos + 3.0 * is_neg, axis=1)
    # hardest negative: max over negatives (non-negatives pushed below any similarity)
    s_an = paddle.max(sim * is_neg - 3.0 * is_pos, axis=1)
    has_neg = paddle.max(is_neg, axis=1)
    s_an = paddle.where(has_neg > 0, s_an, paddle.full_like(s_an, -1.0))
    triplet = F.relu(s_an - s_ap + margin).mean()
    feat_term = F.relu(ap_value - s_ap).mean() + F.relu(s_an - an_value).mean()
    return triplet + feature_weight * feat_term


def label_smoothing_ce(logits: paddle.Tensor, labels: paddle.Tensor, epsilon: float = 0.1) -> paddle.Tensor:
    """Cross entropy with label smoothing (the CE part of the PP-ShiTuV2 recipe)."""
    n = logits.shape[-1]
    one_hot = F.one_hot(labels.reshape([-1]), n)
    target = one_hot * (1.0 - epsilon) + epsilon / n
    return -(target * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()
