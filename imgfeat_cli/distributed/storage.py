"""Paths on any filesystem pyarrow understands: local folders, ``s3://``, ``gs://``, ``hdfs://``,
``abfs://`` and ``file://`` URIs.

Cluster nodes rarely share a disk, so the Ray engine reads inputs and writes its output through
:mod:`pyarrow.fs`: the same calls serve a laptop folder and a bucket. Credentials come from the
usual places (environment, instance metadata, ``~/.aws``, ``gcloud``), as pyarrow finds them.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit

from imgfeat_cli.common.errors import ImageDecodeError, UsageError
from imgfeat_cli.imaging.decode import is_image_path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_uri(text: str) -> bool:
    """A ``scheme://`` location that pyarrow opens (http(s) URLs are fetched as URLs instead)."""
    m = _SCHEME.match(text)
    return bool(m) and m.group(1).lower() not in ("http", "https")


def resolve(location: str) -> Tuple[Any, str]:
    """``(filesystem, path)`` for a URI or a local path (made absolute)."""
    from pyarrow import fs

    if not is_uri(location):
        return fs.LocalFileSystem(), os.path.abspath(location)
    try:
        return fs.FileSystem.from_uri(location)
    except (ValueError, OSError) as exc:  # ArrowInvalid is a ValueError; unknown schemes, bad buckets
        raise UsageError(f"cannot open {location}: {_short(exc)}",
                         hint="check the URI (s3://, gs://, hdfs://, file:// are supported), the network and "
                              "the credentials") from None


def join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def uri_of(location: str, path: str) -> str:
    """The user-facing name of ``path`` found under ``location`` (a URI keeps its scheme)."""
    m = _SCHEME.match(location)
    if not m:
        return path
    if m.group(1).lower() == "file":
        return "file://" + path
    return f"{m.group(1)}://{path}"


def list_images(location: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Image files at ``location`` (a file, or a folder walked recursively, sorted) as URIs, and
    ``(location, reason)`` when it cannot be listed. Hidden entries are skipped, as locally."""
    from pyarrow import fs

    filesystem, path = resolve(location)
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            return [], [(location, f"{location}: does not exist")]
        if info.type != fs.FileType.Directory:
            return [location], []
        entries = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    except OSError as exc:
        return [], [(location, f"{location}: cannot list ({_short(exc)})")]
    rel = len(path.rstrip("/")) + 1
    found = sorted(uri_of(location, e.path) for e in entries if e.type == fs.FileType.File
                   and is_image_path(e.path) and not any(part.startswith(".") for part in e.path[rel:].split("/")))
    return found, []


class Reader:
    """Reads whole files by URI, with one filesystem client per bucket or host (creating an S3
    client costs far more than reading a small image)."""

    def __init__(self) -> None:
        self._clients: Dict[str, Tuple[Any, bool]] = {}  # "scheme://netloc" -> (filesystem, path keeps netloc)

    def _locate(self, uri: str) -> Tuple[Any, str]:
        parts = urlsplit(uri)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._clients:
            filesystem, path = resolve(uri)
            self._clients[key] = (filesystem, bool(parts.netloc) and path.startswith(parts.netloc))
            return filesystem, path
        filesystem, keeps_netloc = self._clients[key]  # s3/gs paths are "bucket/key", others "/path"
        return filesystem, (parts.netloc + parts.path if keeps_netloc else parts.path)

    def read(self, uri: str, max_bytes: int) -> bytes:
        """The bytes of ``uri``; a one-line :class:`ImageDecodeError` when missing, too large or unreadable."""
        try:
            filesystem, path = self._locate(uri)
            with filesystem.open_input_file(path) as fh:
                size = fh.size()
                if size > max_bytes:
                    raise ImageDecodeError(f"{uri}: {size >> 20} MB, over the {max_bytes >> 20} MB limit per file")
                return fh.read()
        except FileNotFoundError:
            raise ImageDecodeError(f"{uri}: does not exist") from None
        except (OSError, ValueError, UsageError) as exc:
            raise ImageDecodeError(f"{uri}: cannot read ({_short(exc)})") from None


def iter_files(filesystem: Any, root: str, suffix: str) -> Iterator[Any]:
    """``FileInfo`` of the files directly under ``root`` named ``*suffix`` and not hidden (``.``/``_``)."""
    from pyarrow import fs

    for info in filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True)):
        if info.type == fs.FileType.File and info.base_name.endswith(suffix) and not info.base_name.startswith((".", "_")):
            yield info


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text if len(text) <= 160 else text[:160] + "..."
