"""PaddleX's PP-ShiTuV2 serving API, so an unmodified PaddleX client works against imgfeat.

Requests and replies follow ``paddlex/inference/serving/schemas/pp_shituv2.py`` and
``infra/models.py`` (PaddleX 3.x) field for field: ``{"logId", "errorCode": 0, "errorMsg":
"Success", "result"}``, errors ``{"logId", "errorCode", "errorMsg"}`` with the HTTP status, 422 with
the JSON list of validation errors as ``errorMsg``, ``None`` fields left out. Differences, on
purpose:

* imgfeat has no detector: the whole image is the one detected object, ``bbox`` ``[0, 0, w, h]`` and
  detection ``score`` 0 (what PaddleX itself reports when its detector finds nothing);
  ``detThreshold`` and ``hammingRadius`` are accepted and ignored;
* an ``indexKey`` is a folder under the server's data folder in PaddleX's on-disk format (or an
  ``--index`` folder's name), not an opaque blob in PaddleX's own storage; without ``indexKey``,
  ``/shitu-infer`` searches the first ``--index``;
* images are base64 data, or URLs only under ``--allow-url`` (PaddleX fetches any URL);
* removing an id the index does not hold is ignored, as in PaddleX (imgfeat's own API refuses it).
"""
from __future__ import annotations

import base64
import uuid
from typing import Generic, List, Optional, Tuple, TypeVar

import cv2
import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from typing_extensions import Literal

from imgfeat_cli.serve import backend
from imgfeat_cli.serve.errors import BadRequest, PADDLEX_PREFIX
from imgfeat_cli.serve.inputs import label_of
from imgfeat_cli.serve.service import Service
from imgfeat_cli.serve.thumbs import encode_jpeg

router = APIRouter(tags=["PaddleX PP-ShiTuV2"])
ResultT = TypeVar("ResultT", bound=BaseModel)


class ImageLabelPair(BaseModel):
    image: str
    label: str


class BuildIndexRequest(BaseModel):
    imageLabelPairs: List[ImageLabelPair]


class BuildIndexResult(BaseModel):
    indexKey: str
    imageCount: int


class AddImagesToIndexRequest(BaseModel):
    imageLabelPairs: List[ImageLabelPair]
    indexKey: str


class AddImagesToIndexResult(BaseModel):
    imageCount: int


class RemoveImagesFromIndexRequest(BaseModel):
    ids: List[int]
    indexKey: str


class RemoveImagesFromIndexResult(BaseModel):
    imageCount: int


class InferRequest(BaseModel):
    image: str
    indexKey: Optional[str] = None
    detThreshold: Optional[float] = None
    recThreshold: Optional[float] = None
    hammingRadius: Optional[float] = None
    topk: Optional[int] = None
    visualize: Optional[bool] = None


class RecResult(BaseModel):
    label: str
    score: float


class DetectedObject(BaseModel):
    bbox: Tuple[float, float, float, float]
    recResults: List[RecResult]
    score: float


class InferResult(BaseModel):
    detectedObjects: List[DetectedObject]
    image: Optional[str] = None


class ResultResponse(BaseModel, Generic[ResultT]):
    logId: str
    result: ResultT
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"


class NoResultResponse(BaseModel):
    logId: str
    errorCode: int
    errorMsg: str


ERRORS = {status: {"model": NoResultResponse} for status in (400, 401, 403, 404, 409, 413, 422, 500, 503)}


def _operation(path: str, operation_id: str):  # PaddleX's primary_operation
    return router.post(path, operation_id=operation_id, responses=ERRORS, response_model_exclude_none=True)


def _service(request: Request) -> Service:
    return request.app.state.service


def _log_id() -> str:
    return str(uuid.uuid4())


def _pairs(pairs: List[ImageLabelPair]) -> Tuple[List[str], List[str]]:
    if not pairs:
        raise BadRequest("imageLabelPairs is empty")
    return [p.image for p in pairs], [label_of(p.label, f"imageLabelPairs[{i}].label") for i, p in enumerate(pairs)]


@_operation(PADDLEX_PREFIX + "index-build", "buildIndex")
async def build_index(request: Request, body: BuildIndexRequest) -> ResultResponse[BuildIndexResult]:
    images, labels = _pairs(body.imageLabelPairs)
    key, snap = await _service(request).build(images, labels)
    return ResultResponse[BuildIndexResult](logId=_log_id(), result=BuildIndexResult(
        indexKey=key, imageCount=backend.index_count(snap.index)))


@_operation(PADDLEX_PREFIX + "index-add", "addImagesToIndex")
async def add_images(request: Request, body: AddImagesToIndexRequest) -> ResultResponse[AddImagesToIndexResult]:
    images, labels = _pairs(body.imageLabelPairs)
    snap, _ = await _service(request).add(body.indexKey, images, labels)
    return ResultResponse[AddImagesToIndexResult](logId=_log_id(), result=AddImagesToIndexResult(
        imageCount=backend.index_count(snap.index)))


@_operation(PADDLEX_PREFIX + "index-remove", "removeImagesFromIndex")
async def remove_images(request: Request,
                        body: RemoveImagesFromIndexRequest) -> ResultResponse[RemoveImagesFromIndexResult]:
    svc = _service(request)
    known = backend.index_labels(svc.registry.get(body.indexKey).snapshot.index)
    ids = [i for i in body.ids if i in known]
    snap = svc.registry.get(body.indexKey).snapshot
    if ids:
        snap, _ = await svc.remove(body.indexKey, ids)
    return ResultResponse[RemoveImagesFromIndexResult](logId=_log_id(), result=RemoveImagesFromIndexResult(
        imageCount=backend.index_count(snap.index)))


def _visualize(rgb: np.ndarray, objects: List[DetectedObject]) -> str:
    """The image with each object's box and best label drawn, as base64 JPEG (PaddleX's image)."""
    img = np.ascontiguousarray(rgb)
    thick = max(2, round(max(img.shape[:2]) / 300))
    for obj in objects:
        x0, y0, x1, y1 = (int(v) for v in obj.bbox)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 200, 0), thick)
        if obj.recResults:
            text = f"{obj.recResults[0].label} {obj.recResults[0].score:.2f}"
            cv2.putText(img, text, (x0 + thick * 2, y0 + 12 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick,
                        (0, 200, 0), max(1, thick // 2), cv2.LINE_AA)
    return base64.b64encode(encode_jpeg(img)).decode("ascii")


@_operation(PADDLEX_PREFIX + "infer", "infer")
async def infer(request: Request, body: InferRequest) -> ResultResponse[InferResult]:
    svc = _service(request)
    name = body.indexKey or next(iter(svc.registry.named), None)
    if name is None:
        raise BadRequest("no indexKey given, and the server has no --index to use instead",
                         hint="pass the indexKey of /shitu-index-build, or start the server with --index DIR")
    k = body.topk or svc.settings.top_k
    threshold = svc.settings.threshold if body.recThreshold is None else body.recThreshold
    visualize = svc.settings.visualize if body.visualize is None else body.visualize
    _, results, emb = await svc.search(name, [body.image], k, threshold, keep_pixels=visualize)
    (w, h), res = emb.sizes[0], results[0]
    obj = DetectedObject(bbox=(0.0, 0.0, float(w), float(h)), score=0.0,
                         recResults=[RecResult(label=lab, score=sc) for lab, sc in zip(res["labels"], res["scores"])])
    image = _visualize(emb.pixels[0], [obj]) if visualize else None
    return ResultResponse[InferResult](logId=_log_id(), result=InferResult(detectedObjects=[obj], image=image))
