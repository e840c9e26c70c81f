"""Image inputs of a request: uploaded bytes, base64 text, or a URL the operator allowed.

No request can name a file on the server: strings are base64 image data or ``http(s)`` URLs, and
a URL is fetched only when it starts with an ``--allow-url`` prefix (same scheme, host and port,
and a path under the prefix's; no credentials in it). Fetching follows at most
:data:`MAX_REDIRECTS` redirects, each checked the same way (so never to another host), stops
reading at the per-image byte limit and gives up after ``url_timeout_s`` in all. PaddleX fetches
whatever URL a request names, with no size limit.
"""
from __future__ import annotations

import base64
import binascii
import posixpath
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple
from urllib.parse import unquote, urljoin, urlsplit

from imgfeat_cli.common.errors import ImageDecodeError, clip
from imgfeat_cli.serve.errors import BadRequest, InputRefused

MAX_REDIRECTS = 3
#: Longest label a request may give (labels go into id_map.yaml and every search reply).
MAX_LABEL_CHARS = 1000
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RawImage:
    """One image's bytes and the name errors and results use for it."""

    data: bytes
    name: str


def is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def _origin(url: str) -> Tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Same scheme, host and port as a prefix, and a path (percent-escapes decoded, ``..`` resolved)
    that starts with the prefix's path."""
    try:
        parts = urlsplit(url)
        origin = _origin(url)
    except ValueError:  # a port that is not a number
        return False
    if parts.username or parts.password or "\\" in url:
        return False
    path = posixpath.normpath(unquote(parts.path) or "/")
    for prefix in prefixes:
        base = urlsplit(prefix).path or "/"
        if _origin(prefix) == origin and (base == "/" or path == base.rstrip("/") or path.startswith(base)):
            return True
    return False


def fetch(url: str, prefixes: Sequence[str], max_bytes: int, timeout_s: float) -> bytes:
    """The body of an allowed URL (see the module docstring); :class:`InputRefused` otherwise."""
    import requests

    if not url_allowed(url, prefixes):
        raise InputRefused(f"URL inputs are not allowed from {clip(url, 100)}",
                           hint="the server fetches URLs only under its --allow-url prefixes; send the image bytes")
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            with requests.get(url, stream=True, allow_redirects=False, timeout=remaining) as resp:
                if resp.is_redirect:
                    target = urljoin(url, resp.headers.get("location", ""))
                    if not url_allowed(target, prefixes):
                        raise InputRefused(f"{clip(url, 100)} redirects outside the allowed URLs ({clip(target, 100)})")
                    url = target
                    continue
                if resp.status_code != 200:
                    raise ImageDecodeError(f"{clip(url, 100)}: HTTP {resp.status_code}")
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ImageDecodeError(f"{clip(url, 100)}: {int(declared)} bytes is over the "
                                           f"{max_bytes} byte limit per image")
                return _read_bounded(resp, url, max_bytes, deadline)
        except requests.RequestException as exc:
            raise ImageDecodeError(f"{clip(url, 100)}: download failed ({exc.__class__.__name__})") from None
    raise InputRefused(f"{clip(url, 100)}: more than {MAX_REDIRECTS} redirects")


def _read_bounded(resp, url: str, max_bytes: int, deadline: float) -> bytes:
    chunks, size = [], 0
    for chunk in resp.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ImageDecodeError(f"{clip(url, 100)}: over the {max_bytes} byte limit per image")
        if time.monotonic() > deadline:
            raise ImageDecodeError(f"{clip(url, 100)}: download took too long")
        chunks.append(chunk)
    return b"".join(chunks)


def from_base64(text: str, name: str, max_bytes: int) -> bytes:
    """Strict base64 (PaddleX's image field), refused by length before it is decoded."""
    compact = "".join(text.split()) if any(c.isspace() for c in text[:200]) else text
    if len(compact) // 4 * 3 > max_bytes + 3:
        raise ImageDecodeError(f"{name}: about {len(compact) // 4 * 3} bytes is over the {max_bytes} byte limit "
                               "per image")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError(f"{name}: not base64 image data (nor an http(s) URL)",
                               hint="send the file's bytes base64-encoded, or upload it as multipart") from None


def from_text(text: str, name: str, prefixes: Sequence[str], max_bytes: int, timeout_s: float) -> bytes:
    """A JSON image field: an allowed URL (fetched, blocking) or base64 data."""
    if is_url(text):
        return fetch(text, prefixes, max_bytes, timeout_s)
    return from_base64(text, name, max_bytes)


def label_of(value: Optional[str], name: str) -> str:
    """A label from a request: text, one line, not empty."""
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise BadRequest(f"{name}: a label must be one non-empty line of text")
    if len(value) > MAX_LABEL_CHARS:
        raise BadRequest(f"{name}: a label of {len(value)} characters is longer than {MAX_LABEL_CHARS}")
    return value.strip()
