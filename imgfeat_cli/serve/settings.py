"""What one ``imgfeat serve`` runs with, decided once in the starting process and checked there.

:class:`Settings` is plain data (it is pickled to each worker process), built from the resolved
configuration (``Serve``, ``Predict``, ``Global``, ``Search`` sections; defaults in
``schemas/sections.schema.json``) and the index folders named on the command line. Everything a
user can get wrong is refused here, before anything listens: a non-loopback host without a token
(PaddleX serves 0.0.0.0 without one), an unreadable or empty token file, index names that clash,
an ``--allow-url`` that is not a plain ``http(s)://host/path`` prefix.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from imgfeat_cli.common.errors import UsageError, clip
from imgfeat_cli.imaging.decode import Limits

#: Index names (PaddleX's ``indexKey``) map to folders: letters, digits, ``._-``, a letter or digit
#: first (no hidden or temp folders, no separators, so a name can never name another path).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Shortest token accepted from --token-file: a guessable token is no protection.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Settings:
    """Everything a server process needs (see :func:`from_config`)."""

    model: Any  # a ModelSource: the flags', or (none given) the first index's own model
    indexes: Tuple[Tuple[str, str], ...]  # (name, absolute folder) from --index
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    token: Optional[str] = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    queue_size: int = 256
    decode_threads: int = 2
    max_body_bytes: int = 32 << 20
    max_images: int = 64
    limits: Limits = field(default_factory=Limits)
    request_timeout_s: float = 30.0
    idle_timeout_s: float = 5.0
    drain_timeout_s: float = 30.0
    allow_url: Tuple[str, ...] = ()
    url_timeout_s: float = 10.0
    cors: Tuple[str, ...] = ()
    thumb_size: int = 160
    visualize: bool = True
    allow_other_model: bool = False
    top_k: int = 5
    threshold: Optional[float] = 0.5


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def read_token(path: str, warn: Callable[[str], None]) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise UsageError(f"--token-file {clip(path)}: {(exc.strerror or str(exc)).lower()}",
                         hint="write a long random token into a file, e.g. "
                              "python -c 'import secrets; print(secrets.token_urlsafe(32))' > token") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"--token-file {clip(path)} is not a regular file")
    if st.st_size > 4096:
        raise UsageError(f"--token-file {clip(path)} is {st.st_size} bytes: not a token file")
    token = p.read_bytes().decode("utf-8", errors="replace").strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UsageError(f"--token-file {clip(path)} must hold one token of at least {MIN_TOKEN_CHARS} characters "
                         "without spaces", hint="python -c 'import secrets; print(secrets.token_urlsafe(32))' > token")
    if st.st_mode & 0o077:
        warn(f"--token-file {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    return token


def check_url_prefix(prefix: str) -> str:
    """An ``--allow-url`` value: ``http(s)://host[:port]/path...`` without credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise UsageError(f"--allow-url {clip(prefix)!r} is not an http(s)://host/path prefix",
                         hint="e.g. --allow-url https://images.example.com/products/")
    return prefix


def name_of(folder: str) -> str:
    """The name an ``--index`` folder is served under: its folder name."""
    name = Path(os.path.abspath(folder)).name
    if not NAME_PATTERN.fullmatch(name) or name.endswith(".bak"):
        raise UsageError(f"--index {clip(folder)}: the folder name {name!r} cannot be an index name",
                         hint="index names are letters, digits and ._- (a letter or digit first, not *.bak); "
                              "rename the folder or link it under such a name")
    return name


