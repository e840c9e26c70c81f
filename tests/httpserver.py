"""A local HTTP server for download tests (127.0.0.1 only, stops with the test).

Routes are registered per test: ``server.add(path, data, mode=...)`` where mode is ``ok`` (honours
Range), ``norange`` (ignores Range), ``drop`` (first response sends half the bytes then closes),
``flaky`` (first ``fails`` responses are 500), ``slow`` (paced chunks), ``status`` (answers
``status``) or ``redirect`` (302 to itself). Every request is logged as (path, Range header,
bytes the response carries), before the response is sent: a client that has its answer must
find its request in the log already.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


class Route:
    def __init__(self, data: bytes, mode: str = "ok", fails: int = 0, status: int = 200) -> None:
        self.data, self.mode, self.fails, self.status, self.hits = data, mode, fails, status, 0


class Server:
    def __init__(self) -> None:
        self.routes: Dict[str, Route] = {}
        self.log: List[Tuple[str, Optional[str], int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                route = server.routes.get(self.path)
                rng = self.headers.get("Range")
                if route is None:
                    server.log.append((self.path, rng, 0))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route.hits += 1
                if route.mode == "redirect":  # to itself, for ever
                    server.log.append((self.path, rng, 0))
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.mode == "status" or (route.mode == "flaky" and route.hits <= route.fails):
                    server.log.append((self.path, rng, 0))
                    self.send_response(route.status if route.mode == "status" else 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and route.mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                body = route.data[start:]
                dropping = route.mode == "drop" and route.hits == 1
                server.log.append((self.path, rng, len(body) // 2 if dropping else len(body)))
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.data) - 1}/{len(route.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if dropping:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if route.mode == "slow":
                    for i in range(0, len(body), 4096):
                        self.wfile.write(body[i:i + 4096])
                        time.sleep(0.002)
                else:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes, **kw) -> str:
        self.routes[path] = Route(data, **kw)
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
