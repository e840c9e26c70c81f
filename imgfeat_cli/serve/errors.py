"""Errors as HTTP replies: one JSON document, never a traceback.

Native routes answer ``{"error": {"code", "message", "hint", "exit_code"}}``: ``code`` a stable
word to branch on, ``exit_code`` what the CLI exits with for the same error (2: the request is
wrong, 1: the server could not do it). PaddleX routes (``/shitu-*``) answer PaddleX's
``{"logId", "errorCode", "errorMsg"}`` with ``errorCode`` equal to the HTTP status, as PaddleX's
serving does. The HTTP status tells retryable conditions apart: 503 (overloaded, loading) and
409 (index busy) come with ``Retry-After``.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Dict, Optional, Tuple

from imgfeat_cli.common.errors import (EXIT_ERROR, EXIT_USAGE, ImageDecodeError, ImgfeatError, IndexFormatError,
                                       ModelError, UsageError, as_imgfeat_error, clip)

log = logging.getLogger("imgfeat.serve")

#: Routes that speak PaddleX's reply shape.
PADDLEX_PREFIX = "/shitu-"


class HTTPError(ImgfeatError):
    """An error with its HTTP status and code word (subclasses set both)."""

    status = 500
    code = "error"
    retry_after: Optional[int] = None


class BadRequest(HTTPError, UsageError):
    status, code = 400, "bad_request"


class Unauthorized(HTTPError, UsageError):
    status, code = 401, "unauthorized"


class NotFound(HTTPError, UsageError):
    status, code = 404, "not_found"


class RequestTimeout(HTTPError, UsageError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(HTTPError, UsageError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(HTTPError, UsageError):
    status, code = 415, "unsupported_media_type"


class InputRefused(HTTPError, UsageError):
    """The request names something the server does not fetch (a URL outside ``--allow-url``)."""

    status, code = 403, "url_refused"


class Overloaded(HTTPError):
    status, code, retry_after = 503, "overloaded", 1


class NotReady(HTTPError):
    status, code, retry_after = 503, "not_ready", 2


def classify(exc: BaseException) -> Tuple[int, str, Optional[int]]:
    """(HTTP status, code word, Retry-After seconds or None) of an error."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.code, exc.retry_after
    if isinstance(exc, ImageDecodeError):
        return 400, "bad_image", None
    if isinstance(exc, UsageError):
        return 400, "bad_request", None
    if isinstance(exc, IndexFormatError):
        return 500, "index_format", None
    if isinstance(exc, ModelError):
        return 500, "model", None
    return 500, "error", None


def _debug() -> bool:
    return os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0", "false", "no")


def describe(exc: BaseException, where: str) -> Tuple[int, Dict[str, Any], Optional[int]]:
    """(status, native error document, Retry-After) of any exception; unexpected ones are logged
    in one line (with the traceback when IMGFEAT_DEBUG=1) and answered without details."""
    known = as_imgfeat_error(exc)
    if known is None:
        log.error("unexpected %s in %s: %s", exc.__class__.__name__, where, clip(exc, 300), exc_info=_debug())
        return 500, {"code": "internal", "message": "internal error (logged on the server)",
                     "hint": "report it if it repeats", "exit_code": EXIT_ERROR}, None
    status, code, retry = classify(known)
    exit_code = EXIT_USAGE if status < 500 and isinstance(known, UsageError) else known.exit_code
    return status, {"code": code, "message": known.message, "hint": known.hint, "exit_code": exit_code}, retry


def body(path: str, status: int, error: Dict[str, Any], log_id: Optional[str] = None) -> Dict[str, Any]:
    """The reply document for ``path``: PaddleX's shape on its routes, imgfeat's elsewhere."""
    if path.startswith(PADDLEX_PREFIX):
        message = error["message"] + (f" ({error['hint']})" if error.get("hint") else "")
        return {"logId": log_id or str(uuid.uuid4()), "errorCode": status, "errorMsg": message}
    return {"error": error}


def validation_message(errors: Any) -> Tuple[str, str]:
    """(PaddleX's errorMsg: the JSON list of {type, loc, msg}, a one-line message) of a request
    that did not match the schema."""
    items = [{"type": e.get("type"), "loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg")}
             for e in errors]
    first = items[0] if items else {"loc": "body", "msg": "invalid"}
    return json.dumps(items), f"invalid request: {first['loc']}: {first['msg']}"
