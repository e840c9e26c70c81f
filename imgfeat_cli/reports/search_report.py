"""``imgfeat search --report DIR``: the first queries with their top matches as thumbnails.

:class:`SearchReport` is made before the search (the folder and options are checked then);
:meth:`SearchReport.watch` passes the results through unchanged (they still stream to stdout or
``--out``) while keeping the first ``rows`` of them, so a search of 100,000 queries holds only
those in memory; :meth:`SearchReport.write` renders the page. Gallery thumbnails come from the
input paths the index records (``imgfeat_index.json``); an index another tool built has none, and
its matches show as labelled placeholders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from imgfeat_cli.reports import limits
from imgfeat_cli.reports.matches import MatchRow, Tile
from imgfeat_cli.reports.render import write_page
from imgfeat_cli.reports.target import PAGE, ReportDir, write_manifest
from imgfeat_cli.reports.thumbs import Thumbnails, locate

#: Failed inputs listed by a search report.
MAX_ERROR_ROWS = 200




class SearchReport:
    """One search report (module doc)."""

    def __init__(self, folder: str, overwrite: bool = False, rows: int = limits.DEFAULT_QUERY_ROWS,
                 image_root: Optional[str] = None) -> None:
        self.rows = limits.query_rows(rows)
        self.target = ReportDir(folder, overwrite)
        self.image_root = Path(image_root) if image_root else None
        self.kept: List[Dict[str, Any]] = []
        self.total = 0
        self.no_match = 0

    def watch(self, results: Iterable[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        """Yield ``results`` unchanged, keeping the first :attr:`rows` for the page."""
        for res in results:
            self.total += 1
            if len(self.kept) < self.rows:
                self.kept.append(res)
                self.no_match += not res.get("labels")
            yield res

    def _local(self, path: Optional[str]) -> Optional[Path]:
        """An image file, or ``None`` for a URL (never fetched for a report) or no path."""
        return None if not path or "://" in path else locate(path, self.image_root)

    def _row(self, res: Dict[str, Any], index: Any, thumbs: Thumbnails, n: int) -> MatchRow:
        path = res.get("input_path")
        q = thumbs.get(self._local(path))
        why = q.missing if self._local(path) else "a URL (not downloaded)" if path else "no input path recorded"
        query = Tile(q.src, f"query {n}", caption=path or "", missing=why)
        matches = []
        for label, score, i in list(zip(res["labels"], res["scores"], res["ids"]))[:limits.MAX_MATCHES]:
            path = index.paths.get(int(i))
            t = thumbs.get(self._local(path))
            caption = f"id {i} {Path(path).name}" if path else f"id {i}"
            matches.append(Tile(t.src, str(label), float(score), caption=caption, missing=t.missing))
        note = "" if matches else "no match passes the threshold"
        return MatchRow(query, matches, note)

    def write(self, index: Any, settings: Dict[str, Any], errors: Sequence[Tuple[str, str]] = ()) -> Path:
        """Render the page for a search against ``index`` (``settings``: what the search was asked,
        shown as a table; ``errors``: the inputs that failed, with why); return its path."""
        thumbs = Thumbnails()
        for res in self.kept:
            thumbs.want(self._local(res.get("input_path")))
            for i in res["ids"][:limits.MAX_MATCHES]:
                thumbs.want(self._local(index.paths.get(int(i))))
        top_k = max((len(r["ids"]) for r in self.kept), default=0)
        with self.target.staging() as stage:
            thumbs.make(stage)
            counts = {"queries": self.total, "shown": len(self.kept), "no_match": self.no_match,
                      "errors": len(errors), "thumbnails": thumbs.count}
            caps = {"query_rows": self.rows, "matches": limits.MAX_MATCHES, "error_rows": MAX_ERROR_ROWS,
                    "thumbnails": limits.MAX_THUMBNAILS, "thumbnail_side": limits.THUMB_SIDE}
            write_page(stage, PAGE, "search.html", title="imgfeat search report",
                       subtitle=f"{self.total} queries against {index.count} gallery items",
                       settings=[("metric", index.metric_type), *settings.items()], counts=counts, top_k=min(top_k, limits.MAX_MATCHES),
                       rows=[self._row(r, index, thumbs, n) for n, r in enumerate(self.kept, start=1)],
                       errors=list(errors)[:MAX_ERROR_ROWS],
                       caps_note=f"Caps: the first {self.rows} queries (--report-rows), {limits.MAX_MATCHES} "
                                 f"matches each, {MAX_ERROR_ROWS} failed inputs, thumbnails of at most "
                                 f"{limits.THUMB_SIDE} px.")
            write_manifest(stage, "search", caps, counts)
        return self.target.path / PAGE
