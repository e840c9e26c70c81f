"""A query and its top-k matches as thumbnails: the piece of a report other pages reuse.

``imgfeat serve``'s search page (and any page of one's own) shows a query image and its best
matches exactly as the eval and search reports do. The data is plain: image URLs or paths relative
to the page (or ``None`` with the reason there is no picture), labels, scores::

    from imgfeat_cli.reports.matches import MatchRow, Tile, render_matches
    from imgfeat_cli.reports.render import stylesheet

    row = MatchRow(Tile("/img/q.jpg", "query.jpg"),
                   [Tile("/img/g1.jpg", "cola", score=0.91), Tile(None, "tea", 0.52, missing="file not found")])
    html = f"<style>{stylesheet()}</style>" + render_matches([row])

``render_matches`` returns an HTML fragment (``<div class="imgfeat-matches">``, escaped,
``markupsafe.Markup``); a jinja2 template of one's own can call the macro itself:
``{% from "matches.html" import match_rows %}{{ match_rows(rows) }}`` with
:data:`~imgfeat_cli.reports.render.TEMPLATE_DIR` on its loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence


@dataclass
class Tile:
    """One image: ``src`` (URL or page-relative path; ``None``: a placeholder showing ``missing``),
    its ``label``, an optional ``score``, ``correct`` (True: a green check, False: a red cross,
    None: no mark) and a ``caption`` line (a file name, ``query.txt:12``...)."""

    src: Optional[str]
    label: str
    score: Optional[float] = None
    correct: Optional[bool] = None
    caption: str = ""
    missing: Optional[str] = None


@dataclass
class MatchRow:
    """A query tile, its match tiles (best first) and a ``note`` line above them."""

    query: Tile
    matches: List[Tile] = field(default_factory=list)
    note: str = ""


def render_matches(rows: Sequence[MatchRow]) -> Any:
    """The rows as one HTML fragment (see the module doc); style it with ``stylesheet()``."""
    from imgfeat_cli.reports.render import environment

    return environment().get_template("matches.html").module.match_rows(list(rows))
