"""PK sampler and recipe losses, against hand-computed values."""
from __future__ import annotations

from collections import Counter

import numpy as np
import paddle
import pytest

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.training.losses import label_smoothing_ce, triplet_angular_margin_loss
from imgfeat_cli.training.sampler import PKSampler


def test_pk_batches_have_p_labels_times_k():
    labels = [0] * 10 + [1] * 6 + [2] * 2 + [3] * 8
    s = PKSampler(labels, batch_size=8, k=4, seed=1)
    assert len(s) == 26 // 8
    for batch in s:
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 8 and len(counts) == 2 and set(counts.values()) == {4}
    # the class with 2 images is sampled with replacement when drawn: 4 slots from 2 distinct images
    small = [b for seed in range(30) for b in PKSampler(labels, 8, 4, seed=seed) if any(labels[i] == 2 for i in b)]
    assert small, "class 2 was never drawn in 30 epochs"
    for b in small:
        picks = [i for i in b if labels[i] == 2]
        assert len(picks) == 4 and set(picks) <= {16, 17}


def test_pk_sampler_resume_reproduces_batches():
    labels = list(np.repeat(np.arange(6), 5))
    a = PKSampler(labels, 8, seed=7)
    first = list(a)
    state = a.state_dict()
    second = list(a)
    b = PKSampler(labels, 8, seed=999)
    b.set_state_dict(state)
    assert list(b) == second and first != second


def test_pk_sampler_errors_name_the_numbers():
    with pytest.raises(UsageError, match=r"3 classes x 4 images per class = 12 < batch size 16"):
        PKSampler([0, 1, 2] * 4, batch_size=16)
    with pytest.raises(UsageError, match="batch size 10 is not a multiple of 4"):
        PKSampler([0, 1, 2] * 4, batch_size=10)


def test_triplet_angular_margin_loss_hand_computed():
    # 2-D unit features: a0 at 0 deg, a1 at 60 deg (label 0); b0 at 90 deg (label 1)
    ang = np.deg2rad([0.0, 60.0, 90.0])
    feats = paddle.to_tensor(np.stack([np.cos(ang), np.sin(ang)], 1).astype("float32") * 3.0)
    labels = paddle.to_tensor(np.array([0, 0, 1], dtype="int64"))
    loss = float(triplet_angular_margin_loss(feats, labels))
    c60, c90, c30 = 0.5, 0.0, np.cos(np.deg2rad(30))
    # per anchor: (s_ap, s_an): a0 (cos60, cos90), a1 (cos60, cos30), b0 (1 [self only], cos30)
    s_ap = np.array([c60, c60, 1.0])
    s_an = np.array([c90, c30, c30])
    expected = np.maximum(0, s_an - s_ap + 0.5).mean() + 0.1 * (np.maximum(0, 0.8 - s_ap).mean()
                                                               + np.maximum(0, s_an - 0.4).mean())
    assert loss == pytest.approx(expected, abs=1e-6)


def test_triplet_loss_is_zero_when_classes_are_separated():
    # a true hinge: well-separated classes give exactly 0 (upstream's quirk would give 0.1 * 1)
    feats = paddle.to_tensor(np.array([[1, 0], [1, 0.01], [-1, 0], [-1, 0.01]], "float32"))
    labels = paddle.to_tensor(np.array([0, 0, 1, 1], dtype="int64"))
    assert float(triplet_angular_margin_loss(feats, labels)) == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_ce():
    logits = paddle.to_tensor(np.array([[2.0, 0.0, -1.0]], "float32"))
    labels = paddle.to_tensor(np.array([0], dtype="int64"))
    p = np.exp([2.0, 0.0, -1.0])
    logp = np.log(p / p.sum())
    target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert float(label_smoothing_ce(logits, labels)) == pytest.approx(-(target * logp).sum(), abs=1e-6)
