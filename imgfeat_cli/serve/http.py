"""What every request passes before a route sees it: the token, the body limit, the deadline.

:class:`Guard` is plain ASGI middleware around the application:

* a bearer token (when the server has one) on everything but the public paths (the page and its
  files, ``/docs``, ``/healthz``, ``/readyz``), compared in constant time;
* the body is read here in full, refused with 413 as soon as it passes ``max_body_bytes`` (at once
  when ``Content-Length`` says so, before a byte is read) and with 408 when it has not arrived
  within ``request_timeout_s`` of the request's start: a slow sender holds a coroutine for a bounded
  time and never a thread. Routes get the complete body;
* the request count and latency per route for ``/metrics``.

The request line and headers have their own deadline in :mod:`imgfeat_cli.serve.protocol`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from imgfeat_cli.serve.errors import PayloadTooLarge, RequestTimeout, Unauthorized, body, describe

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

#: Paths anyone may fetch: no data behind them (the page asks for the token itself).
PUBLIC = ("/", "/healthz", "/readyz", "/docs", "/openapi.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/", "/docs/")


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def bearer(scope: Scope) -> Optional[bytes]:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


def header(scope: Scope, wanted: bytes) -> Optional[bytes]:
    return next((v for n, v in scope.get("headers", ()) if n == wanted), None)


async def send_json(send: Send, status: int, doc: Any, headers: Optional[List[tuple]] = None) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Send, path: str, exc: BaseException, close: bool = False) -> int:
    """Reply with the JSON error for ``exc`` (shape by ``path``); return the status."""
    status, error, retry = describe(exc, path)
    headers = [(b"retry-after", str(retry).encode())] if retry else []
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="imgfeat"'))
    if close:
        headers.append((b"connection", b"close"))
    await send_json(send, status, body(path, status, error), headers)
    return status


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: Any, token: Optional[str], max_body: int, timeout_s: float,
                 observe: Callable[[str, int, float], None]) -> None:
        self.app, self.max_body, self.timeout_s, self.observe = app, max_body, timeout_s, observe
        self.token = token.encode("utf-8") if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        path = scope.get("path", "")
        state = {"status": 500, "started": False}

        async def tracked(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if self.token is not None and not is_public(path):
                given = bearer(scope)
                if given is None or not hmac.compare_digest(given, self.token):
                    raise Unauthorized("a valid bearer token is required",
                                       hint="send 'Authorization: Bearer TOKEN' (the server's --token-file)")
            data = await self._read_body(scope, receive, start)
            if data is None:  # the client went away
                state["status"] = 499
                return
            await self.app(scope, _replay(data, receive), tracked)
        except Exception as exc:  # noqa: BLE001 - the boundary: a JSON reply, one log line, no traceback
            if not state["started"]:
                state["status"] = await send_error(tracked, path, exc, close=isinstance(exc, (RequestTimeout,
                                                                                             PayloadTooLarge)))
        finally:
            route = scope.get("route")
            self.observe(getattr(route, "path", None) or ("other" if state["status"] == 404 else path),
                         state["status"], time.monotonic() - start)

    async def _read_body(self, scope: Scope, receive: Receive, start: float) -> Optional[bytes]:
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(f"the request body of {int(declared)} bytes is over the {self.max_body} byte limit",
                                  hint="send fewer or smaller images per request (Serve.max_body_mb)")
        chunks, size = [], 0
        while True:
            remaining = start + self.timeout_s - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise RequestTimeout(f"the request body did not arrive within {self.timeout_s:g} s",
                                     hint="send the whole request at once (Serve.request_timeout_s)") from None
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_body:
                raise PayloadTooLarge(f"the request body is over the {self.max_body} byte limit",
                                      hint="send fewer or smaller images per request (Serve.max_body_mb)")
            chunks.append(part)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(data: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then waits for the client to go away."""
    sent = False

    async def replay() -> Dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        return await receive()

    return replay
