"""The FastAPI application: routes, error replies, the guard, CORS, the index poller, shutdown.

:func:`create_app` takes the settings and a loaded model (the starting process loads it, so a
broken model is a one-line error before anything listens; each extra worker loads its own).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.common.version import __version__
from imgfeat_cli.serve import api, pages, paddlex
from imgfeat_cli.serve.errors import NotFound, body, describe, validation_message
from imgfeat_cli.serve.http import Guard
from imgfeat_cli.serve.indexes import POLL_S
from imgfeat_cli.serve.service import Service
from imgfeat_cli.serve.settings import Settings

log = logging.getLogger("imgfeat.serve")

DESCRIPTION = """Image embedding and retrieval with imgfeat.

* `/v1/...`: imgfeat's own API (embed, search, index add / remove / info).
* `/shitu-index-build`, `/shitu-index-add`, `/shitu-index-remove`, `/shitu-infer`: PaddleX's
  PP-ShiTuV2 serving API (same requests and replies; the whole image is the one detected object).
* `/`: a search page. `/healthz`, `/readyz`, `/metrics` for operations.

With a token (`--token-file`) every route but the page, the docs and the probes needs
`Authorization: Bearer TOKEN`."""


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        paddlex_msg, line = validation_message(exc.errors())
        path = request.url.path
        doc = body(path, 422, {"code": "invalid_request", "message": line, "hint": "see /docs for the request schema",
                               "exit_code": 2})
        if "errorMsg" in doc:
            doc["errorMsg"] = paddlex_msg  # PaddleX puts the JSON list of errors here
        return JSONResponse(doc, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        if exc.status_code == 404:
            status, error, _ = describe(NotFound(f"no route {path}", hint="see /docs"), path)
        else:
            status, error = exc.status_code, {"code": "http_error", "message": str(exc.detail), "hint": None,
                                              "exit_code": 2}
        return JSONResponse(body(path, status, error), status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(ImgfeatError)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        path = request.url.path
        status, error, retry = describe(exc, path)
        return JSONResponse(body(path, status, error), status_code=status,
                            headers={"Retry-After": str(retry)} if retry else None)


async def _poll(service: Service) -> None:
    """Pick up index changes made by other workers (or the CLI) every POLL_S."""
    while True:
        await asyncio.sleep(POLL_S)
        await asyncio.get_running_loop().run_in_executor(service.pool, service.registry.poll)
        for name in service.registry.names():
            service.observe_index(name, service.registry.get(name).snapshot)


def create_app(settings: Settings, model: Any, warn: Callable[[str], None] = log.warning) -> Any:
    """The ASGI application of one server process."""
    service = Service(settings, model, warn)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(_poll(service))
        try:
            yield
        finally:
            poller.cancel()
            service.close()

    app = FastAPI(title="imgfeat serve", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  redoc_url=None)
    app.state.service = service
    _error_handlers(app)
    app.include_router(api.router)
    app.include_router(paddlex.router)
    app.include_router(pages.router)
    pages.mount_static(app)
    guarded: Any = Guard(app, settings.token, settings.max_body_bytes, settings.request_timeout_s,
                         service.metrics.observe)
    if settings.cors:
        from starlette.middleware.cors import CORSMiddleware

        guarded = CORSMiddleware(guarded, allow_origins=list(settings.cors), allow_methods=["GET", "POST"],
                                 allow_headers=["authorization", "content-type"])
    guarded.service = service  # type: ignore[attr-defined]  (tests and the runner reach it here)
    return guarded
