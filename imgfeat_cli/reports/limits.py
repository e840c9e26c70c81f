"""Caps that keep a report small whatever the size of the dataset (each page states the ones it hit).

A thumbnail is at most :data:`THUMB_SIDE` pixels per side (about 4-10 KB); a report holds at most
:data:`MAX_THUMBNAILS` of them (a few tens of MB at worst) and its page at most the row caps below,
so a report on 100,000 queries is the size of one on 1,000.
"""
from __future__ import annotations

#: Longest side of a thumbnail, in pixels, and its JPEG quality.
THUMB_SIDE = 160
THUMB_QUALITY = 80
#: Thumbnails per report, whatever the rows ask for.
MAX_THUMBNAILS = 6000
#: Query rows (each with its top-k matches) shown by default, and the most ``--report-rows`` allows.
DEFAULT_QUERY_ROWS = 50
MAX_QUERY_ROWS = 500
#: Matches shown per query row.
MAX_MATCHES = 10
#: Rows of the per-class table (the worst classes first) and of the confused-pairs table.
MAX_CLASS_ROWS = 1000
MAX_PAIR_ROWS = 100
#: Problems listed by a check report (errors first), and how many of them get thumbnails.
MAX_PROBLEM_ROWS = 1000
MAX_PROBLEM_THUMB_ROWS = 300
#: Largest k of the Recall@k curve.
MAX_CURVE_K = 50


def query_rows(n: int) -> int:
    """``--report-rows`` checked against its cap (a usage error before any work)."""
    from imgfeat_cli.common.errors import UsageError

    if not 1 <= n <= MAX_QUERY_ROWS:
        raise UsageError(f"--report-rows {n} is out of range", hint=f"give 1..{MAX_QUERY_ROWS}")
    return n
