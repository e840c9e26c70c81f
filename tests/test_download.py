"""Downloads against a local HTTP server: resume, retries, checksums, safe extraction, offline,
concurrency, and model resolution through the cache."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from httpserver import Server
from imgfeat_cli.common.cache import fetch, url_file
from imgfeat_cli.common.download import download_file, extract_archive, part_path
from imgfeat_cli.common.errors import DownloadError

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGFEAT_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGFEAT_OFFLINE", raising=False)
    return tmp_path / "cache"


def nosleep(_: float) -> None:
    pass


def test_fresh_download_via_cli(invoke, server, cache):
    url = server.add("/f.bin", DATA)
    res = invoke("download", "url", url, "--sha256", SHA)
    assert res.exit_code == 0, res.output
    path = Path(res.stdout.strip())
    assert path == url_file(url) and path.parent.parent == cache / "files" and path.read_bytes() == DATA
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest[url]["sha256"] == SHA and manifest[url]["size"] == len(DATA)
    assert manifest[url]["verified"] == "sha256 given"
    assert not part_path(path, url).exists()


def test_resume_transfers_only_the_remainder(server, tmp_path):
    url = server.add("/drop.bin", DATA, mode="drop")
    dest = download_file(url, tmp_path / "d.bin", sleep=nosleep)
    assert dest.read_bytes() == DATA
    (first, r1, n1), (second, r2, n2) = server.log
    assert r1 is None and n1 == len(DATA) // 2
    # the resume starts where the .part file ended (requests drops a torn final chunk) and the
    # server sends only the rest
    kept = int(r2.split("=")[1].rstrip("-"))
    assert 0 < kept <= n1 and n2 == len(DATA) - kept


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url = server.add("/nr.bin", DATA, mode="norange")
    part = part_path(tmp_path / "d.bin", url)
    part.write_bytes(DATA[:1000])  # left by an earlier interrupted run
    assert download_file(url, tmp_path / "d.bin").read_bytes() == DATA


def test_retry_then_success_and_404_not_retried(invoke, server, tmp_path):
    url = server.add("/flaky.bin", DATA, mode="flaky", fails=2)
    delays = []
    assert download_file(url, tmp_path / "f.bin", sleep=delays.append).read_bytes() == DATA
    assert delays == [1.0, 2.0]  # exponential backoff
    res = invoke("download", "url", server.url + "/missing.bin")
    assert res.exit_code == 1 and f"HTTP 404 for {server.url}/missing.bin" in res.stderr
    assert [p for p, *_ in server.log].count("/missing.bin") == 1
    server.add("/always500.bin", DATA, mode="status", status=503)
    with pytest.raises(DownloadError, match="failed after 3 attempts: HTTP 503"):
        download_file(server.url + "/always500.bin", tmp_path / "x.bin", retries=2, sleep=nosleep)


def test_checksum_mismatch_leaves_nothing(invoke, server, cache):
    url = server.add("/f.bin", DATA)
    res = invoke("download", "url", url, "--sha256", "0" * 64)
    assert res.exit_code == 1
    assert f"expected sha256 {'0' * 64}, got {SHA}" in res.stderr
    assert not [p for p in (cache / "files").rglob("*") if p.is_file()]


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tf.addfile(info)
            elif kind == "dev":
                info.type = tarfile.CHRTYPE
                tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("members,why", [
    ([("ok/a.txt", "file", b"a"), ("../evil.txt", "file", b"x")], "contains '..'"),
    ([("/abs/evil.txt", "file", b"x")], "absolute path"),
    ([("ok/link", "sym", "../../outside")], "links outside the target"),
    ([("ok/link", "sym", "/etc/passwd")], "links outside the target"),
    ([("ok/dev", "dev", None)], "device or FIFO"),
])
def test_malicious_archives_rejected(tmp_path, members, why):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar(members))
    target = tmp_path / "out" / "model"
    with pytest.raises(DownloadError, match=why):
        extract_archive(archive, target)
    assert not target.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no half-populated folder left


def test_offline_mode_fails_fast(invoke, server, cache, monkeypatch):
    monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    res = invoke("download", "url", server.add("/f.bin", DATA))
    assert res.exit_code == 1 and "IMGFEAT_OFFLINE is set" in res.stderr
    assert server.log == []
    res = invoke("download", "dataset", "Inshop_examples")
    assert res.exit_code == 1 and "IMGFEAT_OFFLINE" in res.stderr


def test_concurrent_downloads_end_with_one_good_copy(server, tmp_path):
    url = server.add("/slow.bin", DATA, mode="slow")
    errors = []

    def worker():
        try:
            fetch(url, tmp_path / "s.bin")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and (tmp_path / "s.bin").read_bytes() == DATA
    assert sum(1 for p, *_ in server.log if p == "/slow.bin") == 1  # the others found it done
    assert not part_path(tmp_path / "s.bin", url).exists()


def _tar_folder(folder: Path, root: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(folder, arcname=root)
    return buf.getvalue()


def test_model_and_dataset_resolve_through_cache(invoke, server, cache, monkeypatch, tmp_path):
    inf = shared_path("fixtures", "ppshituv2_rec_seed0", "inference")
    server.add("/official_inference_model/paddle3.0.0/PP-ShiTuV2_rec_infer.tar", _tar_folder(inf, "PP-ShiTuV2_rec_infer"))
    server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/train.txt", "file", b"images/a.jpg 0\n")]))
    monkeypatch.setenv("IMGFEAT_BASE_URL", server.url)
    res = invoke("download", "model", "PP-ShiTuV2_rec", "--json")
    assert res.exit_code == 0, res.output
    path = Path(json.loads(res.stdout)["path"])
    assert path == cache / "models" / "PP-ShiTuV2_rec" / "paddle3.0.0" / "inference"
    assert (path / "inference.pdiparams").is_file() and not list(path.parent.glob("*.tar"))
    res = invoke("download", "dataset", "Inshop_examples")
    assert res.exit_code == 0 and (Path(res.stdout.strip()) / "train.txt").is_file()
    listing = json.loads(invoke("download", "list", "--json").stdout)
    cached = {(e["kind"], e["name"]) for e in listing if e["cached"]}
    assert cached == {("model/inference", "PP-ShiTuV2_rec"), ("dataset", "Inshop_examples")}
    # embed --model NAME uses the cached folder, offline
    monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    from PIL import Image
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "x.jpg")
    res = invoke("embed", tmp_path / "x.jpg", "--model", "PP-ShiTuV2_rec", "--out", tmp_path / "x.jsonl", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "PP-ShiTuV2_rec"


def test_download_usage_errors(invoke):
    assert "unknown model" in invoke("download", "model", "nope").stderr
    res = invoke("download", "model", "PP-ShiTuV2_rec", "--kind", "weights")
    assert res.exit_code == 2 and "unknown --kind 'weights'" in res.stderr
    res = invoke("download", "model", "PP-ShiTuV2_rec", "--kind", "backbone")
    assert res.exit_code == 2 and "has no backbone weights" in res.stderr
    res = invoke("download", "dataset", "Inshop")
    assert res.exit_code == 2 and "did you mean Inshop_examples?" in res.stderr
    res = invoke("download", "url", "ftp://x/y")
    assert res.exit_code == 2 and "not an http(s) URL" in res.stderr


# ---- nothing lost, nothing mistaken (issue 12) -------------------------------------------------

@pytest.mark.parametrize("route,extra,why", [
    ("/missing.bin", [], "HTTP 404"),
    ("/f.bin", ["--sha256", "0" * 64], "checksum mismatch"),
    ("/always503.bin", [], "failed after"),
])
def test_failed_download_leaves_the_existing_out_file(invoke, server, tmp_path, monkeypatch, route, extra, why):
    import imgfeat_cli.common.download as dl

    monkeypatch.setattr(dl, "_sleep", nosleep)
    server.add("/f.bin", DATA)
    server.add("/always503.bin", DATA, mode="status", status=503)
    out = tmp_path / "existing.bin"
    out.write_bytes(b"the user's own file")
    res = invoke("download", "url", server.url + route, "--out", out, *extra)
    assert res.exit_code == 1 and why in res.stderr
    assert out.read_bytes() == b"the user's own file"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["existing.bin"]


def test_out_file_is_replaced_only_by_that_urls_content(invoke, server, tmp_path):
    url = server.add("/f.bin", DATA)
    out = tmp_path / "existing.bin"
    out.write_bytes(b"something else")
    res = invoke("download", "url", url, "--out", out)
    assert res.exit_code == 0 and out.read_bytes() == DATA and len(server.log) == 1
    assert invoke("download", "url", url, "--out", out).exit_code == 0
    assert len(server.log) == 1  # recorded as this URL's content: reused
    out.write_bytes(b"edited since")
    assert invoke("download", "url", url, "--out", out).exit_code == 0
    assert out.read_bytes() == DATA and len(server.log) == 2
    other = server.add("/other.bin", b"other content")
    assert invoke("download", "url", other, "--out", out).exit_code == 0  # another URL: downloaded
    assert out.read_bytes() == b"other content" and len(server.log) == 3


def test_cache_is_keyed_by_url_not_file_name(invoke, server):
    a = server.add("/a/model.bin", b"A" * 100)
    b = server.add("/b/model.bin", b"B" * 100)
    c = server.add("/b/model.bin?v=2", b"C" * 100)
    paths = [Path(invoke("download", "url", u).stdout.strip()) for u in (a, b, c)]
    assert [p.read_bytes()[:1] for p in paths] == [b"A", b"B", b"C"]
    assert len({p.parent for p in paths}) == 3 and {p.name for p in paths} == {"model.bin"}


def test_no_lock_files_beside_out_or_in_the_cache(invoke, server, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGFEAT_BASE_URL", server.url)
    server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/train.txt", "file", b"images/a.jpg 0\n")]))
    url = server.add("/f.bin", DATA)
    assert invoke("download", "url", url, "--out", tmp_path / "out" / "f.bin").exit_code == 0
    assert invoke("download", "url", url).exit_code == 0
    assert invoke("download", "dataset", "Inshop_examples").exit_code == 0
    stray = [p for p in tmp_path.rglob("*") if p.name.endswith(".lock") and ".locks" not in p.parts]
    assert stray == [] and list((cache / ".locks").iterdir())


def test_corrupt_archive_is_not_recorded_and_a_fixed_mirror_works(invoke, server, cache, monkeypatch):
    monkeypatch.setenv("IMGFEAT_BASE_URL", server.url)
    url = server.add("/data/Inshop_examples.tar", b"this is not a tar archive" * 100)
    res = invoke("download", "dataset", "Inshop_examples")
    assert res.exit_code == 1 and "is not a usable archive" in res.stderr and "rerun" in res.stderr
    from imgfeat_cli.common.cache import read_manifest
    assert url not in read_manifest()
    assert not list((cache / "datasets").glob("*.tar"))
    server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/train.txt", "file", b"images/a.jpg 0\n")]))
    res = invoke("download", "dataset", "Inshop_examples")
    assert res.exit_code == 0 and (Path(res.stdout.strip()) / "train.txt").is_file()
    assert json.loads((cache / "manifest.json").read_text())[url]["verified"] == "unpacked"


def test_record_of_an_older_version_that_recorded_a_broken_archive_is_not_trusted(invoke, server, cache, monkeypatch):
    """Before this fix the manifest recorded an archive before unpacking it, and kept it when it
    did not unpack: such a record (no "verified") must not make the download fail forever."""
    monkeypatch.setenv("IMGFEAT_BASE_URL", server.url)
    url = server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/train.txt", "file", b"images/a.jpg 0\n")]))
    (cache / "datasets").mkdir(parents=True)
    (cache / "datasets" / "Inshop_examples.tar").write_bytes(b"broken")
    (cache / "manifest.json").write_text(json.dumps({url: {"sha256": hashlib.sha256(b"broken").hexdigest(), "size": 6,
                                                           "path": str(cache / "datasets" / "Inshop_examples.tar")}}))
    res = invoke("download", "dataset", "Inshop_examples")
    assert res.exit_code == 0, res.stderr


@pytest.mark.parametrize("kind", ["file", "archive"])
def test_recorded_checksum_mismatch_says_how_to_refresh(invoke, server, cache, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("IMGFEAT_BASE_URL", server.url)
    if kind == "file":
        url = server.add("/f.bin", DATA)
        assert invoke("download", "url", url).exit_code == 0
        server.add("/f.bin", b"replaced on the server")
        args, refresh = ["download", "url", url, "--out", tmp_path / "again.bin"], f"imgfeat download url {url} --refresh"
    else:
        url = server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/a.txt", "file", b"1")]))
        assert invoke("download", "dataset", "Inshop_examples").exit_code == 0
        shutil.rmtree(cache / "datasets" / "Inshop_examples")
        server.add("/data/Inshop_examples.tar", _tar([("Inshop_examples/a.txt", "file", b"2")]))
        args, refresh = ["download", "dataset", "Inshop_examples"], "imgfeat download dataset Inshop_examples --refresh"
    res = invoke(*args)
    assert res.exit_code == 1 and "is not the file recorded when it was first downloaded" in res.stderr
    assert f"forget the record: {refresh}" in res.stderr
    res = invoke(*args, "--refresh")
    assert res.exit_code == 0, res.stderr
    assert invoke(*args).exit_code == 0  # the new record holds


# ---- offline and unreachable servers fail at once; retries are reported (issue 16) ----------

def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(params=["dns", "refused"])
def unreachable_base(request):
    return "http://nonexistent.invalid" if request.param == "dns" else f"http://127.0.0.1:{closed_port()}"


def test_unreachable_server_fails_at_once_without_retries(unreachable_base, tmp_path):
    delays, notes = [], []
    with pytest.raises(DownloadError, match="cannot reach") as info:
        download_file(unreachable_base + "/f.bin", tmp_path / "f.bin", sleep=delays.append, on_retry=notes.append)
    assert delays == [] and notes == []
    assert ("cannot be resolved" if "invalid" in unreachable_base else "connection refused") in info.value.message


def test_offline_embed_with_the_default_model_fails_at_once_with_the_hint(invoke, unreachable_base, tmp_path,
                                                                          monkeypatch):
    import imgfeat_cli.common.download as dl

    slept = []
    monkeypatch.setattr(dl, "_sleep", slept.append)
    monkeypatch.setenv("IMGFEAT_BASE_URL", unreachable_base)
    from PIL import Image
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "photos" / "a.jpg")
    res = invoke("embed", tmp_path / "photos", "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 1 and slept == [] and "retrying" not in res.stderr
    error, hint = [line for line in res.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert "cannot get model PP-ShiTuV2_rec" in error and "cannot reach" in error
    assert "--model-dir" in hint


def test_download_model_names_the_offline_routes_once(invoke, unreachable_base, monkeypatch):
    """Issue 21: the offline hint (the routes to a model without internet) once, not the network hint twice."""
    from imgfeat_cli.models.hub import offline_hint

    monkeypatch.setenv("IMGFEAT_BASE_URL", unreachable_base)
    res = invoke("download", "model", "PP-ShiTuV2_rec")
    assert res.exit_code == 1 and "cannot reach" in res.stderr
    hint = res.stderr.split("Hint: ", 1)[1].strip()
    assert hint == offline_hint("PP-ShiTuV2_rec") and hint.count("IMGFEAT_BASE_URL") == 1
    monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    res = invoke("download", "model", "PP-ShiTuV2_rec")
    assert res.exit_code == 1 and offline_hint("PP-ShiTuV2_rec") in res.stderr and "unset IMGFEAT_OFFLINE" in res.stderr
    assert res.stderr.count("IMGFEAT_BASE_URL") == 1


@pytest.mark.parametrize("name", ["NOPE", "PP-ShiTuV2", "clip"])
def test_download_model_of_an_unknown_name_is_a_usage_error(invoke, name):
    res = invoke("download", "model", name)
    assert res.exit_code == 2 and f"unknown model {name!r}" in res.stderr


def test_retries_are_reported_as_they_happen(invoke, server, tmp_path, monkeypatch):
    import imgfeat_cli.common.download as dl

    monkeypatch.setattr(dl, "_sleep", nosleep)
    url = server.add("/flaky.bin", DATA, mode="flaky", fails=2)
    notes = []
    download_file(url, tmp_path / "a.bin", on_retry=notes.append)
    assert len(notes) == 2 and "HTTP 500" in notes[0] and "attempt 2 of 5" in notes[0] and "attempt 3 of 5" in notes[1]
    url = server.add("/flaky2.bin", DATA, mode="flaky", fails=1)
    res = invoke("download", "url", url, "--out", tmp_path / "b.bin")
    assert res.exit_code == 0
    assert "HTTP 500 from 127.0.0.1" in res.stderr and "retrying in 1 s (attempt 2 of 5)" in res.stderr


@pytest.mark.parametrize("url,code,words", [
    ("http://", 2, "is not a valid URL"),
    ("http://[::1/x", 2, "is not a valid URL"),
    ("REDIRECT", 1, "TooManyRedirects"),
])
def test_urls_requests_cannot_use_are_one_line(invoke, server, url, code, words):
    if url == "REDIRECT":
        url = server.add("/loop", b"", mode="redirect")
    res = invoke("download", "url", url)
    assert res.exit_code == code and words in res.stderr and "unexpected" not in res.stderr


@pytest.fixture
def silent_server():
    """A server on 127.0.0.1 that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("args,within,words", [
    (["--timeout", "0.3", "--deadline", "1.5"], 6, "stopped at its deadline of 1.5 s"),
    (["--deadline", "1"], 6, "stopped at its deadline of 1 s"),
])
def test_a_server_that_never_answers_is_bounded_by_timeout_and_deadline(invoke, silent_server, tmp_path, args,
                                                                         within, words):
    """It retried for minutes (30 s per attempt, 5 attempts, no option to shorten it)."""
    import time

    start = time.monotonic()
    res = invoke("download", "url", silent_server + "/x.bin", "--out", tmp_path / "x.bin", *args, "--json")
    assert res.exit_code == 1 and time.monotonic() - start < within, res.stderr
    assert words in json.loads(res.stdout)["error"]["message"]
    assert not (tmp_path / "x.bin").exists()


def test_disk_full_says_what_it_kept_and_how_to_resume_or_drop_it(invoke, server, tmp_path, monkeypatch):
    import errno

    import imgfeat_cli.common.download as download

    real_open = open

    class FullDisk:  # a file that takes 70,000 bytes, then the disk is full
        def __init__(self, path, mode):
            self.fh = real_open(path, mode)

        def write(self, data):
            if self.fh.tell() + len(data) > 70_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(download, "open", FullDisk, raising=False)
    url = server.add("/big.bin", DATA)
    res = invoke("download", "url", url, "--out", tmp_path / "big.bin")
    part = part_path(tmp_path / "big.bin", url)
    assert res.exit_code == 1 and part.stat().st_size == 65_536
    error, hint = [ln for ln in res.stderr.splitlines() if ln.startswith(("Error:", "Hint:"))]
    assert f"65,536 bytes kept in {part}" in error
    assert "rerun the same command to resume" in hint and f"delete {part}" in hint
    monkeypatch.delattr(download, "open")
    res = invoke("download", "url", url, "--out", tmp_path / "big.bin")  # the documented resume
    assert res.exit_code == 0 and (tmp_path / "big.bin").read_bytes() == DATA and not part.exists()
