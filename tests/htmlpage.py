"""Reading a report page back in tests: a small tree from the standard library's HTML parser.

``Page(path)`` parses a page; ``page.by_id("classes")`` finds an element, ``el.find("img")`` its
descendants by tag (and class), ``el.text()`` its text, ``page.table("classes")`` the body rows of a
table as lists of cell texts, and ``page.refs()`` every ``src``/``href`` the page references.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: Dict[str, Optional[str]], parent: Optional["Element"]) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: List[object] = []

    @property
    def classes(self) -> List[str]:
        return (self.attrs.get("class") or "").split()

    def find(self, tag: Optional[str] = None, cls: Optional[str] = None) -> List["Element"]:
        out = []
        for child in self.children:
            if isinstance(child, Element):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    out.append(child)
                out.extend(child.find(tag, cls))
        return out

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list) -> None:
        el = Element(tag, dict(attrs), self.cur)
        self.cur.children.append(el)
        if tag not in VOID:
            self.cur = el

    def handle_endtag(self, tag: str) -> None:
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


class Page:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.html = self.path.read_text(encoding="utf-8")
        builder = _Builder()
        builder.feed(self.html)
        self.root = builder.root

    def find(self, tag: Optional[str] = None, cls: Optional[str] = None) -> List[Element]:
        return self.root.find(tag, cls)

    def by_id(self, ident: str) -> Element:
        found = [e for e in self.root.find() if e.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def table(self, ident: str) -> List[List[str]]:
        body = self.by_id(ident).find("tbody")[0]
        return [[" ".join(td.text().split()) for td in tr.find("td")] for tr in body.find("tr")]

    def refs(self) -> List[str]:
        return [v for e in self.root.find() for k, v in e.attrs.items() if k in ("src", "href") and v is not None]
