"""The reports in a real headless browser: Debian's chromium driven by playwright.

Each report opens from disk without a console error or a failed request, shows the expected number
of rows and of loaded images, sorts its tables on a click, runs no script a label smuggles in, and
is saved as a screenshot (into the test's tmp_path). Skips, saying what to install, when chromium
(``apt-get install -y chromium``) or playwright (the ``test`` extra) is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from reportdata import G, Q, make_embeddings

# one worker runs this module: its chromium and server (module fixtures) are started once
pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = Path(os.environ.get("IMGFEAT_CHROMIUM", "/usr/bin/chromium"))
#: Without the background-networking flags chromium stalls on the closed network.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = '<img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install -y chromium (or set IMGFEAT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is absent: pip install -e '.[test]'")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=ARGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def _open(browser, index: Path, shot: Path):
    """The page, and what went wrong while it loaded (console errors, page errors, failed requests)."""
    page = browser.new_page()
    problems: list = []
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return page, problems


def _loaded_images(page) -> int:
    return page.eval_on_selector_all("img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")


def test_eval_report_in_the_browser(browser, invoke, tmp_path):
    gallery = [*G, ([0, 0.7, 0.7], HOSTILE, "g/odd.png")]
    q, g, root = make_embeddings(tmp_path, gallery, Q)
    res = invoke("eval", "--query", q, "--gallery", g, "--out", tmp_path / "o", "--report", tmp_path / "rep",
                 "--image-root", root)
    assert res.exit_code == 0, res.output
    page, problems = _open(browser, tmp_path / "rep" / "index.html", tmp_path / "eval.png")
    assert problems == []
    assert page.locator("#classes tbody tr").count() == 3
    assert page.locator("#worst-queries .row").count() == 3
    assert page.locator("#worst-queries .row").first.locator("figure").count() == 6
    # every tile shows its thumbnail, loaded, but the missing image's placeholders; plus the curve
    tiles, missing = page.locator("figure.tile").count(), page.locator(".tile .missing").count()
    assert missing >= 1 and page.locator("img").count() == _loaded_images(page) == tiles - missing + 1
    srcs = set(page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))"))
    assert len(srcs) == 1 + 3 + 6  # one file per image: 3 queries, the 6 gallery images on disk
    assert page.evaluate("window.pwned") is None and HOSTILE in page.inner_text("#worst-queries")
    first = lambda: page.locator("#classes tbody tr td:first-child").all_inner_texts()  # noqa: E731
    before = first()
    page.click("#classes th:nth-child(3)")  # Recall@1, ascending
    page.click("#classes th:nth-child(3)")  # descending
    after = first()
    assert sorted(before) == sorted(after) and after[0] in ("A", "C") and after[-1] == "B"


def test_search_report_in_the_browser(browser, invoke, tmp_path):
    q, g, root = make_embeddings(tmp_path)
    assert invoke("index", "build", "-g", g, "--out", tmp_path / "idx").exit_code == 0
    res = invoke("search", "--embeddings", q, "--index", tmp_path / "idx", "--top-k", "2", "--no-threshold",
                 "--report", tmp_path / "rep", "--image-root", root)
    assert res.exit_code == 0, res.output
    page, problems = _open(browser, tmp_path / "rep" / "index.html", tmp_path / "search.png")
    assert problems == []
    assert page.locator("#results .row").count() == 4
    assert page.locator("#results .row figure").count() == 4 * 3
    assert page.locator("img").count() == _loaded_images(page) > 0


def test_check_report_in_the_browser(browser, invoke, synth_ds, tmp_path):
    (synth_ds / "images" / "empty.jpg").write_bytes(b"")
    with open(synth_ds / "query.txt", "a") as fh:
        fh.write("images/empty.jpg 0\nimages/vanished.jpg 1\n")
    res = invoke("check", "--dataset", synth_ds, "--out", tmp_path / "o", "--report", tmp_path / "rep",
                 "--near-duplicates")
    assert res.exit_code == 3, res.output
    page, problems = _open(browser, tmp_path / "rep" / "index.html", tmp_path / "check.png")
    assert problems == []
    rows = page.locator("#problems tbody tr")
    assert rows.count() >= 2
    assert page.locator("#problems tbody tr .missing").count() == 2  # the empty and the vanished image
    assert page.locator("#histogram").evaluate("e => e.naturalWidth") > 0
    assert page.locator("img").count() == _loaded_images(page)
