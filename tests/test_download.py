"""Downloads against a local HTTP server: resume, retries, checksums, safe extraction, offline,
concurrency, and model resolution through the cache."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from httpserver import Server
from imgfeat_cli.common.download import download_file, extract_archive
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
    assert path == cache / "files" / "f.bin" and path.read_bytes() == DATA
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest[url]["sha256"] == SHA and manifest[url]["size"] == len(DATA)
    assert not path.with_name("f.bin.part").exists()


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
    part = tmp_path / "d.bin.part"
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
    assert not any(p.is_file() and not p.name.endswith(".lock") for p in (cache / "files").iterdir())


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
            download_file(url, tmp_path / "s.bin", sleep=nosleep)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and (tmp_path / "s.bin").read_bytes() == DATA
    assert sum(1 for p, *_ in server.log if p == "/slow.bin") == 1  # the others found it done
    assert not (tmp_path / "s.bin.part").exists()


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
