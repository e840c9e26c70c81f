"""`imgfeat serve` as a real process on 127.0.0.1: searches during index updates, slow senders,
SIGTERM, kill -9 during an add, two workers, and the search page in Debian's chromium.

Each server is an `imgfeat serve` subprocess on a free port (bounded in time; see serve_support)."""
from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("fastapi", reason="imgfeat[serve] is in the test extra")
pytest.importorskip("faiss", reason="faiss-cpu is in the test extra")

from serve_support import LiveServer, ds, extra_images, post_image, serve_model, template  # noqa: E402,F401

# one worker runs this module: its servers (module fixtures) are started once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve-live")]


@pytest.fixture(scope="module")
def live(template, model_dir, tmp_path_factory):
    """One server for the tests that do not stop it: a copy of the gallery index as 'idx'."""
    import shutil

    root = tmp_path_factory.mktemp("live")
    shutil.copytree(template[1], root / "idx")
    with LiveServer(["--model-dir", model_dir, "--index", str(root / "idx"), "--data-dir", str(root / "data"),
                     "-o", "Serve.request_timeout_s=2"], cwd=root) as server:
        yield server


def gallery_labels(folder: Path) -> dict:
    from imgfeat_cli.retrieval.index import Index

    return dict(Index.load(folder).id_map)


def test_searches_during_adds_and_removes_never_fail_or_mix(live, template):
    ds, folder = template
    known = gallery_labels(folder)
    query = extra_images(ds)[0]
    data = query.read_bytes()
    added = {}  # id -> label, as the writer got them (ids are never reused)
    done = threading.Event()
    failures = []

    def writer():
        try:
            with requests.Session() as http:
                for i in range(5):
                    res = http.post(live.url + "/v1/indexes/idx/add", files=[("image", ("q.jpg", data, "image/jpeg"))],
                                    data={"label": f"added {i}"}, timeout=60)
                    assert res.status_code == 200, res.text
                    added[res.json()["ids"][0]] = f"added {i}"
                    res = http.post(live.url + "/v1/indexes/idx/remove", json={"ids": res.json()["ids"]}, timeout=60)
                    assert res.status_code == 200 and res.json()["count"] == len(known), res.text
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(f"writer: {exc}")
        finally:
            done.set()

    def reader(seen):
        with requests.Session() as http:
            last = -1
            while not done.is_set():
                res = http.post(live.url + "/v1/indexes/idx/search", files=[("image", ("q.jpg", data, "image/jpeg"))],
                                data={"top_k": "3", "threshold": "none"}, timeout=60)
                if res.status_code != 200:
                    failures.append(f"search: {res.status_code} {res.text}")
                    return
                doc = res.json()
                res0 = doc["results"][0]
                fresh = [i for i in res0["ids"] if i not in known]
                if doc["generation"] < last:
                    failures.append(f"generation went back: {last} -> {doc['generation']}")
                last = doc["generation"]
                if doc["count"] == len(known):
                    ok = not fresh and all(known[i] == lab for i, lab in zip(res0["ids"], res0["labels"]))
                else:  # the added state: the query image itself is the best match
                    ok = (doc["count"] == len(known) + 1 and res0["ids"][0] in fresh and res0["scores"][0] > 0.9999
                          and all(known.get(i, added.get(i)) == lab for i, lab in zip(res0["ids"], res0["labels"])))
                if not ok:
                    failures.append(f"mixed state: {doc}")
                seen.append(doc["count"])

    counts = [[] for _ in range(3)]
    threads = [threading.Thread(target=reader, args=(c,)) for c in counts] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:3]
    assert len(added) == 5 and sum(len(c) for c in counts) > 10
    assert {len(known), len(known) + 1} >= {n for c in counts for n in c}


def test_slow_senders_are_cut_off_and_the_server_stays_healthy(live):
    host, port = live.url.rsplit("/", 1)[-1].split(":")
    port = int(port)
    silent = socket.create_connection((host, port))  # says nothing at all
    trickle = socket.create_connection((host, port))
    trickle.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    slow_body = socket.create_connection((host, port))
    slow_body.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"image\": ")
    for sock in (silent, trickle, slow_body):
        sock.settimeout(15)
    assert requests.get(live.url + "/healthz", timeout=10).status_code == 200  # others are served meanwhile
    reply = b""
    while True:
        part = slow_body.recv(65536)
        if not part:
            break
        reply += part
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"]["code"] == "request_timeout"
    assert silent.recv(10) == b"" and trickle.recv(10) == b""  # closed by the server
    for sock in (silent, trickle, slow_body):
        sock.close()
    assert requests.get(live.url + "/readyz", timeout=10).status_code == 200


CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_search_page_in_chromium(live, template, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    ds, _ = template
    with playwright.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=BROWSER_FLAGS)
        try:
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live.url + "/", timeout=60000)
            page.wait_for_selector("#index option[value='idx']", state="attached", timeout=30000)
            page.set_input_files("#file", str(ds / "images/c01/000.jpg"))
            page.wait_for_selector("#results li img", timeout=60000)
            labels = page.locator("#results .label").all_inner_texts()
            scores = page.locator("#results .score").all_inner_texts()
            page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
        finally:
            context.close()
    assert labels[0] == "c01" and scores[0] == "1.0000" and not errors
    assert (tmp_path / "search-page.png").stat().st_size > 1000


