"""The compact id maps (labels and input paths) behave as the dicts they replace."""
from __future__ import annotations

import copy
import pickle
import random
from collections import Counter

import numpy as np
import pytest

from imgfeat_cli.retrieval.idmap import IdMap, PathMap

ODD = ["a", "", "标签 0", "é", "🍵 tea", "line\nbreak", "tab\tx", "nul\x00x", "\udcff-not-utf8", "x" * 300]
BIG, SMALL = 2 ** 63 - 1, -(2 ** 63)


@pytest.fixture(params=[IdMap, PathMap])
def kind(request):
    return request.param


def test_lookups_and_order(kind):
    m = kind({5: "five", 1: "one", 3: "three"})
    assert list(m) == [1, 3, 5] and list(m.keys()) == [1, 3, 5]
    assert list(m.values()) == ["one", "three", "five"] and list(m.items()) == [(1, "one"), (3, "three"), (5, "five")]
    assert m[3] == "three" and m[np.int64(5)] == "five" and m.get(2) is None and m.get(2, "x") == "x"
    assert 1 in m and 2 not in m and 0 not in m and 6 not in m and "1" not in m and 1.0 not in m and None not in m
    for missing in (0, 2, 6, "3", None, 2 ** 70):
        with pytest.raises(KeyError):
            m[missing]
    assert (3, "three") in m.items() and (3, "one") not in m.items()
    assert "three" in m.values() and "thr" not in m.values() and 3 not in m.values()
    assert m.lookup([5, 2, 1, 5]) == ["five", None, "one", "five"] and m.lookup([]) == []
    assert m.max_id() == 5 and list(m.ids) == [1, 3, 5] and "3 items" in repr(m)
    with pytest.raises(ValueError):
        m.ids[0] = 7  # a read-only view


def test_empty_and_zero_length(kind):
    m = kind()
    assert len(m) == 0 and list(m) == [] and list(m.items()) == [] and m == {} and m.get(0) is None
    assert m.max_id() == -1 and m.max_id(default=7) == 7 and m.lookup([0, 1]) == [None, None]
    assert m.counts() == {} and len(m.ids_with("a")) == 0 and m.remove([1, 2]) == 0 and "0 items" in repr(m)
    m.add([], [])
    m.add(np.empty(0, np.int64), [])
    assert len(m) == 0 and m.remove([]) == 0
    m.add([0, 1, 2], ["", "b", ""])  # zero-length texts are texts
    assert m[0] == "" and m[2] == "" and list(m.ids_with("")) == [0, 2] and "" in m.values()
    assert m.remove([1]) == 1 and dict(m) == {0: "", 2: ""}
    with pytest.raises(ValueError):
        m.add([1, 2], ["only one"])


def test_add_appends_or_merges_like_a_dict(kind):
    m, d = kind(), {}
    m.add([10, 11], ["a", "b"])
    d.update({10: "a", 11: "b"})
    m.add([3, 11, 12, 12], ["c", "B", "d", "D"])  # below the max, a repeated id and a repeat in the batch
    d.update({3: "c", 11: "B", 12: "D"})
    m.add(np.array([20]), [7])  # not a string: stored as its text, as the index stored str(label)
    d[20] = "7"
    assert m == d and dict(m) == d and list(m) == sorted(d) and len(m) == len(d)


def test_huge_ids_and_unicode(kind):
    m = kind()
    m.add([SMALL, -1, 0, BIG], ODD[:4])
    assert m[SMALL] == ODD[0] and m[BIG] == ODD[3] and m.max_id() == BIG and BIG + 1 not in m
    assert m.lookup([BIG, SMALL, 5]) == [ODD[3], ODD[0], None]
    with pytest.raises(ValueError):
        m.add([2 ** 63], ["beyond 64 bits"])
    assert m.remove([2 ** 64, BIG]) == 1 and BIG not in m and len(m) == 3
    u = kind()
    u.add(range(len(ODD)), ODD)
    assert [u[i] for i in range(len(ODD))] == ODD and list(u.values()) == ODD
    assert all(list(u.ids_with(text)) == [i] for i, text in enumerate(ODD))
    assert pickle.loads(pickle.dumps(u)) == u and copy.deepcopy(u) == dict(enumerate(ODD))


def test_equals_the_dict_it_replaces_through_many_changes(kind):
    rng = random.Random(7)
    m, d, next_id = kind(), {}, 0
    labels = [f"c{i}" for i in range(40)] + ODD
    for step in range(300):  # appends in batches (growing the arrays past their first size), removals, merges
        if step % 7 == 3 and d:
            gone = rng.sample(sorted(d), min(len(d), rng.randint(1, 30))) + [next_id + 5, -3]
            assert m.remove(gone) == sum(1 for i in set(gone) if i in d)
            for i in gone:
                d.pop(i, None)
        elif step % 11 == 5:
            ids = [rng.randint(-50, next_id + 50) for _ in range(20)]
            texts = [rng.choice(labels) + str(rng.random()) for _ in ids]
            m.add(ids, texts)
            d.update(zip(ids, texts))
            next_id = max(next_id, max(ids) + 1)
        else:
            n = rng.randint(1, 200)
            texts = [rng.choice(labels) for _ in range(n)]
            m.add(np.arange(next_id, next_id + n), texts)
            d.update(zip(range(next_id, next_id + n), texts))
            next_id += n
    assert m == d and dict(m) == d and list(m.items()) == sorted(d.items()) and len(m) > 5000
    keys = list(d) + [next_id, -100]
    assert m.lookup(keys) == [d.get(k) for k in keys] and [m.get(k) for k in keys] == [d.get(k) for k in keys]
    assert m.counts() == Counter(d.values())
    some = rng.choice(labels)
    assert list(m.ids_with(some)) == sorted(k for k, v in d.items() if v == some)
    assert m != {**d, next_id: "x"} and m != {k: v + "!" for k, v in d.items()}


def test_labels_take_a_code_per_item():
    """12 bytes per item (id + code) and one string per distinct label, not a dict entry per item."""
    n = 200_000
    m = IdMap.from_arrays(np.arange(n), [f"class {i % 100}" for i in range(n)])
    assert m._ids.buf.nbytes + m._values.codes.buf.nbytes == 12 * n and len(m._values.names) == 100
    p = PathMap.from_arrays(np.arange(n), [f"/photos/{i:08d}.jpg" for i in range(n)])
    assert len(p._values.blob) == 20 * n and p[n - 1] == f"/photos/{n - 1:08d}.jpg"
    m.reserve(n + 10)  # a build that knows its size
    m.add([n], ["late"])
    assert m[n] == "late" and len(m) == n + 1
