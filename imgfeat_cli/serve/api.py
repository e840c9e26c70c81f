"""imgfeat's own HTTP API, version 1: embed, search, index info / add / remove, thumbnails.

Images come as multipart ``image`` parts or JSON (base64 or allowed URLs); see
:mod:`imgfeat_cli.serve.parse`. Every reply that reads an index names the snapshot it used
(``generation``, ``count``), so a client can tell which state answered.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Literal, Optional

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from imgfeat_cli.common.version import __version__
from imgfeat_cli.serve import backend
from imgfeat_cli.serve.errors import BadRequest
from imgfeat_cli.serve.indexes import Snapshot
from imgfeat_cli.serve.inputs import label_of
from imgfeat_cli.serve.parse import encode, images_and_fields, threshold_of
from imgfeat_cli.serve.service import Service

router = APIRouter(prefix="/v1", tags=["imgfeat"])
IndexName = Path(..., description="index name (an --index folder's name, or a key from /shitu-index-build)")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedRequest(Strict):
    image: Optional[str] = Field(None, description="one image: base64 data or an allowed http(s) URL")
    images: Optional[List[str]] = Field(None, description="several images, same forms")
    encoding: Literal["json", "float16_base64"] = Field("json", description="features as JSON numbers or as "
                                                        "base64 of little-endian float16")


class SearchRequest(Strict):
    image: Optional[str] = Field(None, description="one image: base64 data or an allowed http(s) URL")
    images: Optional[List[str]] = None
    top_k: Optional[int] = Field(None, ge=1, le=10000, description="matches per image (default: Search.top_k)")
    threshold: Optional[float] = Field(None, description="no match when the best score is worse; null: keep "
                                       "every top k; absent: Search.threshold")


class AddRequest(Strict):
    image: Optional[str] = None
    images: Optional[List[str]] = None
    label: Optional[List[str]] = Field(None, description="one label per image (a single one applies to all)")


class RemoveRequest(Strict):
    ids: List[int] = Field(default_factory=list)
    label: Optional[str] = Field(None, description="remove every item with this label")


def service_of(request: Request) -> Service:
    return request.app.state.service


def snapshot_doc(name: str, snap: Snapshot) -> Dict[str, Any]:
    return {"index": name, "generation": snap.generation, "count": backend.index_count(snap.index)}


def body_doc(model: type) -> Dict[str, Any]:
    """OpenAPI request bodies of a route that reads the body itself (JSON or multipart)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            **{k: v for k, v in schema.get("properties", {}).items() if k not in ("image", "images")}}}}}}}


@router.get("/server", summary="What this server runs")
async def server(request: Request) -> Dict[str, Any]:
    svc = service_of(request)
    s = svc.settings
    return {"version": __version__, "model": svc.identity, "indexes": svc.registry.names(), "top_k": s.top_k,
            "threshold": s.threshold, "max_images": s.max_images, "max_body_bytes": s.max_body_bytes,
            "auth": s.token is not None}


@router.post("/embed", summary="Features of one or more images", openapi_extra=body_doc(EmbedRequest))
async def embed(request: Request) -> Dict[str, Any]:
    svc = service_of(request)
    images, fields = await images_and_fields(request, svc.settings.max_images, EmbedRequest)
    emb = await svc.embed(images)
    return {"model": svc.identity, "dim": int(emb.feats.shape[1]), "encoding": fields.encoding,
            "results": [{"feature": f, "width": w, "height": h}
                        for f, (w, h) in zip(encode(emb.feats, fields.encoding), emb.sizes)]}


@router.post("/indexes/{name}/search", summary="Nearest gallery items of one or more images",
             openapi_extra=body_doc(SearchRequest))
async def search(request: Request, name: str = IndexName) -> Dict[str, Any]:
    svc = service_of(request)
    images, fields = await images_and_fields(request, svc.settings.max_images, SearchRequest)
    k = fields.top_k or svc.settings.top_k
    threshold = threshold_of(fields, svc.settings.threshold)
    snap, results, _ = await svc.search(name, images, k, threshold)
    return {**snapshot_doc(name, snap), "metric_type": snap.index.metric_type, "top_k": k, "threshold": threshold,
            "results": results}


@router.get("/indexes", summary="The indexes this server serves")
async def indexes(request: Request) -> Dict[str, Any]:
    reg = service_of(request).registry
    return {"indexes": [snapshot_doc(n, reg.get(n).snapshot) for n in reg.names()]}


@router.get("/indexes/{name}", summary="Type, metric, size, labels and model of an index")
async def info(request: Request, name: str = IndexName) -> Dict[str, Any]:
    snap = service_of(request).registry.get(name).snapshot
    return {**snapshot_doc(name, snap), **backend.index_info(snap.index), "worker": os.getpid()}


@router.post("/indexes/{name}/add", summary="Embed images and add them with their labels",
             openapi_extra=body_doc(AddRequest))
async def add(request: Request, name: str = IndexName) -> Dict[str, Any]:
    svc = service_of(request)
    images, fields = await images_and_fields(request, svc.settings.max_images, AddRequest)
    labels = [label_of(v, f"label {i}") for i, v in enumerate(fields.label or [])]
    if len(labels) == 1 and len(images) > 1:
        labels = labels * len(images)
    if len(labels) != len(images):
        raise BadRequest(f"{len(images)} images but {len(labels)} labels", hint="give one label per image")
    snap, ids = await svc.add(name, images, labels)
    return {**snapshot_doc(name, snap), "added": len(ids), "ids": ids}


@router.post("/indexes/{name}/remove", summary="Remove items by id or label")
async def remove(request: Request, fields: RemoveRequest, name: str = IndexName) -> Dict[str, Any]:
    snap, removed = await service_of(request).remove(name, fields.ids, fields.label)
    return {**snapshot_doc(name, snap), "removed": removed}


@router.get("/indexes/{name}/items/{item_id}/thumbnail", summary="A gallery image, small (JPEG)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def thumbnail(request: Request, item_id: int, name: str = IndexName) -> Response:
    data = await service_of(request).thumbnail(name, item_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

