"""The search page, its static files, and the operations routes (/healthz, /readyz, /metrics).

The page is plain HTML + a little JavaScript shipped in ``serve/static`` (no build step, no CDN):
pick or drop a photo, see the best matches of an index as thumbnails with label and score. It is
served with a Content-Security-Policy that allows only this server.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

router = APIRouter(tags=["operations"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP,
                                                        "X-Content-Type-Options": "nosniff",
                                                        "Cache-Control": "no-cache"})


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and every index is open")
async def readyz(request: Request) -> JSONResponse:
    svc = request.app.state.service
    problems = dict(svc.registry.problems)
    doc: Dict[str, Any] = {"status": "ready" if not problems else "degraded", "model": svc.identity.get("name"),
                           "indexes": svc.registry.names(), "queue": svc.batcher.depth, "worker": os.getpid()}
    if problems:
        doc["problems"] = problems
    return JSONResponse(doc, status_code=200 if not problems else 503)


@router.get("/metrics", summary="Prometheus metrics (text exposition)")
async def metrics(request: Request) -> Response:
    data, content_type = request.app.state.service.metrics.render()
    return Response(data, media_type=content_type)


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
