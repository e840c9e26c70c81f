"""Starting and stopping the server: check, load, bind, serve, drain.

:func:`run` does everything that can fail before anything listens: the settings, every index,
the model (loaded once here, so a broken one is a one-line error). Then it binds the socket
itself (the port is known and printed, clients connecting early wait in the backlog) and runs
uvicorn on it: in this process, or with ``workers > 1`` under uvicorn's supervisor, each worker
loading its own model (:class:`WorkerConfig`). SIGTERM drains: no new connections, requests in
flight finish (up to ``drain_timeout_s``), then exit 0.
"""
from __future__ import annotations

import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any, Callable, Dict, Optional, Set

import uvicorn

from imgfeat_cli.common.errors import ImgfeatError, UsageError
from imgfeat_cli.serve import backend
from imgfeat_cli.serve.metrics import MULTIPROC_ENV
from imgfeat_cli.serve.protocol import GuardedH11Protocol
from imgfeat_cli.serve.settings import Settings, describe, from_config

log = logging.getLogger("imgfeat.serve")


def log_config(level: str) -> Dict[str, Any]:
    """uvicorn's and imgfeat's log lines on stderr (uvicorn's default puts access lines on stdout,
    which carries results)."""
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(message)s", "datefmt": "%H:%M:%S"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                    "stream": "ext://sys.stderr"}},
            "loggers": {name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "imgfeat.serve")}}


class WorkerConfig(uvicorn.Config):
    """A uvicorn config that builds the application from :class:`Settings` in the process that
    serves it (pickled to each worker; the model is loaded there)."""

    def __init__(self, settings: Settings, app: Any = None, **kwargs: Any) -> None:
        super().__init__(app if app is not None else "imgfeat_cli.serve.app:create_app", **kwargs)
        self.settings = settings
        self.head_timeout_s = settings.request_timeout_s  # read by GuardedH11Protocol

    def load(self) -> None:
        if isinstance(self.app, str):
            from imgfeat_cli.serve.app import create_app

            try:
                model = backend.load_model(self.settings.model, self.settings.max_batch, log.info)
                self.app = create_app(self.settings, model)
            except ImgfeatError as exc:
                log.error("worker %d cannot start: %s", os.getpid(), exc.message)
                sys.exit(1)
        super().load()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (IPv4 or IPv6), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listener says TCP; with proto 0 Nagle's algorithm held each reply's body until the client's
    # delayed ACK (+40 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = (getattr(exc, "strerror", None) or str(exc)).lower()
        raise UsageError(f"cannot listen on {host}:{port}: {reason}",
                         hint="choose another --port (0 picks a free one) or --host") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host.strip('[]')}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(settings: Settings, app: Any, level: str) -> WorkerConfig:
    return WorkerConfig(settings, app, http=GuardedH11Protocol, workers=settings.workers,
                        timeout_keep_alive=max(1, round(settings.idle_timeout_s)),
                        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
                        timeout_worker_healthcheck=60, log_config=log_config(level), access_log=level == "info",
                        server_header=False, limit_concurrency=max(1024, 4 * settings.queue_size),
                        lifespan="on")


def _serve(settings: Settings, sock: socket.socket, app: Any, level: str) -> None:
    config = _config(settings, app, level)
    if settings.workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
        return
    import inspect

    from uvicorn.supervisors import Multiprocess

    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.40 takes the worker's target
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
    else:
        Multiprocess(config, sockets=[sock]).run()


def run(cfg: Dict[str, Any], indexes: Any, log_line: Callable[[str], None], warn: Callable[[str], None],
        ready: Callable[[Dict[str, Any]], None], quiet: bool = False, explicit: Optional[Set[str]] = None) -> None:
    """Check everything, load the model, listen, serve until SIGTERM or Ctrl-C (see module doc)."""
    settings = from_config(cfg, list(indexes), warn, explicit, log_line)
    log_line(f"loading {settings.model.label} ...")
    model = backend.load_model(settings.model, settings.max_batch, log_line)
    log_line(f"model {backend.describe_model(model)}")
    from imgfeat_cli.serve.app import create_app

    app = create_app(settings, model, warn)  # opens (and checks) every index
    if settings.workers > 1:
        app.service.close()  # each worker loads and opens its own
        app = model = None
    for line in describe(settings):
        log_line(line)
    logging.config.dictConfig(log_config("warning" if quiet else "info"))
    sock = bind(settings.host, settings.port)
    metrics_dir = tempfile.mkdtemp(prefix="imgfeat-metrics-") if settings.workers > 1 else None
    if metrics_dir:
        os.environ.update({MULTIPROC_ENV: metrics_dir})  # prometheus_client's switch, for the workers
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    try:
        ready({"url": url_of(sock, settings.host), "pid": os.getpid(), "workers": settings.workers,
               "indexes": [n for n, _ in settings.indexes]})
        _serve(settings, sock, app, "warning" if quiet else "info")
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log_line("stopped" + (" (SIGTERM: requests in flight were answered)" if terminated else ""))

