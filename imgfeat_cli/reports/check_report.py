"""``imgfeat check --report DIR``: the problems with a thumbnail of each image involved, the class
histograms, and near-duplicate pairs side by side.

:class:`CheckReport` is made before the check (the folder is checked then) and
:meth:`CheckReport.write` renders the page from the check's result. A problem about a list line
shows that line's image (a missing or undecodable one as a marked placeholder with the reason),
and one about several lines (``related``: a near-duplicate pair) shows each of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from imgfeat_cli.datasets.dataset import Entry, Problem, resolve_inside
from imgfeat_cli.reports import limits
from imgfeat_cli.reports.matches import Tile
from imgfeat_cli.reports.render import write_page
from imgfeat_cli.reports.target import ASSETS, PAGE, ReportDir, write_manifest
from imgfeat_cli.reports.thumbs import Thumbnails

HISTOGRAM = f"{ASSETS}/histogram.png"
NEAR_DUPLICATE = "near_duplicate_leak"


@dataclass
class ProblemRow:
    severity: str
    where: str
    code: str
    message: str
    tiles: List[Tile]


@dataclass
class PairRow:
    left: Tile
    right: Tile
    message: str


class CheckReport:
    """One check report (module doc)."""

    def __init__(self, folder: str, overwrite: bool = False) -> None:
        self.target = ReportDir(folder, overwrite)

    def write(self, result: Any) -> Path:
        """Render the page for a :class:`~imgfeat_cli.datasets.check.CheckResult`; return its path."""
        from imgfeat_cli.datasets.report import draw_histogram

        root = Path(result.dataset_path)
        lines: Dict[Tuple[str, int], Entry] = {(f"{s}.txt", e.line): e for s, es in result.splits.items() for e in es}
        problems = result.problems[:limits.MAX_PROBLEM_ROWS]
        pairs = [p for p in result.problems if p.code == NEAR_DUPLICATE and p.related][:limits.MAX_PAIR_ROWS]
        thumbs = Thumbnails()
        for p in [*problems[:limits.MAX_PROBLEM_THUMB_ROWS], *pairs]:
            for key in self._keys(p):
                thumbs.want(self._image(root, lines.get(key)))
        with self.target.staging() as stage:
            thumbs.make(stage)
            draw_histogram(result.class_stats, result.images_per_class, stage / HISTOGRAM)
            rows = [ProblemRow(p.severity, f"{p.file}:{p.line}" if p.line else (p.file or ""), p.code, p.message,
                               [self._tile(thumbs, root, lines, k) for k in self._keys(p)]
                               if i < limits.MAX_PROBLEM_THUMB_ROWS else [])
                    for i, p in enumerate(problems)]
            pair_rows = [PairRow(*(self._tile(thumbs, root, lines, k) for k in self._keys(p)[:2]), p.message)
                         for p in pairs]
            n_pairs = sum(1 for p in result.problems if p.code == NEAR_DUPLICATE)
            counts = {"problems": len(result.problems), "thumb_rows": limits.MAX_PROBLEM_THUMB_ROWS,
                      "pairs": n_pairs, "errors": result.counts("error"), "warnings": result.counts("warning"),
                      "infos": result.counts("info"), "thumbnails": thumbs.count}
            caps = {"problem_rows": limits.MAX_PROBLEM_ROWS, "problem_thumbnail_rows": limits.MAX_PROBLEM_THUMB_ROWS,
                    "pair_rows": limits.MAX_PAIR_ROWS, "thumbnails": limits.MAX_THUMBNAILS,
                    "thumbnail_side": limits.THUMB_SIDE}
            verdict = "Check passed" if result.check_pass else "Check failed"
            write_page(stage, PAGE, "check.html", title="imgfeat check report", subtitle=f"dataset {root}",
                       verdict=verdict, splits=list(result.class_stats.items()), counts=counts,
                       histogram=HISTOGRAM, problems=rows, pairs=pair_rows,
                       caps_note=f"Caps: {limits.MAX_PROBLEM_ROWS} problems, images for the first "
                                 f"{limits.MAX_PROBLEM_THUMB_ROWS}, {limits.MAX_PAIR_ROWS} near-duplicate pairs, "
                                 f"thumbnails of at most {limits.THUMB_SIDE} px.")
            write_manifest(stage, "check", caps, counts)
        return self.target.path / PAGE

    @staticmethod
    def _keys(p: Problem) -> List[Tuple[str, int]]:
        """The list lines a problem is about: its own, then the related ones."""
        own = [(p.file, p.line)] if p.file and p.line else []
        return [*own, *p.related]

    @staticmethod
    def _image(root: Path, entry: Optional[Entry]) -> Optional[Path]:
        return resolve_inside(root, entry.path) if entry is not None else None

    def _tile(self, thumbs: Thumbnails, root: Path, lines: Dict[Tuple[str, int], Entry],
              key: Tuple[str, int]) -> Tile:
        entry = lines.get(key)
        where = f"{key[0]}:{key[1]}"
        if entry is None:  # a malformed line: no image to show
            return Tile(None, where, missing="no image on this line")
        path = self._image(root, entry)
        t = thumbs.get(path)
        why = t.missing if path is not None else "path outside the dataset: not opened"
        return Tile(t.src, f"label {entry.label}", caption=f"{where} {entry.path}", missing=why)