def index_folders(folders: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    seen: Dict[str, str] = {}
    for folder in folders:
        name = name_of(folder)
        if name in seen:
            raise UsageError(f"two --index folders are both named {name!r} ({seen[name]}, {folder})",
                             hint="an index is served under its folder name: rename or link one of them")
        seen[name] = os.path.abspath(folder)
    return tuple(seen.items())


def check_exposure(host: str, token: Optional[str], no_auth: bool, warn: Callable[[str], None]) -> None:
    if is_loopback(host) or token:
        return
    if not no_auth:
        raise UsageError(f"--host {clip(host)} accepts connections from other machines, and no --token-file was given",
                         hint="give --token-file FILE (clients send 'Authorization: Bearer TOKEN'), or --no-auth "
                              "to serve without authentication on purpose")
    warn(f"serving on {host} WITHOUT authentication (--no-auth): anyone who can reach this port can "
         "change the indexes")


def from_config(cfg: Mapping[str, Any], indexes: Sequence[str], warn: Callable[[str], None],
                explicit: Optional[Set[str]] = None, log: Callable[[str], None] = lambda m: None) -> Settings:
    """The settings of a resolved ``serve`` configuration, checked (see the module docstring).
    ``explicit``: the config keys the user set; a model named by none of them is the first
    index's own (as ``imgfeat search`` does)."""
    from imgfeat_cli.common.system import cpu_count

    srv, pred, search = cfg["Serve"], cfg["Predict"], cfg["Search"]
    token = read_token(srv["token_file"], warn) if srv["token_file"] else None
    check_exposure(srv["host"], token, srv["no_auth"], warn)
    workers = int(srv["workers"])
    folders = index_folders(indexes)
    model = _model_source(cfg, explicit, folders, log)
    if workers > 1 and not model.threads:
        model = model.replace(threads=max(1, cpu_count() // workers))  # the cores split between workers
    max_batch = srv["max_batch"] or model.batch
    if os.path.exists(srv["data_dir"]) and not os.path.isdir(srv["data_dir"]):
        raise UsageError(f"--data-dir {clip(srv['data_dir'])} is a file, not a folder",
                         hint="indexes built over HTTP live in a folder there; choose another --data-dir")
    return Settings(
        model=model, indexes=folders, data_dir=os.path.abspath(srv["data_dir"]),
        host=srv["host"], port=int(srv["port"]), workers=workers, token=token,
        max_batch=int(max_batch), max_wait_ms=float(srv["max_wait_ms"]), queue_size=int(srv["queue_size"]),
        decode_threads=int(srv["decode_threads"] or cpu_count()),
        max_body_bytes=int(float(srv["max_body_mb"]) * (1 << 20)), max_images=int(srv["max_images"]),
        limits=Limits(max_pixels=int(pred["max_image_pixels"]),
                      max_bytes=min(int(pred["max_file_mb"]) << 20, int(float(srv["max_body_mb"]) * (1 << 20)))),
        request_timeout_s=float(srv["request_timeout_s"]), idle_timeout_s=float(srv["idle_timeout_s"]),
        drain_timeout_s=float(srv["drain_timeout_s"]),
        allow_url=tuple(check_url_prefix(p) for p in srv["allow_url"]), url_timeout_s=float(srv["url_timeout_s"]),
        cors=tuple(srv["cors"]), thumb_size=int(srv["thumb_size"]), visualize=bool(srv["visualize"]),
        allow_other_model=bool(srv["allow_other_model"]), top_k=int(search["top_k"]),
        threshold=None if search["threshold"] is None else float(search["threshold"]))


def _model_source(cfg: Mapping[str, Any], explicit: Optional[Set[str]], folders: Sequence[Tuple[str, str]],
                  log: Callable[[str], None]) -> Any:
    """The model the flags name, or the first ``--index``'s own (its record), or the default."""
    from imgfeat_cli.models.source import ModelSource
    from imgfeat_cli.retrieval import layout, modelrecord

    given = ModelSource.from_config(cfg)
    if explicit is not None and "Global.model" not in explicit and given.kind == "official":
        given = given.replace(name=None)
    if given.given:
        return given
    record = layout.read_model_record(Path(folders[0][1])) if folders else None
    return modelrecord.source_for(record, given, log, default=cfg["Global"]["model"])


def describe(settings: Settings) -> List[str]:
    """One line per thing an operator should see at start-up."""
    lines = ["indexes: " + (", ".join(n for n, _ in settings.indexes) or "none given") + f" (+ {settings.data_dir})",
             f"batching: up to {settings.max_batch} images per forward pass, {settings.max_wait_ms:g} ms wait; "
             f"queue {settings.queue_size}"]
    if settings.allow_url:
        lines.append("URL inputs from: " + ", ".join(settings.allow_url))
    return lines
