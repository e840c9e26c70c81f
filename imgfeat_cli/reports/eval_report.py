"""``imgfeat eval --report DIR``: metrics, the Recall@k curve, per-class figures, the most confused
class pairs and the worst queries with their top-k matches, on one offline page.

:class:`EvalReport` is made before the evaluation (the folder and the options are checked then),
is handed to the evaluation as its ``collect`` (it keeps each query's ranking through a
:class:`~imgfeat_cli.retrieval.ranking.QueryRanking`), and :meth:`EvalReport.write` renders the
page. Every table and the number of thumbnails are capped (:mod:`imgfeat_cli.reports.limits`), so
the report of 100,000 queries is as small as that of 1,000; the page says what it left out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from imgfeat_cli.reports import limits
from imgfeat_cli.reports.matches import MatchRow, Tile
from imgfeat_cli.reports.render import write_page
from imgfeat_cli.reports.target import ASSETS, PAGE, ReportDir, write_manifest
from imgfeat_cli.reports.thumbs import Thumbnails, locate
from imgfeat_cli.retrieval.metrics import RetrievalMetrics
from imgfeat_cli.retrieval.ranking import QueryRanking

CURVE = f"{ASSETS}/recall_at_k.png"


def draw_recall_curve(curve: np.ndarray, ks: Sequence[int], dest: Path) -> None:
    """Recall@k for k = 1..len(curve), the requested ks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    x = np.arange(1, len(curve) + 1)
    ax.plot(x, curve, color="#0969da", linewidth=1.8)
    marked = [k for k in ks if k <= len(curve)]
    ax.scatter(marked, [curve[k - 1] for k in marked], color="#cf222e", zorder=3)
    for k in marked:
        ax.annotate(f"R@{k} {curve[k - 1]:.3f}", (k, curve[k - 1]), textcoords="offset points", xytext=(6, -12),
                    fontsize=8)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(max(0.0, float(curve.min()) - 0.05) if len(curve) else 0.0, 1.005)
    ax.set_xlim(0.5, len(curve) + 0.5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest, format="png", dpi=100)
    plt.close(fig)


class EvalReport:
    """One eval report (module doc); pass it as ``collect=`` to the evaluation, then :meth:`write`."""

    def __init__(self, folder: str, overwrite: bool = False, rows: int = limits.DEFAULT_QUERY_ROWS,
                 image_root: Optional[str] = None, ks: Sequence[int] = (1, 5)) -> None:
        self.rows = limits.query_rows(rows)
        self.target = ReportDir(folder, overwrite)
        self.image_root = Path(image_root) if image_root else None
        self.ks = sorted(set(ks))
        self.ranking = QueryRanking(top_k=min(max(5, self.ks[-1]), limits.MAX_MATCHES))

    # the evaluation's collector interface
    def begin(self, *args: Any) -> None:
        self.ranking.begin(*args)

    def block(self, *args: Any) -> None:
        self.ranking.block(*args)

    def _path(self, paths: Optional[Sequence[str]], i: int) -> Optional[Path]:
        return locate(paths[i], self.image_root) if paths is not None else None

    def _rows(self, thumbs: Thumbnails) -> List[MatchRow]:
        r = self.ranking
        out = []
        for q in r.worst(self.rows):
            label = r.query_labels[q]
            query = thumbs.get(self._path(r.query_paths, q))
            caption = r.query_paths[q] if r.query_paths is not None else f"query #{q + 1}"
            tiles = [Tile(query.src, str(label), caption=caption, missing=query.missing)]
            for g, score in zip(r.top_ids[q], r.top_scores[q]):
                t = thumbs.get(self._path(r.gallery_paths, int(g)))
                glabel = r.gallery_labels[int(g)]
                tiles.append(Tile(t.src, str(glabel), float(score), glabel == label,
                                  r.gallery_paths[int(g)] if r.gallery_paths is not None else f"gallery #{g + 1}",
                                  t.missing))
            out.append(MatchRow(tiles[0], tiles[1:], f"query #{q + 1}: first correct match at rank "
                                                      f"{r.first_hit[q]}, AP {r.ap[q]:.3f}"))
        return out

    def write(self, metrics: RetrievalMetrics) -> Path:
        """Render the report into the folder; return the page's path."""
        r = self.ranking
        worst = r.worst(self.rows)
        thumbs = Thumbnails()
        for q in worst:
            thumbs.want(self._path(r.query_paths, q))
            for g in r.top_ids[q]:
                thumbs.want(self._path(r.gallery_paths, int(g)))
        curve_k = max(1, min(limits.MAX_CURVE_K, metrics.num_gallery))
        classes = r.per_class()
        pairs = r.confused_pairs()
        with self.target.staging() as stage:
            thumbs.make(stage)
            draw_recall_curve(r.recall_curve(curve_k), self.ks, stage / CURVE)
            counts = {"queries": metrics.num_queries, "scored": metrics.num_scored, "gallery": metrics.num_gallery,
                      "unscorable": metrics.num_queries - metrics.num_scored, "classes": len(classes),
                      "pairs": len(pairs), "thumbnails": thumbs.count}
            caps = {"query_rows": self.rows, "matches": r.top_k, "class_rows": limits.MAX_CLASS_ROWS,
                    "pair_rows": limits.MAX_PAIR_ROWS, "thumbnails": limits.MAX_THUMBNAILS,
                    "thumbnail_side": limits.THUMB_SIDE}
            write_page(stage, PAGE, "eval.html", title="imgfeat eval report",
                       subtitle=f"{metrics.num_queries} queries against {metrics.num_gallery} gallery items",
                       metrics=list(metrics.metrics().items()), counts=counts, curve=CURVE, curve_k=curve_k,
                       classes=classes[:limits.MAX_CLASS_ROWS], pairs=pairs[:limits.MAX_PAIR_ROWS],
                       rows=self._rows(thumbs), top_k=r.top_k,
                       caps_note=f"Caps: {self.rows} worst queries (--report-rows), {limits.MAX_CLASS_ROWS} "
                                 f"classes, {limits.MAX_PAIR_ROWS} class pairs, thumbnails of at most "
                                 f"{limits.THUMB_SIDE} px.")
            write_manifest(stage, "eval", caps, counts)
        return self.target.path / PAGE
