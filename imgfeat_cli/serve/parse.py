"""Request bodies of the native routes (multipart uploads or JSON) and feature encodings.

A native route takes images either as ``multipart/form-data`` (``image`` file parts, other fields
as text) or as ``application/json`` (base64 strings or allowed URLs, see
:mod:`imgfeat_cli.serve.inputs`). Anything else is a 415, a body that does not parse a 400, and a
JSON body that does not match the route's model a 422 naming the field.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.serve.errors import BadRequest, HTTPError, UnsupportedMedia, validation_message

M = TypeVar("M", bound=BaseModel)
ENCODINGS = ("json", "float16_base64")


class Invalid(HTTPError, UsageError):
    status, code = 422, "invalid_request"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_body(request: Request, model: Type[M]) -> M:
    """The JSON body validated against ``model``."""
    if media_type(request) != "application/json":
        raise UnsupportedMedia(f"expected application/json, got {media_type(request) or 'no content type'}")
    raw = await request.body()
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadRequest(f"the body is not valid JSON{where}") from None
    return validate(model, doc)


def validate(model: Type[M], doc: Any) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise Invalid(validation_message(exc.errors())[1], hint="see /docs for the request schema") from None


async def images_and_fields(request: Request, max_images: int, model: Type[M]) -> Tuple[List[Any], M]:
    """``(images, fields)`` of a multipart or JSON body: images as bytes (uploads) or strings
    (JSON), the other fields validated against ``model`` (its ``image``/``images`` included)."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images, max_fields=64)
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors, whatever their class
            raise BadRequest(f"the multipart body cannot be read ({str(exc) or exc.__class__.__name__})") from None
        files, fields = [], {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
            elif key == "image":
                files.append(await value.read())
            else:
                raise BadRequest(f"unexpected file field {key!r}", hint="upload images as 'image' parts")
        doc: Dict[str, Any] = {k: (v if k in _LIST_FIELDS else v[-1]) for k, v in fields.items()}
        return files, validate(model, _typed(doc))
    if kind == "application/json":
        parsed = await json_body(request, model)
        return list(getattr(parsed, "images", None) or []) + ([parsed.image] if getattr(parsed, "image", None)
                                                              else []), parsed
    raise UnsupportedMedia(f"expected multipart/form-data or application/json, got {kind or 'no content type'}",
                           hint="upload files as multipart 'image' parts, or send JSON with base64 images")


#: Multipart text fields that may repeat (one per image).
_LIST_FIELDS = ("label",)


def _typed(doc: Dict[str, Any]) -> Dict[str, Any]:
    """Multipart text as JSON values: ``threshold=none`` is null, numbers stay text for pydantic."""
    if str(doc.get("threshold", "")).lower() in ("none", "null"):
        doc["threshold"] = None
    return doc


def encode(feats: np.ndarray, encoding: str) -> List[Any]:
    """Features as JSON lists (each float32 in its shortest exact form) or float16 base64."""
    if encoding == "float16_base64":
        return [base64.b64encode(row.astype("<f2").tobytes()).decode("ascii") for row in feats]
    return [[float(v) for v in map(str, row)] for row in feats.astype(np.float32)]


def threshold_of(fields: BaseModel, default: Optional[float]) -> Optional[float]:
    """A request's threshold: absent: the server's default; null: none."""
    return fields.threshold if "threshold" in fields.model_fields_set else default
