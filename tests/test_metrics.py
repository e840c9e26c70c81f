"""Retrieval metrics against hand-computed cases (ties, unmatched queries, k > gallery, blocks)."""
from __future__ import annotations

import numpy as np
import pytest

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.retrieval.metrics import evaluate


def _unit(angles_deg):
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_hand_computed_recall_and_ap():
    # gallery at 0, 10, 20, 90 degrees; query at 0 degrees ranks them 0,10,20,90
    g = _unit([0, 10, 20, 90])
    q = _unit([0])
    # labels: relevant at ranks 2 and 4 -> AP = (1/2 + 2/4) / 2 = 0.5
    m = evaluate(q, ["a"], g, ["b", "a", "c", "a"], ks=[1, 2, 5])
    assert m.recall == {1: 0.0, 2: 1.0, 5: 1.0}  # k larger than the gallery is fine
    assert m.mAP == pytest.approx(0.5)


def test_queries_without_matches_are_left_out():
    g = _unit([0, 45])
    q = _unit([0, 45, 90])
    m = evaluate(q, [1, 2, 3], g, [1, 2], ks=[1])
    assert m.num_scored == 2 and m.num_queries == 3
    assert m.recall[1] == 1.0 and m.mAP == 1.0  # not 2/3: unmatched queries do not count


def test_ties_are_broken_by_gallery_order():
    g = _unit([30, 30, 30])  # identical similarity for all
    q = _unit([0])
    m = evaluate(q, ["x"], g, ["y", "x", "x"], ks=[1, 2])
    assert m.recall == {1: 0.0, 2: 1.0}
    assert m.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_self_match_and_exclusion():
    g = _unit([0, 20, 40])
    q = _unit([0])
    keep = evaluate(q, ["a"], g, ["a", "b", "a"], ks=[1], query_paths=["p0"], gallery_paths=["p0", "p1", "p2"])
    # ranking p0 (a), p1 (b), p2 (a): AP = (1/1 + 2/3) / 2
    assert keep.recall[1] == 1.0 and keep.mAP == pytest.approx((1 + 2 / 3) / 2)
    excl = evaluate(q, ["a"], g, ["a", "b", "a"], ks=[1], query_paths=["p0"], gallery_paths=["p0", "p1", "p2"],
                    exclude_same_path=True)
    # p0 removed: ranking p1 (b), p2 (a) -> recall@1 0, AP 1/2
    assert excl.recall[1] == 0.0 and excl.mAP == pytest.approx(0.5)


def test_blocks_give_the_same_result_as_one_pass():
    rng = np.random.default_rng(0)
    g, q = rng.standard_normal((300, 16)), rng.standard_normal((97, 16))
    gl, ql = rng.integers(0, 20, 300), rng.integers(0, 25, 97)
    one = evaluate(q, ql, g, gl, ks=[1, 5, 10])
    tiny = evaluate(q, ql, g, gl, ks=[1, 5, 10], budget=300 * 7)  # blocks of 7 queries
    assert one.recall == tiny.recall and one.mAP == pytest.approx(tiny.mAP, abs=1e-12)
    # brute-force reference for mAP
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    aps = []
    for i in range(len(q)):
        order = np.argsort(-(gn @ qn[i]), kind="stable")
        rel = gl[order] == ql[i]
        if rel.any():
            ranks = np.nonzero(rel)[0] + 1
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    assert one.mAP == pytest.approx(np.mean(aps), abs=1e-6)


def test_bad_inputs():
    with pytest.raises(UsageError, match="feature shapes do not fit"):
        evaluate(np.zeros((2, 3)), [0, 1], np.zeros((2, 4)), [0, 1])
    with pytest.raises(UsageError, match="exactly one label"):
        evaluate(np.ones((2, 3)), [0], np.ones((2, 3)), [0, 1])
    with pytest.raises(UsageError, match="needs the paths"):
        evaluate(np.ones((1, 3)), [0], np.ones((2, 3)), [0, 1], exclude_same_path=True)


@pytest.mark.parametrize("value, key", [(1, 1), (1.0, 1), ("1", 1), (" 01 ", 1), ("1.0", 1), (np.int64(7), 7),
                                        (np.float32(2.0), 2), (1.5, 1.5), ("1.50", 1.5), ("cat", "cat"),
                                        (" cat ", "cat"), ("Cat", "Cat"), ("4006381333931", 4006381333931),
                                        ("nan", "nan"), ("1e3", 1000)])
def test_label_key_compares_numbers_by_value_and_text_as_text(value, key):
    from imgfeat_cli.retrieval.metrics import label_key
    got = label_key(value)
    assert got == key and type(got) is type(key)


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}, "", "   ", float("nan"), float("inf")])
def test_label_key_refuses_what_is_not_a_label(value):
    from imgfeat_cli.retrieval.metrics import label_key
    with pytest.raises(ValueError):
        label_key(value)


def test_float_and_int_labels_match():
    g = _unit([0, 90])
    m = evaluate(_unit([0, 90]), [1.0, 2.0], g, [1, 2], ks=[1])
    assert m.num_scored == 2 and m.recall[1] == 1.0


def test_no_scorable_query_raises_instead_of_zero_metrics():
    g = _unit([0, 90])
    with pytest.raises(UsageError, match="no query can be scored"):
        evaluate(_unit([0]), ["x"], g, [1, 2], ks=[1])
    with pytest.raises(UsageError, match="only same-label gallery items have its own path"):
        evaluate(_unit([0]), [1], g, [1, 2], ks=[1], query_paths=["a"], gallery_paths=["a", "b"],
                 exclude_same_path=True)
    with pytest.raises(UsageError, match="gallery label 1 \\(0-based\\)"):
        evaluate(_unit([0]), [1], g, [1, None], ks=[1])