def test_sigterm_answers_requests_in_flight_then_exits_0(template, model_dir, tmp_path):
    ds, folder = template
    images = [base64.b64encode(p.read_bytes()).decode() for p in sorted((ds / "images").rglob("*.jpg"))] * 2
    server = LiveServer(["--model-dir", model_dir, "--max-batch", "2"], cwd=tmp_path)
    outcome = {}

    def embed():
        outcome["res"] = requests.post(server.url + "/v1/embed", json={"images": images}, timeout=120)

    thread = threading.Thread(target=embed)
    thread.start()
    deadline = time.monotonic() + 60
    while requests.get(server.url + "/readyz", timeout=10).json()["queue"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # until the request is in the server
    assert server.stop(signal.SIGTERM) == 0, server.stderr()
    thread.join(60)
    assert outcome["res"].status_code == 200 and len(outcome["res"].json()["results"]) == len(images)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=5)


def test_kill_9_during_adds_leaves_the_old_or_the_new_index(model_dir, tmp_path, ds):
    """Adds run back to back while the server is killed; after a restart the index holds every
    acknowledged add and at most the one in flight."""
    from imgfeat_cli.retrieval.builder import build_index

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((4000, 512)).astype(np.float32)  # big enough that writes take a while
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    folder = tmp_path / "big"
    build_index(feats, str(folder), labels=[f"v{i}" for i in range(len(feats))])
    image = ("x.jpg", (ds / "images/c00/000.jpg").read_bytes(), "image/jpeg")
    server = LiveServer(["--model-dir", model_dir, "--index", str(folder)], cwd=tmp_path)
    acked = [len(feats)]
    stop = threading.Event()

    def adder():
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    res = http.post(server.url + "/v1/indexes/big/add", files=[("image", image)],
                                    data={"label": "new"}, timeout=60)
                except requests.RequestException:
                    return
                if res.status_code == 200:
                    acked.append(res.json()["count"])

    thread = threading.Thread(target=adder)
    thread.start()
    while len(acked) < 3 and thread.is_alive():
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))  # somewhere in an add: embedding, writing, swapping
    server.stop(signal.SIGKILL)
    stop.set()
    thread.join(60)
    assert len(acked) >= 3, server.stderr()
    server = LiveServer(["--model-dir", model_dir, "--index", str(folder)], cwd=tmp_path)  # a restart
    try:
        count = requests.get(server.url + "/v1/indexes/big", timeout=30).json()["count"]
        assert count in (acked[-1], acked[-1] + 1)  # every acknowledged add, and the one in flight or not
        res = requests.post(server.url + "/v1/indexes/big/add", files=[("image", image)], data={"label": "new"},
                            timeout=60)
        assert res.status_code == 200 and res.json()["count"] == count + 1  # and it keeps working
    finally:
        server.stop()


def test_two_workers_see_an_update_within_a_second(template, model_dir, tmp_path):
    import shutil

    shutil.copytree(template[1], tmp_path / "idx")
    with LiveServer(["--model-dir", model_dir, "--index", str(tmp_path / "idx"), "--workers", "2"],
                    cwd=tmp_path) as server:
        def ask():
            doc = requests.get(server.url + "/v1/indexes/idx", headers={"Connection": "close"}, timeout=30).json()
            return doc["worker"], doc["generation"]

        deadline, workers = time.monotonic() + 120, set()
        while len(workers) < 2 and time.monotonic() < deadline:  # both workers up and answering
            workers.add(ask()[0])
        assert len(workers) == 2, server.stderr()
        res = post_image(server.url + "/v1/indexes/idx/add", extra_images(template[0])[0], label="fresh")
        assert res.status_code == 200, res.text
        generation, added_at = res.json()["generation"], time.monotonic()
        seen_at = {}
        while len(seen_at) < 2 and time.monotonic() < added_at + 10:
            worker, gen = ask()
            if gen >= generation:
                seen_at.setdefault(worker, time.monotonic() - added_at)
        assert set(seen_at) == workers, seen_at
        assert max(seen_at.values()) < 5.0, seen_at  # POLL_S is 0.25 s; the bound is loose for busy machines
        metrics = requests.get(server.url + "/metrics", timeout=30).text
        assert 'imgfeat_index_items{index="idx"} 13.0' in metrics  # one exposition over both workers


def test_the_paddlex_client_example_runs(live, template, tmp_path):
    import subprocess
    import sys

    ds, _ = template
    example = Path(__file__).resolve().parents[1] / "examples" / "serve_paddlex_client.py"
    img = lambda c, i: str(ds / f"images/c0{c}/00{i}.jpg")  # noqa: E731
    res = subprocess.run([sys.executable, str(example), live.url, f"{img(0, 0)}=cat", f"{img(1, 0)}=dog",
                          f"{img(2, 0)}=cow", "--add", f"{img(3, 0)}=owl", "--remove", "1", "--infer", img(3, 0),
                          "--out", str(tmp_path / "out.jpg")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Number of images indexed: 3\nNumber of images indexed: 4\nNumber of images indexed: 3" in res.stdout
    assert "'label': 'owl'" in res.stdout and (tmp_path / "out.jpg").stat().st_size > 0
