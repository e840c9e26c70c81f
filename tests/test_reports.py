"""HTML reports of eval, search and check: content read back from the page (rows, images, numbers),
nothing referenced outside the report folder, escaping, caps, and the report folder's safety."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from htmlpage import Page
from reportdata import make_embeddings, photo, write_jsonl

pytest.importorskip("jinja2")

@pytest.fixture
def embeddings(tmp_path):
    return make_embeddings(tmp_path)


def _refs_stay_inside(page: Page, folder: Path) -> None:
    for ref in page.refs():
        if ref.startswith("data:"):
            continue
        assert not ref.startswith("/") and "://" not in ref and ".." not in ref.split("/"), ref
        assert (folder / ref).is_file(), ref


def test_eval_report_from_embeddings(invoke, embeddings, tmp_path):
    q, g, root = embeddings
    res = invoke("eval", "--query", q, "--gallery", g, "--out", tmp_path / "o", "--report", tmp_path / "rep",
                 "--image-root", root)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "evaluate_result.json").read_text())
    page = Page(tmp_path / "rep" / "index.html")
    metrics = dict((name, float(v)) for name, v in page.table("metrics"))
    assert metrics == {k: pytest.approx(v, abs=5e-5) for k, v in doc["metrics"].items()}
    assert metrics["recall1"] == pytest.approx(2 / 3, abs=5e-5)
    assert "3 of 4 queries scored (1 have no gallery image" in page.by_id("summary").text()
    classes = {row[0]: row for row in page.table("classes")}
    assert set(classes) == {"A", "B", "C"}
    assert classes["B"][1:] == ["1", "0.000", classes["B"][3], "C (1×)"]
    assert classes["A"][2] == "1.000" and classes["A"][4] == ""
    assert page.table("confused") == [["B", "C", "1", "1"]]
    rows = page.by_id("worst-queries").find("div", "row")
    assert len(rows) == 3  # the scored queries, worst first
    first = rows[0].find("figure")
    assert "q/b.png" in first[0].text() and "rank 2" in rows[0].text()
    assert len(first) == 1 + 5 and "wrong" in first[1].classes and "correct" in first[2].classes
    assert "0.99" in first[1].text()  # the C item's score, shown with the label
    gone = [f for f in page.find("figure") if "g/gone.png" in f.text()]
    assert gone and all(f.find("div", "missing")[0].text() == "file not found" for f in gone)
    # one thumbnail per distinct image shown (a/b/c queries, the 5 gallery files on disk), each once
    thumbs = {i.attrs["src"] for i in page.find("img") if i.attrs["src"].startswith("files/t/")}
    assert len(thumbs) == 3 + 5 and len(os.listdir(tmp_path / "rep" / "files" / "t")) == 8
    assert page.by_id("recall-curve").attrs["src"] == "files/recall_at_k.png"
    assert (tmp_path / "rep" / "files" / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    _refs_stay_inside(page, tmp_path / "rep")
    manifest = json.loads((tmp_path / "rep" / "imgfeat-report.json").read_text())
    assert manifest["imgfeat_report"] == "eval" and manifest["counts"]["thumbnails"] == 8


def test_eval_report_curve_and_ranks_are_the_metrics(tmp_path):
    """The per-query ranking the report draws from gives exactly the metrics' Recall@k."""
    from imgfeat_cli.retrieval.metrics import evaluate
    from imgfeat_cli.retrieval.ranking import QueryRanking

    rng = np.random.default_rng(0)
    g, q = rng.normal(size=(300, 16)), rng.normal(size=(120, 16))
    gl, ql = rng.integers(0, 20, 300), rng.integers(0, 20, 120)
    ranking = QueryRanking(top_k=10)
    m = evaluate(q, ql, g, gl, (1, 5, 10), budget=4000, collect=ranking)
    curve = ranking.recall_curve(10)
    for k in (1, 5, 10):
        assert curve[k - 1] == pytest.approx(m.recall[k])
    assert np.nanmean(ranking.ap) == pytest.approx(m.mAP)
    order = np.argsort(-(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T,
                       axis=1, kind="stable")
    assert (ranking.top_ids == order[:, :10]).all()
    worst = ranking.worst(5)
    assert list(ranking.first_hit[worst]) == sorted(ranking.first_hit[ranking.scored], reverse=True)[:5]


@pytest.mark.slow
def test_eval_report_from_a_dataset_and_a_model(invoke, synth_ds, model_dir, tmp_path):
    res = invoke("eval", "--dataset", synth_ds, "--model-dir", model_dir, "--out", tmp_path / "o",
                 "--report", tmp_path / "rep", "--report-rows", "3")
    assert res.exit_code == 0, res.output
    page = Page(tmp_path / "rep" / "index.html")
    n_query = len((synth_ds / "query.txt").read_text().splitlines())
    rows = page.by_id("worst-queries").find("div", "row")
    assert len(rows) == 3 and f"3 of {n_query} scored queries" in page.by_id("worst-queries").text()
    assert all(len(r.find("img")) == 6 for r in rows)  # every listed image exists: no placeholder
    assert sum(int(r[1]) for r in page.table("classes")) == n_query
    _refs_stay_inside(page, tmp_path / "rep")


def test_search_report(invoke, embeddings, tmp_path):
    q, g, root = embeddings
    res = invoke("index", "build", "-g", g, "--out", tmp_path / "idx")
    assert res.exit_code == 0, res.output
    res = invoke("search", "--embeddings", q, "--index", tmp_path / "idx", "--top-k", "3", "--no-threshold",
                 "--out", tmp_path / "r.jsonl", "--report", tmp_path / "rep", "--report-rows", "3",
                 "--image-root", root)
    assert res.exit_code == 0, res.output
    results = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(results) == 4  # the report does not eat results
    page = Page(tmp_path / "rep" / "index.html")
    rows = page.by_id("results").find("div", "row")
    assert len(rows) == 3 and "3 of 4 queries" in page.by_id("results").text()
    for row, want in zip(rows, results):
        figs = row.find("figure")
        assert want["input_path"] in figs[0].text() and len(figs) == 1 + 3
        assert [f.find("span", "label")[0].text() for f in figs[1:]] == want["labels"]
        assert [float(f.find("span", "score")[0].text()) for f in figs[1:]] == pytest.approx(want["scores"], abs=1e-4)
    settings = {tr.find("th")[0].text(): tr.find("td")[0].text() for tr in page.by_id("settings").find("tr")}
    assert settings["top_k"] == "3" and settings["threshold"] == "None" and settings["metric"] == "IP"
    _refs_stay_inside(page, tmp_path / "rep")


def test_check_report_shows_problems_with_their_images(invoke, synth_ds, tmp_path):
    (synth_ds / "images" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(synth_ds / "gallery.txt", "a") as fh:
        fh.write("images/bad.jpg 0\nimages/vanished.jpg 1\n")
    res = invoke("check", "--dataset", synth_ds, "--out", tmp_path / "o", "--report", tmp_path / "rep", "--json")
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout)
    page = Page(tmp_path / "rep" / "index.html")
    rows = page.table("problems")
    assert len(rows) == len(doc["problems"])
    assert [(r[0], r[1], r[2]) for r in rows] == [(p["severity"], f"{p['file']}:{p['line']}" if p["line"] else p["file"],
                                                    p["code"]) for p in doc["problems"]]
    body = page.by_id("problems").find("tbody")[0].find("tr")
    bad = next(tr for tr in body if "undecodable_image" in tr.text())
    assert not bad.find("img") and bad.find("div", "missing")[0].text()  # marked, with the decoder's reason
    gone = next(tr for tr in body if "missing_image" in tr.text())
    assert gone.find("div", "missing")[0].text() == "file not found"
    assert [r[0] for r in page.table("splits")] == ["train", "gallery", "query"]
    assert page.by_id("histogram").attrs["src"] == "files/histogram.png"
    _refs_stay_inside(page, tmp_path / "rep")


@pytest.mark.parametrize("label", ["<script>alert(1)</script>", "a\"b' onerror=x", "r\u202eevil\u200b 🍺 &amp;"])
def test_labels_and_paths_are_escaped(invoke, tmp_path, label):
    root = tmp_path / "imgs"
    odd = f"odd <b>{label[:8]}</b> &.png".replace("/", "_")
    photo(root / odd, 0)
    g = write_jsonl(tmp_path / "g.jsonl", [([1, 0], label, odd), ([0, 1], "x", odd)])
    q = write_jsonl(tmp_path / "q.jsonl", [([0.9, 0.1], label, odd)])
    res = invoke("eval", "--query", q, "--gallery", g, "--out", tmp_path / "o", "--report", tmp_path / "rep",
                 "--image-root", root)
    assert res.exit_code == 0, res.output
    page = Page(tmp_path / "rep" / "index.html")
    assert "<script>alert" not in page.html and "<b>" not in page.html
    assert page.table("classes")[0][0] == label.strip()  # text again once parsed: escaped, not dropped
    assert any(odd in f.text() for f in page.find("figure"))
    assert all(not ref.startswith(("/", "..")) and "odd" not in ref for ref in page.refs())


@pytest.mark.slow
def test_report_of_100k_queries_stays_small(tmp_path, monkeypatch):
    from imgfeat_cli.reports import limits
    from imgfeat_cli.reports.eval_report import EvalReport
    from imgfeat_cli.retrieval.metrics import evaluate

    monkeypatch.setattr(limits, "MAX_CLASS_ROWS", 150)  # the cap at work, over a gallery cheap to rank
    rng = np.random.default_rng(1)
    g, gl = rng.normal(size=(200, 8)).astype(np.float32), np.arange(200)
    q, ql = rng.normal(size=(100_000, 8)).astype(np.float32), rng.integers(0, 200, 100_000)
    pages = EvalReport(str(tmp_path / "rep"), rows=limits.MAX_QUERY_ROWS, ks=(1, 5))
    metrics = evaluate(q, ql, g, gl, (1, 5), [f"q/{i}.jpg" for i in range(len(q))],
                       [f"g/{i}.jpg" for i in range(len(g))], collect=pages)
    page = Page(pages.write(metrics))
    assert len(page.by_id("worst-queries").find("div", "row")) == limits.MAX_QUERY_ROWS
    assert len(page.table("classes")) == limits.MAX_CLASS_ROWS and len(page.table("confused")) == limits.MAX_PAIR_ROWS
    assert "150 of 200 query classes (the 150 with the lowest Recall@1)" in page.by_id("per-class").text()
    size = sum(f.stat().st_size for f in (tmp_path / "rep").rglob("*") if f.is_file())
    assert size < 8 << 20, size  # no image exists: placeholders only; the page holds the capped rows


# ---------------------------------------------------------------------- the report folder


def _eval_args(embeddings, tmp_path, folder, *extra):
    q, g, root = embeddings
    return ("eval", "--query", q, "--gallery", g, "--out", tmp_path / "o", "--report", folder,
            "--image-root", root, *extra)


def test_report_folder_that_is_a_file_or_unusable(invoke, embeddings, tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    res = invoke(*_eval_args(embeddings, tmp_path, target))
    assert res.exit_code == 2 and "is a file" in res.stderr and target.read_text() == "mine"
    res = invoke(*_eval_args(embeddings, tmp_path, tmp_path / "r", "--report-rows", "0"))
    assert res.exit_code == 2 and "--report-rows 0" in res.stderr
    assert not (tmp_path / "o" / "evaluate_result.json").exists()  # refused before any work
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        res = invoke(*_eval_args(embeddings, tmp_path, ro / "rep"))
        ro.chmod(0o755)
        assert res.exit_code == 2 and "not writable" in res.stderr


def test_report_folder_with_user_files_is_refused_then_shared_without_loss(invoke, embeddings, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (folder / "index.html").write_text("my page")
    res = invoke(*_eval_args(embeddings, tmp_path, folder))
    assert res.exit_code == 2 and "holds other files" in res.stderr and "--overwrite" in res.stderr
    assert sorted(os.listdir(folder)) == ["index.html", "notes.txt"]
    res = invoke(*_eval_args(embeddings, tmp_path, folder, "--overwrite"))
    assert res.exit_code == 0, res.output
    assert (folder / "notes.txt").read_text() == "keep me" and (folder / "index.html.bak").read_text() == "my page"
    assert Page(folder / "index.html").by_id("worst-queries")
    # an earlier report is replaced (with or without --overwrite), the user's files stay
    res = invoke(*_eval_args(embeddings, tmp_path, folder, "--overwrite"))
    assert res.exit_code == 0 and (folder / "index.html.bak").read_text() == "my page"
    assert sorted(os.listdir(folder)) == ["files", "imgfeat-report.json", "index.html", "index.html.bak", "notes.txt"]


def test_an_earlier_report_is_replaced_whole(invoke, embeddings, tmp_path):
    folder = tmp_path / "rep"
    assert invoke(*_eval_args(embeddings, tmp_path, folder, "--report-rows", "3")).exit_code == 0
    stale = folder / "files" / "t" / "999.jpg"
    stale.write_bytes(b"old")
    assert invoke(*_eval_args(embeddings, tmp_path, folder, "--report-rows", "1")).exit_code == 0
    assert not stale.exists() and len(Page(folder / "index.html").by_id("worst-queries").find("div", "row")) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".rep.lock"]  # no staging left


def test_report_into_the_output_folder(invoke, embeddings, tmp_path):
    """The report and the results in one folder: refused before any work unless --overwrite."""
    res = invoke(*_eval_args(embeddings, tmp_path, tmp_path / "o"))
    assert res.exit_code == 2 and "is the --out folder" in res.stderr
    assert not (tmp_path / "o").exists()
    res = invoke(*_eval_args(embeddings, tmp_path, tmp_path / "o", "--overwrite"))
    assert res.exit_code == 0, res.output
    assert {"config.eval.yaml", "evaluate_result.json", "index.html"} <= set(os.listdir(tmp_path / "o"))


def test_images_that_vanished_become_placeholders(invoke, embeddings, tmp_path):
    q, g, root = embeddings
    for p in root.rglob("*.png"):
        p.unlink()
    res = invoke("eval", "--query", q, "--gallery", g, "--out", tmp_path / "o", "--report", tmp_path / "rep",
                 "--image-root", root)
    assert res.exit_code == 0, res.output
    page = Page(tmp_path / "rep" / "index.html")
    assert [i.attrs["src"] for i in page.find("img")] == ["files/recall_at_k.png"]
    assert {d.text() for d in page.find("div", "missing")} == {"file not found"}


def test_one_writer_per_report_folder(tmp_path):
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.reports.target import ReportDir

    first = ReportDir(tmp_path / "rep")
    with pytest.raises(UsageError, match="another imgfeat process is writing the report"):
        ReportDir(tmp_path / "rep")
    with first.staging() as stage:
        (stage / "index.html").write_text("x")
        (stage / "imgfeat-report.json").write_text('{"imgfeat_report": "test"}')
    assert (tmp_path / "rep" / "index.html").read_text() == "x"
    ReportDir(tmp_path / "rep")  # released once the report is in place
