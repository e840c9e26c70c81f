"""The one renderer of imgfeat's HTML: jinja2 templates shipped in the package, escaping on.

Every page (the eval, search and check reports, and any other imgfeat page) is a template under
``templates/`` extending ``base.html``; the stylesheet and the table-sorting script under
``static/`` are inlined, so a report page needs nothing but its ``files/`` folder, online or not.
Autoescaping is on for every template: labels and paths (``<script>``, quotes, odd Unicode) show as
text. Values reach URLs only through names imgfeat makes (thumbnail numbers), never from user input.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"


@functools.lru_cache(maxsize=None)
def environment() -> Any:
    """The jinja2 environment (cached): package templates, autoescape, undefined names are errors."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              autoescape=jinja2.select_autoescape(("html",), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@functools.lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """A file of ``static/`` (``report.css``, ``report.js``) as text."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def stylesheet() -> str:
    """The CSS every imgfeat page uses (thumbnails, match grids, tables)."""
    return static_text("report.css")


def render_page(template: str, **context: Any) -> str:
    """A whole page from ``template`` (which extends ``base.html``: ``title``, ``subtitle`` and
    ``caps_note`` are its own variables) with the stylesheet and script inlined."""
    from imgfeat_cli.common.version import __version__

    context.setdefault("subtitle", "")
    context.setdefault("caps_note", "")
    return environment().get_template(template).render(css=stylesheet(), js=static_text("report.js"),
                                                       version=__version__, **context)


def write_page(folder: Path, name: str, template: str, **context: Any) -> Path:
    path = folder / name
    path.write_text(render_page(template, **context), encoding="utf-8")
    return path
