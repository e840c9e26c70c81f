"""Object storage for real: moto's S3 server on 127.0.0.1 (started here, on a free port), reached
through the standard AWS variables. `index build -g s3://bucket/prefix/` reads a Parquet folder back,
the Ray engine writes and resumes `--out s3://bucket/prefix/`, and an unreachable, missing or
forbidden bucket, or missing credentials, are one line before any work."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto", reason="moto[server] is in the test extra")
boto3 = pytest.importorskip("boto3")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from pyarrow import fs as pafs  # noqa: E402

from test_index_scale import clustered, one_line_error, ray_folder  # noqa: E402

# one worker runs this module, with the Ray tests (its last test runs the Ray engine): two Ray
# clusters at once on 2 cores starve both, and its S3 server (a module fixture) is started once
pytestmark = pytest.mark.xdist_group("ray")

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(tmp_path_factory, **env: str):
    """moto's S3 server on 127.0.0.1:<free port>; returns (process, endpoint URL)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start: {log.name}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    proc, url = start_moto(tmp_path_factory)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3(moto_url, monkeypatch):
    """The AWS variables pointing at moto, and a boto3 client for setting buckets up."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**KEYS, "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(key, value)
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def upload(folder: Path, bucket: str, prefix: str) -> None:
    s3fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
    for f in folder.iterdir():
        with s3fs.open_output_stream(f"{bucket}/{prefix}/{f.name}") as out:
            out.write(f.read_bytes())


def test_index_build_reads_a_parquet_folder_from_s3(invoke, s3, tmp_path):
    s3.create_bucket(Bucket="gallery")
    feats = clustered(1500, seed=5)
    ray_folder(tmp_path / "local", feats, rows_per_file=400, failed=2)
    upload(tmp_path / "local", "gallery", "feats")
    args = ["-o", "Index.label_from=folder", "--index-type", "auto", "--json"]
    remote = json.loads(invoke("index", "build", "-g", "s3://gallery/feats/", "--out", tmp_path / "r", *args).stdout)
    local = json.loads(invoke("index", "build", "-g", tmp_path / "local", "--out", tmp_path / "l", *args).stdout)
    assert remote["count"] == local["count"] == 1500 and remote["factory"] == local["factory"]
    assert (tmp_path / "r" / "id_map.yaml").read_bytes() == (tmp_path / "l" / "id_map.yaml").read_bytes()
    assert (tmp_path / "r" / "vector.index").read_bytes() == (tmp_path / "l" / "vector.index").read_bytes()
    # the bucket vanishes: the next build says so in one line
    for obj in s3.list_objects_v2(Bucket="gallery")["Contents"]:
        s3.delete_object(Bucket="gallery", Key=obj["Key"])
    s3.delete_bucket(Bucket="gallery")
    one_line_error(invoke("index", "build", "-g", "s3://gallery/feats/", "--out", tmp_path / "x"), 2,
                   "the bucket does not exist")
    assert not (tmp_path / "x").exists()


def test_unreachable_missing_and_forbidden_buckets_fail_before_any_work(invoke, s3, tmp_path, monkeypatch,
                                                                         tmp_path_factory, model_dir):
    pytest.importorskip("ray.data")
    s3.create_bucket(Bucket="real")
    no_photos = tmp_path / "p"
    no_photos.mkdir()
    embed = ["embed", no_photos, "--engine", "ray", "--model-dir", model_dir]
    one_line_error(invoke("index", "build", "-g", "s3://nobucket/feats/", "--out", tmp_path / "i"), 2,
                   "cannot use s3://nobucket/feats/: the bucket does not exist")
    res = invoke(*embed, "--out", "s3://nobucket/feats/")
    one_line_error(res, 2, "the bucket does not exist")
    assert "loading" not in res.stderr  # refused before the model was loaded
    one_line_error(invoke("index", "build", "-g", "s3://real/empty/", "--out", tmp_path / "i"), 2, "does not exist")
    one_line_error(invoke(*embed, "--out", "s3://Not_A_Bucket/x/"), 2, "not an S3 location")
    # an endpoint that does not answer
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    one_line_error(invoke("index", "build", "-g", "s3://real/feats/", "--out", tmp_path / "i"), 2,
                   "cannot connect to the endpoint")
    assert time.monotonic() - t0 < 60
    # a store that checks signatures: unknown keys are refused, no keys at all are named in the hint
    proc, url = start_moto(tmp_path_factory, INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        res = invoke(*embed, "--out", "s3://real/feats/")
        one_line_error(res, 2, "s3://real/feats/")
        assert "access denied" in res.stderr or "not valid" in res.stderr
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials either
        res = invoke("index", "build", "-g", "s3://real/feats/", "--out", tmp_path / "i")
        one_line_error(res, 2, "cannot use s3://real/feats/")
        assert "no credentials are set" in res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not (tmp_path / "i").exists()


# -- the Ray engine writing to the bucket (a local 2-CPU Ray instance) -------------------------------

from test_ray import _assert_matches, _rows, photos, ray_local, reference  # noqa: E402,F401


@pytest.mark.slow
def test_ray_engine_writes_and_resumes_s3_and_index_reads_it_back(ray_local, invoke, s3, photos, model_dir, reference,
                                                                  tmp_path):
    s3.create_bucket(Bucket="feats")
    args = ["embed", str(photos), "--model-dir", model_dir, "--engine", "ray", "--out", "s3://feats/run1/",
            "--backend", "paddle", "-o", "Predict.rows_per_file=16", "--json"]
    res = invoke(*args)
    assert res.exit_code == 4, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["total"], doc["embedded"], doc["failed"]) == (65, 64, 1)
    assert all(f.startswith("s3://feats/run1/part-") for f in doc["files"][:-1])
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="feats", Prefix="run1/")["Contents"])
    parts = [k for k in keys if k.split("/")[-1].startswith("part-")]
    assert len(parts) == 5 and "run1/_imgfeat.yaml" in keys and "run1/_errors.jsonl" in keys
    assert not [k for k in keys if "/." in k]  # no hidden leftovers
    s3fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
    table = pq.read_table("feats/run1/", filesystem=s3fs)
    _assert_matches(_rows(table), reference, photos)

    lost = pq.read_table(f"feats/{parts[1]}", filesystem=s3fs).column("input_path").to_pylist()
    s3.delete_object(Bucket="feats", Key=parts[1])
    res = invoke(*args, "--resume")
    assert res.exit_code in (0, 4), res.stderr
    doc = json.loads(res.stdout)
    assert doc["embedded"] + doc["failed"] == len(lost) and doc["already_done"] == 65 - len(lost)
    _assert_matches(_rows(pq.read_table("feats/run1/", filesystem=s3fs)), reference, photos)

    res = invoke("index", "build", "-g", "s3://feats/run1/", "-o", "Index.label_from=path", "--out", tmp_path / "idx",
                 "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["count"] == 64
    hits = json.loads(invoke("search", "--embeddings", _reference_jsonl(tmp_path, reference), "--index",
                             tmp_path / "idx", "-k", "1", "--json").stdout)["results"]
    assert all(h["labels"] == [h["input_path"]] for h in hits)  # every image finds itself


def _reference_jsonl(tmp_path: Path, reference: dict) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"input_path": p, "feature": np.asarray(v, float).tolist()}) + "\n"
                            for p, v in reference.items()))
    return path
