"""``imgfeat serve``: an online embedding and retrieval service (the ``imgfeat[serve]`` extra).

The floor above retrieval: FastAPI routes (imgfeat's ``/v1`` API and PaddleX's PP-ShiTuV2 serving
API), micro-batching, live index updates, the search page. :func:`run` is the one entry point the
CLI calls; :func:`imgfeat_cli.serve.app.create_app` builds the ASGI application for tests and
embedding in other servers. Models and indexes are reached only through :mod:`.backend`.
"""
from __future__ import annotations

from typing import Any

from imgfeat_cli.common.errors import ImgfeatError


def run(*args: Any, **kwargs: Any) -> None:
    """Check, load, listen and serve (see :func:`imgfeat_cli.serve.server.run`)."""
    from importlib.util import find_spec

    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"),
                            ("multipart", "python-multipart")):
        if find_spec(module) is None:
            raise ImgfeatError(f"imgfeat serve needs {package}, which is not installed",
                               hint='pip install fastapi uvicorn python-multipart prometheus-client (the serve extra: pip install -e ".[serve]" in a clone)')
    from imgfeat_cli.serve.server import run as run_server

    run_server(*args, **kwargs)


__all__ = ["run"]
