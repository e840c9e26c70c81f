"""Screenshots of imgfeat reports, as in docs/reports.md, from a headless Debian chromium.

    python examples/report_screenshots.py NAME=REPORT_DIR[#SECTION] ... [--out docs/images]

Each NAME=REPORT_DIR opens REPORT_DIR/index.html (scrolled to the element with id SECTION when
given) and saves the visible 1200 x 900 pixels as OUT/NAME.png, reduced to 256 colours so it stays
small (docs keep each under 200 KB). Needs ``apt-get install -y chromium`` and playwright (the
``test`` extra). Example, after examples/quickstart.sh:

    imgfeat eval -d examples/demo_dataset --model-dir examples/output/inference --report /tmp/r-eval
    python examples/report_screenshots.py report-eval=/tmp/r-eval report-eval-worst=/tmp/r-eval#worst-queries
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shots", nargs="+", metavar="NAME=REPORT_DIR[#SECTION]")
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                        viewport={"width": 1200, "height": 900})
        for shot in args.shots:
            name, _, target = shot.partition("=")
            folder, _, section = target.partition("#")
            page = browser.new_page()
            page.goto((Path(folder).resolve() / "index.html").as_uri())
            page.wait_for_load_state("load")
            if section:
                page.locator(f"#{section}").evaluate("e => e.scrollIntoView()")
            png = Image.open(io.BytesIO(page.screenshot()))
            dest = out / f"{name}.png"
            png.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(dest, optimize=True)
            print(f"{dest}: {dest.stat().st_size // 1024} KB")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
