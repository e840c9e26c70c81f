"""`imgfeat serve` through HTTP with Starlette's TestClient: every route, PaddleX's schemas, errors
as JSON for hostile requests, thumbnails, URL inputs, back-pressure, the model check.

Lifecycle behaviour that needs a real server (concurrency, kill -9, workers, SIGTERM, slow
senders, the browser) is in test_serve_live.py."""
from __future__ import annotations

import base64
import json
import os
import struct
import threading
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="imgfeat[serve] is in the test extra")
pytest.importorskip("faiss", reason="faiss-cpu is in the test extra")

with warnings.catch_warnings():  # starlette 1.x asks for httpx2 instead of httpx; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from imgfeat_cli.serve.app import create_app  # noqa: E402
from serve_support import ds, extra_images, idx, serve_model, settings, template  # noqa: E402,F401  (fixtures)


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def make_client(model_dir, serve_model, idx, tmp_path):
    clients = []

    def make(indexes=None, warn=lambda line: None, **serve):
        s = settings(model_dir, [idx] if indexes is None else indexes, tmp_path / "data", **serve)
        client = TestClient(create_app(s, serve_model, warn))
        clients.append(client.__enter__())
        return client
    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def busy_port():
    """A port something already listens on: `imgfeat serve` gets past loading and checking, then
    stops with 'cannot listen' (exit 2) instead of serving."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield str(sock.getsockname()[1])
    sock.close()


def jpeg(path: Path) -> Tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/jpeg")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def first_image(ds: Path) -> Path:
    return ds / "images/c00/000.jpg"


def healthy(client: TestClient, ds: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    res = client.post("/v1/indexes/idx/search", files=[("image", jpeg(first_image(ds)))])
    assert res.status_code == 200 and res.json()["results"][0]["labels"][0] == "c00"


# --- routes ---------------------------------------------------------------------------------------
def test_probes_metrics_docs_and_page(client, ds):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["indexes"] == ["idx"]
    client.post("/v1/indexes/idx/search", files=[("image", jpeg(first_image(ds)))])
    text = client.get("/metrics").text
    assert 'imgfeat_requests_total{route="/v1/indexes/{name}/search",status="200"} 1.0' in text
    assert 'imgfeat_index_items{index="idx"} 12.0' in text
    assert "imgfeat_batch_size_bucket" in text and "imgfeat_request_seconds_bucket" in text
    assert "imgfeat_queue_images 0.0" in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/shitu-index-build", "/shitu-index-add", "/shitu-index-remove", "/shitu-infer", "/v1/embed",
            "/v1/indexes/{name}/search", "/v1/indexes/{name}/add", "/v1/indexes/{name}/remove"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../settings.py").status_code == 404


def test_embed_multipart_json_and_float16_equal_the_library(client, ds, serve_model):
    a, b = first_image(ds), ds / "images/c01/000.jpg"
    res = client.post("/v1/embed", files=[("image", jpeg(a)), ("image", jpeg(b))])
    assert res.status_code == 200, res.text
    doc = res.json()
    assert doc["dim"] == 512 and doc["model"]["sha256"] == serve_model.identity["sha256"]
    feats = np.asarray([r["feature"] for r in doc["results"]], dtype=np.float32)
    assert [(r["width"], r["height"]) for r in doc["results"]] == [(48, 48), (48, 48)]
    expected = np.stack([f["res"]["feature"] for f in serve_model.predict([str(a), str(b)], batch_size=2)])
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    single = client.post("/v1/embed", json={"image": b64(a)}).json()["results"][0]["feature"]
    np.testing.assert_allclose(single, feats[0], atol=1e-6)
    half = client.post("/v1/embed", json={"images": [b64(a)], "encoding": "float16_base64"}).json()
    vec = np.frombuffer(base64.b64decode(half["results"][0]["feature"]), dtype="<f2")
    np.testing.assert_allclose(vec, feats[0], atol=2e-3)


def test_search_reply_equals_imgfeat_search(client, ds, idx, model_dir, invoke):
    query = ds / "images/c02/004.jpg"  # not in the gallery
    res = invoke("search", query, "--index", idx, "--model-dir", model_dir, "-k", "3", "--no-threshold", "--json")
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)["results"][0]
    reply = client.post("/v1/indexes/idx/search", files=[("image", jpeg(query))],
                        data={"top_k": "3", "threshold": "none"}).json()
    got = reply["results"][0]
    assert (got["labels"], got["scores"], got["ids"]) == (cli["labels"], cli["scores"], cli["ids"])
    assert reply["threshold"] is None and reply["top_k"] == 3 and reply["count"] == 12
    assert got["input_paths"][0].endswith(".jpg") and os.path.isabs(got["input_paths"][0])
    thr = client.post("/v1/indexes/idx/search", json={"image": b64(query), "top_k": 3, "threshold": 1.01}).json()
    assert thr["results"][0] == {"labels": [], "scores": [], "ids": [], "input_paths": []}


def test_index_add_remove_info_reach_the_folder(client, ds, idx, invoke):
    new = extra_images(ds)[:2]
    res = client.post("/v1/indexes/idx/add", files=[("image", jpeg(p)) for p in new],
                      data={"label": ["fresh one", "fresh two"]})
    assert res.status_code == 200, res.text
    doc = res.json()
    assert doc["added"] == 2 and doc["ids"] == [12, 13] and doc["count"] == 14 and doc["generation"] == 1
    hit = client.post("/v1/indexes/idx/search", files=[("image", jpeg(new[1]))], data={"top_k": "1"}).json()
    assert hit["results"][0]["labels"] == ["fresh two"] and hit["generation"] == 1
    info = json.loads(invoke("index", "info", idx, "--json").stdout)  # what is on disk, PaddleX's files
    assert info["count"] == 14 and info["labels"]["fresh one"] == 1
    removed = client.post("/v1/indexes/idx/remove", json={"ids": doc["ids"]}).json()
    assert removed == {"index": "idx", "generation": 2, "count": 12, "removed": 2}
    by_label = client.post("/v1/indexes/idx/remove", json={"label": "c03"}).json()
    assert by_label["removed"] == 3 and client.get("/v1/indexes/idx").json()["count"] == 9
    assert client.get("/v1/indexes").json()["indexes"] == [{"index": "idx", "generation": 3, "count": 9}]
    bad = client.post("/v1/indexes/idx/remove", json={"ids": [999]})
    assert bad.status_code == 400 and "999" in bad.json()["error"]["message"]
    mismatch = client.post("/v1/indexes/idx/add", files=[("image", jpeg(new[0]))] * 2, data={"label": ["a", "b", "c"]})
    assert mismatch.status_code == 400 and "2 images but 3 labels" in mismatch.json()["error"]["message"]


# --- PaddleX --------------------------------------------------------------------------------------
# PaddleX 3.7.2's serving schemas, field for field (paddlex/inference/serving/infra/models.py and
# schemas/pp_shituv2.py), written out here so the test needs no paddlex; extra="forbid" makes any
# field PaddleX does not send a failure too.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PxBuildIndexResult(_Strict):
    indexKey: str
    imageCount: int


class PxAddImagesToIndexResult(_Strict):
    imageCount: int


class PxRemoveImagesFromIndexResult(_Strict):
    imageCount: int


class PxRecResult(_Strict):
    label: str
    score: float


class PxDetectedObject(_Strict):
    bbox: List[float]  # Tuple[float, float, float, float]: a JSON array of 4
    recResults: List[PxRecResult]
    score: float


class PxInferResult(_Strict):
    detectedObjects: List[PxDetectedObject]
    image: Optional[str] = None


class PxNoResultResponse(_Strict):
    logId: str
    errorCode: int
    errorMsg: str


def px_reply(res, result_model):
    """A successful PaddleX reply: AIStudioResultResponse[result_model], None fields left out."""
    assert res.status_code == 200, res.text
    doc = res.json()
    assert set(doc) == {"logId", "result", "errorCode", "errorMsg"}
    assert doc["errorCode"] == 0 and doc["errorMsg"] == "Success" and len(doc["logId"]) == 36
    return result_model.model_validate(doc["result"])


def px_error(res, status):
    assert res.status_code == status, res.text
    err = PxNoResultResponse.model_validate(res.json())
    assert err.errorCode == status
    return err


def test_paddlex_endpoints_follow_paddlex_schemas(client, ds, tmp_path):
    import yaml

    pairs = [{"image": b64(ds / f"images/c0{c}/000.jpg"), "label": f"item {c}"} for c in range(3)]
    built = px_reply(client.post("/shitu-index-build", json={"imageLabelPairs": pairs}), PxBuildIndexResult)
    assert built.imageCount == 3
    folder = tmp_path / "data" / built.indexKey  # PaddleX's on-disk format under the data folder
    id_map = yaml.safe_load((folder / "id_map.yaml").read_text(encoding="utf-8"))
    assert id_map == {"id_map": {0: "item 0", 1: "item 1", 2: "item 2"}, "index_type": "Flat", "metric_type": "IP"}
    assert (folder / "vector.index").is_file()
    added = px_reply(client.post("/shitu-index-add", json={"indexKey": built.indexKey, "imageLabelPairs": [
        {"image": b64(ds / "images/c03/000.jpg"), "label": "item 3"}]}), PxAddImagesToIndexResult)
    assert added.imageCount == 4
    removed = px_reply(client.post("/shitu-index-remove", json={"indexKey": built.indexKey, "ids": [1, 77]}),
                       PxRemoveImagesFromIndexResult)
    assert removed.imageCount == 3  # an id the index does not hold is ignored, as in PaddleX
    infer = client.post("/shitu-infer", json={"image": b64(ds / "images/c03/000.jpg"), "indexKey": built.indexKey,
                                              "visualize": False, "topk": 2, "recThreshold": 0.0})
    result = px_reply(infer, PxInferResult)
    assert "image" not in infer.json()["result"]  # None is left out (response_model_exclude_none)
    (obj,) = result.detectedObjects
    assert obj.bbox == [0.0, 0.0, 48.0, 48.0] and obj.score == 0.0
    assert obj.recResults[0].label == "item 3" and len(obj.recResults) == 2
    default = client.post("/shitu-infer", json={"image": b64(first_image(ds))})  # the first --index, visualized
    shown = px_reply(default, PxInferResult)
    assert shown.detectedObjects[0].recResults[0].label == "c00"
    picture = np.frombuffer(base64.b64decode(shown.image), np.uint8)
    import cv2
    assert cv2.imdecode(picture, cv2.IMREAD_COLOR).shape == (48, 48, 3)


def test_paddlex_errors_follow_paddlex_schemas(client, ds):
    err = px_error(client.post("/shitu-infer", json={"indexKey": "idx"}), 422)
    assert json.loads(err.errorMsg)[0]["loc"] == "body.image"
    px_error(client.post("/shitu-infer", content=b"{oops", headers={"content-type": "application/json"}), 422)
    assert "not a recognised image" in px_error(client.post("/shitu-infer", json={"image": "aGVsbG8="}), 400).errorMsg
    assert "no index named" in px_error(client.post("/shitu-infer", json={"image": b64(first_image(ds)),
                                                                         "indexKey": "nope"}), 404).errorMsg
    px_error(client.post("/shitu-index-add", json={"indexKey": "../etc", "imageLabelPairs": [
        {"image": b64(first_image(ds)), "label": "x"}]}), 400)
    px_error(client.post("/shitu-index-build", json={"imageLabelPairs": []}), 400)
    healthy(client, ds)


# --- hostile requests -----------------------------------------------------------------------------
def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims width x height pixels (the data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


HOSTILE = {
    "413 body": (dict(content=b"x" * 70000, headers={"content-type": "application/json"}), 413, "payload_too_large"),
    "pixel bomb": (dict(files=[("image", ("bomb.png", png_bomb(), "image/png"))]), 400, "bad_image"),
    "truncated": ("truncated", 400, "bad_image"),
    "wrong content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
                           "unsupported_media_type"),
    "malformed JSON": (dict(content=b'{"image": ', headers={"content-type": "application/json"}), 400,
                       "bad_request"),
    "unknown field": (dict(json={"imagez": "x"}), 422, "invalid_request"),
    "not base64": (dict(json={"image": "%%%"}), 400, "bad_image"),
    "URL refused": (dict(json={"image": "http://169.254.169.254/latest/meta-data"}), 403, "url_refused"),
    "no image": (dict(json={}), 400, "bad_request"),
    "too many images": (dict(json={"images": ["x"] * 65}), 400, "bad_request"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_get_a_json_error_and_the_server_stays_healthy(make_client, ds, case):
    client = make_client(max_body_mb=0.06)
    kwargs, status, code = HOSTILE[case]
    if kwargs == "truncated":
        data = first_image(ds).read_bytes()
        kwargs = dict(files=[("image", ("t.jpg", data[: len(data) // 2], "image/jpeg"))])
    res = client.post("/v1/indexes/idx/search", **kwargs)
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert err["code"] == code and err["message"] and "Traceback" not in res.text
    assert err["exit_code"] == (2 if status < 500 and code != "bad_image" else 1)
    healthy(client, ds)


@pytest.mark.parametrize("path", ["/v1/indexes/idx/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
                                  "/v1/indexes/..%2F..%2Fetc/items/0/thumbnail",
                                  "/v1/indexes/idx/items/-1/thumbnail", "/v1/indexes/.hidden/items/0/thumbnail",
                                  "/static/..%2F..%2Fsettings.py"])
def test_traversal_attempts_in_the_thumbnail_route_are_json_errors(client, ds, path):
    res = client.get(path)
    assert res.status_code in (400, 404, 422) and res.headers["content-type"] == "application/json", res.text
    assert "error" in res.json()
    healthy(client, ds)


def test_thumbnails_come_only_from_inside_the_gallery_root(make_client, idx, ds, tmp_path):
    client = make_client(thumb_size=32)
    res = client.get("/v1/indexes/idx/items/0/thumbnail")
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    import cv2
    assert max(cv2.imdecode(np.frombuffer(res.content, np.uint8), cv2.IMREAD_COLOR).shape[:2]) == 32
    assert client.get("/v1/indexes/idx/items/0/thumbnail").content == res.content  # cached
    assert client.get("/v1/indexes/idx/items/99/thumbnail").status_code == 404
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(first_image(ds).read_bytes())
    side = json.loads((idx / "imgfeat_index.json").read_text())
    side["items"][1][1] = str(ds / "images" / ".." / ".." / "secret.jpg")  # recorded path escaping the root
    link = ds / "images" / "c00" / "link.jpg"
    link.symlink_to(secret)
    side["items"][2][1] = str(link)  # a symlink inside the root pointing out of it
    (idx / "imgfeat_index.json").write_text(json.dumps(side))
    client = make_client(thumb_size=32)
    for item in (1, 2):
        res = client.get(f"/v1/indexes/idx/items/{item}/thumbnail")
        assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden"
    link.unlink()


# --- URL inputs -----------------------------------------------------------------------------------
@pytest.fixture
def image_host(ds):
    """127.0.0.1 serving /ok/img.jpg, /ok/big.jpg (too large), /ok/away (redirect to localhost)."""
    body = first_image(ds).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == "/ok/away":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/ok/img.jpg")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = body if self.path in ("/ok/img.jpg", "/private/img.jpg") else b"\xff" * 200000
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_inputs_only_under_allow_url(make_client, ds, image_host, tmp_path):
    client = make_client(allow_url=[image_host + "/ok/"], max_body_mb=0.1)
    good = client.post("/v1/embed", json={"image": image_host + "/ok/img.jpg"})
    assert good.status_code == 200, good.text
    upload = client.post("/v1/embed", files=[("image", jpeg(first_image(ds)))]).json()
    np.testing.assert_allclose(good.json()["results"][0]["feature"], upload["results"][0]["feature"], atol=1e-6)
    for url, status in ((image_host + "/private/img.jpg", 403), (image_host + "/ok/../private/img.jpg", 403),
                        (image_host + "/ok/%2e%2e/private/img.jpg", 403), (image_host + "/ok/away", 403),
                        (image_host.replace("127.0.0.1", "user@127.0.0.1") + "/ok/img.jpg", 403),
                        (image_host + "/ok/big.jpg", 400)):
        res = client.post("/v1/embed", json={"image": url})
        assert res.status_code == status, (url, res.text)
    healthy(client, ds)


# --- back-pressure, batching ----------------------------------------------------------------------
def test_a_full_queue_answers_503_with_retry_after(make_client, ds):
    client = make_client(queue_size=2)
    batcher = client.app.service.batcher
    batcher.admit(2)  # two images in flight elsewhere
    try:
        res = client.post("/v1/indexes/idx/search", files=[("image", jpeg(first_image(ds)))])
        assert res.status_code == 503 and res.headers["retry-after"] == "1"
        assert res.json()["error"]["code"] == "overloaded"
        px = client.post("/shitu-infer", json={"image": b64(first_image(ds))})
        assert px.status_code == 503 and px.json()["errorCode"] == 503
    finally:
        batcher.decoded(2)
        batcher.release(2)
    healthy(client, ds)


def test_micro_batcher_groups_rows_that_are_coming_and_never_holds_a_lone_one():
    import asyncio

    from imgfeat_cli.serve.batcher import MicroBatcher

    sizes = []
    gate = threading.Event()
    gate.set()

    def run(batch):
        gate.wait(10)
        sizes.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :4]

    batcher = MicroBatcher(run, max_batch=4, max_wait_s=30.0, queue_size=64)
    row = lambda v: np.full((3, 2, 2), v, np.float32)  # noqa: E731

    async def scenario():
        batcher.admit(1)
        batcher.decoded(1)  # nothing else is being decoded: no reason to wait 30 s
        lone = await asyncio.wait_for(batcher.embed([row(7)]), 5)
        assert lone.tolist() == [[7.0] * 4]
        batcher.admit(3)  # three requests decoding: the first row waits for the other two
        first = asyncio.ensure_future(batcher.embed([row(0)]))
        await asyncio.sleep(0.3)
        later = [asyncio.ensure_future(batcher.embed([row(i)])) for i in (1, 2)]
        await asyncio.sleep(0.05)
        batcher.decoded(3)
        assert [float(o[0, 0]) for o in await asyncio.wait_for(asyncio.gather(first, *later), 10)] == [0, 1, 2]
        gate.clear()  # the model is busy: rows pile up and leave max_batch at a time
        batcher.admit(6)
        batcher.decoded(6)
        busy = asyncio.ensure_future(batcher.embed([row(0)]))
        await asyncio.sleep(0.2)
        rest = [asyncio.ensure_future(batcher.embed([row(i)])) for i in range(5)]
        await asyncio.sleep(0.2)
        gate.set()
        outs = await asyncio.wait_for(asyncio.gather(busy, *rest), 10)
        assert [float(o[0, 0]) for o in outs] == [0, 0, 1, 2, 3, 4]  # each request its own feature

    asyncio.run(scenario())
    batcher.close()
    assert sizes == [1, 3, 1, 4, 1]


# --- security settings ----------------------------------------------------------------------------
def test_token_is_required_on_every_data_route(make_client, ds, tmp_path):
    token = "s3cret-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    client = make_client(token_file=str(tmp_path / "token"))
    for path in ("/v1/server", "/metrics"):
        res = client.get(path)
        assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Bearer")
        assert res.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/server", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    px = client.post("/shitu-infer", json={"image": b64(first_image(ds))})
    assert px.status_code == 401 and px.json()["errorCode"] == 401
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/docs"):
        assert client.get(path).status_code == 200, path
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/server", headers=auth).json()["auth"] is True
    res = client.post("/v1/indexes/idx/search", files=[("image", jpeg(first_image(ds)))], headers=auth)
    assert res.status_code == 200


def test_cors_is_off_unless_an_origin_is_given(make_client):
    pre = {"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in make_client().options("/v1/embed", headers=pre).headers
    res = make_client(cors=["https://shop.example.com"]).options("/v1/embed", headers=pre)
    assert res.headers["access-control-allow-origin"] == "https://shop.example.com"


@pytest.mark.parametrize("args,needle", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 accepts connections from other machines, and no --token-file"),
    (["--host", "10.1.2.3", "--token-file", "missing"], "--token-file missing: no such file"),
    (["--token-file", "short"], "at least 16 characters"),
    (["--allow-url", "ftp://x/"], "Serve.allow_url"),
    (["--allow-url", "http://user:pw@x/"], "is not an http(s)://host/path prefix"),
    (["--index", "nowhere"], "index folder"),
    (["--workers", "0"], "Serve.workers"),
    (["--data-dir", "short"], "--data-dir short is a file, not a folder"),
])
def test_serve_refuses_bad_settings_before_listening(invoke, model_dir, tmp_path, args, needle, monkeypatch,
                                                     busy_port):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short").write_text("abc")
    res = invoke("serve", "--model-dir", model_dir, "--port", busy_port, *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.stderr


# --- the index's model ----------------------------------------------------------------------------
def _record_model(idx: Path, **model) -> None:
    side = json.loads((idx / "imgfeat_index.json").read_text())
    side["model"] = {**side["model"], **model}
    (idx / "imgfeat_index.json").write_text(json.dumps(side))


def test_an_index_of_another_model_is_refused_unless_allowed(make_client, idx, invoke, model_dir, busy_port):
    _record_model(idx, name="other", sha256="0123456789abcdef", lineage="0123456789abcdef")
    res = invoke("serve", "--model-dir", model_dir, "--index", idx, "--port", busy_port)
    assert res.exit_code == 2 and "not comparable" in res.stderr and "other (" in res.stderr, res.output
    warnings = []
    client = make_client(allow_other_model=True, warn=warnings.append)
    assert client.get("/readyz").status_code == 200 and "--allow-other-model" in warnings[0]


def test_without_model_flags_the_index_model_is_used(idx, invoke, busy_port):
    res = invoke("serve", "--index", idx, "--port", busy_port)  # no model flag: the index's own model
    assert res.exit_code == 2 and "cannot listen" in res.stderr, res.output
    assert "using the index's own model" in res.stderr


def test_an_int8_copy_of_the_index_model_is_accepted(idx, ds, model_dir, tmp_path, invoke, busy_port):
    res = invoke("quantize", model_dir, "--calib", ds / "images", "--calib-count", "16", "--out", tmp_path / "int8",
                 "--force")
    assert res.exit_code == 0, res.output
    res = invoke("serve", "--model-dir", tmp_path / "int8", "--index", idx, "--port", busy_port)
    assert res.exit_code == 2 and "cannot listen" in res.stderr, res.output  # not refused for its model


def test_a_swap_cut_between_its_renames_is_restored_at_start(make_client, idx, ds):
    idx.rename(idx.with_name("idx.bak"))  # kill -9 after the first rename of a swap
    warnings = []
    client = make_client(warn=warnings.append)
    assert idx.is_dir() and "restored its last complete state" in warnings[0]
    healthy(client, ds)


def test_an_index_another_process_is_writing_answers_409_with_retry_after(client, ds, idx):
    from imgfeat_cli.common import folders

    lock = folders.writer_lock(idx)  # `imgfeat index add` running in a shell
    lock.acquire()
    try:
        res = client.post("/v1/indexes/idx/add", files=[("image", jpeg(extra_images(ds)[0]))], data={"label": "x"})
        assert res.status_code == 409 and res.headers["retry-after"] == "1"
        assert res.json()["error"]["code"] == "index_busy"
    finally:
        lock.release()
    res = client.post("/v1/indexes/idx/add", files=[("image", jpeg(extra_images(ds)[0]))], data={"label": "x"})
    assert res.status_code == 200 and res.json()["count"] == 13
